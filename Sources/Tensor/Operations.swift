/// The checked tensor operations every backend offers. Each validates dtypes, shapes and backend
/// ownership, then enqueues the backend's kernel.
extension Backend {
    /// Allocates a tensor (fp32 unless told).
    public func tensor(shape: [Int], dtype: DType = .f32, label: String) throws -> Tensor {
        try allocate(shape: shape, dtype: dtype, label: label)
    }

    /// Allocates a tensor holding `values`: fp32, or bf16 / f16 (rounded on the host, see ``upload(_:to:)``).
    public func tensor(_ values: [Float], shape: [Int], dtype: DType = .f32, label: String) throws -> Tensor {
        guard values.count == shape.reduce(1, *) else {
            throw TensorError.shapeMismatch("\(label): \(values.count) values do not fill shape \(describeShape(shape))")
        }
        let t = try tensor(shape: shape, dtype: dtype, label: label)
        try values.withUnsafeBufferPointer { try upload($0, to: t) }
        return t
    }

    /// Copies `values` (exactly `tensor.count` of them) into an f32 tensor, or a bf16 or f16 one
    /// (narrowed on the host, rounding to nearest even, as ``convert(_:into:)`` does on the device).
    public func upload(_ values: UnsafeBufferPointer<Float>, to tensor: Tensor) throws {
        switch tensor.dtype {
        case .bf16, .f16:
            try requireTransfer(of: values.count, tensor.dtype, tensor)
            let narrow: (Float) -> UInt16 = tensor.dtype == .bf16 ? BlockFormat.bfloat16Bits : BlockFormat.halfBits
            try values.map { narrow($0).littleEndian }.withUnsafeBytes { try uploadBytes($0, to: tensor) }
        default:
            try requireTransfer(of: values.count, .f32, tensor)
            try uploadBytes(UnsafeRawBufferPointer(values), to: tensor)
        }
    }

    /// Copies `values` (exactly `tensor.count` of them) into an i32 tensor.
    public func upload(_ values: [Int32], to tensor: Tensor) throws {
        try requireTransfer(of: values.count, .i32, tensor)
        try values.withUnsafeBytes { try uploadBytes($0, to: tensor) }
    }

    /// The values of an f32 tensor (or a bf16 or f16 one, widened exactly), after every op enqueued before.
    public func download(_ tensor: Tensor) throws -> [Float] {
        if tensor.dtype == .bf16 || tensor.dtype == .f16 {
            try requireTransfer(of: tensor.count, tensor.dtype, tensor)
            var bits = [UInt8](repeating: 0, count: tensor.byteCount)
            try bits.withUnsafeMutableBytes { try downloadBytes(tensor, into: $0) }
            let widen: (UnsafeRawPointer, Int) -> Float = tensor.dtype == .bf16 ? BlockFormat.bfloat16 : BlockFormat.half
            return bits.withUnsafeBytes { raw in (0..<tensor.count).map { widen(raw.baseAddress!, $0) } }
        }
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

    /// destination[:, column ..< column + source.columns] = source, for matrices with the same rows.
    public func copyColumns(_ source: Tensor, into destination: Tensor, column: Int) throws {
        try requireFloat32(source, destination, op: "copy_columns_f32")
        guard source.rank == 2, destination.rank == 2, source.shape[0] == destination.shape[0], column >= 0,
              column + source.shape[1] <= destination.shape[1] else {
            throw TensorError.shapeMismatch("copy_columns: \(source.label) \(describeShape(source.shape)) into \(destination.label) \(describeShape(destination.shape)) at column \(column)")
        }
        guard source.count > 0 else { return }
        try enqueueCopyColumns(source, into: destination, column: column)
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
        // A and B both f32, or both bf16, or both f16 (products accumulated in fp32); C is f32.
        if a.dtype == .bf16 || b.dtype == .bf16 || a.dtype == .f16 || b.dtype == .f16 {
            try requireFloat32(c, op: "gemm")
            try requireOwned(a, b, op: "gemm")
            guard a.dtype == b.dtype else {
                throw TensorError.unsupported("gemm: \(a.label) is \(a.dtype.rawValue) and \(b.label) \(b.dtype.rawValue); a 16-bit GEMM takes both in the same type (convert the other)")
            }
        } else {
            try requireFloat32(a, b, c, op: "gemm")
        }
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
                                  strideA: a.rank == 2 ? 0 : m * k, strideB: b.rank == 2 ? 0 : k * n, strideC: m * n,
                                  inputType: a.dtype)
        if k == 0 {
            // An empty inner product: C = beta * C.
            try enqueueScale(c, by: beta, into: c)
            return
        }
        try Profiling.measure("gemm", on: self, flops: problem.flops) { try enqueueGemm(a, b, c, problem) }
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

    /// ids [R] (i32) = one token per row of `logits` [R, V] (f32), drawn on the backend so that only
    /// the ids need come back: the first index of the row's largest logit at temperature 0, else the
    /// inverse of the kept distribution's cumulative sum (vocabulary order) at `uniforms[r]` in
    /// [0, 1), where softmax(logits / temperature) is kept to its `topK` most likely tokens (0: all),
    /// then to the smallest set of the most likely reaching `topP` of that mass (1: all); ties at a
    /// cut are kept. A row whose largest logit is -inf, or that holds a NaN, gives -1.
    public func sampleRows(_ logits: Tensor, uniforms: Tensor, into ids: Tensor, temperature: Float, topK: Int = 0, topP: Float = 1) throws {
        try requireFloat32(logits, uniforms, op: "sample_rows")
        try requireOwned(ids, op: "sample_rows")
        guard logits.rank == 2, uniforms.shape == [logits.shape[0]], ids.dtype == .i32, ids.shape == [logits.shape[0]] else {
            throw TensorError.shapeMismatch("sample_rows: logits \(describeShape(logits.shape)), uniforms \(describeShape(uniforms.shape)) and i32 ids \(describeShape(ids.shape)) must be [R, V], [R], [R]")
        }
        guard temperature >= 0, temperature.isFinite, topK >= 0, topP > 0, topP <= 1 else {
            throw TensorError.unsupported("sample_rows: temperature \(temperature) (finite, >= 0), top-k \(topK) (>= 0, 0 keeps all) and top-p \(topP) (in (0, 1])")
        }
        guard logits.count > 0 else { return }
        try Profiling.measure("sample", on: self) {
            try enqueueSampleRows(logits, uniforms: uniforms, into: ids, temperature: temperature, topK: topK, topP: topP)
        }
    }

    // MARK: model ops

    /// out = the values of `source` (Q8_0, Q4_0, Q4_1, F16 or BF16), same element count, in f32, or
    /// rounded to nearest even into the other 16-bit type or from a block type (the 16-bit teacher's
    /// weights: bf16 from Q8_0, Q4_0, Q4_1, F16; f16 from Q8_0, Q4_0, Q4_1, BF16).
    public func dequantize(_ source: Tensor, into out: Tensor) throws {
        try requireOwned(source, out, op: "dequantize")
        guard [.q8_0, .q4_0, .q4_1, .f16, .bf16].contains(source.dtype) else {
            throw TensorError.unsupported("dequantize of \(source.label): type \(source.dtype.rawValue) is not a quantized or 16-bit type")
        }
        guard out.dtype == .f32 || ((out.dtype == .bf16 || out.dtype == .f16) && source.dtype != out.dtype) else {
            throw TensorError.unsupported("dequantize of \(source.label) (\(source.dtype.rawValue)) into \(out.label) (\(out.dtype.rawValue)): the output is f32, or bf16 or f16 from another type")
        }
        let blocks = source.dtype != .f16 && source.dtype != .bf16
        guard source.count == out.count, source.count % 32 == 0 || !blocks, source.offset % 32 == 0 || !blocks else {
            throw TensorError.shapeMismatch("dequantize: \(source.label) \(describeShape(source.shape)) \(source.dtype.rawValue) into \(out.label) \(describeShape(out.shape)) (block types need whole blocks of 32)")
        }
        guard source.count > 0 else { return }
        try Profiling.measure("convert", on: self) { try enqueueDequantize(source, into: out) }
    }

    /// `out` = `source` in another element type: f32 narrowed to bf16 or f16 (round to nearest
    /// even, or for bf16 stochastically; bf16 keeps NaN a NaN, f16 overflows to inf past 65504), or
    /// bf16/f16 widened to f32 (exact).
    public func convert(_ source: Tensor, into out: Tensor, rounding: Rounding = .nearestEven) throws {
        try requireOwned(source, out, op: "convert")
        let narrowing = source.dtype == .f32 && (out.dtype == .bf16 || out.dtype == .f16)
        let widening = out.dtype == .f32 && (source.dtype == .bf16 || source.dtype == .f16)
        guard narrowing || widening else {
            throw TensorError.unsupported("convert: \(source.label) \(source.dtype.rawValue) into \(out.label) \(out.dtype.rawValue); "
                                          + "convert goes between f32 and bf16 or f16")
        }
        guard source.count == out.count else {
            throw TensorError.shapeMismatch("convert: \(source.label) \(describeShape(source.shape)) into \(out.label) \(describeShape(out.shape))")
        }
        if case .stochastic = rounding, !(narrowing && out.dtype == .bf16) {
            throw TensorError.unsupported("convert: stochastic rounding of \(source.label) into \(out.label) \(out.dtype.rawValue); it narrows f32 to bf16")
        }
        guard source.count > 0 else { return }
        try Profiling.measure("convert", on: self) {
            if widening { try enqueueDequantize(source, into: out) } else { try enqueueNarrow(source, into: out, rounding: rounding) }
        }
    }

    /// `x` in `dtype`: itself when it is already, else a new converted copy (one conversion, for
    /// every op that reads it: the GEMM inputs of a bf16 model).
    public func converted(_ x: Tensor, to dtype: DType) throws -> Tensor {
        guard x.dtype != dtype else { return x }
        let copy = try tensor(shape: x.shape, dtype: dtype, label: "\(x.label) (\(dtype.rawValue))")
        try convert(x, into: copy)
        return copy
    }

    /// out [N, cols] = rows `ids` [N] (i32) of `table` [rows, cols], of any dtype: an embedding lookup.
    public func gatherRows(_ table: Tensor, ids: Tensor, into out: Tensor) throws {
        try requireFloat32(out, op: "get_rows")
        try requireOwned(table, ids, op: "get_rows")
        guard table.rank == 2, table.dtype != .i32, ids.dtype == .i32, out.rank == 2, out.shape == [ids.count, table.shape[1]],
              [.f32, .f16, .bf16].contains(table.dtype) || table.shape[1] % 32 == 0 else {
            throw TensorError.shapeMismatch("get_rows: \(table.label) \(describeShape(table.shape)) \(table.dtype.rawValue), ids \(ids.label) \(describeShape(ids.shape)) \(ids.dtype.rawValue) -> \(out.label) \(describeShape(out.shape))")
        }
        guard ids.count > 0 else { return }
        try enqueueGatherRows(table, ids: ids, into: out)
    }

    /// y = RMSNorm(x) * weight over the last axis (weight has the last axis' length).
    public func rmsNorm(_ x: Tensor, weight: Tensor, epsilon: Float, into y: Tensor) throws {
        try requireFloat32(x, weight, y, op: "rms_norm")
        try requireSameShape(x, y, op: "rms_norm")
        guard weight.count == x.columns, x.columns > 0 else {
            throw TensorError.shapeMismatch("rms_norm: \(x.label) \(describeShape(x.shape)) with weight \(weight.label) \(describeShape(weight.shape))")
        }
        guard x.count > 0 else { return }
        try enqueueRMSNorm(x, weight: weight, epsilon: epsilon, into: y)
    }

    /// y = x [tokens, heads * headDim] rotated at `positions` (one per token); y may be x. The angles
    /// are computed on the host in fp64 (``RoPE/angleTable(positions:)``) once per positions and
    /// shape (``RoPETables``), and looked up by the kernel.
    public func rope(_ x: Tensor, positions: [Int32], into y: Tensor, _ rope: RoPE) throws {
        try requireFloat32(x, y, op: "rope")
        try requireSameShape(x, y, op: "rope")
        guard rope.headDimension % 2 == 0, rope.rotatedDimensions % 2 == 0, rope.rotatedDimensions <= rope.headDimension,
              rope.rotatedDimensions > 0, x.count == positions.count * rope.heads * rope.headDimension else {
            throw TensorError.shapeMismatch("rope: \(x.label) \(describeShape(x.shape)) at \(positions.count) positions with \(rope.heads) heads of \(rope.headDimension) (\(rope.rotatedDimensions) rotated)")
        }
        guard x.count > 0 else { return }
        let table = try ropeTables.table(for: rope, positions: positions, on: self)
        try enqueueRoPE(x, table: table, into: y, rope)
    }

    /// probs = softmax(scale * scores) over the keys each query may see: row r of scores [..., keys]
    /// is query `r % queries`, at position `r % queries + keyOffset`, and sees keys 0 through that
    /// position; with `keyStarts` (i32 [S], S dividing the rows: one per consecutive block of rows,
    /// e.g. per sequence of a left-padded batch) only from its block's start key on. A row that sees
    /// no key gets probability 0 everywhere.
    public func causalSoftmax(_ scores: Tensor, into probs: Tensor, queries: Int, keyOffset: Int = 0, keyStarts: Tensor? = nil, scale: Float) throws {
        try requireFloat32(scores, probs, op: "causal_softmax")
        try requireSameShape(scores, probs, op: "causal_softmax")
        guard queries > 0, keyOffset >= 0, scores.rowCount % queries == 0, scores.columns >= 1 else {
            throw TensorError.shapeMismatch("causal_softmax: \(scores.label) \(describeShape(scores.shape)) with \(queries) queries from key \(keyOffset)")
        }
        if let keyStarts {
            guard keyStarts.dtype == .i32, keyStarts.count >= 1, scores.rowCount % keyStarts.count == 0 else {
                throw TensorError.shapeMismatch("causal_softmax: key starts \(keyStarts.label) \(describeShape(keyStarts.shape)) \(keyStarts.dtype.rawValue) "
                                                + "for \(scores.rowCount) rows: give i32 starts, one per equal block of rows")
            }
        }
        guard scores.count > 0 else { return }
        try enqueueCausalSoftmax(scores, into: probs, queries: queries, keyOffset: keyOffset, keyStarts: keyStarts, scale: scale)
    }

    /// Sets the positions a causal query does not see to `value` (e.g. -inf, so a softmax over a
    /// flattened map leaves them out), in place: row r of x [..., keys] is query `r % queries` at
    /// position `r % queries + keyOffset`, and keys after that position are set.
    public func causalMask(_ x: Tensor, queries: Int, keyOffset: Int = 0, value: Float) throws {
        try requireFloat32(x, op: "causal_mask")
        guard queries > 0, keyOffset >= 0, x.rowCount % queries == 0, x.columns >= 1 else {
            throw TensorError.shapeMismatch("causal_mask: \(x.label) \(describeShape(x.shape)) with \(queries) queries from key \(keyOffset)")
        }
        guard x.count > 0 else { return }
        try enqueueCausalMask(x, queries: queries, keyOffset: keyOffset, value: value)
    }

    /// y [A, C, B, D] = x [A, B, C, D]: e.g. [batch, time, heads, dim] <-> [batch, heads, time, dim].
    public func transpose12(_ x: Tensor, into y: Tensor) throws {
        try requireFloat32(x, y, op: "transpose_12")
        guard x.rank == 4, y.shape == [x.shape[0], x.shape[2], x.shape[1], x.shape[3]] else {
            throw TensorError.shapeMismatch("transpose_12: \(x.label) \(describeShape(x.shape)) into \(y.label) \(describeShape(y.shape))")
        }
        guard x.count > 0 else { return }
        try enqueueTranspose12(x, into: y)
    }

    /// out = silu(gate) * up, elementwise.
    public func swiglu(gate: Tensor, up: Tensor, into out: Tensor) throws {
        try requireFloat32(gate, up, out, op: "swiglu")
        try requireSameShape(gate, up, op: "swiglu")
        try requireSameShape(gate, out, op: "swiglu")
        guard gate.count > 0 else { return }
        try enqueueSwiGLU(gate: gate, up: up, into: out)
    }

    // MARK: backward passes

    /// inputGradient = dL/dx of y = RMSNorm(x) * weight (written); weightGradient += dL/dweight.
    /// `workspace` holds one float per row.
    public func rmsNormBackward(_ x: Tensor, weight: Tensor, outputGradient: Tensor, epsilon: Float,
                                inputGradient: Tensor, weightGradient: Tensor, workspace: Tensor) throws {
        try requireFloat32(x, weight, outputGradient, inputGradient, weightGradient, workspace, op: "rms_norm_backward")
        try requireSameShape(x, outputGradient, op: "rms_norm_backward")
        try requireSameShape(x, inputGradient, op: "rms_norm_backward")
        guard weight.count == x.columns, weightGradient.count == x.columns, workspace.count >= x.rowCount else {
            throw TensorError.shapeMismatch("rms_norm_backward: \(x.label) \(describeShape(x.shape)), weight \(describeShape(weight.shape)), weight gradient \(describeShape(weightGradient.shape)), workspace \(describeShape(workspace.shape))")
        }
        guard x.count > 0 else { return }
        try enqueueRMSNormBackward(x, weight: weight, outputGradient: outputGradient, epsilon: epsilon, inputGradient: inputGradient,
                                   weightGradient: weightGradient, workspace: workspace.rows(0..<x.rowCount))
    }

    /// scoresGradient = dL/dscores of probs = causalSoftmax(scale * scores) (written; may be outputGradient).
    public func causalSoftmaxBackward(_ probs: Tensor, outputGradient: Tensor, into scoresGradient: Tensor, scale: Float) throws {
        try requireFloat32(probs, outputGradient, scoresGradient, op: "causal_softmax_backward")
        try requireSameShape(probs, outputGradient, op: "causal_softmax_backward")
        try requireSameShape(probs, scoresGradient, op: "causal_softmax_backward")
        guard probs.count > 0 else { return }
        try enqueueCausalSoftmaxBackward(probs, outputGradient: outputGradient, into: scoresGradient, scale: scale)
    }

    /// gateGradient, upGradient = dL/dgate, dL/dup of out = silu(gate) * up (written). Gate and up are
    /// both f32 or both bf16 (as a mixed-precision forward keeps them); the gradients are f32.
    public func swigluBackward(gate: Tensor, up: Tensor, outputGradient: Tensor, gateGradient: Tensor, upGradient: Tensor) throws {
        if gate.dtype == .bf16 || up.dtype == .bf16 {
            guard gate.dtype == .bf16, up.dtype == .bf16 else {
                throw TensorError.unsupported("swiglu_backward: \(gate.label) is \(gate.dtype.rawValue) and \(up.label) \(up.dtype.rawValue); both f32 or both bf16")
            }
            try requireOwned(gate, up, op: "swiglu_backward")
            try requireFloat32(outputGradient, gateGradient, upGradient, op: "swiglu_backward")
        } else {
            try requireFloat32(gate, up, outputGradient, gateGradient, upGradient, op: "swiglu_backward")
        }
        for t in [up, outputGradient, gateGradient, upGradient] { try requireSameShape(gate, t, op: "swiglu_backward") }
        guard gate.count > 0 else { return }
        try enqueueSwiGLUBackward(gate: gate, up: up, outputGradient: outputGradient, gateGradient: gateGradient, upGradient: upGradient)
    }

    /// tableGradient [V, C] += the rows of outputGradient [N, C] at the rows tokenIds [N] name: the
    /// backward of an embedding lookup. Positions are grouped by id on the host, so no two
    /// work-items write one row.
    public func embeddingBackward(_ outputGradient: Tensor, tokenIds: [Int32], into tableGradient: Tensor) throws {
        try requireFloat32(outputGradient, tableGradient, op: "embedding_backward")
        guard outputGradient.rank == 2, tableGradient.rank == 2, outputGradient.shape == [tokenIds.count, tableGradient.shape[1]] else {
            throw TensorError.shapeMismatch("embedding_backward: \(outputGradient.label) \(describeShape(outputGradient.shape)) for \(tokenIds.count) ids into \(tableGradient.label) \(describeShape(tableGradient.shape))")
        }
        if let bad = tokenIds.first(where: { $0 < 0 || Int($0) >= tableGradient.shape[0] }) {
            throw TensorError.shapeMismatch("embedding_backward: token id \(bad) outside the table's \(tableGradient.shape[0]) rows")
        }
        guard !tokenIds.isEmpty else { return }
        let order = tokenIds.indices.sorted { (tokenIds[$0], $0) < (tokenIds[$1], $1) }
        var unique: [Int32] = [], offsets: [Int32] = []
        for (k, position) in order.enumerated() where unique.last != tokenIds[position] {
            unique.append(tokenIds[position])
            offsets.append(Int32(k))
        }
        offsets.append(Int32(order.count))
        try enqueueEmbeddingBackward(outputGradient, uniqueIds: indexTensor(unique, shape: [unique.count], label: "embedding ids"),
                                     offsets: indexTensor(offsets, shape: [offsets.count], label: "embedding id offsets"),
                                     positions: indexTensor(order.map { Int32($0) }, shape: [order.count], label: "embedding positions"),
                                     into: tableGradient)
    }

    /// One AdamW step of `parameter` with its gradient and moments (all the same shape).
    public func adamw(_ parameter: Tensor, gradient: Tensor, firstMoment: Tensor, secondMoment: Tensor, _ step: AdamWStep) throws {
        try requireFloat32(parameter, gradient, firstMoment, secondMoment, op: "adamw")
        for t in [gradient, firstMoment, secondMoment] { try requireSameShape(parameter, t, op: "adamw") }
        guard step.step >= 1 else { throw TensorError.unsupported("adamw: step numbers start at 1, got \(step.step)") }
        guard parameter.count > 0 else { return }
        try enqueueAdamW(parameter, gradient: gradient, firstMoment: firstMoment, secondMoment: secondMoment, step)
    }

    // MARK: validation shared by every op

    public func requireOwned(_ tensors: Tensor..., op: String) throws {
        for t in tensors where t.backend !== self {
            throw TensorError.unsupported("\(op): \(t.label) lives on \(t.backend.name), not on \(name)")
        }
    }


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
