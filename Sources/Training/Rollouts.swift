import Foundation
import Models
import Tensor
import TrainingData

/// Where the sequences of a step come from.
public enum SequenceSource: String, Codable, Sendable {
    /// Corpus windows (off-policy distillation).
    case corpus
    /// Continuations the current student sampled from corpus prompts (on-policy, GKD).
    case student
    /// Continuations the teacher sampled (sequence-level KD).
    case teacher
    /// Student continuations of earlier steps, drawn from the replay buffer (DistiLLM).
    case replay

    /// Whether the current student sampled the batch.
    public var isOnPolicy: Bool { self == .student }
}

/// One micro-batch as the trainer takes it: its sequences and which positions the loss counts.
public struct StepBatch {
    /// [B][T] tokens (a rollout: prompt then continuation) and the corpus windows they came from.
    public var batch: TrainingBatch
    /// Positions before this one predict prompt tokens and are left out of the loss (0: every
    /// position that has a next token counts).
    public var firstPredicted: Int
    public var source: SequenceSource

    public init(_ batch: TrainingBatch, firstPredicted: Int = 0, source: SequenceSource = .corpus) {
        self.batch = batch
        self.firstPredicted = firstPredicted
        self.source = source
    }

    /// Positions whose prediction counts: B x (T - 1 - firstPredicted).
    public var rows: Int { batch.tokens.count * max(0, (batch.tokens.first?.count ?? 1) - 1 - firstPredicted) }

    /// [B * T] labels: position t of a sequence predicts token t + 1 when t >= firstPredicted; the
    /// prompt positions before it and the last position of each sequence get the ignore index -100.
    public func labels(backend: any Backend) throws -> Tensor {
        let t = batch.tokens.first?.count ?? 0
        let labels = batch.tokens.flatMap { sequence in
            (0..<t).map { p in p >= firstPredicted && p + 1 < t ? Float(sequence[p + 1]) : -100 }
        }
        return try backend.tensor(labels, shape: [batch.tokens.count * t], label: "next-token labels")
    }
}

/// A sampled sequence, as `rollouts.jsonl` records it.
public struct Rollout: Equatable {
    public var step: Int
    public var source: SequenceSource
    public var prompt: [Int32]
    public var completion: [Int32]
}

/// The settings of on-policy and sequence-level distillation (from ``TrainingConfig``).
public struct RolloutSettings: Equatable, Sendable {
    /// Probability that a step trains on fresh student samples (GKD's lmbda); the start value when adaptive.
    public var fraction: Float
    /// Steps that are not on-policy train on teacher samples instead of corpus windows.
    public var sequenceLevel: Bool
    public var promptTokens: Int
    public var rolloutTokens: Int
    public var temperature: Float
    /// The per-token reverse-KL estimator instead of the divergence on the student's fresh samples.
    public var sampledReverseKL: Bool
    /// Sequences the replay buffer keeps (0: no buffer).
    public var replayCapacity: Int
    /// Probability that a student step replays buffered sequences instead of sampling fresh ones.
    public var replayRatio: Float
    /// DistiLLM's adaptive schedule: the fraction rises by 0.1 whenever the validation NLL rises by
    /// at least this much (nil: constant).
    public var adaptiveLossRise: Float?
    public var seed: UInt64

    public init(config: TrainingConfig) {
        fraction = config.onPolicyFraction
        sequenceLevel = config.seqKd
        promptTokens = config.promptTokens
        rolloutTokens = config.rolloutTokens
        temperature = config.rolloutTemperature
        sampledReverseKL = config.onPolicyLoss == "sampled-rkl"
        replayCapacity = config.replayCapacity
        replayRatio = config.replayRatio
        adaptiveLossRise = config.onPolicySchedule == "adaptive" ? config.adaptiveLossEps : nil
        seed = config.seed
    }

    /// Whether any step samples its sequences.
    public var samples: Bool { fraction > 0 || sequenceLevel || adaptiveLossRise != nil }
}

/// What of the rollouts a checkpoint keeps: the adaptive fraction and the replay buffer.
public struct RolloutState: Codable, Equatable, Sendable {
    /// The current probability of a fresh student step.
    public var fraction: Float
    /// The validation NLL the adaptive schedule compares the next one with.
    public var lastValidationNLL: Double?
    /// The buffered sequences (prompt then continuation), oldest first once full: a ring whose next
    /// slot to overwrite is `nextSlot`.
    public var buffer: [[Int32]] = []
    public var nextSlot = 0

    enum CodingKeys: String, CodingKey {
        case fraction, lastValidationNLL = "last_validation_nll", buffer, nextSlot = "next_slot"
    }
}

/// The sequences of each step: corpus windows, or continuations of their first `promptTokens`
/// tokens sampled by the current student (GKD), by the teacher (sequence-level KD, Kim & Rush), or
/// replayed from a buffer of earlier student samples (DistiLLM). Every draw (which source a step
/// takes, the sampled tokens, the replayed sequences) comes from a stream seeded by (seed, step,
/// micro-batch), so a resumed run, or a rank of an mpirun job, draws exactly what one uninterrupted
/// process would.
public final class Rollouts {
    public let settings: RolloutSettings
    public private(set) var state: RolloutState
    let student: StudentModel
    /// The live teacher (sequence-level KD samples from it).
    let teacher: LlamaModel?
    /// The teacher with its matrices expanded once (``LlamaModel/expanded()``), made at its first sample.
    private var generatingTeacher: LlamaModel?
    /// The sequences sampled since the last ``takeRecords()``.
    private var records: [Rollout] = []
    /// Tokens sampled and the seconds it took, since the last ``takeRecords()``.
    private var sampled = (tokens: 0, seconds: 0.0)

    public init(settings: RolloutSettings, student: StudentModel, teacher: LlamaModel?, state: RolloutState? = nil) {
        self.settings = settings
        self.student = student
        self.teacher = teacher
        self.state = state ?? RolloutState(fraction: settings.fraction)
    }

    /// The seed of one purpose of one step (and micro-batch): its own stream, the same on every run.
    static func seed(_ parts: UInt64...) -> UInt64 {
        parts.reduce(0x6B64_6770_755F_726F) { state, part in  // "kdgpu_ro"
            var mix = SplitMix64(seed: state ^ part)
            return mix.next()
        }
    }

    /// `prompts` (equal lengths) each continued by `tokens` tokens that `model` samples at `temperature`, in one batch.
    static func continuations(of prompts: [[Int32]], by model: LlamaModel, tokens: Int, temperature: Float, seed: UInt64) throws -> [[Int32]] {
        var generation = try Generation(model: model, prompts: prompts, capacity: prompts[0].count + tokens, seed: seed)
        for _ in 0..<tokens { _ = try generation.step(temperature: temperature) }
        return generation.sequences
    }

    /// The source of step `step`'s sequences.
    public func source(step: Int) -> SequenceSource {
        var random = SplitMix64(seed: Self.seed(settings.seed, UInt64(step), 1))
        if state.fraction > 0 && random.unit() < Double(state.fraction) {
            let replay = settings.replayCapacity > 0 && !state.buffer.isEmpty && random.unit() < Double(settings.replayRatio)
            return replay ? .replay : .student
        }
        return settings.sequenceLevel ? .teacher : .corpus
    }

    /// Micro-batch `microBatch` of step `step` from `source`: `corpus` itself, or sequences of
    /// `promptTokens + rolloutTokens` tokens whose loss counts only the positions predicting the
    /// continuation.
    public func batch(from corpus: TrainingBatch, source: SequenceSource, step: Int, microBatch: Int) throws -> StepBatch {
        let p = settings.promptTokens, m = settings.rolloutTokens
        let sequences: [[Int32]]
        switch source {
        case .corpus:
            return StepBatch(corpus)
        case .student, .teacher:
            let model = source == .student ? try student.inferenceModel() : try expandedTeacher()
            let start = DispatchTime.now().uptimeNanoseconds
            sequences = try Self.continuations(of: corpus.tokens.map { Array($0.prefix(p)) }, by: model, tokens: m, temperature: settings.temperature,
                                               seed: Self.seed(settings.seed, UInt64(step), 2, UInt64(microBatch)))
            sampled.tokens += sequences.count * m
            sampled.seconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            records += sequences.map { Rollout(step: step, source: source, prompt: Array($0.prefix(p)), completion: Array($0.dropFirst(p))) }
            if source == .student && settings.replayCapacity > 0 { remember(sequences) }
        case .replay:
            var random = SplitMix64(seed: Self.seed(settings.seed, UInt64(step), 3, UInt64(microBatch)))
            sequences = corpus.tokens.map { _ in state.buffer[random.uniform(below: state.buffer.count)] }
        }
        return StepBatch(TrainingBatch(tokens: sequences, windows: corpus.windows, position: corpus.position), firstPredicted: p - 1, source: source)
    }

    private func expandedTeacher() throws -> LlamaModel {
        if let generatingTeacher { return generatingTeacher }
        generatingTeacher = try teacher!.expanded()
        return generatingTeacher!
    }

    /// Adds fresh student sequences to the buffer, overwriting the oldest once it is full.
    private func remember(_ sequences: [[Int32]]) {
        for sequence in sequences {
            if state.buffer.count < settings.replayCapacity {
                state.buffer.append(sequence)
            } else {
                state.buffer[state.nextSlot] = sequence
                state.nextSlot = (state.nextSlot + 1) % settings.replayCapacity
            }
        }
    }

    /// DistiLLM's adaptive schedule: a validation NLL at least `adaptiveLossRise` above the last one
    /// raises the fraction of student steps by 0.1 (to 1 at most).
    public func validated(nll: Double) {
        guard let rise = settings.adaptiveLossRise else { return }
        if let last = state.lastValidationNLL, nll - last >= Double(rise) { state.fraction = min(1, state.fraction + 0.1) }
        state.lastValidationNLL = nll
    }

    /// The sequences sampled since the last call, with their tokens per second of sampling (nil: none sampled).
    public func takeRecords() -> (rollouts: [Rollout], tokensPerSecond: Double?) {
        defer { records = []; sampled = (0, 0) }
        return (records, sampled.tokens > 0 ? Double(sampled.tokens) / sampled.seconds : nil)
    }
}
