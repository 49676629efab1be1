import COpenCL
import CPUBackend
import Dispatch
import Foundation
import OpenCLBackend
import Tensor

/// One checked launch of `distill_loss_rows`: every tensor is on the backend and fits the shapes.
public struct DistillLossLaunch {
    /// `[rows, V]` student logits.
    public var student: Tensor
    /// Dense teacher; row r starts `r * teacherStride` elements after its first element.
    public var teacher: Tensor?
    public var teacherStride: Int
    public var topKIDs: Tensor?
    public var topKValues: Tensor?
    public var k: Int
    public var labels: Tensor?
    public var mask: Tensor?
    /// `[rows, V]`; may be the student itself (in place).
    public var gradient: Tensor
    public var rowLoss: Tensor
    public var rowStatus: Tensor
    /// `[rows]`: each row's hard-label cross-entropy when the flags have `hard`.
    public var rowCrossEntropy: Tensor
    /// One element holding the number of valid rows (read when the flags ask for the mean).
    public var validCount: Tensor?
    public var scratch: Tensor
    public var rows: Int
    public var vocabulary: Int
    public var kind: Int32
    public var flags: Int32
    public var ignoreIndex: Int32
    public var inverseTemperature: Float
    public var parameter: Float
    public var taid: Float
    public var softWeight: Float
    public var hardWeight: Float
    public var gradOutput: Float
}

/// A backend that runs the fused distillation-loss kernels (`Kernels/distill_loss.cl` and the
/// unfused baseline `Kernels/loss_baseline.cl`). Callers use ``DistillationLoss`` and
/// ``FusedLinearDistillationLoss``, which check shapes and then call these.
public protocol DistillationLossKernel: Backend {
    /// Elements of scratch a launch over `rows` rows of `vocabulary` entries needs (one block of
    /// 4 padded rows per concurrently running work-group: independent of `rows` past a few).
    func distillScratchElements(rows: Int, vocabulary: Int) -> Int
    func enqueueCountValidRows(labels: Tensor?, mask: Tensor?, flags: Int32, ignoreIndex: Int32, rows: Int, into count: Tensor) throws
    func enqueueDistillLossRows(_ launch: DistillLossLaunch) throws
    /// out[r] = sum exp(lt) (lt - ls) over row r (baseline).
    func enqueueKLDivRows(logStudent: Tensor, logTeacher: Tensor, into out: Tensor) throws
    /// dz = scale * (exp(ls) - exp(lt)) (baseline).
    func enqueueKLDivBackward(logStudent: Tensor, logTeacher: Tensor, into gradient: Tensor, scale: Float) throws
}

// MARK: CPU

extension CPUBackend: DistillationLossKernel {
    private var distillWorkers: Int { ProcessInfo.processInfo.activeProcessorCount }

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
            labels: try l.labels.map { try pointer($0) }, mask: try l.mask.map { try pointer($0) },
            dz: try mutablePointer(l.gradient), rowLoss: try mutablePointer(l.rowLoss), rowStatus: try mutablePointer(l.rowStatus),
            rowCrossEntropy: try mutablePointer(l.rowCrossEntropy), validCount: try l.validCount.map { try pointer($0)[0] } ?? 1, scratch: try mutablePointer(l.scratch),
            rows: l.rows, n: l.vocabulary, kind: l.kind, flags: l.flags & ~DistillFlags.contiguous, ignoreIndex: Int(l.ignoreIndex),
            inverseTemperature: l.inverseTemperature, parameter: l.parameter, taid: l.taid, softWeight: l.softWeight,
            hardWeight: l.hardWeight, gradOutput: l.gradOutput)
        let groups = max(1, min(l.rows, distillWorkers))
        let rowsOfGroup = l.flags & DistillFlags.topKDecoupled != 0 ? CPUKernels.distill_decoupled_topk_rows : CPUKernels.distill_loss_rows
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

// MARK: OpenCL

/// A NULL `__global` pointer argument (OpenCL allows it for buffer arguments the kernel does not read).
struct NullBuffer: KernelArgument {
    func set(on kernel: cl_kernel, index: cl_uint) -> cl_int {
        var handle: cl_mem? = nil
        return clSetKernelArg(kernel, index, MemoryLayout<cl_mem>.size, &handle)
    }
}

extension OpenCLBackend: DistillationLossKernel {
    /// Persistent work-groups of `distill_loss_rows`: enough to balance the compute units, few enough
    /// that their scratch stays small and cache resident.
    var distillGroups: Int { device.isCPU ? max(1, device.computeUnits) * 2 : max(1, device.computeUnits) * 4 }

    public func distillScratchElements(rows: Int, vocabulary: Int) -> Int {
        max(1, min(rows, distillGroups)) * 4 * ((vocabulary + vectorWidth - 1) / vectorWidth * vectorWidth)
    }

    private func optionalArguments(_ tensor: Tensor?) throws -> [any KernelArgument] {
        guard let tensor else { return [NullBuffer(), Int32(0)] }
        return try arguments(tensor)
    }

    public func enqueueCountValidRows(labels: Tensor?, mask: Tensor?, flags: Int32, ignoreIndex: Int32, rows: Int, into count: Tensor) throws {
        try launch("distill_count_valid_rows", in: "distill_loss.cl", globalSize: rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try optionalArguments(labels) + optionalArguments(mask)
                   + [flags, ignoreIndex, try int32(rows, "rows")] + arguments(count))
    }

    public func enqueueDistillLossRows(_ l: DistillLossLaunch) throws {
        let groups = max(1, min(l.rows, distillGroups))
        let flags = l.flags | (contiguousRows ? DistillFlags.contiguous : 0)
        var args: [any KernelArgument] = try arguments(l.student)
        args += try optionalArguments(l.teacher) + [try int32(l.teacherStride, "teacher row stride")]
        args += try optionalArguments(l.topKIDs) + optionalArguments(l.topKValues) + [try int32(l.k, "k")]
        args += try optionalArguments(l.labels) + optionalArguments(l.mask)
        args += try arguments(l.gradient) + arguments(l.rowLoss) + arguments(l.rowStatus) + arguments(l.rowCrossEntropy)
            + optionalArguments(l.validCount)
        args += [try buffer(l.scratch)]
        args += [try int32(l.rows, "rows"), try int32(l.vocabulary, "vocabulary"), l.kind, flags, l.ignoreIndex,
                 l.inverseTemperature, l.parameter, l.taid, l.softWeight, l.hardWeight, l.gradOutput]
        _ = try int32(l.rows * l.vocabulary, "\(l.student.label) elements")
        let kernel = l.flags & DistillFlags.topKDecoupled != 0 ? "distill_decoupled_topk_rows" : "distill_loss_rows"
        try launch(kernel, in: "distill_loss.cl", globalSize: groups * rowWorkGroupSize,
                   localSize: rowWorkGroupSize, args)
    }

    public func enqueueKLDivRows(logStudent: Tensor, logTeacher: Tensor, into out: Tensor) throws {
        try launch("kl_div_rows", in: "loss_baseline.cl", globalSize: logStudent.rowCount * rowWorkGroupSize,
                   localSize: rowWorkGroupSize,
                   try arguments(logStudent) + arguments(logTeacher) + arguments(out) + [try int32(logStudent.columns, "cols")])
    }

    public func enqueueKLDivBackward(logStudent: Tensor, logTeacher: Tensor, into gradient: Tensor, scale: Float) throws {
        try launch("kl_div_backward_rows", in: "loss_baseline.cl", globalSize: elementwiseWorkItems(logStudent.count),
                   localSize: nil,
                   try arguments(logStudent) + arguments(logTeacher) + arguments(gradient)
                   + [scale, try int32(logStudent.count, logStudent.label)])
    }
}
