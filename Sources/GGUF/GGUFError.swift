/// Why a GGUF file could not be read or written. Each case names the file and, where there is
/// one, the metadata key or tensor; ``description`` is one line that also says what to do.
public enum GGUFError: Error, Equatable, CustomStringConvertible {
    /// The file could not be opened or mapped (`reason` is the system's message).
    case cannotOpen(file: String, reason: String)
    /// The file ends before `what` (at byte `offset`, `needed` bytes) could be read.
    case truncated(file: String, what: String, offset: Int, needed: Int, fileSize: Int)
    /// The first four bytes are not "GGUF".
    case badMagic(file: String, found: [UInt8])
    /// A version other than 2 or 3 (byte-swapped versions mean a big-endian file).
    case unsupportedVersion(file: String, version: UInt32)
    /// A count or length that cannot fit in the rest of the file (a corrupt or hostile header).
    case countExceedsFile(file: String, what: String, count: UInt64, bytesLeft: Int)
    /// A metadata value type id that is not 0...12.
    case invalidValueType(file: String, key: String, typeID: UInt32)
    /// Arrays nested deeper than ``GGUFFile/maximumArrayNesting``.
    case arrayNestingTooDeep(file: String, key: String)
    /// A key, tensor name or string value that is not valid UTF-8.
    case invalidUTF8(file: String, what: String)
    case duplicateKey(file: String, key: String)
    case duplicateTensor(file: String, tensor: String)
    /// `general.alignment` is not a power of two u32.
    case invalidAlignment(file: String, value: String)
    /// More than 4 dimensions.
    case tooManyDimensions(file: String, tensor: String, count: UInt32)
    /// Dimensions that overflow, or a row length that is not a whole number of blocks.
    case invalidDimensions(file: String, tensor: String, dimensions: [UInt64], reason: String)
    /// A ggml type this reader does not decode (K-quants, IQ types, integers) or an unknown id.
    case unsupportedTensorType(file: String, tensor: String, typeID: UInt32)
    /// A tensor offset that is not a multiple of the file's alignment.
    case misalignedTensor(file: String, tensor: String, offset: UInt64, alignment: Int)
    /// A tensor whose bytes run past the end of the file.
    case tensorOutOfBounds(file: String, tensor: String, offset: UInt64, byteCount: Int, dataSectionSize: Int)
    case missingKey(file: String, key: String)
    /// A metadata value of another type than the caller needs.
    case wrongValueType(file: String, key: String, found: String, expected: String)
    case missingTensor(file: String, tensor: String)
    /// The writer was given a tensor it cannot store.
    case invalidTensor(tensor: String, reason: String)
    /// The writer was given metadata it cannot store.
    case invalidMetadata(key: String, reason: String)
    /// Writing the output file failed (`reason` is the system's message).
    case writeFailed(file: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(file, reason):
            return "cannot open GGUF file \(file): \(reason)"
        case let .truncated(file, what, offset, needed, fileSize):
            return "\(file): truncated GGUF file: \(what) needs \(needed) bytes at offset \(offset) but the file is \(fileSize) bytes; re-download or re-export the model"
        case let .badMagic(file, found):
            let hex = found.map { String($0, radix: 16) }.joined(separator: " ")
            return "\(file) is not a GGUF file: it starts with bytes [\(hex)] instead of \"GGUF\""
        case let .unsupportedVersion(file, version):
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                return "\(file) is a big-endian GGUF file (version \(version.byteSwapped)); only little-endian files are supported"
            }
            return "\(file): unsupported GGUF version \(version); this reader supports versions 2 and 3"
        case let .countExceedsFile(file, what, count, bytesLeft):
            return "\(file): corrupt GGUF header: \(what) is \(count), which cannot fit in the \(bytesLeft) bytes left in the file"
        case let .invalidValueType(file, key, typeID):
            return "\(file): metadata key '\(key)' has invalid value type id \(typeID) (valid ids are 0...12)"
        case let .arrayNestingTooDeep(file, key):
            return "\(file): metadata key '\(key)' nests arrays more than \(GGUFFile.maximumArrayNesting) deep"
        case let .invalidUTF8(file, what):
            return "\(file): \(what) is not valid UTF-8"
        case let .duplicateKey(file, key):
            return "\(file): metadata key '\(key)' appears twice"
        case let .duplicateTensor(file, tensor):
            return "\(file): tensor '\(tensor)' appears twice"
        case let .invalidAlignment(file, value):
            return "\(file): general.alignment must be a power-of-two u32, found \(value)"
        case let .tooManyDimensions(file, tensor, count):
            return "\(file): tensor '\(tensor)' has \(count) dimensions; GGUF allows at most 4"
        case let .invalidDimensions(file, tensor, dimensions, reason):
            return "\(file): tensor '\(tensor)' has invalid dimensions \(dimensions): \(reason)"
        case let .unsupportedTensorType(file, tensor, typeID):
            let supported = GGMLType.allCases.map(\.description).joined(separator: ", ")
            return "\(file): tensor '\(tensor)' has ggml type \(GGMLType.name(ofTypeID: typeID)) (id \(typeID)), which kdgpu does not read; supported: \(supported) (requantize the model, e.g. llama-quantize ... Q8_0)"
        case let .misalignedTensor(file, tensor, offset, alignment):
            return "\(file): tensor '\(tensor)' has data offset \(offset), not a multiple of the alignment \(alignment)"
        case let .tensorOutOfBounds(file, tensor, offset, byteCount, dataSectionSize):
            return "\(file): tensor '\(tensor)' needs \(byteCount) bytes at data offset \(offset) but the data section is \(dataSectionSize) bytes; the file is truncated or corrupt"
        case let .missingKey(file, key):
            return "missing required metadata key \(key) in \(file)"
        case let .wrongValueType(file, key, found, expected):
            return "\(file): metadata key '\(key)' is \(found), expected \(expected)"
        case let .missingTensor(file, tensor):
            return "\(file): no tensor named '\(tensor)'"
        case let .invalidTensor(tensor, reason):
            return "cannot write tensor '\(tensor)': \(reason)"
        case let .invalidMetadata(key, reason):
            return "cannot write metadata key '\(key)': \(reason)"
        case let .writeFailed(file, reason):
            return "cannot write GGUF file \(file): \(reason)"
        }
    }
}
