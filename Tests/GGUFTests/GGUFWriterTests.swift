import Foundation
import GGUF
import XCTest

/// The writer through the Swift reader, and through the `gguf` Python package
/// (bench/reference/check_swift_written_gguf.py read Fixtures/swift_written.gguf and wrote what it saw).
final class GGUFWriterTests: XCTestCase {
    /// Metadata of every type, including nested and empty arrays.
    static let metadata: [(String, GGUFValue)] = [
        ("general.architecture", .string("llama")),
        ("test.u8", .uint8(250)), ("test.i8", .int8(-128)), ("test.u16", .uint16(65535)), ("test.i16", .int16(-2)),
        ("test.u32", .uint32(123_456)), ("test.i32", .int32(-7)), ("test.f32", .float32(1e-5)),
        ("test.bool", .bool(true)), ("test.string", .string("Ġdistil 🦙 ß")),
        ("test.u64", .uint64(.max)), ("test.i64", .int64(.min)), ("test.f64", .float64(-0.1)),
        ("test.strings", .array(of: ["<|im_start|>", "Ġa", ""])),
        ("test.i32s", .array(of: [Int32(1), 3, 3, 1])),
        ("test.f32s", .array(of: [Float(0.5), -2])),
        ("test.nested", .array(.array, [.array(.uint16, [.uint16(1)]), .array(.string, [.string("x"), .string("y")])])),
        ("test.empty", .array(.float64, [])),
    ]

    /// One tensor per type; exact rational values so every platform quantizes them identically.
    static let tensors: [(name: String, dimensions: [Int], type: GGMLType)] = [
        ("token_embd.weight", [64, 4], .q8_0),
        ("blk.0.attn_q.weight", [32, 3], .q4_0),
        ("blk.0.ffn_up.weight", [64, 2], .q4_1),
        ("output_norm.weight", [7], .f32),
        ("blk.0.attn_norm.weight", [5, 2], .f16),
        ("blk.0.ffn_norm.weight", [3, 2, 2, 1], .bf16),
    ]

    static func values(for index: Int, count: Int) -> [Float] {
        (0..<count).map { Float(($0 * 37 + index * 11) % 101 - 50) / 16 }
    }

    static func makeWriter() throws -> GGUFWriter {
        var writer = GGUFWriter()
        for (key, value) in metadata { writer.setMetadata(value, forKey: key) }
        for (index, tensor) in tensors.enumerated() {
            try writer.addTensor(named: tensor.name, dimensions: tensor.dimensions, type: tensor.type,
                                 values: values(for: index, count: tensor.dimensions.reduce(1, *)))
        }
        return writer
    }

    func testRoundTripThroughTheReader() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("model.gguf")
        try Self.makeWriter().write(to: url)

        let file = try GGUFFile(contentsOf: url)
        XCTAssertEqual(file.metadataKeys, Self.metadata.map(\.0))
        for (key, value) in Self.metadata { XCTAssertEqual(file.metadata[key], value, key) }
        XCTAssertEqual(file.tensors.map(\.name), Self.tensors.map(\.name))
        for (index, expected) in Self.tensors.enumerated() {
            let tensor = try file.tensor(named: expected.name)
            XCTAssertEqual(tensor.dimensions, expected.dimensions)
            XCTAssertEqual(tensor.type, expected.type)
            let source = Self.values(for: index, count: tensor.elementCount)
            let restored = file.dequantize(tensor)
            switch tensor.type {
            case .f32:
                XCTAssertEqual(restored, source)
            case .f16, .bf16:
                // The values are multiples of 1/16 below 4: exact in f16 and bf16.
                XCTAssertEqual(restored, source, "\(tensor.type)")
            case .q8_0, .q4_0, .q4_1:
                let maxError = zip(restored, source).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(maxError, tensor.type == .q8_0 ? 0.02 : 0.45, "\(tensor.type)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["model.gguf"],
                       "the temporary file must be renamed away")
    }

    func testAlignmentFromMetadataPadsEveryTensor() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var writer = GGUFWriter()
        writer.setMetadata(.uint32(128), forKey: "general.alignment")
        try writer.addTensor(named: "a", dimensions: [3], type: .f32, values: [1, 2, 3])
        try writer.addTensor(named: "b", dimensions: [32], type: .q8_0, values: Self.values(for: 0, count: 32))
        let url = directory.appendingPathComponent("aligned.gguf")
        try writer.write(to: url)
        let file = try GGUFFile(contentsOf: url)
        XCTAssertEqual(file.alignment, 128)
        XCTAssertEqual(file.dataSectionOffset % 128, 0)
        XCTAssertEqual(file.tensors.map(\.offset), [0, 128])
        XCTAssertEqual(file.dequantize(try file.tensor(named: "a")), [1, 2, 3])
    }

    func testWriteReplacesAnExistingFileAndRawTensorsCopyUnchanged() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = try GGUFFile(contentsOf: Fixtures.url("reference.gguf"))
        let q41 = try source.tensor(named: "q4_1.matrix")
        let raw = source.withRawBytes(of: q41) { Array($0) }
        var writer = GGUFWriter()
        try writer.addTensor(named: q41.name, dimensions: q41.dimensions, type: q41.type, rawBytes: raw)
        let url = directory.appendingPathComponent("copy.gguf")
        try Data("old contents".utf8).write(to: url)
        try writer.write(to: url)
        let copy = try GGUFFile(contentsOf: url)
        XCTAssertEqual(copy.dequantize(try copy.tensor(named: q41.name)), source.dequantize(q41))
    }

    func testInvalidTensorsAndMetadataAreRejected() throws {
        var writer = GGUFWriter()
        XCTAssertThrowsError(try writer.addTensor(named: "w", dimensions: [40], type: .q8_0,
                                                  values: [Float](repeating: 1, count: 40))) { error in
            XCTAssertEqual("\(error)", "cannot write tensor 'w': Q8_0 needs the first dimension to be a multiple of 32, got [40]")
        }
        XCTAssertThrowsError(try writer.addTensor(named: "w", dimensions: [4], type: .f32, values: [1, 2]))
        XCTAssertThrowsError(try writer.addTensor(named: "w", dimensions: [32], type: .q4_0,
                                                  values: [.infinity] + [Float](repeating: 0, count: 31)))
        XCTAssertThrowsError(try writer.addTensor(named: String(repeating: "n", count: 64), dimensions: [1],
                                                  type: .f32, values: [0]))
        XCTAssertThrowsError(try writer.addTensor(named: "w", dimensions: [32], type: .q8_0, rawBytes: [0, 1]))
        try writer.addTensor(named: "w", dimensions: [1], type: .f32, values: [0])
        XCTAssertThrowsError(try writer.addTensor(named: "w", dimensions: [1], type: .f32, values: [0]))

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-never-written.gguf")
        var mixed = GGUFWriter()
        mixed.setMetadata(.array(.int32, [.int32(1), .string("x")]), forKey: "test.mixed")
        XCTAssertThrowsError(try mixed.write(to: url)) { error in
            XCTAssertEqual("\(error)", "cannot write metadata key 'test.mixed': array of i32 holds a string element")
        }
        var badAlignment = GGUFWriter()
        badAlignment.setMetadata(.uint32(48), forKey: "general.alignment")
        XCTAssertThrowsError(try badAlignment.write(to: url))
        XCTAssertThrowsError(try GGUFWriter().write(to: URL(fileURLWithPath: "/nonexistent-dir/x.gguf"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot write GGUF file /nonexistent-dir/x.gguf:"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    /// The checked-in `swift_written.gguf` is what this writer makes today (set KDGPU_UPDATE_FIXTURES=1
    /// to rewrite it, then rerun bench/reference/check_swift_written_gguf.py).
    func testWriterOutputIsByteIdenticalToTheCheckedInFile() throws {
        let checkedIn = Fixtures.url("swift_written.gguf")
        if ProcessInfo.processInfo.environment["KDGPU_UPDATE_FIXTURES"] == "1" {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Fixtures/swift_written.gguf")
            try Self.makeWriter().write(to: source)
            throw XCTSkip("rewrote \(source.path); run bench/reference/check_swift_written_gguf.py next")
        }
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("swift_written.gguf")
        try Self.makeWriter().write(to: url)
        XCTAssertEqual(try Data(contentsOf: url), try Data(contentsOf: checkedIn))
    }

    /// What the `gguf` Python package read from `swift_written.gguf` equals what the Swift reader reads.
    func testPythonPackageReadsTheSwiftWrittenFile() throws {
        let python = try Fixtures.json("swift_written.python.json")
        let file = try GGUFFile(contentsOf: Fixtures.url("swift_written.gguf"))
        let pythonMetadata = try XCTUnwrap(python["metadata"] as? [String: Any]).mapValues(decodeTypedValue)
        XCTAssertEqual(python["metadataKeysInOrder"] as? [String], file.metadataKeys)
        XCTAssertEqual(pythonMetadata.count, file.metadata.count)
        for (key, value) in pythonMetadata { XCTAssertEqual(file.metadata[key], value, key) }
        let tensors = try XCTUnwrap(python["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.map { $0["name"] as! String }, file.tensors.map(\.name))
        for record in tensors {
            let tensor = try file.tensor(named: record["name"] as! String)
            XCTAssertEqual(record["dimensions"] as? [Int], tensor.dimensions, tensor.name)
            XCTAssertEqual(record["type"] as? String, tensor.type.description, tensor.name)
            XCTAssertEqual(record["offset"] as? Int, tensor.offset, tensor.name)
            assertBitwiseEqual(file.dequantize(tensor), (record["dequantized"] as! [Double]).map { Float($0) }, tensor.name)
        }
    }
}
