import Foundation

extension CPUKernels {
    /// As sample.cl: ids[r] = one token of logits row r [V]: the first index of the largest logit at
    /// temperature 0; else the inverse of the kept distribution's cumulative sum (vocabulary order)
    /// at u[r], the kept set being the top-k keys, then the smallest top-p set of those (thresholds
    /// on ``orderKey(_:)`` found by bisection, top-p's carrying the mass above its window, ties kept); -1 for a row whose largest logit is -inf
    /// or that holds a NaN. Sums run in fp32 in vocabulary order (the kernel's order differs by its
    /// chunks: a draw within rounding of a boundary may land on the neighbour).
    public static func sample_rows(_ z: UnsafePointer<Float>, _ u: UnsafePointer<Float>, _ ids: UnsafeMutablePointer<Int32>, cols n: Int,
                                   temperature: Float, topK: Int, topP: Float, _ rows: Range<Int>) {
        for r in rows {
            let zr = UnsafeBufferPointer(start: z + r * n, count: n)
            var top = -Float.infinity, first = -1
            for (j, value) in zr.enumerated() where value > top { (top, first) = (value, j) }
            guard top > -.infinity else { ids[r] = -1; continue }
            guard temperature > 0 else { ids[r] = Int32(first); continue }
            let inverseT = 1 / temperature
            func weight(_ j: Int) -> Float { expf((zr[j] - top) * inverseT) }
            func mass(atLeast threshold: UInt32) -> Float {
                var sum: Float = 0
                for j in 0..<n where orderKey(zr[j]) >= threshold { sum += weight(j) }
                return sum
            }
            var tk: UInt32 = 0
            if topK > 0 && topK < n {
                for bit in (0..<32).reversed() {
                    let candidate = tk | (1 << UInt32(bit))
                    if zr.reduce(0, { $0 + (orderKey($1) >= candidate ? 1 : 0) }) >= topK { tk = candidate }
                }
            }
            // top-p: the threshold lies in a window [tp, tp + 2 bit) after each round; the mass of the
            // kept keys above the window is carried, so a round weighs only the window's upper half.
            var tp: UInt32 = 0
            if topP < 1 {
                let goal = topP * mass(atLeast: tk)
                var above: Float = 0
                for shift in (0..<32).reversed() {
                    let bit: UInt32 = 1 << UInt32(shift), candidate = tp | bit
                    var window: Float = 0
                    for j in 0..<n {
                        let key = orderKey(zr[j])
                        if key >= candidate && key &- candidate < bit && key >= tk { window += weight(j) }
                    }
                    if above + window >= goal { tp = candidate } else { above += window }
                }
            }
            let threshold = max(tk, tp)
            let target = u[r] * mass(atLeast: threshold)
            var cumulative: Float = 0, chosen = -1
            for j in 0..<n where orderKey(zr[j]) >= threshold {
                cumulative += weight(j)
                chosen = j
                if target < cumulative { break }
            }
            ids[r] = cumulative.isNaN ? -1 : Int32(chosen)
        }
    }

    /// A 32-bit key that sorts as the float does (negative values bit-inverted, positive ones with the sign bit set).
    @inline(__always) static func orderKey(_ value: Float) -> UInt32 {
        let bits = value.bitPattern
        return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
    }
}
