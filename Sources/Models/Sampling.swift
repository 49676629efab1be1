import Foundation

/// Picks the next token from a row of logits: greedy at temperature 0, else a draw from
/// softmax(logits / temperature) restricted to the smallest set of tokens whose probability reaches top-p.
public struct Sampler {
    public var temperature: Float
    public var topP: Float
    private var state: UInt64

    public init(temperature: Float, topP: Float, seed: UInt64) {
        self.temperature = temperature
        self.topP = topP
        state = seed
    }

    /// SplitMix64: reproducible draws from `seed`.
    private mutating func uniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }

    public mutating func next(logits: [Float]) -> Int32 {
        let greedy = logits.indices.max { logits[$0] < logits[$1] }!
        guard temperature > 0 else { return Int32(greedy) }
        let m = Double(logits[greedy])
        var weights = logits.enumerated().map { ($0.offset, exp((Double($0.element) - m) / Double(temperature))) }
        weights.sort { $0.1 > $1.1 }
        let total = weights.reduce(0) { $0 + $1.1 }
        var kept = 0, mass = 0.0
        while kept < weights.count, mass < Double(topP) * total || kept == 0 {
            mass += weights[kept].1
            kept += 1
        }
        var draw = uniform() * mass
        for (token, weight) in weights.prefix(kept) {
            draw -= weight
            if draw <= 0 { return Int32(token) }
        }
        return Int32(weights[kept - 1].0)
    }
}

/// Consecutive windows of `length` tokens (the last may be shorter, but has at least 2).
public func tokenWindows(_ tokens: [Int32], length: Int) -> [[Int32]] {
    stride(from: 0, to: tokens.count, by: length)
        .map { Array(tokens[$0..<min(tokens.count, $0 + length)]) }
        .filter { $0.count >= 2 }
}
