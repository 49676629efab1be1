// hint_loss.cl: hidden-state hint losses (FitNets, Patient KD) between a student hidden state
// s [rows, C], already projected to the teacher's width, and the teacher's hidden state t [rows, C]:
// the loss of every row and, with FLAG_GRADIENT, grad_scale * d(row loss)/ds in the same launch.
// One work-group per row. The checked API, the mean over rows and the error reports are in
// Sources/Losses/HiddenStateHintLoss.swift. CPU twin: CPUKernels.hint_loss_rows
// (Sources/Losses/CPUHintKernels.swift), with the same passes.
//
// Per row (|s|_e = max(|s|, EPS), |t|_e = max(|t|, EPS), EPS = 1e-8):
//   mse     loss  = sum_j (s_j - t_j)^2 / C
//           ds_j  = grad_scale * 2 (s_j - t_j) / C
//           one pass: the gradient needs no row sum.
//   cosine  cos   = s.t / (|s|_e |t|_e),  loss = 1 - cos
//           ds_j  = grad_scale * (cos s_j / |s|^2 - t_j / (|s|_e |t|_e)); the first term only where
//                   |s| > EPS (below it |s|_e = EPS does not depend on s).
//           A zero s gives loss 1 and ds = -grad_scale t / (EPS |t|_e): finite, and 0 when t is 0 too.
//           Two passes: s.s, t.t and s.t, then the gradient (the row is still in cache).
// A cosine row whose sums are not finite (NaN or inf in s or t, or squares beyond fp32) gets a NaN
// loss, an mse row the inf or NaN of its sum; their gradients carry no meaning and the caller
// reports the row.

#define KIND_MSE 0
#define KIND_COSINE 1

#define FLAG_GRADIENT 1
// This work-item's vectors are one contiguous block (CPU devices: one stream per thread) rather
// than every WG-th vector (GPUs: neighbouring work-items read neighbouring vectors).
#define FLAG_CONTIGUOUS 2

#define EPS 1e-8f

// Tensor arguments are (buffer, element offset). ds is a separate buffer from s and t, or NULL
// without FLAG_GRADIENT. Global size rows * WG, local size WG.
__kernel void hint_loss_rows(__global const float* s, int so, __global const float* t, int to,
                             __global float* row_loss, int rlo, __global float* ds, int dso,
                             int cols, int kind, int flags, float grad_scale) {
    __local float4 reduce[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* sr = s + so + (long)row * cols;
    __global const float* tr = t + to + (long)row * cols;
    __global float* dr = ds + dso + (long)row * cols;
    const int gradient = flags & FLAG_GRADIENT;
    // Whole vectors [vbeg, vend) by vstep, then the last cols % VW elements one by one.
    const int vectors = cols / VW;
    const int contiguous = flags & FLAG_CONTIGUOUS;
    const int per = (vectors + WG - 1) / WG;
    const int vbeg = contiguous ? min(vectors, lid * per) : lid;
    const int vend = contiguous ? min(vectors, vbeg + per) : vectors;
    const int vstep = contiguous ? 1 : WG;

    // Pass 1: the row sums (mse: sum d^2; cosine: s.s, t.t, s.t); the mse gradient on the way.
    float4 partial;
    if (kind == KIND_MSE) {
        const float k = grad_scale * 2.0f / cols;
        floatV squares = 0.0f;
        for (int v = vbeg; v < vend; v += vstep) {
            const floatV d = vloadV(v, sr) - vloadV(v, tr);
            squares += d * d;
            if (gradient) vstoreV(k * d, v, dr);
        }
        float total = vsum(squares);
        for (int j = vectors * VW + lid; j < cols; j += WG) {
            const float d = sr[j] - tr[j];
            total += d * d;
            if (gradient) dr[j] = k * d;
        }
        partial = (float4)(total, 0.0f, 0.0f, 0.0f);
    } else {
        floatV ss = 0.0f, tt = 0.0f, st = 0.0f;
        for (int v = vbeg; v < vend; v += vstep) {
            const floatV a = vloadV(v, sr), b = vloadV(v, tr);
            ss += a * a;
            tt += b * b;
            st += a * b;
        }
        partial = (float4)(vsum(ss), vsum(tt), vsum(st), 0.0f);
        for (int j = vectors * VW + lid; j < cols; j += WG) {
            const float a = sr[j], b = tr[j];
            partial += (float4)(a * a, b * b, a * b, 0.0f);
        }
    }
    const float4 sums = group_sum4(partial, reduce);

    // Pass 2 (cosine): the gradient. Divisions one norm at a time: |s|_e |t|_e may overflow.
    float loss;
    if (kind == KIND_MSE) {
        loss = sums.x / cols;
    } else {
        const float norm_s = fmax(sqrt(sums.x), EPS), norm_t = fmax(sqrt(sums.y), EPS);
        const int finite = isfinite(sums.x) && isfinite(sums.y) && isfinite(sums.z);
        const float cosine = finite ? sums.z / norm_s / norm_t : NAN;
        loss = 1.0f - cosine;
        if (gradient) {
            const float ks = norm_s > EPS ? grad_scale * cosine / norm_s / norm_s : 0.0f;
            const float kt = grad_scale / norm_s / norm_t;
            for (int v = vbeg; v < vend; v += vstep) vstoreV(ks * vloadV(v, sr) - kt * vloadV(v, tr), v, dr);
            for (int j = vectors * VW + lid; j < cols; j += WG) dr[j] = ks * sr[j] - kt * tr[j];
        }
    }
    if (lid == 0) row_loss[rlo + row] = loss;
}
