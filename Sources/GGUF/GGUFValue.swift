/// The type tag of a GGUF metadata value, as stored in the file (a u32).
public enum GGUFValueType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case uint8 = 0
    case int8 = 1
    case uint16 = 2
    case int16 = 3
    case uint32 = 4
    case int32 = 5
    case float32 = 6
    case bool = 7
    case string = 8
    case array = 9
    case uint64 = 10
    case int64 = 11
    case float64 = 12

    /// Size of one value in the file, or nil for strings and arrays, whose size depends on a length.
    public var fixedByteCount: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }

    /// The fewest bytes a value of this type can take: a string is at least its u64 length, an
    /// array at least its u32 element type and u64 count. Used to reject absurd counts up front.
    var minimumByteCount: Int {
        switch self {
        case .string: return 8
        case .array: return 12
        default: return fixedByteCount!
        }
    }

    public var description: String {
        switch self {
        case .uint8: return "u8"
        case .int8: return "i8"
        case .uint16: return "u16"
        case .int16: return "i16"
        case .uint32: return "u32"
        case .int32: return "i32"
        case .float32: return "f32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "u64"
        case .int64: return "i64"
        case .float64: return "f64"
        }
    }
}

/// One GGUF metadata value.
///
/// Arrays carry their element type so that an empty array can be written back unchanged;
/// every element of `.array(t, elements)` has type `t` (arrays of arrays are allowed).
///
/// ```swift
/// writer.setMetadata("llama.block_count", .uint32(30))
/// writer.setMetadata("tokenizer.ggml.tokens", .array(of: ["<s>", "a", "b"]))
/// ```
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(String)
    case array(GGUFValueType, [GGUFValue])
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// A string array.
    public static func array(of strings: [String]) -> GGUFValue {
        .array(.string, strings.map { .string($0) })
    }

    /// An i32 array.
    public static func array(of integers: [Int32]) -> GGUFValue {
        .array(.int32, integers.map { .int32($0) })
    }

    /// An f32 array.
    public static func array(of floats: [Float]) -> GGUFValue {
        .array(.float32, floats.map { .float32($0) })
    }

    /// The value as an `Int` when it is an integer of any width that fits, else nil.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a `Double` when it is an f32 or f64, else nil.
    public var floatValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The elements when the value is an array, else nil.
    public var arrayValue: [GGUFValue]? {
        if case .array(_, let elements) = self { return elements }
        return nil
    }

    /// A short name of the value's type for error messages: "u32", "array of string".
    public var typeDescription: String {
        if case .array(let elementType, _) = self { return "array of \(elementType)" }
        return type.description
    }
}
