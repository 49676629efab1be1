import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds a GGUF version 3 file (little-endian): metadata of any type, then tensors quantized
/// from fp32 or given as raw blocks, each padded to the alignment. ``write(to:)`` writes a temporary
/// file beside the destination and renames it over, so readers never see a half-written model.
///
/// ```swift
/// var writer = GGUFWriter()
/// writer.setMetadata(.string("llama"), forKey: "general.architecture")
/// try writer.addTensor(named: "output_norm.weight", dimensions: [576], type: .f32, values: norm)
/// try writer.addTensor(named: "blk.0.ffn_up.weight", dimensions: [576, 1536], type: .q4_1, values: up)
/// try writer.write(to: URL(fileURLWithPath: "student.gguf"))
/// ```
public struct GGUFWriter {
    /// A tensor waiting to be written: its info (offset assigned at write time) and encoded bytes.
    private struct PendingTensor {
        let name: String
        let dimensions: [Int]
        let type: GGMLType
        let bytes: [UInt8]
    }

    /// Metadata in the order it will be written.
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    private var tensors: [PendingTensor] = []

    /// llama.cpp rejects tensor names of 64 bytes or more (`GGML_MAX_NAME`).
    public static let maximumTensorNameBytes = 63

    public init() {}

    /// Sets `key` to `value`, replacing an earlier value in place. Setting `general.alignment`
    /// (a power-of-two `.uint32`) changes the alignment of the data section and of every tensor.
    public mutating func setMetadata(_ value: GGUFValue, forKey key: String) {
        if let index = metadata.firstIndex(where: { $0.key == key }) {
            metadata[index].value = value
        } else {
            metadata.append((key, value))
        }
    }

    /// Adds a tensor of fp32 `values` encoded as `type` (quantized as ggml does for the block types).
    /// - Parameters:
    ///   - dimensions: fastest-varying first; `values` is row-major over `dimensions.reversed()`.
    ///     The first dimension must be a multiple of 32 for the block types.
    ///   - values: `dimensions.reduce(1, *)` values, all finite for the block types.
    public mutating func addTensor(named name: String, dimensions: [Int], type: GGMLType, values: [Float]) throws {
        try validate(name: name, dimensions: dimensions, type: type)
        let count = dimensions.reduce(1, *)
        guard values.count == count else {
            throw GGUFError.invalidTensor(tensor: name, reason: "\(values.count) values for dimensions \(dimensions) (\(count) elements)")
        }
        if type.blockSize > 1, let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw GGUFError.invalidTensor(tensor: name, reason: "value \(values[bad]) at index \(bad) cannot be quantized to \(type)")
        }
        let byteCount = type.byteCount(elements: count)!
        let bytes = [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            values.withUnsafeBufferPointer { input in
                if count > 0 {
                    quantize(input.baseAddress!, count: count, type: type, into: buffer.baseAddress!)
                }
            }
            initialized = byteCount
        }
        tensors.append(PendingTensor(name: name, dimensions: dimensions, type: type, bytes: bytes))
    }

    /// Adds a tensor whose data is already encoded in `type`'s block layout (e.g. copied from another GGUF file).
    public mutating func addTensor(named name: String, dimensions: [Int], type: GGMLType, rawBytes: [UInt8]) throws {
        try validate(name: name, dimensions: dimensions, type: type)
        let expected = type.byteCount(elements: dimensions.reduce(1, *))!
        guard rawBytes.count == expected else {
            throw GGUFError.invalidTensor(tensor: name, reason: "\(rawBytes.count) bytes given, \(type) with dimensions \(dimensions) needs \(expected)")
        }
        tensors.append(PendingTensor(name: name, dimensions: dimensions, type: type, bytes: rawBytes))
    }

    private func validate(name: String, dimensions: [Int], type: GGMLType) throws {
        guard !name.isEmpty, name.utf8.count <= GGUFWriter.maximumTensorNameBytes else {
            throw GGUFError.invalidTensor(tensor: name, reason: "names must be 1...\(GGUFWriter.maximumTensorNameBytes) bytes of UTF-8")
        }
        guard !tensors.contains(where: { $0.name == name }) else {
            throw GGUFError.invalidTensor(tensor: name, reason: "a tensor of that name was already added")
        }
        guard (1...4).contains(dimensions.count), dimensions.allSatisfy({ $0 >= 1 }) else {
            throw GGUFError.invalidTensor(tensor: name, reason: "dimensions \(dimensions) must be 1 to 4 positive sizes")
        }
        guard dimensions[0] % type.blockSize == 0 else {
            throw GGUFError.invalidTensor(tensor: name, reason: "\(type) needs the first dimension to be a multiple of \(type.blockSize), got \(dimensions)")
        }
    }

    /// The alignment in force: `general.alignment` when set, else 32.
    private func alignment() throws -> Int {
        guard let entry = metadata.first(where: { $0.key == "general.alignment" }) else {
            return GGUFFile.defaultAlignment
        }
        guard case .uint32(let value) = entry.value, value > 0, value & (value - 1) == 0 else {
            throw GGUFError.invalidMetadata(key: entry.key, reason: "must be a power-of-two .uint32, got \(entry.value)")
        }
        return Int(value)
    }

    /// Writes the file atomically: to a temporary file in the same folder, then renamed to `url`.
    public func write(to url: URL) throws {
        let alignment = try alignment()
        var header = ByteWriter()
        header.append(contentsOf: Array("GGUF".utf8))
        header.append(UInt32(3))
        header.append(UInt64(tensors.count))
        header.append(UInt64(metadata.count))
        for (key, value) in metadata {
            header.appendString(key)
            header.append(value.type.rawValue)
            try header.appendValue(value, key: key, depth: 0)
        }
        var offset = 0
        for tensor in tensors {
            header.appendString(tensor.name)
            header.append(UInt32(tensor.dimensions.count))
            for dimension in tensor.dimensions { header.append(UInt64(dimension)) }
            header.append(tensor.type.rawValue)
            header.append(UInt64(offset))
            offset = padded(offset + tensor.bytes.count, to: alignment)
        }
        header.padToMultiple(of: alignment)

        let path = url.path
        let temporaryPath = path + ".tmp-\(getpid())"
        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw GGUFError.writeFailed(file: path, reason: MappedFile.systemError()) }
        do {
            defer { close(fd) }
            try header.bytes.withUnsafeBytes { try writeAll($0, to: fd, path: path) }
            let zeros = [UInt8](repeating: 0, count: alignment)
            for tensor in tensors {
                try tensor.bytes.withUnsafeBytes { try writeAll($0, to: fd, path: path) }
                let padding = padded(tensor.bytes.count, to: alignment) - tensor.bytes.count
                try zeros.withUnsafeBytes { try writeAll(UnsafeRawBufferPointer(rebasing: $0[0..<padding]), to: fd, path: path) }
            }
            guard fsync(fd) == 0 else { throw GGUFError.writeFailed(file: path, reason: MappedFile.systemError()) }
        } catch {
            unlink(temporaryPath)
            throw error
        }
        guard rename(temporaryPath, path) == 0 else {
            let reason = MappedFile.systemError()
            unlink(temporaryPath)
            throw GGUFError.writeFailed(file: path, reason: reason)
        }
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes.
private func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32, path: String) throws {
    var written = 0
    while written < bytes.count {
        let result = write(fd, bytes.baseAddress! + written, bytes.count - written)
        guard result > 0 else {
            if result < 0 && errno == EINTR { continue }
            throw GGUFError.writeFailed(file: path, reason: MappedFile.systemError())
        }
        written += result
    }
}

private func padded(_ offset: Int, to alignment: Int) -> Int {
    (offset + alignment - 1) / alignment * alignment
}

/// Little-endian serialization of the GGUF header.
private struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func append(contentsOf other: [UInt8]) { bytes.append(contentsOf: other) }

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func appendString(_ string: String) {
        append(UInt64(string.utf8.count))
        bytes.append(contentsOf: string.utf8)
    }

    mutating func padToMultiple(of alignment: Int) {
        bytes.append(contentsOf: repeatElement(0, count: padded(bytes.count, to: alignment) - bytes.count))
    }

    mutating func appendValue(_ value: GGUFValue, key: String, depth: Int) throws {
        switch value {
        case .uint8(let v): append(v)
        case .int8(let v): append(v)
        case .uint16(let v): append(v)
        case .int16(let v): append(v)
        case .uint32(let v): append(v)
        case .int32(let v): append(v)
        case .float32(let v): append(v.bitPattern)
        case .bool(let v): append(UInt8(v ? 1 : 0))
        case .string(let v): appendString(v)
        case .uint64(let v): append(v)
        case .int64(let v): append(v)
        case .float64(let v): append(v.bitPattern)
        case .array(let elementType, let elements):
            guard depth < GGUFFile.maximumArrayNesting else {
                throw GGUFError.invalidMetadata(key: key, reason: "arrays nest more than \(GGUFFile.maximumArrayNesting) deep")
            }
            append(elementType.rawValue)
            append(UInt64(elements.count))
            for element in elements {
                guard element.type == elementType else {
                    throw GGUFError.invalidMetadata(key: key, reason: "array of \(elementType) holds a \(element.type) element")
                }
                try appendValue(element, key: key, depth: depth + 1)
            }
        }
    }
}
