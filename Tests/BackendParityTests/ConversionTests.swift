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
}
