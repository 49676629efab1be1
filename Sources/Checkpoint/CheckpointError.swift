/// Why a model file or checkpoint could not be read or written. ``description`` is one line that
/// names the file (and tensor or key) and, where there is something to do, says what.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
    /// A safetensors file that breaks the format (header, offsets, shapes): `reason` names the tensor.
    case invalidSafeTensors(file: String, reason: String)
    /// A tensor a safetensors file does not hold, or holds in a type kdgpu does not decode.
    case unsupportedTensor(file: String, tensor: String, reason: String)
    /// A required file is missing from a model or checkpoint folder.
    case missingFile(path: String, hint: String)
    /// A file that exists but could not be read (`reason` is the system's message).
    case unreadable(path: String, reason: String)
    /// config.json or trainer_state.json that is not what kdgpu writes.
    case invalidJSON(file: String, reason: String)
    /// Model tensors that do not fit the configuration (missing, extra, wrong shape).
    case parameterMismatch(source: String, reason: String)
    /// A model the export cannot represent (e.g. partial rotary dimensions in Hugging Face format).
    case unsupportedModel(source: String, reason: String)
    /// Optimizer moments that do not match the model's parameters.
    case optimizerMismatch(file: String, reason: String)
    /// A checkpoint written by another format version.
    case unsupportedVersion(file: String, found: Int, supported: Int)
    /// A tensor with a NaN or infinite value (`index` is the first), refused for a checkpoint or export.
    case nonFinite(source: String, tensor: String, index: Int)
    /// Writing failed (`reason` is the system's message, e.g. "No space left on device").
    case writeFailed(path: String, reason: String)
    /// A checkpoint save failed; the previous checkpoint is untouched.
    case saveFailed(directory: String, step: Int, reason: String)

    public var description: String {
        switch self {
        case let .invalidSafeTensors(file, reason):
            return "\(file): invalid safetensors file: \(reason)"
        case let .unsupportedTensor(file, tensor, reason):
            return "\(file): tensor '\(tensor)' \(reason)"
        case let .missingFile(path, hint):
            return "\(path) is missing; \(hint)"
        case let .unreadable(path, reason):
            return "cannot read \(path): \(reason)"
        case let .invalidJSON(file, reason):
            return "\(file): \(reason)"
        case let .parameterMismatch(source, reason):
            return "\(source): \(reason)"
        case let .unsupportedModel(source, reason):
            return "\(source): \(reason)"
        case let .optimizerMismatch(file, reason):
            return "\(file): optimizer state does not match the model: \(reason)"
        case let .unsupportedVersion(file, found, supported):
            return "\(file): checkpoint format version \(found), this build reads version \(supported); resume with the kdgpu that wrote it or start a new run"
        case let .nonFinite(source, tensor, index):
            return "\(source): tensor \(tensor) holds a non-finite value (at index \(index)); the model diverged: use an earlier checkpoint, or train again with a lower --lr"
        case let .writeFailed(path, reason):
            return "cannot write \(path): \(reason); an earlier version of the file is left as it was"
        case let .saveFailed(directory, step, reason):
            return "cannot save the step \(step) checkpoint in \(directory) (\(reason)); the previous checkpoint \(directory)/checkpoint is intact; free disk space and resume from it"
        }
    }
}
