import Foundation

/// A run of consecutive windows of a teacher cache, in one file (`shard-NNNNN.bin`), in one of two
/// layouts. Fixed-width pairs (top-k and top-p targets, and drawn ones in caches of format version 1):
///
///     "KDTCSHD1"                          magic, 8 bytes
///     u32 first_window, u32 windows, u32 seq_len, u32 id_bits, u32 stores_probabilities (0 or 1)
///     u64 pairs                           total (id, value) pairs
///     u8  count[rows]                     pairs per position (rows = windows * (seq_len - 1)); u16 where
///                                         the targets' spec allows more than 255 (format version 3)
///     f16 label_log_probability[rows]
///     f16 tail_mass[rows]                 only when the values are probabilities
///     f16 probability[pairs] | u8 draws[pairs]
///     bits: the pairs' ids, id_bits each, least significant bit first
///
/// 3 bytes a position (5 with top-k's tail mass) and 3 bytes a sampled pair (4 a top-k pair) for
/// vocabularies up to 65536. Coded draws (`sampled:N` and `systematic:N` in caches of format versions
/// 2 and 3, with the cache's ``TokenIDOrder``):
///
///     "KDTCSHD2"                          magic, 8 bytes
///     u32 first_window, u32 windows, u32 seq_len, u32 id_bits, u32 stores_probabilities (0)
///     u64 pairs
///     u8  count[rows]                     u16 where the spec allows more than 255 (format version 3)
///     f16 label_log_probability[rows]
///     u64 code_end[windows]               the bit where each window's codes end, counted from the codes' first
///     bits: each position's pairs in ``DrawCoding``, one position after another
///
/// All little-endian. The windows' tokens are not stored: they are the corpus's, which the
/// manifest's digest pins. The bytes' SHA-256 is kept in the manifest and checked when the shard is read.
public struct CacheShard: Equatable, Sendable {
    static let magic = Array("KDTCSHD1".utf8)
    static let codedMagic = Array("KDTCSHD2".utf8)
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

    /// The most pairs a count of `countBytes` bytes (1 or 2) says.
    static func maximumPairs(countBytes: Int) -> Int {
        countBytes == 1 ? TeacherTargetSpec.maximumNarrowPairs : TeacherTargetSpec.maximumPairs
    }

    /// The bits an id takes for a vocabulary of `vocabulary` tokens.
    public static func idBits(vocabulary: Int) -> Int { max(1, Int.bitWidth - (vocabulary - 1).leadingZeroBitCount) }

    /// The shard's bytes: drawn targets' pairs coded with `idOrder` when it is given (format
    /// versions 2 and 3), fixed-width otherwise; each position's pair count in `pairCountBytes`
    /// (``TeacherTargetSpec/pairCountBytes``).
    public func encoded(idBits: Int, storesProbabilities: Bool, pairCountBytes: Int, idOrder: TokenIDOrder? = nil) -> [UInt8] {
        let rows = targets.flatMap { $0 }
        let pairs = rows.reduce(0) { $0 + $1.ids.count }
        precondition(idOrder == nil || !storesProbabilities, "only draw counts are coded")
        precondition(rows.allSatisfy { $0.ids.count <= Self.maximumPairs(countBytes: pairCountBytes) }, "a position's pairs fit its count")
        var bytes = idOrder == nil ? Self.magic : Self.codedMagic
        bytes.reserveCapacity(Self.headerBytes + rows.count * 5 + pairs * 5)
        func u32(_ value: Int) { withUnsafeBytes(of: UInt32(value).littleEndian) { bytes += $0 } }
        func f16(_ value: Float) { withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { bytes += $0 } }
        for value in [firstWindow, windowCount, seqLen, idBits, storesProbabilities ? 1 : 0] { u32(value) }
        withUnsafeBytes(of: UInt64(pairs).littleEndian) { bytes += $0 }
        for row in rows {
            withUnsafeBytes(of: UInt16(row.ids.count).littleEndian) { bytes += $0.prefix(pairCountBytes) }
        }
        for row in rows { f16(row.labelLogProbability) }
        if let idOrder {
            var codes = BitWriter(), ends: [Int] = []
            for window in targets {
                for row in window where !row.ids.isEmpty { DrawCoding.write(ids: row.ids, counts: row.values, order: idOrder, to: &codes) }
                ends.append(codes.bitCount)
            }
            for end in ends { withUnsafeBytes(of: UInt64(end).littleEndian) { bytes += $0 } }
            return bytes + codes.finished()
        }
        if storesProbabilities { for row in rows { f16(row.tailMass) } }
        for row in rows {
            for value in row.values { storesProbabilities ? f16(value) : bytes.append(UInt8(value)) }
        }
        var bits = BitWriter()
        for row in rows { for id in row.ids { bits.append(UInt64(id), bits: idBits) } }
        return bytes + bits.finished()
    }

    /// Decodes a whole shard (see ``CacheShardView`` for the checks).
    public static func decode(_ bytes: [UInt8], file: String, expected: CacheShardView.Expected, vocabulary: Int,
                              idOrder: TokenIDOrder? = nil) throws -> CacheShard {
        let view = try CacheShardView(bytes, file: file, expected: expected, vocabulary: vocabulary, idOrder: idOrder)
        return CacheShard(firstWindow: expected.firstWindow, seqLen: expected.seqLen, targets: try (0..<expected.windows).map(view.targets(ofWindow:)))
    }
}

/// A shard's bytes with their layout read and checked once (every size against the header and
/// what the manifest says, the counts, every fixed-width id against the vocabulary), from which one
/// window's targets decode on demand (coded draws checked as they decode): training reads windows
/// in shuffled order, a few from each shard.
public struct CacheShardView: Sendable {
    /// What the manifest says of a shard.
    public typealias Expected = (firstWindow: Int, windows: Int, seqLen: Int, idBits: Int, storesProbabilities: Bool, pairCountBytes: Int)

    let bytes: [UInt8]
    /// The shard's path, for errors.
    let file: String
    let expected: Expected
    /// The order coded draws' ids are ranked in; nil for fixed-width pairs.
    let idOrder: TokenIDOrder?
    /// Where each row's pairs start, in pairs (rows + 1 entries).
    let pairStart: [Int]
    /// Coded draws: the bit where each window's codes start, counted from `bitsOffset`'s first (windows + 1 entries).
    let windowCodeStart: [Int]
    let labelsOffset, tailsOffset, valuesOffset, bitsOffset: Int

    /// - Parameter idOrder: the cache's order when its drawn targets are coded (format versions 2 and 3).
    public init(_ bytes: [UInt8], file: String, expected: Expected, vocabulary: Int, idOrder: TokenIDOrder? = nil) throws {
        func invalid(_ reason: String) -> TeacherCacheError { .invalid(file: file, reason: reason) }
        let headerBytes = CacheShard.headerBytes
        guard bytes.count >= headerBytes, Array(bytes[0..<8]) == (idOrder == nil ? CacheShard.magic : CacheShard.codedMagic) else {
            throw invalid(Array(bytes.prefix(8)) == CacheShard.magic || Array(bytes.prefix(8)) == CacheShard.codedMagic
                          ? "a shard of the other layout than its manifest's format version says" : "not a kdgpu teacher-cache shard")
        }
        var reader = ByteCursor(bytes: bytes, offset: 8)
        let header = (0..<5).map { _ in Int(reader.u32()) }
        let pairs = Int(reader.u64())
        guard header[0] == expected.firstWindow, header[1] == expected.windows, header[2] == expected.seqLen, header[3] == expected.idBits,
              header[4] == (expected.storesProbabilities ? 1 : 0) else {
            throw invalid("its header (windows \(header[0])..<\(header[0] + header[1]), seq_len \(header[2])) is not what the manifest says")
        }
        let rows = expected.windows * (expected.seqLen - 1), countBytes = expected.pairCountBytes
        guard pairs <= rows * CacheShard.maximumPairs(countBytes: countBytes),
              bytes.count >= headerBytes + rows * (countBytes + 2) + (idOrder == nil ? 0 : 8 * expected.windows) else {
            throw invalid("\(bytes.count) bytes, too few for its header's \(rows) positions (truncated or damaged)")
        }
        var starts = [0]
        starts.reserveCapacity(rows + 1)
        reader.offset = headerBytes
        for row in 0..<rows { starts.append(starts[row] + Int(countBytes == 1 ? UInt16(reader.u8()) : reader.u16())) }
        guard starts[rows] == pairs else { throw invalid("its per-position counts add up to \(starts[rows]), not \(pairs)") }
        labelsOffset = headerBytes + rows * countBytes
        tailsOffset = labelsOffset + 2 * rows
        valuesOffset = tailsOffset + (expected.storesProbabilities ? 2 * rows : 0)
        var codeStarts = [0]
        if idOrder != nil {
            for window in 0..<expected.windows { reader.offset = valuesOffset + 8 * window; codeStarts.append(Int(truncatingIfNeeded: reader.u64())) }
            bitsOffset = valuesOffset + 8 * expected.windows
        } else {
            bitsOffset = valuesOffset + pairs * (expected.storesProbabilities ? 2 : 1)
        }
        guard zip(codeStarts, codeStarts.dropFirst()).allSatisfy({ $0 <= $1 }), codeStarts.last! <= 8 * bytes.count else {
            throw invalid("its table of where each window's codes end is out of order or past the file's end (damaged)")
        }
        let size = bitsOffset + (idOrder == nil ? (pairs * expected.idBits + 7) / 8 : (codeStarts.last! + 7) / 8)
        guard bytes.count == size else {
            throw invalid("\(bytes.count) bytes where its header needs \(size) (truncated or damaged)")
        }
        self.bytes = bytes
        self.expected = expected
        self.idOrder = idOrder
        pairStart = starts
        windowCodeStart = codeStarts
        self.file = file
        // Fixed-width ids are checked here; coded ones as each window decodes (a window's codes must
        // decode to ranks inside the vocabulary and end where the table says): training reads a
        // window once an epoch, and decoding every window of the shard here too took as long again.
        if idOrder == nil, let bad = (0..<pairs).lazy.map(id).first(where: { $0 >= vocabulary }) {
            throw invalid("token id \(bad) is outside the teacher's vocabulary of \(vocabulary)")
        }
    }

    /// The targets of the shard's window `window` (counted from its first); an error naming the
    /// file where its coded pairs do not decode.
    public func targets(ofWindow window: Int) throws -> [SparseTarget] {
        let rowsPerWindow = expected.seqLen - 1
        let rows = window * rowsPerWindow..<(window + 1) * rowsPerWindow
        var draws: [(ids: [Int32], counts: [Float])]?
        if idOrder != nil {
            draws = decodedDraws(ofWindow: window)
            guard draws != nil else {
                throw TeacherCacheError.invalid(file: file, reason: "the coded pairs of window \(expected.firstWindow + window) do not decode (damaged)")
            }
        }
        return rows.map { row in
            let pairs = pairStart[row]..<pairStart[row + 1]
            let (ids, values) = draws?[row - rows.lowerBound]
                ?? (pairs.map { Int32(id($0)) }, pairs.map { expected.storesProbabilities ? f16(at: valuesOffset + 2 * $0) : Float(bytes[valuesOffset + $0]) })
            return SparseTarget(ids: ids, values: values, tailMass: expected.storesProbabilities ? f16(at: tailsOffset + 2 * row) : 0,
                                labelLogProbability: f16(at: labelsOffset + 2 * row))
        }
    }

    /// A coded window's positions as ascending ids with their counts; nil where its codes do not
    /// decode or do not end where the table says.
    private func decodedDraws(ofWindow window: Int) -> [(ids: [Int32], counts: [Float])]? {
        var codes = BitReader(bytes: bytes, start: bitsOffset, end: bytes.count, position: windowCodeStart[window])
        let rowsPerWindow = expected.seqLen - 1
        var decoded: [(ids: [Int32], counts: [Float])] = []
        for row in window * rowsPerWindow..<(window + 1) * rowsPerWindow {
            let pairs = pairStart[row + 1] - pairStart[row]
            guard pairs > 0 else { decoded.append(([], [])); continue }
            guard let draws = DrawCoding.read(pairs: pairs, order: idOrder!, from: &codes) else { return nil }
            decoded.append(draws)
        }
        return codes.position == windowCodeStart[window + 1] ? decoded : nil
    }

    private func f16(at offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8))
    }

    /// Fixed-width pair `pair`'s id, `idBits` bits from bit `pair * idBits` of the id stream.
    private func id(_ pair: Int) -> Int {
        var ids = BitReader(bytes: bytes, start: bitsOffset, end: bytes.count, position: pair * expected.idBits)
        return ids.read(expected.idBits)!
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
