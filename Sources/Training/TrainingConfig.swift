import Files
import GGUF
import Foundation
import Losses
import Models
import TeacherCache
import Tensor
import Yams

/// Everything a distillation run is told: from a YAML file (`--config`), then overridden by flags.
/// YAML keys are these property names in snake_case (`batch_size`, `student_layers`, ...).
public struct TrainingConfig: Codable, Equatable, Sendable {
    // Models and data.
    /// The teacher GGUF.
    public var teacher = "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
    /// A text file, a folder of .txt/.md files, or a JSONL file.
    public var data = "cache/corpus/plays"
    /// The teacher blocks the student inherits: `0,6,12,18,24,29` or `every:5`. Unset (the default)
    /// keeps the teacher's first and last three blocks: on SmolLM2-135M (0,1,2,27,28,29) its validation
    /// perplexity before training is 2.0e5, against 3.3e7 for every:5 and 8.5e5 for 0,6,12,18,24,29 (measured).
    public var studentLayers: String?
    /// A freshly initialized student instead of inherited blocks: `blocks=4,width=256,heads=4,kv_heads=2,feed_forward=768`
    /// (the vocabulary, context, RoPE and norm settings are the teacher's; embeddings are tied). Empty: inherit.
    public var studentShape = ""
    /// Where the run writes metrics, checkpoints and the exported student.
    public var out = "runs/default"
    public var device = "opencl"

    // Optimization.
    /// Total optimizer steps of the run (a resumed run continues up to it).
    public var steps = 100
    /// Windows per micro-batch.
    public var batchSize = 4
    /// Micro-batches per optimizer step (the loss is normalized by all their tokens).
    public var gradientAccumulation = 1
    public var seqLen = 128
    /// Peak learning rate, after `warmup_steps` of linear warm-up; cosine decay to `min_lr_fraction` of it.
    public var lr: Float = 1e-3
    /// 20, not fewer: at 5 the first steps at the peak rate set off gradient-norm spikes that fp32
    /// rides out and a bf16 student's rounding noise does not (README, mixed precision).
    public var warmupSteps = 20
    public var minLrFraction: Float = 0.1
    public var weightDecay: Float = 0.1
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    /// Global gradient-norm clip (0 turns it off).
    public var gradClip: Float = 1
    /// A factor on the learning rate of the token embedding and LM head (one tensor when tied, as in
    /// every student kdgpu makes); 0 freezes them.
    public var embeddingLrScale: Float = 1
    public var seed: UInt64 = 0

    // Loss.
    /// fkl, rkl, jsd(beta), sfkl(alpha), srkl(alpha), tvd, or taid.
    public var divergence = "fkl"
    public var temperature: Float = 2
    /// constant, or dts (dynamic temperature from the teacher-student cross-entropy gap).
    public var temperatureSchedule = "constant"
    /// Multiply the soft term by T^2.
    public var scaleBySquaredTemperature = true
    public var softWeight: Float = 1
    /// Weight of the hard-label cross-entropy on the next tokens.
    public var hardWeight: Float = 0.1
    /// Logit lens (DistillLens): weight of the lens loss; 0 turns it off.
    public var lensWeight: Float = 0
    /// STUDENT:TEACHER block pairs (`2:12,5:29`); empty pairs every student block with the teacher
    /// block it was inherited from, or for a fresh student the teacher block at the proportional depth.
    /// Each pair costs four head-sized GEMMs per micro-batch (`kdgpu bench lens`).
    public var lensLayers = ""
    /// Apply each model's final RMSNorm before its unembedding (the classic logit lens).
    public var lensFinalNorm = true
    /// The lens divergence (default symmetric Jensen-Shannon), at T = 1.
    public var lensDivergence = "jsd(0.5)"
    /// Attention alignment (Align-to-Distill): weight of the alignment loss; 0 turns it off.
    public var attnAlignWeight: Float = 0
    /// STUDENT:TEACHER block pairs naming the student blocks whose attention maps are mixed and the
    /// teacher blocks whose heads they are aligned to; empty: every student block and the teacher
    /// blocks it was inherited from (or at the proportional depth).
    public var attnAlignLayers = ""
    /// The alignment weight is multiplied by this once per epoch of the training data (A2D: 0.9).
    public var attnAlignDecay: Float = 0.9
    /// Hidden-state hints (FitNets / PKD): weight of the hint loss; 0 turns it off.
    public var hintWeight: Float = 0
    /// STUDENT:TEACHER block pairs of residual streams; empty: as for `lens_layers`.
    public var hintLayers = ""
    /// cosine or mse, through a learned projection when the widths differ.
    public var hintLoss = "cosine"

    // Evaluation and checkpoints.
    public var validationFraction = 0.05
    /// Validation every this many steps (and at the end); 0 only at the start and the end.
    public var evalEvery = 25
    /// Validation windows used at most.
    public var evalWindows = 16
    /// Checkpoint every this many steps (and at the end).
    public var checkpointEvery = 25
    /// Export of the final student as GGUF: f32, f16, q8_0, or none.
    public var exportGguf = "f16"
    /// A teacher cache (`kdgpu teacher-cache build`) to train from instead of running the teacher;
    /// empty: the live teacher. The teacher file is then read for its header, tokenizer and the
    /// blocks a student inherits, and must be the one the cache was made from.
    public var teacherCache = ""
    /// What cached top-k/top-p targets give the tokens they do not list: `renormalize` (nothing;
    /// the teacher renormalized over its listed tokens), `uniform` (the tail mass spread evenly
    /// over the rest of the vocabulary) or `bucket` (DistillKit's symmetric_uniform: the tail mass
    /// as one more bucket against the student's, forward KL only) or `decoupled` (LFM2's decoupled
    /// top-K objective, forward KL only). Sampled targets: `renormalize` (the counts as they are) or
    /// `bucket` (the ids drawn once, over N, as Good-Turing's estimate of the mass no draw reached:
    /// one bucket against the student's tail, the counts sharing the rest). Both: `prior` (what a
    /// position leaves unlisted spread over the vocabulary by a prior made from the cache's
    /// training windows; drawn targets share their drawn-once mass with it, `tail_prior_weight`).
    public var sparseTail = "renormalize"
    /// Drawn targets under the `prior` tail: the prior's weight, in draws, against a position's
    /// own ids drawn once (0 keeps the counts as they are; large spreads all their mass by the prior).
    public var tailPriorWeight: Float = 20
    /// Cached targets give each position's label (the token that follows) the teacher's exact
    /// probability, from the stored label log-probability, the other ids sharing the rest (drawn
    /// targets: with `sparse_tail` renormalize).
    public var exactLabel = false
    /// Cached targets: whether each step's are assembled on the host (decoded, laid out in rows)
    /// while the device runs the step before: `auto` (where the device computes off the host's cores:
    /// GPUs; a CPU device's cores would be taken from the step), `on` or `off`. The same targets either way.
    public var cacheReadAhead = "auto"

    /// Whether cached targets are read ahead on `backend`, as `cache_read_ahead` says.
    public func readsCacheAhead(on backend: any Backend) -> Bool { Self.isOn(cacheReadAhead, on: backend) }
    /// Under mpirun: whether the gradients' all-reduce overlaps the backward, each span of the arena
    /// sent as the backward finishes it: `auto` (where the device computes off the host's cores, so
    /// the host is free to communicate; rank 0's device decides for every rank), `on` or `off`. The
    /// same sums either way. Alone: no effect.
    public var overlapAllreduce = "auto"

    /// Whether the all-reduce overlaps the backward on `backend`, as `overlap_allreduce` says.
    public func overlapsAllReduce(on backend: any Backend) -> Bool { Self.isOn(overlapAllreduce, on: backend) }

    /// Under mpirun: the gradients' type between ranks, `fp32` or `bf16` (half the bytes, each rank's
    /// gradients and every partial sum rounded to bf16; for links slower than the step). Alone: no effect.
    public var allreduceDtype = "fp32"
    /// The float types a setting may name (`precision`, `allreduce_dtype`, the bench's `--precision`).
    public static let fp32OrBF16 = ["fp32", "bf16"]

    /// The values of a setting that host work may take while the device computes (`cache_read_ahead`,
    /// `overlap_allreduce`), and whether `setting` turns it on for `backend`: `auto` where the
    /// backend computes off the host's cores (``Backend/computesOffHost``), so that work is free.
    public static let autoOnOff = ["auto", "on", "off"]
    static func isOn(_ setting: String, on backend: any Backend) -> Bool {
        setting == "on" || (setting == "auto" && backend.computesOffHost)
    }
    /// Targets of a cache's form (`topk:K`, `topp:P,K`, `sampled:N`, `systematic:N`) made from the
    /// live teacher at every step, as `kdgpu teacher-cache build` would store them (the same
    /// draws for the same windows), and trained on as cached targets are; empty: the dense teacher.
    /// What a cache of that form would cost in quality, measured before building one, and beyond
    /// a cache's limits (N up to 2^20, no bytes stored).
    public var sparsifyTeacher = ""
    /// The live teacher's weight GEMMs: `fp32`, `bf16` (weights expanded straight to bf16, fp32
    /// accumulation), or `auto`: bf16 where the device's GEMMs run on bf16 instructions (its NLL
    /// moves by about 0.05%), fp32 elsewhere.
    public var teacherPrecision = "auto"
    /// The live teacher's matrices: `quantized` (kept as the file stores them; each forward expands
    /// every matrix afresh into `teacher_precision`: the least memory), `expanded` (expanded once, at
    /// the start: no expansion in the steps, 2 or 4 bytes a weight), or `auto`: expanded where that
    /// takes at most a quarter of the device's memory budget. The same values either way.
    public var teacherWeights = "auto"
    /// The student's GEMMs: `fp32`, or `bf16` (mixed precision: fp32 master weights, AdamW moments and
    /// gradients; bf16 compute copies of the matrices refreshed after each update; bf16 GEMM
    /// operands with fp32 accumulation; on CPUs and CPU OpenCL devices).
    public var precision = "fp32"
    /// How the bf16 compute copies round the fp32 master weights after each update: `stochastic`
    /// (each weight's random threshold drawn once from the seed, so updates below half a bf16 ulp
    /// move the matrices as they move the masters, on average) or `nearest` (to nearest even, as
    /// PyTorch's autocast casts weights).
    public var computeRounding = "stochastic"

    // On-policy and sequence-level distillation.
    /// Probability that a step trains on continuations the current student samples from its
    /// micro-batches' prompts (GKD's lmbda); 0: corpus windows only.
    public var onPolicyFraction: Float = 0
    /// Steps that are not on-policy train on continuations the teacher samples (sequence-level KD).
    public var seqKd = false
    /// The prompt of a sampled sequence: the first this many tokens of a corpus window.
    public var promptTokens = 32
    /// Prompts to sample from instead (empty: corpus windows): a JSON Lines file, one
    /// `{"prompt": "text"}` or `{"messages": [{"role": ..., "content": ...}, ...]}` a line, drawn at
    /// random for each sampled sequence; each prompt + `rollout_tokens` must fit `seq_len`.
    public var prompts = ""
    /// Render the prompts with the teacher's chat template (`tokenizer.chat_template`): a `prompt`
    /// as one user message, then the assistant's turn opened; needed for `messages`.
    public var chatTemplate = false
    /// Tokens sampled after each prompt; the loss counts only the positions predicting them.
    public var rolloutTokens = 64
    /// The sampling temperature of rollouts (0: greedy).
    public var rolloutTemperature: Float = 1
    /// The objective on the student's own samples: `divergence` (the configured divergence over the
    /// whole vocabulary at each sampled position, GKD) or `sampled-rkl` (the per-token reverse-KL
    /// estimator: log q(x) - log p(x) of each sampled token as its negative reward, a policy gradient
    /// that needs only the teacher's log-probability of the sampled tokens).
    public var onPolicyLoss = "divergence"
    /// DistiLLM's replay buffer: student sequences kept for reuse (0: none).
    public var replayCapacity = 0
    /// Probability that a student step replays buffered sequences instead of sampling fresh ones.
    public var replayRatio: Float = 0.5
    /// `constant`, or `adaptive` (DistiLLM): the on-policy fraction rises by 0.1 whenever the
    /// validation NLL rises by at least `adaptive_loss_eps`.
    public var onPolicySchedule = "constant"
    public var adaptiveLossEps: Float = 0.1
    /// The on-policy measure at each validation: the teacher's reverse KL on continuations the student
    /// samples from this many validation prompts (0: not measured).
    public var evalRollouts = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case teacher, data, studentLayers = "student_layers", studentShape = "student_shape", out, device, steps, batchSize = "batch_size"
        case gradientAccumulation = "gradient_accumulation", seqLen = "seq_len", lr, warmupSteps = "warmup_steps"
        case minLrFraction = "min_lr_fraction", weightDecay = "weight_decay", beta1, beta2, gradClip = "grad_clip", seed
        case embeddingLrScale = "embedding_lr_scale"
        case divergence, temperature, temperatureSchedule = "temperature_schedule"
        case scaleBySquaredTemperature = "scale_by_squared_temperature", softWeight = "soft_weight", hardWeight = "hard_weight"
        case lensWeight = "lens_weight", lensLayers = "lens_layers", lensFinalNorm = "lens_final_norm", lensDivergence = "lens_divergence"
        case attnAlignWeight = "attn_align_weight", attnAlignLayers = "attn_align_layers", attnAlignDecay = "attn_align_decay"
        case hintWeight = "hint_weight", hintLayers = "hint_layers", hintLoss = "hint_loss"
        case validationFraction = "validation_fraction", evalEvery = "eval_every", evalWindows = "eval_windows"
        case checkpointEvery = "checkpoint_every", exportGguf = "export_gguf", teacherCache = "teacher_cache", sparseTail = "sparse_tail"
        case tailPriorWeight = "tail_prior_weight", exactLabel = "exact_label", cacheReadAhead = "cache_read_ahead", sparsifyTeacher = "sparsify_teacher"
        case overlapAllreduce = "overlap_allreduce", allreduceDtype = "allreduce_dtype"
        case teacherPrecision = "teacher_precision", teacherWeights = "teacher_weights", precision, computeRounding = "compute_rounding"
        case onPolicyFraction = "on_policy_fraction", seqKd = "seq_kd", promptTokens = "prompt_tokens", prompts, chatTemplate = "chat_template"
        case rolloutTokens = "rollout_tokens"
        case rolloutTemperature = "rollout_temperature", onPolicyLoss = "on_policy_loss", replayCapacity = "replay_capacity", replayRatio = "replay_ratio"
        case onPolicySchedule = "on_policy_schedule", adaptiveLossEps = "adaptive_loss_eps", evalRollouts = "eval_rollouts"
    }

    public static var validKeys: [String] { CodingKeys.allCases.map(\.rawValue) }

    /// The command-line flag of a key (`batch_size` -> `--batch-size`); every key has one.
    public static func flag(of key: String) -> String { "--" + key.replacingOccurrences(of: "_", with: "-") }

    /// Reads a YAML file of any subset of the keys; an unknown or repeated key, a value of the
    /// wrong type or a non-finite number is an error naming the file and the key.
    public static func load(yamlFile path: String) throws -> TrainingConfig {
        do {
            try FileChecks.requireReadableFile(path)
        } catch let problem as FileProblem {
            throw TrainingError.config("config: \(problem)")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw TrainingError.config("\(path): cannot be read as UTF-8 text")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw TrainingError.config("\(path): not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
        guard let root else { throw TrainingError.config("\(path): the file is empty; write KEY: VALUE lines (keys: \(validKeys.joined(separator: ", ")))") }
        guard let mapping = root.mapping else {
            throw TrainingError.config("\(path): expected a mapping of keys to values at the top level")
        }
        var values: [String: Any] = [:]
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.string else { throw TrainingError.config("\(path): a key is not a string") }
            guard validKeys.contains(key) else {
                throw TrainingError.config("\(path): unknown key '\(key)'; valid keys: \(validKeys.joined(separator: ", "))")
            }
            guard values[key] == nil else {
                throw TrainingError.config("\(path): key '\(key)' appears more than once (line \(keyNode.mark?.line ?? 0)); keep one")
            }
            guard let scalar = valueNode.scalar else {
                throw TrainingError.config("\(path): key '\(key)' needs a single value, not a list or a mapping")
            }
            values[key] = try typedValue(scalar, key: key, file: path)
        }
        return try settings(values)
    }

    /// The kind of value a key takes.
    enum ValueKind { case text, flag, integer, unsignedInteger, number }

    /// Each key's kind, found by which JSON value the decoder accepts for it in the defaults (so it
    /// follows the property's type without a table to keep in step).
    static let valueKinds: [String: ValueKind] = {
        let defaults = try! JSONSerialization.jsonObject(with: JSONEncoder().encode(TrainingConfig())) as! [String: Any]
        func decodes(_ key: String, _ value: Any) -> Bool {
            var object = defaults
            object[key] = value
            guard let data = try? JSONSerialization.data(withJSONObject: object) else { return false }
            return (try? JSONDecoder().decode(TrainingConfig.self, from: data)) != nil
        }
        return Dictionary(uniqueKeysWithValues: validKeys.map { key -> (String, ValueKind) in
            if decodes(key, "x") { return (key, .text) }
            if decodes(key, true) { return (key, .flag) }
            if decodes(key, 0.5) { return (key, .number) }
            return (key, decodes(key, -1) ? .integer : .unsignedInteger)
        })
    }()

    /// A YAML scalar as the type of `key`'s property, or an error naming the file, the key, the
    /// value and the type it takes. Numbers given to text keys are text (`student_layers: 0`).
    static func typedValue(_ scalar: Node.Scalar, key: String, file: String) throws -> Any {
        let text = scalar.string
        func wrong(_ kind: String) -> TrainingError {
            .config("\(file): key '\(key)' is '\(text)'; it takes \(kind)")
        }
        switch valueKinds[key]! {
        case .text: return text
        case .flag:
            guard let value = Bool.construct(from: scalar) else { throw wrong("true or false") }
            return value
        case .integer, .unsignedInteger:
            guard let value = Int(text.replacingOccurrences(of: "_", with: "")) else { throw wrong("an integer") }
            if valueKinds[key] == .unsignedInteger && value < 0 { throw wrong("an integer of 0 or more") }
            return value
        case .number:
            guard let value = Double.construct(from: scalar) else { throw wrong("a number") }
            guard value.isFinite else { throw wrong("a finite number") }
            return value
        }
    }

    /// The defaults, overridden by the keys of `mapping` (a YAML file's, or a checkpoint's settings,
    /// which lack the keys added after it was written).
    public static func settings(_ mapping: [String: Any]) throws -> TrainingConfig {
        let defaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TrainingConfig())) as! [String: Any]
        return try JSONDecoder().decode(TrainingConfig.self, from: JSONSerialization.data(withJSONObject: defaults.merging(mapping) { $1 }))
    }

    /// Checks every key's value on its own (range, name, syntax) and the keys that exclude each
    /// other; what needs the models (layer numbers, context length) is checked by
    /// ``check(teacher:)``. Each error names the key and its flag, the value and what is valid.
    public func validate() throws {
        for key in CodingKeys.allCases { try check(key) }
        if !studentShape.isEmpty && studentLayers != nil {
            throw TrainingError.config("student_shape (--student-shape) and student_layers (--student-layers) exclude each other: "
                                       + "a fresh student has no inherited blocks; give one of them")
        }
    }

    /// The check of one key: the switch is exhaustive, so a new key does not compile without one.
    func check(_ key: CodingKeys) throws {
        let name = key.rawValue
        func fail(_ value: Any, _ valid: String) -> TrainingError {
            .config("\(name) (\(Self.flag(of: name))): \(value) is out of range; \(valid)")
        }
        func atLeast(_ value: Int, _ minimum: Int) throws {
            if value < minimum { throw fail(value, "use an integer of at least \(minimum)") }
        }
        func inRange(_ value: Float, _ range: String, _ valid: (Float) -> Bool) throws {
            if !value.isFinite || !valid(value) { throw fail(value, "use a number in \(range)") }
        }
        func oneOf(_ value: String, _ choices: [String]) throws {
            if !choices.contains(value) { throw TrainingError.config("\(name) (\(Self.flag(of: name))): unknown '\(value)'; use \(choices.joined(separator: ", "))") }
        }
        func nonEmpty(_ value: String) throws {
            if value.trimmingCharacters(in: .whitespaces).isEmpty { throw TrainingError.config("\(name) (\(Self.flag(of: name))): must not be empty") }
        }
        func divergenceName(_ value: String, allowingTAID: Bool) throws {
            if allowingTAID && value == "taid" { return }
            do { _ = try Divergence(parsing: value) } catch {
                throw TrainingError.config("\(name) (\(Self.flag(of: name))): \(error)" + (allowingTAID ? " (or taid)" : ""))
            }
        }
        func pairs(_ value: String) throws { _ = try BlockPairs.syntax(value, key: name) }
        switch key {
        case .teacher: try nonEmpty(teacher)
        case .data: try nonEmpty(data)
        case .studentLayers: if let studentLayers { _ = try StudentLayers.syntax(studentLayers) }
        case .studentShape: if !studentShape.isEmpty { _ = try StudentShape.parse(studentShape) }
        case .out: try nonEmpty(out)
        case .device: try nonEmpty(device)
        case .steps: try atLeast(steps, 1)
        case .batchSize: try atLeast(batchSize, 1)
        case .gradientAccumulation: try atLeast(gradientAccumulation, 1)
        case .seqLen: try atLeast(seqLen, 2)
        case .lr: try inRange(lr, "(0, inf)") { $0 > 0 }
        case .warmupSteps: try atLeast(warmupSteps, 0)
        case .minLrFraction: try inRange(minLrFraction, "[0, 1]") { (0...1).contains($0) }
        case .weightDecay: try inRange(weightDecay, "[0, 1)") { $0 >= 0 && $0 < 1 }
        case .beta1: try inRange(beta1, "[0, 1)") { $0 >= 0 && $0 < 1 }
        case .beta2: try inRange(beta2, "[0, 1)") { $0 >= 0 && $0 < 1 }
        case .gradClip: try inRange(gradClip, "[0, inf) (0 turns clipping off)") { $0 >= 0 }
        case .embeddingLrScale: try inRange(embeddingLrScale, "[0, 100] (0 freezes the embedding)") { $0 >= 0 && $0 <= 100 }
        case .seed: break  // any UInt64
        case .divergence: try divergenceName(divergence, allowingTAID: true)
        case .temperature: try inRange(temperature, "[0.01, 100] (lower ones overflow fp32 in logits / T)") { $0 >= 0.01 && $0 <= 100 }
        case .temperatureSchedule: try oneOf(temperatureSchedule, TemperatureSchedule.allCases.map(\.rawValue))
        case .scaleBySquaredTemperature: break  // a Bool
        case .softWeight: try inRange(softWeight, "[0, inf)") { $0 >= 0 }
        case .hardWeight:
            try inRange(hardWeight, "[0, inf)") { $0 >= 0 }
            if softWeight + hardWeight == 0 { throw fail("0 with soft_weight 0", "soft_weight and hard_weight must not both be 0") }
        case .lensWeight: try inRange(lensWeight, "[0, inf) (0 turns the lens off)") { $0 >= 0 }
        case .lensLayers: try pairs(lensLayers)
        case .lensFinalNorm: break
        case .lensDivergence: try divergenceName(lensDivergence, allowingTAID: false)
        case .attnAlignWeight: try inRange(attnAlignWeight, "[0, inf) (0 turns alignment off)") { $0 >= 0 }
        case .attnAlignLayers: try pairs(attnAlignLayers)
        case .attnAlignDecay: try inRange(attnAlignDecay, "(0, 1]") { $0 > 0 && $0 <= 1 }
        case .hintWeight: try inRange(hintWeight, "[0, inf) (0 turns hints off)") { $0 >= 0 }
        case .hintLayers: try pairs(hintLayers)
        case .hintLoss: try oneOf(hintLoss, HiddenStateHintLoss.Kind.allCases.map(\.rawValue))
        case .validationFraction: if !(validationFraction > 0 && validationFraction < 1) { throw fail(validationFraction, "use a number in (0, 1)") }
        case .evalEvery: try atLeast(evalEvery, 0)
        case .evalWindows: try atLeast(evalWindows, 1)
        case .checkpointEvery: try atLeast(checkpointEvery, 0)
        case .exportGguf: try oneOf(exportGguf, ["f32", "f16", "q8_0", "none"])
        case .teacherCache:
            guard !teacherCache.isEmpty else { break }
            try refuseDenseOnlySettings(key: name, keeps: "a cache does not keep")
            if RolloutSettings(config: self).samples || evalRollouts > 0 {
                throw TrainingError.config("teacher_cache (--teacher-cache): sampled sequences (--on-policy-fraction, --seq-kd, --on-policy-schedule adaptive, "
                                           + "--eval-rollouts) need the live teacher to score them, and a cache holds only corpus windows; drop --teacher-cache")
            }
        case .sparsifyTeacher:
            guard let spec = try sparsifiedSpec else { break }
            if !teacherCache.isEmpty {
                throw TrainingError.config("sparsify_teacher (--sparsify-teacher) and teacher_cache (--teacher-cache) exclude each other: "
                                           + "a cache's targets are sparse already; give one of them")
            }
            if spec.storesProbabilities && spec.maximumPairsPerPosition > Self.maximumSparsifiedK {
                throw fail(sparsifyTeacher, "give topk:K or topp:P,K with K up to \(Self.maximumSparsifiedK)")
            }
            try refuseDenseOnlySettings(key: name, keeps: "sparse targets do not carry")
            if RolloutSettings(config: self).samples || evalRollouts > 0 {
                throw TrainingError.config("sparsify_teacher (--sparsify-teacher): sampled sequences (--on-policy-fraction, --seq-kd, --on-policy-schedule adaptive, "
                                           + "--eval-rollouts) are scored by the dense teacher; drop --sparsify-teacher")
            }
            if typedSparseTail == .prior {
                throw TrainingError.config("sparse_tail (--sparse-tail): prior is made from a cache's training windows; use it with --teacher-cache, or another tail")
            }
            try checkSettings(forSparseTargets: spec)
        case .teacherPrecision:
            try oneOf(teacherPrecision, ["auto", "fp32", "bf16", "f16"])
        case .teacherWeights:
            try oneOf(teacherWeights, ["auto", "quantized", "expanded"])
        case .precision:
            try oneOf(precision, Self.fp32OrBF16)
        case .computeRounding:
            try oneOf(computeRounding, ["stochastic", "nearest"])
        case .onPolicyFraction: try inRange(onPolicyFraction, "[0, 1]") { (0...1).contains($0) }
        case .seqKd: break
        case .promptTokens: try atLeast(promptTokens, 1)
        case .prompts:
            guard !prompts.isEmpty else { break }
            guard RolloutSettings(config: self).samples else {
                throw TrainingError.config("prompts (--prompts): prompts are continued by sampled steps only; set --on-policy-fraction, --seq-kd true "
                                           + "or --on-policy-schedule adaptive, or drop --prompts")
            }
            do { try FileChecks.requireReadableFile(prompts, hint: "give a JSON Lines file of {\"prompt\": ...} or {\"messages\": [...]} lines") } catch let problem as FileProblem {
                throw TrainingError.config("prompts (--prompts): \(problem)")
            }
        case .chatTemplate:
            if chatTemplate && prompts.isEmpty {
                throw TrainingError.config("chat_template (--chat-template): the chat template renders the prompts of --prompts FILE.jsonl; pass one, or drop --chat-template")
            }
        case .rolloutTokens:
            try atLeast(rolloutTokens, 1)
            // With a prompt file each prompt is checked against the window when it is read; eval rollouts still take corpus prompts.
            if (RolloutSettings(config: self).samples && prompts.isEmpty || evalRollouts > 0) && promptTokens + rolloutTokens > seqLen {
                throw TrainingError.config("rollout_tokens (--rollout-tokens): \(promptTokens) prompt tokens (--prompt-tokens) + \(rolloutTokens) sampled "
                                           + "exceed the window of \(seqLen) (--seq-len); a sampled sequence must fit one: lower them or raise --seq-len")
            }
        case .rolloutTemperature: try inRange(rolloutTemperature, "[0, 100] (0 samples greedily)") { $0 >= 0 && $0 <= 100 }
        case .onPolicyLoss: try oneOf(onPolicyLoss, ["divergence", "sampled-rkl"])
        case .replayCapacity: try atLeast(replayCapacity, 0)
        case .replayRatio: try inRange(replayRatio, "[0, 1]") { (0...1).contains($0) }
        case .onPolicySchedule: try oneOf(onPolicySchedule, ["constant", "adaptive"])
        case .adaptiveLossEps: try inRange(adaptiveLossEps, "(0, inf)") { $0 > 0 }
        case .evalRollouts: try atLeast(evalRollouts, 0)
        case .exactLabel:
            if exactLabel && teacherCache.isEmpty && sparsifyTeacher.isEmpty {
                throw TrainingError.config("exact_label (--exact-label): it changes sparse targets; use it with --teacher-cache or --sparsify-teacher "
                                           + "(the dense teacher gives every probability exactly)")
            }
        case .tailPriorWeight: try inRange(tailPriorWeight, "[0, 1e6]") { $0 >= 0 && $0 <= 1e6 }
        case .cacheReadAhead:
            try oneOf(cacheReadAhead, Self.autoOnOff)
            if cacheReadAhead == "on" && teacherCache.isEmpty {
                throw TrainingError.config("cache_read_ahead (--cache-read-ahead): it reads a teacher cache's targets ahead; use it with --teacher-cache")
            }
        case .overlapAllreduce: try oneOf(overlapAllreduce, Self.autoOnOff)
        case .allreduceDtype: try oneOf(allreduceDtype, Self.fp32OrBF16)
        case .sparseTail:
            try oneOf(sparseTail, [MissingTeacherMass.renormalize, .uniform, .bucket, .decoupled, .prior].map(\.rawValue))
            if [MissingTeacherMass.bucket.rawValue, MissingTeacherMass.decoupled.rawValue].contains(sparseTail) && divergence != "fkl" {
                throw TrainingError.config("sparse_tail (--sparse-tail): \(sparseTail) is defined for the forward KL; use --divergence fkl or another tail")
            }
        }
    }

    /// The checks that need the teacher's shape (read from its header, before any weights): the
    /// context length, the inherited blocks, the fresh student's shape and its host memory, and
    /// every block pair.
    public func check(teacher: LlamaConfig) throws {
        if seqLen > teacher.contextLength {
            throw TrainingError.config("seq_len (--seq-len): \(seqLen) exceeds the teacher's context length \(teacher.contextLength)")
        }
        // An inherited student's blocks (the feature losses' default pairs), or nil for a fresh one.
        let inherited = studentShape.isEmpty ? try StudentLayers.parse(studentLayers, teacherLayers: teacher.layers) : nil
        let blocks: Int
        if let inherited {
            blocks = inherited.count
        } else {
            let student = try StudentShape.parse(studentShape).config(like: teacher)
            do { try student.validate(source: "student_shape (--student-shape) '\(studentShape)'") } catch {
                throw TrainingError.config("\(error)")
            }
            // Weights, gradients and both AdamW moments in fp32, and a host copy at checkpoints.
            let bytes = Double(student.parameterCount) * 4 * 5
            let memory = Double(ProcessInfo.processInfo.physicalMemory)
            if bytes > memory {
                throw TrainingError.config("student_shape (--student-shape) '\(studentShape)': \(student.parameterCount) parameters need "
                                           + String(format: "%.1f GiB for weights, gradients and AdamW state, more than this machine's %.1f GiB; use a smaller shape",
                                                    bytes / Double(1 << 30), memory / Double(1 << 30)))
            }
            blocks = student.layers
        }
        for (key, text, weight) in [("lens_layers", lensLayers, lensWeight), ("attn_align_layers", attnAlignLayers, attnAlignWeight),
                                    ("hint_layers", hintLayers, hintWeight)] where weight > 0 {
            _ = try BlockPairs.parse(text, studentLayers: blocks, teacherLayers: teacher.layers, inherited: inherited, key: key)
        }
    }
}

/// The settings that are names, as the types they name (``TrainingConfig/validate()`` refuses a
/// name these cannot read, so they are read only after it).
extension TrainingConfig {
    public var typedSparseTail: MissingTeacherMass { MissingTeacherMass(rawValue: sparseTail)! }

    /// The form of `sparsify_teacher`, nil for the dense teacher.
    public var sparsifiedSpec: TeacherTargetSpec? {
        get throws {
            guard !sparsifyTeacher.isEmpty else { return nil }
            do { return try TeacherTargetSpec(parsing: sparsifyTeacher, maximum: TeacherTargetSpec.maximumUnstored) } catch {
                throw TrainingError.config("sparsify_teacher (--sparsify-teacher): \(error)")
            }
        }
    }

    /// The most ids of `sparsify_teacher`'s top-k and top-p forms (their selection takes time in K per entry).
    static let maximumSparsifiedK = 4096

    /// The settings that sparse targets of `spec` must suit: a tail they have, exact labels with
    /// counts only as they are, a divergence they keep finite.
    func checkSettings(forSparseTargets spec: TeacherTargetSpec) throws {
        if !spec.storesProbabilities && ![.renormalize, .bucket, .prior].contains(typedSparseTail) {
            throw TrainingError.config("sparse_tail (--sparse-tail): \(sparseTail) needs a tail mass, which \(spec) targets do not have; use renormalize, bucket or prior")
        }
        if exactLabel && !spec.storesProbabilities && typedSparseTail != .renormalize {
            throw TrainingError.config("exact_label (--exact-label): with \(spec) targets it takes --sparse-tail renormalize, not \(sparseTail)")
        }
        if divergence == "rkl" && typedSparseTail != .prior && (typedSparseTail == .renormalize || !spec.storesProbabilities) {
            throw TrainingError.config("divergence (--divergence): rkl is infinite against \(spec) targets that give unlisted tokens nothing; "
                                       + "use fkl, jsd, sfkl, srkl or tvd, or --sparse-tail prior (or uniform with top-k targets)")
        }
    }

    /// What sparse targets (a cache's, or the live teacher's made sparse) cannot feed: the feature
    /// losses' activations and TAID's logits. `key` names the setting, `keeps` says why.
    func refuseDenseOnlySettings(key: String, keeps: String) throws {
        for (feature, weight) in [("lens_weight", lensWeight), ("attn_align_weight", attnAlignWeight), ("hint_weight", hintWeight)] where weight > 0 {
            throw TrainingError.config("\(key) (\(Self.flag(of: key))): \(feature) (\(Self.flag(of: feature))) needs the teacher's activations, "
                                       + "which \(keeps); train it with the dense live teacher (no \(Self.flag(of: key)))")
        }
        if divergence == "taid" {
            throw TrainingError.config("\(key) (\(Self.flag(of: key))): taid mixes the teacher's logits, which \(keeps); use another --divergence")
        }
    }
    /// The live teacher's GEMM type on `backend` (`auto` resolved).
    public func teacherPrecision(on backend: any Backend) -> DType {
        switch teacherPrecision {
        case "auto": return backend.hasFastBF16GEMMs ? .bf16 : .f32
        case "bf16": return .bf16
        case "f16": return .f16
        default: return .f32
        }
    }
    /// The live teacher as `teacher_weights` says: `stored` itself, or its matrices expanded once.
    public func teacherModel(_ stored: LlamaModel) throws -> LlamaModel {
        switch teacherWeights {
        case "quantized": return stored
        case "expanded": return try stored.expanded()
        default: return try stored.expandedWhereItFits()
        }
    }
    public var typedPrecision: DType { precision == "bf16" ? .bf16 : .f32 }
    public var typedLensDivergence: Divergence { Divergence(name: lensDivergence)! }
    public var typedHintLoss: HiddenStateHintLoss.Kind { HiddenStateHintLoss.Kind(rawValue: hintLoss)! }
    public var typedTemperatureSchedule: TemperatureSchedule { TemperatureSchedule(rawValue: temperatureSchedule)! }
    /// The GGUF matrix type of `export_gguf`; nil for `none`.
    public var typedExportType: GGMLType? { exportGguf == "none" ? nil : exportGguf == "f32" ? .f32 : exportGguf == "q8_0" ? .q8_0 : .f16 }
}

/// Errors of a training run, worded for the user.
public enum TrainingError: Error, CustomStringConvertible {
    case config(String)
    case data(String)
    case numeric(String)
    case resume(String)

    public var description: String {
        switch self {
        case .config(let message), .data(let message), .numeric(let message), .resume(let message): return message
        }
    }
}

/// `--student-layers`: which teacher blocks the student inherits.
public enum StudentLayers {
    /// The form alone: `0,6,12` (numbers) or `every:N` (a step).
    public enum Form: Equatable { case blocks([Int]), every(Int) }

    static func invalid(_ text: String, _ reason: String) -> TrainingError {
        .config("student_layers (--student-layers): '\(text)': \(reason)")
    }

    /// The syntax of `text`, without a teacher to check the numbers against.
    public static func syntax(_ text: String) throws -> Form {
        if text.hasPrefix("every:") {
            guard let step = Int(text.dropFirst("every:".count)), step >= 1 else { throw invalid(text, "write every:N with N >= 1") }
            return .every(step)
        }
        let parsed = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else { throw invalid(text, "write block numbers like 0,6,12 or every:N") }
        let layers = parsed.map { $0! }
        guard layers == layers.sorted(), Set(layers).count == layers.count, layers.first! >= 0 else {
            throw invalid(text, "blocks must be distinct, increasing and 0 or more")
        }
        return .blocks(layers)
    }

    /// The blocks of a teacher of `teacherLayers` blocks: `0,6,12`, `every:5` (blocks 0, 5, 10, ...),
    /// or nil for the first and last three (all of a teacher of 6 blocks or fewer).
    public static func parse(_ text: String?, teacherLayers: Int) throws -> [Int] {
        guard let text else {
            return teacherLayers <= 6 ? Array(0..<teacherLayers) : [0, 1, 2] + Array(teacherLayers - 3..<teacherLayers)
        }
        switch try syntax(text) {
        case .every(let step): return Array(stride(from: 0, to: teacherLayers, by: step))
        case .blocks(let layers):
            guard layers.last! < teacherLayers else { throw invalid(text, "the teacher has \(teacherLayers) blocks (0 to \(teacherLayers - 1))") }
            return layers
        }
    }
}

/// `--lens-layers`, `--hint-layers`, `--attn-align-layers`: which student block is compared with which teacher block.
public enum BlockPairs {
    /// `2:12,5:29` pairs blocks explicitly. Empty pairs every student block i with the teacher block
    /// it was inherited from (`inherited[i]`), or, for a fresh student, with the teacher block at the
    /// proportional depth, round((i + 1) * L_t / L_s) - 1.
    /// - Parameter key: the configuration key named in errors.
    public static func parse(_ text: String, studentLayers: Int, teacherLayers: Int, inherited: [Int]?, key: String) throws -> [(student: Int, teacher: Int)] {
        if text.isEmpty {
            if let inherited, inherited.count == studentLayers { return inherited.enumerated().map { ($0.offset, $0.element) } }
            return (0..<studentLayers).map { i in (i, Int((Double(i + 1) * Double(teacherLayers) / Double(studentLayers)).rounded()) - 1) }
        }
        return try syntax(text, key: key).map { pair in
            guard pair.student < studentLayers, pair.teacher < teacherLayers else {
                throw TrainingError.config("\(key) (\(TrainingConfig.flag(of: key))): '\(pair.student):\(pair.teacher)': the student has blocks 0 to \(studentLayers - 1), the teacher 0 to \(teacherLayers - 1)")
            }
            return pair
        }
    }

    /// The pairs of `text` without models to check them against (empty: the default pairing).
    public static func syntax(_ text: String, key: String) throws -> [(student: Int, teacher: Int)] {
        guard !text.isEmpty else { return [] }
        return try text.split(separator: ",", omittingEmptySubsequences: false).map { part in
            let numbers = part.split(separator: ":", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard numbers.count == 2, let s = numbers[0], let t = numbers[1], s >= 0, t >= 0 else {
                throw TrainingError.config("\(key) (\(TrainingConfig.flag(of: key))): '\(part)': write STUDENT:TEACHER block pairs like 0:3,5:29")
            }
            return (s, t)
        }
    }

    /// `3:27,4:28`, as the flags write them.
    public static func describe(_ pairs: [(student: Int, teacher: Int)]) -> String {
        pairs.map { "\($0.student):\($0.teacher)" }.joined(separator: ",")
    }
}

/// `--student-shape`: the dimensions of a freshly initialized student.
public struct StudentShape: Equatable {
    public var blocks: Int
    public var width: Int
    public var heads: Int
    public var kvHeads: Int
    public var feedForward: Int

    static let keys = ["blocks", "width", "heads", "kv_heads", "feed_forward"]

    /// The student's configuration: this shape, with the teacher's vocabulary, context, RoPE and
    /// norm settings, and tied embeddings.
    public func config(like teacher: LlamaConfig) -> LlamaConfig {
        LlamaConfig(layers: blocks, width: width, feedForward: feedForward, heads: heads, kvHeads: kvHeads,
                    vocabulary: teacher.vocabulary, contextLength: teacher.contextLength, ropeBase: teacher.ropeBase,
                    normEpsilon: teacher.normEpsilon, tiedEmbeddings: true)
    }

    /// `blocks=4,width=256,heads=4,kv_heads=2,feed_forward=768`; every key is required.
    public static func parse(_ text: String) throws -> StudentShape {
        var values: [String: Int] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, keys.contains(pair[0]), let value = Int(pair[1]), value > 0 else {
                throw TrainingError.config("student_shape (--student-shape): '\(part)' is not KEY=N with KEY one of \(keys.joined(separator: ", ")) and N > 0")
            }
            values[pair[0]] = value
        }
        guard let missing = keys.first(where: { values[$0] == nil }) else {
            return StudentShape(blocks: values["blocks"]!, width: values["width"]!, heads: values["heads"]!,
                                kvHeads: values["kv_heads"]!, feedForward: values["feed_forward"]!)
        }
        throw TrainingError.config("student_shape (--student-shape): '\(text)' lacks \(missing)=N (write \(keys.map { "\($0)=N" }.joined(separator: ",")))")
    }
}
