import Foundation

extension CPUKernels {
    /// As sample.cl: ids[r] = one token of logits row r [V]: the first index of the largest logit at
    /// temperature 0; else the inverse of the kept distribution's cumulative sum (vocabulary order)
    /// at u[r], the kept set being the top-k keys, then the smallest top-p set of those (thresholds
    /// on ``orderKey(_:)`` found by a radix select, ``radixThreshold(_:weight:floorKey:goal:)``;
    /// ties kept); -1 for a row whose largest logit is -inf or that holds a NaN. Sums run in fp32 in vocabulary order (the kernel's order differs by its
    /// chunks: a draw within rounding of a boundary may land on the neighbour).
    public static func sample_rows(_ z: UnsafePointer<Float>, _ u: UnsafePointer<Float>, _ ids: UnsafeMutablePointer<Int32>, cols n: Int,
                                   temperature: Float, topK: Int, topP: Float, _ rows: Range<Int>) {
        // Each row's weights exp((z - max) / T), computed once for the passes that read them (the kernel recomputes them).
        var weights = [Float](repeating: 0, count: temperature > 0 ? n : 0)
        for r in rows {
            let zr = UnsafeBufferPointer(start: z + r * n, count: n)
            var top = -Float.infinity, first = -1
            for (j, value) in zr.enumerated() where value > top { (top, first) = (value, j) }
            guard top > -.infinity else { ids[r] = -1; continue }
            guard temperature > 0 else { ids[r] = Int32(first); continue }
            let inverseT = 1 / temperature
            for j in 0..<n { weights[j] = expf((zr[j] - top) * inverseT) }
            func weight(_ j: Int) -> Float { weights[j] }
            func mass(atLeast threshold: UInt32) -> Float {
                var sum: Float = 0
                for j in 0..<n where orderKey(zr[j]) >= threshold { sum += weight(j) }
                return sum
            }
            let tk = topK > 0 && topK < n ? radixThreshold(zr, weight: { _ in 1 }, floorKey: 0, goal: Float(topK)) : 0
            let tp = topP < 1 ? radixThreshold(zr, weight: weight, floorKey: tk, goal: topP * mass(atLeast: tk)) : 0
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

    /// As sample.cl's radix_threshold: the largest key t whose kept keys (at or above both t and
    /// `floorKey`) weigh at least `goal`, four bits a pass (a 16-bin histogram of the kept keys under
    /// the prefix found so far; the largest digit whose bin, the bins above it and the weight above
    /// the prefix reach `goal`).
    static func radixThreshold(_ zr: UnsafeBufferPointer<Float>, weight: (Int) -> Float, floorKey: UInt32, goal: Float) -> UInt32 {
        var prefix: UInt32 = 0, above: Float = 0
        for pass in 0..<8 {
            let shift = UInt32(28 - 4 * pass)
            var bins = [Float](repeating: 0, count: 16)
            for j in zr.indices {
                let key = orderKey(zr[j])
                if key < floorKey || (pass > 0 && key >> (shift + 4) != prefix >> (shift + 4)) { continue }
                bins[Int((key >> shift) & 15)] += weight(j)
            }
            var digit: UInt32 = 0
            for d in stride(from: 15, to: 0, by: -1) {
                if above + bins[d] >= goal { digit = UInt32(d); break }
                above += bins[d]
            }
            prefix |= digit << shift
        }
        return prefix
    }

    /// A 32-bit key that sorts as the float does (negative values bit-inverted, positive ones with the sign bit set).
    @inline(__always) static func orderKey(_ value: Float) -> UInt32 {
        let bits = value.bitPattern
        return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
    }
}
