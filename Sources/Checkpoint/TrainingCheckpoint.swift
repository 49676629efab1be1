import Files
import Foundation
import GGUF
import Models

/// AdamW's running moments, one pair of tensors per parameter (same names, shapes and GGUF layout
/// as ``LlamaParameters/tensors``).
public struct AdamWMoments: Equatable, Sendable {
    /// m: the running mean of the gradients.
    public var first: [String: ParameterTensor]
    /// v: the running mean of the squared gradients.
    public var second: [String: ParameterTensor]

    public init(first: [String: ParameterTensor], second: [String: ParameterTensor]) {
        self.first = first
        self.second = second
    }

    /// Zero moments for every parameter (the state before the first step).
    public static func zeros(like parameters: LlamaParameters) -> AdamWMoments {
        let zeros = parameters.tensors.mapValues { ParameterTensor.zeros(shape: $0.shape) }
        return AdamWMoments(first: zeros, second: zeros)
    }

    /// Checks there is exactly one first and one second moment of the right shape per parameter,
    /// and that every value is finite.
    func validate(against parameters: LlamaParameters, source: String) throws {
        for (label, moments) in [("first", first), ("second", second)] {
            for name in parameters.names {
                guard let moment = moments[name] else {
                    throw CheckpointError.optimizerMismatch(file: source, reason: "no \(label) moment for \(name)")
                }
                let shape = parameters.tensors[name]!.shape
                guard moment.shape == shape else {
                    throw CheckpointError.optimizerMismatch(file: source, reason: "\(label) moment of \(name) has shape \(moment.shape), the parameter \(shape)")
                }
                if let index = moment.values.firstIndex(where: { !$0.isFinite }) {
                    throw CheckpointError.nonFinite(source: source, tensor: "\(label) moment of \(name)", index: index)
                }
            }
            if moments.count != parameters.tensors.count {
                let extra = moments.keys.filter { parameters.tensors[$0] == nil }.sorted()
                throw CheckpointError.optimizerMismatch(file: source, reason: "\(label) moments for unknown parameters \(extra.prefix(5).joined(separator: ", "))")
            }
        }
    }
}

extension AdamWMoments {
    static let firstPrefix = "first_moment.", secondPrefix = "second_moment."

    /// Adds the moments of `name` to a safetensors file as `first_moment.<name>` and `second_moment.<name>`.
    func add(_ name: String, to file: inout SafeTensorsWriter) throws {
        guard let m = first[name], let v = second[name] else {
            throw CheckpointError.optimizerMismatch(file: "checkpoint to save", reason: "no moments for \(name)")
        }
        try file.add(Self.firstPrefix + name, shape: m.shape, values: m.values)
        try file.add(Self.secondPrefix + name, shape: v.shape, values: v.values)
    }

    /// The moments of a safetensors file (by their prefixes), and its other tensors by name.
    static func read(_ file: SafeTensorsFile) throws -> (moments: AdamWMoments, others: [String: ParameterTensor]) {
        var moments = AdamWMoments(first: [:], second: [:])
        var others: [String: ParameterTensor] = [:]
        for entry in file.entries {
            let tensor = ParameterTensor(shape: entry.shape, values: try file.floats(entry.name))
            if entry.name.hasPrefix(firstPrefix) {
                moments.first[String(entry.name.dropFirst(firstPrefix.count))] = tensor
            } else if entry.name.hasPrefix(secondPrefix) {
                moments.second[String(entry.name.dropFirst(secondPrefix.count))] = tensor
            } else {
                others[entry.name] = tensor
            }
        }
        return (moments, others)
    }
}

/// Trainable tensors beside the student (the modules of feature losses: attention alignment, hint
/// projections) and their AdamW moments, by name.
public struct AuxiliaryParameters: Equatable, Sendable {
    public var values: [String: ParameterTensor]
    public var moments: AdamWMoments

    public init(values: [String: ParameterTensor], moments: AdamWMoments) {
        self.values = values
        self.moments = moments
    }

    /// A run that trains nothing beside the student.
    public static let none = AuxiliaryParameters(values: [:], moments: AdamWMoments(first: [:], second: [:]))
}

/// The trainer's bookkeeping: enough to continue a run exactly where it stopped.
public struct TrainerState: Codable, Equatable, Sendable {
    /// The version of the checkpoint layout this build writes and reads.
    public static let currentFormatVersion = 1

    public var formatVersion: Int
    /// Optimizer steps taken.
    public var step: Int
    /// The data position of the next batch (TrainingData's `DataPosition`: epoch, index within the epoch).
    public var dataEpoch: Int
    public var dataIndex: Int
    /// The trainer's random generator state (e.g. `SplitMix64.state`); a string in the JSON, because
    /// JSON numbers lose integers above 2^53.
    public var rngState: UInt64
    /// The training configuration (CLI options) the run was started with, compared on resume.
    public var configuration: JSONValue
    /// The state of the loss schedules (temperature, TAID's interpolation), restored on resume.
    public var schedules: JSONValue
    /// Processes that took each step (`mpirun -np N`; 1 alone, and in checkpoints from before it was kept).
    public var processes: Int = 1
    /// On-policy state (the adaptive fraction, the replay buffer); nil for runs without rollouts.
    public var rollouts: JSONValue?

    public init(step: Int, dataEpoch: Int, dataIndex: Int, rngState: UInt64, configuration: JSONValue, schedules: JSONValue = .object([:])) {
        formatVersion = TrainerState.currentFormatVersion
        self.step = step
        self.dataEpoch = dataEpoch
        self.dataIndex = dataIndex
        self.rngState = rngState
        self.configuration = configuration
        self.schedules = schedules
    }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", step, dataEpoch = "data_epoch", dataIndex = "data_index"
        case rngState = "rng_state", configuration, schedules, processes, rollouts
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        formatVersion = try container.decode(Int.self, forKey: .formatVersion)
        step = try container.decode(Int.self, forKey: .step)
        dataEpoch = try container.decode(Int.self, forKey: .dataEpoch)
        dataIndex = try container.decode(Int.self, forKey: .dataIndex)
        for (key, value) in [(CodingKeys.step, step), (.dataEpoch, dataEpoch), (.dataIndex, dataIndex)] where value < 0 {
            throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(value) is negative; it counts from 0")
        }
        let rng = try container.decode(String.self, forKey: .rngState)
        guard let state = UInt64(rng) else {
            throw DecodingError.dataCorruptedError(forKey: .rngState, in: container, debugDescription: "rng_state '\(rng)' is not a decimal UInt64")
        }
        rngState = state
        configuration = try container.decode(JSONValue.self, forKey: .configuration)
        schedules = try container.decode(JSONValue.self, forKey: .schedules)
        processes = try container.decodeIfPresent(Int.self, forKey: .processes) ?? 1
        rollouts = try container.decodeIfPresent(JSONValue.self, forKey: .rollouts)
        guard processes >= 1 else {
            throw DecodingError.dataCorruptedError(forKey: .processes, in: container, debugDescription: "\(processes) processes; at least 1")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(formatVersion, forKey: .formatVersion)
        try container.encode(step, forKey: .step)
        try container.encode(dataEpoch, forKey: .dataEpoch)
        try container.encode(dataIndex, forKey: .dataIndex)
        try container.encode(String(rngState), forKey: .rngState)
        try container.encode(configuration, forKey: .configuration)
        try container.encode(schedules, forKey: .schedules)
        if processes != 1 { try container.encode(processes, forKey: .processes) }
        try container.encodeIfPresent(rollouts, forKey: .rollouts)
    }
}

/// A training checkpoint: the student, its AdamW moments and the trainer state.
///
/// Folder layout (`DIR` is the run's checkpoint folder):
///
///     DIR/checkpoint -> step-00000500      symbolic link to the current checkpoint, replaced atomically
///     DIR/step-00000500/
///         config.json                      Hugging Face config
///         model.safetensors                the student in Hugging Face names and layout, F32
///                                          (so DIR/checkpoint loads with transformers as is)
///         optimizer.safetensors            "first_moment.<GGUF name>", "second_moment.<GGUF name>", F32, GGUF layout
///         tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json
///                                          the tokenizer (``HuggingFaceTokenizer``), for transformers and GGUF export
///         trainer_state.json               format_version, step, data_epoch, data_index, rng_state, configuration, schedules
///         auxiliary.safetensors            only with feature-loss modules: "<name>", "first_moment.<name>", "second_moment.<name>"
///
/// Saving never touches the current checkpoint until the new one is complete on disk:
/// 1. write the four files into a fresh hidden folder `DIR/.partial-step-N-<random>/`, fsync each,
///    fsync the folder;
/// 2. rename it to `DIR/step-N` (atomic) and fsync `DIR`;
/// 3. point a new symbolic link `DIR/.checkpoint.tmp-<random>` at it and rename it over
///    `DIR/checkpoint` (atomic), fsync `DIR`;
/// 4. remove older `step-*` folders and leftovers of interrupted saves.
///
/// A crash or a full disk before step 3 leaves `DIR/checkpoint` naming the previous, complete
/// checkpoint (the failed save removes its partial folder; a crash leaves it for step 4 of the next
/// save). After step 3 the new checkpoint is complete and current. There is no moment without a
/// complete checkpoint behind `DIR/checkpoint`.
///
/// ```swift
/// let checkpoint = TrainingCheckpoint(parameters: student, moments: moments,
///                                     state: TrainerState(step: 500, dataEpoch: 1, dataIndex: 64, rngState: rng.state, configuration: options))
/// try checkpoint.save(in: URL(fileURLWithPath: "runs/student"))
/// let resumed = try TrainingCheckpoint.load(from: URL(fileURLWithPath: "runs/student"))
/// ```
public struct TrainingCheckpoint: Equatable, Sendable {
    public static let currentLinkName = "checkpoint"
    public static let modelFileName = HuggingFaceCheckpoint.modelFileName
    public static let configFileName = HuggingFaceCheckpoint.configFileName
    public static let optimizerFileName = "optimizer.safetensors"
    public static let stateFileName = "trainer_state.json"
    public static let auxiliaryFileName = "auxiliary.safetensors"

    public var parameters: LlamaParameters
    public var moments: AdamWMoments
    public var state: TrainerState
    /// Empty when the run trains nothing beside the student.
    public var auxiliary: AuxiliaryParameters
    /// The student's tokenizer as GGUF `tokenizer.*` metadata (the teacher's); nil in checkpoints
    /// of kdgpu versions that did not keep it.
    public var tokenizer: GGUFMetadata?

    public init(parameters: LlamaParameters, moments: AdamWMoments, state: TrainerState,
                auxiliary: AuxiliaryParameters = .none, tokenizer: GGUFMetadata?) {
        self.parameters = parameters
        self.moments = moments
        self.state = state
        self.auxiliary = auxiliary
        self.tokenizer = tokenizer
    }

    /// The folder `DIR/checkpoint` points at, or nil when there is no checkpoint in `directory`.
    public static func currentFolder(in directory: URL) -> URL? {
        let link = directory.appendingPathComponent(currentLinkName)
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: link.path) else {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: link.path, isDirectory: &isDirectory) && isDirectory.boolValue ? link : nil
        }
        let folder = target.hasPrefix("/") ? URL(fileURLWithPath: target) : directory.appendingPathComponent(target)
        return FileManager.default.fileExists(atPath: folder.path) ? folder : nil
    }

    /// Saves as the run's current checkpoint in `directory` (see the type's documentation for the
    /// layout and why an interrupted save leaves the previous checkpoint intact).
    /// - Parameter writer: where the bytes go; tests pass one that fails like a full disk.
    /// - Returns: the new checkpoint's folder (`DIR/step-N`).
    @discardableResult
    public func save(in directory: URL, using writer: DurableFileWriter = DurableFileWriter()) throws -> URL {
        try moments.validate(against: parameters, source: "checkpoint to save")
        let manager = FileManager.default
        do {
            try FileChecks.createFolder(directory.path)
        } catch let problem as FileProblem {
            throw CheckpointError.writeFailed(path: problem.path, reason: problem.reason)
        }
        let current = TrainingCheckpoint.currentFolder(in: directory)?.standardizedFileURL.lastPathComponent
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let stepName = String(format: "step-%08d", state.step)
        var finalName = stepName
        var attempt = 1
        while finalName == current {  // saving the same step again: a new folder beside the current one
            attempt += 1
            finalName = "\(stepName)-\(attempt)"
        }
        let partial = directory.appendingPathComponent(".partial-\(finalName)-\(suffix)")
        let final = directory.appendingPathComponent(finalName)

        // 1-2: the new checkpoint, complete on disk under its final name.
        do {
            try manager.createDirectory(at: partial, withIntermediateDirectories: false)
            try HuggingFaceCheckpoint.writeInPlace(parameters, tokenizer: tokenizer, to: partial, using: writer)
            var optimizer = SafeTensorsWriter(metadata: ["format": "kdgpu-adamw", "layout": "gguf"])
            for name in parameters.names { try moments.add(name, to: &optimizer) }
            try optimizer.writeInPlace(to: partial.appendingPathComponent(TrainingCheckpoint.optimizerFileName), using: writer)
            if !auxiliary.values.isEmpty {
                var file = SafeTensorsWriter(metadata: ["format": "kdgpu-auxiliary"])
                for (name, value) in auxiliary.values.sorted(by: { $0.key < $1.key }) {
                    try file.add(name, shape: value.shape, values: value.values)
                    try auxiliary.moments.add(name, to: &file)
                }
                try file.writeInPlace(to: partial.appendingPathComponent(TrainingCheckpoint.auxiliaryFileName), using: writer)
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let stateJSON = Array(try encoder.encode(state)) + [UInt8(ascii: "\n")]
            try writer.writeFile(at: partial.appendingPathComponent(TrainingCheckpoint.stateFileName)) { try $0.write(stateJSON) }
            try writer.syncFolder(partial)
            if manager.fileExists(atPath: final.path) {  // a complete but unpublished folder of an interrupted save
                try manager.removeItem(at: final)
            }
            try writer.rename(partial, to: final)
            try writer.syncFolder(directory)
        } catch {
            try? manager.removeItem(at: partial)
            throw saveFailure(error, directory: directory)
        }

        // 3: publish by replacing the link.
        let temporaryLink = directory.appendingPathComponent(".\(TrainingCheckpoint.currentLinkName).tmp-\(suffix)")
        do {
            try manager.createSymbolicLink(atPath: temporaryLink.path, withDestinationPath: finalName)
            try writer.rename(temporaryLink, to: directory.appendingPathComponent(TrainingCheckpoint.currentLinkName))
            try writer.syncFolder(directory)
        } catch {
            try? manager.removeItem(at: temporaryLink)
            try? manager.removeItem(at: final)
            throw saveFailure(error, directory: directory)
        }

        // 4: the previous checkpoint and leftovers of interrupted saves.
        for entry in (try? manager.contentsOfDirectory(atPath: directory.path)) ?? [] where entry != finalName {
            if entry.hasPrefix("step-") || entry.hasPrefix(".partial-step-") || entry.hasPrefix(".\(TrainingCheckpoint.currentLinkName).tmp-") {
                try? manager.removeItem(at: directory.appendingPathComponent(entry))
            }
        }
        return final
    }

    private func saveFailure(_ error: Error, directory: URL) -> CheckpointError {
        if case let CheckpointError.writeFailed(path, reason) = error {
            return .saveFailed(directory: directory.path, step: state.step, reason: "writing \(URL(fileURLWithPath: path).lastPathComponent): \(reason)")
        }
        return .saveFailed(directory: directory.path, step: state.step, reason: error is CheckpointError ? "\(error)" : FileChecks.describe(error))
    }

    /// Loads the current checkpoint of `directory` (through `DIR/checkpoint`), or `directory`
    /// itself when it is a checkpoint folder, validating every file against the others.
    public static func load(from directory: URL) throws -> TrainingCheckpoint {
        let folder: URL
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent(stateFileName).path) {
            folder = directory
        } else if let current = currentFolder(in: directory) {
            folder = current
        } else {
            throw CheckpointError.missingFile(path: directory.appendingPathComponent(currentLinkName).path,
                                              hint: "there is no checkpoint in \(directory.path); start a new run, or give the folder a run wrote its checkpoints to")
        }
        for file in [configFileName, modelFileName, optimizerFileName, stateFileName] {
            let path = folder.appendingPathComponent(file).path
            guard FileManager.default.fileExists(atPath: path) else {
                throw CheckpointError.missingFile(path: path, hint: "the checkpoint is incomplete; it was not written by kdgpu's checkpoint writer")
            }
        }
        let state = try readState(folder.appendingPathComponent(stateFileName))
        let parameters = try HuggingFaceCheckpoint.read(from: folder)
        let optimizerFile = try SafeTensorsFile(url: folder.appendingPathComponent(optimizerFileName))
        let (moments, unexpected) = try AdamWMoments.read(optimizerFile)
        if let name = unexpected.keys.sorted().first {
            throw CheckpointError.optimizerMismatch(file: optimizerFile.path, reason: "unexpected tensor \(name)")
        }
        try moments.validate(against: parameters, source: optimizerFile.path)
        return TrainingCheckpoint(parameters: parameters, moments: moments, state: state,
                                  auxiliary: try readAuxiliary(folder.appendingPathComponent(auxiliaryFileName)),
                                  tokenizer: try HuggingFaceCheckpoint.readTokenizer(from: folder))
    }

    /// The feature-loss modules of `auxiliary.safetensors`, or none when the file is absent.
    static func readAuxiliary(_ url: URL) throws -> AuxiliaryParameters {
        guard FileManager.default.fileExists(atPath: url.path) else { return .none }
        let (moments, values) = try AdamWMoments.read(SafeTensorsFile(url: url))
        let auxiliary = AuxiliaryParameters(values: values, moments: moments)
        for name in auxiliary.values.keys.sorted() where auxiliary.moments.first[name]?.shape != auxiliary.values[name]!.shape
            || auxiliary.moments.second[name]?.shape != auxiliary.values[name]!.shape {
            throw CheckpointError.optimizerMismatch(file: url.path, reason: "the moments of \(name) are missing or of another shape")
        }
        return auxiliary
    }

    /// Reads a `trainer_state.json`; errors name the file and the key at fault.
    public static func readState(_ url: URL) throws -> TrainerState {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CheckpointError.unreadable(path: url.path, reason: FileChecks.describe(error))
        }
        // The version first, so a newer layout is reported as such rather than as a bad key.
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let version = (object["format_version"] as? NSNumber)?.intValue, version != TrainerState.currentFormatVersion {
            throw CheckpointError.unsupportedVersion(file: url.path, found: version, supported: TrainerState.currentFormatVersion)
        }
        do {
            return try JSONDecoder().decode(TrainerState.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw CheckpointError.invalidJSON(file: url.path, reason: "required key \"\(key.stringValue)\" is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.dataCorrupted(context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw CheckpointError.invalidJSON(file: url.path, reason: key.isEmpty ? "not valid JSON" : "key \"\(key)\" is invalid: \(context.debugDescription)")
        } catch {
            throw CheckpointError.invalidJSON(file: url.path, reason: "not valid JSON")
        }
    }
}
