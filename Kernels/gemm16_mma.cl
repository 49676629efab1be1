// gemm16_mma.cl: gemm_bf16 / gemm_f16 (gemm16.cl) on NVIDIA's tensor cores, for NVIDIA OpenCL
// devices whose compiler takes inline PTX and whose chip has `mma.sync.m16n8k16` for bf16 and f16
// (compute capability 8.0 and later): C [M, N] (fp32) = alpha op(A) op(B) + beta C, A and B both
// bf16 (gemm_bf16_mma) or both f16 (gemm_f16_mma), products accumulated in fp32 by the tensor cores.
// The same arguments, operand layouts and batching as gemm16.cl. The backend builds this file only on
// NVIDIA devices and falls back to gemm16.cl when the build fails (an older chip, another compiler);
// the tests also build it on other devices with the mma instruction emulated (GEMM16_MMA_EMULATE).
//
// A work-group of 128 work-items (4 warps, 2 x 2) computes one 64 x 64 tile of C, each warp 32 x 32
// of it as 2 x 4 tiles of 16 x 8 (mma.sync.aligned.m16n8k16.row.col, fp32 accumulators). Per step
// of 32 along K the group copies a 64 x 32 tile of op(A) and one of op(B)^T into local memory as raw
// 16-bit values (no conversion: the tensor cores read bf16 and f16 as stored), K contiguous, rows
// padded to 40 values so that the fragment reads of a warp hit 32 different banks. The copies move
// 8 values at a time along whichever index is contiguous in global memory (16-byte loads where the
// layout is aligned), and the next step's values are loaded into registers while the tensor cores
// work on this step's. Fragments follow the PTX ISA's m16n8k16 layouts: lane = 4 g + t holds A's
// rows g and g + 8 at columns 2t, 2t + 1 and 2t + 8, 2t + 9; B's column g at rows 2t, 2t + 1 and
// 2t + 8, 2t + 9; C's rows g and g + 8 at columns 2t, 2t + 1. Loads outside the matrices read 0.
// Its figures on an H200: README, "On a GPU".
// CPU twins: the host GEMM (HostGemm.swift), as for gemm16.cl.

#define MMA_TILE 64     // rows and columns of C per work-group
#define MMA_TK 32       // K per local-memory step
#define MMA_LDS 40      // 16-bit values per local row (32 + 8 of padding)
#define MMA_GROUP 128   // 4 warps

#ifdef GEMM16_MMA_EMULATE
// The mma instruction in OpenCL C, for devices without tensor cores (the backend builds this file with
// -DGEMM16_MMA_EMULATE there for the tests only): every lane of a warp publishes its fragments (6 words:
// a0-a3, b0, b1) in local memory, then forms its 4 entries of C from the warp's fragments read back
// through the same layouts, so the tiling, the copies and the fragment reads are checked on any device.
#define MMA_EMULATION_SCRATCH __local uint mma_lanes[MMA_GROUP * 6];

// Value `high` (0: the low half) of a fragment word, widened to fp32.
inline float mma_value(uint word, int high, int is_bf16) {
    const ushort bits = (ushort)(high ? word >> 16 : word & 0xFFFF);
    return is_bf16 ? as_float((uint)bits << 16) : vload_half(0, (const half*)&bits);
}

// d[0..3] += the warp's A (16 x 16) B (16 x 8) at this lane's entries of C, from `lanes` (the warp's 32 x 6 words).
inline void mma_emulated(float* d, __local const uint* lanes, int g, int t, int is_bf16) {
    for (int e = 0; e < 4; e++) {
        const int row = g + (e / 2) * 8, col = 2 * t + e % 2;
        float sum = d[e];
        for (int kk = 0; kk < 16; kk++) {
            const uint a = lanes[((row % 8) * 4 + (kk % 8) / 2) * 6 + (row >= 8) + 2 * (kk >= 8)];
            const uint b = lanes[(col * 4 + (kk % 8) / 2) * 6 + 4 + (kk >= 8)];
            sum = fma(mma_value(a, kk % 2, is_bf16), mma_value(b, kk % 2, is_bf16), sum);
        }
        d[e] = sum;
    }
}

#define MMA_16816(TYPE, d, a0, a1, a2, a3, b0, b1)                                                          \
    do {                                                                                                    \
        __local uint* mine = mma_lanes + lid * 6;                                                           \
        mine[0] = a0; mine[1] = a1; mine[2] = a2; mine[3] = a3; mine[4] = b0; mine[5] = b1;                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                       \
        mma_emulated(d, mma_lanes + warp * 32 * 6, g, t, (TYPE)[0] == 'b');                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                       \
    } while (0)
#else
#define MMA_EMULATION_SCRATCH

// d[0..3] = A (4 registers of 2 values) x B (2 registers) + d, the 16 x 8 fragment of C.
#define MMA_16816(TYPE, d, a0, a1, a2, a3, b0, b1)                                                          \
    __asm__ __volatile__("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 "                             \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"                      \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                           \
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(d[0]), "f"(d[1]), "f"(d[2]), "f"(d[3]))
#endif

// Tiles move in chunks of 8 values along the operand's contiguous index in global memory, 256
// chunks per 64 x 32 tile, 2 per work-item. Chunk `ch` of a tile whose 64 rows start at row `base`
// of `rows` (op(A)'s rows: M; op(B)'s columns: N), K from k0: `along_k` when the operand is stored
// with K contiguous (A untransposed, B transposed): row r = ch / 4, K from kk = (ch % 4) * 8; else 8
// rows from r = (ch % 8) * 8 at kk = ch / 8. In local memory value (r, kk) is at r * MMA_LDS + kk.
inline int mma_chunk_row(int ch, int along_k) { return along_k ? ch / (MMA_TK / 8) : (ch % (MMA_TILE / 8)) * 8; }
inline int mma_chunk_k(int ch, int along_k) { return along_k ? (ch % (MMA_TK / 8)) * 8 : ch / (MMA_TILE / 8); }

// The chunk's 8 values, two to a word (the first in the low half), 0 outside the matrix: one
// 16-byte load when the layout allows it (`vec`: 16-byte aligned base, leading dimension and batch
// stride) and the chunk lies inside, else one by one.
inline uint4 mma_chunk_load(__global const ushort* p, int ch, int along_k, int vec, int base, int rows, int k0, int k, int ld) {
    const int gr = base + mma_chunk_row(ch, along_k), gk = k0 + mma_chunk_k(ch, along_k);
    const int valid = along_k ? (gr < rows ? min(8, k - gk) : 0) : (gk < k ? min(8, rows - gr) : 0);
    const long idx = along_k ? (long)gr * ld + gk : (long)gk * ld + gr;
    if (vec && valid == 8) return *(__global const uint4*)(p + idx);
    uint v[8];
    for (int i = 0; i < 8; i++) v[i] = i < valid ? p[idx + i] : 0;
    return (uint4)(v[0] | v[1] << 16, v[2] | v[3] << 16, v[4] | v[5] << 16, v[6] | v[7] << 16);
}

// The chunk into local memory: 8 adjacent values (one 16-byte store) when it runs along K, else one
// value in each of 8 rows.
inline void mma_chunk_store(uint4 q, __local ushort* tile, int ch, int along_k) {
    __local ushort* dst = tile + mma_chunk_row(ch, along_k) * MMA_LDS + mma_chunk_k(ch, along_k);
    if (along_k) { *(__local uint4*)dst = q; return; }
    const uint w[4] = {q.x, q.y, q.z, q.w};
    for (int i = 0; i < 8; i++) dst[i * MMA_LDS] = (ushort)(w[i / 2] >> (16 * (i % 2)));
}

#define GEMM16_MMA_KERNEL(NAME, TYPE) \
__kernel __attribute__((reqd_work_group_size(MMA_GROUP, 1, 1)))                                                       \
void NAME(__global const uchar* a, int ao, __global const uchar* b, int bo, __global float* c, int co,                 \
          int m, int n, int k, int lda, int ldb, int ldc, int trans_a, int trans_b,                                    \
          int stride_a, int stride_b, int stride_c, float alpha, float beta) {                                         \
    /* Declared as 16-byte words (aligned for the chunk stores and fragment reads), used as 16-bit values. */         \
    __local uint4 quads_a[MMA_TILE * MMA_LDS / 8];  /* op(A)[row0 + r][k0 + kk] at value r * MMA_LDS + kk */         \
    __local uint4 quads_b[MMA_TILE * MMA_LDS / 8];  /* op(B)[k0 + kk][col0 + cc] at value cc * MMA_LDS + kk */       \
    __local const uint* words_a = (__local const uint*)quads_a;                                                        \
    __local const uint* words_b = (__local const uint*)quads_b;                                                        \
    MMA_EMULATION_SCRATCH                                                                                              \
    const int lid = get_local_id(0), lane = lid % 32, warp = lid / 32;                                                 \
    const int g = lane / 4, t = lane % 4, warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;                      \
    GEMM16_TILE_OF_GROUP(MMA_TILE)                                                                                     \
    const int vec_a = ao % 16 == 0 && lda % 8 == 0 && stride_a % 8 == 0;                                               \
    const int vec_b = bo % 16 == 0 && ldb % 8 == 0 && stride_b % 8 == 0;                                               \
    const int a_along_k = !trans_a, b_along_k = trans_b;                                                               \
    float acc[2][4][4];                                                                                                \
    for (int i = 0; i < 2; i++)                                                                                        \
        for (int j = 0; j < 4; j++)                                                                                    \
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;                                                           \
    /* The next K step's chunks wait in registers while the tensor cores work on this one's. */                       \
    uint4 next_a[2], next_b[2];                                                                                        \
    for (int h = 0; h < 2; h++) {                                                                                      \
        next_a[h] = mma_chunk_load(pa, lid + h * MMA_GROUP, a_along_k, vec_a, row0, m, 0, k, lda);                     \
        next_b[h] = mma_chunk_load(pb, lid + h * MMA_GROUP, b_along_k, vec_b, col0, n, 0, k, ldb);                     \
    }                                                                                                                  \
    for (int k0 = 0; k0 < k; k0 += MMA_TK) {                                                                           \
        for (int h = 0; h < 2; h++) {                                                                                  \
            mma_chunk_store(next_a[h], (__local ushort*)quads_a, lid + h * MMA_GROUP, a_along_k);                      \
            mma_chunk_store(next_b[h], (__local ushort*)quads_b, lid + h * MMA_GROUP, b_along_k);                      \
        }                                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
        if (k0 + MMA_TK < k)                                                                                           \
            for (int h = 0; h < 2; h++) {                                                                              \
                next_a[h] = mma_chunk_load(pa, lid + h * MMA_GROUP, a_along_k, vec_a, row0, m, k0 + MMA_TK, k, lda);   \
                next_b[h] = mma_chunk_load(pb, lid + h * MMA_GROUP, b_along_k, vec_b, col0, n, k0 + MMA_TK, k, ldb);   \
            }                                                                                                          \
        for (int ks = 0; ks < MMA_TK; ks += 16) {                                                                      \
            uint fa[2][4], fb[4][2];                                                                                   \
            for (int i = 0; i < 2; i++) {                                                                              \
                const int r = warp_row + i * 16 + g;                                                                   \
                fa[i][0] = words_a[(r * MMA_LDS + ks + 2 * t) / 2];                                                    \
                fa[i][1] = words_a[((r + 8) * MMA_LDS + ks + 2 * t) / 2];                                              \
                fa[i][2] = words_a[(r * MMA_LDS + ks + 2 * t + 8) / 2];                                                \
                fa[i][3] = words_a[((r + 8) * MMA_LDS + ks + 2 * t + 8) / 2];                                          \
            }                                                                                                          \
            for (int j = 0; j < 4; j++) {                                                                              \
                const int cc = warp_col + j * 8 + g;                                                                   \
                fb[j][0] = words_b[(cc * MMA_LDS + ks + 2 * t) / 2];                                                   \
                fb[j][1] = words_b[(cc * MMA_LDS + ks + 2 * t + 8) / 2];                                               \
            }                                                                                                          \
            for (int i = 0; i < 2; i++)                                                                                \
                for (int j = 0; j < 4; j++)                                                                            \
                    MMA_16816(TYPE, acc[i][j], fa[i][0], fa[i][1], fa[i][2], fa[i][3], fb[j][0], fb[j][1]);            \
        }                                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                  \
    }                                                                                                                  \
    __global float* out = c + co + (long)batch * stride_c;                                                             \
    for (int i = 0; i < 2; i++)                                                                                        \
        for (int j = 0; j < 4; j++)                                                                                    \
            for (int e = 0; e < 4; e++) {                                                                              \
                const int row = row0 + warp_row + i * 16 + g + (e / 2) * 8;                                            \
                const int col = col0 + warp_col + j * 8 + 2 * t + e % 2;                                               \
                if (row < m && col < n) {                                                                              \
                    __global float* o = out + (long)row * ldc + col;                                                   \
                    *o = beta == 0.0f ? alpha * acc[i][j][e] : alpha * acc[i][j][e] + beta * *o;                       \
                }                                                                                                      \
            }                                                                                                          \
}

GEMM16_MMA_KERNEL(gemm_bf16_mma, "bf16")
GEMM16_MMA_KERNEL(gemm_f16_mma, "f16")
