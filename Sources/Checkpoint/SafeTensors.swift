import Files
import Foundation
import Tensor

/// Element types of safetensors files. kdgpu decodes and writes the float types; the others are
/// known so that a file holding them can still be validated and its float tensors read.
public enum SafeTensorsDType: String, CaseIterable, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"
    case f64 = "F64", i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL", f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var bytesPerElement: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// Whether ``SafeTensorsFile/floats(_:)`` decodes it and ``SafeTensorsWriter`` writes it.
    public var isSupportedFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// Hugging Face's `torch_dtype` name.
    public var torchName: String {
        switch self {
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        default: return rawValue.lowercased()
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct SafeTensorsEntry: Equatable, Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    /// Outermost first (PyTorch order).
    public let shape: [Int]
    /// Byte range in the data section (after the header).
    public let dataRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped and validated on open.
///
/// Layout: u64 little-endian header length N, N bytes of JSON
/// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}`,
/// then the data section. Opening checks the header length against the file size, every entry's
/// fields, that each byte range matches its dtype and shape, and that the ranges tile the data
/// section exactly (no overlaps, holes or trailing bytes), as the reference implementation does.
///
/// ```swift
/// let file = try SafeTensorsFile(url: folder.appendingPathComponent("model.safetensors"))
/// let embedding = try file.floats("model.embed_tokens.weight")   // [V * C]
/// ```
public final class SafeTensorsFile: @unchecked Sendable {
    /// Headers larger than this are refused (the reference implementation's limit).
    public static let maximumHeaderBytes = 100_000_000

    public let path: String
    /// Entries in data order.
    public let entries: [SafeTensorsEntry]
    public let metadata: [String: String]
    private let index: [String: Int]
    private let data: Data
    private let dataStart: Int

    public convenience init(url: URL) throws {
        try self.init(path: url.path)
    }

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw CheckpointError.missingFile(path: path, hint: "give the path of a .safetensors file")
        }
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw CheckpointError.unreadable(path: path, reason: FileChecks.describe(error))
        }
        func invalid(_ reason: String) -> CheckpointError { .invalidSafeTensors(file: path, reason: reason) }
        guard data.count >= 8 else {
            throw invalid("the file is \(data.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(data.count - 8) else {
            throw invalid("header length \(headerLength) runs past the end of the \(data.count)-byte file")
        }
        guard headerLength <= UInt64(SafeTensorsFile.maximumHeaderBytes) else {
            throw invalid("header length \(headerLength) exceeds \(SafeTensorsFile.maximumHeaderBytes) bytes")
        }
        dataStart = 8 + Int(headerLength)
        let dataSize = data.count - dataStart
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart))
        } catch {
            throw invalid("the \(headerLength)-byte header is not valid JSON")
        }
        guard let header = json as? [String: Any] else { throw invalid("the header is not a JSON object") }

        var metadata: [String: String] = [:]
        if let rawMetadata = header["__metadata__"] {
            guard let map = rawMetadata as? [String: Any] else { throw invalid("__metadata__ is not an object") }
            for (key, value) in map {
                guard let string = value as? String else { throw invalid("__metadata__ value of '\(key)' is not a string") }
                metadata[key] = string
            }
        }
        self.metadata = metadata

        var entries: [SafeTensorsEntry] = []
        for (name, value) in header where name != "__metadata__" {
            guard let fields = value as? [String: Any] else { throw invalid("tensor '\(name)': entry is not an object") }
            guard let dtypeName = fields["dtype"] as? String else { throw invalid("tensor '\(name)': no dtype string") }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw invalid("tensor '\(name)': unknown dtype '\(dtypeName)'")
            }
            guard let shape = SafeTensorsFile.integers(fields["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw invalid("tensor '\(name)': shape is not a list of non-negative integers")
            }
            guard let offsets = SafeTensorsFile.integers(fields["data_offsets"]), offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw invalid("tensor '\(name)': data_offsets is not [begin, end] with 0 <= begin <= end")
            }
            guard offsets[1] <= dataSize else {
                throw invalid("tensor '\(name)': data_offsets [\(offsets[0]), \(offsets[1])] run past the \(dataSize)-byte data section")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, dim in
                let product = acc.0.multipliedReportingOverflow(by: dim)
                return (product.partialValue, acc.1 || product.overflow)
            }
            let expectedBytes = elements.multipliedReportingOverflow(by: dtype.bytesPerElement)
            guard !overflow, !expectedBytes.overflow, expectedBytes.partialValue == offsets[1] - offsets[0] else {
                throw invalid("tensor '\(name)': \(dtype.rawValue) shape \(shape) needs \(overflow ? "too many" : String(expectedBytes.partialValue)) bytes but data_offsets [\(offsets[0]), \(offsets[1])] hold \(offsets[1] - offsets[0])")
            }
            entries.append(SafeTensorsEntry(name: name, dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1]))
        }
        entries.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound, $0.name) < ($1.dataRange.lowerBound, $1.dataRange.upperBound, $1.name) }
        var covered = 0
        var previous: SafeTensorsEntry?
        for entry in entries {
            if entry.dataRange.lowerBound < covered, let previous {
                throw invalid("tensor '\(entry.name)' (bytes \(entry.dataRange.lowerBound)..<\(entry.dataRange.upperBound)) overlaps tensor '\(previous.name)' (bytes \(previous.dataRange.lowerBound)..<\(previous.dataRange.upperBound))")
            }
            if entry.dataRange.lowerBound > covered {
                throw invalid("data bytes \(covered)..<\(entry.dataRange.lowerBound) before tensor '\(entry.name)' belong to no tensor")
            }
            covered = entry.dataRange.upperBound
            previous = entry
        }
        guard covered == dataSize else {
            throw invalid("\(dataSize - covered) bytes after the last tensor's data belong to no tensor")
        }
        self.entries = entries
        index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    /// JSON integers (and only integers) as Ints.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var result: [Int] = []
        for element in array {
            guard let number = element as? NSNumber, let integer = Int(exactly: number.doubleValue) else { return nil }
            result.append(integer)
        }
        return result
    }

    public var names: [String] { entries.map(\.name) }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func entry(_ name: String) throws -> SafeTensorsEntry {
        guard let position = index[name] else {
            throw CheckpointError.unsupportedTensor(file: path, tensor: name, reason: "is not in the file")
        }
        return entries[position]
    }

    /// The tensor's values as fp32 (F32, F16 and BF16 tensors).
    public func floats(_ name: String) throws -> [Float] {
        let entry = try entry(name)
        guard entry.dtype.isSupportedFloat else {
            throw CheckpointError.unsupportedTensor(file: path, tensor: name, reason: "is \(entry.dtype.rawValue); kdgpu reads F32, F16 and BF16 tensors")
        }
        let count = entry.elementCount
        let start = dataStart + entry.dataRange.lowerBound
        return data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + start
            return [Float](unsafeUninitializedCapacity: count) { output, initialized in
                switch entry.dtype {
                case .f32:
                    for i in 0..<count { output[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case .f16:
                    for i in 0..<count { output[i] = Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
                default:  // .bf16: the upper half of an fp32
                    for i in 0..<count { output[i] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
                }
                initialized = count
            }
        }
    }
}

/// Builds a safetensors file from fp32 arrays, each stored as F32, F16 or BF16, in the order added.
///
/// ```swift
/// var writer = SafeTensorsWriter()
/// try writer.add("model.norm.weight", shape: [576], values: norm)
/// try writer.write(to: url)                         // atomic: temp file, fsync, rename
/// ```
public struct SafeTensorsWriter {
    private struct Pending {
        let name: String
        let dtype: SafeTensorsDType
        let shape: [Int]
        let values: [Float]
    }

    private var pending: [Pending] = []
    private var names: Set<String> = []
    /// Written under `__metadata__`.
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Adds a tensor. `values` is row-major over `shape` (outermost first); `dtype` is F32, F16 or BF16
    /// (F16 rounds to nearest even and overflows to ±inf; BF16 rounds to nearest even).
    public mutating func add(_ name: String, shape: [Int], values: [Float], dtype: SafeTensorsDType = .f32) throws {
        guard dtype.isSupportedFloat else {
            throw CheckpointError.unsupportedTensor(file: "safetensors writer", tensor: name, reason: "cannot be written as \(dtype.rawValue); use F32, F16 or BF16")
        }
        guard !name.isEmpty, name != "__metadata__", !names.contains(name) else {
            throw CheckpointError.unsupportedTensor(file: "safetensors writer", tensor: name, reason: "is empty, reserved or added twice")
        }
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw CheckpointError.unsupportedTensor(file: "safetensors writer", tensor: name, reason: "has \(values.count) values for shape \(shape)")
        }
        names.insert(name)
        pending.append(Pending(name: name, dtype: dtype, shape: shape, values: values))
    }

    /// The header JSON (keys sorted, padded with spaces to a multiple of 8 bytes as the reference writer does).
    func headerBytes() -> [UInt8] {
        var offset = 0
        var fields: [(String, String)] = []
        for tensor in pending {
            let end = offset + tensor.values.count * tensor.dtype.bytesPerElement
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append((tensor.name, "{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}"))
            offset = end
        }
        if !metadata.isEmpty {
            let map = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",")
            fields.append(("__metadata__", "{\(map)}"))
        }
        var json = Array(("{" + fields.sorted { $0.0 < $1.0 }.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",") + "}").utf8)
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        return json
    }

    /// Total bytes of the file.
    public var byteCount: Int {
        8 + headerBytes().count + pending.reduce(0) { $0 + $1.values.count * $1.dtype.bytesPerElement }
    }

    /// Writes the file atomically through `writer` (temporary file in the same folder, fsync, rename).
    public func write(to url: URL, using writer: DurableFileWriter = DurableFileWriter()) throws {
        try writer.writeFileAtomically(at: url) { try writeContents(to: $0) }
    }

    /// Writes the file in place through `writer` (for files inside a folder published atomically).
    public func writeInPlace(to url: URL, using writer: DurableFileWriter) throws {
        try writer.writeFile(at: url) { try writeContents(to: $0) }
    }

    private func writeContents(to sink: DurableFileWriter.Sink) throws {
        let header = headerBytes()
        var length = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &length) { try sink.write($0) }
        try sink.write(header)
        let chunk = 1 << 16
        var buffer = [UInt8](repeating: 0, count: 4 * chunk)
        for tensor in pending {
            try tensor.values.withUnsafeBufferPointer { values in
                for first in stride(from: 0, to: values.count, by: chunk) {
                    let count = min(chunk, values.count - first)
                    let bytes = count * tensor.dtype.bytesPerElement
                    buffer.withUnsafeMutableBytes { out in
                        for i in 0..<count {
                            let value = values[first + i]
                            switch tensor.dtype {
                            case .f32: out.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
                            case .f16: out.storeBytes(of: Float16(value).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                            default: out.storeBytes(of: BlockFormat.bfloat16Bits(value).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                            }
                        }
                    }
                    try buffer.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<bytes])) }
                }
            }
        }
    }
}

/// A JSON string literal.
func jsonString(_ string: String) -> String {
    var result = "\""
    for scalar in string.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}
