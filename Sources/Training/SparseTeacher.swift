import Foundation
import Losses
import Models
import TeacherCache
import Tensor

/// The teacher as sparse targets read from a teacher cache (or any source of them): per
/// micro-batch, a top-k teacher for the fused loss and the teacher's cross-entropy from the stored
/// label log-probabilities, with no teacher on the device.
///
/// - Top-k and top-p targets enter as their log-probabilities; `tail` says what the tokens they do
///   not list get (``MissingTeacherMass``): nothing (`renormalize`, DistillKit's `zero`), or the
///   tail mass spread evenly (`uniform`). The temperature then applies as `p^(1/T)` renormalized.
/// - Sampled targets (independent or systematic draws) enter as `log(count / N)` renormalized: at T = 1 exactly `count / N`, RS-KD's
///   unbiased estimate of the teacher distribution. With the `bucket` tail the ids drawn once, over N (Good-Turing's estimate of
///   the mass no draw reached), become the bucket set against the student's unlisted mass, and the counts share the rest.
public struct SparseTeacher {
    public let spec: TeacherTargetSpec
    public let tail: MissingTeacherMass
    public let seqLen: Int
    public let vocabulary: Int
    /// Where the targets' tensors are made.
    public let backend: any Backend
    /// Window index -> the targets of its first `seqLen - 1` positions.
    let targetsOfWindow: (Int) throws -> [SparseTarget]

    public init(spec: TeacherTargetSpec, tail: MissingTeacherMass, seqLen: Int, vocabulary: Int, backend: any Backend,
                targetsOfWindow: @escaping (Int) throws -> [SparseTarget]) {
        self.spec = spec
        self.tail = tail
        self.seqLen = seqLen
        self.vocabulary = vocabulary
        self.backend = backend
        self.targetsOfWindow = targetsOfWindow
    }

    public init(cache: TeacherCache, tail: MissingTeacherMass, backend: any Backend) {
        self.init(spec: cache.spec, tail: tail, seqLen: cache.manifest.seqLen, vocabulary: cache.manifest.teacher.vocabulary,
                  backend: backend, targetsOfWindow: cache.targets(ofWindow:))
    }

    /// The teacher of windows `windows` ([B] window numbers, rows `b * T + t`): `[B * T, k]` ids and
    /// log-probabilities (k the most pairs of any row; each window's last row, which predicts
    /// nothing, holds one certain token), and the teacher's mean cross-entropy over the predicted
    /// positions. Shorter rows are padded with empty slots (id -1), or with the uniform tail at ids
    /// they do not list with the share those ids get anyway, `tail / (V - listed)`.
    public func topK(windows: [Int]) throws -> (teacher: TopKTeacher, crossEntropy: Float) {
        let rows = try windows.map { try targetsOfWindow($0) }
        let k = max(1, rows.joined().map(\.ids.count).max() ?? 1)
        var ids = [Float](), values = [Float]()
        ids.reserveCapacity(windows.count * seqLen * k)
        values.reserveCapacity(windows.count * seqLen * k)
        var crossEntropy = 0.0
        let draws = spec.draws.map(Float.init)
        for window in rows {
            for target in window + [SparseTarget(ids: [0], values: [draws ?? 1], tailMass: 0, labelLogProbability: 0)] {
                crossEntropy -= Double(target.labelLogProbability)
                ids += target.ids.map(Float.init)
                // Drawn targets under a bucket tail: Good-Turing's estimate of the mass no draw reached
                // (the ids drawn once, over N) becomes the bucket, the counts share the rest; where every
                // draw is distinct the estimate says 1, and the drawn ids keep 1 / N.
                let listedShare = draws.map { n in tail == .bucket ? 1 - min(Float(target.values.filter { $0 == 1 }.count), n - 1) / n : 1 } ?? 1
                values += target.values.map { value in logf(draws.map { value / $0 * listedShare } ?? value) }  // log p, or log(count / N)
                guard tail == .uniform else {
                    ids += [Float](repeating: -1, count: k - target.ids.count)
                    values += [Float](repeating: -.infinity, count: k - target.ids.count)
                    continue
                }
                var candidate: Int32 = 0
                let listed = Set(target.ids)
                let missing = 1 - target.values.reduce(0.0) { sum, value in sum + Double(draws.map { value / $0 } ?? value) }
                let share = missing > 0 ? logf(Float(missing / Double(vocabulary - target.ids.count))) : -.infinity
                for _ in target.ids.count..<k {
                    while listed.contains(candidate) { candidate += 1 }
                    ids.append(Float(candidate))
                    values.append(share)
                    candidate += 1
                }
            }
        }
        let n = windows.count * seqLen
        let teacher = TopKTeacher(ids: try backend.tensor(ids, shape: [n, k], label: "cached teacher ids"),
                                  values: try backend.tensor(values, shape: [n, k], label: "cached teacher log-probabilities"),
                                  missingMass: tail)
        return (teacher, Float(crossEntropy / Double(windows.count * (seqLen - 1))))
    }

    /// The teacher's NLL of the tokens of `windows`, from the stored label log-probabilities.
    public func likelihood(windows: [Int]) throws -> LikelihoodResult {
        try windows.reduce(LikelihoodResult()) { total, window in
            let targets = try targetsOfWindow(window)
            return total + LikelihoodResult(totalNLL: targets.reduce(0.0) { $0 - Double($1.labelLogProbability) }, tokens: targets.count)
        }
    }
}
