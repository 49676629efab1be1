import Foundation
import Tensor

/// The checked entry point: validates shapes and options (errors name both sizes), allocates the
/// small per-call buffers, launches the kernels and turns row statuses into worded errors.
extension DistillationLoss {
    /// Computes the loss of `student` `[N, V]` against `teacher` and, unless ``forwardOnly``, writes
    /// `gradOutput * d loss / d student` to `gradient`.
    ///
    /// - Parameters:
    ///   - labels: `[N]` token ids as floats; `ignoreIndex` marks rows to ignore; required when `hardWeight != 0`.
    ///   - rowMask: `[N]` row weights: a row's loss and gradient are multiplied by its entry, and a row
    ///     whose entry is 0 is ignored (not counted by the mean).
    /// - Throws: `TensorError.shapeMismatch` naming both sizes; ``DistillationLossError`` with the first
    ///   row whose input is NaN or +inf, entirely -inf, has a label outside the vocabulary, or whose loss is not finite.
    public func callAsFunction(student: Tensor, teacher: TeacherLogits, labels: Tensor? = nil, rowMask: Tensor? = nil,
                               gradient: GradientDestination = .inPlace, gradOutput: Float = 1) throws -> DistillationLossResult {
        let plan = try DistillationPlan(loss: self, student: student, teacher: teacher, labels: labels, rowMask: rowMask,
                                        gradient: gradient)
        let workspace = try plan.workspace(launchRows: plan.rows)
        try plan.enqueue(rows: 0..<plan.rows, student: student, gradient: plan.gradientTensor, teacher: teacher, workspace: workspace,
                         gradOutput: gradOutput)
        return try plan.finish(workspace, teacher: teacher)
    }
}

/// Shapes and options of one loss call, checked once; the fused linear path reuses it chunk by chunk.
struct DistillationPlan {
    let loss: DistillationLoss
    let backend: any DistillationLossKernel
    let rows: Int
    let vocabulary: Int
    let teacherStride: Int
    let k: Int
    let labels: Tensor?
    let rowMask: Tensor?
    let gradientTensor: Tensor
    let flags: Int32

    var needsValidCount: Bool { !loss.forwardOnly && loss.reduction == .mean }

    /// Checks everything but the student's storage (the linear path hands chunks in later).
    init(loss: DistillationLoss, student: Tensor, teacher: TeacherLogits, labels: Tensor?, rowMask: Tensor?,
         gradient: GradientDestination, teacherVocabulary: Int? = nil) throws {
        guard let backend = student.backend as? any DistillationLossKernel else {
            throw TensorError.unsupported("distillation loss: \(student.backend.name) has no distillation-loss kernels")
        }
        self.loss = loss
        self.backend = backend
        try backend.requireFloat32(student, op: "distillation loss")
        guard student.rank == 2 else {
            throw TensorError.shapeMismatch("distillation loss: student logits \(student.label) must be [rows, vocabulary], got \(describeShape(student.shape))")
        }
        rows = student.shape[0]
        vocabulary = student.shape[1]
        guard vocabulary > 0 else {
            throw TensorError.shapeMismatch("distillation loss: student logits \(student.label) have an empty vocabulary \(describeShape(student.shape))")
        }
        try Self.checkOptions(loss)

        var flags: Int32 = 0
        switch teacher {
        case .dense(let t):
            try backend.requireFloat32(t, op: "distillation loss")
            guard t.rank == 2, t.shape[0] == rows else {
                throw TensorError.shapeMismatch("distillation loss: student logits \(student.label) have \(rows) rows, teacher logits \(t.label) \(describeShape(t.shape)) have \(t.rank == 2 ? t.shape[0] : t.rowCount)")
            }
            let teacherColumns = t.shape[1]
            if teacherColumns != vocabulary {
                guard teacherColumns > vocabulary, loss.truncateTeacherVocabulary else {
                    throw TensorError.shapeMismatch(
                        "distillation loss: student vocabulary \(vocabulary) (\(student.label)) vs teacher vocabulary \(teacherColumns) (\(t.label))"
                        + (teacherColumns > vocabulary ? "; set truncateTeacherVocabulary to use the teacher's first \(vocabulary) columns if the rest is padding" : ""))
                }
            }
            teacherStride = teacherColumns
            k = 0
        case .topK(let topK):
            try backend.requireFloat32(topK.ids, topK.values, op: "distillation loss (top-k teacher)")
            guard topK.ids.rank == 2, topK.ids.shape == topK.values.shape else {
                throw TensorError.shapeMismatch("distillation loss: top-k ids \(topK.ids.label) \(describeShape(topK.ids.shape)) vs values \(topK.values.label) \(describeShape(topK.values.shape)); both must be [rows, k]")
            }
            guard topK.ids.shape[0] == rows else {
                throw TensorError.shapeMismatch("distillation loss: student logits \(student.label) have \(rows) rows, top-k teacher \(topK.ids.label) has \(topK.ids.shape[0])")
            }
            k = topK.ids.shape[1]
            guard k >= 1, k <= vocabulary else {
                throw TensorError.shapeMismatch("distillation loss: top-k teacher with k = \(k) for student vocabulary \(vocabulary); need 1 <= k <= vocabulary")
            }
            teacherStride = vocabulary
            if [.bucket, .decoupled].contains(topK.missingMass) && (loss.divergence != .forwardKL || loss.taidInterpolation != nil) {
                throw TensorError.unsupported("distillation loss: a top-k teacher's \(topK.missingMass) tail is defined for forward KL without TAID, not \(loss.divergence)\(loss.taidInterpolation == nil ? "" : " with TAID")")
            }
            flags |= DistillFlags.topK
            switch topK.missingMass {
            case .renormalize: break
            case .uniform: flags |= DistillFlags.topKUniform
            case .bucket: flags |= DistillFlags.topKBucket
            case .decoupled: flags |= DistillFlags.topKDecoupled
            case .prior:
                guard let prior = topK.tailPrior else {
                    throw TensorError.unsupported("distillation loss: a top-k teacher with the prior tail needs its tailPrior [\(vocabulary)]")
                }
                try backend.requireFloat32(prior, op: "distillation loss (tail prior)")
                guard prior.count == vocabulary else {
                    throw TensorError.shapeMismatch("distillation loss: tail prior \(prior.label) \(describeShape(prior.shape)) for student vocabulary \(vocabulary)")
                }
                flags |= DistillFlags.topKPrior
            }
            // The kernels mark each listed id with the slot (row * k + i) that lists it last, in 32 bits.
            if topK.missingMass == .renormalize && loss.divergence == .forwardKL && loss.taidInterpolation == nil && rows * k < Int(Int32.max) {
                flags |= DistillFlags.topKSparse
            }
        }
        for (name, tensor) in [("labels", labels), ("row mask", rowMask)] {
            guard let tensor else { continue }
            try backend.requireFloat32(tensor, op: "distillation loss (\(name))")
            guard tensor.count == rows else {
                throw TensorError.shapeMismatch("distillation loss: student logits \(student.label) have \(rows) rows, \(name) \(tensor.label) \(describeShape(tensor.shape)) has \(tensor.count)")
            }
        }
        if loss.hardWeight != 0 && labels == nil {
            throw TensorError.unsupported("distillation loss: hardWeight = \(loss.hardWeight) needs labels")
        }
        self.labels = labels
        self.rowMask = rowMask
        switch gradient {
        case .inPlace:
            gradientTensor = student
        case .into(let g):
            try backend.requireFloat32(g, op: "distillation loss (gradient)")
            guard g.shape == student.shape else {
                throw TensorError.shapeMismatch("distillation loss: gradient \(g.label) \(describeShape(g.shape)) vs student logits \(student.label) \(describeShape(student.shape))")
            }
            gradientTensor = g
        }
        if labels != nil { flags |= DistillFlags.labels }
        if rowMask != nil { flags |= DistillFlags.mask }
        if loss.hardWeight != 0 || (loss.reportCrossEntropy && labels != nil) { flags |= DistillFlags.hard }
        if loss.taidInterpolation != nil { flags |= DistillFlags.taid }
        if !loss.forwardOnly { flags |= DistillFlags.gradient }
        if loss.reduction == .mean { flags |= DistillFlags.mean }
        self.flags = flags
    }

    static func checkOptions(_ loss: DistillationLoss) throws {
        guard loss.temperature > 0, loss.temperature.isFinite else {
            throw TensorError.unsupported("distillation loss: temperature must be positive and finite, got \(loss.temperature)")
        }
        switch loss.divergence {
        case .jensenShannon(let p), .skewForwardKL(let p), .skewReverseKL(let p):
            guard p >= 0, p <= 1 else {
                throw TensorError.unsupported("distillation loss: \(loss.divergence) needs its parameter in [0, 1]")
            }
        default: break
        }
        if let t = loss.taidInterpolation, !(t >= 0 && t <= 1) {
            throw TensorError.unsupported("distillation loss: TAID interpolation t = \(t) must be in [0, 1]")
        }
        guard loss.softWeight.isFinite, loss.hardWeight.isFinite else {
            throw TensorError.unsupported("distillation loss: weights must be finite (soft \(loss.softWeight), hard \(loss.hardWeight))")
        }
        guard loss.ignoreIndex >= Int(Int32.min), loss.ignoreIndex <= Int(Int32.max) else {
            throw TensorError.unsupported("distillation loss: ignoreIndex \(loss.ignoreIndex) does not fit 32 bits")
        }
    }

    /// The small buffers of one call: row losses and statuses for all rows, the kernel's scratch
    /// for launches of up to `launchRows` rows, and the number of valid rows (its count enqueued)
    /// when the reduction is a mean with a gradient.
    struct Workspace {
        let rowLoss: Tensor
        let rowStatus: Tensor
        let rowCrossEntropy: Tensor
        let scratch: Tensor
        let validCount: Tensor?
    }

    func workspace(launchRows: Int) throws -> Workspace {
        let scratch = try backend.tensor(shape: [backend.distillScratchElements(rows: launchRows, vocabulary: vocabulary)],
                                         label: "distillation scratch")
        var validCount: Tensor?
        if needsValidCount {
            let count = try backend.tensor(shape: [1], label: "valid row count")
            try backend.enqueueCountValidRows(labels: labels, mask: rowMask, flags: flags, ignoreIndex: Int32(loss.ignoreIndex),
                                              rows: rows, into: count)
            validCount = count
        }
        return Workspace(rowLoss: try backend.tensor(shape: [rows], label: "distillation row losses"),
                         rowStatus: try backend.tensor(shape: [rows], label: "distillation row status"),
                         rowCrossEntropy: try backend.tensor(shape: [rows], label: "distillation row cross-entropies"),
                         scratch: scratch, validCount: validCount)
    }

    /// Launches the kernel on `range` of the rows. `student`/`gradient` are those rows (chunk views);
    /// the teacher, labels and mask are sliced here; the workspace's row values hold all rows.
    func enqueue(rows range: Range<Int>, student: Tensor, gradient: Tensor, teacher: TeacherLogits, workspace: Workspace,
                 gradOutput: Float, teacherChunk: Tensor? = nil) throws {
        let validCount = workspace.validCount
        guard !range.isEmpty else { return }
        // The decoupled loss scales only its conditional term by T^2 (its kernel's `param`).
        let decoupled = flags & DistillFlags.topKDecoupled != 0
        let conditionalScale = loss.scaleBySquaredTemperature ? loss.temperature * loss.temperature : 1
        var launch = DistillLossLaunch(
            student: student, teacher: nil, teacherStride: teacherStride, topKIDs: nil, topKValues: nil, k: k,
            labels: try labels?.reshaped([rows]).rows(range), mask: try rowMask?.reshaped([rows]).rows(range),
            gradient: gradient, rowLoss: try workspace.rowLoss.rows(range), rowStatus: try workspace.rowStatus.rows(range),
            rowCrossEntropy: try workspace.rowCrossEntropy.rows(range), validCount: validCount, scratch: workspace.scratch, rows: range.count, vocabulary: vocabulary, kind: loss.divergence.kernelKind,
            flags: validCount == nil ? flags & ~DistillFlags.mean : flags,
            ignoreIndex: Int32(loss.ignoreIndex), inverseTemperature: 1 / loss.temperature,
            parameter: decoupled ? conditionalScale : loss.divergence.parameter, taid: loss.taidInterpolation ?? 0,
            softWeight: decoupled ? loss.softWeight : loss.effectiveSoftWeight, hardWeight: loss.hardWeight, gradOutput: gradOutput)
        if let teacherChunk {
            launch.teacher = teacherChunk
            launch.teacherStride = teacherChunk.shape[1]
        } else {
            switch teacher {
            case .dense(let t): launch.teacher = try t.rows(range)
            case .topK(let topK):
                launch.topKIDs = try topK.ids.rows(range)
                launch.topKValues = try topK.values.rows(range)
                launch.tailPrior = topK.tailPrior
            }
        }
        try backend.enqueueDistillLossRows(launch)
    }

    /// Reduces the row values (downloaded here), or throws for the first bad row.
    func finish(_ workspace: Workspace, teacher: TeacherLogits) throws -> DistillationLossResult {
        let rowLoss = try workspace.rowLoss.toArray(), rowStatus = try workspace.rowStatus.toArray()
        let hasCrossEntropy = flags & DistillFlags.hard != 0
        let rowCrossEntropy = hasCrossEntropy ? try workspace.rowCrossEntropy.toArray() : []
        var total = 0.0, totalCrossEntropy = 0.0
        var validRows = 0
        for row in 0..<rows {
            let status = Int(rowStatus[row])
            if status & DistillRowStatus.ignored != 0 { continue }
            if status != 0 { throw DistillationLossError(row: row, message: Self.describe(status: status, vocabulary: vocabulary)) }
            let value = rowLoss[row]
            guard value.isFinite else {
                throw DistillationLossError(row: row, message: "the loss is \(value) (\(loss.divergence) is infinite where one "
                                            + "distribution gives probability 0 to a token the other does not: a masked or top-k "
                                            + "teacher with a reverse or skewed divergence, or a student -inf where the teacher is not)")
            }
            total += Double(value)
            if hasCrossEntropy { totalCrossEntropy += Double(rowCrossEntropy[row]) }
            validRows += 1
        }
        func reduce(_ sum: Double) -> Float { Float(loss.reduction == .mean ? sum / Double(max(1, validRows)) : sum) }
        return DistillationLossResult(loss: reduce(total), rowLosses: rowLoss, validRows: validRows,
                                      crossEntropy: hasCrossEntropy ? reduce(totalCrossEntropy) : nil)
    }

    static func describe(status: Int, vocabulary: Int) -> String {
        var problems: [String] = []
        if status & DistillRowStatus.studentNonFinite != 0 { problems.append("student logits contain NaN or +inf") }
        if status & DistillRowStatus.teacherNonFinite != 0 { problems.append("teacher logits contain NaN or +inf") }
        if status & DistillRowStatus.studentAllMasked != 0 { problems.append("every student logit is -inf") }
        if status & DistillRowStatus.teacherAllMasked != 0 { problems.append("every teacher logit is -inf") }
        if status & DistillRowStatus.badLabel != 0 { problems.append("label outside the vocabulary 0..<\(vocabulary) (and not the ignore index)") }
        if status & DistillRowStatus.badTopKID != 0 { problems.append("top-k teacher id outside the vocabulary 0..<\(vocabulary)") }
        return problems.joined(separator: "; ") + "; mask the row or fix the data"
    }
}
