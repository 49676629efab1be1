import Checkpoint
import Foundation
import GGUF
import Models
import Tensor
import TestSupport
import XCTest

/// Fixture paths (relative to this file), scratch folders and small models for the checkpoint tests.
class CheckpointTestCase: XCTestCase {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = tests.appendingPathComponent("CheckpointTests/Fixtures")
    static let tinyF32 = tests.appendingPathComponent("ModelTests/Fixtures/tiny-llama-f32.gguf")
    static let tinyReference = tests.appendingPathComponent("ModelTests/Fixtures/tiny-llama-reference.json")

    /// The tiny fixture model (2 blocks, width 64, 4 heads, 2 kv heads, vocabulary 260, untied LM head).
    static let tiny = try! LlamaParameters(gguf: GGUFFile(contentsOf: tinyF32))

    struct TinyReference: Decodable {
        struct Model: Decodable { let logits: [[[Float]]] }
        let sequences: [[Int32]]
        let models: [String: Model]
    }
    static let reference = try! JSONDecoder().decode(TinyReference.self, from: Data(contentsOf: tinyReference))

    func scratchFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-checkpoint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A random llama with tied embeddings: 1 block, width 32, 2 heads, 1 kv head, vocabulary 40.
    func randomTiedModel(seed: UInt64 = 5) throws -> LlamaParameters {
        let config = LlamaConfig(layers: 1, width: 32, feedForward: 64, heads: 2, kvHeads: 1, vocabulary: 40, contextLength: 16,
                                 ropeBase: 10000, normEpsilon: 1e-5, tiedEmbeddings: true)
        var random = SeededRandom(seed: seed)
        var tensors: [String: ParameterTensor] = [:]
        for (name, shape) in LlamaParameters.expectedShapes(for: config) {
            let count = shape.reduce(1, *)
            let values = LlamaParameters.isNorm(name) ? random.normals(count).map { 1 + 0.1 * $0 }
                                                      : random.normals(count, scale: 1 / Float(shape.last!).squareRoot())
            tensors[name] = ParameterTensor(shape: shape, values: values)
        }
        return try LlamaParameters(config: config, tensors: tensors)
    }

    /// Logits [T * V] of one sequence through `LlamaModel` on the CPU backend.
    func logits(_ parameters: LlamaParameters, _ tokens: [Int32], layout: RoPE.PairLayout = .adjacent) throws -> [Float] {
        let model = try LlamaModel(weights: parameters.makeWeights(on: TestBackends.cpu), ropeLayout: layout)
        return try XCTUnwrap(model.forward([tokens]).logits).toArray()
    }

    /// Asserts `body` throws an error whose description is one line containing every one of `fragments`.
    func assertError(_ body: @autoclosure () throws -> Any, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            let message = "\(error)"
            for fragment in fragments {
                XCTAssertTrue(message.contains(fragment), "'\(message)' lacks '\(fragment)'", file: file, line: line)
            }
            XCTAssertFalse(message.contains("\n"), "not one line: \(message)", file: file, line: line)
        }
    }
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
