// elementwise.cl: fill, copy, add, mul, scale, axpy over n floats.
// Each tensor argument is (buffer, element offset). Work-items as ELEMENTWISE_INDEX (common.cl) says.
// CPU twins: CPUKernels.fill_f32, copy_f32, add_f32, mul_f32, scale_f32, axpy_f32.

__kernel void fill_f32(__global float* x, int xo, float value, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV((floatV)(value), i, x + xo);
    else if (tail < n) x[xo + tail] = value;
}

__kernel void copy_f32(__global const float* x, int xo, __global float* y, int yo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV(vloadV(i, x + xo), i, y + yo);
    else if (tail < n) y[yo + tail] = x[xo + tail];
}

__kernel void add_f32(__global const float* a, int ao, __global const float* b, int bo,
                      __global float* out, int oo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV(vloadV(i, a + ao) + vloadV(i, b + bo), i, out + oo);
    else if (tail < n) out[oo + tail] = a[ao + tail] + b[bo + tail];
}

__kernel void mul_f32(__global const float* a, int ao, __global const float* b, int bo,
                      __global float* out, int oo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV(vloadV(i, a + ao) * vloadV(i, b + bo), i, out + oo);
    else if (tail < n) out[oo + tail] = a[ao + tail] * b[bo + tail];
}

__kernel void scale_f32(__global const float* x, int xo, float alpha, __global float* out, int oo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV(alpha * vloadV(i, x + xo), i, out + oo);
    else if (tail < n) out[oo + tail] = alpha * x[xo + tail];
}

// y += alpha * x
__kernel void axpy_f32(float alpha, __global const float* x, int xo, __global float* y, int yo, int n) {
    ELEMENTWISE_INDEX
    if (i < vectors) vstoreV(vloadV(i, y + yo) + alpha * vloadV(i, x + xo), i, y + yo);
    else if (tail < n) y[yo + tail] += alpha * x[xo + tail];
}

// dst[r, column + c] = src[r, c] for src [rows, cols] inside dst [rows, dst_cols]: writes a block
// of columns (e.g. one vocabulary chunk of logits). One work-item per element of src.
__kernel void copy_columns_f32(__global const float* src, int so, __global float* dst, int dso,
                               int rows, int cols, int dst_cols, int column) {
    const int g = get_global_id(0);
    if (g >= rows * cols) return;
    const int r = g / cols, c = g % cols;
    dst[dso + (long)r * dst_cols + column + c] = src[so + g];
}
