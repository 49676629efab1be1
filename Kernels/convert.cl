// convert.cl: fp32 narrowed to 16-bit storage, rounding to nearest even. Math stays fp32 in every
// kernel; 16-bit tensors are storage (their widening is dequantize_f16 / dequantize_bf16 in quant.cl).
// Each tensor argument is (buffer, offset): an element offset for f32, a byte offset for 16-bit
// tensors (as for every non-f32 tensor). Work-items as ELEMENTWISE_INDEX (common.cl) says.
//   bf16: the high half of the fp32 after adding 0x7FFF + (bit 16): round to nearest, ties to
//         even, an overflow past the largest finite becomes inf; NaN keeps its sign and payload's
//         top bits and is made quiet (bit 6 of the half set) so it never rounds into inf.
//   f16:  vstore_half_rte (core OpenCL, no cl_khr_fp16): IEEE round to nearest even, subnormals
//         kept, inf past 65504 + half an ulp.
// CPU twins: CPUKernels.convert_f32_to_bf16, convert_f32_to_f16.

#define uintV CAT(uint, VW)
#define ushortV CAT(ushort, VW)
#define as_uintV CAT(as_uint, VW)
#define convert_ushortV CAT(convert_ushort, VW)
#define vstore_halfV_rte CAT(CAT(vstore_half, VW), _rte)

inline ushortV bf16_bits(floatV x) {
    const uintV u = as_uintV(x);
    const uintV rounded = (u + (uintV)(0x7FFF) + ((u >> 16) & (uintV)(1))) >> 16;
    const uintV quiet = (u >> 16) | (uintV)(0x40);
    return convert_ushortV(select(rounded, quiet, isnan(x)));
}

inline ushort bf16_bits1(float x) {
    const uint u = as_uint(x);
    return isnan(x) ? (ushort)((u >> 16) | 0x40) : (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

__kernel void convert_f32_to_bf16(__global const float* x, int xo, __global uchar* y, int yo, int n) {
    ELEMENTWISE_INDEX
    __global ushort* out = (__global ushort*)(y + yo);
    if (i < vectors) CAT(vstore, VW)(bf16_bits(vloadV(i, x + xo)), i, out);
    else if (tail < n) out[tail] = bf16_bits1(x[xo + tail]);
}

__kernel void convert_f32_to_f16(__global const float* x, int xo, __global uchar* y, int yo, int n) {
    ELEMENTWISE_INDEX
    __global half* out = (__global half*)(y + yo);
    if (i < vectors) vstore_halfV_rte(vloadV(i, x + xo), i, out);
    else if (tail < n) vstore_half_rte(x[xo + tail], tail, out);
}
