import Foundation
import Tensor
import TestSupport

/// `x` rounded to the nearest value of a binary floating-point format with `p` significand bits
/// (the implicit one included) and normal exponents `minExponent...maxExponent`, ties to even;
/// subnormals below 2^minExponent, inf past the largest finite by half an ulp or more. Written from
/// the format's definition in fp64, apart from the kernels' bit tricks and the hardware's conversions.
func roundToNearestEven(_ x: Double, significandBits p: Int, minExponent: Int, maxExponent: Int) -> Double {
    guard x.isFinite, x != 0 else { return x }
    let magnitude = abs(x)
    let exponent = max(Int(magnitude.exponent), minExponent)  // the spacing is fixed below the normal range
    let ulp = Foundation.pow(2.0, Double(exponent - p + 1))
    let rounded = (magnitude / ulp).rounded(.toNearestOrEven) * ulp
    let largest = (2 - Foundation.pow(2.0, Double(1 - p))) * Foundation.pow(2.0, Double(maxExponent))
    return (rounded > largest ? .infinity : rounded) * (x < 0 ? -1 : 1)
}

extension ParityTable {
    /// The 16-bit storage formats: significand bits, normal exponent range.
    static let sixteenBitFormats: [(dtype: DType, p: Int, minExponent: Int, maxExponent: Int)] = [(.bf16, 8, -126, 127), (.f16, 11, -14, 15)]

    /// fp32 values that probe a format's rounding: magnitudes log-uniform over its whole range and
    /// past it, exact ties (a representable value plus half its ulp) and their neighbours either
    /// side, fp32 subnormals, the largest finite and the first value that rounds past it, +-0.
    static func roundingProbes(_ n: Int, p: Int, minExponent: Int, maxExponent: Int, _ rng: inout SeededRandom) -> [Float] {
        let largest = (2 - Foundation.pow(2.0, Double(1 - p))) * Foundation.pow(2.0, Double(maxExponent))
        let fixed: [Float] = [0, -0.0, Float(largest), Float(largest + Foundation.pow(2.0, Double(maxExponent - p))),
                              -Float(largest), Float.leastNonzeroMagnitude, Float(Foundation.pow(2.0, Double(minExponent)))]
        return (0..<n).map { i -> Float in
            if i < fixed.count && n > 2 * fixed.count { return fixed[i] }
            let sign: Float = Bool.random(using: &rng) ? 1 : -1
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:  // log-uniform magnitude, to a little past the largest finite (still finite in fp32)
                let top = min(Double(maxExponent) + 1.2, 127.9)
                return sign * Float(Foundation.pow(2.0, Double.random(in: Double(minExponent - p - 3)...top, using: &rng)))
            case 1, 2:  // a tie and its neighbours: v + ulp/2 (+- one fp32 ulp)
                let exponent = Int.random(in: minExponent...maxExponent, using: &rng)
                let ulp = Foundation.pow(2.0, Double(exponent - p + 1))
                let v = Foundation.pow(2.0, Double(exponent)) + Double(Int.random(in: 0..<(1 << (p - 1)), using: &rng)) * ulp
                let tie = Float(v + ulp / 2)
                let nudge = Int.random(in: -1...1, using: &rng)
                return sign * (nudge == 0 ? tie : nudge < 0 ? tie.nextDown : tie.nextUp)
            default:  // an fp32 subnormal
                return sign * Float(bitPattern: UInt32.random(in: 1..<0x80_0000, using: &rng))
            }
        }
    }

    /// convert_f32_to_bf16 and convert_f32_to_f16, each read back through its exact widening
    /// (dequantize_bf16 / dequantize_f16), against ``roundToNearestEven``: exactly (tolerance 0).
    static let convertCases: [ParityCase] = sixteenBitFormats.map { format in
        ParityCase(op: "convert_f32_to_\(format.dtype.rawValue) + dequantize_\(format.dtype.rawValue)", tolerance: 0) { rng in
            elementCounts.map { n in
                let x = roundingProbes(n, p: format.p, minExponent: format.minExponent, maxExponent: format.maxExponent, &rng)
                return ParityInstance(
                    description: "n=\(n)", operands: [Operand(shape: [n], values: x), Operand(shape: [n], values: rng.normals(n))],
                    outputs: [1],
                    run: { backend, t in
                        let narrow = try backend.tensor(shape: [n], dtype: format.dtype, label: "narrowed")
                        try backend.convert(t[0], into: narrow)
                        try backend.convert(narrow, into: t[1])
                    },
                    reference: { inputs in
                        [inputs[0].map { roundToNearestEven($0, significandBits: format.p, minExponent: format.minExponent, maxExponent: format.maxExponent) }]
                    })
            }
        }
    }

    /// convert_f32_to_bf16_stochastic read back through dequantize_bf16, against rounding defined in
    /// fp64: with r the low 16 bits of the element's counter hash (the one piece of the kernel the
    /// reference shares: it is the definition of the draw), the value rounds away from zero iff
    /// r / 2^16 >= 1 - (the fraction of an ulp the value is past the bf16 value toward zero).
    static let stochasticConvertCase = ParityCase(op: "convert_f32_to_bf16_stochastic + dequantize_bf16", tolerance: 0) { rng in
        elementCounts.map { n in
            let x = roundingProbes(n, p: 8, minExponent: -126, maxExponent: 127, &rng)
            let key = UInt32.random(in: 0...UInt32.max, using: &rng)
            return ParityInstance(
                description: "n=\(n) key=\(key)", operands: [Operand(shape: [n], values: x), Operand(shape: [n], values: rng.normals(n))],
                outputs: [1],
                run: { backend, t in
                    let narrow = try backend.tensor(shape: [n], dtype: .bf16, label: "narrowed")
                    try backend.convert(t[0], into: narrow, rounding: .stochastic(key: key))
                    try backend.convert(narrow, into: t[1])
                },
                reference: { inputs in
                    [inputs[0].enumerated().map { i, value -> Double in
                        guard value.isFinite, value != 0 else { return value }
                        let magnitude = abs(value)
                        let ulp = Foundation.pow(2.0, Double(max(Int(magnitude.exponent), -126) - 7))
                        let toward = (magnitude / ulp).rounded(.towardZero)
                        let fraction = magnitude / ulp - toward
                        let r = Double(BlockFormat.counterHash(UInt32(i) ^ key) & 0xFFFF)
                        let rounded = (r / 65536 >= 1 - fraction ? toward + 1 : toward) * ulp
                        let largest = (2 - Foundation.pow(2.0, -7.0)) * Foundation.pow(2.0, 127.0)
                        return (rounded > largest ? .infinity : rounded) * (value < 0 ? -1 : 1)
                    }]
                })
        }
    }
}
