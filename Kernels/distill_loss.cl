// distill_loss.cl: the fused distillation-loss family over rows of student logits zs [rows, V]
// and teacher logits zt [rows, V] (or a top-k teacher), one work-group per row at a time.
// The math, the gradients and the conventions are in Sources/Losses/DistillationLoss.swift and
// /work/shared/spec/losses.md. CPU twins: CPUKernels.distill_count_valid_rows, distill_loss_rows,
// distill_decoupled_topk_rows, distill_sparse_teacher_rows (Sources/CPUBackend/CPUKernels+Distill.swift),
// with the same passes and the same exp/log polynomials.
//
// Per row (a = zs / T, b = teacher / T, q = softmax(a), p = softmax(b)):
//   pass 1  max of both rows, non-finite detection (+inf, NaN), TAID mix written to scratch   (1 read of zs, zt)
//   pass 2  e_a = exp(a - max a), e_b = exp(b - max b), their sums and the online KL terms;
//           e_a, e_b stashed in this group's scratch rows (cache resident)                     (2 exps / element)
//   pass 3  jsd / sfkl / srkl / tvd only: divergence and sum(q g) from the stashes, mixtures in
//           log space (logaddexp); g stashed in the dz row                                      (1 exp + 1 log)
//   pass 4  dz written (in place over zs when dz == zs)                                          (no exp)
// Work-groups are persistent: group g handles rows g, g + groups, ... and owns scratch rows
// [g, 4, Vp] (Vp = V rounded up to VW), so no [rows, V] temporary ever exists.
// Every loop bound and branch around a barrier is uniform over the work-group: a kernel argument or
// a group reduction's result (PoCL miscompiles barriers after divergent control flow), and every
// work-item touches only its own elements of a row between barriers, so stashes need no barrier.

#define KIND_FKL 0
#define KIND_RKL 1
#define KIND_JSD 2
#define KIND_SFKL 3
#define KIND_SRKL 4
#define KIND_TVD 5

#define FLAG_GRADIENT 1
#define FLAG_HARD 2
#define FLAG_TAID 4
#define FLAG_TOPK 8
#define FLAG_TOPK_UNIFORM 16
#define FLAG_LABELS 32
#define FLAG_MASK 64
#define FLAG_MEAN 128
#define FLAG_CONTIGUOUS 256
#define FLAG_TOPK_BUCKET 512
#define FLAG_TOPK_DECOUPLED 1024  // the host launches distill_decoupled_topk_rows
#define FLAG_TOPK_PRIOR 2048
#define FLAG_TOPK_SPARSE 4096  // the host launches distill_sparse_teacher_rows

// row_status bits (also in DistillationLoss.swift)
#define STATUS_IGNORED 1
#define STATUS_STUDENT_NONFINITE 2
#define STATUS_TEACHER_NONFINITE 4
#define STATUS_STUDENT_ALL_MASKED 8
#define STATUS_TEACHER_ALL_MASKED 16
#define STATUS_BAD_LABEL 32
#define STATUS_BAD_TOPK_ID 64

#define SCRATCH_ROWS 4
#define ROW_EA 0
#define ROW_EB 1
#define ROW_TEACHER 2
#define ROW_EH 3

// kd_exp2, kd_exp, LOG2E and the int vector types: common.cl.

// kd_exp for arguments that may exceed 88 (mixture ratios): clamped there.
inline floatV kd_exp_bounded(floatV x) {
    return kd_exp(select(x, (floatV)(88.0f), x > (floatV)(88.0f)));
}

// log(1 + u) for u in [0, 1], to full precision for small u.
inline floatV kd_log1p_unit(floatV u) {
    const floatV w = 1.0f + u;
    const intV big = w > 1.41421356f;
    const floatV e = select((floatV)(0.0f), (floatV)(1.0f), big);
    const floatV m = select(w, w * 0.5f, big);
    const floatV x = m - 1.0f;
    const floatV z = x * x;
    floatV y = 7.0376836292E-2f;
    y = y * x - 1.1514610310E-1f;
    y = y * x + 1.1676998740E-1f;
    y = y * x - 1.2420140846E-1f;
    y = y * x + 1.4249322787E-1f;
    y = y * x - 1.6668057665E-1f;
    y = y * x + 2.0000714765E-1f;
    y = y * x - 2.4999993993E-1f;
    y = y * x + 3.3333331174E-1f;
    y = y * x * z;
    y = y - 2.12194440e-4f * e - 0.5f * z;
    // (u - (w - 1)) / w corrects the rounding of 1 + u.
    return x + y + 0.693359375f * e + (u - (w - 1.0f)) / w;
}

// log(exp(x) + exp(y)), -inf when both are -inf.
inline floatV kd_logaddexp(floatV x, floatV y) {
    const floatV mx = fmax(x, y);
    const floatV r = mx + kd_log1p_unit(kd_exp(-fabs(x - y)));
    return select(r, (floatV)(-INFINITY), mx == (floatV)(-INFINITY));
}

typedef union { floatV v; float s[VW]; } row_vector;

// Vector v of a row of n floats; lanes past n read as -inf (they then carry zero probability).
inline floatV load_row(__global const float* row, int v, int n) {
    if ((v + 1) * VW <= n) return vloadV(v, row);
    row_vector t;
    t.v = (floatV)(-INFINITY);
    for (int i = 0; i < VW; i++) if (v * VW + i < n) t.s[i] = row[v * VW + i];
    return t.v;
}

inline void store_row(floatV value, __global float* row, int v, int n) {
    if ((v + 1) * VW <= n) { vstoreV(value, v, row); return; }
    row_vector t;
    t.v = value;
    for (int i = 0; i < VW; i++) if (v * VW + i < n) row[v * VW + i] = t.s[i];
}

// Each work-item's loop over its vectors v of a row: the whole ones with plain vector loads and
// stores, then the partial last one (when n is not a multiple of VW and it is this work-item's)
// through load_row / store_row. BODY(LOAD, STORE) is a macro using LOAD(row, v), STORE(value, row, v).
#define LOAD_WHOLE(row, v) vloadV(v, row)
#define STORE_WHOLE(value, row, v) vstoreV(value, v, row)
#define LOAD_PART(row, v) load_row(row, v, n)
#define STORE_PART(value, row, v) store_row(value, row, v, n)
#define FOR_EACH_VECTOR(BODY) {                                            \
        int v = vbeg;                                                      \
        for (; v < vwhole; v += vstep) BODY(LOAD_WHOLE, STORE_WHOLE)       \
        for (; v < vend; v += vstep) BODY(LOAD_PART, STORE_PART)           \
    }

inline int row_is_valid(int row, int flags, __global const float* labels, __global const float* mask, int ignore_index) {
    int valid = 1;
    if (flags & FLAG_MASK) valid = mask[row] != 0.0f;
    if (flags & FLAG_LABELS) valid = valid && (int)labels[row] != ignore_index;
    return valid;
}

// A valid row's bad-input bits: non-finite student or teacher input (NaN or +inf anywhere in a row
// makes its exp sum NaN), a row with every entry -inf, a top-k id outside the vocabulary.
inline int input_status(int student_nonfinite, int teacher_nonfinite, float max_s, float max_t, int bad_id) {
    int status = 0;
    if (student_nonfinite) status |= STATUS_STUDENT_NONFINITE;
    if (teacher_nonfinite) status |= STATUS_TEACHER_NONFINITE;
    if (max_s == -INFINITY) status |= STATUS_STUDENT_ALL_MASKED;
    if (max_t == -INFINITY) status |= STATUS_TEACHER_ALL_MASKED;
    if (bad_id) status |= STATUS_BAD_TOPK_ID;
    return status;
}

// count[0] = number of valid rows (mask != 0 and label != ignore_index). One work-group.
__kernel void distill_count_valid_rows(__global const float* labels, int lo, __global const float* mask, int mo,
                                       int flags, int ignore_index, int rows, __global float* count, int co) {
    __local float4 scratch[WG];
    const int lid = get_local_id(0);
    float valid = 0.0f;
    for (int r = lid; r < rows; r += WG) valid += (float)row_is_valid(r, flags, labels + lo, mask + mo, ignore_index);
    const float4 total = group_sum4((float4)(valid, 0.0f, 0.0f, 0.0f), scratch);
    if (lid == 0) count[co] = total.x;
}

// The argument list of the row kernels (distill_loss_rows, distill_decoupled_topk_rows: the host
// sets the same arguments for both) and the work-group's row layout: this work-item's vectors of a
// row, a contiguous block on CPU devices (one stream per thread) or interleaved on GPUs, and its
// group's scratch rows [SCRATCH_ROWS, vp].
#define DISTILL_ROW_KERNEL_ARGUMENTS                                                                   \
    __global const float* zs, int zso,                                                                 \
    __global const float* zt, int zto, int zt_ld,                                                      \
    __global const float* topk_ids, int tio, __global const float* topk_vals, int tvo, int k,          \
    __global const float* tail_prior, int tpo,                                                         \
    __global const float* labels, int lo, __global const float* mask, int mo,                          \
    __global float* dz, int dzo,                                                                       \
    __global float* row_loss, int rlo, __global float* row_status, int rso, __global float* row_ce, int rco, \
    __global const float* valid_count, int vco,                                                        \
    __global float* scratch,                                                                           \
    int rows, int n, int kind, int flags, int ignore_index,                                            \
    float inv_t, float param, float taid_t, float soft_weight, float hard_weight, float grad_output
#define DISTILL_ROW_LAYOUT                                                                             \
    __local float4 reduce[WG];                                                                         \
    const int lid = get_local_id(0), group = get_group_id(0), groups = get_num_groups(0);             \
    const int nvec = (n + VW - 1) / VW, vp = nvec * VW;                                                \
    const int contiguous = flags & FLAG_CONTIGUOUS;                                                    \
    const int per = (nvec + WG - 1) / WG;                                                              \
    const int vbeg = contiguous ? min(nvec, lid * per) : lid;                                          \
    const int vend = contiguous ? min(nvec, vbeg + per) : nvec;                                        \
    const int vstep = contiguous ? 1 : WG;                                                             \
    const int vwhole = min(vend, n / VW); /* vectors below vwhole lie wholly inside the row */         \
    __global float* group_scratch = scratch + (long)group * SCRATCH_ROWS * vp;

// A row's start: whether it counts (mask, ignore index), its status so far and its label (-1 without
// hard labels); and its end: the row's loss, status and cross-entropy written, then a barrier, as
// the group's scratch rows are reused by its next row.
#define DISTILL_ROW_START                                                                              \
        const int valid = row_is_valid(row, flags, labels + lo, mask + mo, ignore_index);              \
        const float row_weight = (flags & FLAG_MASK) ? mask[mo + row] : 1.0f;                          \
        int status = valid ? 0 : STATUS_IGNORED;                                                       \
        int label = -1;                                                                                \
        if (hard) {                                                                                    \
            label = (int)labels[lo + row];                                                             \
            if (valid && (label < 0 || label >= n)) status |= STATUS_BAD_LABEL;                        \
        }
#define DISTILL_ROW_END                                                                                \
        if (lid == 0) {                                                                                \
            row_loss[rlo + row] = valid ? row_weight * loss : 0.0f;                                    \
            row_status[rso + row] = (float)status;                                                     \
            row_ce[rco + row] = valid ? cross_entropy : 0.0f;                                          \
        }                                                                                              \
        barrier(CLK_GLOBAL_MEM_FENCE);

// The fused loss. Tensor arguments are (buffer, element offset); zs and dz may be the same buffer
// (in place). zs is [rows, V]; the dense teacher row r starts at zt + zto + r * zt_ld (zt_ld >= V
// truncates a padded teacher vocabulary); a top-k teacher is ids/vals [rows, k]. row_ce gets each
// row's hard-label cross-entropy (untempered student) whenever FLAG_HARD is set, even at hard_weight 0,
// so the soft and hard parts of the loss come out of the same pass.
// param: beta (jsd) or alpha (sfkl, srkl). soft_weight already includes T^2 when asked for.
__kernel void distill_loss_rows(DISTILL_ROW_KERNEL_ARGUMENTS) {
    DISTILL_ROW_LAYOUT
    __global float* ea_row = group_scratch + ROW_EA * vp;
    __global float* eb_row = group_scratch + ROW_EB * vp;
    __global float* tm_row = group_scratch + ROW_TEACHER * vp;
    __global float* eh_row = group_scratch + ROW_EH * vp;
    const int gradient = flags & FLAG_GRADIENT;
    const int topk = flags & FLAG_TOPK;
    const int taid = flags & FLAG_TAID;
    // Hard-label CE uses the untempered student: its own exp sum unless T = 1.
    const int hard = flags & FLAG_HARD;
    const int hard_separate = hard && inv_t != 1.0f;
    const float grad_scale = (flags & FLAG_MEAN) && (flags & FLAG_GRADIENT) ? grad_output / fmax(1.0f, valid_count[vco]) : grad_output;
    const float log_param = log(param), log_one_minus = log(1.0f - param);

    // Dense teacher without TAID: the maxima of the group's next row are read during this row's
    // pass 2 (its exps are the cost; the loads ride along), so pass 1 needs no reading of its own.
    const int prefetch = !topk && !taid;
    // Running maxima and sums are half-width (common.cl); NaN inputs are found from the exp sums.
    floatH next_max_s = (floatH)(-INFINITY), next_max_t = (floatH)(-INFINITY);
    if (prefetch && group < rows) {
        __global const float* zr0 = zs + zso + (long)group * n;
        __global const float* tr0 = zt + zto + (long)group * zt_ld;
#define FIRST_MAXIMA(LOAD, STORE) {                                       \
            next_max_s = max_or_second(fold_max(LOAD(zr0, v)), next_max_s); \
            next_max_t = max_or_second(fold_max(LOAD(tr0, v)), next_max_t); }
        FOR_EACH_VECTOR(FIRST_MAXIMA)
#undef FIRST_MAXIMA
    }
    for (int row = group; row < rows; row += groups) {
        __global const float* zr = zs + zso + (long)row * n;
        __global float* dr = dz + dzo + (long)row * n;
        DISTILL_ROW_START

        // Pass 0 (top-k teacher): a dense teacher row in scratch. Missing mass: renormalize (the
        // rest is -inf), uniform (vals are log-probabilities; the rest 1 - sum exp(vals) is spread
        // evenly over the other n - k tokens), bucket (the rest spread like the student's tail) or
        // prior (the rest spread over the unlisted tokens in proportion to exp(tail_prior), [n] log-weights
        // shared by every row). Its reductions and barriers sit in a branch on a kernel
        // argument, which every work-item takes alike.
        __global const float* tr = topk ? tm_row : zt + zto + (long)row * zt_ld;
        int bad_id = 0;
        if (topk) {
            __global const float* vals = topk_vals + tvo + (long)row * k;
            // The rest 1 - sum exp(vals) without cancellation: -expm1(largest) - sum of the others.
            float part_max = -INFINITY;
            for (int i = lid; i < k; i += WG) part_max = fmax(part_max, vals[i]);
            const float largest = group_max4((float4)(part_max, 0.0f, 0.0f, 0.0f), reduce).x;
            float part_first = -INFINITY;
            for (int i = lid; i < k; i += WG) if (vals[i] == largest) part_first = fmax(part_first, (float)(-i));
            const float first_found = group_max4((float4)(part_first, 0.0f, 0.0f, 0.0f), reduce).x;
            const int first = first_found == -INFINITY ? -1 : -(int)first_found;
            float part = 0.0f;
            for (int i = lid; i < k; i += WG) if (i != first) part += exp(vals[i]);
            const float others = group_sum4((float4)(part, 0.0f, 0.0f, 0.0f), reduce).x;
            // Listed probabilities that sum to 1 leave a residue of their exps' rounding (about k ulps), which
            // tempering as rest^(1/T) would magnify into real mass: within k ulps of 0 the rest is 0.
            const float residue = -expm1(largest) - others;
            const float missing = residue > (float)k * FLT_EPSILON ? residue : 0.0f;
            if (flags & (FLAG_TOPK_BUCKET | FLAG_TOPK_PRIOR)) {
                // The rest spread over the unlisted tokens in proportion to a row s: the student's (bucket,
                // tempered: one bucket set against the student's mass on them) or the prior (at T = 1):
                // tm_j = log rest + s_j - smax - log(rest_s) / u with rest_s = sum over the unlisted tokens of
                // exp((s - smax) u), u = 1/T (bucket) or 1 (prior), summed over them alone (the listed ids
                // marked 1 in tm_row first), not as all minus listed, which cancels.
                __global const float* sr = (flags & FLAG_TOPK_PRIOR) ? tail_prior + tpo : zr;
                const float su = (flags & FLAG_TOPK_PRIOR) ? 1.0f : inv_t;
                floatH bmax = (floatH)(-INFINITY);
#define BUCKET_MAX(LOAD, STORE) { bmax = max_or_second(fold_max(LOAD(sr, v)), bmax); vstoreV((floatV)(0.0f), v, tm_row); }
                FOR_EACH_VECTOR(BUCKET_MAX)
#undef BUCKET_MAX
                const float zmax = group_max4((float4)(vmax(bmax), 0.0f, 0.0f, 0.0f), reduce).x;
                const float zshift = zmax == -INFINITY ? 0.0f : zmax;
                barrier(CLK_GLOBAL_MEM_FENCE);
                for (int i = lid; i < k; i += WG) {
                    const int id = (int)topk_ids[tio + (long)row * k + i];
                    if (id >= 0 && id < n) tm_row[id] = 1.0f;
                }
                barrier(CLK_GLOBAL_MEM_FENCE);
                floatH bsum = (floatH)(0.0f);
#define BUCKET_SUM(LOAD, STORE) {                                                                   \
                    const floatV e = kd_exp((LOAD(sr, v) - (floatV)(zshift)) * su);                    \
                    bsum += fold_sum(select(e, (floatV)(0.0f), vloadV(v, tm_row) != (floatV)(0.0f))); }
                FOR_EACH_VECTOR(BUCKET_SUM)
#undef BUCKET_SUM
                const float rest_s = group_sum4((float4)(vsum(bsum), 0.0f, 0.0f, 0.0f), reduce).x;
                const float c = missing > 0.0f && rest_s > 0.0f ? log(missing) - zshift - log(rest_s) / su : -INFINITY;
#define BUCKET_FILL(LOAD, STORE) { STORE((floatV)(c) + LOAD(sr, v), tm_row, v); }
                FOR_EACH_VECTOR(BUCKET_FILL)
#undef BUCKET_FILL
            } else {
                float rest = -INFINITY;
                if ((flags & FLAG_TOPK_UNIFORM) && n > k && missing > 0.0f) rest = log(missing / (float)(n - k));
                for (int v = vbeg; v < vend; v += vstep) vstoreV((floatV)(rest), v, tm_row);
            }
            barrier(CLK_GLOBAL_MEM_FENCE);
            for (int i = lid; i < k; i += WG) {
                const int id = (int)topk_ids[tio + (long)row * k + i];
                if (id >= 0 && id < n) tm_row[id] = topk_vals[tvo + (long)row * k + i];
                else if (id != -1) bad_id = 1;  // -1: an empty slot of a row shorter than k
            }
            barrier(CLK_GLOBAL_MEM_FENCE);
        }

        // Pass 1: maxima; the TAID target (1 - t) stopgrad(zs) + t zt into scratch. (NaN and +inf are
        // found from the exp sums of pass 2, which they turn into NaN.)
        floatH max_s = (floatH)(-INFINITY), max_t = (floatH)(-INFINITY);
        if (taid) {
            // -inf in either row stays -inf (unless its weight is 0), never 0 * -inf.
#define TAID_TARGET(LOAD, STORE) {                                                                             \
                const floatV a = LOAD(zr, v), b = LOAD(tr, v);                                                 \
                floatV mixed = (1.0f - taid_t) * a + taid_t * b;                                               \
                mixed = select(mixed, (floatV)(-INFINITY), (a == (floatV)(-INFINITY) && (floatV)(taid_t) < 1.0f) \
                                                          || (b == (floatV)(-INFINITY) && (floatV)(taid_t) > 0.0f)); \
                mixed = taid_t == 1.0f ? b : taid_t == 0.0f ? a : mixed;                                       \
                vstoreV(mixed, v, tm_row);                                                                     \
                max_s = max_or_second(fold_max(a), max_s);                                                     \
                max_t = max_or_second(fold_max(mixed), max_t); }
            FOR_EACH_VECTOR(TAID_TARGET)
#undef TAID_TARGET
            tr = tm_row;
        } else if (prefetch) {
            max_s = next_max_s;
            max_t = next_max_t;
        } else {
#define ROW_MAXIMA(LOAD, STORE) {                                          \
                max_s = max_or_second(fold_max(LOAD(zr, v)), max_s);       \
                max_t = max_or_second(fold_max(LOAD(tr, v)), max_t); }
            FOR_EACH_VECTOR(ROW_MAXIMA)
#undef ROW_MAXIMA
        }
        const float label_logit = (hard && label >= 0 && label < n) ? zr[label] : 0.0f;
        const float4 maxima = group_max4((float4)(vmax(max_s), vmax(max_t), (float)bad_id, 0.0f), reduce);
        // Shifts in tempered units; an all -inf row shifts by 0 so nothing below is NaN.
        const float shift_s = maxima.x == -INFINITY ? 0.0f : maxima.x * inv_t;
        const float shift_t = maxima.y == -INFINITY ? 0.0f : maxima.y * inv_t;
        const float shift_h = maxima.x == -INFINITY ? 0.0f : maxima.x;

        // Pass 2: exp sums (2 exps per element), the online KL terms, stashes of e_a and e_b for the
        // gradient (forward KL keeps e_a in the dz row, which it overwrites anyway). A loop per case
        // keeps each inner loop free of branches.
        const int stash = gradient || (kind != KIND_FKL && kind != KIND_RKL);
        const int fkl_fast = kind == KIND_FKL && !hard_separate;
        floatH sum_a = 0.0f, sum_b = 0.0f, sum_x = 0.0f, sum_h = 0.0f;
        // fkl: sum e_b (lb - la); rkl: sum e_a (la - lb). max_or_second turns the NaN of -inf - -inf (weight 0)
        // and a -inf difference (weight 0) into a finite number, so 0 * inf never happens.
        // la, lb are in log2 units here (one multiply-add from the logits, none inside the exp).
        const float inv_t2 = inv_t * LOG2E, shift_s2 = shift_s * LOG2E, shift_t2 = shift_t * LOG2E;
        const int has_next = prefetch && row + groups < rows;
        __global const float* zr_next = zs + zso + (long)(has_next ? row + groups : row) * n;
        __global const float* tr_next = zt + zto + (long)(has_next ? row + groups : row) * zt_ld;
        floatH nmax_s = (floatH)(-INFINITY), nmax_t = (floatH)(-INFINITY);
        // PASS2(LOAD) opens the body shared by the four loops below; each adds its own terms and stashes.
#define PASS2(LOAD)                                                                                  \
            if (has_next) {                                                                          \
                nmax_s = max_or_second(fold_max(LOAD(zr_next, v)), nmax_s);                          \
                nmax_t = max_or_second(fold_max(LOAD(tr_next, v)), nmax_t);                          \
            }                                                                                        \
            const floatV zsv = LOAD(zr, v);                                                          \
            const floatV la = zsv * inv_t2 - shift_s2, lb = LOAD(tr, v) * inv_t2 - shift_t2;         \
            const floatV ea = kd_exp2(la), eb = kd_exp2(lb);                                         \
            sum_a += fold_sum(ea);                                                                   \
            sum_b += fold_sum(eb);
#define FKL_TERM sum_x += fold_sum(eb * max_or_second(lb - la, (floatV)(-FLT_MAX)));
#define RKL_TERM sum_x += fold_sum(ea * max_or_second(la - lb, (floatV)(-FLT_MAX)));
#define PASS2_FKL_STASH(LOAD, STORE) { PASS2(LOAD) FKL_TERM STORE(ea, dr, v); vstoreV(eb, v, eb_row); }
#define PASS2_FKL(LOAD, STORE) { PASS2(LOAD) FKL_TERM }
#define PASS2_RKL(LOAD, STORE) { PASS2(LOAD) RKL_TERM }
#define PASS2_ANY(LOAD, STORE) {                                                                     \
            PASS2(LOAD)                                                                              \
            if (kind == KIND_FKL) { FKL_TERM } else if (kind == KIND_RKL) { RKL_TERM }               \
            if (stash) {                                                                             \
                vstoreV(ea, v, ea_row);                                                              \
                vstoreV(eb, v, eb_row);                                                              \
            }                                                                                        \
            if (hard_separate) {                                                                     \
                const floatV eh = kd_exp2((zsv - shift_h) * LOG2E);                                  \
                sum_h += fold_sum(eh);                                                               \
                vstoreV(eh, v, eh_row);                                                              \
            } }
        if (fkl_fast && stash) FOR_EACH_VECTOR(PASS2_FKL_STASH)
        else if (kind == KIND_FKL && !stash && !hard_separate) FOR_EACH_VECTOR(PASS2_FKL)
        else if (kind == KIND_RKL && !stash && !hard_separate) FOR_EACH_VECTOR(PASS2_RKL)
        else FOR_EACH_VECTOR(PASS2_ANY)
#undef PASS2
#undef FKL_TERM
#undef RKL_TERM
#undef PASS2_FKL_STASH
#undef PASS2_FKL
#undef PASS2_RKL
#undef PASS2_ANY
        next_max_s = nmax_s;
        next_max_t = nmax_t;
        const float4 sums = group_sum4((float4)(vsum(sum_a), vsum(sum_b), vsum(sum_x), vsum(sum_h)), reduce);
        if (valid) status |= input_status(isnan(sums.x), isnan(sums.y), maxima.x, maxima.y, maxima.z > 0.0f);
        const float log_sa = log(sums.x), log_sb = log(sums.y);
        const float inv_sa = 1.0f / sums.x, inv_sb = 1.0f / sums.y;
        const float sum_eh = hard_separate ? sums.w : sums.x;
        const float inv_sh = 1.0f / sum_eh;
        __global const float* eh_src = hard_separate ? eh_row : ea_row;

        // Pass 3 (mixture divergences): value and sum(q g), g stashed in the dz row. log q and log p
        // come from the logits (exact where q or p underflow); every mixture is built in log space.
        float divergence = 0.0f, qg = 0.0f;
        floatV value = 0.0f, weighted = 0.0f;
        if (kind != KIND_FKL && kind != KIND_RKL) {
            for (int v = vbeg; v < vend; v += vstep) {
                const floatV q = vloadV(v, ea_row) * inv_sa, p = vloadV(v, eb_row) * inv_sb;
                const floatV lq = load_row(zr, v, n) * inv_t - shift_s - log_sa;
                const floatV lp = load_row(tr, v, n) * inv_t - shift_t - log_sb;
                floatV g;
                if (kind == KIND_JSD) {
                    // beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q; g = log q - log m
                    const floatV lm = kd_logaddexp(log_param + lp, log_one_minus + lq);
                    value += select(param * p * (lp - lm), (floatV)(0.0f), p == (floatV)(0.0f) || (floatV)(param) == 0.0f);
                    value += select((1.0f - param) * q * (lq - lm), (floatV)(0.0f), q == (floatV)(0.0f) || (floatV)(param) == 1.0f);
                    g = select(lq - lm, (floatV)(0.0f), q == (floatV)(0.0f) || (floatV)(param) == 1.0f);
                    weighted += q * g;
                } else if (kind == KIND_SFKL) {
                    // KL(p || m), m = alpha p + (1 - alpha) q; g = w = p q / m
                    const floatV lm = kd_logaddexp(log_param + lp, log_one_minus + lq);
                    value += select(p * (lp - lm), (floatV)(0.0f), p == (floatV)(0.0f));
                    // w does not vanish with q alone (alpha = 0 gives w = p): test the logs, not underflowed q.
                    g = select(kd_exp_bounded(lp + lq - lm), (floatV)(0.0f), lp == (floatV)(-INFINITY) || lq == (floatV)(-INFINITY));
                    weighted += g;
                } else if (kind == KIND_SRKL) {
                    // KL(q || m), m = (1 - alpha) p + alpha q; g = log q - log m - alpha q / m
                    const floatV d = lq - kd_logaddexp(log_one_minus + lp, log_param + lq);
                    value += select(q * d, (floatV)(0.0f), q == (floatV)(0.0f));
                    g = select(d - param * kd_exp_bounded(d), (floatV)(0.0f), q == (floatV)(0.0f));
                    weighted += q * g;
                } else {
                    // tvd: 0.5 sum |p - q|, g = sign(q - p) (stashed: a sign recomputed in pass 4 could
                    // differ where q and p agree to rounding)
                    value += 0.5f * fabs(p - q);
                    g = sign(q - p);
                    weighted += q * g;
                }
                if (gradient) store_row(g, dr, v, n);
            }
        }
        const int mixture = kind != KIND_FKL && kind != KIND_RKL;
        const float4 totals = mixture ? group_sum4((float4)(vsum(value), vsum(weighted), 0.0f, 0.0f), reduce) : (float4)(0.0f);
        if (kind == KIND_FKL) {
            divergence = sums.z * LN2 * inv_sb - log_sb + log_sa;
        } else if (kind == KIND_RKL) {
            divergence = sums.z * LN2 * inv_sa - log_sa + log_sb;
            qg = divergence;
        } else {
            divergence = totals.x;
            qg = totals.y;
        }
        const float cross_entropy = hard ? log(sum_eh) + shift_h - label_logit : 0.0f;
        const float loss = soft_weight * divergence + hard_weight * cross_entropy;

        // Pass 4: dz = grad_scale * (soft_weight / T * dD/da + hard_weight * (softmax(zs) - onehot(label))),
        // zero for ignored rows and for rows whose input is reported as bad.
        const int ok = valid && status == 0;
        const float c = ok ? grad_scale * row_weight * soft_weight * inv_t : 0.0f;
        const float h = ok ? grad_scale * row_weight * hard_weight : 0.0f;
        if (gradient && fkl_fast) {
            // dz = c (q - p) + h softmax(zs) with q = e_a / S_a (in the dz row) and p = e_b / S_b.
            const float ca = c * inv_sa + (hard ? h * inv_sa : 0.0f), cb = c * inv_sb;
#define FKL_GRADIENT(LOAD, STORE) STORE(LOAD(dr, v) * ca - vloadV(v, eb_row) * cb, dr, v);
#define ZERO_GRADIENT(LOAD, STORE) STORE((floatV)(0.0f), dr, v);
            if (ok) FOR_EACH_VECTOR(FKL_GRADIENT)
            else FOR_EACH_VECTOR(ZERO_GRADIENT)
#undef FKL_GRADIENT
#undef ZERO_GRADIENT
        } else if (gradient) {
            const float log_ratio = log_sa - log_sb;
            for (int v = vbeg; v < vend; v += vstep) {
                const floatV q = vloadV(v, ea_row) * inv_sa;
                floatV grad;
                if (kind == KIND_FKL) {
                    grad = c * (q - vloadV(v, eb_row) * inv_sb);
                } else if (kind == KIND_RKL) {
                    const floatV la = load_row(zr, v, n) * inv_t - shift_s, lb = load_row(tr, v, n) * inv_t - shift_t;
                    grad = select(c * q * ((la - lb) - log_ratio - qg), (floatV)(0.0f), q == (floatV)(0.0f));
                } else {
                    const floatV g = load_row(dr, v, n);
                    if (kind == KIND_TVD) grad = (0.5f * c) * q * (g - qg);
                    else if (kind == KIND_JSD) grad = ((1.0f - param) * c) * q * (g - qg);
                    else if (kind == KIND_SFKL) grad = (-(1.0f - param) * c) * (g - q * qg);
                    else grad = c * q * (g - qg);
                }
                if (hard) grad += h * vloadV(v, eh_src) * inv_sh;
                store_row(ok ? grad : (floatV)(0.0f), dr, v, n);
            }
        }
        // The one-hot part of the hard-label gradient, after every work-item wrote its block.
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (gradient && hard && ok && lid == 0) dr[label] -= h;
        DISTILL_ROW_END
    }
}

// LFM2's decoupled top-K loss over a top-k teacher of log-probabilities at T = 1, per row
// (S the listed ids, s = softmax(zs), a = P_T(S) = sum exp(vals), m = 1 - a the teacher's rest,
// b = s(S), p = softmax(vals / T) and q = softmax(zs_S / T) over S only):
//   soft_weight * ( a log(a / b) + m log(m / (1 - b))  +  param * a * KL(p || q) )
// param is the conditional term's T^2 (or 1): the temperature enters the conditional term alone.
// Gradient: dz_j = c (a + m) s_j - c (a / b) s_j [j in S] - c (m / (1 - b)) s_j [j not in S]
//                  + c param a / T (q_j - p_j) [j in S]        (c = grad_scale * soft_weight)
// b and 1 - b are each summed over their own tokens (no cancellation), m is -expm1(largest) - others.
// Same arguments as distill_loss_rows (zt, kind, taid unused: the host allows forward KL, no TAID).
// Scratch rows: ROW_TEACHER marks the listed ids (1) against the rest (0), ROW_EA holds
// e = exp(zs - max), ROW_EB the listed ids' q - p (0 elsewhere); dz is written in the last pass
// only, so zs may be dz.
__kernel void distill_decoupled_topk_rows(DISTILL_ROW_KERNEL_ARGUMENTS) {
    DISTILL_ROW_LAYOUT
    __global float* ea_row = group_scratch + ROW_EA * vp;
    __global float* qp_row = group_scratch + ROW_EB * vp;
    __global float* listed_row = group_scratch + ROW_TEACHER * vp;
    const int gradient = flags & FLAG_GRADIENT;
    const int hard = flags & FLAG_HARD;
    const float grad_scale = (flags & FLAG_MEAN) && gradient ? grad_output / fmax(1.0f, valid_count[vco]) : grad_output;

    for (int row = group; row < rows; row += groups) {
        __global const float* zr = zs + zso + (long)row * n;
        __global float* dr = dz + dzo + (long)row * n;
        __global const float* ids = topk_ids + tio + (long)row * k;
        __global const float* vals = topk_vals + tvo + (long)row * k;
        DISTILL_ROW_START

        // Pass 1: the student's maximum, the marks and q - p cleared; over the listed ids the
        // teacher's largest value and whether any value is NaN or +inf or any id is bad.
        floatH max_s = (floatH)(-INFINITY);
#define MAX_AND_CLEAR(LOAD, STORE) {                                       \
            max_s = max_or_second(fold_max(LOAD(zr, v)), max_s);           \
            vstoreV((floatV)(0.0f), v, listed_row);                        \
            vstoreV((floatV)(0.0f), v, qp_row); }
        FOR_EACH_VECTOR(MAX_AND_CLEAR)
#undef MAX_AND_CLEAR
        float part_largest = -INFINITY, part_bad_id = 0.0f, part_bad_value = 0.0f;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            const float value = vals[i];
            if (isnan(value) || value == INFINITY) part_bad_value = 1.0f;
            if (id >= 0 && id < n) part_largest = fmax(part_largest, value);
            else if (id != -1) part_bad_id = 1.0f;  // -1: an empty slot of a row shorter than k
        }
        const float4 maxima = group_max4((float4)(vmax(max_s), part_largest, part_bad_id, part_bad_value), reduce);
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            if (id >= 0 && id < n) listed_row[id] = 1.0f;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        const float zmax = maxima.x == -INFINITY ? 0.0f : maxima.x;
        const float largest = maxima.y;

        // Pass 2: e = exp(zs - max) stashed, its sums over all tokens and over the unlisted ones.
        floatH sum_all = (floatH)(0.0f), sum_rest = (floatH)(0.0f);
#define EXP_SUMS(LOAD, STORE) {                                                                        \
            const floatV e = kd_exp(LOAD(zr, v) - (floatV)(zmax));                                     \
            sum_all += fold_sum(e);                                                                    \
            sum_rest += fold_sum(select(e, (floatV)(0.0f), vloadV(v, listed_row) != (floatV)(0.0f)));  \
            vstoreV(e, v, ea_row); }
        FOR_EACH_VECTOR(EXP_SUMS)
#undef EXP_SUMS
        barrier(CLK_GLOBAL_MEM_FENCE);

        // Over the listed ids: the first largest value's slot and the student's tempered maximum;
        // then the teacher's mass a, the others' mass (for m), the student's listed mass and the
        // conditional sums (p and q unnormalized in tempered units, KL's online term).
        float part_first = -INFINITY, part_zl_max = -INFINITY;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            if (id >= 0 && id < n) {
                if (vals[i] == largest) part_first = fmax(part_first, (float)(-i));
                part_zl_max = fmax(part_zl_max, zr[id] * inv_t);
            }
        }
        const float4 firsts = group_max4((float4)(part_first, part_zl_max, 0.0f, 0.0f), reduce);
        const int first = firsts.x == -INFINITY ? -1 : -(int)firsts.x;
        const float zl_max = firsts.y == -INFINITY ? 0.0f : firsts.y;
        const float vl_max = largest == -INFINITY ? 0.0f : largest * inv_t;
        float part_others = 0.0f, part_mass = 0.0f, part_listed = 0.0f, part_sp = 0.0f, part_sq = 0.0f, part_x = 0.0f;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            if (id >= 0 && id < n) {
                const float value = vals[i];
                const float ev = exp(value);
                part_mass += ev;
                if (i != first) part_others += ev;
                part_listed += ea_row[id];
                const float lpu = value * inv_t - vl_max, lqu = zr[id] * inv_t - zl_max;
                const float ep = exp(lpu);
                part_sp += ep;
                part_sq += exp(lqu);
                if (ep > 0.0f) part_x += ep * (lpu - lqu);
            }
        }
        const float4 sums = group_sum4((float4)(vsum(sum_all), vsum(sum_rest), part_listed, part_others), reduce);
        const float4 conditional = group_sum4((float4)(part_sp, part_sq, part_x, part_mass), reduce);
        if (valid) status |= input_status(isnan(sums.x), maxima.w > 0.0f, maxima.x, largest, maxima.z > 0.0f);
        // 16-bit stored probabilities may sum past 1 by rounding: a at most 1, m at least 0.
        const float a = fmin(conditional.w, 1.0f);
        const float m = first < 0 ? 0.0f : fmax(0.0f, -expm1(largest) - sums.w);
        const float s_all = sums.x, s_rest = sums.y, s_listed = sums.z;
        const float log_all = log(s_all);
        // a log(a / b) + m log(m / (1 - b)), b = s_listed / s_all, 1 - b = s_rest / s_all; 0 log 0 = 0.
        float bernoulli = a > 0.0f ? a * (log(a) - log(s_listed) + log_all) : 0.0f;
        if (m > 0.0f) bernoulli += m * (log(m) - log(s_rest) + log_all);
        const float sp = conditional.x, sq = conditional.y;
        const float kl_conditional = conditional.z / sp - log(sp) + log(sq);
        const float divergence = bernoulli + param * a * kl_conditional;
        const float cross_entropy = hard ? log_all + zmax - ((label >= 0 && label < n) ? zr[label] : 0.0f) : 0.0f;
        const float loss = soft_weight * divergence + hard_weight * cross_entropy;

        // Pass 3: q - p of the listed ids (read before dz, which may be zs, is written), then
        // dz = the student's regrouped mass + the conditional part, then the label's one-hot part.
        const int ok = valid && status == 0;
        const float c = ok ? grad_scale * row_weight * soft_weight : 0.0f;
        const float h = ok ? grad_scale * row_weight * hard_weight : 0.0f;
        if (gradient) {
            for (int i = lid; i < k; i += WG) {
                const int id = (int)ids[i];
                if (id >= 0 && id < n) qp_row[id] = exp(zr[id] * inv_t - zl_max) / sq - exp(vals[i] * inv_t - vl_max) / sp;
            }
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (gradient) {
            const float c_all = (c * (a + m) + h) / s_all;
            const float c_listed = c_all - c * a / s_listed;
            const float c_rest = c_all - (m > 0.0f ? c * m / s_rest : 0.0f);
            const float c_conditional = c * param * a * inv_t;
#define REGROUPED(LOAD, STORE) {                                                                        \
                const floatV listed = vloadV(v, listed_row);                                            \
                const floatV coefficient = select((floatV)(c_rest), (floatV)(c_listed), listed != (floatV)(0.0f)); \
                const floatV grad = vloadV(v, ea_row) * coefficient + c_conditional * vloadV(v, qp_row); \
                STORE(ok ? grad : (floatV)(0.0f), dr, v); }
            FOR_EACH_VECTOR(REGROUPED)
#undef REGROUPED
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (gradient && hard && ok && lid == 0) dr[label] -= h;
        DISTILL_ROW_END
    }
}

// The fused loss for a teacher whose whole mass lies on its listed ids (FLAG_TOPK_SPARSE, set by the
// host for a renormalized top-k or sampled teacher under forward KL without TAID): the student's
// passes as distill_loss_rows' fkl ones (one exp per element), the teacher's maximum, exp sum and KL
// terms over the listed ids alone, and its part of the gradient, -c p, subtracted at those ids after
// the student's part is written. An id listed twice counts once, at its last slot (as the dense row
// distill_loss_rows builds from the slots in order). Same arguments as distill_loss_rows. Scratch:
// ROW_TEACHER holds, as ints, the slot row * k + i that last listed each id (atomic_max; slots grow
// with the row, so an earlier row's marks never match; the host keeps rows * k below 2^31),
// ROW_EB the listed ids' e_b by slot (0 for a slot that does not count), ROW_EH e_h for an
// untempered cross-entropy at T != 1. The listed ids read zs before the student's pass may
// overwrite it with e_a (dz == zs).
__kernel void distill_sparse_teacher_rows(DISTILL_ROW_KERNEL_ARGUMENTS) {
    DISTILL_ROW_LAYOUT
    __global float* eb_list = group_scratch + ROW_EB * vp;
    __global int* last_slot = (__global int*)(group_scratch + ROW_TEACHER * vp);
    __global float* eh_row = group_scratch + ROW_EH * vp;
    const int gradient = flags & FLAG_GRADIENT;
    const int hard = flags & FLAG_HARD;
    const int hard_separate = hard && inv_t != 1.0f;
    const float grad_scale = (flags & FLAG_MEAN) && gradient ? grad_output / fmax(1.0f, valid_count[vco]) : grad_output;
    for (int j = lid; j < vp; j += WG) last_slot[j] = -1;
    barrier(CLK_GLOBAL_MEM_FENCE);

    for (int row = group; row < rows; row += groups) {
        __global const float* zr = zs + zso + (long)row * n;
        __global float* dr = dz + dzo + (long)row * n;
        __global const float* ids = topk_ids + tio + (long)row * k;
        __global const float* vals = topk_vals + tvo + (long)row * k;
        DISTILL_ROW_START

        // Pass 1: the listed ids marked with their last slot, the student's maximum; then the
        // teacher's maximum over the slots that count.
        float part_bad_id = 0.0f;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            if (id >= 0 && id < n) atomic_max(last_slot + id, row * k + i);
            else if (id != -1) part_bad_id = 1.0f;  // -1: an empty slot of a row shorter than k
        }
        floatH max_s = (floatH)(-INFINITY);
#define STUDENT_MAX(LOAD, STORE) { max_s = max_or_second(fold_max(LOAD(zr, v)), max_s); }
        FOR_EACH_VECTOR(STUDENT_MAX)
#undef STUDENT_MAX
        barrier(CLK_GLOBAL_MEM_FENCE);
        float part_max_t = -INFINITY;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            if (id >= 0 && id < n && last_slot[id] == row * k + i) part_max_t = fmax(part_max_t, vals[i]);
        }
        const float label_logit = (hard && label >= 0 && label < n) ? zr[label] : 0.0f;
        const float4 maxima = group_max4((float4)(vmax(max_s), part_max_t, part_bad_id, 0.0f), reduce);
        const float shift_s = maxima.x == -INFINITY ? 0.0f : maxima.x * inv_t;
        const float shift_t = maxima.y == -INFINITY ? 0.0f : maxima.y * inv_t;
        const float shift_h = maxima.x == -INFINITY ? 0.0f : maxima.x;
        const float inv_t2 = inv_t * LOG2E, shift_s2 = shift_s * LOG2E, shift_t2 = shift_t * LOG2E;

        // Pass 2a (log2 units): over the listed ids, e_b, its sum and the forward-KL terms e_b (lb - la).
        float part_sb = 0.0f, part_sx = 0.0f;
        for (int i = lid; i < k; i += WG) {
            const int id = (int)ids[i];
            float eb = 0.0f;
            if (id >= 0 && id < n && last_slot[id] == row * k + i) {
                const float lb = vals[i] * inv_t2 - shift_t2, la = zr[id] * inv_t2 - shift_s2;
                eb = kd_exp2((floatV)(lb)).s0;
                const float difference = lb - la;
                part_sb += eb;
                part_sx += eb * (difference > -FLT_MAX ? difference : -FLT_MAX);
            }
            eb_list[i] = eb;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        // Pass 2b: the student's e_a and its sum (e_a stashed in the dz row); e_h at T != 1.
        floatH sum_a = (floatH)(0.0f), sum_h = (floatH)(0.0f);
#define STUDENT_EXPS(LOAD, STORE) {                                 \
            const floatV zsv = LOAD(zr, v);                         \
            const floatV ea = kd_exp2(zsv * inv_t2 - shift_s2);     \
            sum_a += fold_sum(ea);                                  \
            if (gradient) STORE(ea, dr, v);                         \
            if (hard_separate) {                                    \
                const floatV eh = kd_exp2((zsv - shift_h) * LOG2E); \
                sum_h += fold_sum(eh);                              \
                vstoreV(eh, v, eh_row);                             \
            } }
        FOR_EACH_VECTOR(STUDENT_EXPS)
#undef STUDENT_EXPS
        const float4 sums = group_sum4((float4)(vsum(sum_a), part_sb, part_sx, vsum(sum_h)), reduce);
        if (valid) status |= input_status(isnan(sums.x), isnan(sums.y), maxima.x, maxima.y, maxima.z > 0.0f);
        const float inv_sa = 1.0f / sums.x, inv_sb = 1.0f / sums.y;
        const float sum_eh = hard_separate ? sums.w : sums.x;
        const float divergence = sums.z * LN2 * inv_sb - log(sums.y) + log(sums.x);
        const float cross_entropy = hard ? log(sum_eh) + shift_h - label_logit : 0.0f;
        const float loss = soft_weight * divergence + hard_weight * cross_entropy;

        // Pass 3: dz = c (q - p) + h (softmax(zs) - onehot(label)): the student's part over the row,
        // then -c p at the listed ids, then the label's one-hot part, each after every work-item's writes.
        const int ok = valid && status == 0;
        const float c = ok ? grad_scale * row_weight * soft_weight * inv_t : 0.0f;
        const float h = ok ? grad_scale * row_weight * hard_weight : 0.0f;
        if (gradient) {
            const float ca = c * inv_sa + (hard && !hard_separate ? h * inv_sa : 0.0f), ch = hard_separate ? h / sum_eh : 0.0f;
#define STUDENT_GRADIENT(LOAD, STORE) {                                                    \
                const floatV q = LOAD(dr, v) * ca;                                         \
                STORE(ok ? (hard_separate ? q + vloadV(v, eh_row) * ch : q) : (floatV)(0.0f), dr, v); }
            FOR_EACH_VECTOR(STUDENT_GRADIENT)
#undef STUDENT_GRADIENT
            barrier(CLK_GLOBAL_MEM_FENCE);
            const float cb = c * inv_sb;
            if (ok) for (int i = lid; i < k; i += WG) if (eb_list[i] != 0.0f) dr[(int)ids[i]] -= eb_list[i] * cb;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (gradient && hard && ok && lid == 0) dr[label] -= h;
        DISTILL_ROW_END
    }
}
