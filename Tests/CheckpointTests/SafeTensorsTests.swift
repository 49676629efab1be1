import Checkpoint
import Foundation
import XCTest

final class SafeTensorsTests: CheckpointTestCase {
    struct Reference: Decodable {
        struct Tensor: Decodable {
            let dtype: String
            let shape: [Int]
            let values: [Double]
        }
        let metadata: [String: String]
        let tensors: [String: Tensor]
    }

    /// A file written by the `safetensors` Python package (bench/reference/check_hf_export.py safetensors).
    func testReadsAFileWrittenByTheSafetensorsPackage() throws {
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("reference-safetensors.json")))
        let file = try SafeTensorsFile(url: Self.fixtures.appendingPathComponent("reference.safetensors"))
        XCTAssertEqual(file.metadata, reference.metadata)
        XCTAssertEqual(Set(file.names), Set(reference.tensors.keys))
        for (name, expected) in reference.tensors {
            let entry = try file.entry(name)
            XCTAssertEqual(entry.shape, expected.shape, name)
            if expected.dtype == "torch.int64" {
                XCTAssertEqual(entry.dtype, .i64)
                assertError(try file.floats(name), contains: ["tensor 'i64.ids' is I64; kdgpu reads F32, F16 and BF16 tensors"])
            } else {
                XCTAssertEqual(try file.floats(name), expected.values.map { Float($0) }, name)  // exact: the values are representable
            }
        }
    }

    func testWriterRoundTripsEveryFloatTypeAndItsHeaderIsAligned() throws {
        let url = try scratchFolder().appendingPathComponent("t.safetensors")
        let values: [Float] = [0, -0.0, 1, -2.5, 3.14159, 65504, 70000, 1e-8, -1e30, .infinity]
        var writer = SafeTensorsWriter(metadata: ["note": "quote \" and \\ and é"])
        try writer.add("a.f32", shape: [2, 5], values: values)
        try writer.add("b.f16", shape: [10], values: values, dtype: .f16)
        try writer.add("c.bf16", shape: [5, 2], values: values, dtype: .bf16)
        try writer.add("d.empty", shape: [0, 3], values: [])
        try writer.write(to: url)
        let bytes = [UInt8](try Data(contentsOf: url))
        XCTAssertEqual(bytes.count, writer.byteCount)
        let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(headerLength % 8, 0, "data starts 8-byte aligned")

        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.metadata, ["note": "quote \" and \\ and é"])
        XCTAssertEqual(file.names, ["a.f32", "b.f16", "c.bf16", "d.empty"], "data in the order added")
        XCTAssertEqual(try file.entry("c.bf16").shape, [5, 2])
        XCTAssertEqual(try file.floats("a.f32").map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertEqual(try file.floats("b.f16"), values.map { Float(Float16($0)) })
        // bf16 by hand: round the fp32 bits to nearest even at bit 16.
        let bf16 = values.map { value -> Float in
            let bits = value.bitPattern
            return Float(bitPattern: ((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16) << 16)
        }
        XCTAssertEqual(try file.floats("c.bf16"), bf16)
        XCTAssertEqual(try file.floats("d.empty"), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path), ["t.safetensors"])
    }

    func testWriterRejectsWhatItCannotStore() throws {
        var writer = SafeTensorsWriter()
        try writer.add("x", shape: [2], values: [1, 2])
        assertError(try writer.add("x", shape: [1], values: [1]), contains: ["tensor 'x' is empty, reserved or added twice"])
        assertError(try writer.add("y", shape: [3], values: [1, 2]), contains: ["tensor 'y' has 2 values for shape [3]"])
        assertError(try writer.add("z", shape: [1], values: [1], dtype: .i32), contains: ["cannot be written as I32"])
    }

    /// A file made of a header (as given) and `dataBytes` zero bytes.
    func file(header: String, dataBytes: Int, headerLength: UInt64? = nil) throws -> URL {
        let url = try scratchFolder().appendingPathComponent("bad.safetensors")
        var bytes: [UInt8] = []
        withUnsafeBytes(of: (headerLength ?? UInt64(header.utf8.count)).littleEndian) { bytes += $0 }
        bytes += Array(header.utf8) + [UInt8](repeating: 0, count: dataBytes)
        try Data(bytes).write(to: url)
        return url
    }

    func testEveryMalformedFileIsAOneLineErrorNamingFileAndTensor() throws {
        let cases: [(header: String, data: Int, length: UInt64?, expected: String)] = [
            ("", 0, 100, "header length 100 runs past the end of the 8-byte file"),
            ("{not json", 0, nil, "the 9-byte header is not valid JSON"),
            ("[1, 2]", 0, nil, "the header is not a JSON object"),
            (#"{"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}"#, 4, nil, "tensor 'w': unknown dtype 'Q4'"),
            (#"{"w": {"shape": [1], "data_offsets": [0, 4]}}"#, 4, nil, "tensor 'w': no dtype string"),
            (#"{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, 4, nil, "tensor 'w': shape is not a list of non-negative integers"),
            (#"{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, 4, nil, "tensor 'w': shape is not a list"),
            (#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#, 4, nil, "tensor 'w': data_offsets is not [begin, end]"),
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 4, nil, "tensor 'w': data_offsets [0, 8] run past the 4-byte data section"),
            (#"{"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 8]}}"#, 8, nil, "tensor 'w': F32 shape [2, 3] needs 24 bytes but data_offsets [0, 8] hold 8"),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F16", "shape": [2], "data_offsets": [6, 10]}}"#, 10, nil,
             "tensor 'b' (bytes 6..<10) overlaps tensor 'a' (bytes 0..<8)"),
            (#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, 8, nil, "data bytes 0..<4 before tensor 'a' belong to no tensor"),
            (#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, 6, nil, "2 bytes after the last tensor's data belong to no tensor"),
            (#"{"__metadata__": {"n": 1}}"#, 0, nil, "__metadata__ value of 'n' is not a string"),
        ]
        for (header, data, length, expected) in cases {
            let url = try file(header: header, dataBytes: data, headerLength: length)
            assertError(try SafeTensorsFile(url: url), contains: ["\(url.path): invalid safetensors file: \(expected)"])
        }
        let tiny = try scratchFolder().appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3]).write(to: tiny)
        assertError(try SafeTensorsFile(url: tiny), contains: ["tiny.safetensors: invalid safetensors file: the file is 3 bytes"])
        assertError(try SafeTensorsFile(url: tiny.deletingLastPathComponent().appendingPathComponent("none.safetensors")),
                    contains: ["none.safetensors is missing"])
        let valid = try file(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, dataBytes: 4)
        assertError(try SafeTensorsFile(url: valid).floats("b"), contains: ["bad.safetensors: tensor 'b' is not in the file"])
    }

    /// A disk that fills up part-way: the write fails with ENOSPC's message and the old file stays whole.
    func testAFailedWriteLeavesThePreviousFileIntact() throws {
        let url = try scratchFolder().appendingPathComponent("model.safetensors")
        var old = SafeTensorsWriter()
        try old.add("w", shape: [4], values: [1, 2, 3, 4])
        try old.write(to: url)
        var new = SafeTensorsWriter()
        try new.add("w", shape: [1000], values: (0..<1000).map(Float.init))
        for limit in [0, 7, 100, new.byteCount - 1] {
            let writer = DurableFileWriter(failingAfterBytes: limit)
            assertError(try new.write(to: url, using: writer), contains: ["cannot write", "No space left on device", "an earlier version of the file is left as it was"])
            XCTAssertEqual(writer.bytesWritten, limit)
            XCTAssertEqual(try SafeTensorsFile(url: url).floats("w"), [1, 2, 3, 4])
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path), ["model.safetensors"],
                           "the temporary file is removed")
        }
        try new.write(to: url, using: DurableFileWriter(failingAfterBytes: new.byteCount))
        XCTAssertEqual(try SafeTensorsFile(url: url).floats("w").count, 1000)
    }
}
