import COpenCL
import Foundation
import Tensor

// The loss kernels on OpenCL devices (Kernels/distill_loss.cl, loss_baseline.cl, hint_loss.cl).

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
        args += try optionalArguments(l.tailPrior)
        args += try optionalArguments(l.labels) + optionalArguments(l.mask)
        args += try arguments(l.gradient) + arguments(l.rowLoss) + arguments(l.rowStatus) + arguments(l.rowCrossEntropy)
            + optionalArguments(l.validCount)
        args += [try buffer(l.scratch)]
        args += [try int32(l.rows, "rows"), try int32(l.vocabulary, "vocabulary"), l.kind, flags, l.ignoreIndex,
                 l.inverseTemperature, l.parameter, l.taid, l.softWeight, l.hardWeight, l.gradOutput]
        _ = try int32(l.rows * l.vocabulary, "\(l.student.label) elements")
        let kernel = l.flags & DistillFlags.topKDecoupled != 0 ? "distill_decoupled_topk_rows"
            : l.flags & DistillFlags.topKSparse != 0 ? "distill_sparse_teacher_rows" : "distill_loss_rows"
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

extension OpenCLBackend: HintLossKernel {
    public func enqueueHintLossRows(_ l: HintLossLaunch) throws {
        var flags: Int32 = contiguousRows ? HintFlags.contiguous : 0
        var gradientArguments: [any KernelArgument] = [NullBuffer(), Int32(0)]
        if let gradient = l.gradient {
            flags |= HintFlags.gradient
            gradientArguments = try arguments(gradient)
        }
        try launch("hint_loss_rows", in: "hint_loss.cl", globalSize: l.rows * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(l.student) + arguments(l.teacher) + arguments(l.rowLoss) + gradientArguments
                   + [try int32(l.columns, "\(l.student.label) width"), l.kind, flags, l.gradScale])
    }
}
