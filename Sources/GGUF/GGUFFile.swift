import Foundation

/// Where one tensor lives in a GGUF file and how it is laid out.
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    /// Dimensions fastest-varying first (ggml's `ne` order): a PyTorch `[out, in]` weight is `[in, out]`.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Byte offset of the tensor's data from the start of the data section.
    public let offset: Int
    /// Bytes of data: `elementCount / type.blockSize * type.bytesPerBlock`.
    public let byteCount: Int

    /// Dimensions outermost first (row-major, like ``Tensor/Tensor/shape``): `dimensions.reversed()`.
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A GGUF file (version 2 or 3, little-endian), memory-mapped and validated on open.
///
/// Opening parses the header, every metadata value and every tensor info, and checks each count,
/// length and offset against the file size, so a corrupt file fails here with a ``GGUFError``
/// rather than later. Tensor data stays in the map until it is asked for.
///
/// ```swift
/// let file = try GGUFFile(contentsOf: URL(fileURLWithPath: "model.gguf"))
/// let layers = try file.uint32("llama.block_count")
/// let embedding = try file.dequantize(file.tensor(named: "token_embd.weight"))  // [Float]
/// ```
public final class GGUFFile: GGUFMetadataSource, @unchecked Sendable {
    /// Arrays of arrays deeper than this are rejected (a hostile file could otherwise recurse without bound).
    public static let maximumArrayNesting = 8
    /// The alignment of the data section and of every tensor offset when `general.alignment` is absent.
    public static let defaultAlignment = 32

    /// The path the file was opened from, used in every error message.
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the data section from the start of the file.
    public let dataSectionOffset: Int

    private let map: MappedFile
    private let tensorIndex: [String: Int]

    public convenience init(contentsOf url: URL) throws {
        try self.init(path: url.path)
    }

    public init(path: String) throws {
        self.path = path
        map = try MappedFile(path: path)
        var reader = ByteReader(bytes: map.bytes, file: path)

        // Header: magic "GGUF", u32 version, u64 tensor count, u64 metadata count.
        let magic = try reader.readBytes(4, "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            throw GGUFError.badMagic(file: path, found: Array(magic))
        }
        version = try reader.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(file: path, version: version) }
        let tensorCount = try reader.read(UInt64.self, "tensor count")
        let metadataCount = try reader.read(UInt64.self, "metadata count")
        // Smallest metadata entry: u64 key length, u32 type, 1-byte value.
        try reader.requireItems(metadataCount, minimumSize: 13, for: "metadata count")
        // Smallest tensor info: u64 name length, u32 n_dims, u32 type, u64 offset.
        try reader.requireItems(tensorCount, minimumSize: 24, for: "tensor count")

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(Int(metadataCount))
        for index in 0..<Int(metadataCount) {
            let key = try reader.readString("key of metadata entry \(index)")
            let typeID = try reader.read(UInt32.self, "value type of metadata key '\(key)'")
            let value = try GGUFFile.readValue(typeID: typeID, key: key, depth: 0, from: &reader)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError.duplicateKey(file: path, key: key)
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        alignment = try GGUFFile.alignment(from: metadata["general.alignment"], file: path)

        // Tensor infos: name, u32 n_dims, u64 dims[n_dims] (fastest first), u32 type, u64 offset.
        var rawInfos: [(name: String, dimensions: [UInt64], typeID: UInt32, offset: UInt64)] = []
        var tensorIndex: [String: Int] = [:]
        rawInfos.reserveCapacity(Int(tensorCount))
        for index in 0..<Int(tensorCount) {
            let name = try reader.readString("name of tensor \(index)")
            guard tensorIndex.updateValue(index, forKey: name) == nil else {
                throw GGUFError.duplicateTensor(file: path, tensor: name)
            }
            let dimensionCount = try reader.read(UInt32.self, "dimension count of tensor '\(name)'")
            guard dimensionCount <= 4 else {
                throw GGUFError.tooManyDimensions(file: path, tensor: name, count: dimensionCount)
            }
            var dimensions: [UInt64] = []
            for axis in 0..<Int(dimensionCount) {
                dimensions.append(try reader.read(UInt64.self, "dimension \(axis) of tensor '\(name)'"))
            }
            let typeID = try reader.read(UInt32.self, "type of tensor '\(name)'")
            let offset = try reader.read(UInt64.self, "data offset of tensor '\(name)'")
            rawInfos.append((name, dimensions, typeID, offset))
        }
        self.tensorIndex = tensorIndex

        // The data section starts at the next multiple of the alignment after the tensor infos.
        let alignment = self.alignment
        let dataSectionOffset = (reader.offset + alignment - 1) / alignment * alignment
        let dataSectionSize = max(0, map.bytes.count - dataSectionOffset)
        self.dataSectionOffset = dataSectionOffset
        tensors = try rawInfos.map {
            try GGUFFile.validateTensor(name: $0.name, dimensions: $0.dimensions, typeID: $0.typeID,
                                        offset: $0.offset, alignment: alignment,
                                        dataSectionSize: dataSectionSize, file: path)
        }
    }

    // MARK: Tensors

    /// The tensor called `name`, or a `missingTensor` error naming the file.
    public func tensor(named name: String) throws -> GGUFTensorInfo {
        guard let index = tensorIndex[name] else { throw GGUFError.missingTensor(file: path, tensor: name) }
        return tensors[index]
    }

    public func hasTensor(named name: String) -> Bool { tensorIndex[name] != nil }

    /// Calls `body` with the tensor's bytes in the memory map, in the file's block layout (no copy).
    /// The pointer must not escape `body`.
    public func withRawBytes<R>(of tensor: GGUFTensorInfo,
                                _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let start = dataSectionOffset + tensor.offset
        precondition(start + tensor.byteCount <= map.bytes.count,
                     "tensor '\(tensor.name)' does not belong to \(path)")
        return try withExtendedLifetime(map) {
            try body(UnsafeRawBufferPointer(rebasing: map.bytes[start..<start + tensor.byteCount]))
        }
    }

    /// The tensor's values as fp32, in ggml order (fastest dimension first, i.e. row-major of ``GGUFTensorInfo/shape``).
    public func dequantize(_ tensor: GGUFTensorInfo) -> [Float] {
        let count = tensor.elementCount
        return withRawBytes(of: tensor) { raw in
            [Float](unsafeUninitializedCapacity: count) { output, initialized in
                if count > 0 {
                    GGUF.dequantize(raw.baseAddress!, type: tensor.type, count: count, into: output.baseAddress!)
                }
                initialized = count
            }
        }
    }

    // MARK: Parsing

    private static func readValue(typeID: UInt32, key: String, depth: Int,
                                  from reader: inout ByteReader) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: typeID) else {
            throw GGUFError.invalidValueType(file: reader.file, key: key, typeID: typeID)
        }
        let what = "value of metadata key '\(key)'"
        switch type {
        case .uint8: return .uint8(try reader.read(UInt8.self, what))
        case .int8: return .int8(try reader.read(Int8.self, what))
        case .uint16: return .uint16(try reader.read(UInt16.self, what))
        case .int16: return .int16(try reader.read(Int16.self, what))
        case .uint32: return .uint32(try reader.read(UInt32.self, what))
        case .int32: return .int32(try reader.read(Int32.self, what))
        case .float32: return .float32(Float(bitPattern: try reader.read(UInt32.self, what)))
        case .bool: return .bool(try reader.read(UInt8.self, what) != 0)
        case .string: return .string(try reader.readString(what))
        case .uint64: return .uint64(try reader.read(UInt64.self, what))
        case .int64: return .int64(try reader.read(Int64.self, what))
        case .float64: return .float64(Double(bitPattern: try reader.read(UInt64.self, what)))
        case .array:
            guard depth < maximumArrayNesting else {
                throw GGUFError.arrayNestingTooDeep(file: reader.file, key: key)
            }
            let elementTypeID = try reader.read(UInt32.self, "array element type of metadata key '\(key)'")
            guard let elementType = GGUFValueType(rawValue: elementTypeID) else {
                throw GGUFError.invalidValueType(file: reader.file, key: key, typeID: elementTypeID)
            }
            let count = try reader.read(UInt64.self, "array length of metadata key '\(key)'")
            try reader.requireItems(count, minimumSize: elementType.minimumByteCount,
                                    for: "array length of metadata key '\(key)'")
            var elements: [GGUFValue] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                elements.append(try readValue(typeID: elementTypeID, key: key, depth: depth + 1, from: &reader))
            }
            return .array(elementType, elements)
        }
    }

    private static func alignment(from value: GGUFValue?, file: String) throws -> Int {
        guard let value else { return defaultAlignment }
        guard case .uint32(let alignment) = value, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw GGUFError.invalidAlignment(file: file, value: "\(value.typeDescription) \(value)")
        }
        return Int(alignment)
    }

    private static func validateTensor(name: String, dimensions rawDimensions: [UInt64], typeID: UInt32,
                                       offset: UInt64, alignment: Int, dataSectionSize: Int,
                                       file: String) throws -> GGUFTensorInfo {
        guard let type = GGMLType(rawValue: typeID) else {
            throw GGUFError.unsupportedTensorType(file: file, tensor: name, typeID: typeID)
        }
        var dimensions: [Int] = []
        var elementCount = 1
        for rawDimension in rawDimensions {
            guard let dimension = Int(exactly: rawDimension) else {
                throw GGUFError.invalidDimensions(file: file, tensor: name, dimensions: rawDimensions,
                                                  reason: "a dimension exceeds \(Int.max)")
            }
            let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw GGUFError.invalidDimensions(file: file, tensor: name, dimensions: rawDimensions,
                                                  reason: "the element count overflows")
            }
            elementCount = product
            dimensions.append(dimension)
        }
        let rowLength = dimensions.first ?? 1
        guard rowLength % type.blockSize == 0, let byteCount = type.byteCount(elements: elementCount) else {
            throw GGUFError.invalidDimensions(
                file: file, tensor: name, dimensions: rawDimensions,
                reason: "\(type) needs the first dimension to be a multiple of \(type.blockSize)")
        }
        guard offset % UInt64(alignment) == 0 else {
            throw GGUFError.misalignedTensor(file: file, tensor: name, offset: offset, alignment: alignment)
        }
        guard offset <= UInt64(dataSectionSize), byteCount <= dataSectionSize - Int(offset) else {
            throw GGUFError.tensorOutOfBounds(file: file, tensor: name, offset: offset, byteCount: byteCount,
                                              dataSectionSize: dataSectionSize)
        }
        return GGUFTensorInfo(name: name, dimensions: dimensions, type: type, offset: Int(offset),
                              byteCount: byteCount)
    }
}
