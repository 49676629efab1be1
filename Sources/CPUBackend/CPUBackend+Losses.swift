import Dispatch
import Foundation
import Tensor

// The loss kernels on the CPU backend: the CPU twins (CPUKernels+Distill.swift, CPUKernels+Hint.swift).

extension CPUBackend: DistillationLossKernel {
    private var distillWorkers: Int { Parallelism.workers }

    public func distillScratchElements(rows: Int, vocabulary: Int) -> Int {
        max(1, min(rows, distillWorkers)) * 4 * ((vocabulary + 15) / 16 * 16)
    }

    public func enqueueCountValidRows(labels: Tensor?, mask: Tensor?, flags: Int32, ignoreIndex: Int32, rows: Int, into count: Tensor) throws {
        let pl = try labels.map { try pointer($0) }, pm = try mask.map { try pointer($0) }
        try mutablePointer(count)[0] = CPUKernels.distill_count_valid_rows(pl, pm, flags: flags, ignoreIndex: Int(ignoreIndex), rows: rows)
    }

    public func enqueueDistillLossRows(_ l: DistillLossLaunch) throws {
        let arguments = DistillRowArguments(
            zs: try pointer(l.student), zt: try l.teacher.map { try pointer($0) }, teacherStride: l.teacherStride,
            topKIDs: try l.topKIDs.map { try pointer($0) }, topKValues: try l.topKValues.map { try pointer($0) }, k: l.k,
            tailPrior: try l.tailPrior.map { try pointer($0) },
            labels: try l.labels.map { try pointer($0) }, mask: try l.mask.map { try pointer($0) },
            dz: try mutablePointer(l.gradient), rowLoss: try mutablePointer(l.rowLoss), rowStatus: try mutablePointer(l.rowStatus),
            rowCrossEntropy: try mutablePointer(l.rowCrossEntropy), validCount: try l.validCount.map { try pointer($0)[0] } ?? 1, scratch: try mutablePointer(l.scratch),
            rows: l.rows, n: l.vocabulary, kind: l.kind, flags: l.flags & ~DistillFlags.contiguous, ignoreIndex: Int(l.ignoreIndex),
            inverseTemperature: l.inverseTemperature, parameter: l.parameter, taid: l.taid, softWeight: l.softWeight,
            hardWeight: l.hardWeight, gradOutput: l.gradOutput)
        let groups = max(1, min(l.rows, distillWorkers))
        let rowsOfGroup = l.flags & DistillFlags.topKDecoupled != 0 ? CPUKernels.distill_decoupled_topk_rows
            : l.flags & DistillFlags.topKSparse != 0 ? CPUKernels.distill_sparse_teacher_rows : CPUKernels.distill_loss_rows
        if groups == 1 {
            rowsOfGroup(arguments, 0, 1)
        } else {
            DispatchQueue.concurrentPerform(iterations: groups) { rowsOfGroup(arguments, $0, groups) }
        }
    }

    public func enqueueKLDivRows(logStudent: Tensor, logTeacher: Tensor, into out: Tensor) throws {
        let (ps, pt, po, cols) = (try pointer(logStudent), try pointer(logTeacher), try mutablePointer(out), logStudent.columns)
        parallelChunks(logStudent.rowCount, grain: max(1, (1 << 14) / max(1, cols))) {
            CPUKernels.kl_div_rows(ps, pt, po, cols: cols, $0)
        }
    }

    public func enqueueKLDivBackward(logStudent: Tensor, logTeacher: Tensor, into gradient: Tensor, scale: Float) throws {
        let (ps, pt, pd, cols) = (try pointer(logStudent), try pointer(logTeacher), try mutablePointer(gradient), logStudent.columns)
        parallelChunks(logStudent.rowCount, grain: max(1, (1 << 14) / max(1, cols))) {
            CPUKernels.kl_div_backward_rows(ps, pt, pd, cols: cols, scale: scale, $0)
        }
    }
}

extension CPUBackend: HintLossKernel {
    public func enqueueHintLossRows(_ l: HintLossLaunch) throws {
        let (ps, pt, pl, cols) = (try pointer(l.student), try pointer(l.teacher), try mutablePointer(l.rowLoss), l.columns)
        let pg = try l.gradient.map { try mutablePointer($0) }
        let (kind, gradScale) = (l.kind, l.gradScale)
        parallelChunks(l.rows, grain: max(1, (1 << 14) / max(1, cols))) {
            CPUKernels.hint_loss_rows(ps, pt, pl, pg, cols: cols, kind: kind, gradScale: gradScale, $0)
        }
    }
}
