/// Any JSON value: how a checkpoint keeps the training configuration it was written with, so that
/// a resumed run can list what changed.
///
/// ```swift
/// let configuration: JSONValue = ["seq_len": 256, "lr": 3e-4, "teacher": "teacher.gguf"]
/// configuration.differences(from: saved)   // ["seq_len: 128 in the checkpoint, 256 now"]
/// ```
public enum JSONValue: Codable, Equatable, Sendable, ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral,
                       ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral,
                       CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Compact JSON-like text for messages.
    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return "\(value)"
        case .number(let value):
            return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
        case .string(let value): return jsonString(value)
        case .array(let values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .object(let map):
            return "{" + map.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)): \($0.value)" }.joined(separator: ", ") + "}"
        }
    }

    /// Where `self` (the configuration now) differs from `saved` (the checkpoint's), one line per
    /// differing key path: `"seq_len: 128 in the checkpoint, 256 now"`. Empty when they are equal.
    public func differences(from saved: JSONValue, path: String = "") -> [String] {
        let label = path.isEmpty ? "configuration" : path
        switch (self, saved) {
        case let (.object(now), .object(then)):
            return Set(now.keys).union(then.keys).sorted().flatMap { key -> [String] in
                let child = path.isEmpty ? key : "\(path).\(key)"
                switch (now[key], then[key]) {
                case let (a?, b?): return a.differences(from: b, path: child)
                case let (a?, nil): return ["\(child): absent in the checkpoint, \(a) now"]
                case let (nil, b?): return ["\(child): \(b) in the checkpoint, absent now"]
                case (nil, nil): return []
                }
            }
        default:
            return self == saved ? [] : ["\(label): \(saved) in the checkpoint, \(self) now"]
        }
    }
}
