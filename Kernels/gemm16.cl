// gemm16.cl: C [M, N] (fp32) = alpha op(A) op(B) + beta C with A and B both in bf16 (gemm_bf16) or
// both in f16 (gemm_f16) and fp32 accumulation, for OpenCL devices that do not run the host engine
// (GPUs: CLBlast has no bf16 GEMM, and its HGEMM accumulates in half). Row-major operands as
// GemmProblem describes them: a transposed operand is the stored matrix read with swapped indices;
// batches are `stride_*` elements apart (0: one matrix shared by the batch). A and B are byte
// pointers with byte offsets (16-bit tensors), C has an element offset.
//
// Tiled through local memory: a work-group of TS x TS work-items (1-D, work-item l at tile row
// l / TS, column l % TS) computes one TS x TS tile of C; per step of TS along K it loads a tile of
// op(A) and one of op(B), widened to fp32 (exact: a bf16 is the high half of an fp32; vload_half,
// core OpenCL, widens an f16), and each work-item adds its TS products. Loads outside the matrices
// read 0, so every barrier is reached by the whole group. The host checks the problem
// (Operations.swift) and launches tiles(M) * tiles(N) * batch groups.
// CPU twins: the host GEMM (HostGemm.swift: oneDNN's bf16 matmul; f16 widened to fp32, then sgemm).

#define TS 16

inline float bf16_value(__global const ushort* p, long i) { return as_float((uint)p[i] << 16); }
inline float f16_value(__global const ushort* p, long i) { return vload_half(i, (__global const half*)p); }

#define GEMM16_KERNEL(NAME, LOAD) \
__kernel void NAME(__global const uchar* a, int ao, __global const uchar* b, int bo, __global float* c, int co,        \
                   int m, int n, int k, int lda, int ldb, int ldc, int trans_a, int trans_b,                           \
                   int stride_a, int stride_b, int stride_c, float alpha, float beta) {                                \
    __local float tile_a[TS][TS + 1];                                                                                  \
    __local float tile_b[TS][TS + 1];                                                                                  \
    const int lid = get_local_id(0), ty = lid / TS, tx = lid % TS;                                                     \
    const int tiles_m = (m + TS - 1) / TS, tiles_n = (n + TS - 1) / TS;                                                \
    const int g = get_group_id(0);                                                                                     \
    const int batch = g / (tiles_m * tiles_n), tile = g % (tiles_m * tiles_n);                                         \
    const int row = (tile / tiles_n) * TS + ty, col = (tile % tiles_n) * TS + tx;                                      \
    __global const ushort* pa = (__global const ushort*)(a + ao) + (long)batch * stride_a;                             \
    __global const ushort* pb = (__global const ushort*)(b + bo) + (long)batch * stride_b;                             \
    float acc = 0.0f;                                                                                                  \
    for (int k0 = 0; k0 < k; k0 += TS) {                                                                               \
        const int ak = k0 + tx, bk = k0 + ty;                                                                          \
        tile_a[ty][tx] = (row < m && ak < k) ? LOAD(pa, trans_a ? (long)ak * lda + row : (long)row * lda + ak) : 0.0f; \
        tile_b[ty][tx] = (bk < k && col < n) ? LOAD(pb, trans_b ? (long)col * ldb + bk : (long)bk * ldb + col) : 0.0f; \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
        for (int j = 0; j < TS; j++) acc += tile_a[ty][j] * tile_b[j][tx];                                             \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
    }                                                                                                                  \
    if (row < m && col < n) {                                                                                          \
        __global float* out = c + co + (long)batch * stride_c + (long)row * ldc + col;                                 \
        *out = beta == 0.0f ? alpha * acc : alpha * acc + beta * *out;                                                 \
    }                                                                                                                  \
}

GEMM16_KERNEL(gemm_bf16, bf16_value)
GEMM16_KERNEL(gemm_f16, f16_value)
