/// Typed reads of GGUF metadata, for a file and for metadata held apart from one (a tokenizer kept
/// in a checkpoint): every error names `path` and the key.
public protocol GGUFMetadataSource {
    /// The file (or folder) the metadata came from, used in every error message.
    var path: String { get }
    var metadata: [String: GGUFValue] { get }
}

/// Metadata without tensors, keys in order (e.g. a GGUF's `tokenizer.*` entries rebuilt from another format).
public struct GGUFMetadata: GGUFMetadataSource, Equatable, Sendable {
    public let path: String
    public let metadata: [String: GGUFValue]
    public let metadataKeys: [String]

    /// - Parameter entries: distinct keys, in the order a writer should store them.
    public init(path: String, entries: [(key: String, value: GGUFValue)]) {
        self.path = path
        metadata = Dictionary(entries, uniquingKeysWith: { $1 })
        metadataKeys = entries.map(\.key)
    }

    /// The entries under keys starting with `prefix`, in file order (`"tokenizer."`: a model's tokenizer).
    public init(_ file: GGUFFile, keysWithPrefix prefix: String) {
        self.init(path: file.path, entries: file.metadataKeys.filter { $0.hasPrefix(prefix) }.map { ($0, file.metadata[$0]!) })
    }

    /// The same keys and values (where they came from and their order aside).
    public static func == (a: GGUFMetadata, b: GGUFMetadata) -> Bool { a.metadata == b.metadata }

    /// A model's tokenizer: its `tokenizer.*` entries.
    public static func tokenizer(of file: GGUFFile) -> GGUFMetadata { GGUFMetadata(file, keysWithPrefix: "tokenizer.") }

    public var entries: [(key: String, value: GGUFValue)] { metadataKeys.map { ($0, metadata[$0]!) } }
}

extension GGUFMetadataSource {

    /// The value stored under `key`, or a `missingKey` error naming the key and the file.
    public func value(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        return value
    }

    public func contains(_ key: String) -> Bool { metadata[key] != nil }

    /// An integer value of any width that fits in `Int`.
    public func int(_ key: String) throws -> Int {
        let value = try value(key)
        guard let int = value.intValue else { throw wrongType(key, value, expected: "an integer") }
        return int
    }

    /// An integer value of any width that fits in a `UInt32` (e.g. `llama.block_count`).
    public func uint32(_ key: String) throws -> UInt32 {
        let value = try value(key)
        guard let int = value.intValue, let result = UInt32(exactly: int) else {
            throw wrongType(key, value, expected: "an integer in 0...\(UInt32.max)")
        }
        return result
    }

    /// An f32 or f64 value.
    public func float(_ key: String) throws -> Float {
        let value = try value(key)
        guard let double = value.floatValue else { throw wrongType(key, value, expected: "f32 or f64") }
        return Float(double)
    }

    public func string(_ key: String) throws -> String {
        let value = try value(key)
        guard let string = value.stringValue else { throw wrongType(key, value, expected: "string") }
        return string
    }

    public func bool(_ key: String) throws -> Bool {
        let value = try value(key)
        guard let bool = value.boolValue else { throw wrongType(key, value, expected: "bool") }
        return bool
    }

    public func stringArray(_ key: String) throws -> [String] {
        let value = try value(key)
        guard case .array(.string, let elements) = value else {
            throw wrongType(key, value, expected: "array of string")
        }
        return elements.map { $0.stringValue! }
    }

    /// An array of integers of any width.
    public func intArray(_ key: String) throws -> [Int] {
        let value = try value(key)
        let error = wrongType(key, value, expected: "array of integers")
        guard let elements = value.arrayValue else { throw error }
        return try elements.map { element in
            guard let int = element.intValue else { throw error }
            return int
        }
    }

    /// An array of f32 or f64.
    public func floatArray(_ key: String) throws -> [Float] {
        let value = try value(key)
        let error = wrongType(key, value, expected: "array of f32 or f64")
        guard let elements = value.arrayValue else { throw error }
        return try elements.map { element in
            guard let double = element.floatValue else { throw error }
            return Float(double)
        }
    }

    func wrongType(_ key: String, _ value: GGUFValue, expected: String) -> GGUFError {
        .wrongValueType(file: path, key: key, found: value.typeDescription, expected: expected)
    }
}
