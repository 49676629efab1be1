import Foundation
import Tensor

/// The teacher side of the fused linear + loss path.
public enum LinearTeacher {
    /// Full logits `[N, V]` (or `[N, V_t]`, truncated with ``DistillationLoss/truncateTeacherVocabulary``).
    case logits(Tensor)
    /// Teacher hidden states `[N, C_t]` and LM head `[V, C_t]` (or `[V_t, C_t]`, truncated): the
    /// teacher logits are made chunk by chunk like the student's and never exist whole.
    case hidden(Tensor, weight: Tensor)
    case topK(TopKTeacher)
    /// No teacher: only the hard-label cross-entropy (`softWeight` 0), e.g. a validation NLL. The
    /// kernel reads the student's own chunk as its teacher, so no second GEMM runs.
    case none
}

/// The LM head and the distillation loss fused over chunks of rows: for each chunk, `z = h W^T`
/// (backend GEMM: CLBlast or host BLAS on OpenCL, OpenBLAS on the CPU), the loss kernel turns z into
/// the loss and `dz` in place, then `dh = dz W` and `dW += dz^T h` before the next chunk. Peak extra
/// memory is one chunk of logits (two with a hidden teacher) plus the kernel's scratch, whatever N is.
///
/// Mixed precision: a head (student's or teacher's) given in bf16 is multiplied by a bf16 copy of
/// its hidden states, made once per call; the student's gradient chunk is narrowed to bf16 once
/// for its two backward GEMMs (another half chunk of memory). Logits, the loss and every
/// gradient that leaves the call stay fp32.
///
/// ```swift
/// let fused = FusedLinearDistillationLoss(loss: DistillationLoss(temperature: 2), chunkBudgetBytes: 64 << 20)
/// let result = try fused(hidden: h, weight: lmHead, teacher: .hidden(teacherHidden, weight: teacherHead),
///                        labels: labels, gradHidden: dh, gradWeight: dW)
/// ```
public struct FusedLinearDistillationLoss: Sendable {
    public var loss: DistillationLoss
    /// Bytes the logits chunk(s) may take; the chunk has at least one row.
    public var chunkBudgetBytes: Int

    public init(loss: DistillationLoss, chunkBudgetBytes: Int = 256 << 20) {
        self.loss = loss
        self.chunkBudgetBytes = chunkBudgetBytes
    }

    /// Rows per chunk for `rows` rows of a `vocabulary`-wide head (`bf16Gradient`: a bf16 student head,
    /// whose gradient chunk is also kept in bf16).
    public func chunkRows(rows: Int, vocabulary: Int, teacherIsHidden: Bool, bf16Gradient: Bool = false) -> Int {
        let perRow = vocabulary * (4 * (teacherIsHidden ? 2 : 1) + (bf16Gradient ? 2 : 0))
        return max(1, min(rows, chunkBudgetBytes / max(1, perRow)))
    }

    /// - Parameters:
    ///   - hidden: student hidden states `[N, C]`.
    ///   - weight: student LM head `[V, C]`, f32 or bf16 (mixed precision: its GEMMs in bf16).
    ///   - gradHidden: `[N, C]`, overwritten with `d loss / d hidden` (skipped when nil).
    ///   - gradWeight: `[V, C]`, `d loss / d weight` is added to it (skipped when nil).
    ///   - teacherCrossEntropy: also the teacher's own hard-label cross-entropy (a `.hidden` teacher
    ///     and labels), from its logits chunks (``DistillationLossResult/teacherCrossEntropy``).
    public func callAsFunction(hidden: Tensor, weight: Tensor, teacher: LinearTeacher, labels: Tensor? = nil,
                               rowMask: Tensor? = nil, gradHidden: Tensor? = nil, gradWeight: Tensor? = nil,
                               gradOutput: Float = 1, teacherCrossEntropy: Bool = false) throws -> DistillationLossResult {
        let backend = hidden.backend
        try backend.requireFloat32(hidden, op: "fused linear distillation loss")
        try Self.requireHeadType(weight)
        guard hidden.rank == 2, weight.rank == 2 else {
            throw TensorError.shapeMismatch("fused linear distillation loss: hidden \(hidden.label) \(describeShape(hidden.shape)) must be [rows, C] and weight \(weight.label) \(describeShape(weight.shape)) [vocabulary, C]")
        }
        let (rows, width, vocabulary) = (hidden.shape[0], hidden.shape[1], weight.shape[0])
        guard weight.shape[1] == width else {
            throw TensorError.shapeMismatch("fused linear distillation loss: hidden \(hidden.label) has width \(width), weight \(weight.label) \(describeShape(weight.shape)) has width \(weight.shape[1])")
        }
        if let gradHidden {
            try backend.requireFloat32(gradHidden, op: "fused linear distillation loss")
            guard gradHidden.shape == hidden.shape else {
                throw TensorError.shapeMismatch("fused linear distillation loss: gradHidden \(gradHidden.label) \(describeShape(gradHidden.shape)) vs hidden \(hidden.label) \(describeShape(hidden.shape))")
            }
        }
        if let gradWeight {
            try backend.requireFloat32(gradWeight, op: "fused linear distillation loss")
            guard gradWeight.shape == weight.shape else {
                throw TensorError.shapeMismatch("fused linear distillation loss: gradWeight \(gradWeight.label) \(describeShape(gradWeight.shape)) vs weight \(weight.label) \(describeShape(weight.shape))")
            }
        }

        // The teacher head, truncated to the student vocabulary when asked.
        var teacherHead: (hidden: Tensor, weight: Tensor)?
        if case .hidden(let teacherHidden, let teacherWeight) = teacher {
            try backend.requireFloat32(teacherHidden, op: "fused linear distillation loss (teacher)")
            try Self.requireHeadType(teacherWeight)
            guard teacherHidden.rank == 2, teacherWeight.rank == 2, teacherHidden.shape[1] == teacherWeight.shape[1] else {
                throw TensorError.shapeMismatch("fused linear distillation loss: teacher hidden \(teacherHidden.label) \(describeShape(teacherHidden.shape)) and teacher weight \(teacherWeight.label) \(describeShape(teacherWeight.shape)) must be [rows, C_t] and [vocabulary, C_t]")
            }
            guard teacherHidden.shape[0] == rows else {
                throw TensorError.shapeMismatch("fused linear distillation loss: student hidden \(hidden.label) has \(rows) rows, teacher hidden \(teacherHidden.label) has \(teacherHidden.shape[0])")
            }
            let teacherVocabulary = teacherWeight.shape[0]
            if teacherVocabulary != vocabulary {
                guard teacherVocabulary > vocabulary, loss.truncateTeacherVocabulary else {
                    throw TensorError.shapeMismatch("fused linear distillation loss: student vocabulary \(vocabulary) (\(weight.label)) vs teacher vocabulary \(teacherVocabulary) (\(teacherWeight.label))"
                        + (teacherVocabulary > vocabulary ? "; set truncateTeacherVocabulary to use the teacher's first \(vocabulary) rows if the rest is padding" : ""))
                }
            }
            teacherHead = (try Self.gemmInput(teacherHidden, like: teacherWeight), try teacherWeight.rows(0..<vocabulary))
        }
        let hiddenInput = try Self.gemmInput(hidden, like: weight)

        let bf16Gradient = weight.dtype == .bf16 && !loss.forwardOnly && (gradHidden != nil || gradWeight != nil)
        let chunk = chunkRows(rows: rows, vocabulary: vocabulary, teacherIsHidden: teacherHead != nil, bf16Gradient: bf16Gradient)
        let logits = try backend.tensor(shape: [chunk, vocabulary], label: "fused loss logits chunk")
        let narrowGradient = bf16Gradient ? try backend.tensor(shape: [chunk, vocabulary], dtype: .bf16, label: "fused loss gradient chunk (bf16)") : nil
        let teacherChunk = try teacherHead.map { _ in try backend.tensor(shape: [chunk, vocabulary], label: "fused loss teacher logits chunk") }
        // The plan checks the whole call against [rows, vocabulary] views; chunks are handed in below.
        let wholeStudent = Tensor(shape: [rows, vocabulary], storage: logits.storage, backend: backend,
                                  label: "student logits (made chunk by chunk)")
        let planTeacher: TeacherLogits
        switch teacher {
        case .logits(let t): planTeacher = .dense(t)
        case .topK(let topK): planTeacher = .topK(topK)
        case .hidden:
            planTeacher = .dense(Tensor(shape: [rows, vocabulary], storage: teacherChunk!.storage, backend: backend,
                                        label: "teacher logits (made chunk by chunk)"))
        case .none:
            guard loss.softWeight == 0 else {
                throw TensorError.unsupported("fused linear distillation loss: no teacher, but softWeight is \(loss.softWeight); set it to 0 (cross-entropy only)")
            }
            planTeacher = .dense(wholeStudent)
        }
        let plan = try DistillationPlan(loss: loss, student: wholeStudent, teacher: planTeacher, labels: labels,
                                        rowMask: rowMask, gradient: .inPlace)
        let workspace = try plan.workspace(launchRows: chunk)
        // The teacher's own cross-entropy: a forward-only CE pass over each teacher chunk (no GEMM).
        var teacherPlan: (plan: DistillationPlan, workspace: DistillationPlan.Workspace)?
        if teacherCrossEntropy, case .dense(let wholeTeacher) = planTeacher, teacherChunk != nil {
            let crossEntropy = DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, ignoreIndex: loss.ignoreIndex,
                                                reduction: loss.reduction, forwardOnly: true)
            let plan = try DistillationPlan(loss: crossEntropy, student: wholeTeacher, teacher: planTeacher, labels: labels,
                                            rowMask: rowMask, gradient: .inPlace)
            teacherPlan = (plan, try plan.workspace(launchRows: chunk))
        } else if teacherCrossEntropy {
            throw TensorError.unsupported("fused linear distillation loss: the teacher's cross-entropy needs a .hidden teacher")
        }

        var start = 0
        while start < rows {
            let range = start..<min(rows, start + chunk)
            let z = try logits.rows(0..<range.count)
            let h = try hiddenInput.rows(range)
            try backend.gemm(h, weight, into: z, transposeB: true)
            var teacherLogits: Tensor?
            if let teacherHead, let teacherChunk {
                let t = try teacherChunk.rows(0..<range.count)
                try backend.gemm(try teacherHead.hidden.rows(range), teacherHead.weight, into: t, transposeB: true)
                teacherLogits = t
            } else if case .none = teacher {
                teacherLogits = z
            }
            try Profiling.measure("loss", on: backend) {
                if let teacherPlan, let t = teacherLogits {
                    try teacherPlan.plan.enqueue(rows: range, student: t, gradient: t, teacher: planTeacher, workspace: teacherPlan.workspace,
                                                 gradOutput: 1, teacherChunk: t)
                }
                try plan.enqueue(rows: range, student: z, gradient: z, teacher: planTeacher, workspace: workspace, gradOutput: gradOutput,
                                 teacherChunk: teacherLogits)
            }
            if !loss.forwardOnly {
                var dz = z
                if let narrowGradient {
                    dz = try narrowGradient.rows(0..<range.count)
                    try backend.convert(z, into: dz)
                }
                if let gradHidden { try backend.gemm(dz, weight, into: try gradHidden.rows(range)) }
                if let gradWeight { try backend.gemm(dz, h, into: gradWeight, transposeA: true, beta: 1) }
            }
            start = range.upperBound
        }
        let result = try plan.finish(workspace, teacher: planTeacher)
        guard let teacherPlan else { return result }
        return result.with(teacherCrossEntropy: try teacherPlan.plan.finish(teacherPlan.workspace, teacher: planTeacher).crossEntropy)
    }

    /// A head's weight: fp32, or bf16 for a mixed-precision GEMM.
    static func requireHeadType(_ weight: Tensor) throws {
        guard weight.dtype == .f32 || weight.dtype == .bf16 else {
            throw TensorError.unsupported("fused linear distillation loss on \(weight.label) of type \(weight.dtype.rawValue); a head is f32 or bf16")
        }
    }

    /// `x` as a GEMM with `weight` reads it: itself, or a bf16 copy for a bf16 weight.
    static func gemmInput(_ x: Tensor, like weight: Tensor) throws -> Tensor { try x.backend.converted(x, to: weight.dtype) }

    /// The same computation with whole `[N, V]` logits (GEMM, loss, GEMMs): the reference the fused
    /// path is tested and benchmarked against.
    public func materialized(hidden: Tensor, weight: Tensor, teacher: LinearTeacher, labels: Tensor? = nil,
                             rowMask: Tensor? = nil, gradHidden: Tensor? = nil, gradWeight: Tensor? = nil,
                             gradOutput: Float = 1) throws -> DistillationLossResult {
        let backend = hidden.backend
        let (rows, vocabulary) = (hidden.shape[0], weight.shape[0])
        let logits = try backend.tensor(shape: [rows, vocabulary], label: "materialized logits")
        try backend.gemm(hidden, weight, into: logits, transposeB: true)
        let teacherLogits: TeacherLogits
        switch teacher {
        case .logits(let t): teacherLogits = .dense(t)
        case .topK(let topK): teacherLogits = .topK(topK)
        case .hidden(let teacherHidden, let teacherWeight):
            let t = try backend.tensor(shape: [rows, vocabulary], label: "materialized teacher logits")
            try backend.gemm(teacherHidden, try teacherWeight.rows(0..<vocabulary), into: t, transposeB: true)
            teacherLogits = .dense(t)
        case .none: teacherLogits = .dense(logits)
        }
        let result = try loss(student: logits, teacher: teacherLogits, labels: labels, rowMask: rowMask, gradOutput: gradOutput)
        if !loss.forwardOnly {
            if let gradHidden { try backend.gemm(logits, weight, into: gradHidden) }
            if let gradWeight { try backend.gemm(logits, hidden, into: gradWeight, transposeA: true, beta: 1) }
        }
        return result
    }
}
