import Foundation
import GGUF
import Models
import TeacherCache
import Tensor

/// What a teacher-cache build spends beside the teacher: per batch of 4 x 128 windows, the
/// teacher's forward with logits alone, then the cache's own targets (the same forward, a softmax,
/// the rows to the host, selection or draws, and the shard's bytes, drawn pairs coded), as tokens/s
/// and the fraction of the forward's speed kept. (Bytes a token takes on disk depend on the text:
/// `kdgpu teacher-cache build` reports them for a real corpus; random tokens here would overstate
/// the draws' unique ids.)
public struct TeacherCacheSuite: BenchSuite {
    public let name = "teacher-cache"
    public let summary = "cache targets vs teacher forward, 4 x 128 tokens: tokens/s and the fraction of the forward's kept (needs `make teacher`)"

    static let batch = 4, sequenceLength = 128

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        guard let path = context.teacherPath, FileManager.default.fileExists(atPath: path) else {
            throw TensorError.unsupported("bench teacher-cache: no teacher at \(context.teacherPath ?? "(none)"); run `make teacher` or pass --teacher FILE.gguf")
        }
        let file = try GGUFFile(path: path)
        let vocabulary = try LlamaConfig(gguf: file).vocabulary
        let tokens = benchTokenIds(Self.batch * Self.sequenceLength, below: vocabulary, seed: 12)
        let batch = (0..<Self.batch).map { Array(tokens[$0 * Self.sequenceLength..<($0 + 1) * Self.sequenceLength]) }
        let tokenCount = Double(Self.batch * Self.sequenceLength)
        var records: [BenchRecord] = []
        var reference: [String: [[SparseTarget]]] = [:]
        for backend in context.referenceFirst where context.backends.contains(where: { $0 === backend }) || reference.isEmpty {
            context.report("teacher-cache: \(Self.batch) x \(Self.sequenceLength) tokens on \(backend.name)")
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
            func forward() throws {
                _ = try model.forward(batch)
                try backend.synchronize()
            }
            for spec in [TeacherTargetSpec.sampled(draws: 50), .recommended, .topK(k: 32)] {
                let maker = SparseTargetMaker(spec: spec, seqLen: Self.sequenceLength)
                let idOrder = spec.draws == nil ? nil : TokenIDOrder(frequenciesOf: tokens, vocabulary: vocabulary)
                var targets: [[SparseTarget]] = []
                // In alternation with the forward alone: the median of the pairs' ratios is the fraction kept.
                let paired = try context.pairedMedians({
                    targets = try maker.targets(of: batch, windows: Array(batch.indices), model: model)
                    _ = CacheShard(firstWindow: 0, seqLen: Self.sequenceLength, targets: targets)
                        .encoded(idBits: CacheShard.idBits(vocabulary: vocabulary), storesProbabilities: spec.storesProbabilities,
                                  pairCountBytes: spec.pairCountBytes, idOrder: idOrder)
                }, against: forward)
                let seconds = paired.seconds
                // Against the CPU backend's targets: the share of positions whose stored ids agree (the
                // teachers' logits differ by rounding, which can move a draw or a near-tie).
                let expected = reference[spec.description] ?? targets
                reference[spec.description] = expected
                let positions = zip(targets.joined(), expected.joined())
                let agreeing = positions.filter { $0.ids == $1.ids }.count
                records.append(BenchRecord(
                    suite: name, kernel: "cache_targets_\(spec)", backend: backend.name,
                    shape: "\(Self.batch)x\(Self.sequenceLength) tokens, V=\(vocabulary)", medianSeconds: seconds,
                    maxAbsError: 1 - Double(agreeing) / Double(targets.joined().count),
                    extra: ["tokens_per_s": tokenCount / seconds, "forward_tokens_per_s": tokenCount / paired.referenceSeconds,
                            "fraction_of_forward": paired.referenceOverBody],
                    note: "max abs err: the share of positions whose stored ids differ from the CPU backend's; fraction_of_forward: "
                        + "the teacher forward with logits alone over the cache's targets of the same batch, the median over alternating pairs"))
            }
            if !context.backends.contains(where: { $0 === backend }) { records.removeAll { $0.backend == backend.name } }
        }
        return records
    }
}
