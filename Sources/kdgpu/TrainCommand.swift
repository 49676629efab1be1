import ArgumentParser
import CPUBackend
import Foundation
import ProcessGroup
import Tensor
import Training

/// `kdgpu train`: distill the teacher into a student.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Distill a GGUF teacher into a smaller student on any OpenCL device or the CPU.",
        discussion: """
        Settings come from --config FILE.yaml (keys: \(TrainingConfig.validKeys.joined(separator: ", "))), \
        then from the flags, which override it. DIR/metrics.jsonl gets one object per step and per validation, \
        DIR/checkpoint the latest checkpoint (Hugging Face safetensors + optimizer state), DIR/loss.svg the loss \
        curve and DIR/student.gguf the exported student.
        """)

    @Option(name: .long, help: ArgumentHelp("A YAML file of training settings.", valueName: "file.yaml"))
    var config: String?
    @Option(name: .long, help: ArgumentHelp("Continue the run whose checkpoint is in DIR, up to --steps.", valueName: "DIR"))
    var resume: String?

    @Option(name: .long, help: ArgumentHelp("The teacher GGUF.", valueName: "file.gguf")) var teacher: String?
    @Option(name: .long, help: ArgumentHelp("Text file, folder of .txt/.md files, or JSONL.", valueName: "path")) var data: String?
    @Option(name: .long, help: ArgumentHelp("Teacher blocks the student inherits: 0,6,12 or every:N (default: its first and last three).", valueName: "blocks")) var studentLayers: String?
    @Option(name: .long, help: ArgumentHelp("A fresh student instead: blocks=N,width=N,heads=N,kv_heads=N,feed_forward=N.", valueName: "shape"))
    var studentShape: String?
    @Option(name: .long, parsing: .unconditional, help: "Total optimizer steps.") var steps: Int?
    @Option(name: .long, parsing: .unconditional, help: "Windows per micro-batch.") var batchSize: Int?
    @Option(name: .long, parsing: .unconditional, help: "Micro-batches per optimizer step.") var gradientAccumulation: Int?
    @Option(name: .long, parsing: .unconditional, help: "Tokens per window.") var seqLen: Int?
    @Option(name: .long, parsing: .unconditional, help: "Peak learning rate.") var lr: Float?
    @Option(name: .long, parsing: .unconditional, help: "Linear warm-up steps before the cosine decay.") var warmupSteps: Int?
    @Option(name: .long, parsing: .unconditional, help: "The learning rate decays to this fraction of the peak.") var minLrFraction: Float?
    @Option(name: .long, parsing: .unconditional, help: "AdamW weight decay, in [0, 1).") var weightDecay: Float?
    @Option(name: .long, parsing: .unconditional, help: "AdamW beta1, in [0, 1).") var beta1: Float?
    @Option(name: .long, parsing: .unconditional, help: "AdamW beta2, in [0, 1).") var beta2: Float?
    @Option(name: .long, parsing: .unconditional, help: "Global gradient-norm clip (0: off).") var gradClip: Float?
    @Option(name: .long, parsing: .unconditional, help: "Learning-rate factor of the token embedding and LM head, in [0, 100] (0: frozen).")
    var embeddingLrScale: Float?
    @Option(name: .long, help: "fkl, rkl, jsd(beta), sfkl(alpha), srkl(alpha), tvd, or taid.") var divergence: String?
    @Option(name: .long, parsing: .unconditional, help: "Distillation temperature T.") var temperature: Float?
    @Option(name: .long, help: "Multiply the soft term by T^2 (true or false).") var scaleBySquaredTemperature: Bool?
    @Option(name: .long, help: "constant or dts.") var temperatureSchedule: String?
    @Option(name: .long, parsing: .unconditional, help: "Weight of the hard-label cross-entropy.") var hardWeight: Float?
    @Option(name: .long, parsing: .unconditional, help: "Weight of the distillation divergence.") var softWeight: Float?
    @Option(name: .long, parsing: .unconditional, help: "Logit lens: weight of the lens loss (0: off).") var lensWeight: Float?
    @Option(name: .long, help: ArgumentHelp("Logit lens: STUDENT:TEACHER block pairs (default: each student block with the teacher block it was inherited from, else proportional depth).", valueName: "pairs"))
    var lensLayers: String?
    @Option(name: .long, help: "Logit lens: apply the final RMSNorm before the unembedding (true or false).") var lensFinalNorm: Bool?
    @Option(name: .long, help: "Logit lens: its divergence, at T = 1 (default jsd(0.5)).") var lensDivergence: String?
    @Option(name: .long, parsing: .unconditional, help: "Attention alignment (A2D): weight of the alignment loss (0: off).") var attnAlignWeight: Float?
    @Option(name: .long, help: ArgumentHelp("Attention alignment: STUDENT:TEACHER block pairs naming the student blocks whose maps are mixed and the teacher blocks aligned to (default: all, as for --lens-layers).", valueName: "pairs"))
    var attnAlignLayers: String?
    @Option(name: .long, parsing: .unconditional, help: "Attention alignment: weight factor per data epoch (A2D: 0.9).") var attnAlignDecay: Float?
    @Option(name: .long, parsing: .unconditional, help: "Hidden-state hints: weight of the hint loss (0: off).") var hintWeight: Float?
    @Option(name: .long, help: ArgumentHelp("Hidden-state hints: STUDENT:TEACHER block pairs (default: as for --lens-layers).", valueName: "pairs"))
    var hintLayers: String?
    @Option(name: .long, help: "Hidden-state hints: cosine or mse (through a learned projection when the widths differ).") var hintLoss: String?
    @Option(name: .long, parsing: .unconditional, help: "Seed of the data order.") var seed: UInt64?
    @Option(name: .long, help: ArgumentHelp("cpu, opencl, opencl:P:D, or a device-name substring.", valueName: "device")) var device: String?
    @Option(name: .long, help: ArgumentHelp("Run folder.", valueName: "DIR")) var out: String?
    @Option(name: .long, parsing: .unconditional, help: "Fraction of the windows held out for validation, in (0, 1).") var validationFraction: Double?
    @Option(name: .long, parsing: .unconditional, help: "Validate every N steps.") var evalEvery: Int?
    @Option(name: .long, parsing: .unconditional, help: "Validation windows used at most.") var evalWindows: Int?
    @Option(name: .long, parsing: .unconditional, help: "Checkpoint every N steps.") var checkpointEvery: Int?
    @Option(name: .long, help: "Export the final student as GGUF: f32, f16, q8_0 or none.") var exportGguf: String?
    @Option(name: .long, help: ArgumentHelp("Train from this teacher cache (`kdgpu teacher-cache build`) instead of running the teacher.", valueName: "DIR"))
    var teacherCache: String?
    @Option(name: .long, help: "Cached top-k/top-p targets: renormalize (unlisted tokens get nothing), uniform (the tail mass spread over them), bucket (the tail as one more bucket; fkl) or decoupled (LFM2: listed-vs-rest Bernoulli KL + the listed conditional at T; fkl). Sampled targets: renormalize, or bucket (the ids drawn once as the unseen mass, Good-Turing). Both: prior (the unlisted tokens get the tail in proportion to a prior made from the cache's training windows).")
    var sparseTail: String?
    @Option(name: .long, parsing: .unconditional, help: "Drawn targets with --sparse-tail prior: the prior's weight in draws against a position's ids drawn once (0: the counts as they are).")
    var tailPriorWeight: Float?
    @Option(name: .long, help: "Cached targets: each position's label at the teacher's exact probability (the cache stores its log-probability), the other ids sharing the rest: true or false.")
    var exactLabel: Bool?
    @Option(name: .long, help: "Cached targets: assemble each step's on the host while the device runs the step before: auto (on GPUs and other devices that compute off the host's cores), on or off. The same targets either way.")
    var cacheReadAhead: String?
    @Option(name: .long, help: "Under mpirun: all-reduce each span of the gradients while the backward computes the rest: auto (where the devices compute off the host's cores: GPUs; rank 0's decides), on or off. The same sums either way.")
    var overlapAllreduce: String?
    @Option(name: .long, help: "Under mpirun: the gradients' type between ranks: fp32, or bf16 (half the bytes; each rank's gradients and each partial sum rounded to bf16: for links slower than the step).")
    var allreduceDtype: String?
    @Option(name: .long, help: ArgumentHelp("Make the live teacher's targets sparse at every step as a cache of this form would store them (topk:K, topp:P,K, sampled:N, systematic:N; N up to 2^20) and train on them as on cached targets: a form's cost in quality before building its cache.", valueName: "SPEC"))
    var sparsifyTeacher: String?
    @Option(name: .long, help: "The live teacher's weight GEMMs: auto (bf16 where the device's GEMMs have bf16 instructions, else fp32), fp32, bf16 or f16 (weights expanded straight to the 16-bit type, fp32 accumulation; f16 keeps 3 more mantissa bits, but an activation past 65504 is an error naming it).")
    var teacherPrecision: String?
    @Option(name: .long, help: "The live teacher's matrices: auto (expanded once where that takes at most a quarter of the device's memory, else quantized), quantized (kept as stored, expanded afresh at every forward: the least memory) or expanded (expanded once into --teacher-precision at the start). The same values either way.")
    var teacherWeights: String?
    @Option(name: .long, help: "The student's GEMMs: fp32, or bf16 (mixed precision: fp32 master weights, moments and gradients, bf16 GEMM operands with fp32 accumulation).")
    var precision: String?
    @Option(name: .long, help: "With --precision bf16: how the bf16 compute copies round the fp32 weights after each update: stochastic (each weight's random threshold drawn once from the seed; default) or nearest (to nearest even).")
    var computeRounding: String?
    @Option(name: .long, parsing: .unconditional, help: "On-policy (GKD's lmbda): probability that a step trains on continuations the student samples from its windows' first --prompt-tokens tokens (0: corpus only).")
    var onPolicyFraction: Float?
    @Option(name: .long, help: "Sequence-level KD: steps that are not on-policy train on continuations the teacher samples (true or false).")
    var seqKd: Bool?
    @Option(name: .long, parsing: .unconditional, help: "Sampled sequences: prompt tokens taken from each window.") var promptTokens: Int?
    @Option(name: .long, help: "Sampled sequences: prompts from this JSON Lines file instead of corpus windows, one {\"prompt\": \"text\"} or {\"messages\": [{\"role\": ..., \"content\": ...}]} a line, drawn at random.")
    var prompts: String?
    @Option(name: .long, help: "Render --prompts with the teacher's chat template (tokenizer.chat_template), opening the assistant's turn (true or false).")
    var chatTemplate: Bool?
    @Option(name: .long, parsing: .unconditional, help: "Sampled sequences: tokens sampled after each prompt (prompt + these <= --seq-len).") var rolloutTokens: Int?
    @Option(name: .long, parsing: .unconditional, help: "Sampled sequences: sampling temperature (0: greedy).") var rolloutTemperature: Float?
    @Option(name: .long, help: "The objective on the student's samples: divergence (the configured divergence over the vocabulary, GKD) or sampled-rkl (log q(x) - log p(x) of each sampled token as a negative reward: a per-token policy gradient).")
    var onPolicyLoss: String?
    @Option(name: .long, parsing: .unconditional, help: "DistiLLM replay buffer: student sequences kept for reuse (0: none).") var replayCapacity: Int?
    @Option(name: .long, parsing: .unconditional, help: "DistiLLM replay buffer: probability that a student step replays buffered sequences.") var replayRatio: Float?
    @Option(name: .long, help: "constant, or adaptive (DistiLLM: the on-policy fraction rises by 0.1 when validation NLL rises by --adaptive-loss-eps).")
    var onPolicySchedule: String?
    @Option(name: .long, parsing: .unconditional, help: "The validation NLL rise that raises the adaptive on-policy fraction.") var adaptiveLossEps: Float?
    @Option(name: .long, parsing: .unconditional, help: "At each validation, the teacher's reverse KL on the student's continuations of this many validation prompts (0: off).")
    var evalRollouts: Int?

    func run() throws {
        do {
            var settings = TrainingConfig()
            if let resume {
                settings = try DistillationRun.savedConfiguration(in: URL(fileURLWithPath: resume, isDirectory: true))
                settings.out = resume
            }
            if let config { settings = try TrainingConfig.load(yamlFile: config) }
            apply(to: &settings)
            if let resume { settings.out = resume }
            let place = try RankPlace(device: settings.device)
            settings.device = place.device
            try place.run {
                try settings.validate()
                let cpu = try CPUBackend()
                let backend = try openBackend(settings.device, cpu: cpu)
                let printer = ProgressPrinter()
                let (log, progress) = place.writes ? (printer.log, printer.progress) : ({ _ in }, { _ in })
                if let world = place.world, world.rank == 0 {
                    log("data parallel: \(world.size) processes (mpirun), \(world.localSize) on this machine, "
                        + "\(ProcessInfo.processInfo.environment[Parallelism.variable] ?? "all") threads each; rank 0 writes")
                }
                let run = try DistillationRun(config: settings, backend: backend, resume: resume != nil,
                                              reducer: place.world.map { MPIGradientReducer(world: $0) } ?? SingleProcess(), log: log, progress: progress)
                let summary = try run.run()
                printer.finish()
                if place.writes { report(summary) }
            }
        } catch {
            fail(error)
        }
    }

    /// The run's closing lines: perplexities, checkpoint, export.
    func report(_ summary: RunSummary) {
        print("validation perplexity")
        print(String(format: "  teacher:                %.3f", summary.teacherValidationPerplexity))
        if let initial = summary.initialStudentValidationPerplexity {
            print(String(format: "  student, initial:       %.3f", initial))
        }
        print(String(format: "  student, after %d steps: %.3f", summary.steps, summary.finalStudentValidationPerplexity))
        print("checkpoint: \(summary.checkpoint)")
        if let exported = summary.exportedGGUF { print("exported:   \(exported)") }
    }

    /// Flags override the file (or the resumed run's settings).
    func apply(to settings: inout TrainingConfig) {
        if let teacher { settings.teacher = teacher }
        if let data { settings.data = data }
        if let studentLayers { settings.studentLayers = studentLayers }
        if let studentShape { settings.studentShape = studentShape }
        if let steps { settings.steps = steps }
        if let batchSize { settings.batchSize = batchSize }
        if let gradientAccumulation { settings.gradientAccumulation = gradientAccumulation }
        if let seqLen { settings.seqLen = seqLen }
        if let lr { settings.lr = lr }
        if let warmupSteps { settings.warmupSteps = warmupSteps }
        if let minLrFraction { settings.minLrFraction = minLrFraction }
        if let weightDecay { settings.weightDecay = weightDecay }
        if let beta1 { settings.beta1 = beta1 }
        if let beta2 { settings.beta2 = beta2 }
        if let gradClip { settings.gradClip = gradClip }
        if let embeddingLrScale { settings.embeddingLrScale = embeddingLrScale }
        if let divergence { settings.divergence = divergence }
        if let temperature { settings.temperature = temperature }
        if let scaleBySquaredTemperature { settings.scaleBySquaredTemperature = scaleBySquaredTemperature }
        if let temperatureSchedule { settings.temperatureSchedule = temperatureSchedule }
        if let hardWeight { settings.hardWeight = hardWeight }
        if let softWeight { settings.softWeight = softWeight }
        if let lensWeight { settings.lensWeight = lensWeight }
        if let lensLayers { settings.lensLayers = lensLayers }
        if let lensFinalNorm { settings.lensFinalNorm = lensFinalNorm }
        if let lensDivergence { settings.lensDivergence = lensDivergence }
        if let attnAlignWeight { settings.attnAlignWeight = attnAlignWeight }
        if let attnAlignLayers { settings.attnAlignLayers = attnAlignLayers }
        if let attnAlignDecay { settings.attnAlignDecay = attnAlignDecay }
        if let hintWeight { settings.hintWeight = hintWeight }
        if let hintLayers { settings.hintLayers = hintLayers }
        if let hintLoss { settings.hintLoss = hintLoss }
        if let seed { settings.seed = seed }
        if let device { settings.device = device }
        if let out { settings.out = out }
        if let validationFraction { settings.validationFraction = validationFraction }
        if let evalEvery { settings.evalEvery = evalEvery }
        if let evalWindows { settings.evalWindows = evalWindows }
        if let checkpointEvery { settings.checkpointEvery = checkpointEvery }
        if let exportGguf { settings.exportGguf = exportGguf }
        if let teacherCache { settings.teacherCache = teacherCache }
        if let sparseTail { settings.sparseTail = sparseTail }
        if let tailPriorWeight { settings.tailPriorWeight = tailPriorWeight }
        if let exactLabel { settings.exactLabel = exactLabel }
        if let cacheReadAhead { settings.cacheReadAhead = cacheReadAhead }
        if let overlapAllreduce { settings.overlapAllreduce = overlapAllreduce }
        if let allreduceDtype { settings.allreduceDtype = allreduceDtype }
        if let sparsifyTeacher { settings.sparsifyTeacher = sparsifyTeacher }
        if let teacherPrecision { settings.teacherPrecision = teacherPrecision }
        if let teacherWeights { settings.teacherWeights = teacherWeights }
        if let precision { settings.precision = precision }
        if let computeRounding { settings.computeRounding = computeRounding }
        if let onPolicyFraction { settings.onPolicyFraction = onPolicyFraction }
        if let seqKd { settings.seqKd = seqKd }
        if let promptTokens { settings.promptTokens = promptTokens }
        if let prompts { settings.prompts = prompts }
        if let chatTemplate { settings.chatTemplate = chatTemplate }
        if let rolloutTokens { settings.rolloutTokens = rolloutTokens }
        if let rolloutTemperature { settings.rolloutTemperature = rolloutTemperature }
        if let onPolicyLoss { settings.onPolicyLoss = onPolicyLoss }
        if let replayCapacity { settings.replayCapacity = replayCapacity }
        if let replayRatio { settings.replayRatio = replayRatio }
        if let onPolicySchedule { settings.onPolicySchedule = onPolicySchedule }
        if let adaptiveLossEps { settings.adaptiveLossEps = adaptiveLossEps }
        if let evalRollouts { settings.evalRollouts = evalRollouts }
    }
}
