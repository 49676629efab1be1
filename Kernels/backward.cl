// backward.cl: the backward passes of the student's layers (llm.c's layer pairs). Each takes the
// forward's inputs and writes or ADDS into gradients as its comment says.
// CPU twins: CPUKernels.rms_norm_backward, rms_norm_backward_weight, causal_softmax_backward,
//            swiglu_backward, embedding_backward, adamw.

// dx[r, :] = d/dx of y = x * rstd * w given dy, with rstd = 1 / sqrt(mean(x^2) + eps):
//   dx = rstd * w * dy - x * rstd^3 * sum(w * dy * x) / C.  One work-group per row; dx is written,
//   and rstd[r] too, for rms_norm_backward_weight.
__kernel void rms_norm_backward(__global const float* x, int xo, __global const float* w, int wo,
                                __global const float* dy, int dyo, __global float* dx, int dxo,
                                __global float* rstd_out, int ro, int cols, float eps) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* xr = x + xo + (long)row * cols;
    __global const float* dyr = dy + dyo + (long)row * cols;
    __global float* dxr = dx + dxo + (long)row * cols;
    __global const float* wr = w + wo;
    float squares = 0.0f, dot = 0.0f;
    for (int j = lid; j < cols; j += WG) {
        squares += xr[j] * xr[j];
        dot += wr[j] * dyr[j] * xr[j];
    }
    const float rstd = rsqrt(group_sum(squares, scratch) / cols + eps);
    const float correction = group_sum(dot, scratch) * rstd * rstd * rstd / cols;
    for (int j = lid; j < cols; j += WG) dxr[j] = rstd * wr[j] * dyr[j] - xr[j] * correction;
    if (lid == 0) rstd_out[ro + row] = rstd;
}

// dw[c] += sum_r dy[r, c] * x[r, c] * rstd[r], with rstd from rms_norm_backward. One work-item per column.
__kernel void rms_norm_backward_weight(__global const float* x, int xo, __global const float* dy, int dyo,
                                       __global const float* rstd, int ro, __global float* dw, int dwo,
                                       int rows, int cols) {
    const int c = get_global_id(0);
    if (c >= cols) return;
    float sum = 0.0f;
    for (int r = 0; r < rows; r++) sum += dy[dyo + (long)r * cols + c] * x[xo + (long)r * cols + c] * rstd[ro + r];
    dw[dwo + c] += sum;
}

// dscores[row, :] = scale * p * (dp - sum_j p dp) for the probabilities p of causal_softmax
// (masked entries have p = 0, so their gradient is 0). One work-group per row; dscores may be dp.
__kernel void causal_softmax_backward(__global const float* p, int po, __global const float* dp, int dpo,
                                      __global float* ds, int dso, int keys, float scale) {
    __local float scratch[WG];
    const int row = get_group_id(0), lid = get_local_id(0);
    __global const float* pr = p + po + (long)row * keys;
    __global const float* dpr = dp + dpo + (long)row * keys;
    __global float* dsr = ds + dso + (long)row * keys;
    float dot = 0.0f;
    for (int j = lid; j < keys; j += WG) dot += pr[j] * dpr[j];
    const float total = group_sum(dot, scratch);
    for (int j = lid; j < keys; j += WG) dsr[j] = scale * pr[j] * (dpr[j] - total);
}

// For out = silu(gate) * up:  dgate = dout * up * s * (1 + gate * (1 - s)),  dup = dout * gate * s,
// s = sigmoid(gate). Written (not added); VW elements a work-item (then the tail one each: ELEMENTWISE_INDEX).
__kernel void swiglu_backward(__global const float* gate, int go, __global const float* up, int uo,
                              __global const float* dout, int doo, __global float* dgate, int dgo,
                              __global float* dup, int duo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) {
        const floatV g = vloadV(i, gate + go), s = 1.0f / (1.0f + exp(-g)), d = vloadV(i, dout + doo);
        vstoreV(d * vloadV(i, up + uo) * s * (1.0f + g * (1.0f - s)), i, dgate + dgo);
        vstoreV(d * g * s, i, dup + duo);
    } else if (tail < n) {
        const float g = gate[go + tail], s = 1.0f / (1.0f + exp(-g)), d = dout[doo + tail];
        dgate[dgo + tail] = d * up[uo + tail] * s * (1.0f + g * (1.0f - s));
        dup[duo + tail] = d * g * s;
    }
}

// The same with gate and up stored in bf16 (a mixed-precision student keeps them so): each widened
// exactly to fp32 (a 16-bit shift), then the fp32 math above. CPU twin: CPUKernels.swiglu_backward_bf16.
__kernel void swiglu_backward_bf16(__global const ushort* gate, int go, __global const ushort* up, int uo,
                                   __global const float* dout, int doo, __global float* dgate, int dgo,
                                   __global float* dup, int duo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) {
        const floatV g = as_floatV(convert_uintV(vloadV(i, gate + go)) << 16), u = as_floatV(convert_uintV(vloadV(i, up + uo)) << 16);
        const floatV s = 1.0f / (1.0f + exp(-g)), d = vloadV(i, dout + doo);
        vstoreV(d * u * s * (1.0f + g * (1.0f - s)), i, dgate + dgo);
        vstoreV(d * g * s, i, dup + duo);
    } else if (tail < n) {
        const float g = as_float((uint)gate[go + tail] << 16), u = as_float((uint)up[uo + tail] << 16);
        const float s = 1.0f / (1.0f + exp(-g)), d = dout[doo + tail];
        dgate[dgo + tail] = d * u * s * (1.0f + g * (1.0f - s));
        dup[duo + tail] = d * g * s;
    }
}

// dtable[ids[u], c] += sum over positions[offsets[u] ..< offsets[u+1]] of dx[position, c].
// The host groups the positions by token id, so each row of dtable has one writer: no atomics.
// One work-item per (unique id, column).
__kernel void embedding_backward(__global const float* dx, int dxo, __global const int* ids, int io,
                                 __global const int* offsets, int oo, __global const int* positions, int ppo,
                                 __global float* dtable, int dto, int unique, int cols) {
    const int g = get_global_id(0);
    if (g >= unique * cols) return;
    const int u = g / cols, c = g % cols;
    float sum = 0.0f;
    for (int k = offsets[oo + u]; k < offsets[oo + u + 1]; k++) sum += dx[dxo + (long)positions[ppo + k] * cols + c];
    dtable[dto + (long)ids[io + u] * cols + c] += sum;
}

// AdamW with decoupled weight decay and bias correction, VW parameters a work-item (then the tail
// one each, as ELEMENTWISE_INDEX says), the gradient taken times gs (the global-norm clip's factor,
// 1 unclipped; no separate scaling pass):
//   g = gs g_stored;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / c1 / (sqrt(v / c2) + eps) + wd * p),  c1 = 1 - b1^t, c2 = 1 - b2^t
__kernel void adamw(__global float* p, int po, __global const float* g, int go, __global float* m, int mo,
                    __global float* v, int vo, int n, float lr, float b1, float b2, float eps, float wd,
                    float c1, float c2, float gs) {
    ELEMENTWISE_INDEX
    p += po; g += go; m += mo; v += vo;
    if (i < vectors) {
        const floatV grad = vloadV(i, g) * gs;
        const floatV mi = b1 * vloadV(i, m) + (1.0f - b1) * grad;
        const floatV vi = b2 * vloadV(i, v) + (1.0f - b2) * grad * grad;
        vstoreV(mi, i, m);
        vstoreV(vi, i, v);
        const floatV param = vloadV(i, p);
        vstoreV(param - lr * ((mi / c1) / (sqrt(vi / c2) + eps) + wd * param), i, p);
    } else if (tail < n) {
        const float grad = g[tail] * gs;
        const float mi = b1 * m[tail] + (1.0f - b1) * grad;
        const float vi = b2 * v[tail] + (1.0f - b2) * grad * grad;
        m[tail] = mi;
        v[tail] = vi;
        const float param = p[tail];
        p[tail] = param - lr * ((mi / c1) / (sqrt(vi / c2) + eps) + wd * param);
    }
}
