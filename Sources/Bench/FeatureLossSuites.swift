import Checkpoint
import Foundation
import Losses
import Models
import Tensor
import Training

/// The default run's shapes: 4 x 128 tokens, a student of SmolLM2-135M's width (576, 9 heads of 64,
/// 3 key/value heads, feed-forward 1536) and its vocabulary 49152; the teacher has the same width.
enum FeatureBenchShapes {
    static let (batch, length, width, heads, vocabulary) = (4, 128, 576, 9, 49152)
    static var tokens: Int { batch * length }

    /// The CPU backend's loss and gradient per configuration, which the other backends' are checked against.
    struct Reference {
        private var known: [Int: (loss: Float, gradient: [Float])] = [:]

        /// The largest difference from the CPU's results for `configuration`; the first results given become them.
        mutating func error(of configuration: Int, loss: Float, gradient: [Float]) -> Double {
            guard let reference = known[configuration] else {
                known[configuration] = (loss, gradient)
                return 0
            }
            return max(Double(abs(reference.loss - loss)), maxAbsDifference(reference.gradient, gradient))
        }
    }

    /// A random 3-block student of the default width, after one forward of bench tokens.
    static func student(on backend: any Backend) throws -> StudentModel {
        let teacherLike = LlamaConfig(layers: 3, width: width, feedForward: 1536, heads: heads, kvHeads: 3, vocabulary: vocabulary,
                                      contextLength: 2048, ropeBase: 100000, normEpsilon: 1e-5, tiedEmbeddings: true)
        let shape = try StudentShape.parse("blocks=3,width=\(width),heads=\(heads),kv_heads=3,feed_forward=1536")
        let student = try StudentModel(parameters: LlamaParameters.random(shape, like: teacherLike, seed: 1), backend: backend)
        let ids = benchTokenIds(tokens, below: vocabulary, seed: 3)
        _ = try student.forward((0..<batch).map { Array(ids[($0 * length)..<(($0 + 1) * length)]) })
        return student
    }
}

/// `kdgpu bench lens`: one logit-lens layer pair (both models' hidden states through their
/// unembedding after the final norm, JSD, gradients into the student's hidden state and LM head)
/// through the fused chunked head path, for 1 and 3 pairs; GFLOP/s against the same run's GEMM of
/// one head ([N, C] x [C, V]) on the same backend.
public struct LensSuite: BenchSuite {
    public let name = "lens"
    public let summary = "logit-lens layers (fused chunked head + JSD, fwd + bwd), 4x128 tokens, V=49152: ms per layer, fraction of GEMM speed"

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        typealias S = FeatureBenchShapes
        let (n, c, v) = (S.tokens, S.width, S.vocabulary)
        let loss = DistillationLoss(divergence: .jensenShannon(beta: 0.5), temperature: 1, softWeight: 1, hardWeight: 0)
        var records: [BenchRecord] = []
        var reference = FeatureBenchShapes.Reference()
        for backend in context.referenceFirst {
            let student = try S.student(on: backend)
            let teacherHidden = try (0..<3).map { try backend.tensor(benchValues(n * c, seed: 40 + UInt64($0), scale: 2), shape: [n, c], label: "bench teacher hidden") }
            let teacherHead = try backend.tensor(benchValues(v * c, seed: 44, scale: 0.05), shape: [v, c], label: "bench teacher head")
            let teacherNorm = try backend.tensor(Array(repeating: 1, count: c), shape: [c], label: "bench teacher norm")
            let labels = try backend.tensor(benchTokenIds(n, below: v, seed: 5).map(Float.init), shape: [n], label: "bench labels")

            // The GEMM reference speed: one head's logits on this backend, this run.
            let a = try backend.tensor(benchValues(n * c, seed: 45), shape: [n, c], label: "bench gemm hidden")
            let logits = try backend.tensor(shape: [n, v], label: "bench gemm logits")
            let gemmSeconds = try context.median {
                try backend.gemm(a, teacherHead, into: logits, transposeB: true)
                try backend.synchronize()
            }
            let gemmGflops = 2.0 * Double(n * c * v) / gemmSeconds / 1e9

            for pairCount in [1, 3] {
                let lens = LogitLens(pairs: (0..<pairCount).map { ($0, $0) }, weight: 1, finalNorm: true, loss: loss)
                var last: (value: Float, hiddenGradients: [Int: Tensor])?
                context.report("lens: \(pairCount) pair(s) on \(backend.name)")
                let seconds = try context.median {
                    last = try lens.apply(student: student, teacherHidden: teacherHidden, teacherNorm: teacherNorm, teacherEpsilon: 1e-5,
                                          teacherHead: teacherHead, labels: labels, gradOutput: 1)
                    try backend.synchronize()
                }
                let gradient = try last!.hiddenGradients[0]!.toArray()
                let error = reference.error(of: pairCount, loss: last!.value, gradient: gradient)
                guard context.backends.contains(where: { $0 === backend }) else { continue }
                // Per pair: the student's and the teacher's head GEMMs, dh and dW.
                let flops = Double(pairCount) * 2.0 * Double(n * v) * Double(4 * c)
                records.append(BenchRecord(suite: name, kernel: "lens layer (final norm, jsd)", backend: backend.name,
                                           shape: "\(pairCount) pair(s), N=\(n) C=\(c) V=\(v)", medianSeconds: seconds,
                                           gflopPerSecond: flops / seconds / 1e9, maxAbsError: error,
                                           extra: ["ms_per_layer": seconds * 1000 / Double(pairCount),
                                                   "fraction_of_gemm": flops / seconds / 1e9 / gemmGflops, "gemm_gflop_per_s": gemmGflops],
                                           note: "4 head-sized GEMMs per pair; max abs err: loss and dh vs the CPU backend"))
            }
        }
        return records
    }
}

/// `kdgpu bench align`: attention alignment (stack the maps, mix them with the module's GEMM, mask,
/// fused softmax + KL per teacher head, module and map gradients) at the default shapes, for 1 and 3
/// aligned block pairs of 9 heads each; GB/s over the bytes every op reads and writes, against the
/// same run's copy bandwidth.
public struct AlignSuite: BenchSuite {
    public let name = "align"
    public let summary = "attention alignment (A2D module + masked softmax-KL, fwd + bwd), 4x128 tokens, 9 heads: ms per layer, fraction of copy bandwidth"

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        typealias S = FeatureBenchShapes
        let (b, t, h) = (S.batch, S.length, S.heads)
        var records: [BenchRecord] = []
        var reference = FeatureBenchShapes.Reference()
        for backend in context.referenceFirst {
            let student = try S.student(on: backend)
            let copy = try context.copyBandwidth(of: backend)
            for blockCount in [1, 3] {
                let blocks = Array(0..<blockCount)
                let alignment = try AttentionAlignment(pairs: blocks.map { ($0, $0) }, studentHeads: h, teacherHeads: h,
                                                       weight: 1, decay: 1, seed: 2, backend: backend)
                let studentMaps = try Dictionary(uniqueKeysWithValues: blocks.map { ($0, try student.attentionProbabilities(of: $0)) })
                // Teacher maps: the student's of another block, so both are causal probability maps.
                let teacherMaps = try Dictionary(uniqueKeysWithValues: blocks.map { ($0, try student.attentionProbabilities(of: 2 - $0)) })
                var last: (value: Float, mapGradients: [Int: Tensor])?
                context.report("align: \(blockCount) block pair(s) on \(backend.name)")
                let seconds = try context.median {
                    last = try alignment.apply(studentMaps: studentMaps, teacherMaps: teacherMaps, gradOutput: 1)
                    try backend.synchronize()
                }
                let gradient = try last!.mapGradients[0]!.toArray()
                let error = reference.error(of: blockCount, loss: last!.value, gradient: gradient)
                guard context.backends.contains(where: { $0 === backend }) else { continue }
                let (cs, ct) = (Double(alignment.studentChannels + 1), Double(alignment.teacherChannels))
                // In units of one [B, T, T] map: stack both sides (read + write), the mixing GEMM (read Cs + 1, write Ct),
                // two masks (write), the loss (read 2, write 1), the two gradient GEMMs (read), unstack (read + write).
                let maps = 2 * cs + 2 * ct + (cs + ct) + 2 * ct + 3 * ct + 2 * (cs + ct) + 2 * cs
                let bytes = maps * Double(4 * b * t * t)
                let gbPerSecond = bytes / seconds / 1e9
                records.append(BenchRecord(suite: name, kernel: "attention alignment", backend: backend.name,
                                           shape: "\(blockCount) block pair(s) x \(h) heads, B=\(b) T=\(t)", medianSeconds: seconds,
                                           gbPerSecond: gbPerSecond, maxAbsError: error,
                                           extra: ["ms_per_layer": seconds * 1000 / Double(blockCount), "fraction_of_copy_bandwidth": gbPerSecond / copy],
                                           note: "bytes: every op's reads and writes of the maps; max abs err: loss and map gradient vs the CPU backend"))
            }
        }
        return records
    }
}
