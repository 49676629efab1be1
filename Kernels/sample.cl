// sample.cl: one token id per row of logits z [R, V], drawn on the device so that only the ids
// reach the host (generation, rollouts). One work-group per row. CPU twin: CPUKernels.sample_rows.
//
// At temperature 0 a row gives the first index of its largest logit. Otherwise it gives a draw
// from softmax(z / T) kept to its top_k most likely tokens (top_k > 0), then to the smallest set of
// the most likely whose mass reaches top_p of that kept mass (top_p < 1: Hugging Face's order), by
// the inverse of the kept distribution's cumulative sum in vocabulary order at u[r] in [0, 1).
// Each kept set is the tokens whose order-preserving key (a 32-bit integer that sorts as the
// logits do) is at or above a threshold, found by 32 rounds of bisection over the key bits
// (counting, or summing the weights of, the keys at or above a candidate; top-p carries the mass
// above the bisection's window and weighs only the keys inside it); ties at a threshold are all kept. A row whose largest logit is -inf, or that holds a NaN, gives -1.
//
// Every work-item walks one contiguous chunk of the row, so the inverse CDF is a prefix over the
// work-items' partial sums, which every work-item adds in the same order (the chunks' ranges tile
// [0, total) exactly). Branches around barriers depend only on kernel arguments and group-wide
// values, so every work-item reaches every barrier (no early return: PoCL miscompiles one).

inline uint order_key(float z) {
    const uint bits = as_uint(z);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__kernel void sample_rows(__global const float* z, int zo, __global const float* u, int uo, __global int* ids, int io,
                          int n, float temperature, int top_k, float top_p) {
    __local float scratch[WG];
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
    // top-k: the largest threshold with at least top_k keys at or above it.
    uint tk = 0;
    const int k_rounds = sampling && top_k > 0 && top_k < n ? 32 : 0;
    for (int round = 0; round < k_rounds; round++) {
        const uint candidate = tk | (1u << (31 - round));
        float count = 0.0f;
        for (int j = begin; j < end; j++) count += order_key(zr[j]) >= candidate ? 1.0f : 0.0f;
        if (group_sum(count, scratch) >= (float)top_k) tk = candidate;
    }
    // top-p: the largest threshold whose kept mass reaches top_p of the top-k mass. After a round
    // the threshold lies in a window [tp, tp + 2 bit) of keys; the mass of the kept keys above it
    // is carried (`above`), so a round weighs only the keys in the upper half of the window.
    uint tp = 0;
    const int p_rounds = sampling && top_p < 1.0f ? 32 : 0;
    float kept = 0.0f;
    if (p_rounds > 0) for (int j = begin; j < end; j++) if (order_key(zr[j]) >= tk) kept += exp((zr[j] - top) * inv_t);
    const float goal = top_p * group_sum(kept, scratch);
    float above = 0.0f;
    for (int round = 0; round < p_rounds; round++) {
        const uint bit = 1u << (31 - round), candidate = tp | bit;
        float window = 0.0f;
        for (int j = begin; j < end; j++) {
            const uint key = order_key(zr[j]);
            if (key >= candidate && key - candidate < bit && key >= tk) window += exp((zr[j] - top) * inv_t);
        }
        if (group_sum(above + window, scratch) >= goal) tp = candidate; else above += window;
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
