// The loss kernels' interface: what the Losses module launches and each backend runs (the CPU twins
// in CPUBackend, the OpenCL launchers in OpenCLBackend), with the kernels' flag and status bits.

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
    /// `[V]` log-weights over which the prior tail spreads a top-k teacher's rest (flag `topKPrior`).
    public var tailPrior: Tensor?
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

    public init(student: Tensor, teacher: Tensor?, teacherStride: Int, topKIDs: Tensor?, topKValues: Tensor?, k: Int, tailPrior: Tensor? = nil, labels: Tensor?, mask: Tensor?, gradient: Tensor, rowLoss: Tensor, rowStatus: Tensor, rowCrossEntropy: Tensor, validCount: Tensor?, scratch: Tensor, rows: Int, vocabulary: Int, kind: Int32, flags: Int32, ignoreIndex: Int32, inverseTemperature: Float, parameter: Float, taid: Float, softWeight: Float, hardWeight: Float, gradOutput: Float) {
        self.student = student
        self.teacher = teacher
        self.teacherStride = teacherStride
        self.topKIDs = topKIDs
        self.topKValues = topKValues
        self.k = k
        self.tailPrior = tailPrior
        self.labels = labels
        self.mask = mask
        self.gradient = gradient
        self.rowLoss = rowLoss
        self.rowStatus = rowStatus
        self.rowCrossEntropy = rowCrossEntropy
        self.validCount = validCount
        self.scratch = scratch
        self.rows = rows
        self.vocabulary = vocabulary
        self.kind = kind
        self.flags = flags
        self.ignoreIndex = ignoreIndex
        self.inverseTemperature = inverseTemperature
        self.parameter = parameter
        self.taid = taid
        self.softWeight = softWeight
        self.hardWeight = hardWeight
        self.gradOutput = gradOutput
    }
}

/// A backend that runs the fused distillation-loss kernels (`Kernels/distill_loss.cl` and the
/// unfused baseline `Kernels/loss_baseline.cl`). Callers use the Losses module's `DistillationLoss`
/// and `FusedLinearDistillationLoss`, which check shapes and then call these.
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

/// Row status bits written by the kernels (`distill_loss.cl`).
public enum DistillRowStatus {
    public static let ignored = 1
    public static let studentNonFinite = 2
    public static let teacherNonFinite = 4
    public static let studentAllMasked = 8
    public static let teacherAllMasked = 16
    public static let badLabel = 32
    public static let badTopKID = 64
}

/// Kernel flags (`distill_loss.cl`).
public enum DistillFlags {
    public static let gradient: Int32 = 1
    public static let hard: Int32 = 2
    public static let taid: Int32 = 4
    public static let topK: Int32 = 8
    public static let topKUniform: Int32 = 16
    public static let topKBucket: Int32 = 512
    /// Launch `distill_decoupled_topk_rows` instead of `distill_loss_rows`.
    public static let topKDecoupled: Int32 = 1024
    /// The rest spread over the unlisted tokens in proportion to the launch's `tailPrior`.
    public static let topKPrior: Int32 = 2048
    /// Launch `distill_sparse_teacher_rows`: set by the host for a renormalized top-k teacher under forward
    /// KL without TAID, whose mass lies on its listed ids alone (its terms summed over those ids).
    public static let topKSparse: Int32 = 4096
    public static let labels: Int32 = 32
    public static let mask: Int32 = 64
    public static let mean: Int32 = 128
    public static let contiguous: Int32 = 256
}

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
    /// ``HintKernelKind``: mse or cosine.
    public var kind: Int32
    /// Factor of every gradient entry: `weight / rows * gradOutput` for the hint loss's mean.
    public var gradScale: Float

    public var rows: Int { student.shape[0] }
    public var columns: Int { student.shape[1] }

    public init(student: Tensor, teacher: Tensor, rowLoss: Tensor, gradient: Tensor?, kind: Int32,
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
/// the Losses module's `HiddenStateHintLoss`, which checks shapes and then calls this.
public protocol HintLossKernel: Backend {
    func enqueueHintLossRows(_ launch: HintLossLaunch) throws
}

/// The kernel's `kind` argument (`KIND_MSE`, `KIND_COSINE` in hint_loss.cl).
public enum HintKernelKind {
    public static let mse: Int32 = 0
    public static let cosine: Int32 = 1
}

/// The kernel's `flags` (hint_loss.cl).
public enum HintFlags {
    public static let gradient: Int32 = 1
    public static let contiguous: Int32 = 2
}

/// EPS of hint_loss.cl: norms below it count as it in the cosine loss, so zero vectors stay finite.
public let hintNormEpsilon: Float = 1e-8
