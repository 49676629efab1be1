// rows.cl: row-wise reductions and softmax over x [rows, cols], row-major.
// One work-group of WG work-items per row (global size rows * WG).
// CPU twins: CPUKernels.row_max, row_sum, row_sum_squares, softmax_rows, log_softmax_rows.

// out[r] = max_j x[r, j]  (-inf for an all -inf row)
__kernel void row_max(__global const float* x, int xo, __global float* out, int oo, int cols) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    const float m = group_max(partial_row_max(x + xo + (long)row * cols, cols, lid), scratch);
    if (lid == 0) out[oo + row] = m;
}

// out[r] = sum_j x[r, j]
__kernel void row_sum(__global const float* x, int xo, __global float* out, int oo, int cols) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    floatV s = (floatV)(0.0f);
    const int vectors = cols / VW;
    for (int v = lid; v < vectors; v += WG) s += vloadV(v, xr);
    float partial = vsum(s);
    for (int j = vectors * VW + lid; j < cols; j += WG) partial += xr[j];
    const float total = group_sum(partial, scratch);
    if (lid == 0) out[oo + row] = total;
}

// y[r, :] = softmax(x[r, :] * inv_t); an all -inf row gives zeros.
__kernel void softmax_rows(__global const float* x, int xo, __global float* y, int yo, int cols, float inv_t) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    __global float* yr = y + yo + (long)row * cols;
    const int vectors = cols / VW;
    const float m = group_max(partial_row_max(xr, cols, lid), scratch);
    // An all -inf row sums exp(-inf) = 0 and writes 0 * 0. Every work-item reaches every barrier:
    // PoCL miscompiles an early return in front of a barrier.
    const float shift = (m == -INFINITY) ? 0.0f : m;
    const float sum = group_sum(partial_row_sum_exp(xr, cols, lid, shift, inv_t), scratch);
    const float inv_sum = (m == -INFINITY) ? 0.0f : 1.0f / sum;
    for (int v = lid; v < vectors; v += WG) vstoreV(exp((vloadV(v, xr) - shift) * inv_t) * inv_sum, v, yr);
    for (int j = vectors * VW + lid; j < cols; j += WG) yr[j] = exp((xr[j] - shift) * inv_t) * inv_sum;
}

// y[r, :] = log softmax(x[r, :] * inv_t); an all -inf row gives -inf.
__kernel void log_softmax_rows(__global const float* x, int xo, __global float* y, int yo, int cols, float inv_t) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    __global float* yr = y + yo + (long)row * cols;
    const int vectors = cols / VW;
    const float m = group_max(partial_row_max(xr, cols, lid), scratch);
    // An all -inf row: log_sum = log 0 = -inf would give NaN below; -inf - 0 gives -inf instead.
    const float shift = (m == -INFINITY) ? 0.0f : m;
    const float sum = group_sum(partial_row_sum_exp(xr, cols, lid, shift, inv_t), scratch);
    const float log_sum = (m == -INFINITY) ? 0.0f : log(sum);
    for (int v = lid; v < vectors; v += WG) vstoreV((vloadV(v, xr) - shift) * inv_t - log_sum, v, yr);
    for (int j = vectors * VW + lid; j < cols; j += WG) yr[j] = (xr[j] - shift) * inv_t - log_sum;
}

// out[r] = sum_j x[r, j]^2 (for gradient norms). One work-group per row.
__kernel void row_sum_squares(__global const float* x, int xo, __global float* out, int oo, int cols) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    floatV s = (floatV)(0.0f);
    const int vectors = cols / VW;
    for (int v = lid; v < vectors; v += WG) {
        const floatV value = vloadV(v, xr);
        s += value * value;
    }
    float partial = vsum(s);
    for (int j = vectors * VW + lid; j < cols; j += WG) partial += xr[j] * xr[j];
    const float total = group_sum(partial, scratch);
    if (lid == 0) out[oo + row] = total;
}
