import Tensor

// CPU dequantization of GGUF tensor data to fp32, for reading files on the host. The block decoding
// is Tensor's `BlockFormat`, shared with the CPU kernels (`CPUKernels.dequantize_*`), which are the
// twins of the device kernels in Kernels/quant.cl.

/// Dequantizes `count` elements (a multiple of 32 for the block types) of GGML `type` from `raw`,
/// which needs no alignment, into `output`.
public func dequantize(_ raw: UnsafeRawPointer, type: GGMLType, count: Int, into output: UnsafeMutablePointer<Float>) {
    switch type {
    case .f32: UnsafeMutableRawPointer(output).copyMemory(from: raw, byteCount: 4 * count)
    case .f16: BlockFormat.loadHalves(raw, count: count, to: output)
    case .bf16:
        // BF16: the upper 16 bits of an fp32.
        for i in 0..<count {
            let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            output[i] = Float(bitPattern: UInt32(bits) << 16)
        }
    case .q8_0: for b in 0..<count / 32 { BlockFormat.decodeQ8_0(raw + 34 * b, output + 32 * b) }
    case .q4_0: for b in 0..<count / 32 { BlockFormat.decodeQ4_0(raw + 18 * b, output + 32 * b) }
    case .q4_1: for b in 0..<count / 32 { BlockFormat.decodeQ4_1(raw + 20 * b, output + 32 * b) }
    }
}
