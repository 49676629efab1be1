import Foundation
import Tensor

/// Picks the next token from a row of logits: greedy at temperature 0, else a draw from
/// softmax(logits / temperature) restricted to the smallest set of tokens whose probability reaches top-p.
public struct Sampler {
    public var temperature: Float
    public var topP: Float
    private var random: SplitMix64

    public init(temperature: Float, topP: Float, seed: UInt64) {
        self.temperature = temperature
        self.topP = topP
        random = SplitMix64(seed: seed)
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
        var draw = random.unit() * mass
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
