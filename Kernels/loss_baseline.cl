// loss_baseline.cl: the unfused forward-KL baseline `kdgpu bench loss` compares the fused kernel
// with, as a framework would run it: log_softmax_rows (rows.cl) of the student and of the teacher
// into two materialized [rows, cols] tensors, then these two kernels.
// CPU twins: CPUKernels.kl_div_rows, kl_div_backward_rows (Sources/Losses/CPUDistillKernels.swift).

// out[r] = sum_j exp(lt[r, j]) (lt[r, j] - ls[r, j]); one work-group per row. -inf teacher entries add 0.
__kernel void kl_div_rows(__global const float* ls, int lso, __global const float* lt, int lto,
                          __global float* out, int oo, int cols) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* sr = ls + lso + (long)row * cols;
    __global const float* tr = lt + lto + (long)row * cols;
    const int vectors = cols / VW;
    floatV s = (floatV)(0.0f);
    for (int v = lid; v < vectors; v += WG) {
        const floatV t = vloadV(v, tr);
        s += select(exp(t) * (t - vloadV(v, sr)), (floatV)(0.0f), t == (floatV)(-INFINITY));
    }
    float partial = vsum(s);
    for (int j = vectors * VW + lid; j < cols; j += WG) {
        const float t = tr[j];
        partial += t == -INFINITY ? 0.0f : exp(t) * (t - sr[j]);
    }
    const float total = group_sum(partial, scratch);
    if (lid == 0) out[oo + row] = total;
}

// dz[i] = scale * (exp(ls[i]) - exp(lt[i])) over n elements (elementwise: one vector per work-item).
__kernel void kl_div_backward_rows(__global const float* ls, int lso, __global const float* lt, int lto,
                                   __global float* dz, int dzo, float scale, int n) {
    const int i = get_global_id(0);
    const int vectors = n / VW;
    const int tail = vectors * VW + (i - vectors);
    if (i < vectors) vstoreV(scale * (exp(vloadV(i, ls + lso)) - exp(vloadV(i, lt + lto))), i, dz + dzo);
    else if (tail < n) dz[dzo + tail] = scale * (exp(ls[lso + tail]) - exp(lt[lto + tail]));
}
