import Foundation
import Tensor

/// The divergence between the teacher's tempered distribution `p = softmax(z_t / T)` and the
/// student's `q = softmax(z_s / T)`, per row. Every value is a true divergence: a student equal to
/// its teacher scores 0 (DistiLLM's code drops the teacher-entropy constant; kdgpu does not).
public enum Divergence: Equatable, Sendable, CustomStringConvertible {
    /// `KL(p || q) = sum p (log p - log q)`; gradient `(q - p) / T`.
    case forwardKL
    /// `KL(q || p)`; infinite where the student gives mass to a token the teacher rules out.
    case reverseKL
    /// Generalized Jensen-Shannon `beta KL(p || m) + (1 - beta) KL(q || m)`, `m = beta p + (1 - beta) q`.
    /// Continuous in beta, not special-cased: at beta = 0 and beta = 1 the mixture equals one of the
    /// two distributions and the value is 0 (use ``forwardKL`` / ``reverseKL`` for those). beta = 0.5
    /// is the symmetric Jensen-Shannon divergence.
    case jensenShannon(beta: Float)
    /// DistiLLM's skew forward KL `KL(p || alpha p + (1 - alpha) q)`; alpha = 0 is ``forwardKL``, 1 gives 0.
    case skewForwardKL(alpha: Float)
    /// DistiLLM's skew reverse KL `KL(q || (1 - alpha) p + alpha q)`; alpha = 0 is ``reverseKL``, 1 gives 0.
    case skewReverseKL(alpha: Float)
    /// Total variation `0.5 sum |p - q|` (subgradient 0 where p = q).
    case totalVariation

    /// The kernels' `kind` argument.
    var kernelKind: Int32 {
        switch self {
        case .forwardKL: return 0
        case .reverseKL: return 1
        case .jensenShannon: return 2
        case .skewForwardKL: return 3
        case .skewReverseKL: return 4
        case .totalVariation: return 5
        }
    }

    /// beta or alpha; 0 for the divergences without a parameter.
    public var parameter: Float {
        switch self {
        case .jensenShannon(let beta): return beta
        case .skewForwardKL(let alpha), .skewReverseKL(let alpha): return alpha
        default: return 0
        }
    }

    /// `fkl`, `rkl`, `jsd(0.5)`, `sfkl(0.1)`, `srkl(0.1)`, `tvd`.
    public var description: String {
        switch self {
        case .forwardKL: return "fkl"
        case .reverseKL: return "rkl"
        case .jensenShannon(let beta): return "jsd(\(beta))"
        case .skewForwardKL(let alpha): return "sfkl(\(alpha))"
        case .skewReverseKL(let alpha): return "srkl(\(alpha))"
        case .totalVariation: return "tvd"
        }
    }

    /// The names ``init(parsing:)`` reads, for messages.
    public static let names = "fkl, rkl, jsd(beta), sfkl(alpha), srkl(alpha) or tvd"

    /// Parses the names of ``description`` (`jsd` alone means beta = 0.5, `sfkl`/`srkl` alpha = 0.1);
    /// the parameter must be a number strictly between 0 and 1.
    /// - Throws: a message (without the key) saying what is wrong with `name`.
    public init(parsing name: String) throws {
        let text = name.trimmingCharacters(in: .whitespaces).lowercased()
        var head = text, argument: String?
        if let open = text.firstIndex(of: "(") {
            guard text.hasSuffix(")") else { throw DivergenceNameError("'\(name)' lacks its closing ')'; use \(Self.names)") }
            head = String(text[..<open])
            argument = String(text[text.index(after: open)..<text.index(before: text.endIndex)]).trimmingCharacters(in: .whitespaces)
        }
        func parameter(_ label: String, default value: Float) throws -> Float {
            guard let argument else { return value }
            guard let number = Float(argument), number.isFinite else {
                throw DivergenceNameError("'\(name)': \(label) '\(argument)' is not a number; write \(head)(\(label)) with 0 < \(label) < 1")
            }
            guard number > 0 && number < 1 else {
                throw DivergenceNameError("'\(name)': \(label) \(argument) is out of range; use 0 < \(label) < 1")
            }
            return number
        }
        switch head {
        case "fkl", "kl", "rkl", "tvd":
            guard argument == nil else { throw DivergenceNameError("'\(name)': \(head) takes no parameter") }
            self = head == "rkl" ? .reverseKL : head == "tvd" ? .totalVariation : .forwardKL
        case "jsd": self = .jensenShannon(beta: try parameter("beta", default: 0.5))
        case "sfkl": self = .skewForwardKL(alpha: try parameter("alpha", default: 0.1))
        case "srkl": self = .skewReverseKL(alpha: try parameter("alpha", default: 0.1))
        default: throw DivergenceNameError("unknown '\(name)'; use \(Self.names)")
        }
    }

    /// ``init(parsing:)``, nil for a name it refuses.
    public init?(name: String) {
        guard let divergence = try? Divergence(parsing: name) else { return nil }
        self = divergence
    }
}

/// Why a divergence name was refused (one line, without the setting's key).
public struct DivergenceNameError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// How per-row values become the reported loss.
public enum LossReduction: String, Sendable {
    /// Sum over valid rows divided by their number (at least 1); gradients carry `1 / validRows`.
    case mean
    /// Sum over valid rows.
    case sum
    /// Per-row values only (``DistillationLossResult/rowLosses``); `loss` holds their sum and the
    /// gradient is that of the sum.
    case none
}

/// What a top-k teacher means for the tokens it does not list.
public enum MissingTeacherMass: String, Sendable {
    /// The k logits are renormalized among themselves: every other token has probability 0 (so a
    /// reverse KL is infinite wherever the student gives those tokens mass). The values may be raw logits.
    case renormalize
    /// The k values are the teacher's log-probabilities at T = 1; the remaining mass
    /// `1 - sum exp(values)` is spread evenly over the other `V - k` tokens, and temperature applies
    /// to that completed distribution.
    case uniform
    /// DistillKit's `symmetric_uniform`: the k values are log-probabilities at T = 1 and the rest
    /// of the teacher's mass is one more bucket, set against the student's mass on the unlisted
    /// tokens: `sum_k p log(p / q) + p_rest log(p_rest / q_rest)`, tempered as `p^(1/T)` (the rest
    /// too) and `q = softmax(z / T)`. That is the forward KL against the teacher completed with its
    /// rest spread in proportion to the student's own tail (`p_rest q_j / q_rest`), whose gradient
    /// `(q - p) / T` is the bucket loss's exact gradient; forward KL only.
    case bucket
    /// LFM2's decoupled top-K objective: the k values are log-probabilities at T = 1, with S the
    /// listed ids, `a = P_T(S)`, `b = P_S(S)` (untempered student):
    /// `KL(Bern(a) || Bern(b)) + T^2 a KL(p_T(. | S) || q_T(. | S))`, the conditionals over S alone
    /// at temperature T (`p^(1/T)` renormalized; T^2 only with ``DistillationLoss/scaleBySquaredTemperature``).
    /// The student is never asked to put zero mass outside S; forward KL only, without TAID.
    case decoupled
    /// The k values are log-probabilities at T = 1 and the remaining mass is spread over the
    /// unlisted tokens in proportion to a prior over the vocabulary (``TopKTeacher/tailPrior``, the
    /// same for every row), and temperature applies to that completed distribution; ``uniform`` is
    /// the flat prior. The target does not depend on the student, so every divergence takes it.
    case prior
}

/// A sparse teacher: its top-k token ids and their logits (or log-probabilities), per row.
public struct TopKTeacher {
    /// `[N, k]` token ids stored as floats (exact below 2^24), distinct within a row; -1 marks an
    /// empty slot of a row with fewer than k (its value must be -inf).
    public var ids: Tensor
    /// `[N, k]` logits, or log-probabilities with ``MissingTeacherMass/uniform``.
    public var values: Tensor
    public var missingMass: MissingTeacherMass
    /// `[V]` log-weights (finite, up to a constant) of the tail with ``MissingTeacherMass/prior``; nil otherwise.
    public var tailPrior: Tensor?

    public init(ids: Tensor, values: Tensor, missingMass: MissingTeacherMass, tailPrior: Tensor? = nil) {
        self.ids = ids
        self.values = values
        self.missingMass = missingMass
        self.tailPrior = tailPrior
    }
}

/// The teacher side of one loss call.
public enum TeacherLogits {
    /// `[N, V]` logits, or `[N, V_t]` with `V_t > V` when ``DistillationLoss/truncateTeacherVocabulary`` is set.
    case dense(Tensor)
    case topK(TopKTeacher)
}

/// Where the student gradient goes.
public enum GradientDestination {
    /// Overwrite the student logits with `d loss / d z_s` (no extra memory).
    case inPlace
    /// Write it into this `[N, V]` tensor and leave the logits untouched.
    case into(Tensor)
}

/// A fused distillation loss: `w_hard * CE(z_s, y) + w_soft * T^2 * D(p || q)` per row, reduced over
/// the valid rows, with `d loss / d z_s` written in the same kernel. No `[N, V]` probability tensor
/// is ever made.
///
/// ```swift
/// var loss = DistillationLoss(divergence: .forwardKL, temperature: 2)
/// loss.hardWeight = 0.5
/// let result = try loss(student: logits, teacher: .dense(teacherLogits), labels: labels)
/// // logits now hold the gradient; result.loss is the mean over rows whose label is not -100
/// ```
public struct DistillationLoss: Sendable {
    public var divergence: Divergence
    /// T > 0: both distributions are softmax(z / T).
    public var temperature: Float
    /// Multiply the soft term by T^2 (Hinton), so its gradients keep their size across temperatures.
    public var scaleBySquaredTemperature: Bool
    public var softWeight: Float
    /// Weight of the hard-label cross-entropy on the untempered student logits; needs labels.
    public var hardWeight: Float
    /// A label equal to this marks a row as ignored (padding); such rows add nothing and get zero gradient.
    public var ignoreIndex: Int
    public var reduction: LossReduction
    /// Compute values only (evaluation): no gradient is written and the logits stay untouched.
    public var forwardOnly: Bool
    /// TAID: the target is `softmax(((1 - t) stopgrad(z_s) + t z_t) / T)`, with t in [0, 1]; nil is off.
    /// With ``Divergence/forwardKL`` this is TAID's `KL(p_t || q)`, which differs from its
    /// `-sum p_t log q` by the target's entropy (a constant for the student).
    public var taidInterpolation: Float?
    /// Accept a teacher with a larger (padded) vocabulary and use its first V columns.
    public var truncateTeacherVocabulary: Bool
    /// Report the hard-label cross-entropy (``DistillationLossResult/crossEntropy``) from the same
    /// pass even when `hardWeight` is 0 (it needs labels). It is always reported when `hardWeight != 0`.
    public var reportCrossEntropy: Bool

    public init(divergence: Divergence = .forwardKL, temperature: Float = 1, scaleBySquaredTemperature: Bool = true,
                softWeight: Float = 1, hardWeight: Float = 0, ignoreIndex: Int = -100, reduction: LossReduction = .mean,
                forwardOnly: Bool = false, taidInterpolation: Float? = nil, truncateTeacherVocabulary: Bool = false,
                reportCrossEntropy: Bool = false) {
        self.reportCrossEntropy = reportCrossEntropy
        self.divergence = divergence
        self.temperature = temperature
        self.scaleBySquaredTemperature = scaleBySquaredTemperature
        self.softWeight = softWeight
        self.hardWeight = hardWeight
        self.ignoreIndex = ignoreIndex
        self.reduction = reduction
        self.forwardOnly = forwardOnly
        self.taidInterpolation = taidInterpolation
        self.truncateTeacherVocabulary = truncateTeacherVocabulary
    }

    /// The soft term's weight as the kernels apply it: `softWeight * T^2` (or without T^2).
    public var effectiveSoftWeight: Float {
        scaleBySquaredTemperature ? softWeight * temperature * temperature : softWeight
    }
}

/// The outcome of one loss call.
public struct DistillationLossResult: Sendable {
    /// The reduced loss (mean over valid rows, or their sum).
    public let loss: Float
    /// Per-row values `w_hard * CE + w_soft * T^2 * D`; 0 for ignored rows.
    public let rowLosses: [Float]
    /// Rows neither masked nor labelled `ignoreIndex`.
    public let validRows: Int
    /// The hard-label cross-entropy of the untempered student, reduced like `loss`, from the same
    /// pass: present when `hardWeight != 0` or ``DistillationLoss/reportCrossEntropy`` (with labels).
    public let crossEntropy: Float?
    /// The teacher's own hard-label cross-entropy, when the fused linear path was asked for it.
    public let teacherCrossEntropy: Float?

    public init(loss: Float, rowLosses: [Float], validRows: Int, crossEntropy: Float? = nil, teacherCrossEntropy: Float? = nil) {
        self.loss = loss
        self.rowLosses = rowLosses
        self.validRows = validRows
        self.crossEntropy = crossEntropy
        self.teacherCrossEntropy = teacherCrossEntropy
    }

    func with(teacherCrossEntropy: Float?) -> DistillationLossResult {
        DistillationLossResult(loss: loss, rowLosses: rowLosses, validRows: validRows, crossEntropy: crossEntropy,
                               teacherCrossEntropy: teacherCrossEntropy)
    }
}

/// A problem found in the data of one loss call, with the first row it occurs in.
public struct DistillationLossError: Error, CustomStringConvertible {
    public let row: Int
    public let message: String
    public var description: String { "distillation loss, row \(row): \(message)" }
}
