import Foundation
import Losses
import Models
import Tensor
import TrainingData

/// Where a run's micro-batches come from, in order; its position is what a checkpoint keeps.
public protocol BatchSource {
    mutating func next() -> TrainingBatch
    var position: DataPosition { get }
    /// The next `count` batches ``next()`` would give, without moving.
    func upcoming(_ count: Int) -> [TrainingBatch]
}

extension BatchSampler: BatchSource {}

/// Sums the step's gradients (the arena's one flat buffer) and its reported values over the
/// processes that took part in it. One process: nothing to do. A multi-process reducer (MPI)
/// all-reduces them, so every process takes the identical update.
public protocol GradientReducer {
    /// Processes taking part (1 for a single process), and this one's number among them.
    var worldSize: Int { get }
    var rank: Int { get }
    /// Whether the step tells the reducer of each span of the arena the backward has finished
    /// (``gradientsFinished(_:elements:)``), so it can sum them while the backward goes on.
    var overlapsBackward: Bool { get }
    /// The backward of the step's last micro-batch has enqueued the last op writing `elements` of
    /// the arena `gradients`.
    func gradientsFinished(_ gradients: Tensor, elements: Range<Int>) throws
    /// Sums `gradients` and `parts`' summed values (``StepParts/summedValues``) over the processes,
    /// with the embedding rows the last backward left out (`late`, when it told of finished spans)
    /// added to the sum.
    func reduce(gradients: Tensor, parts: inout StepParts, late: EmbeddingRows?) throws
}

/// The one-process reducer.
public struct SingleProcess: GradientReducer {
    public init() {}
    public var worldSize: Int { 1 }
    public var rank: Int { 0 }
    public var overlapsBackward: Bool { false }
    public func gradientsFinished(_ gradients: Tensor, elements: Range<Int>) throws {}
    public func reduce(gradients: Tensor, parts: inout StepParts, late: EmbeddingRows?) throws { try late?.add() }
}

/// The values of one step, as metrics and the progress line report them.
public struct StepParts {
    /// The distillation loss (soft + hard), averaged over the step's rows.
    public var loss: Float = 0
    public var crossEntropy: Float = 0
    /// The soft divergence alone (before its weight).
    public var divergence: Float = 0
    public var teacherCrossEntropy: Float = 0
    public var gradientNorm: Float = 0
    /// Each feature loss's value (before its weight) and weight, in the trainer's order.
    public var features: [(name: String, value: Float, weight: Float, varies: Bool)] = []
    /// What the step minimized: the distillation loss plus every weighted feature loss.
    public var total: Float = 0
    public var learningRate: Float = 0
    public var temperature: Float = 0
    /// Where the step's sequences came from, the ones this process sampled, and how fast.
    public var source = SequenceSource.corpus
    public var rollouts: [Rollout] = []
    public var rolloutTokensPerSecond: Double?
    /// Tokens the step's sequences hold (padding left out), over every process.
    public var tokens: Float = 0
    /// Under mpirun: seconds the step waited for the all-reduce once its own device work was done.
    public var allReduceSeconds: Double?

    public init() {}

    /// The values each process sums its share of: the loss, the cross-entropies and the feature
    /// losses (each already weighted by its rows' share of the step), and the tokens.
    public var summedValues: [Float] {
        get { [loss, crossEntropy, teacherCrossEntropy, tokens] + features.map(\.value) }
        set {
            (loss, crossEntropy, teacherCrossEntropy, tokens) = (newValue[0], newValue[1], newValue[2], newValue[3])
            for i in features.indices { features[i].value = newValue[4 + i] }
        }
    }

    /// The values derived from the summed ones: the divergence alone and the whole objective.
    mutating func derive(softWeight: Float, hardWeight: Float) {
        divergence = softWeight > 0 ? (loss - hardWeight * crossEntropy) / softWeight : 0
        total = features.reduce(loss) { $0 + $1.weight * $1.value }
    }

    /// The first value that is NaN or infinite, named.
    public var firstNonFinite: (name: String, value: Float)? {
        let named = [("total loss", total), ("loss", loss), ("cross-entropy", crossEntropy)]
            + features.map { ("\($0.name) loss", $0.value) } + [("gradient norm", gradientNorm)]
        return named.first { !$0.1.isFinite }
    }
}

/// Why a step could not be taken (the run adds where its last checkpoint is).
public struct StepFailure: Error {
    public let step: Int
    public let what: String
}

/// One optimizer step, the same for `kdgpu train` and `kdgpu bench train`: for each micro-batch the
/// teacher's targets, the student's forward, both LM heads and the loss chunk by chunk
/// (``FusedLinearDistillationLoss``: no [N, V] logits), the feature losses and the student's
/// backward; then the reducer, the gradient norm, clipping, AdamW over the parameter arena and the
/// objective's schedules.
public final class Trainer {
    public let student: StudentModel
    public let teacher: any TeacherSource
    public let features: [any FeatureLoss]
    public let arena: ParameterArena
    public let reducer: any GradientReducer
    public private(set) var objective: DistillationObjective
    let schedule: LearningRateSchedule
    let optimizer: (beta1: Float, beta2: Float, weightDecay: Float, clip: Float)
    let microBatches: Int
    /// On-policy, sequence-level or replayed sequences (nil: corpus windows alone).
    public var rollouts: Rollouts?
    /// Bytes one chunk of the fused head + loss path may take (student and teacher logits of its
    /// rows): peak memory stops growing with N x V past this many rows' worth.
    public var headChunkBytes = 256 << 20

    /// Takes the student's and the feature losses' parameters into one arena (after any values or
    /// moments a resumed run loads into them).
    public init(config: TrainingConfig, student: StudentModel, teacher: any TeacherSource, features: [any FeatureLoss],
                objective: DistillationObjective, reducer: any GradientReducer = SingleProcess()) throws {
        self.student = student
        self.teacher = teacher
        self.features = features
        self.objective = objective
        self.reducer = reducer
        // Mixed precision: the matrices get bf16 compute copies, which the student's GEMMs read (the
        // feature modules read their fp32 values).
        arena = try ParameterArena(student.parameters + features.flatMap(\.parameters), backend: student.backend,
                                   computeType: config.typedPrecision,
                                   stochasticRoundingSeed: config.computeRounding == "stochastic" ? config.seed : nil,
                                   learningRateScales: Dictionary(uniqueKeysWithValues: Set([student.tokenEmbedding.name, student.outputWeight.name])
                                       .map { ($0, config.embeddingLrScale) }))
        schedule = LearningRateSchedule(peak: config.lr, warmupSteps: config.warmupSteps, totalSteps: config.steps,
                                        minimumFraction: config.minLrFraction)
        optimizer = (config.beta1, config.beta2, config.weightDecay, config.gradClip)
        microBatches = config.gradientAccumulation
    }

    /// Whether a step asks the teacher for targets: cross-entropy alone (soft weight 0, no feature
    /// loss) asks nothing of it.
    var asksTeacher: Bool { objective.loss.effectiveSoftWeight != 0 || !features.isEmpty }

    /// Optimizer step `step` (1-based) on the next `gradient_accumulation` x world size micro-batches
    /// of `batches`: every process draws them all and takes micro-batch i when i mod world size is
    /// its rank, so N processes step exactly as one with N times the gradient accumulation. With
    /// ``rollouts`` the step may train on sampled continuations of those micro-batches' prompts.
    public func step(_ step: Int, batches: inout some BatchSource) throws -> StepParts {
        let epoch = batches.position.epoch
        let all = (0..<microBatches * reducer.worldSize).map { _ in batches.next() }
        let source = rollouts?.source(step: step) ?? .corpus
        let mine = try stride(from: reducer.rank, to: all.count, by: reducer.worldSize).map { i in
            try rollouts?.batch(from: all[i], source: source, step: step, microBatch: i) ?? StepBatch(all[i])
        }
        // The next step's targets assembled on the host while the device runs this one (a teacher
        // cache on a GPU). Rollouts choose their sequences as they go, so they read nothing ahead.
        if teacher.readsAhead, rollouts == nil, asksTeacher {
            let upcoming = batches.upcoming(all.count)
            teacher.readAhead(stride(from: reducer.rank, to: upcoming.count, by: reducer.worldSize).map { upcoming[$0] })
        }
        // Every process's micro-batches have as many rows (and the same source) as this one's: all
        // of a window's predictions, or rollout_tokens of each sampled sequence.
        let accumulated = try accumulateGradients(batches: mine, totalRows: mine.reduce(0) { $0 + $1.rows } * reducer.worldSize, epoch: epoch,
                                                  reportingFinishedSpans: reducer.overlapsBackward)
        var parts = accumulated.parts
        parts.source = source
        parts.tokens = Float(mine.reduce(0) { $0 + $1.tokens })
        (parts.rollouts, parts.rolloutTokensPerSecond) = rollouts?.takeRecords() ?? ([], nil)
        try reducer.reduce(gradients: arena.gradients, parts: &parts, late: accumulated.late)
        parts.derive(softWeight: objective.loss.effectiveSoftWeight, hardWeight: objective.loss.hardWeight)
        let backend = student.backend
        parts.gradientNorm = try Profiling.measure("optimizer", on: backend) { try arena.gradientNorm() }
        if let (name, value) = parts.firstNonFinite { throw StepFailure(step: step, what: "non-finite \(name) \(value)") }
        parts.learningRate = schedule.rate(at: step)
        try Profiling.measure("optimizer", on: backend) {
            try arena.update(AdamWStep(learningRate: parts.learningRate, beta1: optimizer.beta1, beta2: optimizer.beta2,
                                       weightDecay: optimizer.weightDecay, step: step),
                             gradientNorm: parts.gradientNorm, clip: optimizer.clip)
        }
        if let tensor = try Profiling.measure("optimizer", on: backend, { try arena.firstNonFinite() }) {
            throw StepFailure(step: step, what: "the update made \(tensor) non-finite (or too large for fp32)")
        }
        try Profiling.measure("optimizer", on: backend) { try arena.refreshCompute() }
        parts.temperature = objective.temperature
        objective.update(step: step, totalSteps: schedule.totalSteps, loss: parts.loss, studentCrossEntropy: parts.crossEntropy,
                         teacherCrossEntropy: parts.teacherCrossEntropy)
        return parts
    }

    /// Forward and backward of `batches`, each weighted by its share of the step's `totalRows` (by
    /// default theirs alone; the step's rows over every process); the gradients are left in the
    /// arena (zeroed first). With `reportingFinishedSpans` the last batch's backward tells the
    /// reducer of each span of the arena as it finishes (the LM head and the token embedding first,
    /// the embedding's rows of this batch left out and returned as `late`; then the blocks from the
    /// last), for the step's ``GradientReducer/reduce(gradients:parts:late:)`` to complete.
    public func accumulateGradients(batches: [StepBatch], totalRows: Int? = nil, epoch: Int,
                                    reportingFinishedSpans: Bool = false) throws -> (parts: StepParts, late: EmbeddingRows?) {
        let backend = student.backend
        try arena.zeroGradients()
        var parts = StepParts()
        var late: EmbeddingRows?
        parts.features = features.map { ($0.name, 0, $0.weight(atEpoch: epoch), $0.weightVaries) }
        var loss = objective.loss
        loss.reportCrossEntropy = true
        let fusedHead = FusedLinearDistillationLoss(loss: loss, chunkBudgetBytes: headChunkBytes)
        let totalRows = totalRows ?? batches.reduce(0) { $0 + $1.rows }
        let needs = TeacherNeeds(features: features)
        let teacherNeeded = asksTeacher
        func finished(_ parameters: [Parameter]) throws {
            for elements in arena.spans(of: parameters) { try reducer.gradientsFinished(arena.gradients, elements: elements) }
        }
        for (index, stepBatch) in batches.enumerated() {
            let last = reportingFinishedSpans && index == batches.count - 1
            let batch = stepBatch.batch
            let labels = try stepBatch.labels(backend: backend)
            let targets = teacherNeeded ? try teacher.targets(for: batch, needs: needs) : TeacherTargets(output: .none)
            let hidden = try student.forward(batch.tokens)
            let share = Float(stepBatch.rows) / Float(totalRows)
            // Both LM heads and the loss, chunk by chunk: dL/dh into hiddenGradient, dL/dW_out added.
            let hiddenGradient = try backend.tensor(shape: hidden.shape, label: "final hidden gradient")
            let result: DistillationLossResult
            if stepBatch.source == .student, rollouts?.settings.sampledReverseKL == true, case .hidden(let teacherHidden, let teacherHead) = targets.output {
                result = try sampledReverseKL(hidden: hidden, teacherHidden: teacherHidden, teacherHead: teacherHead, labels: labels, loss: loss,
                                              hiddenGradient: hiddenGradient, share: share)
            } else {
                result = try fusedHead(hidden: hidden, weight: student.outputWeight.compute, teacher: targets.output, labels: labels,
                                       gradHidden: hiddenGradient, gradWeight: student.outputWeight.gradient, gradOutput: share,
                                       teacherCrossEntropy: teacherNeeded && targets.crossEntropy == nil && objective.temperatureSchedule == .dts)
            }
            parts.loss += result.loss * share
            parts.crossEntropy += (result.crossEntropy ?? 0) * share
            parts.teacherCrossEntropy += (targets.crossEntropy ?? result.teacherCrossEntropy ?? 0) * share
            // Feature losses: gradients into the student's residual streams and attention maps.
            var hiddenGradients: [Int: Tensor] = [:], attentionGradients: [Int: Tensor] = [:]
            if !features.isEmpty, let activations = targets.activations, case .hidden(_, let teacherHead) = targets.output {
                let input = FeatureLossInput(student: student, teacher: activations, teacherHead: teacherHead, labels: labels)
                for (i, feature) in features.enumerated() {
                    let output = try feature.apply(input, epoch: epoch, gradOutput: share)
                    parts.features[i].value += output.value * share
                    for (block, gradient) in output.hiddenGradients { try hiddenGradients.accumulate(gradient, at: block) }
                    for (block, gradient) in output.attentionGradients { try attentionGradients.accumulate(gradient, at: block) }
                }
            }
            // The LM head has its last gradient from the head and the feature losses above, and so
            // has the token embedding (tied or not) but for this batch's rows, which wait for the reduce.
            if last { try finished([student.outputWeight, student.tokenEmbedding]) }
            late = try student.backward(finalHiddenGradient: hiddenGradient, hiddenGradients: hiddenGradients, attentionGradients: attentionGradients,
                                        blockFinished: { l in if last { try finished(student.blockParameters(l)) } }, deferringEmbedding: last)
        }
        parts.derive(softWeight: loss.effectiveSoftWeight, hardWeight: loss.hardWeight)
        return (parts, late)
    }
}


extension Trainer {
    /// The per-token reverse-KL estimator on the student's own samples (Thinking Machines' on-policy
    /// distillation): each sampled token x_t gets w_t = log q(x_t) - log p(x_t) as its negative reward,
    /// and the student follows the policy gradient sum_t w_t grad log q(x_t) (w_t held fixed, no
    /// discount), which in expectation over its samples is the gradient of the reverse KL. That is a
    /// cross-entropy on the sampled tokens weighted by -w_t per row (the loss kernels' row weights),
    /// plus `hard_weight` x the plain cross-entropy: one fused head pass of row weights
    /// hard - soft T^2 w_t, after two forward-only passes for log p and log q. Reported: the loss
    /// soft T^2 mean(w) + hard mean CE, so `kd_loss` is the sampled estimate of the reverse KL.
    func sampledReverseKL(hidden: Tensor, teacherHidden: Tensor, teacherHead: Tensor, labels: Tensor, loss: DistillationLoss,
                          hiddenGradient: Tensor, share: Float) throws -> DistillationLossResult {
        let logProbability = FusedLinearDistillationLoss(loss: DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, reduction: .sum,
                                                                                forwardOnly: true), chunkBudgetBytes: headChunkBytes)
        let teacherNLL = try logProbability(hidden: teacherHidden, weight: teacherHead, teacher: .none, labels: labels).rowLosses
        let studentNLL = try logProbability(hidden: hidden, weight: student.outputWeight.compute, teacher: .none, labels: labels).rowLosses
        // Rows that predict nothing (prompt positions, the last) have NLL 0 from both and are ignored by their label.
        let rewards = zip(studentNLL, teacherNLL).map { student, teacher in teacher - student }  // log q - log p
        let soft = loss.effectiveSoftWeight, hard = loss.hardWeight
        let weights = try student.backend.tensor(rewards.map { hard - soft * $0 }, shape: [rewards.count], label: "sampled reverse-KL row weights")
        let weighted = FusedLinearDistillationLoss(loss: DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1), chunkBudgetBytes: headChunkBytes)
        let result = try weighted(hidden: hidden, weight: student.outputWeight.compute, teacher: .none, labels: labels, rowMask: weights,
                                  gradHidden: hiddenGradient, gradWeight: student.outputWeight.gradient, gradOutput: share)
        let rows = Float(max(1, result.validRows))
        let reward = rewards.reduce(0, +) / rows, crossEntropy = studentNLL.reduce(0, +) / rows
        return DistillationLossResult(loss: soft * reward + hard * crossEntropy, rowLosses: result.rowLosses, validRows: result.validRows,
                                      crossEntropy: crossEntropy)
    }
}
