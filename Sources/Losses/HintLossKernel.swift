import CPUBackend
import OpenCLBackend
import Tensor

/// One checked launch of `hint_loss_rows`: every tensor is f32 on the backend and fits the shapes.
public struct HintLossLaunch {
    /// `[rows, C]` student hidden state, projected to the teacher's width.
    public var student: Tensor
    /// `[rows, C]` teacher hidden state.
    public var teacher: Tensor
    /// `[rows]`: each row's loss (written).
    public var rowLoss: Tensor
    /// `[rows, C]`: `gradScale * d(row loss)/d student` (written); memory apart from `student` and
    /// `teacher`. nil computes the losses only.
    public var gradient: Tensor?
    public var kind: HiddenStateHintLoss.Kind
    /// Factor of every gradient entry: `weight / rows * gradOutput` for ``HiddenStateHintLoss``'s mean.
    public var gradScale: Float

    public var rows: Int { student.shape[0] }
    public var columns: Int { student.shape[1] }

    public init(student: Tensor, teacher: Tensor, rowLoss: Tensor, gradient: Tensor?, kind: HiddenStateHintLoss.Kind,
                gradScale: Float) {
        self.student = student
        self.teacher = teacher
        self.rowLoss = rowLoss
        self.gradient = gradient
        self.kind = kind
        self.gradScale = gradScale
    }
}

/// A backend that runs the hidden-state hint-loss kernel (`Kernels/hint_loss.cl`). Callers use
/// ``HiddenStateHintLoss``, which checks shapes and then calls this.
public protocol HintLossKernel: Backend {
    func enqueueHintLossRows(_ launch: HintLossLaunch) throws
}

/// The kernel's `kind` argument (`KIND_MSE`, `KIND_COSINE` in hint_loss.cl).
public enum HintKernelKind {
    public static let mse: Int32 = 0
    public static let cosine: Int32 = 1
}

/// The kernel's `flags` (hint_loss.cl).
enum HintFlags {
    static let gradient: Int32 = 1
    static let contiguous: Int32 = 2
}

/// EPS of hint_loss.cl: norms below it count as it in the cosine loss, so zero vectors stay finite.
let hintNormEpsilon: Float = 1e-8

extension HiddenStateHintLoss.Kind {
    var kernelKind: Int32 {
        switch self {
        case .mse: return HintKernelKind.mse
        case .cosine: return HintKernelKind.cosine
        }
    }
}

// MARK: CPU

extension CPUBackend: HintLossKernel {
    public func enqueueHintLossRows(_ l: HintLossLaunch) throws {
        let (ps, pt, pl, cols) = (try pointer(l.student), try pointer(l.teacher), try mutablePointer(l.rowLoss), l.columns)
        let pg = try l.gradient.map { try mutablePointer($0) }
        let (kind, gradScale) = (l.kind.kernelKind, l.gradScale)
        parallelChunks(l.rows, grain: max(1, (1 << 14) / max(1, cols))) {
            CPUKernels.hint_loss_rows(ps, pt, pl, pg, cols: cols, kind: kind, gradScale: gradScale, $0)
        }
    }
}

// MARK: OpenCL

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
                   + [try int32(l.columns, "\(l.student.label) width"), l.kind.kernelKind, flags, l.gradScale])
    }
}
