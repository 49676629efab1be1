import Foundation

/// A run of consecutive windows of a teacher cache, in one file (`shard-NNNNN.bin`):
///
///     "KDTCSHD1"                          magic, 8 bytes
///     u32 first_window, u32 windows, u32 seq_len, u32 id_bits, u32 stores_probabilities (0 or 1)
///     u64 pairs                           total (id, value) pairs
///     u8  count[rows]                     pairs per position (rows = windows * (seq_len - 1))
///     f16 label_log_probability[rows]
///     f16 tail_mass[rows]                 only when the values are probabilities
///     f16 probability[pairs] | u8 draws[pairs]
///     bits: the pairs' ids, id_bits each, least significant bit first
///
/// All little-endian: 3 bytes a position (5 with top-k's tail mass) and 3 bytes a sampled pair (4 a
/// top-k pair) for vocabularies up to 65536. The windows' tokens are not stored: they are the
/// corpus's, which the manifest's digest pins. The bytes' SHA-256 is kept in the manifest and
/// checked when the shard is read.
public struct CacheShard: Equatable, Sendable {
    static let magic = Array("KDTCSHD1".utf8)
    static let headerBytes = 8 + 5 * 4 + 8

    public var firstWindow: Int
    public var seqLen: Int
    /// Per window: the targets of positions `0..<seqLen - 1`.
    public var targets: [[SparseTarget]]

    public var windowCount: Int { targets.count }

    public init(firstWindow: Int, seqLen: Int, targets: [[SparseTarget]]) {
        self.firstWindow = firstWindow
        self.seqLen = seqLen
        self.targets = targets
    }

    /// The bits an id takes for a vocabulary of `vocabulary` tokens.
    public static func idBits(vocabulary: Int) -> Int { max(1, Int.bitWidth - (vocabulary - 1).leadingZeroBitCount) }

    public func encoded(idBits: Int, storesProbabilities: Bool) -> [UInt8] {
        let rows = targets.flatMap { $0 }
        let pairs = rows.reduce(0) { $0 + $1.ids.count }
        var bytes = Self.magic
        bytes.reserveCapacity(Self.headerBytes + rows.count * 5 + pairs * 5)
        func u32(_ value: Int) { withUnsafeBytes(of: UInt32(value).littleEndian) { bytes += $0 } }
        func f16(_ value: Float) { withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { bytes += $0 } }
        for value in [firstWindow, windowCount, seqLen, idBits, storesProbabilities ? 1 : 0] { u32(value) }
        withUnsafeBytes(of: UInt64(pairs).littleEndian) { bytes += $0 }
        bytes += rows.map { UInt8($0.ids.count) }
        for row in rows { f16(row.labelLogProbability) }
        if storesProbabilities { for row in rows { f16(row.tailMass) } }
        for row in rows {
            for value in row.values { storesProbabilities ? f16(value) : bytes.append(UInt8(value)) }
        }
        var bits = BitWriter()
        for row in rows { for id in row.ids { bits.append(UInt64(id), bits: idBits) } }
        return bytes + bits.finished()
    }

    /// Decodes a whole shard (see ``CacheShardView`` for the checks).
    public static func decode(_ bytes: [UInt8], file: String, expected: CacheShardView.Expected, vocabulary: Int) throws -> CacheShard {
        let view = try CacheShardView(bytes, file: file, expected: expected, vocabulary: vocabulary)
        return CacheShard(firstWindow: expected.firstWindow, seqLen: expected.seqLen, targets: (0..<expected.windows).map(view.targets(ofWindow:)))
    }
}

/// A shard's bytes with their layout read and checked once (every size against the header and
/// what the manifest says, the counts, every id against the vocabulary), from which one window's
/// targets decode on demand: training reads windows in shuffled order, a few from each shard.
public struct CacheShardView: Sendable {
    /// What the manifest says of a shard.
    public typealias Expected = (firstWindow: Int, windows: Int, seqLen: Int, idBits: Int, storesProbabilities: Bool)

    let bytes: [UInt8]
    let expected: Expected
    /// Where each row's pairs start, in pairs (rows + 1 entries).
    let pairStart: [Int]
    let labelsOffset, tailsOffset, valuesOffset, bitsOffset: Int

    public init(_ bytes: [UInt8], file: String, expected: Expected, vocabulary: Int) throws {
        func invalid(_ reason: String) -> TeacherCacheError { .invalid(file: file, reason: reason) }
        let headerBytes = CacheShard.headerBytes
        guard bytes.count >= headerBytes, Array(bytes[0..<8]) == CacheShard.magic else { throw invalid("not a kdgpu teacher-cache shard") }
        var reader = ByteCursor(bytes: bytes, offset: 8)
        let header = (0..<5).map { _ in Int(reader.u32()) }
        let pairs = Int(reader.u64())
        guard header[0] == expected.firstWindow, header[1] == expected.windows, header[2] == expected.seqLen, header[3] == expected.idBits,
              header[4] == (expected.storesProbabilities ? 1 : 0) else {
            throw invalid("its header (windows \(header[0])..<\(header[0] + header[1]), seq_len \(header[2])) is not what the manifest says")
        }
        let rows = expected.windows * (expected.seqLen - 1)
        let bitBytes = (pairs * expected.idBits + 7) / 8
        let size = headerBytes + rows * (expected.storesProbabilities ? 5 : 3) + pairs * (expected.storesProbabilities ? 2 : 1) + bitBytes
        guard pairs <= rows * TeacherTargetSpec.maximumPairs, bytes.count == size else {
            throw invalid("\(bytes.count) bytes where its header needs \(size) (truncated or damaged)")
        }
        var starts = [0]
        starts.reserveCapacity(rows + 1)
        for row in 0..<rows { starts.append(starts[row] + Int(bytes[headerBytes + row])) }
        guard starts[rows] == pairs else { throw invalid("its per-position counts add up to \(starts[rows]), not \(pairs)") }
        self.bytes = bytes
        self.expected = expected
        pairStart = starts
        labelsOffset = headerBytes + rows
        tailsOffset = labelsOffset + 2 * rows
        valuesOffset = tailsOffset + (expected.storesProbabilities ? 2 * rows : 0)
        bitsOffset = valuesOffset + pairs * (expected.storesProbabilities ? 2 : 1)
        if let bad = (0..<pairs).lazy.map(id).first(where: { $0 >= vocabulary }) {
            throw invalid("token id \(bad) is outside the teacher's vocabulary of \(vocabulary)")
        }
    }

    /// The targets of the shard's window `window` (counted from its first).
    public func targets(ofWindow window: Int) -> [SparseTarget] {
        let rowsPerWindow = expected.seqLen - 1
        return (window * rowsPerWindow..<(window + 1) * rowsPerWindow).map { row in
            let pairs = pairStart[row]..<pairStart[row + 1]
            return SparseTarget(ids: pairs.map { Int32(id($0)) },
                                values: pairs.map { expected.storesProbabilities ? f16(at: valuesOffset + 2 * $0) : Float(bytes[valuesOffset + $0]) },
                                tailMass: expected.storesProbabilities ? f16(at: tailsOffset + 2 * row) : 0,
                                labelLogProbability: f16(at: labelsOffset + 2 * row))
        }
    }

    private func f16(at offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8))
    }

    /// Pair `pair`'s id, `idBits` bits from bit `pair * idBits` of the id stream, least significant first.
    private func id(_ pair: Int) -> Int {
        let bits = expected.idBits, first = pair * bits
        var value = 0, taken = 0, offset = bitsOffset + first / 8, shift = first % 8
        while taken < bits {
            value |= (Int(bytes[offset]) >> shift) << taken
            taken += 8 - shift
            offset += 1
            shift = 0
        }
        return value & ((1 << bits) - 1)
    }
}

/// Little-endian reads from a byte array whose size was checked beforehand.
private struct ByteCursor {
    let bytes: [UInt8]
    var offset: Int

    mutating func u8() -> UInt8 {
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
}

/// Values of a fixed width packed least significant bit first.
struct BitWriter {
    private(set) var bytes: [UInt8] = []
    private var buffer: UInt64 = 0
    private var count = 0

    mutating func append(_ value: UInt64, bits: Int) {
        buffer |= (value & ((1 << bits) - 1)) << count
        count += bits
        while count >= 8 {
            bytes.append(UInt8(truncatingIfNeeded: buffer))
            buffer >>= 8
            count -= 8
        }
    }

    func finished() -> [UInt8] { count > 0 ? bytes + [UInt8(truncatingIfNeeded: buffer)] : bytes }
}
