/// Why a tokenizer could not be built or could not encode or decode. ``description`` is one line
/// naming the file, token or byte involved.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// `tokenizer.ggml.model` is not "gpt2" (byte-level BPE), the only model implemented.
    case unsupportedModel(file: String, model: String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this tokenizer does not implement.
    case unknownPreTokenizer(file: String, name: String)
    /// The vocabulary arrays are inconsistent (lengths, token types, special ids).
    case invalidVocabulary(file: String, reason: String)
    /// A merge rule that is malformed or refers to strings missing from the vocabulary.
    case invalidMerge(file: String, rank: Int, merge: String, reason: String)
    /// The vocabulary has no single-byte token for a byte of the input.
    case byteWithoutToken(file: String, byte: UInt8)
    /// Input bytes that are not UTF-8; `offset` is the first bad byte.
    case invalidUTF8(offset: Int)
    case tokenIDOutOfRange(id: Int32, vocabularySize: Int)

    public var description: String {
        switch self {
        case let .unsupportedModel(file, model):
            return "\(file): tokenizer.ggml.model is '\(model)'; only 'gpt2' (byte-level BPE) is supported"
        case let .unknownPreTokenizer(file, name):
            let known = PreTokenizer.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            return "\(file): unknown pre-tokenizer tokenizer.ggml.pre = '\(name)'; supported: \(known)"
        case let .invalidVocabulary(file, reason):
            return "\(file): invalid tokenizer vocabulary: \(reason)"
        case let .invalidMerge(file, rank, merge, reason):
            return "\(file): tokenizer.ggml.merges[\(rank)] '\(merge)' \(reason)"
        case let .byteWithoutToken(file, byte):
            return "\(file): the vocabulary has no token for byte 0x\(String(byte, radix: 16, uppercase: true)), so this text cannot be encoded"
        case let .invalidUTF8(offset):
            return "input is not valid UTF-8 at byte \(offset)"
        case let .tokenIDOutOfRange(id, vocabularySize):
            return "token id \(id) is outside the vocabulary of \(vocabularySize) tokens"
        }
    }
}
