import Checkpoint
import Foundation
import GGUF
import Models
import Tensor
import TrainingData

/// What a run writes as it goes and at its end: the metrics log, the progress line, checkpoints
/// (atomically, remembering the last complete one), the loss curve and the exported student. One
/// writer: with several processes only one has a reporter that writes.
public final class RunReporter {
    let config: TrainingConfig
    let out: URL
    /// The metrics log; nil in a process that does not write (a rank other than the first).
    let metrics: MetricsLog?
    /// `rollouts.jsonl`: the sequences this process sampled, opened at the first of them.
    private var rolloutLog: MetricsLog?
    private let resumedAt: Int?
    /// Token ids as text.
    let decode: ([Int32]) -> String
    let tokenizer: GGUFMetadata
    /// The settings a checkpoint keeps (all but the folder, which a resumed run names).
    let storedSettings: JSONValue
    let log: (String) -> Void
    let progress: (String) -> Void
    /// The last complete checkpoint (a resumed run's own until it writes one).
    public private(set) var lastCheckpoint: URL?
    private var runStart = DispatchTime.now().uptimeNanoseconds
    private var firstStep = 1

    init(config: TrainingConfig, out: URL, tokenizer: GGUFMetadata, decode: @escaping ([Int32]) -> String, resumedAt startStep: Int?,
         writes: Bool = true, log: @escaping (String) -> Void, progress: @escaping (String) -> Void) throws {
        self.config = config
        self.decode = decode
        resumedAt = startStep
        self.out = out
        self.tokenizer = tokenizer
        self.log = log
        self.progress = progress
        var settings = config
        settings.out = ""
        storedSettings = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(settings))
        metrics = writes ? try MetricsLog(url: out.appendingPathComponent("metrics.jsonl"), keepingStepsUpTo: startStep ?? 0) : nil
        lastCheckpoint = startStep == nil ? nil : TrainingCheckpoint.currentFolder(in: out)
    }

    /// A path in messages as the user wrote it (`runs/default/...`), not absolute.
    func shown(_ url: URL) -> String {
        url.path.hasPrefix(out.path) ? config.out + url.path.dropFirst(out.path.count) : url.path
    }

    /// The error that stops the run at `step`, saying what is left to resume from.
    func stopped(_ what: String, at step: Int) -> TrainingError {
        let saved = lastCheckpoint.map { "the last checkpoint, \(shown($0)), is intact (resume from \(config.out))" }
            ?? "no checkpoint was written yet (the first was due at step \(config.checkpointEvery > 0 ? min(config.checkpointEvery, config.steps) : config.steps))"
        return .numeric("step \(step): \(what); the run stopped; \(saved); try a lower --lr or a --grad-clip")
    }

    func startingValidation(teacher: LikelihoodResult, student: LikelihoodResult, onPolicyReverseKL: Double?) throws {
        var record: [String: Any] = ["step": 0, "val_nll": student.meanNLL, "val_perplexity": student.perplexity, "teacher_val_nll": teacher.meanNLL]
        if let onPolicyReverseKL { record["val_on_policy_rkl"] = onPolicyReverseKL }
        try metrics?.append(record)
        log(String(format: "validation before training: teacher perplexity %.3f, student perplexity %.3f", teacher.perplexity, student.perplexity)
            + (onPolicyReverseKL.map { String(format: ", reverse KL on student samples %.4f", $0) } ?? ""))
    }

    func startLoop(at step: Int) {
        firstStep = step
        runStart = DispatchTime.now().uptimeNanoseconds
    }

    /// The step's metrics line and progress line (tokens/s of every process together).
    func stepTaken(_ step: Int, _ parts: StepParts, taidT: Float?, seconds: Double) throws {
        guard let metrics else { return }
        let tokensPerSecond = Double(parts.tokens) / seconds
        var record: [String: Any] = ["step": step, "loss": Double(parts.total), "kd_loss": Double(parts.divergence),
                                     "ce_loss": Double(parts.crossEntropy), "temperature": Double(parts.temperature),
                                     "lr": Double(parts.learningRate), "tokens_per_s": tokensPerSecond, "grad_norm": Double(parts.gradientNorm),
                                     "on_policy": parts.source.isOnPolicy, "batch_source": parts.source.rawValue]
        if let rate = parts.rolloutTokensPerSecond { record["rollout_tokens_per_s"] = rate }
        let allReduceShare = parts.allReduceSeconds.map { $0 / seconds }
        if let wait = parts.allReduceSeconds, let share = allReduceShare { (record["allreduce_s"], record["allreduce_share"]) = (wait, share) }
        if let taidT { record["taid_t"] = Double(taidT) }
        try logRollouts(parts.rollouts)
        for feature in parts.features {
            record["\(feature.name)_loss"] = Double(feature.value)
            if feature.varies { record["\(feature.name)_weight"] = Double(feature.weight) }
        }
        try metrics.append(record)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - runStart) / 1e9
        let remaining = elapsed / Double(step - firstStep + 1) * Double(config.steps - step)
        let features = parts.features.map { String(format: ", %@ %.4g", $0.name, $0.value) }.joined()
        let allReduce = allReduceShare.map { String(format: " (all-reduce %.0f%%)", 100 * $0) } ?? ""
        progress(String(format: "[%@] step %d/%d  loss %.4f (kd %.4f, ce %.4f%@)  %.0f tok/s%@  ETA %@", progressBar(step, of: config.steps),
                        step, config.steps, parts.total, parts.divergence, parts.crossEntropy, features, tokensPerSecond, allReduce,
                        formatDuration(remaining)))
    }

    /// Appends sampled sequences to `rollouts.jsonl` (a resumed run first drops the lines of steps it redoes).
    private func logRollouts(_ rollouts: [Rollout]) throws {
        guard !rollouts.isEmpty, metrics != nil else { return }
        if rolloutLog == nil {
            rolloutLog = try MetricsLog(url: out.appendingPathComponent("rollouts.jsonl"), keepingStepsUpTo: resumedAt ?? 0)
        }
        for rollout in rollouts {
            try rolloutLog?.append(["step": rollout.step, "source": rollout.source.rawValue, "prompt_ids": rollout.prompt.map(Int.init),
                                    "completion_ids": rollout.completion.map(Int.init), "text": decode(rollout.prompt + rollout.completion)])
        }
    }

    /// The validation line; `onPolicyReverseKL`: the teacher's reverse KL on the student's samples (``DistillationRun/onPolicyReverseKL``).
    func validated(_ step: Int, _ result: LikelihoodResult, onPolicyReverseKL: Double? = nil) throws {
        var record: [String: Any] = ["step": step, "val_nll": result.meanNLL, "val_perplexity": result.perplexity]
        if let onPolicyReverseKL { record["val_on_policy_rkl"] = onPolicyReverseKL }
        try metrics?.append(record)
        log(String(format: "step %d: validation NLL %.4f, perplexity %.3f", step, result.meanNLL, result.perplexity)
            + (onPolicyReverseKL.map { String(format: ", reverse KL on student samples %.4f", $0) } ?? ""))
    }

    /// Writes a checkpoint of the trainer's state after `step` (atomically: a new folder, then the link swapped).
    func checkpoint(_ step: Int, trainer: Trainer, position: DataPosition) throws {
        var state = TrainerState(step: step, dataEpoch: position.epoch, dataIndex: position.index, rngState: config.seed,
                                 configuration: storedSettings,
                                 schedules: try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(trainer.objective)))
        state.processes = trainer.reducer.worldSize
        state.rollouts = try trainer.rollouts.map { try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode($0.state)) }
        let auxiliaryParameters = trainer.features.flatMap(\.parameters)
        let auxiliary = AuxiliaryParameters(values: try Optimizer.download(auxiliaryParameters),
                                            moments: try Optimizer.downloadMoments(auxiliaryParameters))
        let saved = try TrainingCheckpoint(parameters: trainer.student.downloadParameters(),
                                           moments: Optimizer.downloadMoments(trainer.student.parameters),
                                           state: state, auxiliary: auxiliary, tokenizer: tokenizer).save(in: out)
        lastCheckpoint = saved
        log("step \(step): checkpoint \(shown(saved))")
    }

    /// The loss curve and the exported student; returns the export's path as shown.
    func finish(student: StudentModel) throws -> String? {
        guard let metrics else { return nil }
        let logged = try MetricsLog.read(metrics.url)
        let curve = lossCurveSVG(steps: logged.compactMap { o in (o["loss"] as? Double).map { (o["step"] as! Int, $0) } },
                                 validation: logged.compactMap { o in (o["val_nll"] as? Double).map { (o["step"] as! Int, $0) } },
                                 title: "kdgpu: \(config.divergence) distillation, T=\(config.temperature)")
        try curve.write(to: out.appendingPathComponent("loss.svg"), atomically: true, encoding: .utf8)
        guard let type = config.typedExportType else { return nil }
        let url = out.appendingPathComponent("student.gguf")
        try GGUFExport.write(student.downloadParameters(), to: url, matrixType: type, tokenizer: tokenizer, name: "kdgpu student")
        log("exported \(shown(url)) (\(config.exportGguf))")
        return shown(url)
    }

    var checkpointShown: String { shown(lastCheckpoint ?? out.appendingPathComponent(TrainingCheckpoint.currentLinkName)) }
}
