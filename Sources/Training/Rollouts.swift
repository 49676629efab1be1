import Files
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
    /// [B][T] tokens (a rollout: prompt then continuation, shorter ones padded at the end) and the
    /// corpus windows they came from.
    public var batch: TrainingBatch
    /// Per sequence: the positions whose prediction of the next token counts.
    public var predicted: [Range<Int>]
    public var source: SequenceSource

    /// Corpus windows: every position that has a next token counts.
    public init(_ batch: TrainingBatch) {
        let t = batch.tokens.first?.count ?? 0
        self.init(batch, predicted: Array(repeating: 0..<max(0, t - 1), count: batch.tokens.count), source: .corpus)
    }

    init(_ batch: TrainingBatch, predicted: [Range<Int>], source: SequenceSource) {
        self.batch = batch
        self.predicted = predicted
        self.source = source
    }

    /// Sampled sequences, each a prompt (of any length) and `continuation` tokens: only the positions
    /// predicting the continuation count. Shorter sequences are padded at the end to the longest
    /// (repeating their last token): causal attention keeps the padding out of every counted position.
    /// `corpus`: the windows the prompts came from, if any.
    public init(sampled sequences: [[Int32]], continuation: Int, source: SequenceSource, corpus: TrainingBatch? = nil) {
        let t = sequences.map(\.count).max() ?? 0
        let padded = sequences.map { $0 + Array(repeating: $0.last ?? 0, count: t - $0.count) }
        self.init(TrainingBatch(tokens: padded, windows: corpus?.windows ?? [], position: corpus?.position ?? .start),
                  predicted: sequences.map { max(0, $0.count - continuation - 1)..<max(0, $0.count - 1) }, source: source)
    }

    /// Positions whose prediction counts, over every sequence.
    public var rows: Int { predicted.reduce(0) { $0 + $1.count } }

    /// Tokens of the sequences, padding left out (each ends with the token its last counted position predicts).
    public var tokens: Int { predicted.reduce(0) { $0 + $1.upperBound + 1 } }

    /// [B * T] labels: position p of sequence s predicts token p + 1 when p is in `predicted[s]`;
    /// every other position gets the ignore index -100.
    public func labels(backend: any Backend) throws -> Tensor {
        let t = batch.tokens.first?.count ?? 0
        let labels = zip(batch.tokens, predicted).flatMap { sequence, counted in
            (0..<t).map { p in counted.contains(p) ? Float(sequence[p + 1]) : -100 }
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
    /// The buffered sequences (a prompt, then its last `rolloutTokens` tokens sampled), oldest first once full: a ring whose next
    /// slot to overwrite is `nextSlot`.
    public var buffer: [[Int32]] = []
    public var nextSlot = 0
    /// The SHA-256 of the prompt file's prompts as tokenized (``Rollouts/digest(of:)``; nil: corpus
    /// prompts): a resumed run must draw from the same prompts.
    public var promptsSHA256: String?

    enum CodingKeys: String, CodingKey {
        case fraction, lastValidationNLL = "last_validation_nll", buffer, nextSlot = "next_slot", promptsSHA256 = "prompts_sha256"
    }
}

/// The sequences of each step: corpus windows, or continuations of prompts (their first
/// `promptTokens` tokens, or prompts from a file) sampled by the current student (GKD), by the
/// teacher (sequence-level KD, Kim & Rush), or replayed from a buffer of earlier student samples
/// (DistiLLM). Every draw (which source a step
/// takes, the sampled tokens, the replayed sequences) comes from a stream seeded by (seed, step,
/// micro-batch), so a resumed run, or a rank of an mpirun job, draws exactly what one uninterrupted
/// process would.
public final class Rollouts {
    public let settings: RolloutSettings
    public private(set) var state: RolloutState
    let student: StudentModel
    /// The live teacher (sequence-level KD samples from it).
    let teacher: LlamaModel?
    /// Tokenized prompts (`--prompts`) to continue instead of the corpus windows' first tokens.
    let prompts: [[Int32]]?
    /// The teacher with its matrices expanded once (``LlamaModel/expanded()``), made at its first sample.
    private var generatingTeacher: LlamaModel?
    /// The sequences sampled since the last ``takeRecords()``.
    private var records: [Rollout] = []
    /// Tokens sampled and the seconds it took, since the last ``takeRecords()``.
    private var sampled = (tokens: 0, seconds: 0.0)

    public init(settings: RolloutSettings, student: StudentModel, teacher: LlamaModel?, prompts: [[Int32]]? = nil, state: RolloutState? = nil) {
        self.settings = settings
        self.student = student
        self.teacher = teacher
        self.prompts = prompts
        self.state = state ?? RolloutState(fraction: settings.fraction, promptsSHA256: prompts.map(Self.digest(of:)))
    }

    /// The SHA-256 of tokenized prompts (each one's length, then its ids, as little-endian 32-bit integers).
    public static func digest(of prompts: [[Int32]]) -> String {
        var bytes: [UInt8] = []
        for prompt in prompts {
            for value in [Int32(prompt.count)] + prompt { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        }
        return SHA256Digest.hex(of: bytes)
    }

    /// The seed of one purpose of one step (and micro-batch): its own stream, the same on every run.
    static func seed(_ parts: UInt64...) -> UInt64 {
        parts.reduce(0x6B64_6770_755F_726F) { state, part in  // "kdgpu_ro"
            var mix = SplitMix64(seed: state ^ part)
            return mix.next()
        }
    }

    /// `prompts` (of any lengths) each continued by `tokens` tokens that `model` samples at `temperature`, in one batch.
    static func continuations(of prompts: [[Int32]], by model: LlamaModel, tokens: Int, temperature: Float, seed: UInt64) throws -> [[Int32]] {
        var generation = try Generation(model: model, prompts: prompts, capacity: (prompts.map(\.count).max() ?? 0) + tokens, seed: seed)
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

    /// The prompts of micro-batch `microBatch` of step `step`: the first `promptTokens` tokens of
    /// `corpus`'s windows, or with a prompt file, as many of its prompts drawn at random.
    func prompts(for corpus: TrainingBatch, step: Int, microBatch: Int) -> [[Int32]] {
        guard let prompts else { return corpus.tokens.map { Array($0.prefix(settings.promptTokens)) } }
        var random = SplitMix64(seed: Self.seed(settings.seed, UInt64(step), 5, UInt64(microBatch)))
        return corpus.tokens.map { _ in prompts[random.uniform(below: prompts.count)] }
    }

    /// Micro-batch `microBatch` of step `step` from `source`: `corpus` itself, or prompts each
    /// followed by `rolloutTokens` sampled tokens, whose loss counts only the positions predicting
    /// the continuation.
    public func batch(from corpus: TrainingBatch, source: SequenceSource, step: Int, microBatch: Int) throws -> StepBatch {
        let m = settings.rolloutTokens
        let sequences: [[Int32]]
        switch source {
        case .corpus:
            return StepBatch(corpus)
        case .student, .teacher:
            let model = source == .student ? try student.inferenceModel() : try expandedTeacher()
            let prompts = prompts(for: corpus, step: step, microBatch: microBatch)
            let start = DispatchTime.now().uptimeNanoseconds
            sequences = try Self.continuations(of: prompts, by: model, tokens: m, temperature: settings.temperature,
                                               seed: Self.seed(settings.seed, UInt64(step), 2, UInt64(microBatch)))
            sampled.tokens += sequences.count * m
            sampled.seconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            records += zip(prompts, sequences).map { Rollout(step: step, source: source, prompt: $0, completion: Array($1.dropFirst($0.count))) }
            if source == .student && settings.replayCapacity > 0 { remember(sequences) }
        case .replay:
            var random = SplitMix64(seed: Self.seed(settings.seed, UInt64(step), 3, UInt64(microBatch)))
            sequences = corpus.tokens.map { _ in state.buffer[random.uniform(below: state.buffer.count)] }
        }
        return StepBatch(sampled: sequences, continuation: m, source: source, corpus: corpus)
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
