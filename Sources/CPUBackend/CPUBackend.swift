import Foundation
import HostGemm
import Tensor

/// Host memory owned by a CPU tensor (64-byte aligned), from the backend's pool when it keeps a
/// block of the size; given back to the pool when the tensor goes.
public final class CPUStorage: TensorStorage {
    public let byteCount: Int
    let pointer: UnsafeMutableRawPointer
    private let pool: BlockPool<UnsafeMutableRawPointer>

    init(byteCount: Int, pool: BlockPool<UnsafeMutableRawPointer>, label: String) throws {
        self.byteCount = byteCount
        self.pool = pool
        pointer = try pool.obtain(byteCount, for: label) {
            UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        }
    }

    deinit { pool.recycle(pointer, bytes: byteCount) }
}

/// The CPU backend: Swift kernels spread over all cores, GEMMs through the host engine chosen from
/// the processor's features (oneDNN by default, ``GemmEngine``).
///
/// It is the fallback when no OpenCL platform exists and the reference every OpenCL kernel is
/// tested against. Ops run synchronously.
public final class CPUBackend: Backend {
    public let name = "cpu"
    public let ledger: MemoryLedger

    /// Grain sizes: below these, threading costs more than it saves.
    private let elementGrain = 1 << 16
    private let rowGrainElements = 1 << 14

    /// The host GEMM engine: ``GemmEngine/defaultHost`` unless `KDGPU_GEMM` names another host
    /// engine (a `clblast` there picks the OpenCL devices' engine and leaves this one alone).
    public var gemmEngine: GemmEngine {
        didSet { precondition(gemmEngine.runsOnHost, "the CPU backend runs host GEMM engines only") }
    }

    /// The route of bf16 GEMMs: nil for the one chosen for the engine (``BF16GemmRoute``); the
    /// bench sets each to time both.
    public var bf16GemmRoute: BF16GemmRoute?

    public let ropeTables = RoPETables()

    public var gemmDescription: String { "\(gemmEngine.description); \(gemmEngine.bf16Description)" }
    public var hasFastBF16GEMMs: Bool { gemmEngine.multipliesBF16Natively }
    public var computesOffHost: Bool { false }

    /// Freed blocks kept for reuse (up to an eighth of the budget).
    let pool: BlockPool<UnsafeMutableRawPointer>

    public init() throws {
        ledger = MemoryLedger(deviceName: "cpu", budgetBytes: try MemoryLedger.budget(default: physicalMemoryBytes * 3 / 4))
        pool = BlockPool(ledger: ledger, capacityBytes: ledger.budgetBytes / 8) { $0.deallocate() }
        let requested = try GemmEngine.requested()
        _ = try BF16GemmRoute.requested()  // a bad KDGPU_BF16_GEMM fails here, before any work
        gemmEngine = GemmEngine.host(requested: requested)
    }

    deinit { pool.drain() }

    public func allocate(shape: [Int], dtype: DType, label: String) throws -> Tensor {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch("\(label): negative dimension in \(describeShape(shape))")
        }
        let storage = try CPUStorage(byteCount: dtype.byteCount(elements: shape.reduce(1, *)), pool: pool, label: label)
        return Tensor(shape: shape, dtype: dtype, storage: storage, backend: self, label: label)
    }

    public func uploadBytes(_ bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws {
        guard bytes.count == tensor.byteCount else {
            throw TensorError.shapeMismatch("upload of \(bytes.count) bytes into \(tensor.label) \(describeShape(tensor.shape)) \(tensor.dtype.rawValue) of \(tensor.byteCount) bytes")
        }
        guard let base = bytes.baseAddress else { return }
        try rawPointer(tensor).copyMemory(from: base, byteCount: bytes.count)
    }

    public func downloadBytes(_ tensor: Tensor, into destination: UnsafeMutableRawBufferPointer) throws {
        guard destination.count == tensor.byteCount else {
            throw TensorError.shapeMismatch("download of \(tensor.label) (\(tensor.byteCount) bytes) into \(destination.count) bytes")
        }
        guard let base = destination.baseAddress else { return }
        base.copyMemory(from: try rawPointer(tensor), byteCount: destination.count)
    }

    public func withHostBytes<R>(_ tensor: Tensor, writing: Bool, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        try body(UnsafeMutableRawBufferPointer(start: try rawPointer(tensor), count: tensor.byteCount))
    }

    /// The storage itself: the CPU backend's ops have run by the time they return.
    public func lendToHost(_ tensor: Tensor) throws -> any HostLoan {
        CPUHostLoan(bytes: UnsafeMutableRawBufferPointer(start: try rawPointer(tensor), count: tensor.byteCount))
    }

    public func synchronize() throws {}

    /// The host address of a tensor's first byte, of any dtype.
    public func rawPointer(_ tensor: Tensor) throws -> UnsafeMutableRawPointer {
        guard let storage = tensor.storage as? CPUStorage else {
            throw TensorError.unsupported("\(tensor.label) lives on \(tensor.backend.name), not on the CPU backend")
        }
        return storage.pointer + tensor.byteOffset
    }

    /// The host address of an f32 tensor's first element (for CPU twins and host BLAS).
    public func mutablePointer(_ tensor: Tensor) throws -> UnsafeMutablePointer<Float> {
        guard tensor.dtype == .f32 else {
            throw TensorError.unsupported("\(tensor.label) is \(tensor.dtype.rawValue), not f32")
        }
        return try rawPointer(tensor).assumingMemoryBound(to: Float.self)
    }

    public func pointer(_ tensor: Tensor) throws -> UnsafePointer<Float> { UnsafePointer(try mutablePointer(tensor)) }

    // MARK: kernels

    public func enqueueFill(_ x: Tensor, value: Float) throws {
        let px = try mutablePointer(x)
        parallelChunks(x.count, grain: elementGrain) { CPUKernels.fill_f32(px, value, $0) }
    }

    public func enqueueCopy(_ source: Tensor, into destination: Tensor) throws {
        let (px, py) = (try pointer(source), try mutablePointer(destination))
        parallelChunks(source.count, grain: elementGrain) { CPUKernels.copy_f32(px, py, $0) }
    }

    public func enqueueCopyColumns(_ source: Tensor, into destination: Tensor, column: Int) throws {
        let (ps, pd, cols, dstCols) = (try pointer(source), try mutablePointer(destination), source.shape[1], destination.shape[1])
        parallelChunks(source.shape[0], grain: max(1, elementGrain / cols)) {
            CPUKernels.copy_columns_f32(ps, pd, cols: cols, dstCols: dstCols, column: column, $0)
        }
    }

    public func enqueueBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        let (pa, pb, po) = (try pointer(a), try pointer(b), try mutablePointer(out))
        parallelChunks(a.count, grain: elementGrain) { range in
            switch op {
            case .add: CPUKernels.add_f32(pa, pb, po, range)
            case .mul: CPUKernels.mul_f32(pa, pb, po, range)
            }
        }
    }

    public func enqueueScale(_ x: Tensor, by alpha: Float, into out: Tensor) throws {
        let (px, po) = (try pointer(x), try mutablePointer(out))
        parallelChunks(x.count, grain: elementGrain) { CPUKernels.scale_f32(px, alpha, po, $0) }
    }

    public func enqueueAxpy(alpha: Float, _ x: Tensor, _ y: Tensor) throws {
        let (px, py) = (try pointer(x), try mutablePointer(y))
        parallelChunks(x.count, grain: elementGrain) { CPUKernels.axpy_f32(alpha, px, py, $0) }
    }

    public func enqueueGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        try hostGemm(gemmEngine, p, try rawPointer(a), try rawPointer(b), try mutablePointer(c), bf16Route: bf16GemmRoute)
    }

    public func enqueueRowReduction(_ op: RowReduction, _ x: Tensor, into out: Tensor) throws {
        let (px, po, cols) = (try pointer(x), try mutablePointer(out), x.columns)
        parallelChunks(x.rowCount, grain: max(1, rowGrainElements / cols)) { rows in
            switch op {
            case .max: CPUKernels.row_max(px, po, cols: cols, rows)
            case .sum: CPUKernels.row_sum(px, po, cols: cols, rows)
            case .sumSquares: CPUKernels.row_sum_squares(px, po, cols: cols, rows)
            }
        }
    }

    public func enqueueSampleRows(_ logits: Tensor, uniforms: Tensor, into ids: Tensor, temperature: Float, topK: Int, topP: Float) throws {
        let (pz, pu, cols) = (try pointer(logits), try pointer(uniforms), logits.columns)
        let pids = try rawPointer(ids).assumingMemoryBound(to: Int32.self)
        parallelChunks(logits.rowCount, grain: 1) { rows in
            CPUKernels.sample_rows(pz, pu, pids, cols: cols, temperature: temperature, topK: topK, topP: topP, rows)
        }
    }

    public func enqueueSoftmaxRows(_ x: Tensor, into y: Tensor, temperature: Float, logarithm: Bool) throws {
        let (px, py, cols) = (try pointer(x), try mutablePointer(y), x.columns)
        let inverseTemperature = 1 / temperature
        parallelChunks(x.rowCount, grain: max(1, rowGrainElements / cols)) { rows in
            if logarithm {
                CPUKernels.log_softmax_rows(px, py, cols: cols, inverseTemperature: inverseTemperature, rows)
            } else {
                CPUKernels.softmax_rows(px, py, cols: cols, inverseTemperature: inverseTemperature, rows)
            }
        }
    }

    // MARK: model kernels

    func int32Pointer(_ tensor: Tensor) throws -> UnsafePointer<Int32> {
        UnsafePointer(try rawPointer(tensor).assumingMemoryBound(to: Int32.self))
    }

    public func enqueueDequantize(_ source: Tensor, into out: Tensor) throws {
        let src = UnsafeRawPointer(try rawPointer(source))
        let blocks = source.count / 32
        if out.dtype == .bf16 {
            let raw = try rawPointer(out)
            switch source.dtype {
            case .q8_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q8_0_to_bf16(src, raw, $0) }
            case .q4_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_0_to_bf16(src, raw, $0) }
            case .q4_1: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_1_to_bf16(src, raw, $0) }
            case .f16: parallelChunks(source.count, grain: elementGrain) { CPUKernels.dequantize_f16_to_bf16(src, raw, $0) }
            default: throw TensorError.unsupported("dequantize of \(source.label) (\(source.dtype.rawValue)) to bf16")
            }
            return
        }
        if out.dtype == .f16 {
            let raw = try rawPointer(out)
            switch source.dtype {
            case .q8_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q8_0_to_f16(src, raw, $0) }
            case .q4_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_0_to_f16(src, raw, $0) }
            case .q4_1: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_1_to_f16(src, raw, $0) }
            case .bf16: parallelChunks(source.count, grain: elementGrain) { CPUKernels.dequantize_bf16_to_f16(src, raw, $0) }
            default: throw TensorError.unsupported("dequantize of \(source.label) (\(source.dtype.rawValue)) to f16")
            }
            return
        }
        let po = try mutablePointer(out)
        switch source.dtype {
        case .q8_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q8_0(src, po, $0) }
        case .q4_0: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_0(src, po, $0) }
        case .q4_1: parallelChunks(blocks, grain: 2048) { CPUKernels.dequantize_q4_1(src, po, $0) }
        case .f16: parallelChunks(source.count, grain: elementGrain) { CPUKernels.dequantize_f16(src, po, $0) }
        case .bf16: parallelChunks(source.count, grain: elementGrain) { CPUKernels.dequantize_bf16(src, po, $0) }
        case .f32, .i32: throw TensorError.unsupported("dequantize of \(source.label) (\(source.dtype.rawValue))")
        }
    }

    public func enqueueNarrow(_ source: Tensor, into out: Tensor, rounding: Rounding) throws {
        let (ps, po) = (try pointer(source), try rawPointer(out))
        if case .stochastic(let key) = rounding {
            parallelChunks(source.count, grain: elementGrain) { CPUKernels.convert_f32_to_bf16_stochastic(ps, po, $0, key: key) }
        } else if out.dtype == .bf16 {
            parallelChunks(source.count, grain: elementGrain) { CPUKernels.convert_f32_to_bf16(ps, po, $0) }
        } else {
            parallelChunks(source.count, grain: elementGrain) { CPUKernels.convert_f32_to_f16(ps, po, $0) }
        }
    }

    public func enqueueGatherRows(_ table: Tensor, ids: Tensor, into out: Tensor) throws {
        let (pt, pi, po) = (UnsafeRawPointer(try rawPointer(table)), try int32Pointer(ids), try mutablePointer(out))
        let (rows, cols) = (table.shape[0], table.shape[1])
        parallelChunks(ids.count, grain: max(1, rowGrainElements / cols)) { range in
            switch table.dtype {
            case .f32: CPUKernels.get_rows_f32(pt.assumingMemoryBound(to: Float.self), rows: rows, pi, po, cols: cols, range)
            case .f16: CPUKernels.get_rows_f16(pt, rows: rows, pi, po, cols: cols, range)
            case .bf16: CPUKernels.get_rows_bf16(pt, rows: rows, pi, po, cols: cols, range)
            case .q8_0: CPUKernels.get_rows_q8_0(pt, rows: rows, pi, po, cols: cols, range)
            case .q4_0: CPUKernels.get_rows_q4_0(pt, rows: rows, pi, po, cols: cols, range)
            case .q4_1: CPUKernels.get_rows_q4_1(pt, rows: rows, pi, po, cols: cols, range)
            case .i32: preconditionFailure("gatherRows rejects i32 tables")
            }
        }
    }

    public func enqueueRMSNorm(_ x: Tensor, weight: Tensor, epsilon: Float, into y: Tensor) throws {
        let (px, pw, py, cols) = (try pointer(x), try pointer(weight), try mutablePointer(y), x.columns)
        parallelChunks(x.rowCount, grain: max(1, rowGrainElements / cols)) {
            CPUKernels.rms_norm(px, pw, py, cols: cols, eps: epsilon, $0)
        }
    }

    public func enqueueRoPE(_ x: Tensor, table: Tensor, into y: Tensor, _ rope: RoPE) throws {
        let (px, pt, py) = (try pointer(x), try pointer(table), try mutablePointer(y))
        parallelChunks(x.count / 2, grain: elementGrain) {
            CPUKernels.rope(px, pt, py, heads: rope.heads, headDim: rope.headDimension, ropeDim: rope.rotatedDimensions,
                            halves: rope.layout == .halves, direction: rope.inverse ? -1 : 1, $0)
        }
    }

    public func enqueueCausalSoftmax(_ scores: Tensor, into probs: Tensor, queries: Int, keyOffset: Int, keyStarts: Tensor?, scale: Float) throws {
        let (ps, pp, keys) = (try pointer(scores), try mutablePointer(probs), scores.columns)
        let starts = try keyStarts.map { try int32Pointer($0) }, rowsPerStart = keyStarts.map { scores.rowCount / $0.count } ?? 0
        parallelChunks(scores.rowCount, grain: max(1, rowGrainElements / keys)) {
            CPUKernels.causal_softmax(ps, pp, keys: keys, queries: queries, keyOffset: keyOffset, scale: scale, keyStarts: starts,
                                      rowsPerStart: rowsPerStart, $0)
        }
    }

    public func enqueueCausalMask(_ x: Tensor, queries: Int, keyOffset: Int, value: Float) throws {
        let (px, keys) = (try mutablePointer(x), x.columns)
        parallelChunks(x.rowCount, grain: max(1, rowGrainElements / keys)) {
            CPUKernels.causal_mask(px, keys: keys, queries: queries, keyOffset: keyOffset, value: value, $0)
        }
    }

    public func enqueueTranspose12(_ x: Tensor, into y: Tensor) throws {
        let (px, py, s) = (try pointer(x), try mutablePointer(y), x.shape)
        parallelChunks(x.count / max(1, s[3]), grain: max(1, elementGrain / max(1, s[3]))) {
            CPUKernels.transpose_12(px, py, a: s[0], b: s[1], c: s[2], d: s[3], $0)
        }
    }

    public func enqueueSwiGLU(gate: Tensor, up: Tensor, into out: Tensor) throws {
        let (pg, pu, po) = (try pointer(gate), try pointer(up), try mutablePointer(out))
        parallelChunks(gate.count, grain: elementGrain) { CPUKernels.swiglu(pg, pu, po, $0) }
    }

    // MARK: backward kernels

    public func enqueueRMSNormBackward(_ x: Tensor, weight: Tensor, outputGradient: Tensor, epsilon: Float,
                                       inputGradient: Tensor, weightGradient: Tensor, workspace rstd: Tensor) throws {
        let (px, pw, pdy, pdx, pr, pdw) = (try pointer(x), try pointer(weight), try pointer(outputGradient),
                                           try mutablePointer(inputGradient), try mutablePointer(rstd), try mutablePointer(weightGradient))
        let (rows, cols) = (x.rowCount, x.columns)
        parallelChunks(rows, grain: max(1, rowGrainElements / cols)) {
            CPUKernels.rms_norm_backward(px, pw, pdy, pdx, pr, cols: cols, eps: epsilon, $0)
        }
        parallelChunks(cols, grain: max(1, rowGrainElements / rows)) {
            CPUKernels.rms_norm_backward_weight(px, pdy, UnsafePointer(pr), pdw, rows: rows, cols: cols, $0)
        }
    }

    public func enqueueCausalSoftmaxBackward(_ probs: Tensor, outputGradient: Tensor, into scoresGradient: Tensor, scale: Float) throws {
        let (pp, pdp, pds, keys) = (try pointer(probs), try pointer(outputGradient), try mutablePointer(scoresGradient), probs.columns)
        parallelChunks(probs.rowCount, grain: max(1, rowGrainElements / keys)) {
            CPUKernels.causal_softmax_backward(pp, pdp, pds, keys: keys, scale: scale, $0)
        }
    }

    public func enqueueSwiGLUBackward(gate: Tensor, up: Tensor, outputGradient: Tensor, gateGradient: Tensor, upGradient: Tensor) throws {
        let pd = try pointer(outputGradient)
        let (pdg, pdu) = (try mutablePointer(gateGradient), try mutablePointer(upGradient))
        if gate.dtype == .bf16 {
            let (pg, pu) = (UnsafeRawPointer(try rawPointer(gate)), UnsafeRawPointer(try rawPointer(up)))
            parallelChunks(gate.count, grain: elementGrain) { CPUKernels.swiglu_backward_bf16(pg, pu, pd, pdg, pdu, $0) }
        } else {
            let (pg, pu) = (try pointer(gate), try pointer(up))
            parallelChunks(gate.count, grain: elementGrain) { CPUKernels.swiglu_backward(pg, pu, pd, pdg, pdu, $0) }
        }
    }

    public func enqueueEmbeddingBackward(_ outputGradient: Tensor, uniqueIds: Tensor, offsets: Tensor, positions: Tensor,
                                         into tableGradient: Tensor) throws {
        let (pdx, pids, poff, ppos) = (try pointer(outputGradient), try int32Pointer(uniqueIds), try int32Pointer(offsets), try int32Pointer(positions))
        let (pdt, cols) = (try mutablePointer(tableGradient), tableGradient.shape[1])
        parallelChunks(uniqueIds.count, grain: max(1, rowGrainElements / cols)) {
            CPUKernels.embedding_backward(pdx, pids, poff, ppos, pdt, cols: cols, $0)
        }
    }

    public func enqueueAdamW(_ parameter: Tensor, gradient: Tensor, firstMoment: Tensor, secondMoment: Tensor, _ step: AdamWStep) throws {
        let (pp, pg, pm, pv) = (try mutablePointer(parameter), try pointer(gradient), try mutablePointer(firstMoment), try mutablePointer(secondMoment))
        parallelChunks(parameter.count, grain: elementGrain) {
            CPUKernels.adamw(pp, pg, pm, pv, lr: step.learningRate, b1: step.beta1, b2: step.beta2, eps: step.epsilon,
                             wd: step.weightDecay, c1: step.firstCorrection, c2: step.secondCorrection, gs: step.gradientScale, $0)
        }
    }
}

/// A CPU tensor's own bytes, lent as they are.
final class CPUHostLoan: HostLoan {
    private let lent: UnsafeMutableRawBufferPointer
    init(bytes: UnsafeMutableRawBufferPointer) { lent = bytes }
    func bytes() throws -> UnsafeMutableRawBufferPointer { lent }
    func giveBack() throws {}
    func settle() throws {}
}
