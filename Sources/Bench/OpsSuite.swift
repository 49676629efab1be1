import Foundation
import Losses
import Tensor

/// Every kernel of Kernels/ that no other suite times: elementwise, row, model and backward ops and
/// the hidden-state hint loss, each validated against the CPU backend, then timed, with its
/// bandwidth as a fraction of the copy bandwidth measured in the same run. (copy: `copy`; GEMMs:
/// `gemm`; dequantize_*: `teacher`; distill_loss_rows and the unfused baseline: `loss`.)
public struct OpsSuite: BenchSuite {
    public let name = "ops"
    public let summary = "every other kernel (elementwise, 16-bit conversions, rows, sampling, rms_norm, rope, attention, swiglu, backward, adamw, hint loss): GB/s vs copy"

    /// One kernel at one shape: `make` builds fresh inputs on a backend and returns the op and the tensor it writes.
    struct Case {
        let kernel: String
        let shape: String
        /// The 16-bit type a conversion or lookup works on (f32 for the rest).
        var dtype: DType = .f32
        /// Bytes the kernel must read and write.
        let bytes: Double
        /// An i32 output (token ids): its error is the share of entries unlike the CPU backend's.
        var ids = false
        let make: (any Backend) throws -> (run: () throws -> Void, output: Tensor)

        func values(_ output: Tensor) throws -> [Float] {
            ids ? try output.backend.downloadInt32(output).map(Float.init) : try output.toArray()
        }
    }

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        for c in Self.cases {
            context.report("ops: \(c.kernel) \(c.shape) on the CPU (reference)")
            let reference = try c.make(context.cpu)
            try reference.run()
            let expected = try c.values(reference.output)
            for backend in context.backends {
                context.report("ops: \(c.kernel) \(c.shape) on \(backend.name)")
                let checked = try c.make(backend)
                try checked.run()
                let measured = try c.values(checked.output)
                let error = c.ids ? Double(zip(measured, expected).filter { $0 != $1 }.count) / Double(max(1, expected.count))
                                  : maxAbsDifference(measured, expected)
                let timed = try c.make(backend)
                let seconds = try context.median {
                    try timed.run()
                    try backend.synchronize()
                }
                let gbPerSecond = c.bytes / seconds / 1e9
                records.append(BenchRecord(suite: name, kernel: c.kernel, backend: backend.name, shape: c.shape, dtype: c.dtype.rawValue, medianSeconds: seconds,
                                           gbPerSecond: gbPerSecond, maxAbsError: error,
                                           extra: ["fraction_of_copy_bandwidth": gbPerSecond / (try context.copyBandwidth(of: backend))]))
            }
        }
        return records
    }

    static func tensor(_ backend: any Backend, _ shape: [Int], seed: UInt64, scale: Float = 1) throws -> Tensor {
        try backend.tensor(benchValues(shape.reduce(1, *), seed: seed, scale: scale), shape: shape, label: "bench operand \(seed)")
    }

    static let cases: [Case] = elementwise + conversions + rows + model + backward + hints

    /// fp32 narrowed to 16-bit storage (round to nearest even; bf16 also stochastically, as the
    /// trainer's compute copy) and bf16 widened back, over 2^23 elements (4 + 2 bytes each); a bf16
    /// embedding lookup at the teacher's shape.
    static let conversions: [Case] = {
        let n = 1 << 23, c = 576, ids = 2048
        return [DType.bf16, .f16].map { dtype in
            Case(kernel: "convert_f32_to_\(dtype.rawValue)", shape: "[\(n)]", dtype: dtype, bytes: Double(6 * n)) { b in
                let (x, out) = (try tensor(b, [n], seed: 1, scale: 100), try b.tensor(shape: [n], dtype: dtype, label: "bench narrowed"))
                return ({ try b.convert(x, into: out) }, out)
            }
        } + [
            Case(kernel: "convert_f32_to_bf16_stochastic", shape: "[\(n)]", dtype: .bf16, bytes: Double(6 * n)) { b in
                let (x, out) = (try tensor(b, [n], seed: 1, scale: 100), try b.tensor(shape: [n], dtype: .bf16, label: "bench narrowed"))
                return ({ try b.convert(x, into: out, rounding: .stochastic(key: 0x5EED)) }, out)
            },
            Case(kernel: "dequantize_bf16", shape: "[\(n)]", dtype: .bf16, bytes: Double(6 * n)) { b in
                let x = try b.tensor(benchValues(n, seed: 1, scale: 100), shape: [n], dtype: .bf16, label: "bench bf16")
                let out = try tensor(b, [n], seed: 2)
                return ({ try b.convert(x, into: out) }, out)
            },
            Case(kernel: "get_rows_bf16", shape: "\(ids) ids of [49152, \(c)] bf16", dtype: .bf16, bytes: Double(ids * c * 6 + ids * 4)) { b in
                let table = try b.tensor(benchValues(49152 * c, seed: 3), shape: [49152, c], dtype: .bf16, label: "bench bf16 table")
                let idTensor = try b.indexTensor(benchTokenIds(ids, below: 49152, seed: 5), shape: [ids], label: "bench ids")
                let out = try tensor(b, [ids, c], seed: 2)
                return ({ try b.gatherRows(table, ids: idTensor, into: out) }, out)
            },
        ]
    }()

    static let elementwise: [Case] = {
        let n = 1 << 23, bytes = Double(4 * n)
        func binary(_ op: BinaryOp) -> Case {
            Case(kernel: "\(op.rawValue)_f32", shape: "[\(n)]", bytes: 3 * bytes) { b in
                let (x, y, out) = (try tensor(b, [n], seed: 1), try tensor(b, [n], seed: 2), try tensor(b, [n], seed: 3))
                return ({ try b.binary(op, x, y, into: out) }, out)
            }
        }
        return [
            Case(kernel: "fill_f32", shape: "[\(n)]", bytes: bytes) { b in
                let x = try tensor(b, [n], seed: 1)
                return ({ try b.fill(x, value: 0.5) }, x)
            },
            binary(.add), binary(.mul),
            Case(kernel: "scale_f32", shape: "[\(n)]", bytes: 2 * bytes) { b in
                let (x, out) = (try tensor(b, [n], seed: 1), try tensor(b, [n], seed: 2))
                return ({ try b.scale(x, by: 0.5, into: out) }, out)
            },
            Case(kernel: "axpy_f32", shape: "[\(n)]", bytes: 3 * bytes) { b in
                let (x, y) = (try tensor(b, [n], seed: 1), try tensor(b, [n], seed: 2))
                return ({ try b.axpy(alpha: 0.5, x, y) }, y)
            },
            Case(kernel: "copy_columns_f32", shape: "[2048, 4096] into [2048, 8192]", bytes: 2 * 4 * 2048 * 4096) { b in
                let (x, wide) = (try tensor(b, [2048, 4096], seed: 1), try tensor(b, [2048, 8192], seed: 2))
                return ({ try b.copyColumns(x, into: wide, column: 1000) }, wide)
            },
        ]
    }()

    static let rows: [Case] = {
        let (r, c) = (512, 49152)
        let bytes = Double(4 * r * c)
        func reduction(_ op: RowReduction) -> Case {
            Case(kernel: "row_\(op.rawValue)", shape: "[\(r), \(c)]", bytes: bytes) { b in
                let (x, out) = (try tensor(b, [r, c], seed: 1, scale: 10), try tensor(b, [r], seed: 2))
                return ({ try b.reduceRows(op, x, into: out) }, out)
            }
        }
        return RowReduction.allCases.map(reduction) + [false, true].map { logarithm in
            Case(kernel: logarithm ? "log_softmax_rows" : "softmax_rows", shape: "[\(r), \(c)] T=2", bytes: 2 * bytes) { b in
                let (x, y) = (try tensor(b, [r, c], seed: 1, scale: 10), try tensor(b, [r, c], seed: 2))
                return ({ logarithm ? try b.logSoftmax(x, into: y, temperature: 2) : try b.softmax(x, into: y, temperature: 2) }, y)
            }
        } + [(8, 0, Float(1)), (8, 50, Float(0.95))].map { rows, topK, topP in
            // One generation step's draw for a batch of 8: the bytes are one read of the logits (plain
            // temperature sampling reads them 3 times, top-k and top-p add 32 passes each).
            Case(kernel: "sample_rows", shape: "[\(rows), \(c)] T=0.8 top-k \(topK) top-p \(topP)", bytes: Double(4 * rows * c), ids: true) { b in
                let logits = try tensor(b, [rows, c], seed: 1, scale: 3)
                let uniforms = try b.tensor((0..<rows).map { (Float($0) + 0.5) / Float(rows) }, shape: [rows], label: "bench uniforms")
                let ids = try b.tensor(shape: [rows], dtype: .i32, label: "bench ids")
                return ({ try b.sampleRows(logits, uniforms: uniforms, into: ids, temperature: 0.8, topK: topK, topP: topP) }, ids)
            }
        }
    }()

    /// The teacher's shapes: 2048 tokens (8 x 256), C = 576, 9 heads of 64 (3 key/value), F = 1536, V = 49152.
    static let model: [Case] = {
        let (n, c, f) = (2048, 576, 1536)
        return [
            Case(kernel: "get_rows_q8_0", shape: "\(n) ids of [49152, \(c)] Q8_0", bytes: Double(n * c) * (34.0 / 32 + 4)) { b in
                let table = try b.allocate(shape: [49152, c], dtype: .q8_0, label: "bench q8_0 table")
                var blocks = [UInt8](repeating: 0, count: table.byteCount)
                for i in stride(from: 0, to: blocks.count, by: 34) { blocks[i + 1] = 0x20 }  // scale 2^-7 (f16 0x2000)
                for i in blocks.indices where i % 34 >= 2 { blocks[i] = UInt8(truncatingIfNeeded: i &* 31) }
                try blocks.withUnsafeBytes { try b.uploadBytes($0, to: table) }
                let ids = try b.indexTensor(benchTokenIds(n, below: 49152, seed: 5), shape: [n], label: "bench ids")
                let out = try tensor(b, [n, c], seed: 2)
                return ({ try b.gatherRows(table, ids: ids, into: out) }, out)
            },
            Case(kernel: "rms_norm", shape: "[\(n), \(c)]", bytes: Double(2 * 4 * n * c)) { b in
                let (x, w, y) = (try tensor(b, [n, c], seed: 1, scale: 3), try tensor(b, [c], seed: 2), try tensor(b, [n, c], seed: 3))
                return ({ try b.rmsNorm(x, weight: w, epsilon: 1e-5, into: y) }, y)
            },
            Case(kernel: "rope", shape: "\(n) tokens x 9 heads x 64", bytes: Double(2 * 4 * n * c)) { b in
                let (x, y) = (try tensor(b, [n, c], seed: 1), try tensor(b, [n, c], seed: 2))
                let positions = (0..<n).map { Int32($0 % 256) }
                let rope = RoPE(heads: 9, headDimension: 64, base: 100000, layout: .adjacent)
                return ({ try b.rope(x, positions: positions, into: y, rope) }, y)
            },
            Case(kernel: "causal_softmax", shape: "[8 x 3, 3 x 256, 256]", bytes: Double(2 * 4 * 24 * 768 * 256)) { b in
                let (s, p) = (try tensor(b, [24, 768, 256], seed: 1, scale: 10), try tensor(b, [24, 768, 256], seed: 2))
                return ({ try b.causalSoftmax(s, into: p, queries: 256, scale: 0.125) }, p)
            },
            // Writes the masked upper triangle: about half the map.
            Case(kernel: "causal_mask", shape: "[24, 768, 256] with 256 queries", bytes: Double(4 * 24 * 768 * 256) / 2) { b in
                let x = try tensor(b, [24, 768, 256], seed: 1)
                return ({ try b.causalMask(x, queries: 256, value: -.infinity) }, x)
            },
            Case(kernel: "transpose_12", shape: "[8, 256, 9, 64]", bytes: Double(2 * 4 * n * c)) { b in
                let (x, y) = (try tensor(b, [8, 256, 9, 64], seed: 1), try tensor(b, [8, 9, 256, 64], seed: 2))
                return ({ try b.transpose12(x, into: y) }, y)
            },
            Case(kernel: "swiglu", shape: "[\(n), \(f)]", bytes: Double(3 * 4 * n * f)) { b in
                let (g, u, out) = (try tensor(b, [n, f], seed: 1, scale: 3), try tensor(b, [n, f], seed: 2), try tensor(b, [n, f], seed: 3))
                return ({ try b.swiglu(gate: g, up: u, into: out) }, out)
            },
        ]
    }()

    static let backward: [Case] = {
        let (n, c, f) = (2048, 576, 1536)
        let parameters = 1 << 23
        return [
            Case(kernel: "rms_norm_backward", shape: "[\(n), \(c)]", bytes: Double(4 * 4 * n * c)) { b in
                let (x, w, dy) = (try tensor(b, [n, c], seed: 1, scale: 3), try tensor(b, [c], seed: 2), try tensor(b, [n, c], seed: 3))
                let (dx, dw, rstd) = (try tensor(b, [n, c], seed: 4), try tensor(b, [c], seed: 5), try tensor(b, [n], seed: 6))
                return ({ try b.rmsNormBackward(x, weight: w, outputGradient: dy, epsilon: 1e-5, inputGradient: dx, weightGradient: dw, workspace: rstd) }, dx)
            },
            Case(kernel: "causal_softmax_backward", shape: "[24, 768, 256]", bytes: Double(3 * 4 * 24 * 768 * 256)) { b in
                let (p, dp, ds) = (try tensor(b, [24, 768, 256], seed: 1), try tensor(b, [24, 768, 256], seed: 2), try tensor(b, [24, 768, 256], seed: 3))
                return ({ try b.causalSoftmaxBackward(p, outputGradient: dp, into: ds, scale: 0.125) }, ds)
            },
            Case(kernel: "swiglu_backward", shape: "[\(n), \(f)]", bytes: Double(5 * 4 * n * f)) { b in
                let (g, u, d) = (try tensor(b, [n, f], seed: 1, scale: 3), try tensor(b, [n, f], seed: 2), try tensor(b, [n, f], seed: 3))
                let (dg, du) = (try tensor(b, [n, f], seed: 4), try tensor(b, [n, f], seed: 5))
                return ({ try b.swigluBackward(gate: g, up: u, outputGradient: d, gateGradient: dg, upGradient: du) }, dg)
            },
            Case(kernel: "swiglu_backward_bf16", shape: "[\(n), \(f)], bf16 gate and up", dtype: .bf16, bytes: Double((2 * 2 + 3 * 4) * n * f)) { b in
                let (g, u) = (try b.tensor(benchValues(n * f, seed: 1, scale: 3), shape: [n, f], dtype: .bf16, label: "bench gate"),
                              try b.tensor(benchValues(n * f, seed: 2), shape: [n, f], dtype: .bf16, label: "bench up"))
                let (d, dg, du) = (try tensor(b, [n, f], seed: 3), try tensor(b, [n, f], seed: 4), try tensor(b, [n, f], seed: 5))
                return ({ try b.swigluBackward(gate: g, up: u, outputGradient: d, gateGradient: dg, upGradient: du) }, dg)
            },
            Case(kernel: "embedding_backward", shape: "\(n) rows into [49152, \(c)]", bytes: Double(3 * 4 * n * c)) { b in
                let (dx, table) = (try tensor(b, [n, c], seed: 1), try tensor(b, [49152, c], seed: 2))
                let ids = benchTokenIds(n, below: 49152, seed: 5)
                return ({ try b.embeddingBackward(dx, tokenIds: ids, into: table) }, table)
            },
            Case(kernel: "adamw", shape: "[\(parameters)]", bytes: Double(7 * 4 * parameters)) { b in
                let (p, g, m, v) = (try tensor(b, [parameters], seed: 1), try tensor(b, [parameters], seed: 2),
                                    try tensor(b, [parameters], seed: 3, scale: 0.1), try tensor(b, [parameters], seed: 4, scale: 0.1))
                try b.binary(.mul, v, v, into: v)
                return ({ try b.adamw(p, gradient: g, firstMoment: m, secondMoment: v, AdamWStep(learningRate: 1e-3, step: 10)) }, p)
            },
        ]
    }()

    /// `hint_loss_rows` on the teacher's hidden states [2048, 576] (randn * 3): reads s and t, writes
    /// the gradient and the row losses, both in one output tensor so both are validated. grad_scale
    /// brings the gradient entries to order 1 (as in the parity table), so max_abs_error reads as relative.
    static let hints: [Case] = {
        let (n, c) = (2048, 576)
        return HiddenStateHintLoss.Kind.allCases.map { kind in
            Case(kernel: "hint_loss_rows \(kind)", shape: "[\(n), \(c)] with gradient", bytes: Double(4 * (3 * n * c + n))) { b in
                guard let kernels = b as? any HintLossKernel else {
                    throw TensorError.unsupported("bench ops: \(b.name) has no hint-loss kernels")
                }
                let (s, t) = (try tensor(b, [n, c], seed: 1, scale: 3), try tensor(b, [n, c], seed: 2, scale: 3))
                // [n * c gradient entries, then n row losses]
                let out = try tensor(b, [n * c + n], seed: 3)
                let launch = HintLossLaunch(student: s, teacher: t, rowLoss: try out.rows((n * c)..<(n * c + n)),
                                            gradient: try out.rows(0..<(n * c)).reshaped([n, c]), kind: kind.kernelKind,
                                            gradScale: kind == .mse ? Float(c) / 2 : 3 * Float(c).squareRoot())
                return ({ try kernels.enqueueHintLossRows(launch) }, out)
            }
        }
    }()
}
