import Foundation
import GGUF
import Models
import Tensor
import TestSupport
import XCTest

/// Random llama models written to GGUF by the tests themselves (the Swift writer), loaded back on
/// both backends; and the one-line errors for files that are not usable llama models.
final class WrittenModelTests: XCTestCase {
    struct TinyShape {
        var layers = 2, width = 64, heads = 4, kvHeads = 1, feedForward = 160, vocabulary = 97, context = 32
    }

    /// Writes a random llama model; `omit` leaves a tensor out, `reshape` gives one a wrong shape.
    private func writeModel(_ shape: TinyShape = TinyShape(), matrixType: GGMLType, architecture: String = "llama",
                            omit: String? = nil, misshape: String? = nil) throws -> URL {
        var rng = SeededRandom(seed: 99)
        var writer = GGUFWriter()
        writer.setMetadata(.string(architecture), forKey: "general.architecture")
        let scalars: [(String, Int)] = [("block_count", shape.layers), ("embedding_length", shape.width),
                                        ("feed_forward_length", shape.feedForward), ("attention.head_count", shape.heads),
                                        ("attention.head_count_kv", shape.kvHeads), ("context_length", shape.context),
                                        ("vocab_size", shape.vocabulary)]
        for (key, value) in scalars { writer.setMetadata(.uint32(UInt32(value)), forKey: "llama.\(key)") }
        writer.setMetadata(.float32(1e-5), forKey: "llama.attention.layer_norm_rms_epsilon")
        writer.setMetadata(.float32(10000), forKey: "llama.rope.freq_base")
        let (c, f, v, kv) = (shape.width, shape.feedForward, shape.vocabulary, shape.kvHeads * shape.width / shape.heads)
        var tensors: [(String, [Int], Bool)] = [("token_embd.weight", [v, c], true), ("output_norm.weight", [c], false)]
        for l in 0..<shape.layers {
            tensors += [("blk.\(l).attn_norm.weight", [c], false), ("blk.\(l).attn_q.weight", [c, c], true),
                        ("blk.\(l).attn_k.weight", [kv, c], true), ("blk.\(l).attn_v.weight", [kv, c], true),
                        ("blk.\(l).attn_output.weight", [c, c], true), ("blk.\(l).ffn_norm.weight", [c], false),
                        ("blk.\(l).ffn_gate.weight", [f, c], true), ("blk.\(l).ffn_up.weight", [f, c], true),
                        ("blk.\(l).ffn_down.weight", [c, f], true)]
        }
        for (name, tensorShape, isMatrix) in tensors where name != omit {
            var dims = Array(tensorShape.reversed())
            if name == misshape { dims[dims.count - 1] += 1 }
            let count = dims.reduce(1, *)
            let values = isMatrix ? rng.normals(count, scale: 1 / Float(dims[0]).squareRoot()) : rng.normals(count).map { 1 + 0.1 * $0 }
            try writer.addTensor(named: name, dimensions: dims, type: isMatrix ? matrixType : .f32, values: values)
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-written-\(UUID().uuidString).gguf")
        try writer.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testWrittenModelsRunAlikeOnBothBackends() throws {
        let tokens: [[Int32]] = [[1, 5, 9, 96, 0, 42, 7], [3, 3, 3, 3, 3, 3, 3]]
        for type in [GGMLType.q4_1, .q8_0, .f16] {
            let file = try GGUFFile(contentsOf: writeModel(matrixType: type))
            var results: [[Float]] = []
            for backend in try TestBackends.all() {
                let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
                XCTAssertEqual(model.config.groupSize, 4)
                results.append(try XCTUnwrap(model.forward(tokens).logits).toArray())
            }
            let comparison = Comparison(results[1], reference: results[0].map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(type): \(comparison)")
            XCTAssertTrue(results[0].allSatisfy(\.isFinite))
        }
    }

    func testUnusableModelFilesAreOneLineErrorsNamingTheProblem() throws {
        let cases: [(URL, String)] = [
            (try writeModel(matrixType: .q8_0, architecture: "gpt2"), "architecture 'gpt2' is not supported"),
            (try writeModel(matrixType: .q8_0, omit: "blk.1.ffn_up.weight"), "missing required tensor blk.1.ffn_up.weight"),
            (try writeModel(matrixType: .q8_0, misshape: "blk.0.attn_k.weight"), "tensor blk.0.attn_k.weight has shape [17, 64], expected [16, 64]"),
            (try writeModel(TinyShape(heads: 3, kvHeads: 2), matrixType: .f32), "3 heads are not a multiple of 2 key/value heads"),
        ]
        for (url, expected) in cases {
            XCTAssertThrowsError(try LlamaWeights(gguf: GGUFFile(contentsOf: url), backend: TestBackends.cpu)) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(expected), message)
                XCTAssertTrue(message.contains(url.path) || message.contains(url.lastPathComponent), message)
                XCTAssertFalse(message.contains("\n"), message)
            }
        }
    }
}
