// gemm16.cl: C [M, N] (fp32) = alpha op(A) op(B) + beta C with A and B both in bf16 (gemm_bf16) or
// both in f16 (gemm_f16) and fp32 accumulation, for OpenCL devices that do not run the host engine
// (GPUs: CLBlast has no bf16 GEMM, and its HGEMM accumulates in half). Row-major operands as
// GemmProblem describes them: a transposed operand is the stored matrix read with swapped indices;
// batches are `stride_*` elements apart (0: one matrix shared by the batch). A and B are byte
// pointers with byte offsets (16-bit tensors), C has an element offset.
//
// Tiled through local memory and registers: a work-group of 256 work-items (16 x 16; work-item l at
// ty = l / 16, tx = l % 16) computes one 64 x 64 tile of C, each work-item 4 x 4 of its entries (rows
// ty + 16 i, columns tx + 16 j: neighbouring work-items read neighbouring local words). Per step of
// 16 along K the group loads a 64 x 16 tile of op(A) and a 16 x 64 tile of op(B) (4 elements each per
// work-item, the walk along whichever index is contiguous in memory for the operand's layout),
// widened to fp32 (exact: a bf16 is the high half of an fp32; vload_half, core OpenCL, widens an f16),
// and each work-item adds its 16 x 16 products from 8 local reads a k. Loads outside the matrices
// read 0, so every barrier is reached by the whole group. The host checks the problem
// (Operations.swift) and launches tiles(M) * tiles(N) * batch groups.
// CPU twins: the host GEMM (HostGemm.swift: oneDNN's bf16 matmul; f16 widened to fp32, then sgemm).

#define TILE 64        // rows and columns of C per work-group
#define TK 16          // K per local-memory step
#define WPT 4          // rows (and columns) of C per work-item
#define GROUP 256      // (TILE / WPT)^2 work-items

inline float bf16_value(__global const ushort* p, long i) { return as_float((uint)p[i] << 16); }
inline float f16_value(__global const ushort* p, long i) { return vload_half(i, (__global const half*)p); }

#define GEMM16_KERNEL(NAME, LOAD) \
__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))                                                           \
void NAME(__global const uchar* a, int ao, __global const uchar* b, int bo, __global float* c, int co,                 \
          int m, int n, int k, int lda, int ldb, int ldc, int trans_a, int trans_b,                                    \
          int stride_a, int stride_b, int stride_c, float alpha, float beta) {                                         \
    __local float tile_a[TK][TILE + 1];  /* op(A)[row0 + r][k0 + kk] at [kk][r] */                                    \
    __local float tile_b[TK][TILE + 1];  /* op(B)[k0 + kk][col0 + c] at [kk][c] */                                    \
    const int lid = get_local_id(0), ty = lid / (TILE / WPT), tx = lid % (TILE / WPT);                                 \
    GEMM16_TILE_OF_GROUP(TILE)                                                                                         \
    float acc[WPT][WPT];                                                                                               \
    for (int i = 0; i < WPT; i++)                                                                                      \
        for (int j = 0; j < WPT; j++) acc[i][j] = 0.0f;                                                                \
    for (int k0 = 0; k0 < k; k0 += TK) {                                                                               \
        for (int e = lid; e < TILE * TK; e += GROUP) {                                                                 \
            /* op(A) is [m, k]: stored [k, m] when transposed (walk r), else [m, k] (walk kk). */                     \
            const int r = trans_a ? e % TILE : e / TK, ka = trans_a ? e / TILE : e % TK;                               \
            const int gr = row0 + r, gk = k0 + ka;                                                                     \
            tile_a[ka][r] = (gr < m && gk < k) ? LOAD(pa, trans_a ? (long)gk * lda + gr : (long)gr * lda + gk) : 0.0f; \
            /* op(B) is [k, n]: stored [n, k] when transposed (walk kk), else [k, n] (walk c). */                     \
            const int cb = trans_b ? e / TK : e % TILE, kb = trans_b ? e % TK : e / TILE;                              \
            const int gc = col0 + cb, gkb = k0 + kb;                                                                   \
            tile_b[kb][cb] = (gkb < k && gc < n) ? LOAD(pb, trans_b ? (long)gc * ldb + gkb : (long)gkb * ldb + gc) : 0.0f; \
        }                                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
        for (int kk = 0; kk < TK; kk++) {                                                                              \
            float av[WPT], bv[WPT];                                                                                    \
            for (int i = 0; i < WPT; i++) av[i] = tile_a[kk][ty + i * (TILE / WPT)];                                   \
            for (int j = 0; j < WPT; j++) bv[j] = tile_b[kk][tx + j * (TILE / WPT)];                                   \
            for (int i = 0; i < WPT; i++)                                                                              \
                for (int j = 0; j < WPT; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);                                \
        }                                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
    }                                                                                                                  \
    __global float* out = c + co + (long)batch * stride_c;                                                             \
    for (int i = 0; i < WPT; i++) {                                                                                    \
        const int row = row0 + ty + i * (TILE / WPT);                                                                  \
        for (int j = 0; j < WPT; j++) {                                                                                \
            const int col = col0 + tx + j * (TILE / WPT);                                                              \
            if (row < m && col < n) {                                                                                  \
                __global float* o = out + (long)row * ldc + col;                                                       \
                *o = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *o;                                 \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
}

GEMM16_KERNEL(gemm_bf16, bf16_value)
GEMM16_KERNEL(gemm_f16, f16_value)
