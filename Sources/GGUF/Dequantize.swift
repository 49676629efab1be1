// CPU reference dequantization of GGUF tensor data to fp32.
//
// Each function reads `count` elements (a multiple of 32 for the block types) from the raw bytes
// at `blocks`, which need no alignment, and writes `count` floats to `output`. These are the CPU
// twins of the device dequantization kernels: same names, same block walk, same math.

/// fp16 bits to fp32 (exact: every half is a float).
@inline(__always)
func floatFromHalf(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

/// Dequantizes `count` elements of GGML `type` from `raw` into `output`.
public func dequantize(_ raw: UnsafeRawPointer, type: GGMLType, count: Int, into output: UnsafeMutablePointer<Float>) {
    switch type {
    case .f32: UnsafeMutableRawPointer(output).copyMemory(from: raw, byteCount: 4 * count)
    case .f16: dequantize_f16(raw, count: count, output)
    case .bf16: dequantize_bf16(raw, count: count, output)
    case .q8_0: dequantize_q8_0(raw, count: count, output)
    case .q4_0: dequantize_q4_0(raw, count: count, output)
    case .q4_1: dequantize_q4_1(raw, count: count, output)
    }
}

/// F16: `count` little-endian IEEE half floats.
public func dequantize_f16(_ blocks: UnsafeRawPointer, count: Int, _ output: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        output[i] = floatFromHalf(UInt16(littleEndian: blocks.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    }
}

/// BF16: `count` bfloat16 values, the upper 16 bits of an fp32.
public func dequantize_bf16(_ blocks: UnsafeRawPointer, count: Int, _ output: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        let bits = UInt16(littleEndian: blocks.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        output[i] = Float(bitPattern: UInt32(bits) << 16)
    }
}

/// Q8_0: blocks of 34 bytes `{f16 d, i8 qs[32]}`; `x[j] = qs[j] * d`.
public func dequantize_q8_0(_ blocks: UnsafeRawPointer, count: Int, _ output: UnsafeMutablePointer<Float>) {
    for block in 0..<count / 32 {
        let base = blocks + 34 * block
        let d = floatFromHalf(UInt16(littleEndian: base.loadUnaligned(as: UInt16.self)))
        let qs = (base + 2).assumingMemoryBound(to: Int8.self)
        let x = output + 32 * block
        for j in 0..<32 {
            x[j] = Float(qs[j]) * d
        }
    }
}

/// Q4_0: blocks of 18 bytes `{f16 d, u8 qs[16]}`; low nibbles are elements 0..<16, high nibbles
/// 16..<32: `x[j] = ((qs[j] & 0xF) - 8) * d`, `x[j + 16] = ((qs[j] >> 4) - 8) * d`.
public func dequantize_q4_0(_ blocks: UnsafeRawPointer, count: Int, _ output: UnsafeMutablePointer<Float>) {
    for block in 0..<count / 32 {
        let base = blocks + 18 * block
        let d = floatFromHalf(UInt16(littleEndian: base.loadUnaligned(as: UInt16.self)))
        let qs = (base + 2).assumingMemoryBound(to: UInt8.self)
        let x = output + 32 * block
        for j in 0..<16 {
            x[j] = Float(Int32(qs[j] & 0xF) - 8) * d
            x[j + 16] = Float(Int32(qs[j] >> 4) - 8) * d
        }
    }
}

/// Q4_1: blocks of 20 bytes `{f16 d, f16 m, u8 qs[16]}`; low nibbles are elements 0..<16, high
/// nibbles 16..<32: `x[j] = (qs[j] & 0xF) * d + m`, `x[j + 16] = (qs[j] >> 4) * d + m`.
public func dequantize_q4_1(_ blocks: UnsafeRawPointer, count: Int, _ output: UnsafeMutablePointer<Float>) {
    for block in 0..<count / 32 {
        let base = blocks + 20 * block
        let d = floatFromHalf(UInt16(littleEndian: base.loadUnaligned(as: UInt16.self)))
        let m = floatFromHalf(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        let qs = (base + 4).assumingMemoryBound(to: UInt8.self)
        let x = output + 32 * block
        for j in 0..<16 {
            x[j] = Float(qs[j] & 0xF) * d + m
            x[j + 16] = Float(qs[j] >> 4) * d + m
        }
    }
}
