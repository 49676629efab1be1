import Foundation
import GGUF
import Models
import Tensor

/// Generation with the default teacher: a 16-token prompt continued by 32 tokens, one sequence and a
/// batch of 8 (``Generation``: the batch's KV cache, each token drawn on the device, only the ids
/// copied back), as generated tokens/s, and the batch's speed over one sequence's (the target is
/// >= 4x at 8). Validated: greedy continuations agree with the CPU backend's.
public struct GenerateSuite: BenchSuite {
    public let name = "generate"
    public let summary = "generation with the teacher, 16-token prompt + 32 tokens, batch 1 and 8: tokens/s and the batch's speedup (needs `make teacher`)"

    static let promptLength = 16, newTokens = 32, batches = [1, 8]

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        guard let path = context.teacherPath, FileManager.default.fileExists(atPath: path) else {
            throw TensorError.unsupported("bench generate: no teacher at \(context.teacherPath ?? "(none)"); run `make teacher` or pass --teacher FILE.gguf")
        }
        let file = try GGUFFile(path: path)
        var records: [BenchRecord] = []
        var reference: [Int32]?
        for backend in context.referenceFirst {
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
            let prompt = benchTokenIds(Self.promptLength, below: model.config.vocabulary, seed: 21)
            func generate(batch: Int, temperature: Float) throws -> [[Int32]] {
                var generation = try Generation(model: model, prompts: Array(repeating: prompt, count: batch),
                                                capacity: Self.promptLength + Self.newTokens, seed: 1)
                while generation.canContinue { _ = try generation.step(temperature: temperature, topK: 0, topP: 0.95) }
                return generation.sequences
            }
            // Greedy: the same continuation on every backend (up to a near-tie the logits' rounding may flip).
            let greedy = try generate(batch: 1, temperature: 0)[0]
            let agreement = reference.map { expected in zip(greedy, expected).prefix { $0 == $1 }.count } ?? greedy.count
            reference = reference ?? greedy
            guard context.backends.contains(where: { $0 === backend }) else { continue }
            var single = 0.0
            for batch in Self.batches {
                context.report("generate: \(batch) x (\(Self.promptLength) + \(Self.newTokens)) tokens on \(backend.name)")
                let seconds = try context.median { _ = try generate(batch: batch, temperature: 0.8) }
                let tokensPerSecond = Double(batch * (Self.newTokens + 1)) / seconds
                if batch == 1 { single = tokensPerSecond }
                records.append(BenchRecord(
                    suite: name, kernel: "generate (teacher)", backend: backend.name,
                    shape: "batch \(batch), \(Self.promptLength)-token prompt + \(Self.newTokens + 1) drawn, V=\(model.config.vocabulary)",
                    medianSeconds: seconds, maxAbsError: Double(greedy.count - agreement),
                    extra: ["tokens_per_s": tokensPerSecond, "speedup_over_batch_1": tokensPerSecond / single],
                    note: "T=0.8, top-p 0.95, drawn on the device (sample_rows), only ids to the host; max abs err: greedy tokens after the first "
                        + "that differs from the CPU backend's greedy continuation"))
            }
        }
        return records
    }
}
