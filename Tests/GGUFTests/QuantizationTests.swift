import Foundation
import GGUF
import XCTest

/// The CPU quantizers and dequantizers (the twins of future device kernels) against the `gguf`
/// Python package, which is bit-exact with ggml's reference C code.
final class QuantizationTests: XCTestCase {
    func testQuantizersMatchThePythonPackageBitForBit() throws {
        let records = try XCTUnwrap(try Fixtures.json("reference.json")["tensors"] as? [[String: Any]])
        for record in records {
            let name = record["name"] as! String
            let type = try XCTUnwrap(GGMLType(rawValue: UInt32(record["typeID"] as! Int)))
            let source = (record["source"] as! [Double]).map { Float($0) }
            let expected = bytes(fromHex: record["quantizedHex"] as! String)
            let byteCount = try XCTUnwrap(type.byteCount(elements: source.count))
            var actual = [UInt8](repeating: 0, count: byteCount)
            source.withUnsafeBufferPointer { input in
                actual.withUnsafeMutableBytes { output in
                    quantize(input.baseAddress!, count: source.count, type: type, into: output.baseAddress!)
                }
            }
            XCTAssertEqual(actual, expected, "\(name) (\(type))")
        }
    }

    func testDequantizeFormulasOnHandMadeBlocks() {
        // Q8_0: d = 0.5 (f16 0x3800), qs = -3, 127.
        var q8 = [UInt8](repeating: 0, count: 34)
        q8[0] = 0x00; q8[1] = 0x38; q8[2] = UInt8(bitPattern: -3); q8[3] = 127
        XCTAssertEqual(dequantizeBlock(q8, .q8_0)[0..<3], [-1.5, 63.5, 0])
        // Q4_0: d = 2 (0x4000); byte 0 = 0x9F: low nibble 15 -> (15-8)*2 = 14 at j=0, high 9 -> 2 at j=16.
        var q4 = [UInt8](repeating: 0x88, count: 18)
        q4[0] = 0x00; q4[1] = 0x40; q4[2] = 0x9F
        let x4 = dequantizeBlock(q4, .q4_0)
        XCTAssertEqual([x4[0], x4[16], x4[1]], [14, 2, 0])
        // Q4_1: d = 1 (0x3C00), m = -1 (0xBC00); byte 0 = 0x3A: low 10 -> 9 at j=0, high 3 -> 2 at j=16.
        var q41 = [UInt8](repeating: 0, count: 20)
        q41[0] = 0x00; q41[1] = 0x3C; q41[2] = 0x00; q41[3] = 0xBC; q41[4] = 0x3A
        let x41 = dequantizeBlock(q41, .q4_1)
        XCTAssertEqual([x41[0], x41[16], x41[1]], [9, 2, -1])
    }

    func testQuantizeThenDequantizeErrorIsWithinTheQuantizationStep() {
        let values = (0..<256).map { Float(($0 * 73) % 199 - 99) / 37 }
        for type in [GGMLType.q8_0, .q4_0, .q4_1] {
            let byteCount = type.byteCount(elements: values.count)!
            var blocks = [UInt8](repeating: 0, count: byteCount)
            var restored = [Float](repeating: 0, count: values.count)
            values.withUnsafeBufferPointer { input in
                blocks.withUnsafeMutableBytes { quantize(input.baseAddress!, count: values.count, type: type, into: $0.baseAddress!) }
            }
            blocks.withUnsafeBytes { raw in
                restored.withUnsafeMutableBufferPointer { dequantize(raw.baseAddress!, type: type, count: values.count, into: $0.baseAddress!) }
            }
            for block in 0..<values.count / 32 {
                let slice = values[block * 32..<(block + 1) * 32]
                let range = slice.max()! - slice.min()!
                let amax = slice.map(abs).max()!
                // Step sizes: Q8_0 amax/127, Q4_0 amax/8 (scale from the extreme value), Q4_1 range/15.
                // Q4_0 codes run -8...7 steps, so a value opposite the extreme can be off by a whole step.
                let step: Float = type == .q8_0 ? amax / 127 : type == .q4_0 ? amax / 8 : range / 15
                let tolerance = (type == .q4_0 ? step : step * 0.5) + step * 0.01 + 1e-3
                for j in block * 32..<(block + 1) * 32 {
                    XCTAssertLessThanOrEqual(abs(restored[j] - values[j]), tolerance,
                                             "\(type) element \(j)")
                }
            }
        }
    }

    private func dequantizeBlock(_ block: [UInt8], _ type: GGMLType) -> [Float] {
        var output = [Float](repeating: .nan, count: 32)
        block.withUnsafeBytes { raw in
            output.withUnsafeMutableBufferPointer { dequantize(raw.baseAddress!, type: type, count: 32, into: $0.baseAddress!) }
        }
        return output
    }
}
