// CPU quantization of fp32 values into GGUF block formats, bit-exact with ggml's reference
// quantizers (`quantize_row_*_ref` in ggml-quants.c) and the `gguf` Python package.
//
// Each function reads `count` floats (a multiple of 32 for the block types) and writes
// `GGMLType.byteCount(elements: count)` bytes to `blocks`, which needs no alignment.

/// fp32 to fp16 bits, rounding to nearest even as ggml does.
@inline(__always)
func halfFromFloat(_ value: Float) -> UInt16 { Float16(value).bitPattern }

/// Quantizes `count` floats at `input` to GGML `type` at `output`.
public func quantize(_ input: UnsafePointer<Float>, count: Int, type: GGMLType, into output: UnsafeMutableRawPointer) {
    switch type {
    case .f32: output.copyMemory(from: input, byteCount: 4 * count)
    case .f16: quantize_f16(input, count: count, output)
    case .bf16: quantize_bf16(input, count: count, output)
    case .q8_0: quantize_q8_0(input, count: count, output)
    case .q4_0: quantize_q4_0(input, count: count, output)
    case .q4_1: quantize_q4_1(input, count: count, output)
    }
}

/// F16: each value rounded to the nearest half (overflow gives ±inf).
public func quantize_f16(_ input: UnsafePointer<Float>, count: Int, _ blocks: UnsafeMutableRawPointer) {
    for i in 0..<count {
        blocks.storeBytes(of: halfFromFloat(input[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    }
}

/// BF16: the upper 16 bits of each fp32, rounded to nearest even; NaNs stay quiet NaNs
/// (ggml's `ggml_compute_fp32_to_bf16`).
public func quantize_bf16(_ input: UnsafePointer<Float>, count: Int, _ blocks: UnsafeMutableRawPointer) {
    for i in 0..<count {
        let bits = input[i].bitPattern
        let rounded: UInt16
        if input[i].isNaN {
            rounded = UInt16(truncatingIfNeeded: bits >> 16) | 64
        } else {
            rounded = UInt16(truncatingIfNeeded: (bits &+ (0x7FFF &+ ((bits >> 16) & 1))) >> 16)
        }
        blocks.storeBytes(of: rounded.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    }
}

/// Q8_0: per block of 32, `d = max|x| / 127`, `qs[j] = round(x[j] / d)` (half away from zero).
public func quantize_q8_0(_ input: UnsafePointer<Float>, count: Int, _ blocks: UnsafeMutableRawPointer) {
    for block in 0..<count / 32 {
        let x = input + 32 * block
        let base = blocks + 34 * block
        var absMax: Float = 0
        for j in 0..<32 { absMax = max(absMax, abs(x[j])) }
        let d = absMax / 127
        let inverse: Float = d != 0 ? 1 / d : 0
        base.storeBytes(of: halfFromFloat(d).littleEndian, as: UInt16.self)
        for j in 0..<32 {
            let q = Int8((x[j] * inverse).rounded(.toNearestOrAwayFromZero))
            base.storeBytes(of: q, toByteOffset: 2 + j, as: Int8.self)
        }
    }
}

/// Q4_0: per block of 32, `d = v / -8` where `v` is the value of largest magnitude (first one on
/// ties), so that `v` maps to nibble 0; `q = min(15, trunc(x / d + 8.5))`. Elements 0..<16 go to
/// the low nibbles, 16..<32 to the high nibbles.
public func quantize_q4_0(_ input: UnsafePointer<Float>, count: Int, _ blocks: UnsafeMutableRawPointer) {
    for block in 0..<count / 32 {
        let x = input + 32 * block
        let base = blocks + 18 * block
        var absMax: Float = 0
        var extreme: Float = 0
        for j in 0..<32 where absMax < abs(x[j]) {
            absMax = abs(x[j])
            extreme = x[j]
        }
        let d = extreme / -8
        let inverse: Float = d != 0 ? 1 / d : 0
        base.storeBytes(of: halfFromFloat(d).littleEndian, as: UInt16.self)
        for j in 0..<16 {
            let low = min(15, UInt8(x[j] * inverse + 8.5))
            let high = min(15, UInt8(x[j + 16] * inverse + 8.5))
            base.storeBytes(of: low | (high << 4), toByteOffset: 2 + j, as: UInt8.self)
        }
    }
}

/// Q4_1: per block of 32, `m = min x`, `d = (max x - m) / 15`, `q = min(15, trunc((x - m) / d + 0.5))`.
/// Elements 0..<16 go to the low nibbles, 16..<32 to the high nibbles.
public func quantize_q4_1(_ input: UnsafePointer<Float>, count: Int, _ blocks: UnsafeMutableRawPointer) {
    for block in 0..<count / 32 {
        let x = input + 32 * block
        let base = blocks + 20 * block
        var minimum = Float.greatestFiniteMagnitude
        var maximum = -Float.greatestFiniteMagnitude
        for j in 0..<32 {
            minimum = min(minimum, x[j])
            maximum = max(maximum, x[j])
        }
        let d = (maximum - minimum) / 15
        let inverse: Float = d != 0 ? 1 / d : 0
        base.storeBytes(of: halfFromFloat(d).littleEndian, as: UInt16.self)
        base.storeBytes(of: halfFromFloat(minimum).littleEndian, toByteOffset: 2, as: UInt16.self)
        for j in 0..<16 {
            let low = min(15, UInt8((x[j] - minimum) * inverse + 0.5))
            let high = min(15, UInt8((x[j + 16] - minimum) * inverse + 0.5))
            base.storeBytes(of: low | (high << 4), toByteOffset: 4 + j, as: UInt8.self)
        }
    }
}
