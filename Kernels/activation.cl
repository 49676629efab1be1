// activation.cl: the SwiGLU feed-forward gate.
// CPU twin: CPUKernels.swiglu.

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up, over n floats (elementwise indexing as in elementwise.cl).
__kernel void swiglu(__global const float* gate, int go, __global const float* up, int uo,
                     __global float* out, int oo, int n) {
    const int i = get_global_id(0);
    const int vectors = n / VW;
    if (i < vectors) {
        const floatV g = vloadV(i, gate + go);
        vstoreV(g / (1.0f + exp(-g)) * vloadV(i, up + uo), i, out + oo);
    } else {
        const int j = vectors * VW + (i - vectors);
        if (j < n) {
            const float g = gate[go + j];
            out[oo + j] = g / (1.0f + exp(-g)) * up[uo + j];
        }
    }
}
