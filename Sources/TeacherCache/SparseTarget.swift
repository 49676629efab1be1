import Foundation
import Tensor

/// One position's stored target: the teacher's next-token distribution (T = 1) made sparse.
public struct SparseTarget: Equatable, Sendable {
    /// Token ids: most likely first (top-k, top-p), ascending (sampled).
    public var ids: [Int32]
    /// Per id: its probability (top-k, top-p) or how many of the draws chose it (sampled).
    public var values: [Float]
    /// The teacher's mass outside `ids` (top-k, top-p); 0 for sampled targets, which estimate the
    /// whole distribution.
    public var tailMass: Float
    /// log p_teacher(the token that follows), for the teacher's cross-entropy (DTS) and its
    /// validation NLL.
    public var labelLogProbability: Float

    public init(ids: [Int32], values: [Float], tailMass: Float, labelLogProbability: Float) {
        self.ids = ids
        self.values = values
        self.tailMass = tailMass
        self.labelLogProbability = labelLogProbability
    }

    /// The stored distribution as (id, probability) pairs: top-k probabilities as the teacher gave
    /// them, sampled counts divided by the draws.
    public func probabilities(spec: TeacherTargetSpec) -> [(id: Int32, probability: Float)] {
        if let draws = spec.draws { return zip(ids, values).map { ($0, $1 / Float(draws)) } }
        return Array(zip(ids, values).map { ($0, $1) })
    }

    /// The target of one position from its row of V probabilities (a softmax on the device, so
    /// the host only selects and adds).
    /// - Parameters:
    ///   - label: the token that follows (its log-probability is kept).
    ///   - random: the draws of `sampled:N` (advanced by N uniform numbers) or `systematic:N` (by one).
    public static func extract(probabilities row: UnsafeBufferPointer<Float>, label: Int, spec: TeacherTargetSpec,
                               random: inout SplitMix64) -> SparseTarget {
        let labelLogProbability = logf(row[label])
        switch spec {
        case .topK(let k): return largest(row, k: k, massLimit: 1, labelLogProbability: labelLogProbability)
        case .topP(let p, let k): return largest(row, k: k, massLimit: Double(p), labelLogProbability: labelLogProbability)
        case .sampled(let draws):
            // Sorted independent uniform points.
            let points = (0..<draws).map { _ in random.unit() }.sorted()
            return drawn(row, at: points, labelLogProbability: labelLogProbability)
        case .systematic(let draws):
            // Evenly spaced points behind one uniform offset.
            let offset = random.unit()
            return drawn(row, at: (0..<draws).map { (Double($0) + offset) / Double(draws) }, labelLogProbability: labelLogProbability)
        }
    }

    /// The k largest entries above 0, most likely first (ties: the lower id), cut after the prefix
    /// whose mass first reaches `massLimit`.
    static func largest(_ row: UnsafeBufferPointer<Float>, k: Int, massLimit: Double, labelLogProbability: Float) -> SparseTarget {
        let k = min(k, row.count)
        // kept[0] is the smallest kept value; an entry enters when it beats it.
        var keptValues = [Float](repeating: 0, count: k), keptIDs = [Int32](repeating: -1, count: k)
        var threshold: Float = 0
        for (id, value) in row.enumerated() where value > threshold {
            // Shift the smaller kept entries down and insert in ascending order.
            var slot = 0
            while slot + 1 < k && keptValues[slot + 1] < value { keptValues[slot] = keptValues[slot + 1]; keptIDs[slot] = keptIDs[slot + 1]; slot += 1 }
            keptValues[slot] = value
            keptIDs[slot] = Int32(id)
            threshold = keptValues[0]
        }
        var ids: [Int32] = [], values: [Float] = [], mass = 0.0
        for index in stride(from: k - 1, through: 0, by: -1) where keptIDs[index] >= 0 {
            let probability = Double(keptValues[index])
            ids.append(keptIDs[index])
            values.append(Float(probability))
            mass += probability
            if mass >= massLimit { break }
        }
        return SparseTarget(ids: ids, values: values, tailMass: Float(max(0, 1 - mass)), labelLogProbability: labelLogProbability)
    }

    /// The ids the row's cumulative distribution reaches at `unitPoints` (ascending, in [0, 1)), as
    /// ascending unique ids with how many points each took. The row is summed in blocks first (one
    /// vectorized pass), and only the blocks a point falls in are swept entry by entry.
    public static func drawn(_ row: UnsafeBufferPointer<Float>, at unitPoints: [Double], labelLogProbability: Float) -> SparseTarget {
        let n = row.count, blocks = (n + drawBlock - 1) / drawBlock
        let sums = (0..<blocks).map { blockSum(row, from: $0 * drawBlock, to: min(n, ($0 + 1) * drawBlock)) }
        let total = sums.reduce(0, +)
        // The points scaled to [0, total), then infinity: past the last point no entry's sum reaches the next.
        let draws = unitPoints.count
        var points = unitPoints.map { $0 * total }
        points.append(.infinity)
        var ids: [Int32] = [], counts: [Float] = []
        func take(_ id: Int, _ count: Int) {
            guard count > 0, id >= 0 else { return }
            if ids.last == Int32(id) { counts[counts.count - 1] += Float(count) } else { ids.append(Int32(id)); counts.append(Float(count)) }
        }
        var next = 0, start = 0.0, lastPositive = -1
        for block in 0..<blocks where next < draws {
            let end = start + sums[block]
            if points[next] < end || block == blocks - 1 {
                var cumulative = start
                for id in block * drawBlock..<min(n, (block + 1) * drawBlock) where row[id] > 0 {
                    cumulative += Double(row[id])
                    lastPositive = id
                    guard points[next] < cumulative else { continue }
                    let first = next
                    while points[next] < cumulative { next += 1 }
                    take(id, next - first)
                }
                // Points the entry-by-entry sum leaves short of the block sum (rounding) go to its last positive entry.
                let first = next
                while points[next] < end && lastPositive >= 0 { next += 1 }
                take(lastPositive, next - first)
            }
            start = end
        }
        take(lastPositive, draws - next)  // rounding at the very end of the row
        return SparseTarget(ids: ids, values: counts, tailMass: 0, labelLogProbability: labelLogProbability)
    }

    /// Entries per block of ``drawn(_:at:labelLogProbability:)``'s first pass.
    static let drawBlock = 256

    /// The sum of `row[from..<to]`: 16 lanes in fp32 (at most 16 entries each), then fp64.
    static func blockSum(_ row: UnsafeBufferPointer<Float>, from: Int, to: Int) -> Double {
        var lanes = SIMD16<Float>()
        let base = UnsafeRawPointer(row.baseAddress! + from)
        var i = 0
        while from + i + 16 <= to {
            lanes += base.loadUnaligned(fromByteOffset: i * MemoryLayout<Float>.stride, as: SIMD16<Float>.self)
            i += 16
        }
        var sum = Double(lanes.sum())
        for id in from + i..<to { sum += Double(row[id]) }
        return sum
    }
}
