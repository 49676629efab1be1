/// The checked tensor operations every backend offers. Each validates dtypes, shapes and backend
/// ownership, then enqueues the backend's kernel.
extension Backend {
    /// Allocates an fp32 tensor.
    public func tensor(shape: [Int], label: String) throws -> Tensor {
        try allocate(shape: shape, dtype: .f32, label: label)
    }

    /// Allocates an fp32 tensor holding `values`.
    public func tensor(_ values: [Float], shape: [Int], label: String) throws -> Tensor {
        guard values.count == shape.reduce(1, *) else {
            throw TensorError.shapeMismatch("\(label): \(values.count) values do not fill shape \(describeShape(shape))")
        }
        let t = try tensor(shape: shape, label: label)
        try values.withUnsafeBufferPointer { try upload($0, to: t) }
        return t
    }

    /// Copies `values` (exactly `tensor.count` of them) into an f32 tensor.
    public func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor) throws {
        try requireTransfer(of: values.count, .f32, tensor)
        try uploadBytes(UnsafeRawBufferPointer(values), to: tensor)
    }

    /// Copies `values` (exactly `tensor.count` of them) into an i32 tensor.
    public func upload(_ values: [Int32], to tensor: Tensor) throws {
        try requireTransfer(of: values.count, .i32, tensor)
        try values.withUnsafeBytes { try uploadBytes($0, to: tensor) }
    }

    /// The values of an f32 tensor, after every op enqueued before.
    public func download(_ tensor: Tensor) throws -> [Float] {
        try requireTransfer(of: tensor.count, .f32, tensor)
        var values = [Float](repeating: 0, count: tensor.count)
        try values.withUnsafeMutableBytes { try downloadBytes(tensor, into: $0) }
        return values
    }

    /// The values of an i32 tensor, after every op enqueued before.
    public func downloadInt32(_ tensor: Tensor) throws -> [Int32] {
        try requireTransfer(of: tensor.count, .i32, tensor)
        var values = [Int32](repeating: 0, count: tensor.count)
        try values.withUnsafeMutableBytes { try downloadBytes(tensor, into: $0) }
        return values
    }

    /// Allocates an i32 tensor holding `values` (token ids, positions).
    public func indexTensor(_ values: [Int32], shape: [Int], label: String) throws -> Tensor {
        let t = try allocate(shape: shape, dtype: .i32, label: label)
        try upload(values, to: t)
        return t
    }

    private func requireTransfer(of count: Int, _ dtype: DType, _ tensor: Tensor) throws {
        guard tensor.dtype == dtype, count == tensor.count else {
            throw TensorError.shapeMismatch("transfer of \(count) \(dtype.rawValue) values to or from \(tensor.label) \(describeShape(tensor.shape)) of type \(tensor.dtype.rawValue)")
        }
        guard tensor.backend === self else {
            throw TensorError.unsupported("\(tensor.label) lives on \(tensor.backend.name), not on \(name)")
        }
    }

    /// Sets every element of `x` to `value`.
    public func fill(_ x: Tensor, value: Float) throws {
        try requireFloat32(x, op: "fill")
        guard x.count > 0 else { return }
        try enqueueFill(x, value: value)
    }

    /// destination = source (same element count).
    public func copy(_ source: Tensor, into destination: Tensor) throws {
        try requireFloat32(source, destination, op: "copy")
        guard source.count == destination.count else {
            throw TensorError.shapeMismatch("copy: \(source.label) \(describeShape(source.shape)) into \(destination.label) \(describeShape(destination.shape))")
        }
        guard source.count > 0 else { return }
        try enqueueCopy(source, into: destination)
    }

    /// out = a + b
    public func add(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try binary(.add, a, b, into: out)
    }

    /// out = a * b (elementwise)
    public func mul(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try binary(.mul, a, b, into: out)
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try requireFloat32(a, b, out, op: op.rawValue)
        try requireSameShape(a, b, op: op.rawValue)
        try requireSameShape(a, out, op: op.rawValue)
        guard a.count > 0 else { return }
        try enqueueBinary(op, a, b, into: out)
    }

    /// out = alpha * x
    public func scale(_ x: Tensor, by alpha: Float, into out: Tensor) throws {
        try requireFloat32(x, out, op: "scale")
        try requireSameShape(x, out, op: "scale")
        guard x.count > 0 else { return }
        try enqueueScale(x, by: alpha, into: out)
    }

    /// y += alpha * x
    public func axpy(alpha: Float, _ x: Tensor, _ y: Tensor) throws {
        try requireFloat32(x, y, op: "axpy")
        try requireSameShape(x, y, op: "axpy")
        guard x.count > 0 else { return }
        try enqueueAxpy(alpha: alpha, x, y)
    }

    /// `c = alpha * op(a) * op(b) + beta * c` on the last two axes; leading axes are a batch.
    ///
    /// Shapes: a `[..., M, K]` (`[..., K, M]` transposed), b `[..., K, N]` (`[..., N, K]`
    /// transposed), c `[..., M, N]`. A rank-2 `a` or `b` is shared by every batch element.
    public func gemm(_ a: Tensor, _ b: Tensor, into c: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                     alpha: Float = 1, beta: Float = 0) throws {
        try requireFloat32(a, b, c, op: "gemm")
        guard a.rank >= 2, b.rank >= 2, c.rank >= 2 else {
            throw TensorError.shapeMismatch("gemm needs matrices: \(a.label) \(describeShape(a.shape)), \(b.label) \(describeShape(b.shape)), \(c.label) \(describeShape(c.shape))")
        }
        let (aRows, aCols) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (bRows, bCols) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        let (m, k) = transposeA ? (aCols, aRows) : (aRows, aCols)
        let (kB, n) = transposeB ? (bCols, bRows) : (bRows, bCols)
        let batch = c.count / max(1, c.shape[c.rank - 2] * c.shape[c.rank - 1])
        let aBatch = a.count / max(1, aRows * aCols), bBatch = b.count / max(1, bRows * bCols)
        let context = "gemm: \(a.label) \(describeShape(a.shape))\(transposeA ? "ᵀ" : "") x \(b.label) \(describeShape(b.shape))\(transposeB ? "ᵀ" : "") -> \(c.label) \(describeShape(c.shape))"
        guard k == kB, c.shape[c.rank - 2] == m, c.shape[c.rank - 1] == n,
              a.rank == 2 || aBatch == batch, b.rank == 2 || bBatch == batch else {
            throw TensorError.shapeMismatch(context)
        }
        guard m > 0, n > 0, batch > 0 else { return }
        let problem = GemmProblem(m: m, n: n, k: k, batch: batch, transposeA: transposeA, transposeB: transposeB,
                                  alpha: alpha, beta: beta,
                                  strideA: a.rank == 2 ? 0 : m * k, strideB: b.rank == 2 ? 0 : k * n, strideC: m * n)
        if k == 0 {
            // An empty inner product: C = beta * C.
            try enqueueScale(c, by: beta, into: c)
            return
        }
        try enqueueGemm(a, b, c, problem)
    }

    /// out[r] = max or sum of row r of x; `out` has one element per row of x.
    public func reduceRows(_ op: RowReduction, _ x: Tensor, into out: Tensor) throws {
        try requireFloat32(x, out, op: "row_\(op.rawValue)")
        guard out.count == x.rowCount, x.columns > 0 else {
            throw TensorError.shapeMismatch("row_\(op.rawValue): \(x.label) \(describeShape(x.shape)) has \(x.rowCount) rows of \(x.columns), \(out.label) holds \(out.count)")
        }
        guard x.rowCount > 0 else { return }
        try enqueueRowReduction(op, x, into: out)
    }

    /// y = softmax(x / temperature) over the last axis. A row whose entries are all `-inf` gives zeros.
    public func softmax(_ x: Tensor, into y: Tensor, temperature: Float = 1) throws {
        try softmaxRows(x, into: y, temperature: temperature, logarithm: false)
    }

    /// y = log softmax(x / temperature) over the last axis. A row whose entries are all `-inf` gives `-inf`.
    public func logSoftmax(_ x: Tensor, into y: Tensor, temperature: Float = 1) throws {
        try softmaxRows(x, into: y, temperature: temperature, logarithm: true)
    }

    private func softmaxRows(_ x: Tensor, into y: Tensor, temperature: Float, logarithm: Bool) throws {
        let op = logarithm ? "log_softmax_rows" : "softmax_rows"
        try requireFloat32(x, y, op: op)
        try requireSameShape(x, y, op: op)
        guard temperature > 0, temperature.isFinite else {
            throw TensorError.unsupported("\(op): temperature must be positive and finite, got \(temperature)")
        }
        guard x.count > 0 else { return }
        try enqueueSoftmaxRows(x, into: y, temperature: temperature, logarithm: logarithm)
    }

    // MARK: validation shared by every op

    public func requireFloat32(_ tensors: Tensor..., op: String) throws {
        for t in tensors {
            guard t.dtype == .f32 else {
                throw TensorError.unsupported("\(op) on \(t.label) of type \(t.dtype.rawValue); this op takes f32")
            }
            guard t.backend === self else {
                throw TensorError.unsupported("\(op): \(t.label) lives on \(t.backend.name), not on \(name); copy it across with toArray() first")
            }
        }
    }

    public func requireSameShape(_ a: Tensor, _ b: Tensor, op: String) throws {
        guard a.shape == b.shape else {
            throw TensorError.shapeMismatch("\(op): \(a.label) \(describeShape(a.shape)) vs \(b.label) \(describeShape(b.shape))")
        }
    }
}
