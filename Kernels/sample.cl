// sample.cl: one token id per row of logits z [R, V], drawn on the device so that only the ids
// reach the host (generation, rollouts). One work-group per row. CPU twin: CPUKernels.sample_rows.
//
// At temperature 0 a row gives the first index of its largest logit. Otherwise it gives a draw
// from softmax(z / T) kept to its top_k most likely tokens (top_k > 0), then to the smallest set of
// the most likely whose mass reaches top_p of that kept mass (top_p < 1: Hugging Face's order), by
// the inverse of the kept distribution's cumulative sum in vocabulary order at u[r] in [0, 1).
// Each kept set is the tokens whose order-preserving key (a 32-bit integer that sorts as the
// logits do) is at or above a threshold, found by a radix select over the key, four bits a pass
// (counting, or summing the weights of, the keys under the prefix found so far in 16 bins); ties at
// a threshold are all kept. A row whose largest logit is -inf, or that holds a NaN, gives -1.
//
// Every work-item walks one contiguous chunk of the row, so the inverse CDF is a prefix over the
// work-items' partial sums, which every work-item adds in the same order (the chunks' ranges tile
// [0, total) exactly). Branches around barriers depend only on kernel arguments and group-wide
// values, so every work-item reaches every barrier (no early return: PoCL miscompiles one).

inline uint order_key(float z) {
    const uint bits = as_uint(z);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

GROUP_REDUCE(group_sum16, float16, GROUP_ADD)

// The largest key t whose kept keys (at or above both t and floor_key) weigh at least goal, where a
// key weighs 1 (use_mass 0: a count) or exp((z - top) / T) (its unnormalized probability), found
// four bits at a time: each of 8 passes makes a 16-bin histogram of the kept keys that share the
// bits found so far, and takes the largest digit whose bin and the bins above it (plus the weight
// already above the prefix) reach goal. Every work-item returns the same t.
inline uint radix_threshold(__global const float* zr, int begin, int end, float top, float inv_t, int use_mass,
                            uint floor_key, float goal, __local float16* scratch16) {
    uint prefix = 0;
    float above = 0.0f;
    for (int pass = 0; pass < 8; pass++) {
        const int shift = 28 - 4 * pass;
        float bins[16];
        for (int d = 0; d < 16; d++) bins[d] = 0.0f;
        for (int j = begin; j < end; j++) {
            const uint key = order_key(zr[j]);
            if (key < floor_key || (pass > 0 && (key >> (shift + 4)) != (prefix >> (shift + 4)))) continue;
            bins[(key >> shift) & 15u] += use_mass ? exp((zr[j] - top) * inv_t) : 1.0f;
        }
        float totals[16];
        vstore16(group_sum16(vload16(0, bins), scratch16), 0, totals);
        int digit = 0;
        for (int d = 15; d > 0; d--) {
            if (above + totals[d] >= goal) { digit = d; break; }
            above += totals[d];
        }
        prefix |= (uint)digit << shift;
    }
    return prefix;
}

__kernel void sample_rows(__global const float* z, int zo, __global const float* u, int uo, __global int* ids, int io,
                          int n, float temperature, int top_k, float top_p) {
    __local float scratch[WG];
    __local float16 scratch16[WG];
    __local float parts[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* zr = z + zo + (long)row * n;
    const int per = (n + WG - 1) / WG, begin = min(n, lid * per), end = min(n, begin + per);

    // The largest logit and the first index holding it.
    float m = -INFINITY;
    int arg = -1;
    for (int j = begin; j < end; j++) if (zr[j] > m) { m = zr[j]; arg = j; }
    const float top = group_max(m, scratch);
    const float first = -group_max(arg >= 0 && m == top ? -(float)arg : -INFINITY, scratch);
    const int valid = top > -INFINITY;  // false for -inf and NaN
    // -1 stands unless a draw is found (a NaN in the row leaves every range empty).
    if (lid == 0) ids[io + row] = valid && temperature == 0.0f ? (int)first : -1;
    barrier(CLK_GLOBAL_MEM_FENCE);

    // Sampling (temperature > 0). Every loop holding a barrier runs a count set by kernel arguments
    // alone, so the whole group takes it alike; a row without a finite top draws nothing.
    const int sampling = temperature > 0.0f;
    const float inv_t = sampling ? 1.0f / temperature : 0.0f;
    // top-k: the largest threshold with at least top_k keys at or above it; top-p: the largest whose
    // kept mass reaches top_p of the top-k mass.
    const uint tk = sampling && top_k > 0 && top_k < n
        ? radix_threshold(zr, begin, end, top, inv_t, 0, 0u, (float)top_k, scratch16) : 0u;
    uint tp = 0;
    if (sampling && top_p < 1.0f) {
        float kept = 0.0f;
        for (int j = begin; j < end; j++) if (order_key(zr[j]) >= tk) kept += exp((zr[j] - top) * inv_t);
        tp = radix_threshold(zr, begin, end, top, inv_t, 1, tk, top_p * group_sum(kept, scratch), scratch16);
    }
    const uint threshold = max(tk, tp);

    // The draw: this work-item's kept mass, the prefix of the others', then a walk of one chunk.
    float part = 0.0f;
    if (sampling && valid) for (int j = begin; j < end; j++) if (order_key(zr[j]) >= threshold) part += exp((zr[j] - top) * inv_t);
    parts[lid] = part;
    barrier(CLK_LOCAL_MEM_FENCE);
    float before = 0.0f, total = 0.0f;
    int last = 0;
    for (int i = 0; i < WG; i++) {
        if (i == lid) before = total;
        if (parts[i] > 0.0f) last = i;
        total += parts[i];
    }
    const float target = u[uo + row] * total;
    if (part > 0.0f && target >= before && (target < before + part || lid == last)) {
        float cumulative = before;
        int chosen = -1;
        for (int j = begin; j < end; j++) {
            if (order_key(zr[j]) < threshold) continue;
            cumulative += exp((zr[j] - top) * inv_t);
            chosen = j;
            if (target < cumulative) break;
        }
        ids[io + row] = chosen;
    }
}
