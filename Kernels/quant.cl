// quant.cl: weights kept in their GGUF block formats, expanded to fp32 just before use.
// Block layouts, 32 weights per block along a row (formats.md):
//   Q8_0  34 bytes: half d, char qs[32]           x[j] = qs[j] * d
//   Q4_0  18 bytes: half d, uchar qs[16]          x[j] = ((qs[j] & 15) - 8) * d,  x[j+16] = ((qs[j] >> 4) - 8) * d
//   Q4_1  20 bytes: half d, half m, uchar qs[16]  x[j] = (qs[j] & 15) * d + m,    x[j+16] = (qs[j] >> 4) * d + m
//   F16    2 bytes a weight
// Quantized sources are byte pointers with byte offsets; fp32 outputs use element offsets.
// CPU twins: CPUKernels.dequantize_q8_0, dequantize_q4_0, dequantize_q4_1, dequantize_f16, dequantize_bf16,
//            dequantize_q8_0_to_bf16, dequantize_q4_0_to_bf16, dequantize_q4_1_to_bf16, dequantize_f16_to_bf16,
//            dequantize_q8_0_to_f16, dequantize_q4_0_to_f16, dequantize_q4_1_to_f16, dequantize_bf16_to_f16,
//            get_rows_f32, get_rows_f16, get_rows_bf16, get_rows_q8_0, get_rows_q4_0, get_rows_q4_1.

// Half h (0: weights 0-15, 1: weights 16-31) of a block, in fp32.
inline float16 half_q8_0(__global const uchar* block, int h) {
    const float d = vload_half(0, (__global const half*)block);
    return convert_float16(vload16(h, (__global const char*)(block + 2))) * d;
}

inline float16 half_q4_0(__global const uchar* block, int h) {
    const float d = vload_half(0, (__global const half*)block);
    const uchar16 qs = vload16(0, block + 2);
    return (convert_float16(h == 0 ? qs & (uchar)15 : qs >> (uchar)4) - 8.0f) * d;
}

inline float16 half_q4_1(__global const uchar* block, int h) {
    const float d = vload_half(0, (__global const half*)block);
    const float m = vload_half(1, (__global const half*)block);
    const uchar16 qs = vload16(0, block + 4);
    return convert_float16(h == 0 ? qs & (uchar)15 : qs >> (uchar)4) * d + m;
}

inline void decode_q8_0(__global const uchar* block, __global float* out) {
    vstore16(half_q8_0(block, 0), 0, out);
    vstore16(half_q8_0(block, 1), 1, out);
}

inline void decode_q4_0(__global const uchar* block, __global float* out) {
    vstore16(half_q4_0(block, 0), 0, out);
    vstore16(half_q4_0(block, 1), 1, out);
}

inline void decode_q4_1(__global const uchar* block, __global float* out) {
    vstore16(half_q4_1(block, 0), 0, out);
    vstore16(half_q4_1(block, 1), 1, out);
}

// out[32 b .. 32 b + 31] = block b of src; one work-item per block. The _to_bf16 and _to_f16
// kernels expand straight to the teacher's 16-bit compute type (out is a byte pointer with a byte
// offset; each weight decoded in fp32, then rounded to nearest even): no fp32 copy of the matrix is made.
#define DEQUANTIZE_KERNEL(type, block_bytes)                                                       \
__kernel void dequantize_##type(__global const uchar* src, int so, __global float* out, int oo, \
                                int blocks) {                                                    \
    const int b = get_global_id(0);                                                              \
    if (b < blocks) decode_##type(src + so + (long)b * block_bytes, out + oo + (long)b * 32);   \
}                                                                                                \
__kernel void dequantize_##type##_to_bf16(__global const uchar* src, int so, __global uchar* out, \
                                          int oo, int blocks) {                                  \
    const int b = get_global_id(0);                                                              \
    if (b >= blocks) return;                                                                     \
    __global const uchar* block = src + so + (long)b * block_bytes;                              \
    __global ushort* o = (__global ushort*)(out + oo) + (long)b * 32;                            \
    vstore16(bf16_bits(half_##type(block, 0)), 0, o);                                            \
    vstore16(bf16_bits(half_##type(block, 1)), 1, o);                                            \
}                                                                                                \
__kernel void dequantize_##type##_to_f16(__global const uchar* src, int so, __global uchar* out, \
                                         int oo, int blocks) {                                   \
    const int b = get_global_id(0);                                                              \
    if (b >= blocks) return;                                                                     \
    __global const uchar* block = src + so + (long)b * block_bytes;                              \
    __global half* o = (__global half*)(out + oo) + (long)b * 32;                                \
    f16_store_rte(half_##type(block, 0), 0, o);                                                  \
    f16_store_rte(half_##type(block, 1), 1, o);                                                  \
}
DEQUANTIZE_KERNEL(q8_0, 34)
DEQUANTIZE_KERNEL(q4_0, 18)
DEQUANTIZE_KERNEL(q4_1, 20)

__kernel void dequantize_f16(__global const uchar* src, int so, __global float* out, int oo, int n) {
    const int i = get_global_id(0);
    if (i < n) out[oo + i] = vload_half(i, (__global const half*)(src + so));
}

__kernel void dequantize_f16_to_bf16(__global const uchar* src, int so, __global uchar* out, int oo, int n) {
    const int i = get_global_id(0);
    if (i < n) ((__global ushort*)(out + oo))[i] = bf16_bits(vload_half(i, (__global const half*)(src + so)));
}

// bf16 is the high half of an fp32: widening is exact.
__kernel void dequantize_bf16(__global const uchar* src, int so, __global float* out, int oo, int n) {
    const int i = get_global_id(0);
    if (i < n) out[oo + i] = as_float((uint)(((__global const ushort*)(src + so))[i]) << 16);
}

// bf16 weights into f16: widened exactly, then rounded to nearest even (inf past 65504, f16's range).
__kernel void dequantize_bf16_to_f16(__global const uchar* src, int so, __global uchar* out, int oo, int n) {
    const int i = get_global_id(0);
    if (i < n) f16_store_rte(as_float((uint)(((__global const ushort*)(src + so))[i]) << 16), i, (__global half*)(out + oo));
}

// out[i, :] = row ids[i] of table [rows, cols]; an id outside [0, rows) gives a zero row (the host
// checks ids before upload). One work-item per output block of 32 (quantized) or element (f32, f16).
#define GET_ROWS_KERNEL(type, block_bytes)                                                          \
__kernel void get_rows_##type(__global const uchar* table, int to, int rows,                       \
                              __global const int* ids, int io, __global float* out, int oo,        \
                              int cols, int count) {                                               \
    const int g = get_global_id(0);                                                                \
    const int blocks_per_row = cols / 32;                                                          \
    if (g >= count * blocks_per_row) return;                                                       \
    const int i = g / blocks_per_row, b = g % blocks_per_row;                                      \
    const int id = ids[io + i];                                                                    \
    __global float* o = out + oo + (long)i * cols + b * 32;                                        \
    if (id < 0 || id >= rows) {                                                                    \
        vstore16((float16)(0.0f), 0, o);                                                           \
        vstore16((float16)(0.0f), 1, o);                                                           \
        return;                                                                                    \
    }                                                                                              \
    decode_##type(table + to + ((long)id * blocks_per_row + b) * block_bytes, o);                  \
}
GET_ROWS_KERNEL(q8_0, 34)
GET_ROWS_KERNEL(q4_0, 18)
GET_ROWS_KERNEL(q4_1, 20)

__kernel void get_rows_f32(__global const float* table, int to, int rows, __global const int* ids, int io,
                           __global float* out, int oo, int cols, int count) {
    const int g = get_global_id(0);
    if (g >= count * cols) return;
    const int i = g / cols, c = g % cols;
    const int id = ids[io + i];
    out[oo + g] = (id < 0 || id >= rows) ? 0.0f : table[to + (long)id * cols + c];
}

__kernel void get_rows_f16(__global const uchar* table, int to, int rows, __global const int* ids, int io,
                           __global float* out, int oo, int cols, int count) {
    const int g = get_global_id(0);
    if (g >= count * cols) return;
    const int i = g / cols, c = g % cols;
    const int id = ids[io + i];
    out[oo + g] = (id < 0 || id >= rows) ? 0.0f : vload_half((long)id * cols + c, (__global const half*)(table + to));
}

__kernel void get_rows_bf16(__global const uchar* table, int to, int rows, __global const int* ids, int io,
                            __global float* out, int oo, int cols, int count) {
    const int g = get_global_id(0);
    if (g >= count * cols) return;
    const int i = g / cols, c = g % cols;
    const int id = ids[io + i];
    out[oo + g] = (id < 0 || id >= rows) ? 0.0f
                : as_float((uint)(((__global const ushort*)(table + to))[(long)id * cols + c]) << 16);
}
