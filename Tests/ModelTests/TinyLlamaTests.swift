import Foundation
import GGUF
import Models
import Tensor
import TestSupport
import XCTest

/// Tiny random llama models, written by the `gguf` Python package with each weight type, against
/// the independent numpy reference (bench/reference/llama_reference.py) that made the fixtures.
final class TinyLlamaTests: XCTestCase {
    struct Reference: Decodable {
        struct Model: Decodable {
            let file: String
            let logits: [[[Float]]]
        }
        let sequences: [[Int32]]
        let models: [String: Model]
    }

    static let fixtures = Bundle.module.resourceURL!.appendingPathComponent("Fixtures")
    static let reference = try! JSONDecoder().decode(Reference.self, from: Data(contentsOf: fixtures.appendingPathComponent("tiny-llama-reference.json")))

    private func model(_ type: String, on backend: any Backend) throws -> LlamaModel {
        let file = try GGUFFile(contentsOf: Self.fixtures.appendingPathComponent(Self.reference.models[type]!.file))
        return try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
    }

    /// Every weight type, every backend: logits equal the fp64 reference's (computed from the same
    /// dequantized weights) within fp32 rounding.
    func testLogitsMatchTheNumpyReferenceForEveryWeightType() throws {
        for backend in try TestBackends.all() {
            for (type, expected) in Self.reference.models.sorted(by: { $0.key < $1.key }) {
                let model = try model(type, on: backend)
                for (sequence, expectedLogits) in zip(Self.reference.sequences, expected.logits) {
                    let logits = try XCTUnwrap(model.forward([sequence]).logits).toArray()
                    let comparison = Comparison(logits, reference: expectedLogits.flatMap { $0 }.map(Double.init))
                    XCTAssertTrue(comparison.passes(tolerance: 2e-4), "\(type), \(sequence.count) tokens on \(backend.name): \(comparison)")
                }
            }
        }
    }

    /// The model with its matrices expanded once gives the same logits as expanding them at every
    /// forward (the same dequantization), in fp32 and bf16; it holds the bytes it says it adds, and an
    /// expanded model has nothing left to expand.
    func testExpandedModelGivesTheSameLogits() throws {
        let sequence = Self.reference.sequences[2]
        for backend in try TestBackends.all() {
            for (type, precision) in [("q4_1", DType.f32), ("q8_0", .bf16), ("f16", .f32)] {
                let file = try GGUFFile(contentsOf: Self.fixtures.appendingPathComponent(Self.reference.models[type]!.file))
                let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: precision)
                let expanded = try model.expanded()
                XCTAssertGreaterThan(model.expansionBytes, 0)
                XCTAssertEqual(expanded.expansionBytes, 0)
                XCTAssertEqual(expanded.weights.residentBytes - model.weights.residentBytes,
                               model.expansionBytes - model.weights.blocks.flatMap(\.matrices).reduce(model.weights.output.byteCount) { $0 + $1.byteCount },
                               "the matrices in the compute type replace the stored ones (the embedding stays)")
                let stored = try XCTUnwrap(model.forward([sequence]).logits).toArray()
                let once = try XCTUnwrap(expanded.forward([sequence]).logits).toArray()
                XCTAssertEqual(once, stored, "\(type) in \(precision.rawValue) on \(backend.name)")
            }
        }
    }

    /// A batch of sequences gives each sequence's own logits.
    func testBatchedForwardEqualsOneSequenceAtATime() throws {
        let sequences = Array(Self.reference.sequences[1...1]) + [Self.reference.sequences[1].reversed()]
        for backend in try TestBackends.all() {
            let model = try model("q8_0", on: backend)
            let batched = try XCTUnwrap(model.forward(sequences).logits).toArray()
            let single = try sequences.flatMap { try XCTUnwrap(model.forward([$0]).logits).toArray() }
            let comparison = Comparison(batched, reference: single.map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(backend.name): \(comparison)")
        }
    }

    /// Generation with the KV cache (a prompt, then one token at a time) gives the full forward's logits.
    func testKVCacheStepsEqualTheFullForward() throws {
        let sequence = Self.reference.sequences[2]
        for backend in try TestBackends.all() {
            let model = try model("q4_1", on: backend)
            let full = try XCTUnwrap(model.forward([sequence]).logits).toArray()
            let cache = try LlamaKVCache(weights: model.weights, capacity: sequence.count)
            var stepped = try XCTUnwrap(model.forward([Array(sequence.prefix(5))], cache: cache).logits).toArray()
            for token in sequence.dropFirst(5) {
                stepped += try XCTUnwrap(model.forward([[token]], cache: cache).logits).toArray()
            }
            XCTAssertEqual(cache.length, sequence.count)
            let comparison = Comparison(stepped, reference: full.map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(backend.name): \(comparison)")
            XCTAssertThrowsError(try model.forward([[1]], cache: cache)) { error in
                XCTAssertTrue("\(error)".contains("exceed the KV cache"), "\(error)")
            }
        }
    }

    /// A KV cache of three sequences (a 5-token prompt each, then one token each per forward) gives
    /// every sequence the logits of its own full forward; the cache refuses another batch size.
    func testBatchedKVCacheStepsEqualEachSequencesFullForward() throws {
        let long = Self.reference.sequences[2]
        let sequences = [Array(long[0..<12]), Array(long[10..<22]), Array(long[20..<32])]
        for backend in try TestBackends.all() {
            let model = try model("q8_0", on: backend)
            let cache = try LlamaKVCache(weights: model.weights, capacity: 12, batch: 3)
            let prompt = try XCTUnwrap(model.forward(sequences.map { Array($0.prefix(5)) }, cache: cache).logits).toArray()
            var stepped = (0..<3).map { s in Array(prompt[(s * 5 * 260)..<((s + 1) * 5 * 260)]) }
            for position in 5..<12 {
                let logits = try XCTUnwrap(model.forward(sequences.map { [$0[position]] }, cache: cache).logits).toArray()
                for s in 0..<3 { stepped[s] += logits[(s * 260)..<((s + 1) * 260)] }
            }
            for (s, sequence) in sequences.enumerated() {
                let full = try XCTUnwrap(model.forward([sequence]).logits).toArray()
                let comparison = Comparison(stepped[s], reference: full.map(Double.init))
                XCTAssertTrue(comparison.passes(tolerance: 1e-5), "sequence \(s) on \(backend.name): \(comparison)")
            }
            XCTAssertThrowsError(try model.forward([[1]], cache: try LlamaKVCache(weights: model.weights, capacity: 4, batch: 2))) { error in
                XCTAssertTrue("\(error)".contains("holds 2 sequences"), "\(error)")
            }
        }
    }

    /// Prompts of different lengths (left-padded in the cache, the padding masked and left out of
    /// the positions): every sequence's logits at its real positions equal its own full forward's,
    /// prompt and stepped tokens alike; greedy generation continues each as it would alone.
    func testLeftPaddedKVCacheEqualsEachSequencesFullForward() throws {
        let long = Self.reference.sequences[2]
        let sequences = [Array(long[0..<9]), Array(long[10..<22]), Array(long[20..<25])]  // prompts of 2, 9 and 1 tokens, then 7 steps
        let prompts = [2, 9, 1]
        for backend in try TestBackends.all() {
            let model = try model("q8_0", on: backend)
            let pad = prompts.map { prompts.max()! - $0 }
            let cache = try LlamaKVCache(weights: model.weights, capacity: 16, batch: 3, leadingPadding: pad)
            let filler: Int32 = 255  // any id: nothing attends to it
            var padded: [[Int32]] = []
            for s in 0..<3 { padded.append(Array(repeating: filler, count: pad[s]) + Array(sequences[s].prefix(prompts[s]))) }
            let first: [Float] = try XCTUnwrap(model.forward(padded, cache: cache).logits).toArray()
            var stepped: [[Float]] = []
            for s in 0..<3 { stepped.append(Array(first[((s * 9 + pad[s]) * 260)..<((s + 1) * 9 * 260)])) }
            for step in 0..<7 {
                var tokens: [[Int32]] = []
                for s in 0..<3 { tokens.append([sequences[s].count > prompts[s] + step ? sequences[s][prompts[s] + step] : filler]) }
                let logits: [Float] = try XCTUnwrap(model.forward(tokens, cache: cache).logits).toArray()
                for s in 0..<3 where sequences[s].count > prompts[s] + step { stepped[s] += logits[(s * 260)..<((s + 1) * 260)] }
            }
            for (s, sequence) in sequences.enumerated() {
                let full = try XCTUnwrap(model.forward([sequence]).logits).toArray()
                let comparison = Comparison(stepped[s], reference: full.map(Double.init))
                XCTAssertTrue(comparison.passes(tolerance: 1e-5), "sequence \(s) (padding \(pad[s])) on \(backend.name): \(comparison)")
            }
            var generation = try Generation(model: model, prompts: prompts.indices.map { Array(sequences[$0].prefix(prompts[$0])) }, capacity: 15, seed: 1)
            while generation.canContinue { _ = try generation.step(temperature: 0) }
            for (s, generated) in generation.sequences.enumerated() {
                var alone = try Generation(model: model, prompts: [Array(sequences[s].prefix(prompts[s]))], capacity: 15 - pad[s], seed: 1)
                while alone.canContinue { _ = try alone.step(temperature: 0) }
                XCTAssertEqual(generated, alone.sequences[0], "sequence \(s) on \(backend.name)")
            }
        }
    }

    /// Generation draws the same sequences from the same seed, greedy generation follows the full
    /// forward's largest logit at every position, and only ids come back (each step's result is [B]).
    func testGenerationIsReproducibleAndGreedyFollowsTheFullForward() throws {
        let prompt = Array(Self.reference.sequences[2].prefix(4))
        for backend in try TestBackends.all() {
            let model = try model("q8_0", on: backend)
            func generate(seed: UInt64, temperature: Float) throws -> [[Int32]] {
                var generation = try Generation(model: model, prompts: [prompt, prompt, prompt], capacity: 16, seed: seed)
                while generation.canContinue { XCTAssertEqual(try generation.step(temperature: temperature, topK: 40, topP: 0.9).count, 3) }
                return generation.sequences
            }
            let first = try generate(seed: 7, temperature: 1), again = try generate(seed: 7, temperature: 1)
            XCTAssertEqual(first, again, backend.name)
            XCTAssertTrue(first.allSatisfy { $0.count == 17 }, "the prompt, then one token a position of the cache, and the last one drawn")
            XCTAssertGreaterThan(Set(first).count, 1, "three draws at temperature 1 differ")
            let greedy = try generate(seed: 7, temperature: 0)
            for sequence in greedy {
                let logits = try XCTUnwrap(model.forward([sequence]).logits).toArray()
                for position in 3..<16 {
                    let row = logits[(position * 260)..<((position + 1) * 260)]
                    XCTAssertEqual(Int(sequence[position + 1]), row.indices.max { row[$0] < row[$1] }! - position * 260, "\(backend.name) position \(position)")
                }
            }
        }
    }

    func testHiddenStatesAndAttentionProbabilitiesAreHandedBack() throws {
        let sequence = Self.reference.sequences[1]
        let backend = TestBackends.cpu
        let model = try model("f32", on: backend)
        let result = try model.forward([sequence], options: LlamaForwardOptions(keepHiddenStates: true, attentionLayers: [1]))
        XCTAssertEqual(result.hiddenStates.count, model.config.layers)
        XCTAssertEqual(result.hiddenStates[0].shape, [sequence.count, model.config.width])
        let probabilities = try XCTUnwrap(result.attentionProbabilities[1])
        XCTAssertEqual(probabilities.shape, [1, model.config.heads, sequence.count, sequence.count])
        let values = try probabilities.toArray()
        let t = sequence.count
        for row in 0..<(model.config.heads * t) {
            let query = row % t
            let rowValues = values[(row * t)..<((row + 1) * t)]
            XCTAssertEqual(rowValues.reduce(0, +), 1, accuracy: 1e-5)
            XCTAssertTrue(rowValues.dropFirst(query + 1).allSatisfy { $0 == 0 }, "no attention to later positions")
        }
    }

    func testLikelihoodMatchesTheReferenceLogits() throws {
        let sequence = Self.reference.sequences[2]
        let logits = Self.reference.models["q8_0"]!.logits[2]
        var expected = 0.0
        for position in 0..<(sequence.count - 1) {
            let row = logits[position].map(Double.init)
            let m = row.max()!
            expected += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[Int(sequence[position + 1])]
        }
        for backend in try TestBackends.all() {
            let result = try model("q8_0", on: backend).likelihood(of: [sequence])
            XCTAssertEqual(result.tokens, sequence.count - 1)
            XCTAssertEqual(result.totalNLL, expected, accuracy: 1e-3 * expected)
        }
    }

    /// In f16, an activation past 65504 is an error naming the tensor: block 1's feed-forward norm
    /// scaled to 1e6 puts its norm's output past f16's range; the same model runs in bf16 (fp32's range).
    func testF16OverflowIsNamed() throws {
        for backend in try TestBackends.all() {
            let file = try GGUFFile(contentsOf: Self.fixtures.appendingPathComponent(Self.reference.models["q8_0"]!.file))
            let weights = try LlamaWeights(gguf: file, backend: backend)
            let norm = weights.blocks[1].feedForwardNorm
            try [Float](repeating: 1e6, count: norm.count).withUnsafeBufferPointer { try backend.upload($0, to: norm) }
            let sequence = Self.reference.sequences[1]
            XCTAssertThrowsError(try LlamaModel(weights: weights, precision: .f16).forward([sequence])) { error in
                XCTAssertTrue("\(error)".contains("f16 overflow") && "\(error)".contains("block 1's feed-forward input")
                              && "\(error)".contains("bf16"), "\(backend.name): \(error)")
            }
            XCTAssertNoThrow(try LlamaModel(weights: weights, precision: .bf16).forward([sequence]), backend.name)
        }
    }

    func testBadInputsAreWordedErrors() throws {
        let model = try model("f32", on: TestBackends.cpu)
        XCTAssertThrowsError(try model.forward([[0, 260]])) { XCTAssertTrue("\($0)".contains("token id 260 is outside the vocabulary of 260"), "\($0)") }
        XCTAssertThrowsError(try model.forward([[1, 2], [3]])) { XCTAssertTrue("\($0)".contains("equal length"), "\($0)") }
        XCTAssertThrowsError(try model.forward([Array(repeating: 1, count: 65)])) { XCTAssertTrue("\($0)".contains("context length 64"), "\($0)") }
        XCTAssertThrowsError(try model.likelihood(of: [[1]])) { XCTAssertTrue("\($0)".contains("at least 2 tokens"), "\($0)") }
    }
}
