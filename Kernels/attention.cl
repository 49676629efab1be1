// attention.cl: the pieces of causal multi-head attention between the GEMMs.
// CPU twins: CPUKernels.causal_softmax, causal_mask, transpose_12.

// probs[row, :] = softmax(scale * scores[row, :]) over keys first ..= t + key_offset, zero elsewhere,
// where t = row % queries is the row's query index (rows stack [batch][group][query]) and first is
// key_starts[row / rows_per_start] (left-padded sequences: the keys before it are padding), or 0 when
// rows_per_start is 0 (key_starts is then not read). A row that sees no key is all zeros.
// One work-group per row. probs may be scores. The exponentials are kd_exp (common.cl), as in the
// CPU twin, taken once: written unnormalized and summed, then scaled by 1 / sum, each element by the
// work-item that wrote it (no global-memory barrier needed between the passes).
__kernel void causal_softmax(__global const float* scores, int so, __global float* probs, int po,
                             int keys, int queries, int key_offset, float scale,
                             __global const int* key_starts, int ko, int rows_per_start) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* sr = scores + so + (long)row * keys;
    __global float* pr = probs + po + (long)row * keys;
    const int first = rows_per_start > 0 ? min(keys, max(0, key_starts[ko + row / rows_per_start])) : 0;
    const int visible = max(0, min(keys, row % queries + key_offset + 1) - first);
    const float m = group_max(partial_row_max(sr + first, visible, lid), scratch);
    const floatV shift = (floatV)((m == -INFINITY) ? 0.0f : m);
    const int vectors = visible / VW;
    floatV sums = (floatV)(0.0f);
    for (int v = lid; v < vectors; v += WG) {
        const floatV e = kd_exp((vloadV(v, sr + first) - shift) * scale);
        vstoreV(e, v, pr + first);
        sums += e;
    }
    float partial = vsum(sums);
    for (int j = vectors * VW + lid; j < visible; j += WG) {
        const float e = kd_exp(((floatV)(sr[first + j]) - shift) * scale).s0;
        pr[first + j] = e;
        partial += e;
    }
    const float sum = group_sum(partial, scratch);
    const float inv_sum = (m == -INFINITY) ? 0.0f : 1.0f / sum;
    for (int v = lid; v < vectors; v += WG) vstoreV(vloadV(v, pr + first) * inv_sum, v, pr + first);
    for (int j = vectors * VW + lid; j < visible; j += WG) pr[first + j] *= inv_sum;
    for (int j = lid; j < first; j += WG) pr[j] = 0.0f;
    for (int j = first + visible + lid; j < keys; j += WG) pr[j] = 0.0f;
}

// x[row, j] = value for the keys j a causal query does not see (j > row % queries + key_offset), in
// place; the rest of x is untouched. One work-item per element of x [rows, keys].
__kernel void causal_mask(__global float* x, int xo, int keys, int queries, int key_offset, float value, int count) {
    const int g = get_global_id(0);
    if (g >= count) return;
    const int row = g / keys, j = g - row * keys;
    if (j > row % queries + key_offset) x[xo + g] = value;
}

// y [A, C, B, D] = x [A, B, C, D] with axes 1 and 2 swapped. Rows of D elements stay contiguous, so
// one work-item copies one row of y (row r = (a * C + c) * B + b) as whole vectors, then the rest.
__kernel void transpose_12(__global const float* x, int xo, __global float* y, int yo,
                           int a_size, int b_size, int c_size, int d_size) {
    const long r = get_global_id(0);
    if (r >= (long)a_size * b_size * c_size) return;
    const int b = r % b_size;
    const long rest = r / b_size;
    const int c = rest % c_size;
    const int a = rest / c_size;
    __global const float* src = x + xo + (((long)a * b_size + b) * c_size + c) * d_size;
    __global float* dst = y + yo + r * d_size;
    int j = 0;
    for (; j + VW <= d_size; j += VW) vstoreV(vloadV(0, src + j), 0, dst + j);
    for (; j < d_size; j++) dst[j] = src[j];
}
