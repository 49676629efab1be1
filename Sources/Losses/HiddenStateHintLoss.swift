import Foundation
import Tensor

/// Hidden-state hints (FitNets, Patient KD): a loss between the student's hidden states, already
/// projected to the teacher's width by the caller, and the teacher's, per row (token), averaged over
/// the rows; `d loss / d student` is written by the same kernel (`Kernels/hint_loss.cl`).
///
/// Per row of width C, with `eps = 1e-8`:
/// - ``Kind/mse``: `mean_j (s_j - t_j)^2`.
/// - ``Kind/cosine``: `1 - s.t / (max(|s|, eps) max(|t|, eps))`. A zero row scores 1 and keeps a
///   finite gradient (`-t / (eps |t|)` for a zero student row, scaled as below; 0 when both are zero).
///
/// ```swift
/// let hint = HiddenStateHintLoss(kind: .cosine, weight: 0.5)
/// let loss = try hint(student: projected, teacher: teacherHidden, gradient: projectedGradient)
/// // loss = 0.5 * mean over rows; projectedGradient = d loss / d projected
/// ```
public struct HiddenStateHintLoss: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case mse
        case cosine
    }

    public var kind: Kind
    /// Factor of the mean over rows, and so of the gradient.
    public var weight: Float

    public init(kind: Kind = .mse, weight: Float = 1) {
        self.kind = kind
        self.weight = weight
    }

    /// Returns `weight * mean over rows of the row loss` of `student` `[N, C]` against `teacher`
    /// `[N, C]` and, when `gradient` `[N, C]` is given, writes `gradOutput * d loss / d student` into it.
    ///
    /// - Parameter gradient: a tensor of its own: it may not share memory with `student` or `teacher`.
    /// - Throws: `TensorError.shapeMismatch` naming both shapes; `TensorError.unsupported` for a
    ///   tensor that is not f32 or lives on another backend; ``HintLossError`` with the first row
    ///   whose input holds NaN or inf, or whose loss is not finite.
    public func callAsFunction(student: Tensor, teacher: Tensor, gradient: Tensor? = nil, gradOutput: Float = 1) throws -> Float {
        let op = "hidden-state hint loss"
        guard let backend = student.backend as? any HintLossKernel else {
            throw TensorError.unsupported("\(op): \(student.backend.name) has no hint-loss kernels")
        }
        try backend.requireFloat32(student, teacher, op: op)
        guard student.rank == 2, student.shape[1] > 0 else {
            throw TensorError.shapeMismatch("\(op): student hidden state \(student.label) must be [rows, width] with width > 0, got \(describeShape(student.shape))")
        }
        guard teacher.shape == student.shape else {
            throw TensorError.shapeMismatch("\(op): student hidden state \(student.label) \(describeShape(student.shape)) vs teacher hidden state \(teacher.label) \(describeShape(teacher.shape)); project the student to the teacher's width and give both the same rows")
        }
        if let gradient {
            try backend.requireFloat32(gradient, op: "\(op) (gradient)")
            guard gradient.shape == student.shape else {
                throw TensorError.shapeMismatch("\(op): gradient \(gradient.label) \(describeShape(gradient.shape)) vs student hidden state \(student.label) \(describeShape(student.shape))")
            }
            for input in [student, teacher] where Self.overlap(gradient, input) {
                throw TensorError.unsupported("\(op): gradient \(gradient.label) shares memory with \(input.label); give it a tensor of its own")
            }
        }
        guard weight.isFinite else {
            throw TensorError.unsupported("\(op): weight must be finite, got \(weight)")
        }
        let rows = student.shape[0]
        guard rows > 0 else { return 0 }

        let rowLoss = try backend.tensor(shape: [rows], label: "hint row losses")
        try backend.enqueueHintLossRows(HintLossLaunch(student: student, teacher: teacher, rowLoss: rowLoss, gradient: gradient,
                                                       kind: kind.kernelKind, gradScale: weight / Float(rows) * gradOutput))
        var total = 0.0
        for (row, value) in try rowLoss.toArray().enumerated() {
            guard value.isFinite else { throw try Self.diagnose(row: row, loss: value, student: student, teacher: teacher) }
            total += Double(value)
        }
        return Float(Double(weight) * total / Double(rows))
    }

    /// Whether two tensors' elements share any memory.
    static func overlap(_ a: Tensor, _ b: Tensor) -> Bool {
        a.storage === b.storage && a.offset < b.offset + b.count && b.offset < a.offset + a.count
    }

    /// Names what makes `row`'s loss non-finite, from that row of the inputs (read only on this error path).
    static func diagnose(row: Int, loss: Float, student: Tensor, teacher: Tensor) throws -> HintLossError {
        let studentRow = try student.rows(row..<(row + 1)).toArray(), teacherRow = try teacher.rows(row..<(row + 1)).toArray()
        for (name, tensor, values) in [("student", student, studentRow), ("teacher", teacher, teacherRow)] {
            if let column = values.firstIndex(where: { !$0.isFinite }) {
                return HintLossError(row: row, message: "\(name) hidden state \(tensor.label) holds \(values[column]) at column \(column) "
                                     + "(a diverged \(name) or bad input)")
            }
        }
        let largest = (studentRow + teacherRow).map(abs).max() ?? 0
        return HintLossError(row: row, message: "the loss is \(loss): values up to \(largest) are too large for fp32 sums of "
                             + "squares; scale the hidden states down")
    }
}

/// A problem found in the data of one hint-loss call, with the first row it occurs in.
public struct HintLossError: Error, CustomStringConvertible {
    public let row: Int
    public let message: String
    public var description: String { "hidden-state hint loss, row \(row): \(message)" }
}

extension HiddenStateHintLoss.Kind {
    /// The kernel's `kind` argument.
    public var kernelKind: Int32 {
        switch self {
        case .mse: return HintKernelKind.mse
        case .cosine: return HintKernelKind.cosine
        }
    }
}
