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

    /// Allocates an uninitialized tensor, counted against the backend's memory budget.
    func allocate(shape: [Int], dtype: DType, label: String) throws -> Tensor
    /// Copies `bytes` into the tensor: exactly ``Tensor/byteCount`` of them, in the dtype's layout
    /// (quantized types as their file blocks).
    func uploadBytes(_ bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws
    /// Copies the tensor's bytes into `destination` (exactly ``Tensor/byteCount``), after every op enqueued before.
    func downloadBytes(_ tensor: Tensor, into destination: UnsafeMutableRawBufferPointer) throws
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

    // Model ops (the llama forward pass).
    /// out (f32, same element count) = the values of a quantized or f16 tensor.
    func enqueueDequantize(_ source: Tensor, into out: Tensor) throws
    /// out[i, :] = table[ids[i], :] for a table [rows, cols] of any dtype; out-of-range ids give zeros.
    func enqueueGatherRows(_ table: Tensor, ids: Tensor, into out: Tensor) throws
    /// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
    func enqueueRMSNorm(_ x: Tensor, weight: Tensor, epsilon: Float, into y: Tensor) throws
    /// Rotary embedding of x [tokens, heads, headDim] at positions [tokens] (i32) into y.
    func enqueueRoPE(_ x: Tensor, positions: Tensor, into y: Tensor, _ rope: RoPE) throws
    /// probs = causal softmax of scores [rows, keys]; row r is query r % queries at position r % queries + keyOffset.
    func enqueueCausalSoftmax(_ scores: Tensor, into probs: Tensor, queries: Int, keyOffset: Int, scale: Float) throws
    /// y [A, C, B, D] = x [A, B, C, D] with axes 1 and 2 swapped.
    func enqueueTranspose12(_ x: Tensor, into y: Tensor) throws
    /// out = silu(gate) * up
    func enqueueSwiGLU(gate: Tensor, up: Tensor, into out: Tensor) throws
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

/// Row-wise reductions over the last axis.
public enum RowReduction: String, CaseIterable, Sendable {
    /// Maximum of the row; `-inf` for a row whose entries are all `-inf`.
    case max
    case sum
}

/// The geometry of `C = alpha * op(A) * op(B) + beta * C`, row-major, repeated over `batch` matrices.
///
/// A is `[M, K]` (`[K, M]` when transposed), B is `[K, N]` (`[N, K]` when transposed), C is `[M, N]`.
/// Each batch element starts `stride*` elements after the previous one; a stride of 0 reuses one matrix.
public struct GemmProblem: Equatable, Sendable {
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

    /// Leading dimensions of the row-major operands.
    public var lda: Int { transposeA ? m : k }
    public var ldb: Int { transposeB ? k : n }
    public var ldc: Int { n }
    public var flops: Double { 2.0 * Double(m) * Double(n) * Double(k) * Double(batch) }
}
