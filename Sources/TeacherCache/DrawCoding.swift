import Foundation

/// The token ids in the order of how often they occur in a corpus (most frequent first; ties by
/// ascending id, and after them the ids that never occur, ascending): a drawn target's ids are coded
/// as their ranks in this order, so the common tokens a teacher predicts most take the fewest bits
/// (``DrawCoding``). Kept beside a cache's manifest as `id-order.bin`: the ids that occur, from rank
/// 0, as little-endian u32 (the others follow implied).
public struct TokenIDOrder: Equatable, Sendable {
    public static let fileName = "id-order.bin"

    /// `ids[rank]`: the id at each rank.
    public let ids: [Int32]
    /// `ranks[id]`: the rank of each id.
    public let ranks: [Int32]
    /// How many of `ids` the file lists (the ids that occur); the rest are the others, ascending.
    let listed: Int

    public var vocabulary: Int { ids.count }

    /// The order of `tokens`' frequencies over a vocabulary of `vocabulary` ids.
    public init(frequenciesOf tokens: [Int32], vocabulary: Int) {
        var counts = [Int](repeating: 0, count: vocabulary)
        for token in tokens where (0..<vocabulary).contains(Int(token)) { counts[Int(token)] += 1 }
        let occurring = (0..<vocabulary).filter { counts[$0] > 0 }.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
        self.init(listed: occurring.map(Int32.init), vocabulary: vocabulary)
    }

    /// `listed` (unique ids below `vocabulary`) first, then the other ids ascending.
    private init(listed: [Int32], vocabulary: Int) {
        var ranks = [Int32](repeating: -1, count: vocabulary)
        for (rank, id) in listed.enumerated() { ranks[Int(id)] = Int32(rank) }
        var ids = listed
        ids.reserveCapacity(vocabulary)
        for id in 0..<vocabulary where ranks[id] < 0 {
            ranks[id] = Int32(ids.count)
            ids.append(Int32(id))
        }
        self.ids = ids
        self.ranks = ranks
        self.listed = listed.count
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 * listed)
        for id in ids.prefix(listed) { withUnsafeBytes(of: UInt32(id).littleEndian) { bytes += $0 } }
        return bytes
    }

    /// Reads `id-order.bin`: unique ids below `vocabulary`, or an error naming `file`.
    public static func decode(_ bytes: [UInt8], file: String, vocabulary: Int) throws -> TokenIDOrder {
        guard bytes.count % 4 == 0, bytes.count <= 4 * vocabulary else {
            throw TeacherCacheError.invalid(file: file, reason: "\(bytes.count) bytes, not a list of at most \(vocabulary) 4-byte token ids (damaged)")
        }
        var seen = [Bool](repeating: false, count: vocabulary)
        let ids = (0..<bytes.count / 4).map { index -> Int in
            (0..<4).reduce(0) { $0 | Int(bytes[4 * index + $1]) << (8 * $1) }
        }
        for id in ids {
            guard id < vocabulary, !seen[id] else {
                throw TeacherCacheError.invalid(file: file, reason: "it is not an order of token ids (id \(id) is \(id < vocabulary ? "repeated" : "outside the vocabulary of \(vocabulary)"))")
            }
            seen[id] = true
        }
        return TokenIDOrder(listed: ids.map(Int32.init), vocabulary: vocabulary)
    }
}

/// How a drawn target's (id, count) pairs are written in a shard of format versions 2 and 3: its ids as
/// their ranks in a ``TokenIDOrder``, ascending, coded as gaps (the first rank, then each rank less
/// the one before less one) in an exponential-Golomb code of the order that makes the position's
/// gaps shortest (4 bits), then the counts in the same order, each `count - 1` in the order-0 code
/// (Elias gamma: a count of 1 takes one bit). A position of 48 ids (120 systematic draws of the
/// default teacher on Shakespeare) takes about 67 bytes where fixed 16-bit ids and 8-bit counts take 142.
///
/// The order-k code of n writes `m = n + 2^k` as z zero bits, a one bit and then m's low `z + k`
/// bits, least significant first, where `z + k + 1` is m's bit length: `2z + k + 1` bits.
enum DrawCoding {
    /// Bits of a position's code order.
    static let orderBits = 4

    /// Bits of n in the order-k code.
    static func codeLength(_ n: Int, order k: Int) -> Int {
        let m = n + (1 << k), length = Int.bitWidth - m.leadingZeroBitCount
        return 2 * (length - 1 - k) + k + 1
    }

    static func write(_ n: Int, order k: Int, to bits: inout BitWriter) {
        let m = n + (1 << k), low = Int.bitWidth - m.leadingZeroBitCount - 1
        bits.append(1 << (low - k), bits: low - k + 1)  // z zeros, then the one bit
        bits.append(UInt64(m), bits: low)
    }

    /// Codes one position's pairs: `ids` unique, `counts` whole numbers >= 1.
    static func write(ids: [Int32], counts: [Float], order: TokenIDOrder, to bits: inout BitWriter) {
        let pairs = zip(ids, counts).map { (rank: Int(order.ranks[Int($0)]), count: Int($1)) }.sorted { $0.rank < $1.rank }
        precondition(zip(pairs, pairs.dropFirst()).allSatisfy { $0.rank < $1.rank } && pairs.allSatisfy { $0.count >= 1 },
                     "a drawn target's ids are unique and its counts positive")
        let gaps = pairs.indices.map { $0 == 0 ? pairs[0].rank : pairs[$0].rank - pairs[$0 - 1].rank - 1 }
        let lengths = (0..<(1 << orderBits)).map { k in gaps.reduce(0) { $0 + codeLength($1, order: k) } }
        let best = lengths.indices.min { lengths[$0] < lengths[$1] }!  // the first shortest
        bits.append(UInt64(best), bits: orderBits)
        for gap in gaps { write(gap, order: best, to: &bits) }
        for pair in pairs { write(pair.count - 1, order: 0, to: &bits) }
    }

    /// Decodes one position's `pairs` pairs, as ascending ids with their counts; nil where the bits
    /// do not decode to ranks inside the vocabulary (a damaged shard).
    static func read(pairs: Int, order: TokenIDOrder, from bits: inout BitReader) -> (ids: [Int32], counts: [Float])? {
        guard let k = bits.read(orderBits) else { return nil }
        // Each pair as its id above its count in one word, so one plain sort orders them by id (unique).
        var decoded = [UInt64](repeating: 0, count: pairs)
        var rank = -1
        for index in 0..<pairs {
            guard let gap = read(order: k, from: &bits) else { return nil }
            rank += gap + 1
            guard rank < order.vocabulary else { return nil }
            decoded[index] = UInt64(UInt32(bitPattern: order.ids[rank])) << 32
        }
        for index in 0..<pairs {
            guard let count = read(order: 0, from: &bits), count < 1 << 24 else { return nil }
            decoded[index] |= UInt64(count + 1)
        }
        decoded.sort()
        return (decoded.map { Int32(truncatingIfNeeded: $0 >> 32) }, decoded.map { Float(UInt32(truncatingIfNeeded: $0)) })
    }

    static func read(order k: Int, from bits: inout BitReader) -> Int? {
        // z zeros (at most 40), the one bit, then z + k bits.
        let zeros = bits.peek().trailingZeroBitCount
        guard zeros <= 40, bits.skip(zeros + 1), let low = bits.read(zeros + k) else { return nil }
        return (1 << (zeros + k) | low) - (1 << k)
    }
}

/// Values of a given width packed least significant bit first.
struct BitWriter {
    private(set) var bytes: [UInt8] = []
    private var buffer: UInt64 = 0
    private var count = 0

    /// Bits written so far.
    var bitCount: Int { 8 * bytes.count + count }

    mutating func append(_ value: UInt64, bits: Int) {
        precondition(bits <= 56)
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

/// Reads what ``BitWriter`` packs, from bit `position` of `bytes[start..<end]`; nil past the end.
struct BitReader {
    let bytes: [UInt8]
    let start: Int, end: Int
    /// The next bit, counted from `start`'s first.
    var position: Int

    /// The bits from `position` on, least significant first: at least 57 of them, zeros past the end.
    func peek() -> UInt64 {
        let offset = start + position / 8
        var word: UInt64 = 0
        if offset + 8 <= end {
            word = UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) })
        } else {
            for byte in 0..<max(0, end - offset) { word |= UInt64(bytes[offset + byte]) << (8 * byte) }
        }
        return word >> (position % 8)
    }

    /// Moves past `bits` bits; false (not moving) when fewer are left.
    mutating func skip(_ bits: Int) -> Bool {
        guard position + bits <= 8 * (end - start) else { return false }
        position += bits
        return true
    }

    /// The next `bits` bits as a number (at most 56), or nil when fewer are left.
    mutating func read(_ bits: Int) -> Int? {
        guard bits <= 56 else { return nil }
        let value = Int(truncatingIfNeeded: peek() & ((1 << UInt64(bits)) - 1))
        return skip(bits) ? value : nil
    }
}
