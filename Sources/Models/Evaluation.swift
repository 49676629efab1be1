import Foundation
import Tensor

/// Negative log-likelihood of token sequences under a model.
public struct LikelihoodResult: Equatable {
    /// Sum over predicted tokens of -log p(token | prefix), natural log, accumulated in fp64.
    public var totalNLL: Double
    /// Tokens predicted: each sequence's length minus one.
    public var tokens: Int

    public init(totalNLL: Double = 0, tokens: Int = 0) {
        self.totalNLL = totalNLL
        self.tokens = tokens
    }

    public var meanNLL: Double { tokens > 0 ? totalNLL / Double(tokens) : .nan }
    public var perplexity: Double { exp(meanNLL) }

    public static func + (a: LikelihoodResult, b: LikelihoodResult) -> LikelihoodResult {
        LikelihoodResult(totalNLL: a.totalNLL + b.totalNLL, tokens: a.tokens + b.tokens)
    }
}

extension LlamaModel {
    /// The NLL of each token of `sequences` ([B][T], equal lengths, T >= 2) given the tokens before it.
    /// Only the B * (T - 1) chosen log-probabilities leave the device.
    public func likelihood(of sequences: [[Int32]]) throws -> LikelihoodResult {
        let t = sequences.first?.count ?? 0
        guard t >= 2 else { throw ModelError.badInput("evaluating likelihood needs sequences of at least 2 tokens, got \(t)") }
        let v = config.vocabulary
        guard let logits = try forward(sequences).logits else { preconditionFailure("forward computes logits by default") }
        try backend.logSoftmax(logits, into: logits)
        // Flat index of log p(next token) in the [B * T, V] log-probabilities, read through a [B * T * V, 1] view.
        var picks: [Int32] = []
        for (b, sequence) in sequences.enumerated() {
            for position in 0..<(t - 1) {
                let flat = (b * t + position) * v + Int(sequence[position + 1])
                guard let index = Int32(exactly: flat) else {
                    throw ModelError.badInput("a batch of \(sequences.count) x \(t) tokens with \(v) logits each is too large to evaluate at once; use a smaller batch")
                }
                picks.append(index)
            }
        }
        let pickIds = try backend.indexTensor(picks, shape: [picks.count], label: "target log-probability indices")
        let picked = try backend.tensor(shape: [picks.count, 1], label: "target log-probabilities")
        try backend.gatherRows(logits.reshaped([logits.count, 1]), ids: pickIds, into: picked)
        let logProbabilities = try picked.toArray()
        if let bad = logProbabilities.firstIndex(where: { !$0.isFinite }) {
            throw ModelError.badInput("non-finite log-probability \(logProbabilities[bad]) at sequence \(bad / (t - 1)), position \(bad % (t - 1) + 1)")
        }
        return LikelihoodResult(totalNLL: -logProbabilities.reduce(0.0) { $0 + Double($1) }, tokens: picks.count)
    }
}
