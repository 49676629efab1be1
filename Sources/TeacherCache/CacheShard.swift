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

    /// Decodes a shard, checking every size against the header and `expected` (what the manifest says).
    public static func decode(_ bytes: [UInt8], file: String, expected: (firstWindow: Int, windows: Int, seqLen: Int, idBits: Int, storesProbabilities: Bool),
                       vocabulary: Int) throws -> CacheShard {
        func invalid(_ reason: String) -> TeacherCacheError { .invalid(file: file, reason: reason) }
        guard bytes.count >= headerBytes, Array(bytes[0..<8]) == magic else { throw invalid("not a kdgpu teacher-cache shard") }
        var reader = ByteCursor(bytes: bytes, offset: 8)
        let header = (0..<5).map { _ in Int(reader.u32()) }
        let pairs = Int(reader.u64())
        guard header[0] == expected.firstWindow, header[1] == expected.windows, header[2] == expected.seqLen, header[3] == expected.idBits,
              header[4] == (expected.storesProbabilities ? 1 : 0) else {
            throw invalid("its header (windows \(header[0])..<\(header[0] + header[1]), seq_len \(header[2])) is not what the manifest says")
        }
        let rowsPerWindow = expected.seqLen - 1, rows = expected.windows * rowsPerWindow
        let bitBytes = (pairs * expected.idBits + 7) / 8
        let size = headerBytes + rows * (expected.storesProbabilities ? 5 : 3) + pairs * (expected.storesProbabilities ? 2 : 1) + bitBytes
        guard pairs <= rows * TeacherTargetSpec.maximumPairs, bytes.count == size else {
            throw invalid("\(bytes.count) bytes where its header needs \(size) (truncated or damaged)")
        }
        let counts = (0..<rows).map { _ in Int(reader.u8()) }
        guard counts.reduce(0, +) == pairs else { throw invalid("its per-position counts add up to \(counts.reduce(0, +)), not \(pairs)") }
        let labels = (0..<rows).map { _ in reader.f16() }
        let tails = expected.storesProbabilities ? (0..<rows).map { _ in reader.f16() } : [Float](repeating: 0, count: rows)
        let values = (0..<pairs).map { _ in expected.storesProbabilities ? reader.f16() : Float(reader.u8()) }
        var bits = BitReader(bytes: bytes, offset: reader.offset)
        let allIDs = (0..<pairs).map { _ in Int32(bits.next(bits: expected.idBits)) }
        if let bad = allIDs.first(where: { Int($0) >= vocabulary }) {
            throw invalid("token id \(bad) is outside the teacher's vocabulary of \(vocabulary)")
        }
        var targets: [[SparseTarget]] = [], pair = 0
        for window in 0..<expected.windows {
            targets.append((0..<rowsPerWindow).map { position in
                let row = window * rowsPerWindow + position, count = counts[row]
                defer { pair += count }
                return SparseTarget(ids: Array(allIDs[pair..<pair + count]), values: Array(values[pair..<pair + count]),
                                    tailMass: tails[row], labelLogProbability: labels[row])
            })
        }
        return CacheShard(firstWindow: expected.firstWindow, seqLen: expected.seqLen, targets: targets)
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
    mutating func f16() -> Float { Float(Float16(bitPattern: u16())) }
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

struct BitReader {
    let bytes: [UInt8]
    var offset: Int
    private var buffer: UInt64 = 0
    private var count = 0

    init(bytes: [UInt8], offset: Int) {
        self.bytes = bytes
        self.offset = offset
    }

    mutating func next(bits: Int) -> UInt64 {
        while count < bits {
            buffer |= UInt64(bytes[offset]) << count
            offset += 1
            count += 8
        }
        defer {
            buffer >>= bits
            count -= bits
        }
        return buffer & ((1 << bits) - 1)
    }
}
