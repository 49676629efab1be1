import Checkpoint
import Foundation
import GGUF
import Models
import TeacherCache
import Tensor
import Training
import TrainingData

/// The trainer's full distillation step (``Trainer/step(_:batches:)``: teacher forward, student forward and backward, loss, AdamW) of
/// `--batch-size` x `--seq-len` tokens (default 4 x 128), with the share of time in GEMMs, in the
/// loss kernels and in the rest, and the step's peak memory in use (activations, gradients,
/// workspaces: no [N, V] logits, so it grows with N x C, not N x V); then the same step from
/// cached targets of the default form (no teacher forward; decoded from a shard's bytes at every
/// step), and its speed against the live step's; then, where the
/// backend runs bf16 GEMMs, the teacher alone in bf16, and the student in mixed precision (`--precision bf16`,
/// the teacher as `--teacher-precision auto` holds it);
/// then on-policy and sequence-level steps, whose sequences' last three quarters the student or the
/// teacher samples first (``Rollouts``), against the corpus step.
public struct TrainSuite: BenchSuite {
    public let name = "train"
    public let summary = "distillation step (teacher fwd + student fwd/bwd + loss + AdamW), --batch-size x --seq-len: tokens/s, time shares, peak memory (needs `make teacher`)"

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        guard let path = context.teacherPath, FileManager.default.fileExists(atPath: path) else {
            throw TensorError.unsupported("bench train: no teacher at \(context.teacherPath ?? "(none)"); run `make teacher` or pass --teacher FILE.gguf")
        }
        var config = TrainingConfig()
        config.teacher = path
        config.batchSize = context.trainBatchSize
        config.seqLen = context.trainSeqLen
        config.cacheReadAhead = context.trainCacheReadAhead
        let file = try GGUFFile(path: path)
        let teacherParameters = try LlamaParameters(gguf: file)
        let blocks = try StudentLayers.parse(config.studentLayers, teacherLayers: teacherParameters.config.layers)
        let studentParameters = try teacherParameters.inheriting(blocks: blocks)
        let tokens = benchTokenIds(config.seqLen * config.batchSize * 4, below: teacherParameters.config.vocabulary, seed: 7)
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.2, seed: 1)
        var records: [BenchRecord] = []
        var referenceLoss: [String: Float] = [:]
        // The windows' targets as the default teacher cache keeps them (`TeacherTargetSpec.recommended`), made once
        // by the cache's own code on the reference backend and coded into a shard as the cache stores them: every
        // backend's cached step decodes the same bytes, window by window, as training from a cache does.
        let spec = TeacherTargetSpec.recommended
        let maker = SparseTargetMaker(spec: spec, seqLen: config.seqLen)
        var windowTargets: [[SparseTarget]] = []
        let referenceTeacher = try LlamaModel(weights: LlamaWeights(gguf: file, backend: context.referenceFirst[0]))
        for first in stride(from: 0, to: dataset.windowCount, by: config.batchSize) {
            let windows = Array(first..<min(dataset.windowCount, first + config.batchSize))
            windowTargets += try maker.targets(of: windows.map(dataset.window), windows: windows, model: referenceTeacher)
        }
        let vocabulary = teacherParameters.config.vocabulary
        let idBits = CacheShard.idBits(vocabulary: vocabulary)
        let idOrder = spec.draws == nil ? nil : TokenIDOrder(frequenciesOf: tokens, vocabulary: vocabulary)
        let shard = try CacheShardView(
            CacheShard(firstWindow: 0, seqLen: config.seqLen, targets: windowTargets)
                .encoded(idBits: idBits, storesProbabilities: spec.storesProbabilities, pairCountBytes: spec.pairCountBytes, idOrder: idOrder),
            file: "bench train's shard",
            expected: (0, windowTargets.count, config.seqLen, idBits, spec.storesProbabilities, spec.pairCountBytes),
            vocabulary: vocabulary, idOrder: idOrder)
        for backend in context.referenceFirst {
            context.report("train: \(config.batchSize) x \(config.seqLen) tokens, \(blocks.count)-block student, on \(backend.name)")
            // The teachers as `kdgpu train` holds them by default (teacher_weights auto: expanded once where that fits).
            let teacher = try config.teacherModel(LlamaModel(weights: LlamaWeights(gguf: file, backend: backend)))
            let bf16Teacher = (try? LlamaModel.probeBF16(on: backend)) == nil ? nil
                : try config.teacherModel(LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: .bf16))
            var cached = try SparseTeacher(spec: spec, tail: .renormalize, seqLen: config.seqLen, vocabulary: vocabulary,
                                           backend: backend, targetsOfWindow: shard.targets(ofWindow:))
            cached.readsAhead = config.readsCacheAhead(on: backend)
            // (kernel, the student's precision, the teacher): fp32 throughout, then mixed precision with the teacher as
            // `--teacher-precision auto` holds it (bf16 where this device's bf16 GEMMs pay, BF16GemmRoute; fp32 elsewhere).
            var rows: [(kernel: String, precision: DType, source: any TeacherSource)] = []
            if context.trainPrecisions.contains(.f32) {
                rows += [("distillation_step", .f32, LiveTeacher(model: teacher)), ("distillation_step_cached", .f32, cached)]
                if let bf16Teacher { rows.append(("distillation_step_teacher_bf16", .f32, LiveTeacher(model: bf16Teacher))) }
                rows += [("distillation_step_on_policy", .f32, LiveTeacher(model: teacher)), ("distillation_step_seq_kd", .f32, LiveTeacher(model: teacher))]
            }
            if context.trainPrecisions.contains(.bf16), let bf16Teacher {
                let autoTeacher = config.teacherPrecision(on: backend) == .bf16 ? bf16Teacher : teacher
                rows += [("distillation_step", .bf16, LiveTeacher(model: autoTeacher)), ("distillation_step_cached", .bf16, cached)]
            }
            var liveTokensPerSecond: [DType: Double] = [:]
            // The live step's GEMM operations, the cached step's bound is measured against.
            var liveGemmFlops: [DType: Double] = [:]
            // The live step of each precision, kept to time the cached step against in alternation.
            var liveSteps: [DType: () throws -> Void] = [:]
            for (kernel, precision, source) in rows {
                // The trainer's own step: micro-batches, clipping, AdamW over the parameter arena, schedules.
                var rowConfig = config
                rowConfig.precision = precision == .bf16 ? "bf16" : "fp32"
                // Sampled sequences: a quarter of the window as the prompt, the rest sampled by the student (every step) or the teacher.
                let sampling = kernel.hasSuffix("on_policy") || kernel.hasSuffix("seq_kd")
                (rowConfig.promptTokens, rowConfig.rolloutTokens) = (config.seqLen / 4, config.seqLen - config.seqLen / 4)
                (rowConfig.onPolicyFraction, rowConfig.seqKd) = (kernel.hasSuffix("on_policy") ? 1 : 0, kernel.hasSuffix("seq_kd"))
                let trainer = try Trainer(config: rowConfig, student: try StudentModel(parameters: studentParameters, backend: backend),
                                          teacher: source, features: [], objective: DistillationObjective(config: rowConfig))
                if sampling {
                    trainer.rollouts = Rollouts(settings: RolloutSettings(config: rowConfig), student: trainer.student, teacher: teacher)
                }
                var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
                var step = 0
                var firstLoss: Float = 0
                func fullStep() throws {
                    step += 1
                    let parts = try trainer.step(step, batches: &sampler)
                    if step == 1 { firstLoss = parts.loss }
                    try backend.synchronize()
                }
                let key = "\(kernel) \(precision.rawValue)"
                // A backend that is only the reference gives its first step's loss and is not timed.
                guard context.backends.contains(where: { $0 === backend }) else {
                    try fullStep()
                    referenceLoss[key] = firstLoss
                    continue
                }
                // The cached step in alternation with the live one (the median of the pairs' ratios is its
                // speedup: a shared machine's drift moves it far less than two medians taken apart).
                var pairedSpeedup: Double?
                let seconds: Double
                if kernel.hasSuffix("cached"), let live = liveSteps[precision] {
                    let paired = try context.pairedMedians(fullStep, against: live)
                    (seconds, pairedSpeedup) = (paired.seconds, paired.referenceOverBody)
                    liveSteps[precision] = nil
                } else {
                    seconds = try context.median(fullStep)
                }
                if kernel == "distillation_step" { liveSteps[precision] = fullStep }
                // The shares, from one more step with every GEMM and loss call synchronized and timed.
                let profile = Profiling.start(on: backend)
                defer { Profiling.stop(on: backend) }
                let ledger = backend.ledger
                let inUseBefore = ledger.inUseBytes
                ledger.resetPeak()
                let start = DispatchTime.now().uptimeNanoseconds
                try fullStep()
                let profiled = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let stepPeak = Double(ledger.peakInUseBytes - inUseBefore) / Double(1 << 20)
                let gemm = profile.seconds["gemm"] ?? 0, loss = profile.seconds["loss"] ?? 0, convert = profile.seconds["convert"] ?? 0
                let optimizerSeconds = profile.seconds["optimizer"] ?? 0, gemmFlops = profile.flops["gemm"] ?? 0
                // What the student's forward keeps for its backward (bf16 GEMM inputs in mixed precision).
                let beforeForward = ledger.inUseBytes
                _ = try trainer.student.forward([[Int32]](repeating: dataset.window(0), count: config.batchSize))
                let activationMiB = Double(ledger.inUseBytes - beforeForward) / Double(1 << 20)
                trainer.student.discardSavedActivations()
                // A row with bf16 anywhere is compared with the fp32 live step's first loss (bf16 rounding, not a bug, separates them).
                let bf16Anywhere = precision == .bf16 || kernel.hasSuffix("bf16")
                let fp32Twin = referenceLoss["\(kernel) f32"] ?? referenceLoss["distillation_step f32"]
                let error = (referenceLoss[key] ?? (bf16Anywhere ? fp32Twin : nil)).map { Double(abs($0 - firstLoss)) } ?? 0
                referenceLoss[key] = referenceLoss[key] ?? firstLoss
                let tokensPerSecond = Double(config.batchSize * config.seqLen) / seconds
                var extra = ["tokens_per_s": tokensPerSecond, "gemm_share": gemm / profiled, "loss_share": loss / profiled,
                             "convert_share": convert / profiled, "optimizer_share": optimizerSeconds / profiled,
                             "rest_share": max(0, 1 - (gemm + loss + convert + optimizerSeconds) / profiled), "step_peak_mib": stepPeak,
                             "activation_mib": activationMiB, "gemm_gflop": gemmFlops / 1e9]
                if kernel == "distillation_step" {
                    liveTokensPerSecond[precision] = tokensPerSecond
                    liveGemmFlops[precision] = gemmFlops
                    if precision == .bf16, let fp32 = liveTokensPerSecond[.f32] { extra["speedup_over_fp32"] = tokensPerSecond / fp32 }
                } else if let pairedSpeedup {
                    extra["speedup_vs_live"] = pairedSpeedup
                    if let live = liveGemmFlops[precision], gemmFlops > 0 { extra["flop_bound"] = live / gemmFlops }
                } else if sampling, let live = liveTokensPerSecond[precision] {
                    extra["speedup_vs_live"] = tokensPerSecond / live
                }
                records.append(BenchRecord(
                    suite: name, kernel: kernel, backend: backend.name,
                    shape: "\(config.batchSize)x\(config.seqLen) tokens, student \(blocks.count) of \(teacherParameters.config.layers) blocks, V=\(teacherParameters.config.vocabulary)"
                        + (kernel.hasSuffix("cached") ? ", \(spec) targets" : "")
                        + (sampling ? ", \(rowConfig.promptTokens)-token prompts + \(rowConfig.rolloutTokens) sampled" : ""),
                    dtype: precision.rawValue, medianSeconds: seconds, maxAbsError: error, extra: extra,
                    note: "max abs err: first step's loss vs the CPU backend's (rows with bf16: vs the same step's in fp32; sampled rows: a draw near a "
                        + "boundary of the cumulative distribution lands differently where the logits round differently, and the sequences, "
                        + "then the losses, part from there); shares and memory from one profiled step (convert: dequantizing and 16-bit conversions; optimizer: gradient norm, AdamW over the arena, finiteness check, bf16 compute copy) "
                        + "(step_peak_mib: the step's peak memory in use above the weights and optimizer state; activation_mib: what the student's forward keeps for its backward; gemm_gflop: the step's GEMM operations)"
                        + (kernel.hasSuffix("cached") ? "; the cached step decodes sparse targets from a cache shard's bytes instead of running the teacher"
                            + (cached.readsAhead ? ", each step's targets read while the step before runs (--cache-read-ahead)" : "") + " (speedup_vs_live: the median over alternating pairs of the live step of the same precision's time over its own; flop_bound: the live step's GEMM operations over its own, the speedup if every GEMM ran as fast in both steps)"
                            : (source as? LiveTeacher)?.model.expansionBytes == 0 ? "; the live teacher's matrices expanded once (teacher_weights auto)"
                            : "; the live teacher's matrices quantized, expanded at every forward (teacher_weights auto: expanding them once does not fit)")
                        + (sampling ? "; every step samples its sequences' continuations (--on-policy-fraction 1: the student; --seq-kd: the teacher, "
                            + "expanded once) at T=1 before training on them, sampling included (speedup_vs_live: against the corpus step)" : "")
                        + (kernel.hasSuffix("bf16") ? "; the teacher's weight GEMMs in bf16 (--teacher-precision bf16), the student fp32" : "")
                        + (precision == .bf16 ? "; dtype bf16: --precision bf16 (fp32 master weights, bf16 GEMM operands, fp32 accumulation)"
                            + ((source as? LiveTeacher).map { "; the live teacher in \($0.model.precision == .f32 ? "fp32" : $0.model.precision.rawValue) (--teacher-precision auto)" } ?? "")
                            : "")))
            }
        }
        return records
    }
}
