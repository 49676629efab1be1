/// Why a corpus could not be read, tokenized or cut into windows. ``description`` is one line that
/// names the file (and line, for JSONL) and says what to do.
public enum TrainingDataError: Error, Equatable, CustomStringConvertible {
    /// The corpus path does not exist.
    case missingPath(String)
    /// A file or folder could not be read (`reason` is the system's message).
    case unreadable(path: String, reason: String)
    /// A file's bytes are not UTF-8; `offset` is the first bad byte (from the start of the file).
    case notUTF8(path: String, offset: Int)
    /// A JSONL line that is not a JSON object.
    case invalidJSONLine(path: String, line: Int, reason: String)
    /// A JSONL object without a string under the text field.
    case missingTextField(path: String, line: Int, field: String)
    /// No text at all: a folder without .txt/.md/.text files, or only empty documents.
    case emptyCorpus(path: String, reason: String)
    /// The tokenizer rejected a document.
    case tokenizationFailed(path: String, reason: String)
    /// The token cache could not be written (`reason` is the system's message).
    case cacheWriteFailed(path: String, reason: String)
    /// A token file that is not a valid token file (when read directly with ``TokenFile/read(from:)``).
    case invalidTokenFile(path: String, reason: String)
    /// A window length below 2: the trainer predicts tokens 1..<T from each window.
    case sequenceLengthTooShort(Int)
    /// Fewer tokens than one window.
    case corpusShorterThanOneWindow(tokens: Int, sequenceLength: Int)
    case invalidValidationFraction(Double)
    case invalidBatchSize(batchSize: Int, trainingWindows: Int)
    /// A prompt file (`--prompts`) that cannot be used: `line` (1-based) names the line at fault, if one is.
    case badPromptFile(path: String, line: Int?, reason: String)
    /// A saved data position that does not fit this dataset (the corpus or the window length changed).
    case positionOutOfRange(epoch: Int, index: Int, trainingWindows: Int)

    public var description: String {
        switch self {
        case let .missingPath(path):
            return "corpus path \(path) does not exist; give a text file, a folder of .txt/.md/.text files, or a .jsonl file"
        case let .unreadable(path, reason):
            return "cannot read \(path): \(reason); check the path and its permissions"
        case let .notUTF8(path, offset):
            return "\(path) is not UTF-8 text (invalid byte at offset \(offset)); convert it to UTF-8 (e.g. iconv -t UTF-8) or remove it from the corpus"
        case let .badPromptFile(path, line, reason):
            return "\(path)\(line.map { ":\($0)" } ?? ""): \(reason)"
        case let .invalidJSONLine(path, line, reason):
            return "\(path):\(line): \(reason); each line of a JSONL corpus must be one JSON object"
        case let .missingTextField(path, line, field):
            return "\(path):\(line): no string field \"\(field)\"; each line must be a JSON object with the text under \"\(field)\" (or name another field with --text-field)"
        case let .emptyCorpus(path, reason):
            return "corpus \(path) is empty: \(reason); add text to train on"
        case let .tokenizationFailed(path, reason):
            return "cannot tokenize \(path): \(reason)"
        case let .cacheWriteFailed(path, reason):
            return "cannot write the token cache \(path): \(reason); free disk space or choose another cache folder"
        case let .invalidTokenFile(path, reason):
            return "\(path) is not a valid kdgpu token file: \(reason); delete it to re-tokenize"
        case let .sequenceLengthTooShort(length):
            return "sequence length \(length) is too short: each window predicts its tokens 1..<T from the ones before, so T must be at least 2"
        case let .corpusShorterThanOneWindow(tokens, sequenceLength):
            return "corpus has \(tokens) tokens, fewer than one window of \(sequenceLength); use a smaller --seq-len or more text"
        case let .invalidValidationFraction(fraction):
            return "validation fraction \(fraction) must be at least 0 and below 1"
        case let .invalidBatchSize(batchSize, trainingWindows):
            return "batch size \(batchSize) does not fit the \(trainingWindows) training windows; use a batch size from 1 to \(trainingWindows), a smaller --seq-len or more text"
        case let .positionOutOfRange(epoch, index, trainingWindows):
            return "data position (epoch \(epoch), index \(index)) is outside this dataset's \(trainingWindows) training windows; the corpus, tokenizer or --seq-len changed since the checkpoint was written"
        }
    }
}
