import Foundation
import Losses
import Yams

/// Everything a distillation run is told: from a YAML file (`--config`), then overridden by flags.
/// YAML keys are these property names in snake_case (`batch_size`, `student_layers`, ...).
public struct TrainingConfig: Codable, Equatable, Sendable {
    // Models and data.
    /// The teacher GGUF.
    public var teacher = "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"
    /// A text file, a folder of .txt/.md files, or a JSONL file.
    public var data = "cache/corpus/plays"
    /// The teacher blocks the student inherits: `0,6,12,18,24,29` or `every:5`. The default keeps
    /// the teacher's first and last three blocks: on SmolLM2-135M its validation perplexity before
    /// training is 2.0e5, against 3.3e7 for every:5 and 8.5e5 for 0,6,12,18,24,29 (measured).
    public var studentLayers = "0,1,2,27,28,29"
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
    public var warmupSteps = 5
    public var minLrFraction: Float = 0.1
    public var weightDecay: Float = 0.1
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    /// Global gradient-norm clip (0 turns it off).
    public var gradClip: Float = 1
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

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case teacher, data, studentLayers = "student_layers", studentShape = "student_shape", out, device, steps, batchSize = "batch_size"
        case gradientAccumulation = "gradient_accumulation", seqLen = "seq_len", lr, warmupSteps = "warmup_steps"
        case minLrFraction = "min_lr_fraction", weightDecay = "weight_decay", beta1, beta2, gradClip = "grad_clip", seed
        case divergence, temperature, temperatureSchedule = "temperature_schedule"
        case scaleBySquaredTemperature = "scale_by_squared_temperature", softWeight = "soft_weight", hardWeight = "hard_weight"
        case lensWeight = "lens_weight", lensLayers = "lens_layers", lensFinalNorm = "lens_final_norm", lensDivergence = "lens_divergence"
        case attnAlignWeight = "attn_align_weight", attnAlignLayers = "attn_align_layers", attnAlignDecay = "attn_align_decay"
        case hintWeight = "hint_weight", hintLayers = "hint_layers", hintLoss = "hint_loss"
        case validationFraction = "validation_fraction", evalEvery = "eval_every", evalWindows = "eval_windows"
        case checkpointEvery = "checkpoint_every", exportGguf = "export_gguf"
    }

    public static var validKeys: [String] { CodingKeys.allCases.map(\.rawValue) }

    /// Reads a YAML file of any subset of the keys; an unknown key is an error that lists the valid ones.
    public static func load(yamlFile path: String) throws -> TrainingConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw TrainingError.config("\(path): cannot read the configuration file")
        }
        let node: Any?
        do {
            node = try Yams.load(yaml: text)
        } catch {
            throw TrainingError.config("\(path): not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
        guard let mapping = node as? [String: Any] else {
            throw TrainingError.config("\(path): expected a mapping of keys to values at the top level")
        }
        if let unknown = mapping.keys.sorted().first(where: { !validKeys.contains($0) }) {
            throw TrainingError.config("\(path): unknown key '\(unknown)'; valid keys: \(validKeys.joined(separator: ", "))")
        }
        do {
            return try settings(mapping)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw TrainingError.config("\(path): key '\(key)' has a value of the wrong type (\(context.debugDescription))")
        }
    }

    /// The defaults, overridden by the keys of `mapping` (a YAML file's, or a checkpoint's settings,
    /// which lack the keys added after it was written).
    public static func settings(_ mapping: [String: Any]) throws -> TrainingConfig {
        let defaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TrainingConfig())) as! [String: Any]
        return try JSONDecoder().decode(TrainingConfig.self, from: JSONSerialization.data(withJSONObject: defaults.merging(mapping) { $1 }))
    }

    /// Checks ranges and names; each error names the key.
    public func validate() throws {
        func require(_ condition: Bool, _ key: String, _ message: String) throws {
            if !condition { throw TrainingError.config("\(key): \(message)") }
        }
        try require(steps >= 1, "steps", "must be at least 1, got \(steps)")
        try require(batchSize >= 1, "batch_size", "must be at least 1, got \(batchSize)")
        try require(gradientAccumulation >= 1, "gradient_accumulation", "must be at least 1, got \(gradientAccumulation)")
        try require(seqLen >= 2, "seq_len", "must be at least 2, got \(seqLen)")
        try require(lr > 0 && lr.isFinite, "lr", "must be positive, got \(lr)")
        try require(warmupSteps >= 0, "warmup_steps", "must be 0 or more, got \(warmupSteps)")
        try require((0...1).contains(minLrFraction), "min_lr_fraction", "must be in [0, 1], got \(minLrFraction)")
        try require(temperature > 0 && temperature.isFinite, "temperature", "must be positive, got \(temperature)")
        try require(["constant", "dts"].contains(temperatureSchedule), "temperature_schedule", "use constant or dts, got '\(temperatureSchedule)'")
        try require(divergence == "taid" || DistillationObjective.divergence(named: divergence) != nil, "divergence",
                    "unknown '\(divergence)'; use fkl, rkl, jsd(beta), sfkl(alpha), srkl(alpha), tvd or taid")
        try require(softWeight >= 0 && hardWeight >= 0 && softWeight + hardWeight > 0, "soft_weight/hard_weight",
                    "must be non-negative and not both 0")
        try require(lensWeight >= 0 && lensWeight.isFinite, "lens_weight", "must be 0 or more, got \(lensWeight)")
        try require(Divergence(name: lensDivergence) != nil, "lens_divergence", "unknown '\(lensDivergence)'; use fkl, rkl, jsd(beta), sfkl(alpha), srkl(alpha) or tvd")
        try require(attnAlignWeight >= 0 && attnAlignWeight.isFinite, "attn_align_weight", "must be 0 or more, got \(attnAlignWeight)")
        try require(attnAlignDecay > 0 && attnAlignDecay <= 1, "attn_align_decay", "must be in (0, 1], got \(attnAlignDecay)")
        try require(hintWeight >= 0 && hintWeight.isFinite, "hint_weight", "must be 0 or more, got \(hintWeight)")
        try require(HiddenStateHintLoss.Kind(rawValue: hintLoss) != nil, "hint_loss", "use cosine or mse, got '\(hintLoss)'")
        try require(validationFraction > 0 && validationFraction < 1, "validation_fraction", "must be in (0, 1), got \(validationFraction)")
        try require(evalEvery >= 0 && checkpointEvery >= 0, "eval_every/checkpoint_every", "must be 0 or more")
        try require(evalWindows >= 1, "eval_windows", "must be at least 1, got \(evalWindows)")
        try require(["f32", "f16", "q8_0", "none"].contains(exportGguf), "export_gguf", "use f32, f16, q8_0 or none, got '\(exportGguf)'")
        _ = try StudentLayers.parse(studentLayers, teacherLayers: Int.max)
        if !studentShape.isEmpty { _ = try StudentShape.parse(studentShape) }
    }
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
    /// `0,6,12` or `every:5` (blocks 0, 5, 10, ... below the teacher's count).
    public static func parse(_ text: String, teacherLayers: Int) throws -> [Int] {
        let layers: [Int]
        if text.hasPrefix("every:") {
            guard let step = Int(text.dropFirst("every:".count)), step >= 1 else {
                throw TrainingError.config("student_layers: '\(text)': write every:N with N >= 1")
            }
            layers = teacherLayers == Int.max ? [0] : Array(stride(from: 0, to: teacherLayers, by: step))
        } else {
            let parsed = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else {
                throw TrainingError.config("student_layers: '\(text)': write block numbers like 0,6,12 or every:N")
            }
            layers = parsed.map { $0! }
        }
        guard layers == layers.sorted(), Set(layers).count == layers.count, let first = layers.first, first >= 0,
              layers.last! < teacherLayers else {
            throw TrainingError.config("student_layers: '\(text)': blocks must be distinct, increasing and below the teacher's \(teacherLayers)")
        }
        return layers
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
        return try text.split(separator: ",").map { part in
            let numbers = part.split(separator: ":").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard numbers.count == 2, let s = numbers[0], let t = numbers[1], (0..<studentLayers).contains(s), (0..<teacherLayers).contains(t) else {
                throw TrainingError.config("\(key): '\(part)': write STUDENT:TEACHER block pairs, student below \(studentLayers), teacher below \(teacherLayers)")
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

    /// `blocks=4,width=256,heads=4,kv_heads=2,feed_forward=768`; every key is required.
    public static func parse(_ text: String) throws -> StudentShape {
        var values: [String: Int] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, keys.contains(pair[0]), let value = Int(pair[1]), value > 0 else {
                throw TrainingError.config("student_shape: '\(part)' is not KEY=N with KEY one of \(keys.joined(separator: ", ")) and N > 0")
            }
            values[pair[0]] = value
        }
        guard let missing = keys.first(where: { values[$0] == nil }) else {
            return StudentShape(blocks: values["blocks"]!, width: values["width"]!, heads: values["heads"]!,
                                kvHeads: values["kv_heads"]!, feedForward: values["feed_forward"]!)
        }
        throw TrainingError.config("student_shape: '\(text)' lacks \(missing)=N (write \(keys.map { "\($0)=N" }.joined(separator: ",")))")
    }
}
