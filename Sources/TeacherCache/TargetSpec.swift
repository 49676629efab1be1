import Foundation

/// What a teacher cache keeps of each position's next-token distribution (the teacher's, at T = 1).
///
/// - `topk:K`: the K most likely ids with their probabilities, and the tail mass they leave.
/// - `topp:P,K`: the same, cut after the smallest prefix whose mass reaches P (at most K ids).
/// - `sampled:N`: N ids drawn independently from the distribution (RS-KD), kept as unique ids with
///   counts; `count / N` is an unbiased estimate of the teacher's probabilities.
/// - `systematic:N`: N draws at evenly spaced points `(u + j) / N` of the cumulative distribution
///   (one uniform `u` per position: systematic sampling), kept the same way. Each draw alone still
///   follows the teacher, so `count / N` stays unbiased, but a token of probability p gets
///   `floor(N p)` or `ceil(N p)` draws: its estimate is off by less than 1/N, where independent draws
///   are off by `sqrt(p (1 - p) / N)` (0.065 for p = 0.3, N = 50).
public enum TeacherTargetSpec: Equatable, Sendable, CustomStringConvertible {
    case topK(k: Int)
    case topP(p: Float, k: Int)
    case sampled(draws: Int)
    case systematic(draws: Int)

    /// `teacher-cache build`'s default: on the whole corpus of plays 273 bytes a token, and a student
    /// within 0.13% of live distillation's perplexity (README, Ablation).
    public static let recommended = TeacherTargetSpec.systematic(draws: 1000)

    /// The most pairs a position's count can say: two bytes (caches of format version 3 count in two
    /// bytes where a position can hold more than ``maximumNarrowPairs``).
    public static let maximumPairs = 65535
    /// The most pairs one byte counts: the width of every count in caches of format versions 1 and 2.
    public static let maximumNarrowPairs = 255
    /// The most draws or ids of targets made on the fly (`--sparsify-teacher`), which store no count.
    public static let maximumUnstored = 1 << 20
    /// The forms ``init(parsing:maximum:)`` reads, for messages.
    public static func forms(maximum: Int = maximumPairs) -> String {
        "topk:K, topp:P,K, sampled:N or systematic:N (K and N from 1 to \(maximum), 0 < P <= 1)"
    }

    public var description: String {
        switch self {
        case .topK(let k): return "topk:\(k)"
        case .topP(let p, let k): return "topp:\(p),\(k)"
        case .sampled(let n): return "sampled:\(n)"
        case .systematic(let n): return "systematic:\(n)"
        }
    }

    /// The draws of a sampled spec, whose stored values are counts; nil where they are probabilities.
    public var draws: Int? {
        switch self {
        case .sampled(let n), .systematic(let n): return n
        case .topK, .topP: return nil
        }
    }

    /// Whether the stored values are probabilities (top-k, top-p) rather than draw counts.
    public var storesProbabilities: Bool { draws == nil }

    /// The most pairs a position can have.
    public var maximumPairsPerPosition: Int {
        switch self {
        case .topK(let k), .topP(_, let k): return k
        case .sampled(let n), .systematic(let n): return n
        }
    }

    /// Bytes of each position's pair count in a cache shard: one, or two where a position can hold
    /// more pairs than one byte counts (format version 3).
    public var pairCountBytes: Int { maximumPairsPerPosition > Self.maximumNarrowPairs ? 2 : 1 }

    /// Parses `topk:32`, `topp:0.95,50`, `sampled:50` or `systematic:50`; K and N at most
    /// `maximum` (a cache counts them in two bytes: ``maximumPairs``).
    /// - Throws: a ``TeacherCacheError/badSpec(_:)`` saying what is wrong.
    public init(parsing text: String, maximum: Int = maximumPairs) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
        func count(_ number: String) throws -> Int {
            guard let value = Int(number), (1...maximum).contains(value) else {
                throw TeacherCacheError.badSpec("'\(number)' in '\(text)' is not a count from 1 to \(maximum)")
            }
            return value
        }
        guard parts.count == 2 else { throw TeacherCacheError.badSpec("'\(text)' is none of \(Self.forms(maximum: maximum))") }
        switch parts[0].lowercased() {
        case "topk": self = .topK(k: try count(parts[1]))
        case "sampled": self = .sampled(draws: try count(parts[1]))
        case "systematic": self = .systematic(draws: try count(parts[1]))
        case "topp":
            let values = parts[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard values.count == 2, let p = Float(values[0]), p > 0, p <= 1 else {
                throw TeacherCacheError.badSpec("'\(text)': write topp:P,K with 0 < P <= 1")
            }
            self = .topP(p: p, k: try count(values[1]))
        default: throw TeacherCacheError.badSpec("'\(text)' is none of \(Self.forms(maximum: maximum))")
        }
    }
}
