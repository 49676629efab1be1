import Checkpoint
import Files
import Foundation
import GGUF
import Losses
import Models
import TeacherCache
import Tensor
import Tokenizer
import TrainingData

/// What a finished run reports.
public struct RunSummary {
    public var steps: Int
    public var teacherValidationPerplexity: Double
    public var initialStudentValidationPerplexity: Double?
    public var finalStudentValidationPerplexity: Double
    /// Paths as the user gave the run folder.
    public var exportedGGUF: String?
    public var checkpoint: String
}

/// One distillation run: the teacher (quantized, inference only, or its cached targets) teaches the
/// student (fp32, trained with AdamW) on windows of the corpus; metrics, checkpoints and the
/// exported student go to `out`. ``prepare()`` checks everything and builds the parts (the teacher
/// source, the batch sampler, the objective's feature losses, the ``Trainer`` with its parameter
/// arena and reducer, the ``RunReporter``); ``run()`` is the loop over them.
public final class DistillationRun {
    public let config: TrainingConfig
    let backend: any Backend
    let log: (String) -> Void
    let progress: (String) -> Void
    let resume: Bool
    /// Sums each step over the processes of a data-parallel job (one process: nothing to do).
    let reducer: any GradientReducer
    /// Whether this process writes (metrics, checkpoints, exports) and validates: the first rank alone.
    var writes: Bool { reducer.rank == 0 }
    /// Bytes one chunk of the fused head + loss path may take (``Trainer/headChunkBytes``).
    public var headChunkBytes = 256 << 20

    /// - Parameters:
    ///   - resume: continue from `config.out`'s checkpoint (the configuration must match it but for `steps`).
    ///   - log: lines worth keeping (validation, checkpoints, summary).
    ///   - progress: the per-step status (a terminal redraws it in place).
    ///   - reducer: the processes this one trains with (``MPIGradientReducer`` under mpirun).
    public init(config: TrainingConfig, backend: any Backend, resume: Bool, reducer: any GradientReducer = SingleProcess(),
                log: @escaping (String) -> Void, progress: @escaping (String) -> Void) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.resume = resume
        self.reducer = reducer
        self.log = log
        self.progress = progress
    }

    /// The parts of the configuration a resumed run must share with the run that wrote the checkpoint
    /// (all but the step count, the device and the folder).
    static func identity(_ config: TrainingConfig) throws -> JSONValue {
        var frozen = config
        frozen.steps = 0
        frozen.device = ""
        frozen.out = ""
        return try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(frozen))
    }

    /// Everything the loop works with, checked and built by ``prepare()``.
    struct Prepared {
        let trainer: Trainer
        var sampler: BatchSampler
        let reporter: RunReporter
        let validationBatches: [[[Int32]]]
        /// The on-policy measure's prompts ([batches][B][prompt_tokens]); empty when not measured.
        let evalPrompts: [[[Int32]]]
        let teacherNLL: LikelihoodResult
        let initialStudentPerplexity: Double?
        let startStep: Int
    }

    public func run() throws -> RunSummary {
        var prepared = try prepare()
        let (trainer, reporter) = (prepared.trainer, prepared.reporter)
        var finalNLL: LikelihoodResult?
        reporter.startLoop(at: prepared.startStep + 1)
        for step in (prepared.startStep + 1)...config.steps {
            let stepStart = DispatchTime.now().uptimeNanoseconds
            let parts: StepParts
            do {
                parts = try trainer.step(step, batches: &prepared.sampler)
            } catch let failure as StepFailure {
                throw reporter.stopped(failure.what, at: step)
            } catch let error as DistillationLossError {
                throw reporter.stopped("non-finite values in the loss: \(error)", at: step)
            }
            try reporter.stepTaken(step, parts, taidT: trainer.objective.taid?.t, seconds: Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9)
            let environment = ProcessInfo.processInfo.environment
            if let kill = environment["KDGPU_KILL_AFTER_STEP"], Int(kill) == step,
               environment["KDGPU_KILL_RANK"].map({ Int($0) == reducer.rank }) ?? true {
                // Crash testing: die here as abruptly as a killed process (no cleanup, no flush beyond the metrics
                // line); `KDGPU_KILL_RANK` picks one rank of an mpirun job.
                Foundation.kill(getpid(), SIGKILL)
            }
            let last = step == config.steps
            guard writes else { continue }  // the other ranks neither validate nor write
            if last || (config.evalEvery > 0 && step % config.evalEvery == 0) {
                let result: LikelihoodResult
                do { result = try studentLikelihood(trainer.student, prepared.validationBatches) } catch let error as DistillationLossError {
                    throw reporter.stopped("non-finite values in the validation pass: \(error)", at: step)
                }
                // A perplexity past fp64 (NLL above ~709 nats a token) is a diverged student, not a number to report.
                if !result.perplexity.isFinite {
                    throw reporter.stopped(String(format: "validation NLL %.1f a token, a perplexity of inf: the student diverged", result.meanNLL), at: step)
                }
                trainer.rollouts?.validated(nll: result.meanNLL)
                try reporter.validated(step, result, onPolicyReverseKL: try onPolicyReverseKL(trainer, prompts: prepared.evalPrompts))
                finalNLL = result
            }
            if last || (config.checkpointEvery > 0 && step % config.checkpointEvery == 0) {
                try reporter.checkpoint(step, trainer: trainer, position: prepared.sampler.position)
            }
        }
        let exported = writes ? try reporter.finish(student: trainer.student) : nil
        let final = !writes ? LikelihoodResult() : try finalNLL ?? studentLikelihood(trainer.student, prepared.validationBatches)
        return RunSummary(steps: config.steps, teacherValidationPerplexity: prepared.teacherNLL.perplexity,
                          initialStudentValidationPerplexity: prepared.initialStudentPerplexity,
                          finalStudentValidationPerplexity: final.perplexity, exportedGGUF: exported, checkpoint: reporter.checkpointShown)
    }

    /// Checks every setting against the teacher's header (no weights read yet), then the corpus and
    /// the student, then reads the teacher's weights (or opens its cache): bad input fails before
    /// the long work. Then the validation pass before training.
    func prepare() throws -> Prepared {
        let out = URL(fileURLWithPath: config.out, isDirectory: true)
        do {
            try FileChecks.requireReadableFile(config.teacher, hint: "run `make teacher` or pass --teacher FILE.gguf")
        } catch let problem as FileProblem {
            throw TrainingError.config("teacher (--teacher): \(problem)")
        }
        let teacherFile = try GGUFFile(path: config.teacher)
        let teacherConfig = try LlamaConfig(gguf: teacherFile)
        let tokenizer = try BPETokenizer(gguf: teacherFile)
        try config.check(teacher: teacherConfig)
        let prompts = try readPrompts(teacherFile: teacherFile, tokenizer: tokenizer)
        let cache = config.teacherCache.isEmpty ? nil : try openCache(teacherConfig: teacherConfig)
        do {
            if writes { try FileChecks.createFolder(out.path) }
        } catch let problem as FileProblem {
            throw TrainingError.config("out (--out): cannot create the run folder: \(problem)")
        }

        // Data.
        let corpus = try Corpus(path: config.data)
        let tokenized = try TokenCache().tokens(for: corpus, tokenizer: tokenizer)
        let dataset: TokenDataset
        do {
            dataset = try TokenDataset(tokens: tokenized.tokens, sequenceLength: config.seqLen,
                                       validationFraction: config.validationFraction, seed: config.seed)
        } catch let error as TrainingDataError {
            throw TrainingError.data("\(config.data): \(error)")
        }
        try cache?.checkCorpus(tokens: tokenized.tokens, path: config.data)
        guard dataset.trainingWindowCount >= config.batchSize, dataset.validationWindowCount >= 1 else {
            throw TrainingError.data("\(config.data): \(tokenized.tokens.count) tokens make \(dataset.windowCount) windows of \(config.seqLen); "
                                     + "need \(config.batchSize) for training plus 1 for validation: use more text, a smaller --seq-len or --batch-size")
        }
        log("kdgpu train: \(config.divergence) at T=\(config.temperature) (\(config.temperatureSchedule)), \(config.steps) steps of "
            + "\(config.batchSize * config.gradientAccumulation * reducer.worldSize) x \(config.seqLen) tokens on \(backend.name)"
            + (reducer.worldSize > 1 ? " and \(reducer.worldSize - 1) more process\(reducer.worldSize > 2 ? "es" : "")" : "")
            + (config.embeddingLrScale != 1 ? ", the token embedding at \(config.embeddingLrScale)x the learning rate" : "") + ", into \(config.out)")
        log("GEMMs: \(backend.gemmDescription); student \(config.precision == "bf16" ? "bf16 (fp32 master weights, \(config.computeRounding) rounding)" : "fp32"), "
            + "teacher \(cache == nil ? (config.teacherPrecision(on: backend) == .f32 ? "fp32" : config.teacherPrecision(on: backend).rawValue) + (config.teacherPrecision == "auto" ? " (auto)" : "") : "cached")")

        // Student: from the checkpoint, or inherited from the teacher, or fresh.
        var startStep = 0
        var position = DataPosition.start
        var objective = DistillationObjective(config: config)
        let student: StudentModel
        var checkpoint: TrainingCheckpoint?
        var savedRollouts: RolloutState?
        var studentDescription: String
        if resume {
            let saved = try TrainingCheckpoint.load(from: out)
            let differences = try Self.identity(config).differences(from: try Self.identity(Self.settings(of: saved.state.configuration, in: out)))
            guard differences.isEmpty else {
                throw TrainingError.resume("\(out.path): the checkpoint was written with a different configuration (\(differences.joined(separator: "; "))); resume with the same options or start a new --out")
            }
            guard saved.parameters.config.vocabulary == teacherConfig.vocabulary else {
                throw TrainingError.resume("\(out.path): the checkpoint's vocabulary \(saved.parameters.config.vocabulary) differs from the teacher's \(teacherConfig.vocabulary)")
            }
            guard saved.state.processes == reducer.worldSize else {
                let them = saved.state.processes == 1 ? "one process" : "\(saved.state.processes) processes (mpirun -np \(saved.state.processes))"
                throw TrainingError.resume("\(out.path): the checkpoint was written by \(them), this run has \(reducer.worldSize); each step's "
                                           + "micro-batches depend on it: resume with the same number of processes")
            }
            savedRollouts = try saved.state.rollouts.map { try JSONDecoder().decode(RolloutState.self, from: JSONEncoder().encode($0)) }
            if let savedRollouts, savedRollouts.promptsSHA256 != prompts.map(Rollouts.digest(of:)) {
                throw TrainingError.resume("\(out.path): the checkpoint's run drew from other prompts than \(config.prompts.isEmpty ? "the corpus" : config.prompts) "
                                           + "gives now (the file changed since); resume with the prompts as they were, or start a new --out")
            }
            startStep = saved.state.step
            guard startStep < config.steps else {
                throw TrainingError.resume("\(out.path): the checkpoint is at step \(startStep) already; pass a larger --steps to continue")
            }
            student = try StudentModel(parameters: saved.parameters, backend: backend)
            try Optimizer.load(student.parameters, moments: saved.moments, source: out.path)
            position = DataPosition(epoch: saved.state.dataEpoch, index: saved.state.dataIndex)
            objective = try JSONDecoder().decode(DistillationObjective.self, from: JSONEncoder().encode(saved.state.schedules))
            checkpoint = saved
            studentDescription = "resumed from \(config.out) at step \(startStep)"
        } else if !config.studentShape.isEmpty {
            let shape = try StudentShape.parse(config.studentShape)
            student = try StudentModel(parameters: LlamaParameters.random(shape, like: teacherConfig, seed: config.seed), backend: backend)
            studentDescription = "student: \(shape.blocks) fresh blocks, width \(shape.width), \(shape.heads) heads (\(shape.kvHeads) key/value), "
                + "feed-forward \(shape.feedForward), \(student.parameterCount) parameters"
        } else {
            let layers = try StudentLayers.parse(config.studentLayers, teacherLayers: teacherConfig.layers)
            student = try StudentModel(parameters: LlamaParameters(gguf: teacherFile).inheriting(blocks: layers), backend: backend)
            studentDescription = "student: \(layers.count) blocks inherited from teacher blocks \(layers.map(String.init).joined(separator: ",")), "
                + "\(student.parameterCount) parameters"
        }
        let teacherPrecision = config.teacherPrecision(on: backend)
        let rolloutSettings = RolloutSettings(config: config)
        if reducer.worldSize > 1 && (config.replayCapacity > 0 || rolloutSettings.adaptiveLossRise != nil) {
            throw TrainingError.config("replay_capacity (--replay-capacity) and on_policy_schedule adaptive (--on-policy-schedule) keep state that one "
                                       + "process (the first, which validates) decides; they do not run under mpirun yet: train them in one process")
        }
        for (key, precision) in [("teacher_precision", cache == nil ? teacherPrecision : .f32), ("precision", config.typedPrecision)]
        where precision == .bf16 {
            do { try LlamaModel.probeBF16(on: backend) } catch {
                throw TrainingError.config("\(key) (\(TrainingConfig.flag(of: key))): bf16 does not run on \(backend.name) (\(error)); use fp32")
            }
        }
        // The teacher: its targets from the cache (its weights never reach the device), or the model itself.
        let teacher: any TeacherSource
        if let cache {
            var tailPrior: TailPrior?
            if config.typedSparseTail == .prior {
                tailPrior = try TailPrior.of(spec: cache.spec, vocabulary: cache.manifest.teacher.vocabulary, windows: 0..<dataset.trainingWindowCount,
                                             weight: Double(config.tailPriorWeight), targetsOfWindow: cache.targets(ofWindow:))
            }
            var sparse = try SparseTeacher(cache: cache, tail: config.typedSparseTail, tailPrior: tailPrior, exactLabel: config.exactLabel, backend: backend)
            sparse.readsAhead = config.readsCacheAhead(on: backend)
            teacher = sparse
            logSparseTargets("teacher: cached \(cache.manifest.targets) targets from \(config.teacherCache)", spec: cache.spec,
                             trainingWindows: dataset.trainingWindowCount,
                             then: sparse.readsAhead ? "; each step's read ahead, while the step before runs" : "")
        } else {
            let stored = try LlamaModel(weights: LlamaWeights(gguf: teacherFile, backend: backend), precision: teacherPrecision)
            let model = try config.teacherModel(stored)
            if let spec = try config.sparsifiedSpec {
                teacher = SparsifiedTeacher(live: LiveTeacher(model: model), spec: spec, tail: config.typedSparseTail, exactLabel: config.exactLabel,
                                                seqLen: config.seqLen)
                logSparseTargets("teacher: live, its targets made sparse at every step as a \(spec) cache keeps them", spec: spec,
                                 trainingWindows: dataset.trainingWindowCount)
            } else {
                teacher = LiveTeacher(model: model)
            }
            let precisionName = teacherPrecision == .f32 ? "fp32" : teacherPrecision.rawValue
            log("teacher weights: " + (stored.expansionBytes == 0 ? "stored in \(precisionName) already"
                : model === stored ? "quantized, expanded at every forward"
                : "expanded once to \(precisionName) (\(formatBytes(stored.expansionBytes)))") + (config.teacherWeights == "auto" ? " (auto)" : ""))
        }
        log("data: \(tokenized.tokens.count) tokens (\(tokenized.loadedFromCache ? "cached" : "tokenized")), "
            + "\(dataset.trainingWindowCount) training and \(dataset.validationWindowCount) validation windows of \(config.seqLen)")
        log(studentDescription)
        let features = try makeFeatureLosses(student: student, teacher: teacher, teacherConfig: teacherConfig)
        let auxiliary = features.flatMap(\.parameters)
        if let saved = checkpoint?.auxiliary, !auxiliary.isEmpty {
            try Optimizer.load(auxiliary, values: saved.values, moments: saved.moments, source: out.path)
        }
        let trainer = try Trainer(config: config, student: student, teacher: teacher, features: features, objective: objective, reducer: reducer)
        if let processes = reducer as? MPIGradientReducer {
            let overlaps = try processes.overlap(config.overlapsAllReduce(on: backend))
            processes.bf16OnTheWire = config.allreduceDtype == "bf16"
            log("gradient all-reduce: " + (overlaps ? "overlapped with the backward (the head and embedding first, then each block as it finishes)"
                : config.overlapAllreduce == "off" ? "after the backward (overlap_allreduce off)"
                : !processes.world.callsFromAnyThread ? "after the backward (this MPI takes calls from one thread only)"
                : "after the backward (overlap_allreduce auto: rank 0's device computes on the host's cores)")
                + (processes.bf16OnTheWire ? ", in bf16 (allreduce_dtype bf16)" : ""))
        }
        trainer.headChunkBytes = headChunkBytes
        if rolloutSettings.samples {
            trainer.rollouts = Rollouts(settings: rolloutSettings, student: student, teacher: (teacher as? LiveTeacher)?.model, prompts: prompts,
                                        state: savedRollouts)
            let promptSource = prompts.map { "prompts of \($0.map(\.count).min()!)-\($0.map(\.count).max()!) tokens from \(config.prompts) (\($0.count), "
                + (config.chatTemplate ? "chat template" : "plain text") + ")" } ?? "\(config.promptTokens) prompt tokens"
            log("rollouts: \(promptSource) + \(config.rolloutTokens) sampled tokens at T=\(config.rolloutTemperature); "
                + "student samples with probability \(trainer.rollouts!.state.fraction)" + (config.onPolicySchedule == "adaptive" ? " (adaptive)" : "")
                + (config.replayCapacity > 0 ? ", replayed from a buffer of \(config.replayCapacity) with probability \(config.replayRatio)" : "")
                + ", else " + (config.seqKd ? "the teacher samples (sequence-level KD)" : "corpus windows"))
        }
        let sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize, position: position)
        let reporter = try RunReporter(config: config, out: out, tokenizer: GGUFMetadata.tokenizer(of: teacherFile), decode: { (try? tokenizer.decode($0)) ?? "" },
                                       resumedAt: resume ? startStep : nil, writes: writes, log: log, progress: progress)

        // Validation: the same windows before, during and after training.
        let validation = Array(dataset.validationBatches(batchSize: config.batchSize).joined().prefix(config.evalWindows))
        let validationBatches = stride(from: 0, to: validation.count, by: config.batchSize).map {
            Array(validation[$0..<min(validation.count, $0 + config.batchSize)])
        }
        var teacherNLL = LikelihoodResult()
        if writes { do {
            let windows = Array(dataset.validationWindows.prefix(validation.count))
            teacherNLL = try validationBatches.enumerated().reduce(LikelihoodResult()) { total, batch in
                let first = batch.offset * config.batchSize
                return total + (try teacher.likelihood(of: batch.element, windows: Array(windows[first..<first + batch.element.count])))
            }
        } catch let error as ModelError {
            throw TrainingError.numeric("teacher \(config.teacher): its validation pass before training gives a \(error); "
                                        + "the file's weights hold NaN or inf: use an undamaged teacher")
        } }
        let evalPrompts = stride(from: 0, to: min(config.evalRollouts, dataset.validationWindowCount), by: config.batchSize).map { first in
            (first..<min(first + config.batchSize, config.evalRollouts, dataset.validationWindowCount)).map {
                Array(dataset.window(dataset.validationWindows.lowerBound + $0).prefix(config.promptTokens))
            }
        }
        var initialStudentPerplexity: Double?
        if !resume && writes {
            let initial = try studentLikelihood(student, validationBatches)
            initialStudentPerplexity = initial.perplexity
            trainer.rollouts?.validated(nll: initial.meanNLL)
            try reporter.startingValidation(teacher: teacherNLL, student: initial, onPolicyReverseKL: try onPolicyReverseKL(trainer, prompts: evalPrompts))
        }
        return Prepared(trainer: trainer, sampler: sampler, reporter: reporter, validationBatches: validationBatches, evalPrompts: evalPrompts,
                        teacherNLL: teacherNLL, initialStudentPerplexity: initialStudentPerplexity, startStep: startStep)
    }

    /// The feature losses that are on (weight > 0), each with its block pairs, logged. They pair an
    /// inherited student's blocks with the teacher blocks they came from by default.
    func makeFeatureLosses(student: StudentModel, teacher: any TeacherSource, teacherConfig: LlamaConfig) throws -> [any FeatureLoss] {
        let inherited = config.studentShape.isEmpty ? try StudentLayers.parse(config.studentLayers, teacherLayers: teacherConfig.layers) : nil
        func pairs(_ text: String, key: String) throws -> [(student: Int, teacher: Int)] {
            try BlockPairs.parse(text, studentLayers: student.config.layers, teacherLayers: teacherConfig.layers, inherited: inherited, key: key)
        }
        var features: [any FeatureLoss] = []
        if config.lensWeight > 0, let live = teacher as? LiveTeacher {
            let lens = LogitLens(pairs: try pairs(config.lensLayers, key: "lens_layers"), weight: config.lensWeight, finalNorm: config.lensFinalNorm,
                                 loss: DistillationLoss(divergence: config.typedLensDivergence, temperature: 1, softWeight: 1, hardWeight: 0))
            features.append(LogitLensLoss(lens: lens, teacher: live.model))
            log("logit lens: weight \(config.lensWeight), \(config.lensDivergence), block pairs " + BlockPairs.describe(lens.pairs)
                + (config.lensFinalNorm ? ", after the final norm" : ", without the final norm"))
        }
        if config.attnAlignWeight > 0 {
            let alignment = try AttentionAlignment(pairs: try pairs(config.attnAlignLayers, key: "attn_align_layers"), studentHeads: student.config.heads,
                                                   teacherHeads: teacherConfig.heads, weight: config.attnAlignWeight, decay: config.attnAlignDecay,
                                                   seed: config.seed, backend: backend)
            try alignment.requireFits(batch: config.batchSize, length: config.seqLen, backend: backend)
            features.append(alignment)
            log("attention alignment: weight \(config.attnAlignWeight) (x\(config.attnAlignDecay) per epoch), student blocks "
                + alignment.studentBlocks.map(String.init).joined(separator: ",") + " (\(alignment.studentChannels) maps) to teacher blocks "
                + alignment.teacherBlocks.map(String.init).joined(separator: ",") + " (\(alignment.teacherChannels) heads); the maps take "
                + formatBytes(alignment.bytesPerMicroBatch(batch: config.batchSize, length: config.seqLen)) + " per micro-batch")
        }
        if config.hintWeight > 0 {
            let hints = try HiddenStateHints(pairs: try pairs(config.hintLayers, key: "hint_layers"), weight: config.hintWeight, kind: config.typedHintLoss,
                                             studentWidth: student.config.width, teacherWidth: teacherConfig.width, seed: config.seed, backend: backend)
            features.append(hints)
            log("hidden-state hints: weight \(config.hintWeight), \(config.hintLoss), block pairs " + BlockPairs.describe(hints.pairs)
                + (hints.projections.isEmpty ? "" : ", through learned projections \(student.config.width) -> \(teacherConfig.width)"))
        }
        return features
    }

    /// Logs where sparse targets (`spec`) come from, `source`, with the tail and label choices and
    /// `suffix`, and the note on tempering them; `trainingWindows` made the prior tail.
    func logSparseTargets(_ source: String, spec: TeacherTargetSpec, trainingWindows: Int, then suffix: String = "") {
        log(source
            + (config.typedSparseTail == .prior ? " (prior tail from the \(trainingWindows) training windows"
               + (spec.storesProbabilities ? ")" : String(format: ", %g draws against the ids drawn once)", config.tailPriorWeight))
               : spec.storesProbabilities ? " (\(config.sparseTail) tail)"
               : config.typedSparseTail == .bucket ? " (bucket tail: the mass of the ids drawn once)" : "")
            + (config.exactLabel ? ", each label at the teacher's exact probability" : "") + suffix)
        if config.temperature != 1 || config.typedTemperatureSchedule != .constant {
            log("note: sparse targets tempered as p^(1/T) with T != 1 give the unlisted tokens too little; "
                + "measured here they trained worse than at T = 1 (README, offline teacher); RS-KD uses T = 1")
        }
    }

    /// The teacher cache of `teacher_cache`, checked against the settings and the teacher file:
    /// the same windowing, a tail the targets have, a divergence they keep finite, the teacher's
    /// SHA-256 (the corpus is checked once tokenized).
    func openCache(teacherConfig: LlamaConfig) throws -> TeacherCache {
        let key = "teacher_cache (--teacher-cache)"
        let cache: TeacherCache
        do { cache = try TeacherCache(folder: config.teacherCache) } catch { throw TrainingError.config("\(key): \(error)") }
        let manifest = cache.manifest
        guard manifest.seqLen == config.seqLen else {
            throw TrainingError.config("\(key): \(config.teacherCache) holds windows of \(manifest.seqLen) tokens; train with --seq-len \(manifest.seqLen) or build a cache of \(config.seqLen)")
        }
        try config.checkSettings(forSparseTargets: cache.spec)
        guard manifest.teacher.vocabulary == teacherConfig.vocabulary,
              try SHA256Digest.file(at: config.teacher) == manifest.teacher.sha256 else {
            throw TrainingError.config("\(key): \(config.teacherCache) was made by the teacher \(manifest.teacher.path) (sha256 \(manifest.teacher.sha256.prefix(12))), "
                                       + "not \(config.teacher); pass that teacher with --teacher or build a cache of this one")
        }
        return cache
    }

    /// The tokenized prompts of `--prompts` (nil without it), plain or through the teacher's chat
    /// template, each checked to leave room for its continuation in a window.
    func readPrompts(teacherFile: GGUFFile, tokenizer: BPETokenizer) throws -> [[Int32]]? {
        guard !config.prompts.isEmpty else { return nil }
        var template: ChatTemplate?
        if config.chatTemplate {
            do { template = try ChatTemplate(gguf: teacherFile) } catch {
                throw TrainingError.config("chat_template (--chat-template): \(error); write the prompts as plain text and drop --chat-template")
            }
        }
        do {
            return try PromptFile(path: config.prompts).tokenized(with: tokenizer, chatTemplate: template, templateOption: "--chat-template true", maxTokens: config.seqLen - config.rolloutTokens,
                                                                 limitReason: "--seq-len \(config.seqLen) less --rollout-tokens \(config.rolloutTokens)")
        } catch let error as TrainingDataError {
            throw TrainingError.data("prompts (--prompts): \(error)")
        }
    }

    /// The on-policy measure: the teacher's reverse KL, KL(q || p) at T = 1, averaged over the
    /// positions predicting the continuations the student samples (the same seed at every
    /// validation) after `prompts`; nil without prompts.
    func onPolicyReverseKL(_ trainer: Trainer, prompts: [[[Int32]]]) throws -> Double? {
        guard !prompts.isEmpty, let teacher = trainer.teacher as? LiveTeacher else { return nil }
        let student = trainer.student
        let measure = FusedLinearDistillationLoss(loss: DistillationLoss(divergence: .reverseKL, temperature: 1, softWeight: 1, hardWeight: 0,
                                                                         reduction: .sum, forwardOnly: true), chunkBudgetBytes: headChunkBytes)
        var (total, rows) = (0.0, 0)
        for (i, batch) in prompts.enumerated() {
            let sequences = try Rollouts.continuations(of: batch, by: try student.inferenceModel(), tokens: config.rolloutTokens,
                                                       temperature: config.rolloutTemperature, seed: Rollouts.seed(config.seed, 0, 4, UInt64(i)))
            let sampled = StepBatch(sampled: sequences, continuation: config.rolloutTokens, source: .student)
            let targets = try teacher.targets(for: sampled.batch, needs: TeacherNeeds())
            let hidden = try student.forward(sampled.batch.tokens)
            student.discardSavedActivations()
            let result = try measure(hidden: hidden, weight: student.outputWeight.value, teacher: targets.output, labels: try sampled.labels(backend: backend))
            (total, rows) = (total + Double(result.loss), rows + result.validRows)
        }
        return total / Double(max(1, rows))
    }

    /// The student's NLL of the validation windows.
    func studentLikelihood(_ student: StudentModel, _ batches: [[[Int32]]]) throws -> LikelihoodResult {
        var total = LikelihoodResult()
        for tokens in batches {
            let hidden = try student.forward(tokens)
            student.discardSavedActivations()
            let crossEntropy = DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, reduction: .sum, forwardOnly: true)
            let result = try FusedLinearDistillationLoss(loss: crossEntropy, chunkBudgetBytes: headChunkBytes)(
                hidden: hidden, weight: student.outputWeight.value, teacher: .none, labels: try StepBatch(TrainingBatch(tokens: tokens, windows: [], position: .start)).labels(backend: backend))
            total = total + LikelihoodResult(totalNLL: Double(result.loss), tokens: result.validRows)
        }
        return total
    }
}

/// `#########...............`: 24 characters, filled in proportion to `done / total`.
public func progressBar(_ done: Int, of total: Int) -> String {
    let width = 24
    let filled = total > 0 ? min(width, Int(Double(width) * Double(done) / Double(total))) : width
    return String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
}

/// `4m07s`, `1h05m`; `?` for a time not known yet.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : String(format: "%dm%02ds", s / 60, s % 60)
}

extension DistillationRun {
    /// The settings a checkpoint kept (see ``TrainingConfig/settings(_:)`` for keys it lacks);
    /// `source` names the checkpoint in the error.
    static func settings(of configuration: JSONValue, in source: URL) throws -> TrainingConfig {
        guard let object = try? JSONSerialization.jsonObject(with: JSONEncoder().encode(configuration)) as? [String: Any],
              let config = try? TrainingConfig.settings(object) else {
            throw TrainingError.resume("\(source.path): the checkpoint's settings are unreadable or from another version; start a new run")
        }
        return config
    }

    /// The settings of the run whose checkpoint is in `directory` (for `--resume`).
    public static func savedConfiguration(in directory: URL) throws -> TrainingConfig {
        guard let folder = TrainingCheckpoint.currentFolder(in: directory) else {
            throw TrainingError.resume("\(directory.path): no checkpoint to resume (expected \(directory.appendingPathComponent(TrainingCheckpoint.currentLinkName).path))")
        }
        let stateFile = folder.appendingPathComponent(TrainingCheckpoint.stateFileName)
        let state = try TrainingCheckpoint.readState(stateFile)
        var settings = try settings(of: state.configuration, in: stateFile)
        // Checkpoints that kept no device continue on the default one (unless --device names one).
        if settings.device.isEmpty { settings.device = TrainingConfig().device }
        return settings
    }
}
