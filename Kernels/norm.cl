// norm.cl: RMSNorm over the last axis. One work-group per row.
// CPU twin: CPUKernels.rms_norm.

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w
__kernel void rms_norm(__global const float* x, int xo, __global const float* w, int wo,
                       __global float* y, int yo, int cols, float eps) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    __global float* yr = y + yo + (long)row * cols;
    __global const float* wr = w + wo;
    const int vectors = cols / VW;
    floatV s = (floatV)(0.0f);
    for (int v = lid; v < vectors; v += WG) {
        const floatV value = vloadV(v, xr);
        s += value * value;
    }
    float partial = vsum(s);
    for (int j = vectors * VW + lid; j < cols; j += WG) partial += xr[j] * xr[j];
    const float scale = rsqrt(group_sum(partial, scratch) / cols + eps);
    for (int v = lid; v < vectors; v += WG) vstoreV(vloadV(v, xr) * scale * vloadV(v, wr), v, yr);
    for (int j = vectors * VW + lid; j < cols; j += WG) yr[j] = xr[j] * scale * wr[j];
}
