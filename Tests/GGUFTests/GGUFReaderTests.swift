import Foundation
import GGUF
import XCTest

/// The reader against files written by the `gguf` Python package (bench/reference/make_gguf_fixtures.py):
/// every metadata type, and values dequantized by `gguf.quants.dequantize`, compared bit for bit.
final class GGUFReaderTests: XCTestCase {
    let referenceFiles = ["reference.gguf", "reference_align64.gguf"]

    func testMetadataOfEveryTypeMatchesThePythonWriter() throws {
        let reference = try Fixtures.json("reference.json")
        let expected = try XCTUnwrap(reference["metadata"] as? [String: Any]).mapValues(decodeTypedValue)
        for name in referenceFiles {
            let file = try GGUFFile(contentsOf: Fixtures.url(name))
            let info = try XCTUnwrap((reference["files"] as? [String: Any])?[name] as? [String: Any])
            XCTAssertEqual(file.version, 3)
            XCTAssertEqual(file.metadataKeys, info["metadataKeysInOrder"] as? [String], name)
            var expectedHere = expected
            if name == "reference_align64.gguf" { expectedHere["general.alignment"] = .uint32(64) }
            XCTAssertEqual(Set(file.metadata.keys), Set(expectedHere.keys), name)
            for (key, value) in expectedHere {
                XCTAssertEqual(file.metadata[key], value, "\(name): \(key)")
            }
        }
    }

    func testTensorInfosAndOffsetsMatchThePythonReader() throws {
        let reference = try Fixtures.json("reference.json")
        let records = try XCTUnwrap(reference["tensors"] as? [[String: Any]])
        for (name, alignment) in zip(referenceFiles, [32, 64]) {
            let file = try GGUFFile(contentsOf: Fixtures.url(name))
            let info = try XCTUnwrap((reference["files"] as? [String: Any])?[name] as? [String: Any])
            let offsets = try XCTUnwrap(info["tensorOffsets"] as? [String: Int])
            XCTAssertEqual(file.alignment, alignment)
            XCTAssertEqual(file.dataSectionOffset, info["dataSectionOffset"] as? Int, name)
            XCTAssertEqual(file.tensors.map(\.name), records.map { $0["name"] as! String })
            for record in records {
                let tensor = try file.tensor(named: record["name"] as! String)
                XCTAssertEqual(tensor.dimensions, record["dimensions"] as? [Int], tensor.name)
                XCTAssertEqual(tensor.shape, (record["dimensions"] as! [Int]).reversed(), tensor.name)
                XCTAssertEqual(tensor.type.rawValue, UInt32(record["typeID"] as! Int), tensor.name)
                XCTAssertEqual(tensor.type.description, record["type"] as? String, tensor.name)
                XCTAssertEqual(tensor.offset, offsets[tensor.name], tensor.name)
                XCTAssertEqual(tensor.offset % alignment, 0, tensor.name)
            }
        }
    }

    func testRawBytesAndDequantizedValuesMatchThePythonPackage() throws {
        let reference = try Fixtures.json("reference.json")
        let records = try XCTUnwrap(reference["tensors"] as? [[String: Any]])
        for name in referenceFiles {
            let file = try GGUFFile(contentsOf: Fixtures.url(name))
            for record in records {
                let tensor = try file.tensor(named: record["name"] as! String)
                let expectedBytes = bytes(fromHex: record["quantizedHex"] as! String)
                file.withRawBytes(of: tensor) { raw in
                    XCTAssertEqual(Array(raw), expectedBytes, "\(name): raw bytes of \(tensor.name)")
                }
                let expected = (record["dequantized"] as! [Double]).map { Float($0) }
                assertBitwiseEqual(file.dequantize(tensor), expected, "\(name): \(tensor.name)")
            }
        }
    }

    func testTypedAccessorsConvertAndNameTheFileInErrors() throws {
        let file = try GGUFFile(contentsOf: Fixtures.url("reference.gguf"))
        XCTAssertEqual(try file.uint32("test.u32"), 4_000_000_000)
        XCTAssertEqual(try file.uint32("test.u8"), 200)
        XCTAssertEqual(try file.int("test.i64"), -(1 << 62))
        XCTAssertEqual(try file.float("test.f32"), 0.1)
        XCTAssertEqual(try file.float("test.f64"), Float(Double.pi))
        XCTAssertEqual(try file.string("test.string"), "héllo, 世界 🦙")
        XCTAssertEqual(try file.bool("test.bool_true"), true)
        XCTAssertEqual(try file.stringArray("test.array_string"), ["Ġthe", "<|im_start|>", "", "é"])
        XCTAssertEqual(try file.intArray("test.array_i32"), [1, -2, 3, Int(Int32.max)])
        XCTAssertEqual(try file.floatArray("test.array_f32"), [0.5, -1.25, 1e-5])
        XCTAssertTrue(file.contains("test.u8"))
        XCTAssertTrue(file.hasTensor(named: "q8_0.matrix"))

        let path = Fixtures.url("reference.gguf").path
        XCTAssertThrowsError(try file.uint32("llama.block_count")) { error in
            XCTAssertEqual("\(error)", "missing required metadata key llama.block_count in \(path)")
        }
        XCTAssertThrowsError(try file.uint32("test.i8")) { error in
            XCTAssertEqual(error as? GGUFError, .wrongValueType(file: path, key: "test.i8", found: "i8",
                                                                 expected: "an integer in 0...4294967295"))
        }
        XCTAssertThrowsError(try file.string("test.array_string")) { error in
            XCTAssertTrue("\(error)".contains("'test.array_string' is array of string, expected string"), "\(error)")
        }
        XCTAssertThrowsError(try file.intArray("test.array_f32"))
        XCTAssertThrowsError(try file.tensor(named: "output.weight")) { error in
            XCTAssertEqual("\(error)", "\(path): no tensor named 'output.weight'")
        }
    }

    func testTypesMapToTensorDTypes() {
        XCTAssertEqual(GGMLType.q8_0.tensorDType, .q8_0)
        XCTAssertEqual(GGMLType.q4_1.tensorDType, .q4_1)
        XCTAssertNil(GGMLType.bf16.tensorDType)
        for type in GGMLType.allCases {
            if let dtype = type.tensorDType {
                XCTAssertEqual(GGMLType(dtype), type)
                XCTAssertEqual(type.byteCount(elements: 64), dtype.byteCount(elements: 64), "\(type)")
            }
        }
        XCTAssertEqual(GGMLType.name(ofTypeID: 12), "Q4_K")
        XCTAssertEqual(GGMLType.name(ofTypeID: 14), "Q6_K")
        XCTAssertNil(GGMLType.q4_0.byteCount(elements: 40))
    }
}
