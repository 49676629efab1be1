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
/// - The `prior` tail (``TailPrior``) spreads what a position leaves unlisted over the tokens in proportion to a prior
///   made once from the cache's training windows. Top-k and top-p keep their listed probabilities and give the prior
///   their tail mass. Drawn targets keep the ids drawn twice or more at `count / N`; the mass of the ids drawn once,
///   `n1 / N`, is shared by every token drawn at most once (those n1 and the undrawn) as `(c + a pi) / (n1 + a)` with
///   `c` the token's draws (0 or 1), `pi` the prior renormalized over those tokens and `a` its weight in draws
///   (``TailPrior/weight``): the drawn-once mass stays what it was, now partly steady over the undrawn tokens, which
///   drawn targets otherwise leave at 0 between the rare draws that land on them.
public struct SparseTeacher {
    public let spec: TeacherTargetSpec
    public let tail: MissingTeacherMass
    /// The prior of the `prior` tail (nil for the other tails).
    public let tailPrior: TailPrior?
    /// Each position's label (the token that follows) at the teacher's exact probability, from the
    /// stored label log-probability (``SparseTarget/withExactLabel(_:draws:)``); needs the batch's tokens.
    public let exactLabel: Bool
    public let seqLen: Int
    public let vocabulary: Int
    /// Where the targets' tensors are made.
    public let backend: any Backend
    /// Window index -> the targets of its first `seqLen - 1` positions; called from several threads at once.
    let targetsOfWindow: (Int) throws -> [SparseTarget]
    /// The prior's `[V]` log-probabilities on the device, made once (the kernel's tail row for every batch).
    let priorTensor: Tensor?
    /// Where each batch's targets are assembled on the host, kept from one batch to the next.
    private let staging: HostStaging
    /// Batches' targets assembled ahead of their step (``readAhead(_:)``).
    private let aheadOfTime: TargetsReadAhead
    /// Whether the trainer reads the next step's targets ahead (``readAhead(_:)``): on devices that
    /// compute off the host, where the host is idle while the step runs (`cache_read_ahead`).
    public var readsAhead = false
    /// Drawn targets: `log(c / N)` for every count c a draw can have (as `logf` gives each by itself),
    /// made once; empty for top-k and top-p targets and past the counts a cache can store.
    private let logCountShare: [Float]

    /// Rows hold a multiple of this many slots: batches whose widest rows differ a little then make
    /// tensors of one size, which the backends' memory pools hand back without fresh pages.
    public static let slotGranule = 64

    public init(spec: TeacherTargetSpec, tail: MissingTeacherMass, tailPrior: TailPrior? = nil, exactLabel: Bool = false, seqLen: Int,
                vocabulary: Int, backend: any Backend, targetsOfWindow: @escaping (Int) throws -> [SparseTarget]) throws {
        precondition((tail == .prior) == (tailPrior != nil), "the prior tail needs its prior, and only it")
        self.spec = spec
        self.tail = tail
        self.tailPrior = tailPrior
        self.exactLabel = exactLabel
        self.seqLen = seqLen
        self.vocabulary = vocabulary
        self.backend = backend
        self.targetsOfWindow = targetsOfWindow
        staging = HostStaging()
        aheadOfTime = TargetsReadAhead(staging: staging)
        logCountShare = spec.draws.map { n in n <= TeacherTargetSpec.maximumPairs ? (0...n).map { logf(Float($0) / Float(n)) } : [] } ?? []
        priorTensor = try tailPrior.map {
            try backend.tensor($0.probabilities.map { Float(Foundation.log($0)) }, shape: [vocabulary], label: "cached teacher tail prior")
        }
    }

    public init(cache: TeacherCache, tail: MissingTeacherMass, tailPrior: TailPrior? = nil, exactLabel: Bool = false, backend: any Backend) throws {
        try self.init(spec: cache.spec, tail: tail, tailPrior: tailPrior, exactLabel: exactLabel, seqLen: cache.manifest.seqLen,
                      vocabulary: cache.manifest.teacher.vocabulary, backend: backend, targetsOfWindow: cache.targets(ofWindow:))
    }

    /// The teacher of windows `windows` ([B] window numbers, rows `b * T + t`): `[B * T, k]` ids and
    /// log-probabilities (k the most pairs of any row; each window's last row, which predicts
    /// nothing, holds one certain token), and the teacher's mean cross-entropy over the predicted
    /// positions. Shorter rows are padded with empty slots (id -1), or with the uniform tail at ids
    /// they do not list with the share those ids get anyway, `tail / (V - listed)`.
    /// With ``exactLabel`` `tokens` ([B][T], the windows' tokens) give each position's label.
    /// Assembled on the host now, or taken from what ``readAhead(_:)`` assembled for these windows.
    public func topK(windows: [Int], tokens: [[Int32]]? = nil) throws -> (teacher: TopKTeacher, crossEntropy: Float) {
        let assembled = try aheadOfTime.take(windows: windows)?.get() ?? assemble(windows: windows, tokens: tokens)
        defer { staging.giveBack(assembled.buffers) }
        let (n, k) = (assembled.rows, assembled.k)
        let teacher = TopKTeacher(ids: try backend.tensor(shape: [n, k], label: "cached teacher ids"),
                                  values: try backend.tensor(shape: [n, k], label: "cached teacher log-probabilities"),
                                  missingMass: tail, tailPrior: priorTensor)
        try assembled.buffers.ids.withUnsafeBufferPointer { try backend.upload(UnsafeBufferPointer(rebasing: $0[..<(n * k)]), to: teacher.ids) }
        try assembled.buffers.values.withUnsafeBufferPointer { try backend.upload(UnsafeBufferPointer(rebasing: $0[..<(n * k)]), to: teacher.values) }
        return (teacher, assembled.crossEntropy)
    }

    /// Starts assembling the targets of `batches` (window numbers, and their tokens for exact labels)
    /// on a thread of its own, one batch after another, for ``topK(windows:tokens:)`` to take: the next
    /// step's, while the device runs this one. Batches never asked for are dropped at a later call.
    public func readAhead(windowsOf batches: [(windows: [Int], tokens: [[Int32]]?)]) {
        aheadOfTime.start(batches, assemble: assemble)
    }

    /// ``topK(windows:tokens:)``'s rows in host arrays (from ``staging``), before the upload.
    private func assemble(windows: [Int], tokens: [[Int32]]?) throws -> AssembledTargets {
        if exactLabel {
            guard let tokens, tokens.count == windows.count, tokens.allSatisfy({ $0.count == seqLen }) else {
                throw TensorError.shapeMismatch("cached teacher: exact labels need the \(windows.count) windows' \(seqLen) tokens")
            }
        }
        // The windows decode on several threads (a step's take milliseconds each).
        let rows = try parallelMap(windows.count) { window in
            let targets = try targetsOfWindow(windows[window])
            guard exactLabel, let tokens else { return targets }
            return targets.enumerated().map { position, target in target.withExactLabel(tokens[window][position + 1], draws: spec.draws) }
        }
        let widest = max(1, rows.joined().map(\.ids.count).max() ?? 1)
        // Empty slots change no loss, so k rounds up to a multiple of `slotGranule` (the uniform tail
        // fills its slots with tail ids, and keeps k exact).
        let k = tail == .uniform ? widest : max(widest, min(vocabulary, (widest + Self.slotGranule - 1) / Self.slotGranule * Self.slotGranule))
        // Exact labels leave probabilities, not counts.
        let draws = exactLabel ? nil : spec.draws.map(Float.init)
        // Each window's positions, then its last row, which predicts nothing: one certain token.
        let targets = rows.flatMap { $0 + [SparseTarget(ids: [0], values: [draws ?? 1], tailMass: 0, labelLogProbability: 0)] }
        let crossEntropy = targets.reduce(0.0) { $0 - Double($1.labelLogProbability) }
        let n = targets.count
        var buffers = staging.take(count: n * k)
        buffers.ids.withUnsafeMutableBufferPointer { ids in
            buffers.values.withUnsafeMutableBufferPointer { values in
                let (ids, values) = (ids, values)
                // Rows are independent: each fills its own k slots.
                parallelChunks(n, grain: 16) { chunk in
                    for row in chunk {
                        fill(row: targets[row], k: k, draws: draws,
                             ids: UnsafeMutableBufferPointer(rebasing: ids[row * k..<(row + 1) * k]),
                             values: UnsafeMutableBufferPointer(rebasing: values[row * k..<(row + 1) * k]))
                    }
                }
            }
        }
        return AssembledTargets(rows: n, k: k, buffers: buffers, crossEntropy: Float(crossEntropy / Double(windows.count * (seqLen - 1))))
    }

    /// One row of ``topK(windows:tokens:)``: `target`'s ids and log-probabilities in the first slots of
    /// `ids` and `values` (k each), the rest padded as the tail says.
    private func fill(row target: SparseTarget, k: Int, draws: Float?, ids: UnsafeMutableBufferPointer<Float>, values: UnsafeMutableBufferPointer<Float>) {
        let listed = target.ids.count
        for (slot, id) in target.ids.enumerated() { ids[slot] = Float(id) }
        if let tailPrior, let draws {
            for (slot, value) in tailPrior.drawnTarget(target, draws: draws).enumerated() { values[slot] = value }
        } else if let draws {
            // Drawn targets under a bucket tail: Good-Turing's estimate of the mass no draw reached
            // (the ids drawn once, over N) becomes the bucket, the counts share the rest; where every
            // draw is distinct the estimate says 1, and the drawn ids keep 1 / N.
            let listedShare = tail == .bucket ? 1 - min(Float(target.values.filter { $0 == 1 }.count), draws - 1) / draws : 1
            for (slot, count) in target.values.enumerated() {
                if listedShare == 1, let whole = Int(exactly: count), logCountShare.indices.contains(whole) {
                    values[slot] = logCountShare[whole]
                } else {
                    values[slot] = logf(count / draws * listedShare)  // log(count / N), times the bucket's share
                }
            }
        } else {
            for (slot, probability) in target.values.enumerated() { values[slot] = logf(probability) }
        }
        guard tail == .uniform else {
            for slot in listed..<k { (ids[slot], values[slot]) = (-1, -.infinity) }
            return
        }
        // The uniform tail at ids the row does not list, with the share those ids get anyway.
        let missing = 1 - target.values.reduce(0.0) { sum, value in sum + Double(draws.map { value / $0 } ?? value) }
        let share = missing > 0 ? logf(Float(missing / Double(vocabulary - listed))) : -.infinity
        let listedIds = Set(target.ids)
        var candidate: Int32 = 0
        for slot in listed..<k {
            while listedIds.contains(candidate) { candidate += 1 }
            (ids[slot], values[slot]) = (Float(candidate), share)
            candidate += 1
        }
    }

    /// The teacher's NLL of the tokens of `windows`, from the stored label log-probabilities.
    public func likelihood(windows: [Int]) throws -> LikelihoodResult {
        try windows.reduce(LikelihoodResult()) { total, window in
            let targets = try targetsOfWindow(window)
            return total + LikelihoodResult(totalNLL: targets.reduce(0.0) { $0 - Double($1.labelLogProbability) }, tokens: targets.count)
        }
    }
}

/// A batch's targets as ``SparseTeacher`` assembles them on the host: `[rows, k]` ids and
/// log-probabilities in the first `rows * k` entries of `buffers`, and the teacher's mean cross-entropy.
private struct AssembledTargets: @unchecked Sendable {
    let rows: Int
    let k: Int
    let buffers: (ids: [Float], values: [Float])
    let crossEntropy: Float
}

/// The host arrays ``SparseTeacher`` assembles batches' `[B T, k]` ids and log-probabilities in
/// (megabytes at a few windows of sampled targets), kept for the next batches: fresh memory costs a
/// page fault per 4 KiB on first touch, which took longer than filling it. One pair per batch
/// being assembled or uploaded (two when the next step's are read ahead).
private final class HostStaging: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [(ids: [Float], values: [Float])] = []

    /// A pair of arrays of at least `count` entries each.
    func take(count: Int) -> (ids: [Float], values: [Float]) {
        let kept = lock.withLock { free.popLast() }
        guard let kept, kept.ids.count >= count else { return ([Float](repeating: 0, count: count), [Float](repeating: 0, count: count)) }
        return kept
    }

    func giveBack(_ buffers: (ids: [Float], values: [Float])) {
        lock.withLock { free.append(buffers) }
    }
}

/// Batches' targets assembled ahead of their step on a serial queue of their own (``SparseTeacher/readAhead(windowsOf:)``),
/// each taken once by the batch that asks for its windows; an error met while assembling is thrown there.
/// Each call to ``start(_:assemble:)`` is a generation (a step's batches): the previous one's may
/// still be waiting for their step, any older are dropped, so at most two steps' arrays are held.
private final class TargetsReadAhead: @unchecked Sendable {
    private final class Pending: @unchecked Sendable {
        let windows: [Int]
        let generation: Int
        let done = DispatchGroup()
        var result: Result<AssembledTargets, Error>?
        init(windows: [Int], generation: Int) { (self.windows, self.generation) = (windows, generation) }
        /// The result, once assembled.
        func wait() -> Result<AssembledTargets, Error> {
            done.wait()
            return result!
        }
    }
    /// Batches started and not yet taken, oldest first.
    private var pending: [Pending] = []
    private let lock = NSLock()
    private let queue = DispatchQueue(label: "kdgpu.cached-targets.read-ahead", qos: .userInitiated)
    private var generation = 0
    /// Where the arrays of dropped batches go back to.
    private let staging: HostStaging

    init(staging: HostStaging) {
        self.staging = staging
    }

    func start(_ batches: [(windows: [Int], tokens: [[Int32]]?)], assemble: @escaping ([Int], [[Int32]]?) throws -> AssembledTargets) {
        let (started, dropped): ([Pending], [Pending]) = lock.withLock {
            generation += 1
            let started = batches.map { Pending(windows: $0.windows, generation: generation) }
            let dropped = pending.filter { $0.generation < generation - 1 }
            pending = pending.filter { $0.generation >= generation - 1 } + started
            return (started, dropped)
        }
        for (entry, batch) in zip(started, batches) {
            entry.done.enter()
            queue.async {
                entry.result = Result { try assemble(batch.windows, batch.tokens) }
                entry.done.leave()
            }
        }
        drop(dropped)
    }

    /// The targets assembled for `windows`, waiting for them if need be; nil when none were started.
    /// Batches started before them and not taken are dropped.
    func take(windows: [Int]) -> Result<AssembledTargets, Error>? {
        let (entry, skipped): (Pending?, [Pending]) = lock.withLock {
            guard let index = pending.firstIndex(where: { $0.windows == windows }) else { return (nil, []) }
            defer { pending.removeFirst(index + 1) }
            return (pending[index], Array(pending[..<index]))
        }
        drop(skipped)
        return entry?.wait()
    }

    /// Waits for `entries` and gives their arrays back.
    private func drop(_ entries: [Pending]) {
        for entry in entries { if case .success(let targets) = entry.wait() { staging.giveBack(targets.buffers) } }
    }
}

/// The prior of the `prior` tail (``SparseTeacher``): one weight per token, made once from a cache's
/// training windows, and for drawn targets the weight `a` it takes against a position's own drawn-once ids.
public struct TailPrior: Sendable {
    /// `[V]` probabilities, summing to 1, every one positive.
    public let probabilities: [Double]
    /// `a`: the prior's weight in draws against a position's n1 drawn-once ids (drawn targets only).
    public let weight: Double

    /// A prior from per-token masses (any non-negative scale): each token's share, with every token
    /// given at least half of the smallest positive mass, so none is impossible.
    public init(masses: [Double], weight: Double) {
        precondition(!masses.isEmpty && masses.allSatisfy { $0 >= 0 && $0.isFinite } && weight >= 0)
        let floor = 0.5 * (masses.filter { $0 > 0 }.min() ?? 1)
        let floored = masses.map { max($0, floor) }
        let total = floored.reduce(0, +)
        probabilities = floored.map { $0 / total }
        self.weight = weight
    }

    /// The prior of `windows`' targets: for drawn targets how often each token was drawn exactly once
    /// at a position (the tokens that make up the mass no draw reaches, by Good-Turing's argument);
    /// for top-k and top-p targets the mass each token is listed with.
    public static func of(spec: TeacherTargetSpec, vocabulary: Int, windows: Range<Int>, weight: Double,
                          targetsOfWindow: (Int) throws -> [SparseTarget]) throws -> TailPrior {
        var masses = [Double](repeating: 0, count: vocabulary)
        for window in windows {
            for target in try targetsOfWindow(window) {
                for (id, value) in zip(target.ids, target.values) where Int(id) < vocabulary {
                    if spec.draws == nil { masses[Int(id)] += Double(value) } else if value == 1 { masses[Int(id)] += 1 }
                }
            }
        }
        return TailPrior(masses: masses, weight: weight)
    }

    /// A drawn target's log-probabilities at its ids under the prior tail: `log(c / N)` for the ids
    /// drawn twice or more, `log(n1 / N (1 + a pi_j / Z) / (n1 + a))` for the n1 drawn once, with Z
    /// the prior's mass over the tokens drawn at most once; the rest, `n1 / N a (1 - sum pi_j / Z) / (n1 + a)`
    /// summed over the drawn-once j, is left to the kernel to spread over the undrawn tokens by the prior.
    func drawnTarget(_ target: SparseTarget, draws: Float) -> [Float] {
        let n = Double(draws)
        let drawnOnce = Double(target.values.filter { $0 == 1 }.count)
        let headPrior = zip(target.ids, target.values).reduce(0.0) { sum, pair in
            pair.1 > 1 && Int(pair.0) < probabilities.count ? sum + probabilities[Int(pair.0)] : sum
        }
        let z = max(1 - headPrior, .leastNormalMagnitude)
        return zip(target.ids, target.values).map { id, count in
            guard count == 1, Int(id) < probabilities.count else { return logf(count / draws) }
            return Float(Foundation.log(drawnOnce / n * (1 + weight * probabilities[Int(id)] / z) / (drawnOnce + weight)))
        }
    }
}

extension SparseTarget {
    /// This target with its label (the token that follows) at the teacher's exact probability
    /// `p = exp(labelLogProbability)` and the other ids sharing `1 - p`, as probabilities. Drawn
    /// targets: `(1 - p) c / (N - c_label)` for each other id, since the draws that did not pick the
    /// label follow the teacher's distribution without it (unbiased as the counts are; with every draw
    /// on the label the rest is left unlisted). Top-k and top-p: the listed probabilities as stored,
    /// the label's replaced by p or added, the tail mass less p when it was not listed.
    public func withExactLabel(_ label: Int32, draws: Int?) -> SparseTarget {
        let p = min(1, expf(labelLogProbability))
        var pairs = Array(zip(ids, values))
        let at = pairs.firstIndex { $0.0 == label }
        var tail = tailMass
        if let draws {
            let others = Float(draws) - (at.map { pairs[$0].1 } ?? 0)
            pairs = pairs.filter { $0.0 != label }.map { ($0.0, others > 0 ? (1 - p) * $0.1 / others : 0) }.filter { $0.1 > 0 }
            pairs.append((label, p))
        } else if let at {
            pairs[at].1 = p
        } else {
            pairs.append((label, p))
            tail = max(0, tail - p)
        }
        return SparseTarget(ids: pairs.map(\.0), values: pairs.map(\.1), tailMass: tail, labelLogProbability: labelLogProbability)
    }
}
