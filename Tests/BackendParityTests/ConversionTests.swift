import Foundation
import Tensor
import TestSupport
import XCTest

/// The 16-bit storage types beyond the parity table's finite values: NaN stays NaN (bf16 keeps its
/// sign and is quiet), infinities and -0 keep their sign, f16 overflows to inf exactly past 65504 +
/// half an ulp; the host's rounding (upload of a bf16/f16 tensor) gives the device's bits; and the
/// memory ledger counts 2 bytes an element.
final class ConversionTests: XCTestCase {
    func testSpecialValuesAndHostDeviceAgreement() throws {
        let specials: [Float] = [.nan, -.nan, .infinity, -.infinity, -0.0, 0, 65504, 65519.996, 65520, -65520, 1e-8, 3.4e38, -3.39e38,
                                 Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000)]
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            let source = try backend.tensor(specials, shape: [specials.count], label: "specials")
            for dtype in [DType.bf16, .f16] {
                let narrowed = try backend.tensor(shape: [specials.count], dtype: dtype, label: "narrowed")
                let before = backend.ledger.inUseBytes
                let hostRounded = try backend.tensor(specials, shape: [specials.count], dtype: dtype, label: "host rounded")
                XCTAssertEqual(backend.ledger.inUseBytes - before, 2 * specials.count, "\(dtype) bytes on \(backend.name)")
                try backend.convert(source, into: narrowed)
                let device = try narrowed.toArray(), host = try hostRounded.toArray()
                for (i, x) in specials.enumerated() {
                    let context = "\(dtype) of \(x) (bits \(String(x.bitPattern, radix: 16))) on \(backend.name)"
                    XCTAssertEqual(device[i].bitPattern, host[i].bitPattern, "host and device disagree: " + context)
                    if x.isNaN {
                        XCTAssertTrue(device[i].isNaN, context)
                        if dtype == .bf16 { XCTAssertEqual(device[i].sign, x.sign, context) }
                    } else if x.isInfinite || x == 0 {
                        XCTAssertEqual(device[i].bitPattern, x.bitPattern, context)
                    }
                }
                if dtype == .f16 {
                    XCTAssertEqual(device[6], 65504)
                    XCTAssertEqual(device[7], 65504, "65519.996 is below the tie at 65520")
                    XCTAssertEqual(device[8], .infinity, "65520 ties to even: past the largest finite")
                    XCTAssertEqual(device[9], -.infinity)
                } else {
                    XCTAssertEqual(device[11], .infinity, "3.4e38 rounds past bf16's largest finite")
                    XCTAssertEqual(device[14], 1, "1 + 2^-8 ties to even: down to 1")
                    XCTAssertEqual(device[15], Float(bitPattern: 0x3F82_0000), "1 + 3 * 2^-8 ties to even: up")
                }
            }
        }
    }

    /// The CPU backend's vectorized f16 conversions (`BlockFormat.loadHalves` / `storeHalves`, bit
    /// arithmetic) against Swift's own `Float16` conversions (the C runtime's IEEE ones): every f16
    /// widened, and narrowed every fp32 whose top 19 bits (sign, exponent, f16's mantissa) take each of
    /// their values, with low bits at and around each rounding boundary (0, 1, the tie minus one, the
    /// tie, the tie plus one, the most), plus a million random bit patterns. NaN compares as NaN of
    /// the same sign, everything else bit for bit (subnormals, ties to even, overflow to inf).
    func testVectorizedHalfConversionsMatchSwiftsFloat16() {
        let halves = (0...UInt16.max).map { $0.littleEndian }
        var widened = [Float](repeating: 0, count: halves.count)
        halves.withUnsafeBytes { BlockFormat.loadHalves($0.baseAddress!, count: halves.count, to: &widened) }
        for (h, value) in zip(halves, widened) {
            let expected = Float(Float16(bitPattern: UInt16(littleEndian: h)))
            if expected.isNaN {
                XCTAssertTrue(value.isNaN && value.sign == expected.sign, "f16 bits \(String(h, radix: 16)) -> \(value)")
            } else {
                XCTAssertEqual(value.bitPattern, expected.bitPattern, "f16 bits \(String(h, radix: 16))")
            }
        }
        var rng = SeededRandom(seed: 16)
        var inputs: [Float] = []
        for top in 0..<UInt32(1 << 19) {
            for low: UInt32 in [0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF] { inputs.append(Float(bitPattern: top << 13 | low)) }
        }
        for _ in 0..<1_000_000 { inputs.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))) }
        var narrowed = [UInt16](repeating: 0, count: inputs.count)
        narrowed.withUnsafeMutableBytes { BlockFormat.storeHalves(inputs, count: inputs.count, to: $0.baseAddress!) }
        var mismatches = 0
        for (x, bits) in zip(inputs, narrowed) {
            let expected = Float16(x)
            let agrees = expected.isNaN ? Float16(bitPattern: bits).isNaN && Float16(bitPattern: bits).sign == expected.sign
                : bits == expected.bitPattern
            if !agrees, mismatches < 10 {
                XCTFail("fp32 \(x) (bits \(String(x.bitPattern, radix: 16))): f16 bits \(String(bits, radix: 16)), Swift's \(String(expected.bitPattern, radix: 16))")
            }
            mismatches += agrees ? 0 : 1
        }
        XCTAssertEqual(mismatches, 0, "of \(inputs.count) values")
    }
}
