/// Decoding of GGUF's block formats, 32 weights per block along a row (formats.md), shared by the
/// CPU kernels (`CPUKernels.dequantize_*`, `get_rows_*`) and the GGUF reader.
///   Q8_0  34 bytes: f16 d, i8 qs[32]           x[j] = qs[j] * d
///   Q4_0  18 bytes: f16 d, u8 qs[16]           x[j] = ((qs[j] & 15) - 8) * d,  x[j+16] = ((qs[j] >> 4) - 8) * d
///   Q4_1  20 bytes: f16 d, f16 m, u8 qs[16]    x[j] = (qs[j] & 15) * d + m,    x[j+16] = (qs[j] >> 4) * d + m
public enum BlockFormat {
    /// The f16 value at element `index` of `base` (little-endian, no alignment needed).
    @inline(__always)
    public static func half(_ base: UnsafeRawPointer, _ index: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))))
    }

    /// The bf16 value at element `index` of `base` (little-endian): the high half of an fp32.
    @inline(__always)
    public static func bfloat16(_ base: UnsafeRawPointer, _ index: Int) -> Float {
        Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))) << 16)
    }

    /// fp32 to bf16 bits, rounding to nearest even (an overflow rounds to inf); NaN stays a NaN of
    /// its sign, made quiet so it never rounds into inf (as PyTorch and ggml do).
    @inline(__always)
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 }
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    /// fp32 to f16 bits, rounding to nearest even (IEEE: past 65504 by half an ulp or more is inf).
    @inline(__always)
    public static func halfBits(_ value: Float) -> UInt16 { Float16(value).bitPattern }

    /// `count` fp32 values narrowed to bf16 bits at `out` (2-byte aligned, 2 bytes each), exactly as
    /// ``bfloat16Bits(_:)`` rounds them, in a branch-free loop the compiler vectorizes.
    public static func storeBFloat16(_ values: UnsafePointer<Float>, count: Int, to out: UnsafeMutableRawPointer) {
        let words = out.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count {
            let bits = values[i].bitPattern
            let rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
            let quietNaN = (bits &>> 16) | 0x40
            words[i] = UInt16(truncatingIfNeeded: (bits & 0x7FFF_FFFF) > 0x7F80_0000 ? quietNaN : rounded)
        }
    }

    /// `count` bf16 values at `base` (little-endian, no alignment needed) widened exactly to fp32 at
    /// `out`, as ``bfloat16(_:_:)`` widens them (the 16 bits become the upper half), in a loop the
    /// compiler vectorizes.
    public static func loadBFloat16s(_ base: UnsafeRawPointer, count: Int, to out: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
        }
    }

    /// `count` f16 values at `base` (little-endian, no alignment needed) widened exactly to fp32 at
    /// `out`, as ``half(_:_:)`` widens them, in a branch-free loop the compiler vectorizes (Swift's
    /// `Float16` conversion is a library call per value on processors it cannot assume have F16C):
    /// the exponent rebased from 15 to 127, inf kept, NaN kept with its payload and made quiet, subnormals
    /// normalized by one fp32 subtraction of 2^-14.
    public static func loadHalves(_ base: UnsafeRawPointer, count: Int, to out: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let h = UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            let magnitude = (h & 0x7FFF) &<< 13                       // exponent and mantissa, in fp32 places
            let exponent = magnitude & 0x0F80_0000
            let normal = magnitude &+ 0x3800_0000                    // (127 - 15) << 23
            let quiet: UInt32 = magnitude & 0x007F_E000 != 0 ? 0x0040_0000 : 0  // a NaN comes out quiet
            let infOrNaN = (normal &+ 0x3800_0000) | quiet           // exponent 31 -> 255
            let subnormal = (Float(bitPattern: normal &+ 0x0080_0000) - Float(bitPattern: 0x3880_0000)).bitPattern
            let widened = exponent == 0x0F80_0000 ? infOrNaN : exponent == 0 ? subnormal : normal
            out[i] = Float(bitPattern: widened | (h & 0x8000) &<< 16)
        }
    }

    /// `count` fp32 values narrowed to f16 bits at `out` (2-byte aligned, 2 bytes each), exactly as
    /// ``halfBits(_:)`` rounds them (IEEE round to nearest even; inf from 65520 up; NaN a quiet NaN
    /// of its sign), in a branch-free loop the compiler vectorizes. Normal results round by adding
    /// 0xFFF plus the kept mantissa's last bit before the shift; subnormal ones by one fp32 addition
    /// of 0.5, whose rounding is the rounding wanted.
    public static func storeHalves(_ values: UnsafePointer<Float>, count: Int, to out: UnsafeMutableRawPointer) {
        let words = out.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count {
            let bits = values[i].bitPattern
            let magnitude = bits & 0x7FFF_FFFF
            let normal = (magnitude &+ 0xC800_0FFF &+ ((magnitude &>> 13) & 1)) &>> 13  // (15 - 127) << 23 + 0xFFF, rounded
            let subnormal = (Float(bitPattern: magnitude) + 0.5).bitPattern &- 0x3F00_0000   // 0.5's bits: mantissa 0 + the value's 2^-24 units
            let special: UInt32 = magnitude > 0x7F80_0000 ? 0x7E00 : 0x7C00                  // NaN, or inf for inf and overflow
            let narrowed = magnitude >= 0x4780_0000 ? special : magnitude < 0x3880_0000 ? subnormal : normal
            words[i] = UInt16(truncatingIfNeeded: narrowed | (bits &>> 16) & 0x8000)
        }
    }

    /// A 32-bit integer hash with full avalanche (Wellons' "lowbias32"), as common.cl's
    /// counter_hash: counter-based random bits that depend only on their input.
    @inline(__always)
    public static func counterHash(_ value: UInt32) -> UInt32 {
        var x = value
        x ^= x &>> 16
        x = x &* 0x7FEB_352D
        x ^= x &>> 15
        x = x &* 0x846C_A68B
        return x ^ (x &>> 16)
    }

    /// `count` fp32 values narrowed to bf16 bits at `out` with stochastic rounding, as convert.cl's
    /// convert_f32_to_bf16_stochastic: value i (element `firstIndex + i` of its tensor) takes the
    /// random bits counterHash(element ^ key), whose low 16 added to its bits carry into the high
    /// half with probability equal to the fraction of an ulp it is past the bf16 value below it
    /// (unbiased); NaN as ``bfloat16Bits(_:)``. A branch-free loop the compiler vectorizes.
    public static func storeBFloat16Stochastic(_ values: UnsafePointer<Float>, count: Int, firstIndex: Int, key: UInt32,
                                               to out: UnsafeMutableRawPointer) {
        let words = out.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count {
            let bits = values[i].bitPattern
            let random = counterHash(UInt32(truncatingIfNeeded: firstIndex + i) ^ key)
            let rounded = (bits &+ (random & 0xFFFF)) &>> 16
            let quietNaN = (bits &>> 16) | 0x40
            words[i] = UInt16(truncatingIfNeeded: (bits & 0x7FFF_FFFF) > 0x7F80_0000 ? quietNaN : rounded)
        }
    }

    /// Writes the 32 values of the Q8_0 block at `block` to `out`.
    @inline(__always)
    public static func decodeQ8_0(_ block: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        for j in 0..<32 { out[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }

    @inline(__always)
    public static func decodeQ4_0(_ block: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        for j in 0..<16 {
            let q = block.load(fromByteOffset: 2 + j, as: UInt8.self)
            out[j] = (Float(q & 15) - 8) * d
            out[j + 16] = (Float(q >> 4) - 8) * d
        }
    }

    @inline(__always)
    public static func decodeQ4_1(_ block: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>) {
        let d = half(block, 0), m = half(block, 1)
        for j in 0..<16 {
            let q = block.load(fromByteOffset: 4 + j, as: UInt8.self)
            out[j] = Float(q & 15) * d + m
            out[j + 16] = Float(q >> 4) * d + m
        }
    }
}
