import Foundation
import GGUF
import Checkpoint
import Models
import Tensor
import Training

/// Generation with the default teacher and the default student (its first and last three blocks,
/// fp32): a 16-token prompt continued by 32 tokens, one sequence and a batch of 8 (``Generation``:
/// the batch's KV cache, each token drawn on the device, only the ids copied back), as generated
/// tokens/s, and the batch's speed over one sequence's (the target is >= 4x at 8). The teacher runs
/// as stored (each forward expands its quantized matrices) and expanded once (``LlamaModel/expanded()``,
/// what sequence-level KD samples from). Validated: greedy continuations agree with the CPU backend's.
public struct GenerateSuite: BenchSuite {
    public let name = "generate"
    public let summary = "generation with the teacher (quantized, and expanded once) and the student, 16-token prompt + 32 tokens, batch 1 and 8: tokens/s and the batch's speedup (needs `make teacher`)"

    static let promptLength = 16, newTokens = 32, batches = [1, 8]

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        guard let path = context.teacherPath, FileManager.default.fileExists(atPath: path) else {
            throw TensorError.unsupported("bench generate: no teacher at \(context.teacherPath ?? "(none)"); run `make teacher` or pass --teacher FILE.gguf")
        }
        let file = try GGUFFile(path: path)
        let studentParameters = try LlamaParameters(gguf: file).inheriting(blocks: StudentLayers.parse(nil, teacherLayers: LlamaConfig(gguf: file).layers))
        var records: [BenchRecord] = []
        var references: [String: [Int32]] = [:]
        for backend in context.referenceFirst {
            let teacher = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
            let models = [("teacher (quantized)", teacher), ("teacher (expanded once)", try teacher.expanded()),
                          ("student (6 blocks, fp32)", try StudentModel(parameters: studentParameters, backend: backend).inferenceModel())]
            for (label, model) in models {
                let prompt = benchTokenIds(Self.promptLength, below: model.config.vocabulary, seed: 21)
                func generate(batch: Int, temperature: Float) throws -> [[Int32]] {
                    var generation = try Generation(model: model, prompts: Array(repeating: prompt, count: batch),
                                                    capacity: Self.promptLength + Self.newTokens, seed: 1)
                    while generation.canContinue { _ = try generation.step(temperature: temperature, topK: 0, topP: 0.95) }
                    return generation.sequences
                }
                // Greedy: the same continuation on every backend (up to a near-tie the logits' rounding may flip).
                let greedy = try generate(batch: 1, temperature: 0)[0]
                let agreement = references[label].map { expected in zip(greedy, expected).prefix { $0 == $1 }.count } ?? greedy.count
                references[label] = references[label] ?? greedy
                guard context.backends.contains(where: { $0 === backend }) else { continue }
                var single = 0.0
                for batch in Self.batches {
                    context.report("generate: \(label), \(batch) x (\(Self.promptLength) + \(Self.newTokens)) tokens on \(backend.name)")
                    let seconds = try context.median { _ = try generate(batch: batch, temperature: 0.8) }
                    let tokensPerSecond = Double(batch * (Self.newTokens + 1)) / seconds
                    if batch == 1 { single = tokensPerSecond }
                    records.append(BenchRecord(
                        suite: name, kernel: "generate: \(label)", backend: backend.name,
                        shape: "batch \(batch), \(Self.promptLength)-token prompt + \(Self.newTokens + 1) drawn, V=\(model.config.vocabulary)",
                        medianSeconds: seconds, maxAbsError: Double(greedy.count - agreement),
                        extra: ["tokens_per_s": tokensPerSecond, "speedup_over_batch_1": tokensPerSecond / single],
                        note: "T=0.8, top-p 0.95, drawn on the device (sample_rows), only ids to the host; max abs err: greedy tokens after the first "
                            + "that differs from the CPU backend's greedy continuation"))
                }
            }
        }
        return records
    }
}
