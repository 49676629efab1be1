// common.cl: compiled in front of every kernel file.
//
// Build-time constants (set by the backend per device):
//   VW  vector width of explicit loads: 16 on CPU devices (PoCL does not vectorize a work-item's
//       strided loop by itself), 4 on GPUs.
//   WG  work-group size of the row kernels, a power of two; one work-group handles one row.
// Reductions use __local memory trees, not subgroups (NVIDIA's OpenCL has none).

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
#define vloadV CAT(vload, VW)
#define vstoreV CAT(vstore, VW)

#if VW == 1
inline float vsum(float v) { return v; }
inline float vmax(float v) { return v; }
#else
#if VW == 16
inline float8 half_sum(float16 v) { return v.lo + v.hi; }
inline float8 half_max(float16 v) { return fmax(v.lo, v.hi); }
#endif
#if VW >= 8
inline float4 half_sum8(float8 v) { return v.lo + v.hi; }
inline float4 half_max8(float8 v) { return fmax(v.lo, v.hi); }
#endif
inline float2 half_sum4(float4 v) { return v.lo + v.hi; }
inline float2 half_max4(float4 v) { return fmax(v.lo, v.hi); }

inline float vsum(floatV v) {
#if VW == 16
    float2 r = half_sum4(half_sum8(half_sum(v)));
#elif VW == 8
    float2 r = half_sum4(half_sum8(v));
#elif VW == 4
    float2 r = half_sum4(v);
#else
    float2 r = v;
#endif
    return r.x + r.y;
}

inline float vmax(floatV v) {
#if VW == 16
    float2 r = half_max4(half_max8(half_max(v)));
#elif VW == 8
    float2 r = half_max4(half_max8(v));
#elif VW == 4
    float2 r = half_max4(v);
#else
    float2 r = v;
#endif
    return fmax(r.x, r.y);
}
#endif

// a > b ? a : b, so b where a is NaN: one maxps on x86, where OpenCL's fmax spends two more
// instructions on its NaN rules. For running maxima that never hold NaN it is fmax.
__attribute__((overloadable)) inline floatV max_or_second(floatV a, floatV b) { return select(b, a, a > b); }

// Half-width vectors (VW 16: float8, one AVX register). A loop that keeps running sums or maxima
// folds each vector's two halves into half-width accumulators: one more add per vector, and half as
// many values live across iterations (at VW 16 the full-width ones spill to the stack).
#if VW == 1
#define floatH float
inline float fold_sum(float v) { return v; }
inline float fold_max(float v) { return v; }
inline float hsum(float h) { return h; }
inline float hmax(float h) { return h; }
#else
#if VW == 16
#define floatH float8
inline float hsum(float8 h) { const float2 r = half_sum4(half_sum8(h)); return r.x + r.y; }
inline float hmax(float8 h) { const float2 r = half_max4(half_max8(h)); return fmax(r.x, r.y); }
#elif VW == 8
#define floatH float4
inline float hsum(float4 h) { const float2 r = half_sum4(h); return r.x + r.y; }
inline float hmax(float4 h) { const float2 r = half_max4(h); return fmax(r.x, r.y); }
#elif VW == 4
#define floatH float2
inline float hsum(float2 h) { return h.x + h.y; }
inline float hmax(float2 h) { return fmax(h.x, h.y); }
#else
#define floatH float
inline float hsum(float h) { return h; }
inline float hmax(float h) { return h; }
#endif
__attribute__((overloadable)) inline floatH max_or_second(floatH a, floatH b) { return select(b, a, a > b); }
inline floatH fold_sum(floatV v) { return v.lo + v.hi; }
inline floatH fold_max(floatV v) { return max_or_second(v.lo, v.hi); }
#endif

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
