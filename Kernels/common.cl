// common.cl: compiled in front of every kernel file.
//
// Build-time constants (set by the backend per device):
//   VW  vector width of explicit loads, 2, 4, 8 or 16 (OpenCL has no float1): 16 on CPU devices
//       (PoCL does not vectorize a work-item's strided loop by itself), 4 on GPUs.
//   WG  work-group size of the row kernels, a power of two; one work-group handles one row.
// Reductions use __local memory trees, not subgroups (NVIDIA's OpenCL has none).

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
#define vloadV CAT(vload, VW)
#define vstoreV CAT(vstore, VW)
#define convert_uintV CAT(convert_uint, VW)

// Sum / maximum of a vector's lanes, halving the width each step; overloaded for every width, so
// floatV and the half-width floatH below share them.
__attribute__((overloadable)) inline float vsum(float v) { return v; }
__attribute__((overloadable)) inline float vsum(float2 v) { return v.x + v.y; }
__attribute__((overloadable)) inline float vsum(float4 v) { return vsum(v.lo + v.hi); }
__attribute__((overloadable)) inline float vsum(float8 v) { return vsum(v.lo + v.hi); }
__attribute__((overloadable)) inline float vsum(float16 v) { return vsum(v.lo + v.hi); }
__attribute__((overloadable)) inline float vmax(float v) { return v; }
__attribute__((overloadable)) inline float vmax(float2 v) { return fmax(v.x, v.y); }
__attribute__((overloadable)) inline float vmax(float4 v) { return vmax(fmax(v.lo, v.hi)); }
__attribute__((overloadable)) inline float vmax(float8 v) { return vmax(fmax(v.lo, v.hi)); }
__attribute__((overloadable)) inline float vmax(float16 v) { return vmax(fmax(v.lo, v.hi)); }

// a > b ? a : b, so b where a is NaN: one maxps on x86, where OpenCL's fmax spends two more
// instructions on its NaN rules. For running maxima that never hold NaN it is fmax.
__attribute__((overloadable)) inline floatV max_or_second(floatV a, floatV b) { return select(b, a, a > b); }

// fp32 to bf16 bits (the high half), round to nearest even; an overflow past the largest finite
// becomes inf; NaN keeps its sign and is made quiet (bit 6 of the half) so it never rounds into inf.
// For a float and every vector width (convert.cl, quant.cl).
#define BF16_BITS_OF(N)                                                                       \
__attribute__((overloadable)) inline ushort##N bf16_bits(float##N x) {                        \
    const uint##N u = as_uint##N(x);                                                          \
    const uint##N rounded = (u + (uint##N)(0x7FFF) + ((u >> 16) & (uint##N)(1))) >> 16;       \
    return convert_ushort##N(select(rounded, (u >> 16) | (uint##N)(0x40), isnan(x)));         \
}
BF16_BITS_OF()
BF16_BITS_OF(2)
BF16_BITS_OF(4)
BF16_BITS_OF(8)
BF16_BITS_OF(16)

// The 16-bit GEMMs' work-group to (batch, TILE x TILE tile of C) map (gemm16.cl, gemm16_mma.cl; the host
// launches tiles(M) * tiles(N) * batch groups, OpenCLBackend.gemm): declares batch, row0 and col0 (the
// tile's first row and column of C), and pa and pb (the batch's op(A) and op(B) as 16-bit values) from
// the kernels' arguments m, n, a, ao, b, bo, stride_a and stride_b.
#define GEMM16_TILE_OF_GROUP(TILE)                                                                          \
    const int tiles_m = (m + TILE - 1) / TILE, tiles_n = (n + TILE - 1) / TILE;                             \
    const int tile_group = get_group_id(0);                                                                 \
    const int batch = tile_group / (tiles_m * tiles_n), tile = tile_group % (tiles_m * tiles_n);            \
    const int row0 = (tile / tiles_n) * TILE, col0 = (tile % tiles_n) * TILE;                               \
    __global const ushort* pa = (__global const ushort*)(a + ao) + (long)batch * stride_a;                  \
    __global const ushort* pb = (__global const ushort*)(b + bo) + (long)batch * stride_b;

// vstore_half_rte (IEEE round to nearest even; core OpenCL) with NaN stored as the host does: the
// sign kept, quiet, no payload (sign | 0x7E00). Devices differ there (NVIDIA stores 0x7FFF whatever
// the sign); this makes every device's f16 bits the CPU backend's. For a float and every vector width.
inline void f16_store_nan(float x, size_t e, __global half* p) {
    if (isnan(x)) ((__global ushort*)p)[e] = (ushort)(((as_uint(x) >> 16) & 0x8000) | 0x7E00);
}
__attribute__((overloadable)) inline void f16_store_rte(float x, size_t i, __global half* p) {
    vstore_half_rte(x, i, p);
    f16_store_nan(x, i, p);
}
#define F16_STORE_RTE_OF(N)                                                                   \
__attribute__((overloadable)) inline void f16_store_rte(float##N x, size_t i, __global half* p) { \
    vstore_half##N##_rte(x, i, p);                                                            \
    if (any(isnan(x))) {                                                                      \
        float lanes[N];                                                                       \
        vstore##N(x, 0, lanes);                                                               \
        for (int j = 0; j < N; j++) f16_store_nan(lanes[j], i * N + j, p);                    \
    }                                                                                         \
}
F16_STORE_RTE_OF(2)
F16_STORE_RTE_OF(4)
F16_STORE_RTE_OF(8)
F16_STORE_RTE_OF(16)

// fp32 to bf16 bits with stochastic rounding: up (away from zero) with probability equal to the
// fraction of a bf16 ulp the value is past the bf16 value below it, given 16 uniform random bits per
// element (the low half of `random`): adding them to the bits carries into the high half exactly
// then. Unbiased (the expected result is x), so updates smaller than half an ulp survive on average.
// inf stays inf; NaN as bf16_bits. For a float and every vector width (convert.cl).
#define BF16_BITS_STOCHASTIC_OF(N)                                                            \
__attribute__((overloadable)) inline ushort##N bf16_bits_stochastic(float##N x, uint##N random) { \
    const uint##N u = as_uint##N(x);                                                          \
    const uint##N rounded = (u + (random & (uint##N)(0xFFFF))) >> 16;                         \
    return convert_ushort##N(select(rounded, (u >> 16) | (uint##N)(0x40), isnan(x)));         \
}
BF16_BITS_STOCHASTIC_OF()
BF16_BITS_STOCHASTIC_OF(2)
BF16_BITS_STOCHASTIC_OF(4)
BF16_BITS_STOCHASTIC_OF(8)
BF16_BITS_STOCHASTIC_OF(16)

// A 32-bit integer hash with full avalanche (Wellons' "lowbias32"): counter-based random bits,
// the same on every device and in the CPU twin (BlockFormat.counterHash), so a draw depends only
// on (element, key) and never on the launch.
#define COUNTER_HASH_OF(N)                                                                    \
__attribute__((overloadable)) inline uint##N counter_hash(uint##N x) {                        \
    x ^= x >> 16;                                                                             \
    x *= (uint##N)(0x7FEB352Du);                                                              \
    x ^= x >> 15;                                                                             \
    x *= (uint##N)(0x846CA68Bu);                                                              \
    return x ^ (x >> 16);                                                                     \
}
COUNTER_HASH_OF()
COUNTER_HASH_OF(2)
COUNTER_HASH_OF(4)
COUNTER_HASH_OF(8)
COUNTER_HASH_OF(16)

// Elementwise kernels over n elements: work-item i < n/VW handles vector i; the n % VW work-items
// after those handle one tail element each (the host launches n/VW + n%VW work-items).
#define ELEMENTWISE_INDEX                        \
    const int i = get_global_id(0);              \
    const int vectors = n / VW;                  \
    const int tail = vectors * VW + (i - vectors);

// Half-width vectors (VW 16: float8, one AVX register). A loop that keeps running sums or maxima
// folds each vector's two halves into half-width accumulators: one more add per vector, and half as
// many values live across iterations (at VW 16 the full-width ones spill to the stack). vsum and
// vmax reduce them.
#if VW == 16
#define floatH float8
#elif VW == 8
#define floatH float4
#elif VW == 4
#define floatH float2
#else
#define floatH float
#endif
__attribute__((overloadable)) inline floatH max_or_second(floatH a, floatH b) { return select(b, a, a > b); }
inline floatH fold_sum(floatV v) { return v.lo + v.hi; }
inline floatH fold_max(floatV v) { return max_or_second(v.lo, v.hi); }

// The maximum / sum of `value` over the work-group (no subgroups: NVIDIA's OpenCL has none). Every
// work-item must call it. group_max / group_sum reduce a float, group_max4 / group_sum4 four at once.
// Small work-groups (CPU devices, WG 16): one barrier, then every work-item combines the WG values
// itself; PoCL runs each barrier-free region as a loop over the work-items, so every barrier saved
// is a pass over the group saved. Larger work-groups (GPUs): a __local memory tree.
#if WG <= 32
#define GROUP_REDUCE(name, type, combine)                                              \
inline type name(type value, __local type* scratch) {                                  \
    const int lid = get_local_id(0);                                                   \
    scratch[lid] = value;                                                              \
    barrier(CLK_LOCAL_MEM_FENCE);                                                      \
    type result = scratch[0];                                                          \
    for (int i = 1; i < WG; i++) result = combine(result, scratch[i]);                 \
    barrier(CLK_LOCAL_MEM_FENCE);                                                      \
    return result;                                                                     \
}
#else
#define GROUP_REDUCE(name, type, combine)                                              \
inline type name(type value, __local type* scratch) {                                  \
    const int lid = get_local_id(0);                                                   \
    scratch[lid] = value;                                                              \
    barrier(CLK_LOCAL_MEM_FENCE);                                                      \
    for (int stride = WG / 2; stride > 0; stride >>= 1) {                              \
        if (lid < stride) scratch[lid] = combine(scratch[lid], scratch[lid + stride]); \
        barrier(CLK_LOCAL_MEM_FENCE);                                                  \
    }                                                                                  \
    const type result = scratch[0];                                                    \
    barrier(CLK_LOCAL_MEM_FENCE);                                                      \
    return result;                                                                     \
}
#endif
#define GROUP_ADD(a, b) ((a) + (b))
GROUP_REDUCE(group_max, float, fmax)
GROUP_REDUCE(group_sum, float, GROUP_ADD)
GROUP_REDUCE(group_max4, float4, fmax)
GROUP_REDUCE(group_sum4, float4, GROUP_ADD)

#define as_intV CAT(as_int, VW)
#define intV CAT(int, VW)
#define as_floatV CAT(as_float, VW)

// exp2 and exp as polynomials (the loss kernels' and the causal softmax's), identical in the CPU twin
// (LossVectorMath.swift: kdExp2, kdExp).
// kd_exp2: 2^x for x <= 127; results below 2^-126 flush to exactly 0 (so -inf gives 0), relative
// error below 2e-7 elsewhere, and NaN stays NaN (the row sums then report a non-finite input).
// n = round(x) by adding 1.5 * 2^23 + 127: the sum's low mantissa bits hold n + 127, the biased
// exponent, so one shift by 23 makes 2^n (the high bits of 1.5 * 2^23 shift out). Then 2^r on
// [-0.5, 0.5] as 1 + r q(r) with q a near-minimax quartic (2^0 is exactly 1); x is clamped at
// -127, so the biased exponent is never negative and n = -127 gives exactly 0.
inline floatV kd_exp2(floatV x0) {
    const floatV x = select(x0, (floatV)(-127.0f), x0 < (floatV)(-127.0f));
    const floatV t = x + 12583039.0f;
    const floatV r = x - (t - 12583039.0f);
    floatV y = 1.326138386502862e-3f;
    y = y * r + 9.671514853835106e-3f;
    y = y * r + 5.550745129585266e-2f;
    y = y * r + 2.4022242426872253e-1f;
    y = y * r + 6.931469440460205e-1f;
    y = y * r + 1.0f;
    return y * as_floatV(as_intV(t) << 23);
}

#define LOG2E 1.44269504088896341f
#define LN2 0.693147180559945309f

// e^x for x <= 88.
inline floatV kd_exp(floatV x) { return kd_exp2(x * LOG2E); }

// This work-item's share of the maximum of row[0..n): vectors lid, lid+WG, ..., then the tail.
inline float partial_row_max(__global const float* row, int n, int lid) {
    floatV m = (floatV)(-INFINITY);
    const int vectors = n / VW;
    for (int v = lid; v < vectors; v += WG) m = fmax(m, vloadV(v, row));
    float result = vmax(m);
    for (int j = vectors * VW + lid; j < n; j += WG) result = fmax(result, row[j]);
    return result;
}

// This work-item's share of sum_j exp((row[j] - shift) * scale).
inline float partial_row_sum_exp(__global const float* row, int n, int lid, float shift, float scale) {
    floatV s = (floatV)(0.0f);
    const int vectors = n / VW;
    for (int v = lid; v < vectors; v += WG) s += exp((vloadV(v, row) - shift) * scale);
    float result = vsum(s);
    for (int j = vectors * VW + lid; j < n; j += WG) result += exp((row[j] - shift) * scale);
    return result;
}
