// convert.cl: fp32 narrowed to 16-bit storage, rounding to nearest even. Math stays fp32 in every
// kernel; 16-bit tensors are storage (their widening is dequantize_f16 / dequantize_bf16 in quant.cl).
// Each tensor argument is (buffer, offset): an element offset for f32, a byte offset for 16-bit
// tensors (as for every non-f32 tensor). Work-items as ELEMENTWISE_INDEX (common.cl) says.
//   bf16: bf16_bits (common.cl): round to nearest even, NaN kept quiet.
//   f16:  f16_store_rte (common.cl: vstore_half_rte, core OpenCL, no cl_khr_fp16): IEEE round to
//         nearest even, subnormals kept, inf past 65504 + half an ulp, NaN as the host stores it.
//   bf16, stochastic: bf16_bits_stochastic (common.cl) with the random bits counter_hash(e ^ key)
//         for element e of the tensor: a draw fixed by (e, key), whatever the launch.
// CPU twins: CPUKernels.convert_f32_to_bf16, convert_f32_to_bf16_stochastic, convert_f32_to_f16.

__kernel void convert_f32_to_bf16(__global const float* x, int xo, __global uchar* y, int yo, int n) {
    ELEMENTWISE_INDEX
    __global ushort* out = (__global ushort*)(y + yo);
    if (i < vectors) CAT(vstore, VW)(bf16_bits(vloadV(i, x + xo)), i, out);
    else if (tail < n) out[tail] = bf16_bits(x[xo + tail]);
}

// Element indices of the lanes of a vector: lane j of vector i is element i * VW + j.
#if VW == 16
#define LANES (uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#elif VW == 8
#define LANES (uint8)(0, 1, 2, 3, 4, 5, 6, 7)
#elif VW == 4
#define LANES (uint4)(0, 1, 2, 3)
#else
#define LANES (uint2)(0, 1)
#endif

__kernel void convert_f32_to_bf16_stochastic(__global const float* x, int xo, __global uchar* y, int yo, int n, uint key) {
    ELEMENTWISE_INDEX
    __global ushort* out = (__global ushort*)(y + yo);
    if (i < vectors) {
        const CAT(uint, VW) elements = (CAT(uint, VW))((uint)(i * VW)) + LANES;
        CAT(vstore, VW)(bf16_bits_stochastic(vloadV(i, x + xo), counter_hash(elements ^ key)), i, out);
    } else if (tail < n) {
        out[tail] = bf16_bits_stochastic(x[xo + tail], counter_hash((uint)tail ^ key));
    }
}

__kernel void convert_f32_to_f16(__global const float* x, int xo, __global uchar* y, int yo, int n) {
    ELEMENTWISE_INDEX
    __global half* out = (__global half*)(y + yo);
    if (i < vectors) f16_store_rte(vloadV(i, x + xo), i, out);
    else if (tail < n) f16_store_rte(x[xo + tail], tail, out);
}
