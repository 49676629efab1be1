import Foundation

/// A place where tensors live and ops run: the CPU backend or one OpenCL device.
///
/// Callers use the checked operations in the `Backend` extension (``Backend/add(_:_:into:)``,
/// ``Backend/gemm(_:_:into:transposeA:transposeB:alpha:beta:)``, ...), which validate shapes and
/// then call the `enqueue` requirements below. A backend implements only the requirements; every
/// requirement of this protocol receives operands that were already checked.
///
/// Ops may run asynchronously (OpenCL queues them in order); ``download(_:)`` and
/// ``synchronize()`` wait for everything enqueued before them.
public protocol Backend: AnyObject {
    /// A short name for messages: `cpu`, or `opencl:0:0 (device name)`.
    var name: String { get }
    /// The account of the bytes this backend has allocated, and its budget.
    var ledger: MemoryLedger { get }
    /// What runs this backend's GEMMs and why, e.g. `oneDNN 2.6.3 avx512_core (dispatched by instruction set from AVX-512F/DQ/BW/VL)`.
    var gemmDescription: String { get }
    /// RoPE angle tables already on this backend, reused across calls.
    var ropeTables: RoPETables { get }
    /// Whether bf16 GEMMs run on the hardware's own bf16 instructions here and pay for it (a host
    /// engine whose bf16 route measured native, ``HostGemm/BF16GemmRoute``; tensor cores on NVIDIA
    /// GPUs), so bf16 is the faster choice where it is exact enough (`auto` precisions).
    var hasFastBF16GEMMs: Bool { get }
    /// Whether this backend's ops run on a device of their own (a GPU or another accelerator), so
    /// host work done while they run is free; false for the CPU backend and CPU OpenCL devices,
    /// whose ops take the host's cores.
    var computesOffHost: Bool { get }

    /// Allocates an uninitialized tensor, counted against the backend's memory budget.
    func allocate(shape: [Int], dtype: DType, label: String) throws -> Tensor
    /// Copies `bytes` into the tensor: exactly ``Tensor/byteCount`` of them, in the dtype's layout
    /// (quantized types as their file blocks).
    func uploadBytes(_ bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws
    /// Copies the tensor's bytes into `destination` (exactly ``Tensor/byteCount``), after every op enqueued before.
    func downloadBytes(_ tensor: Tensor, into destination: UnsafeMutableRawBufferPointer) throws
    /// `body` on the tensor's bytes in host memory, after every op enqueued before; with `writing`,
    /// what it writes is the tensor's new value for the ops enqueued after. The CPU backend hands over
    /// its own storage; OpenCL maps the buffer's range (no copy where the device shares host memory,
    /// as PoCL and integrated GPUs do; a transfer each way, or one without `writing`, on a discrete GPU).
    func withHostBytes<R>(_ tensor: Tensor, writing: Bool, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R
    /// Lends the tensor's bytes to host code, which may run on another thread while the ops
    /// enqueued after this call run; those must leave the tensor alone until the loan is settled
    /// (``HostLoan/settle()``). The CPU backend lends its own storage; OpenCL maps the range
    /// without waiting, on a queue of its own (no copy where the device shares host memory, a
    /// transfer each way beside the kernels on a discrete GPU).
    func lendToHost(_ tensor: Tensor) throws -> any HostLoan
    /// Waits for every enqueued op.
    func synchronize() throws

    func enqueueFill(_ x: Tensor, value: Float) throws
    func enqueueCopy(_ source: Tensor, into destination: Tensor) throws
    /// destination[r, column ..< column + cols] = source[r, :] for source [rows, cols], destination [rows, wider].
    func enqueueCopyColumns(_ source: Tensor, into destination: Tensor, column: Int) throws
    func enqueueBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into out: Tensor) throws
    func enqueueScale(_ x: Tensor, by alpha: Float, into out: Tensor) throws
    /// y += alpha * x
    func enqueueAxpy(alpha: Float, _ x: Tensor, _ y: Tensor) throws
    func enqueueGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ problem: GemmProblem) throws
    /// out[r] = reduce(x[r, :]) for each of the `rowCount` rows of x.
    func enqueueRowReduction(_ op: RowReduction, _ x: Tensor, into out: Tensor) throws
    /// y[r, :] = softmax(x[r, :] / temperature), or its logarithm.
    func enqueueSoftmaxRows(_ x: Tensor, into y: Tensor, temperature: Float, logarithm: Bool) throws
    /// ids [R] (i32) = one token per row of logits [R, V] (sample.cl; checked by ``Backend/sampleRows(_:uniforms:into:temperature:topK:topP:)``).
    func enqueueSampleRows(_ logits: Tensor, uniforms: Tensor, into ids: Tensor, temperature: Float, topK: Int, topP: Float) throws

    // Model ops (the llama forward pass).
    /// out (f32, same element count) = the values of a quantized or f16 tensor.
    func enqueueDequantize(_ source: Tensor, into out: Tensor) throws
    /// f32 `source` narrowed into bf16 or f16 `out` (same count), rounded as `rounding` says
    /// (stochastic: bf16 only, checked by ``Backend/convert(_:into:rounding:)``).
    func enqueueNarrow(_ source: Tensor, into out: Tensor, rounding: Rounding) throws
    /// out[i, :] = table[ids[i], :] for a table [rows, cols] of any dtype; out-of-range ids give zeros.
    func enqueueGatherRows(_ table: Tensor, ids: Tensor, into out: Tensor) throws
    /// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
    func enqueueRMSNorm(_ x: Tensor, weight: Tensor, epsilon: Float, into y: Tensor) throws
    /// Rotary embedding of x [tokens, heads, headDim] into y with the (cos, sin) table [tokens, rotated / 2, 2].
    func enqueueRoPE(_ x: Tensor, table: Tensor, into y: Tensor, _ rope: RoPE) throws
    /// probs = causal softmax of scores [rows, keys]; row r is query r % queries at position r % queries + keyOffset.
    func enqueueCausalSoftmax(_ scores: Tensor, into probs: Tensor, queries: Int, keyOffset: Int, keyStarts: Tensor?, scale: Float) throws
    /// x[row, j] = value where key j is after query row's position (row % queries + keyOffset), in place.
    func enqueueCausalMask(_ x: Tensor, queries: Int, keyOffset: Int, value: Float) throws
    /// y [A, C, B, D] = x [A, B, C, D] with axes 1 and 2 swapped.
    func enqueueTranspose12(_ x: Tensor, into y: Tensor) throws
    /// out = silu(gate) * up
    func enqueueSwiGLU(gate: Tensor, up: Tensor, into out: Tensor) throws

    // Backward passes (the student's training step).
    /// dx = RMSNorm backward (written); dweight += its weight gradient; rstd [rows] is workspace.
    func enqueueRMSNormBackward(_ x: Tensor, weight: Tensor, outputGradient: Tensor, epsilon: Float,
                                inputGradient: Tensor, weightGradient: Tensor, workspace rstd: Tensor) throws
    /// dscores = scale * p * (dp - sum p dp), row-wise (written).
    func enqueueCausalSoftmaxBackward(_ probs: Tensor, outputGradient: Tensor, into scoresGradient: Tensor, scale: Float) throws
    /// dgate, dup of out = silu(gate) * up (written).
    func enqueueSwiGLUBackward(gate: Tensor, up: Tensor, outputGradient: Tensor, gateGradient: Tensor, upGradient: Tensor) throws
    /// tableGradient[ids[u]] += sum of outputGradient rows positions[offsets[u] ..< offsets[u+1]].
    func enqueueEmbeddingBackward(_ outputGradient: Tensor, uniqueIds: Tensor, offsets: Tensor, positions: Tensor,
                                  into tableGradient: Tensor) throws
    /// One AdamW update of a parameter tensor and its moments.
    func enqueueAdamW(_ parameter: Tensor, gradient: Tensor, firstMoment: Tensor, secondMoment: Tensor, _ step: AdamWStep) throws
}

/// The scalars of one AdamW update (decoupled weight decay, bias correction).
public struct AdamWStep: Equatable, Sendable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// The 1-based step number t, for the bias corrections 1 - beta^t.
    public var step: Int
    /// The stored gradient's factor (the global-norm clip's `clip / norm`; 1 unclipped), applied as
    /// the update reads it rather than in a pass of its own.
    public var gradientScale: Float

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8, weightDecay: Float = 0.1, step: Int,
                gradientScale: Float = 1) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.step = step
        self.gradientScale = gradientScale
    }

    public var firstCorrection: Float { 1 - Float(pow(Double(beta1), Double(step))) }
    public var secondCorrection: Float { 1 - Float(pow(Double(beta2), Double(step))) }
}

/// Rotary position embedding parameters.
public struct RoPE: Equatable, Sendable {
    /// Which elements form the rotated pairs.
    public enum PairLayout: String, Sendable {
        /// (x[2i], x[2i+1]): llama.cpp and GGUF llama weights.
        case adjacent
        /// (x[i], x[i + d/2]): Hugging Face's rotate_half.
        case halves
    }

    public var heads: Int
    public var headDimension: Int
    /// Leading dimensions of each head that rotate (the rest pass through); even, at most headDimension.
    public var rotatedDimensions: Int
    public var base: Float
    public var layout: PairLayout
    /// Turn by -theta instead of theta: the inverse rotation, which is the backward of the forward one.
    public var inverse: Bool

    /// (cos, sin) of each token's rotation angles pos * base^(-2i / rotated), computed in fp64:
    /// [positions.count, rotated / 2, 2] values.
    public func angleTable(positions: [Int32]) -> [Float] {
        let pairs = rotatedDimensions / 2
        let frequencies = (0..<pairs).map { pow(Double(base), -2 * Double($0) / Double(rotatedDimensions)) }
        var table = [Float](repeating: 0, count: positions.count * pairs * 2)
        for (token, position) in positions.enumerated() {
            for (i, frequency) in frequencies.enumerated() {
                let theta = Double(position) * frequency
                table[(token * pairs + i) * 2] = Float(cos(theta))
                table[(token * pairs + i) * 2 + 1] = Float(sin(theta))
            }
        }
        return table
    }

    public init(heads: Int, headDimension: Int, rotatedDimensions: Int? = nil, base: Float, layout: PairLayout, inverse: Bool = false) {
        self.heads = heads
        self.headDimension = headDimension
        self.rotatedDimensions = rotatedDimensions ?? headDimension
        self.base = base
        self.layout = layout
        self.inverse = inverse
    }
}

/// Elementwise binary operations of equal-shaped tensors.
public enum BinaryOp: String, CaseIterable, Sendable {
    case add
    case mul
}

/// How f32 narrows to a 16-bit type.
public enum Rounding: Equatable, Sendable {
    /// To the nearest representable value, ties to even (IEEE's default).
    case nearestEven
    /// bf16 only: up or down at random, up with probability equal to the fraction of an ulp the value is
    /// past the one below it, so the expected result is the value itself. Element e's draw is fixed by
    /// (e, key): the same on every backend and launch (convert.cl).
    case stochastic(key: UInt32)
}

/// Row-wise reductions over the last axis.
public enum RowReduction: String, CaseIterable, Sendable {
    /// Maximum of the row; `-inf` for a row whose entries are all `-inf`.
    case max
    case sum
    /// Sum of squares (for gradient norms).
    case sumSquares = "sum_squares"
}

/// The geometry of `C = alpha * op(A) * op(B) + beta * C`, row-major, repeated over `batch` matrices.
///
/// A is `[M, K]` (`[K, M]` when transposed), B is `[K, N]` (`[N, K]` when transposed), C is `[M, N]`.
/// Each batch element starts `stride*` elements after the previous one; a stride of 0 reuses one matrix.
public struct GemmProblem: Hashable, Sendable {
    public var m: Int
    public var n: Int
    public var k: Int
    public var batch: Int
    public var transposeA: Bool
    public var transposeB: Bool
    public var alpha: Float
    public var beta: Float
    public var strideA: Int
    public var strideB: Int
    public var strideC: Int
    /// The element type of A and B: f32, or bf16 (accumulated in fp32).
    public var inputType: DType
    /// The element type of C (f32).
    public var outputType: DType

    public init(m: Int, n: Int, k: Int, batch: Int = 1, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1,
                beta: Float = 0, strideA: Int = 0, strideB: Int = 0, strideC: Int = 0, inputType: DType = .f32, outputType: DType = .f32) {
        (self.m, self.n, self.k, self.batch, self.transposeA, self.transposeB) = (m, n, k, batch, transposeA, transposeB)
        (self.alpha, self.beta, self.strideA, self.strideB, self.strideC) = (alpha, beta, strideA, strideB, strideC)
        (self.inputType, self.outputType) = (inputType, outputType)
    }

    /// Leading dimensions of the row-major operands.
    public var lda: Int { transposeA ? m : k }
    public var ldb: Int { transposeB ? k : n }
    public var ldc: Int { n }
    public var flops: Double { 2.0 * Double(m) * Double(n) * Double(k) * Double(batch) }
}

/// Wall-clock seconds a backend spent per op category while profiling (`kdgpu bench train`), and
/// the floating-point operations of the ops that count them (GEMMs: 2 m n k each).
/// Profiled ops synchronize before and after, so the figures are exact but the run is slower.
public final class OpProfile {
    public private(set) var seconds: [String: Double] = [:]
    public private(set) var flops: [String: Double] = [:]

    public init() {}

    /// Runs `body` between two synchronizations of `backend` and adds its time, and `flops`, to `category`.
    public func measure<R>(_ category: String, on backend: any Backend, flops: Double = 0, _ body: () throws -> R) throws -> R {
        try backend.synchronize()
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try body()
        try backend.synchronize()
        seconds[category, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        self.flops[category, default: 0] += flops
        return result
    }
}

/// Profiles registered per backend (by identity), so any layer can attribute its time.
public enum Profiling {
    nonisolated(unsafe) private static var profiles: [ObjectIdentifier: OpProfile] = [:]

    public static func profile(of backend: any Backend) -> OpProfile? { profiles[ObjectIdentifier(backend)] }
    public static func start(on backend: any Backend) -> OpProfile {
        let profile = OpProfile()
        profiles[ObjectIdentifier(backend)] = profile
        return profile
    }
    public static func stop(on backend: any Backend) { profiles[ObjectIdentifier(backend)] = nil }

    /// `body`, timed (with its `flops`) into `category` when `backend` is being profiled.
    public static func measure<R>(_ category: String, on backend: any Backend, flops: Double = 0, _ body: () throws -> R) throws -> R {
        guard let profile = profile(of: backend) else { return try body() }
        return try profile.measure(category, on: backend, flops: flops, body)
    }
}

/// A tensor's bytes lent to the host (``Backend/lendToHost(_:)``). The holder, which may be a
/// thread other than the one that enqueues the backend's ops, takes ``bytes()`` and gives them
/// back; the enqueuing thread then settles the loan.
public protocol HostLoan: AnyObject {
    /// The bytes, once the ops enqueued before the loan have written them (waits for those alone).
    func bytes() throws -> UnsafeMutableRawBufferPointer
    /// The holder is done with the bytes. Called once, after ``bytes()``.
    func giveBack() throws
    /// On the enqueuing thread, once the holder has given the bytes back: what it wrote is the
    /// tensor's value for the ops enqueued from here on.
    func settle() throws
}
