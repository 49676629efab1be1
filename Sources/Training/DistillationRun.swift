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

/// One distillation run: the teacher (quantized, inference only) teaches the student (fp32, trained
/// with AdamW) on windows of the corpus; metrics, checkpoints and the exported student go to `out`.
///
/// Per optimizer step, for each micro-batch: the teacher's final hidden state [N, C_t] and the
/// student's [N, C]; then both LM heads and the loss chunk by chunk of rows (``FusedLinearDistillationLoss``:
/// z = h W_outᵀ, the fused loss writes dL/dz over z, dh = dz W_out, dW_out += dzᵀ h), so no [N, V]
/// logits exist; then the student's backward. Then clip, AdamW, schedules.
public final class DistillationRun {
    public let config: TrainingConfig
    let backend: any Backend
    let log: (String) -> Void
    let progress: (String) -> Void
    let resume: Bool
    /// The logit lens, when `lens_weight` > 0 (set up by ``run()``).
    var lensContext: (lens: LogitLens, teacherNorm: Tensor, teacherEpsilon: Float)?
    /// Attention alignment, when `attn_align_weight` > 0 (set up by ``run()``).
    var alignment: AttentionAlignment?
    /// Hidden-state hints, when `hint_weight` > 0 (set up by ``run()``).
    var hints: HiddenStateHints?
    /// Bytes one chunk of the fused head + loss path may take (student and teacher logits of its
    /// rows): peak memory stops growing with N x V past this many rows' worth.
    public var headChunkBytes = 256 << 20
    /// What AdamW trains beside the student: the alignment module and the hint projections.
    var auxiliaryParameters: [Parameter] { (alignment.map { [$0.module] } ?? []) + (hints?.projections ?? []) }

    /// - Parameters:
    ///   - resume: continue from `config.out`'s checkpoint (the configuration must match it but for `steps`).
    ///   - log: lines worth keeping (validation, checkpoints, summary).
    ///   - progress: the per-step status (a terminal redraws it in place).
    public init(config: TrainingConfig, backend: any Backend, resume: Bool, log: @escaping (String) -> Void,
                progress: @escaping (String) -> Void) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.resume = resume
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

    public func run() throws -> RunSummary {
        let out = URL(fileURLWithPath: config.out, isDirectory: true)
        /// Paths in messages as the user wrote them (`runs/default/...`), not absolute.
        func shown(_ url: URL) -> String {
            url.path.hasPrefix(out.path) ? config.out + url.path.dropFirst(out.path.count) : url.path
        }
        // Every setting against the teacher's header (no weights read yet), then the corpus and the
        // student, then the teacher's weights: bad input fails before the long work.
        do {
            try FileChecks.requireReadableFile(config.teacher, hint: "run `make teacher` or pass --teacher FILE.gguf")
        } catch let problem as FileProblem {
            throw TrainingError.config("teacher (--teacher): \(problem)")
        }
        let teacherFile = try GGUFFile(path: config.teacher)
        let teacherConfig = try LlamaConfig(gguf: teacherFile)
        let tokenizer = try BPETokenizer(gguf: teacherFile)
        let tokenizerMetadata = GGUFMetadata.tokenizer(of: teacherFile)
        try config.check(teacher: teacherConfig)
        let cache = config.teacherCache.isEmpty ? nil : try openCache(teacherConfig: teacherConfig)
        do {
            try FileChecks.createFolder(out.path)
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
            + "\(config.batchSize * config.gradientAccumulation) x \(config.seqLen) tokens on \(backend.name), into \(config.out)")
        log("GEMMs: \(backend.gemmDescription)")

        // Student: from the checkpoint, or inherited from the teacher.
        let identity = try Self.identity(config)
        // The checkpoint keeps the settings (but the folder, which a resumed run names), so a resume continues on the same device.
        var storedSettings = config
        storedSettings.out = ""
        let stored = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(storedSettings))
        var startStep = 0
        var position = DataPosition.start
        var objective = DistillationObjective(config: config)
        let student: StudentModel
        var resumedAuxiliary: AuxiliaryParameters?
        var studentDescription: String
        if resume {
            let checkpoint = try TrainingCheckpoint.load(from: out)
            let saved = try Self.settings(of: checkpoint.state.configuration, in: out)
            let differences = identity.differences(from: try Self.identity(saved))
            guard differences.isEmpty else {
                throw TrainingError.resume("\(out.path): the checkpoint was written with a different configuration (\(differences.joined(separator: "; "))); resume with the same options or start a new --out")
            }
            guard checkpoint.parameters.config.vocabulary == teacherConfig.vocabulary else {
                throw TrainingError.resume("\(out.path): the checkpoint's vocabulary \(checkpoint.parameters.config.vocabulary) differs from the teacher's \(teacherConfig.vocabulary)")
            }
            startStep = checkpoint.state.step
            guard startStep < config.steps else {
                throw TrainingError.resume("\(out.path): the checkpoint is at step \(startStep) already; pass a larger --steps to continue")
            }
            student = try StudentModel(parameters: checkpoint.parameters, backend: backend)
            try Optimizer.load(student.parameters, moments: checkpoint.moments, source: out.path)
            resumedAuxiliary = checkpoint.auxiliary
            position = DataPosition(epoch: checkpoint.state.dataEpoch, index: checkpoint.state.dataIndex)
            objective = try JSONDecoder().decode(DistillationObjective.self, from: JSONEncoder().encode(checkpoint.state.schedules))
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
        // The teacher: its targets from the cache (its weights never reach the device), or the model itself.
        let teacher: any TeacherSource = try cache.map { SparseTeacher(cache: $0, tail: MissingTeacherMass(rawValue: config.sparseTail)!, backend: backend) }
            ?? LiveTeacher(model: LlamaModel(weights: LlamaWeights(gguf: teacherFile, backend: backend)))
        if let cache {
            log("teacher: cached \(cache.manifest.targets) targets from \(config.teacherCache)"
                + (cache.spec.storesProbabilities ? " (\(config.sparseTail) tail)" : ""))
            if config.temperature != 1 || config.temperatureSchedule != "constant" {
                log("note: sparse targets tempered as p^(1/T) with T != 1 give the unlisted tokens too little; "
                    + "measured here they trained worse than at T = 1 (README, offline teacher); RS-KD uses T = 1")
            }
        }
        log("data: \(tokenized.tokens.count) tokens (\(tokenized.loadedFromCache ? "cached" : "tokenized")), "
            + "\(dataset.trainingWindowCount) training and \(dataset.validationWindowCount) validation windows of \(config.seqLen)")
        log(studentDescription)
        // Feature losses pair an inherited student's blocks with the teacher blocks they came from by default.
        let inherited = config.studentShape.isEmpty ? try StudentLayers.parse(config.studentLayers, teacherLayers: teacherConfig.layers) : nil
        if config.lensWeight > 0, let live = teacher as? LiveTeacher {
            try enableLogitLens(studentLayers: student.config.layers, teacher: live.model, inherited: inherited)
            log("logit lens: weight \(config.lensWeight), \(config.lensDivergence), block pairs "
                + BlockPairs.describe(lensContext!.lens.pairs)
                + (config.lensFinalNorm ? ", after the final norm" : ", without the final norm"))
        }
        if config.attnAlignWeight > 0 {
            let pairs = try BlockPairs.parse(config.attnAlignLayers, studentLayers: student.config.layers, teacherLayers: teacherConfig.layers,
                                             inherited: inherited, key: "attn_align_layers")
            let alignment = try AttentionAlignment(pairs: pairs, studentHeads: student.config.heads,
                                                   teacherHeads: teacherConfig.heads, weight: config.attnAlignWeight, decay: config.attnAlignDecay,
                                                   seed: config.seed, backend: backend)
            try alignment.requireFits(batch: config.batchSize, length: config.seqLen, backend: backend)
            self.alignment = alignment
            log("attention alignment: weight \(config.attnAlignWeight) (x\(config.attnAlignDecay) per epoch), student blocks "
                + alignment.studentBlocks.map(String.init).joined(separator: ",") + " (\(alignment.studentChannels) maps) to teacher blocks "
                + alignment.teacherBlocks.map(String.init).joined(separator: ",") + " (\(alignment.teacherChannels) heads); the maps take "
                + formatBytes(alignment.bytesPerMicroBatch(batch: config.batchSize, length: config.seqLen)) + " per micro-batch")
        }
        if config.hintWeight > 0 {
            let pairs = try BlockPairs.parse(config.hintLayers, studentLayers: student.config.layers, teacherLayers: teacherConfig.layers,
                                             inherited: inherited, key: "hint_layers")
            hints = try HiddenStateHints(pairs: pairs, weight: config.hintWeight, kind: HiddenStateHintLoss.Kind(rawValue: config.hintLoss)!,
                                         studentWidth: student.config.width, teacherWidth: teacherConfig.width, seed: config.seed, backend: backend)
            log("hidden-state hints: weight \(config.hintWeight), \(config.hintLoss), block pairs " + BlockPairs.describe(pairs)
                + (hints!.projections.isEmpty ? "" : ", through learned projections \(student.config.width) -> \(teacherConfig.width)"))
        }
        if let resumedAuxiliary, !auxiliaryParameters.isEmpty {
            try Optimizer.load(auxiliaryParameters, values: resumedAuxiliary.values, moments: resumedAuxiliary.moments, source: out.path)
        }
        var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize, position: position)
        let metrics = try MetricsLog(url: out.appendingPathComponent("metrics.jsonl"), keepingStepsUpTo: resume ? startStep : 0)
        let validation = Array(dataset.validationBatches(batchSize: config.batchSize).joined().prefix(config.evalWindows))
        let validationBatches = stride(from: 0, to: validation.count, by: config.batchSize).map {
            Array(validation[$0..<min(validation.count, $0 + config.batchSize)])
        }

        let teacherNLL: LikelihoodResult
        do {
            let windows = Array(dataset.validationWindows.prefix(validation.count))
            teacherNLL = try validationBatches.enumerated().reduce(LikelihoodResult()) { total, batch in
                let first = batch.offset * config.batchSize
                return total + (try teacher.likelihood(of: batch.element, windows: Array(windows[first..<first + batch.element.count])))
            }
        } catch let error as ModelError {
            throw TrainingError.numeric("teacher \(config.teacher): its validation pass before training gives a \(error); "
                                        + "the file's weights hold NaN or inf: use an undamaged teacher")
        }
        var initialStudentPerplexity: Double?
        if !resume {
            let initial = try studentLikelihood(student, validationBatches)
            initialStudentPerplexity = initial.perplexity
            try metrics.append(["step": 0, "val_nll": initial.meanNLL, "val_perplexity": initial.perplexity, "teacher_val_nll": teacherNLL.meanNLL])
            log(String(format: "validation before training: teacher perplexity %.3f, student perplexity %.3f", teacherNLL.perplexity, initial.perplexity))
        }

        let schedule = LearningRateSchedule(peak: config.lr, warmupSteps: config.warmupSteps, totalSteps: config.steps,
                                            minimumFraction: config.minLrFraction)
        /// The last complete checkpoint (a resumed run's own until it writes one).
        var lastCheckpoint = resume ? TrainingCheckpoint.currentFolder(in: out) : nil
        func stopped(_ what: String, at step: Int) -> TrainingError {
            let saved = lastCheckpoint.map { "the last checkpoint, \(shown($0)), is intact (resume from \(config.out))" }
                ?? "no checkpoint was written yet (the first was due at step \(config.checkpointEvery > 0 ? min(config.checkpointEvery, config.steps) : config.steps))"
            return .numeric("step \(step): \(what); the run stopped; \(saved); try a lower --lr or a --grad-clip")
        }
        var finalNLL: LikelihoodResult?
        let runStart = DispatchTime.now().uptimeNanoseconds
        for step in (startStep + 1)...config.steps {
            let stepStart = DispatchTime.now().uptimeNanoseconds
            let temperature = objective.temperature
            let parts: StepParts
            do {
                parts = try trainingStep(student: student, teacher: teacher, sampler: &sampler, objective: objective)
            } catch let error as DistillationLossError {
                throw stopped("non-finite values in the loss: \(error)", at: step)
            }
            let named = [("total loss", parts.total), ("loss", parts.loss), ("cross-entropy", parts.crossEntropy), ("lens loss", parts.lens), ("hint loss", parts.hint),
                         ("alignment loss", parts.alignment), ("gradient norm", parts.gradientNorm)]
            if let (name, value) = named.first(where: { !$0.1.isFinite }) { throw stopped("non-finite \(name) \(value)", at: step) }
            let learningRate = schedule.rate(at: step)
            try Optimizer.update(student.parameters + auxiliaryParameters,
                                 AdamWStep(learningRate: learningRate, beta1: config.beta1, beta2: config.beta2, weightDecay: config.weightDecay, step: step),
                                 gradientNorm: parts.gradientNorm, clip: config.gradClip)
            if let tensor = try Optimizer.firstNonFinite(student.parameters + auxiliaryParameters) {
                throw stopped("the update made \(tensor) non-finite (or too large for fp32)", at: step)
            }
            objective.update(step: step, totalSteps: config.steps, loss: parts.loss, studentCrossEntropy: parts.crossEntropy,
                             teacherCrossEntropy: parts.teacherCrossEntropy)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9
            let tokensPerSecond = Double(config.batchSize * config.gradientAccumulation * config.seqLen) / seconds
            var record: [String: Any] = ["step": step, "loss": Double(parts.total), "kd_loss": Double(parts.divergence),
                                         "ce_loss": Double(parts.crossEntropy), "temperature": Double(temperature), "lr": Double(learningRate),
                                         "tokens_per_s": tokensPerSecond, "grad_norm": Double(parts.gradientNorm)]
            if let t = objective.taid?.t { record["taid_t"] = Double(t) }
            if lensContext != nil { record["lens_loss"] = Double(parts.lens) }
            if hints != nil { record["hint_loss"] = Double(parts.hint) }
            if alignment != nil {
                record["align_loss"] = Double(parts.alignment)
                record["align_weight"] = Double(parts.alignmentWeight)
            }
            try metrics.append(record)
            if let kill = ProcessInfo.processInfo.environment["KDGPU_KILL_AFTER_STEP"], Int(kill) == step {
                // Crash testing: die here as abruptly as a killed process (no cleanup, no flush beyond the metrics line).
                Foundation.kill(getpid(), SIGKILL)
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - runStart) / 1e9
            let remaining = elapsed / Double(step - startStep) * Double(config.steps - step)
            progress(progressLine(step: step, parts: parts, tokensPerSecond: tokensPerSecond, remaining: remaining))

            let last = step == config.steps
            if last || (config.evalEvery > 0 && step % config.evalEvery == 0) {
                let result: LikelihoodResult
                do { result = try studentLikelihood(student, validationBatches) } catch let error as DistillationLossError {
                    throw stopped("non-finite values in the validation pass: \(error)", at: step)
                }
                // A perplexity past fp64 (NLL above ~709 nats a token) is a diverged student, not a number to report.
                if !result.perplexity.isFinite {
                    throw stopped(String(format: "validation NLL %.1f a token, a perplexity of inf: the student diverged", result.meanNLL), at: step)
                }
                try metrics.append(["step": step, "val_nll": result.meanNLL, "val_perplexity": result.perplexity])
                log(String(format: "step %d: validation NLL %.4f, perplexity %.3f", step, result.meanNLL, result.perplexity))
                finalNLL = result
            }
            if last || (config.checkpointEvery > 0 && step % config.checkpointEvery == 0) {
                let state = TrainerState(step: step, dataEpoch: sampler.position.epoch, dataIndex: sampler.position.index, rngState: config.seed,
                                         configuration: stored, schedules: try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(objective)))
                let auxiliary = AuxiliaryParameters(values: try Optimizer.download(auxiliaryParameters),
                                                    moments: try Optimizer.downloadMoments(auxiliaryParameters))
                let saved = try TrainingCheckpoint(parameters: student.downloadParameters(), moments: Optimizer.downloadMoments(student.parameters),
                                                   state: state, auxiliary: auxiliary, tokenizer: tokenizerMetadata).save(in: out)
                lastCheckpoint = saved
                log("step \(step): checkpoint \(shown(saved))")
            }
        }

        // The loss curve, the exported student, the summary.
        let logged = try MetricsLog.read(metrics.url)
        let curve = lossCurveSVG(steps: logged.compactMap { o in (o["loss"] as? Double).map { (o["step"] as! Int, $0) } },
                                 validation: logged.compactMap { o in (o["val_nll"] as? Double).map { (o["step"] as! Int, $0) } },
                                 title: "kdgpu: \(config.divergence) distillation, T=\(config.temperature)")
        try curve.write(to: out.appendingPathComponent("loss.svg"), atomically: true, encoding: .utf8)
        var exported: URL?
        if config.exportGguf != "none" {
            let url = out.appendingPathComponent("student.gguf")
            let type: GGMLType = config.exportGguf == "f32" ? .f32 : config.exportGguf == "q8_0" ? .q8_0 : .f16
            try GGUFExport.write(student.downloadParameters(), to: url, matrixType: type, tokenizer: tokenizerMetadata, name: "kdgpu student")
            exported = url
            log("exported \(shown(url)) (\(config.exportGguf))")
        }
        let final = try finalNLL ?? studentLikelihood(student, validationBatches)
        return RunSummary(steps: config.steps, teacherValidationPerplexity: teacherNLL.perplexity,
                          initialStudentValidationPerplexity: initialStudentPerplexity, finalStudentValidationPerplexity: final.perplexity,
                          exportedGGUF: exported.map(shown), checkpoint: shown(lastCheckpoint ?? out.appendingPathComponent(TrainingCheckpoint.currentLinkName)))
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
        if !cache.spec.storesProbabilities && config.sparseTail != MissingTeacherMass.renormalize.rawValue {
            throw TrainingError.config("sparse_tail (--sparse-tail): \(config.sparseTail) needs a tail mass, which \(manifest.targets) targets do not have; use renormalize")
        }
        if config.divergence == "rkl" && (config.sparseTail == MissingTeacherMass.renormalize.rawValue || !cache.spec.storesProbabilities) {
            throw TrainingError.config("divergence (--divergence): rkl is infinite against \(manifest.targets) targets that give unlisted tokens nothing; "
                                       + "use fkl, jsd, sfkl, srkl or tvd, or --sparse-tail uniform with top-k targets")
        }
        guard manifest.teacher.vocabulary == teacherConfig.vocabulary,
              try SHA256Digest.file(at: config.teacher) == manifest.teacher.sha256 else {
            throw TrainingError.config("\(key): \(config.teacherCache) was made by the teacher \(manifest.teacher.path) (sha256 \(manifest.teacher.sha256.prefix(12))), "
                                       + "not \(config.teacher); pass that teacher with --teacher or build a cache of this one")
        }
        return cache
    }

    public struct StepParts {
        public var loss: Float = 0
        public var crossEntropy: Float = 0
        public var divergence: Float = 0
        public var teacherCrossEntropy: Float = 0
        public var gradientNorm: Float = 0
        /// The logit-lens divergence (mean over pairs, before its weight).
        public var lens: Float = 0
        /// The hint loss (mean over pairs, before its weight).
        public var hint: Float = 0
        /// The attention-alignment loss (before its weight) and its weight this step (decayed per epoch).
        public var alignment: Float = 0
        public var alignmentWeight: Float = 0
        /// What the step minimized: the distillation loss plus every weighted feature loss.
        public var total: Float = 0
    }

    /// Prepares the logit lens: its block pairs and divergence.
    func enableLogitLens(studentLayers: Int, teacher: LlamaModel, inherited: [Int]?) throws {
        let pairs = try BlockPairs.parse(config.lensLayers, studentLayers: studentLayers, teacherLayers: teacher.config.layers,
                                         inherited: inherited, key: "lens_layers")
        let loss = DistillationLoss(divergence: Divergence(name: config.lensDivergence)!, temperature: 1, softWeight: 1, hardWeight: 0)
        lensContext = (LogitLens(pairs: pairs, weight: config.lensWeight, finalNorm: config.lensFinalNorm, loss: loss),
                       teacher.weights.outputNorm, teacher.config.normEpsilon)
    }

    /// Forward and backward of every micro-batch of one step; gradients are left in the student.
    public func trainingStep(student: StudentModel, teacher: any TeacherSource, sampler: inout BatchSampler, objective: DistillationObjective) throws -> StepParts {
        try Optimizer.zeroGradients(student.parameters + auxiliaryParameters)
        var parts = StepParts()
        parts.alignmentWeight = alignment?.weight(atEpoch: sampler.position.epoch) ?? 0
        var loss = objective.loss
        loss.reportCrossEntropy = true
        let fusedHead = FusedLinearDistillationLoss(loss: loss, chunkBudgetBytes: headChunkBytes)
        let batches = (0..<config.gradientAccumulation).map { _ in sampler.next() }
        let rowsPerBatch = config.batchSize * (config.seqLen - 1)
        let totalRows = Float(rowsPerBatch * batches.count)
        let outputWeight = student.outputWeight
        let needs = TeacherNeeds(hiddenStates: lensContext != nil || hints != nil, attentionLayers: Set(alignment?.teacherBlocks ?? []))
        for batch in batches {
            let tokens = batch.tokens
            let labels = try nextTokenLabels(tokens)
            let targets = try teacher.targets(for: batch, needs: needs)
            let teacherResult = targets.activations
            let hidden = try student.forward(tokens)
            let share = Float(rowsPerBatch) / totalRows
            // Both LM heads and the loss, chunk by chunk (no [N, V] logits): dL/dh into hiddenGradient, dL/dW_out added.
            let hiddenGradient = try backend.tensor(shape: hidden.shape, label: "final hidden gradient")
            let result = try fusedHead(hidden: hidden, weight: outputWeight.value, teacher: targets.output,
                                       labels: labels, gradHidden: hiddenGradient, gradWeight: outputWeight.gradient, gradOutput: share,
                                       teacherCrossEntropy: targets.crossEntropy == nil && objective.temperatureSchedule == "dts")
            parts.loss += result.loss * share
            parts.crossEntropy += (result.crossEntropy ?? 0) * share
            parts.teacherCrossEntropy += (targets.crossEntropy ?? result.teacherCrossEntropy ?? 0) * share
            // Feature losses: gradients into the student's residual streams and attention maps.
            var hiddenGradients: [Int: Tensor] = [:]
            if let lensContext, let teacherResult, case .hidden(_, let teacherHead) = targets.output {
                let lens = try lensContext.lens.apply(student: student, teacherHidden: teacherResult.hiddenStates, teacherNorm: lensContext.teacherNorm,
                                                      teacherEpsilon: lensContext.teacherEpsilon, teacherHead: teacherHead,
                                                      labels: labels, gradOutput: share)
                parts.lens += lens.value * share
                for (block, gradient) in lens.hiddenGradients { try hiddenGradients.accumulate(gradient, at: block) }
            }
            if let hints, let teacherResult {
                let hint = try hints.apply(student: student, teacherHidden: teacherResult.hiddenStates, gradOutput: share)
                parts.hint += hint.value * share
                for (block, gradient) in hint.hiddenGradients { try hiddenGradients.accumulate(gradient, at: block) }
            }
            var attentionGradients: [Int: Tensor] = [:]
            if let alignment, let teacherResult {
                let studentMaps = try Dictionary(uniqueKeysWithValues: alignment.studentBlocks.map { ($0, try student.attentionProbabilities(of: $0)) })
                let aligned = try alignment.apply(studentMaps: studentMaps, teacherMaps: teacherResult.attentionProbabilities,
                                                  gradOutput: share * parts.alignmentWeight)
                parts.alignment += aligned.value * share
                attentionGradients = aligned.mapGradients
            }
            try student.backward(finalHiddenGradient: hiddenGradient, hiddenGradients: hiddenGradients, attentionGradients: attentionGradients)
        }
        let softWeight = loss.effectiveSoftWeight
        parts.divergence = softWeight > 0 ? (parts.loss - loss.hardWeight * parts.crossEntropy) / softWeight : 0
        parts.total = parts.loss + config.lensWeight * parts.lens + config.hintWeight * parts.hint + parts.alignmentWeight * parts.alignment
        parts.gradientNorm = try Optimizer.gradientNorm(student.parameters + auxiliaryParameters)
        return parts
    }

    /// [B * T] labels of windows [B][T]: position t predicts token t + 1; the last position of each
    /// window has none (the ignore index -100).
    func nextTokenLabels(_ tokens: [[Int32]]) throws -> Tensor {
        try backend.tensor(tokens.flatMap { window in window.dropFirst().map(Float.init) + [Float(-100)] },
                           shape: [tokens.count * (tokens.first?.count ?? 0)], label: "next-token labels")
    }

    /// The student's NLL of the validation windows.
    func studentLikelihood(_ student: StudentModel, _ batches: [[[Int32]]]) throws -> LikelihoodResult {
        var total = LikelihoodResult()
        for tokens in batches {
            let hidden = try student.forward(tokens)
            student.discardSavedActivations()
            let crossEntropy = DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, reduction: .sum, forwardOnly: true)
            let result = try FusedLinearDistillationLoss(loss: crossEntropy, chunkBudgetBytes: headChunkBytes)(
                hidden: hidden, weight: student.outputWeight.value, teacher: .none, labels: try nextTokenLabels(tokens))
            total = total + LikelihoodResult(totalNLL: Double(result.loss), tokens: result.validRows)
        }
        return total
    }

    /// `[####....] step 40/100  loss 2.1 (kd 1.9, ce 4.2, lens 0.3)  900 tok/s  ETA 1m30s`, with a part per feature loss that is on.
    func progressLine(step: Int, parts: StepParts, tokensPerSecond: Double, remaining: Double) -> String {
        let bar = progressBar(step, of: config.steps)
        var features = ""
        if lensContext != nil { features += String(format: ", lens %.4f", parts.lens) }
        if hints != nil { features += String(format: ", hint %.4f", parts.hint) }
        if alignment != nil { features += String(format: ", align %.4g", parts.alignment) }
        return String(format: "[%@] step %d/%d  loss %.4f (kd %.4f, ce %.4f%@)  %.0f tok/s  ETA %@", bar, step, config.steps,
                      parts.total, parts.divergence, parts.crossEntropy, features, tokensPerSecond, formatDuration(remaining))
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
