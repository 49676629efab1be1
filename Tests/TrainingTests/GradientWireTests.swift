import XCTest
import ProcessGroup

/// The bf16 sum the all-reduce applies when gradients travel as bf16 (`allreduce_dtype bf16`),
/// against an fp64 reference: the exact sum of the two widened values, rounded to the nearest bf16
/// (ties to the even one, past the largest finite value by half an ulp or more to inf), chosen by
/// distance among the bf16 values around it.
final class GradientWireTests: XCTestCase {
    private func widen(_ bits: UInt16) -> Double { Double(Float(bitPattern: UInt32(bits) << 16)) }

    /// The bf16 nearest to `exact` (NaN for NaN), found without fp32's rounding.
    private func nearestBF16(_ exact: Double) -> UInt16? {
        if exact.isNaN { return nil }
        let sign: UInt16 = exact.sign == .minus ? 0x8000 : 0
        let magnitude = abs(exact)
        // The largest finite bf16 is (2 - 2^-7) 2^127; half an ulp above it rounds to inf.
        if magnitude >= 0x1p128 - 0x1p119 { return sign | 0x7F80 }
        // A bf16 magnitude at or below `magnitude` (exponent and top 7 bits of the truncated double).
        var low: UInt16 = 0
        for step in [0x4000, 0x2000, 0x1000, 0x800, 0x400, 0x200, 0x100, 0x80, 0x40, 0x20, 0x10, 0x8, 0x4, 0x2, 0x1] as [UInt16] {
            let candidate = low | step
            if candidate < 0x7F80, widen(candidate) <= magnitude { low = candidate }
        }
        let high = low + 1
        let (below, above) = (magnitude - widen(low), widen(high) - magnitude)
        let pick = below < above ? low : above < below ? high : (low & 1 == 0 ? low : high)
        return sign | pick
    }

    func testBF16SumsAreTheExactSumsRoundedToNearestEven() {
        var generator = SystemRandomNumberGenerator()
        var specials: [UInt16] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x3F81, 0x4000]
        specials += [0x7FC0, 0x7F81]  // NaNs
        var addends: [UInt16] = [], sums: [UInt16] = []
        for a in specials { for b in specials { addends.append(a); sums.append(b) } }
        // Random pairs: any bits, and pairs of close magnitudes (the additions that round), across chunk boundaries.
        for _ in 0..<3001 {
            addends.append(UInt16.random(in: 0...0xFFFF, using: &generator))
            sums.append(UInt16.random(in: 0...0xFFFF, using: &generator))
            let base = UInt16.random(in: 0x0100...0x7E00, using: &generator)
            addends.append(base)
            sums.append((base &+ UInt16.random(in: 0...0x0300, using: &generator)) | (Bool.random(using: &generator) ? 0x8000 : 0))
        }
        var result = sums
        addends.withUnsafeBytes { addend in
            result.withUnsafeMutableBytes { MPIWorld.addBFloat16s(addend.baseAddress!, into: $0.baseAddress!, count: addends.count) }
        }
        var mismatches = 0
        for i in addends.indices {
            let exact = widen(addends[i]) + widen(sums[i])
            let got = result[i]
            if let expected = nearestBF16(exact) {
                if got != expected {
                    mismatches += 1
                    if mismatches <= 5 { XCTFail(String(format: "%04x + %04x: %04x, expected %04x (exact %.9g)", addends[i], sums[i], got, expected, exact)) }
                }
            } else {
                XCTAssertTrue(widen(got).isNaN, String(format: "%04x + %04x: %04x, expected a NaN", addends[i], sums[i], got))
            }
        }
        XCTAssertEqual(mismatches, 0)
    }
}
