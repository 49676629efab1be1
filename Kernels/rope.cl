// rope.cl: rotary position embedding of x [tokens, heads, head_dim].
// Pair p < rope_dim / 2 of each head of token t turns by theta(t, p) = pos_t * base^(-2p / rope_dim);
// table [tokens, rope_dim / 2, 2] holds (cos theta, sin theta), computed on the host in fp64.
//   adjacent pairs (x[2p], x[2p+1])          : GGUF llama weights (llama.cpp's layout)
//   halves (x[p], x[p + rope_dim / 2])       : Hugging Face weights (rotate_half)
// direction -1 turns back (the backward of the rotation). Dimensions past rope_dim pass through.
// One work-item per pair; y may be x. CPU twin: CPUKernels.rope.

__kernel void rope(__global const float* x, int xo, __global const float* table, int to,
                   __global float* y, int yo, int tokens, int heads, int head_dim, int rope_dim,
                   int halves, float direction) {
    const int pairs = head_dim / 2;
    const int g = get_global_id(0);
    if (g >= tokens * heads * pairs) return;
    const int p = g % pairs;
    const int head_index = g / pairs;  // token * heads + head
    const int token = head_index / heads;
    const long start = (long)head_index * head_dim;
    __global const float* xh = x + xo + start;
    __global float* yh = y + yo + start;
    const int rotated = rope_dim / 2;
    if (p >= rotated) {
        const int j = rope_dim + 2 * (p - rotated);
        yh[j] = xh[j];
        yh[j + 1] = xh[j + 1];
        return;
    }
    const int i0 = halves ? p : 2 * p;
    const int i1 = halves ? p + rotated : 2 * p + 1;
    const float2 cs = vload2((long)token * rotated + p, table + to);
    const float c = cs.x, s = direction * cs.y;
    const float a = xh[i0], b = xh[i1];
    yh[i0] = a * c - b * s;
    yh[i1] = a * s + b * c;
}
