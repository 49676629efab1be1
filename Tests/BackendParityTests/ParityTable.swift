import Foundation
import Tensor
import TestSupport

/// One operand of a parity instance: its shape and initial values.
struct Operand {
    let shape: [Int]
    let values: [Float]
}

/// One concrete run of an op: operands, what to do with them, and an fp64 reference.
struct ParityInstance {
    let description: String
    /// f32 operands; the op sees them first, then `rawOperands`.
    let operands: [Operand]
    /// Operands of other dtypes (quantized blocks, ids), uploaded as bytes; never outputs.
    var rawOperands: [RawOperand] = []
    /// Indices of the f32 operands the op writes; they are compared after the run.
    let outputs: [Int]
    let run: (any Backend, [Tensor]) throws -> Void
    /// The expected values of the output operands, from the f32 operands' initial values, in fp64.
    let reference: ([[Double]]) -> [[Double]]
}

/// One row of the parity table (ggml's test-backend-ops is the model): an op and the instances it
/// is checked on. Every instance runs on every backend; each backend's result is compared with the
/// fp64 reference, and the OpenCL result with the CPU backend's.
struct ParityCase {
    let op: String
    /// Largest allowed `max |x - ref| / max(1, max |ref|)`.
    let tolerance: Double
    let instances: (inout SeededRandom) -> [ParityInstance]
}

/// Lengths that catch tail handling: 1, primes, not multiples of 4/8/16, exact multiples, large.
let elementCounts = [1, 2, 7, 16, 31, 97, 1021, 4096, 65537]
/// [rows, cols] shapes for row ops: single elements, primes, odd rows, large vocabulary rows.
let rowShapes = [[1, 1], [3, 17], [41, 1271], [5, 1031], [2, 32000], [3, 49152], [1, 128256]]

enum ParityTable {
    /// Every op of the tensor API. Adding an op means adding a row here.
    static let cases: [ParityCase] = elementwiseCases + convertCases + [stochasticConvertCase, gemmCase, gemmCase(inputType: .bf16), gemmCase(inputType: .f16)] + rowCases + inPlaceSoftmaxCases + modelCases + backwardCases + lossCases

    static let elementwiseCases: [ParityCase] = [
        ParityCase(op: "fill_f32", tolerance: 0) { rng in
            elementCounts.map { n in
                let value = rng.normal()
                return ParityInstance(description: "n=\(n)", operands: [Operand(shape: [n], values: rng.normals(n))],
                                      outputs: [0], run: { try $0.fill($1[0], value: value) },
                                      reference: { _ in [Array(repeating: Double(value), count: n)] })
            }
        },
        ParityCase(op: "copy_f32", tolerance: 0) { rng in
            elementCounts.map { n in
                ParityInstance(description: "n=\(n)",
                               operands: [Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n))],
                               outputs: [1], run: { try $0.copy($1[0], into: $1[1]) }, reference: { [$0[0]] })
            }
        },
        ParityCase(op: "copy_columns_f32", tolerance: 0) { rng in
            [(1, 1, 1, 0), (3, 5, 17, 12), (33, 100, 257, 101), (7, 1, 9, 8)].map { (rows: Int, cols: Int, wide: Int, column: Int) in
                ParityInstance(description: "[\(rows), \(cols)] into [\(rows), \(wide)] at \(column)",
                               operands: [Operand(shape: [rows, cols], values: rng.normals(rows * cols)),
                                          Operand(shape: [rows, wide], values: rng.normals(rows * wide))],
                               outputs: [1], run: { try $0.copyColumns($1[0], into: $1[1], column: column) },
                               reference: { inputs in
                                   var out = inputs[1]
                                   for r in 0..<rows { for c in 0..<cols { out[r * wide + column + c] = inputs[0][r * cols + c] } }
                                   return [out]
                               })
            }
        },
        binaryCase(.add, +),
        binaryCase(.mul, *),
        ParityCase(op: "scale_f32", tolerance: 1e-6) { rng in
            elementCounts.map { n in
                let alpha = rng.normal()
                return ParityInstance(description: "n=\(n) alpha=\(alpha)",
                                      operands: [Operand(shape: [n], values: rng.normals(n, scale: 100)), Operand(shape: [n], values: rng.normals(n))],
                                      outputs: [1], run: { try $0.scale($1[0], by: alpha, into: $1[1]) },
                                      reference: { [$0[0].map { Double(alpha) * $0 }] })
            }
        },
        ParityCase(op: "axpy_f32", tolerance: 1e-6) { rng in
            elementCounts.map { n in
                let alpha = rng.normal()
                return ParityInstance(description: "n=\(n) alpha=\(alpha)",
                                      operands: [Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n))],
                                      outputs: [1], run: { try $0.axpy(alpha: alpha, $1[0], $1[1]) },
                                      reference: { inputs in [zip(inputs[0], inputs[1]).map { Double(alpha) * $0 + $1 }] })
            }
        },
    ]

    static func binaryCase(_ op: BinaryOp, _ f: @escaping (Double, Double) -> Double) -> ParityCase {
        ParityCase(op: "\(op.rawValue)_f32", tolerance: 1e-6) { rng in
            elementCounts.map { n in
                ParityInstance(description: "n=\(n)",
                               operands: [Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n)),
                                          Operand(shape: [n], values: rng.normals(n))],
                               outputs: [2], run: { try $0.binary(op, $1[0], $1[1], into: $1[2]) },
                               reference: { inputs in [zip(inputs[0], inputs[1]).map(f)] })
            }
        }
    }

    /// GEMM: every transpose combination, alpha/beta, odd and unit sizes, strided batches and a shared B.
    static let gemmCase = gemmCase(inputType: .f32)

    /// GEMMs over odd sizes, every transpose, batches (one with B shared), alpha and beta. With bf16
    /// or f16 inputs the op gets A and B narrowed on the device and the reference multiplies their
    /// rounded values in fp64 (the products are exact in fp32; only the fp32 accumulation differs).
    static func gemmCase(inputType: DType) -> ParityCase { ParityCase(op: inputType == .f32 ? "gemm" : "gemm \(inputType.rawValue) x \(inputType.rawValue) -> f32", tolerance: 1e-5) { rng in
        var instances: [ParityInstance] = []
        let sizes: [(m: Int, n: Int, k: Int, batch: Int, shareB: Bool)] = [
            (1, 1, 1, 1, false), (13, 17, 31, 1, false), (64, 48, 96, 1, false), (1, 129, 77, 1, false),
            (100, 3, 257, 1, false), (7, 5, 3, 3, false), (9, 33, 17, 4, true), (8, 97, 40, 1, false), (2, 300, 19, 1, false),
            (130, 70, 45, 2, false),  // several 64 x 64 tiles of the 16-bit kernels in both directions
        ]
        for size in sizes {
            for (transposeA, transposeB) in [(false, false), (true, false), (false, true), (true, true)] {
                let alpha = Float.random(in: 0.5...1.5, using: &rng) * (Bool.random(using: &rng) ? 1 : -1)
                let beta: Float = [0, 1, 0.5][Int.random(in: 0..<3, using: &rng)]
                let (m, n, k, batch) = (size.m, size.n, size.k, size.batch)
                let shapeA = transposeA ? [k, m] : [m, k]
                let shapeB = transposeB ? [n, k] : [k, n]
                let batchShape = batch > 1 ? [batch] : []
                let operandB = size.shareB ? Operand(shape: shapeB, values: rng.normals(k * n))
                                           : Operand(shape: batchShape + shapeB, values: rng.normals(batch * k * n))
                instances.append(ParityInstance(
                    description: "M=\(m) N=\(n) K=\(k) batch=\(batch)\(size.shareB ? " shared B" : "") tA=\(transposeA) tB=\(transposeB) alpha=\(alpha) beta=\(beta)",
                    operands: [Operand(shape: batchShape + shapeA, values: rng.normals(batch * m * k)), operandB,
                               Operand(shape: batchShape + [m, n], values: rng.normals(batch * m * n))],
                    outputs: [2],
                    run: { backend, t in
                        var (a, b) = (t[0], t[1])
                        if inputType != .f32 {
                            a = try backend.tensor(shape: t[0].shape, dtype: inputType, label: "A narrowed")
                            b = try backend.tensor(shape: t[1].shape, dtype: inputType, label: "B narrowed")
                            try backend.convert(t[0], into: a)
                            try backend.convert(t[1], into: b)
                        }
                        try backend.gemm(a, b, into: t[2], transposeA: transposeA, transposeB: transposeB, alpha: alpha, beta: beta)
                    },
                    reference: { inputs in
                        var (a, b) = (inputs[0], inputs[1])
                        if let f = sixteenBitFormats.first(where: { $0.dtype == inputType }) {
                            func round(_ values: [Double]) -> [Double] {
                                values.map { roundToNearestEven($0, significandBits: f.p, minExponent: f.minExponent, maxExponent: f.maxExponent) }
                            }
                            (a, b) = (round(a), round(b))
                        }
                        let c = inputs[2]
                        var out = c
                        for p in 0..<batch {
                            let bBase = size.shareB ? 0 : p * k * n
                            for i in 0..<m {
                                for j in 0..<n {
                                    var sum = 0.0
                                    for l in 0..<k {
                                        let aValue = transposeA ? a[p * m * k + l * m + i] : a[p * m * k + i * k + l]
                                        let bValue = transposeB ? b[bBase + j * k + l] : b[bBase + l * n + j]
                                        sum += aValue * bValue
                                    }
                                    out[p * m * n + i * n + j] = Double(alpha) * sum + Double(beta) * c[p * m * n + i * n + j]
                                }
                            }
                        }
                        return [out]
                    }))
            }
        }
        return instances
    } }

    /// Row inputs: wide logits (randn * 10) with some -inf entries, and the last row fully masked
    /// when there is more than one row.
    static func rowInstances(_ rng: inout SeededRandom, op: String, outputColumns: (Int) -> Int,
                             run: @escaping (any Backend, [Tensor]) throws -> Void,
                             reference: @escaping ([Double], Int, Int) -> [Double]) -> [ParityInstance] {
        rowShapes.map { shape in
            let (rows, cols) = (shape[0], shape[1])
            let masked: Set<Int> = rows > 1 ? [rows - 1] : []
            let x = rng.logits(rows: rows, cols: cols, scale: 10, negativeInfinityFraction: cols > 1 ? 0.05 : 0, maskedRows: masked)
            let outCols = outputColumns(cols)
            return ParityInstance(description: "\(rows)x\(cols)\(masked.isEmpty ? "" : ", last row all -inf")",
                                  operands: [Operand(shape: shape, values: x), Operand(shape: [rows, outCols], values: rng.normals(rows * outCols))],
                                  outputs: [1], run: run, reference: { [reference($0[0], rows, cols)] })
        }
    }

    static let rowCases: [ParityCase] = [
        ParityCase(op: "row_max", tolerance: 0) { rng in
            rowInstances(&rng, op: "row_max", outputColumns: { _ in 1 },
                         run: { try $0.reduceRows(.max, $1[0], into: $1[1]) },
                         reference: { x, rows, cols in referenceRowReduce(x, rows: rows, cols: cols) { $0.max()! } })
        },
        ParityCase(op: "row_sum", tolerance: 1e-5) { rng in
            // Sums of finite values: a sum with -inf entries would be -inf and test nothing. Mean 10
            // (a sixth of them negative): the table's yardstick is |sum|, so a sum that cancels to far
            // below sum |x| would measure the inputs' conditioning, not the kernel.
            rowShapes.map { shape in
                let (rows, cols) = (shape[0], shape[1])
                let x = rng.normals(rows * cols, scale: 10).map { $0 + 10 }
                return ParityInstance(description: "\(rows)x\(cols)",
                                      operands: [Operand(shape: shape, values: x), Operand(shape: [rows], values: rng.normals(rows))],
                                      outputs: [1], run: { try $0.reduceRows(.sum, $1[0], into: $1[1]) },
                                      reference: { inputs in [referenceRowReduce(inputs[0], rows: rows, cols: cols) { $0.reduce(0, +) }] })
            }
        },
    ] + softmaxCases

    static let softmaxCases: [ParityCase] = [Float(0.5), 1, 2, 8].flatMap { (temperature: Float) -> [ParityCase] in
        [
            ParityCase(op: "softmax_rows T=\(temperature)", tolerance: 1e-5) { rng in
                rowInstances(&rng, op: "softmax_rows", outputColumns: { $0 },
                             run: { try $0.softmax($1[0], into: $1[1], temperature: temperature) },
                             reference: { x, rows, cols in referenceSoftmax(x, rows: rows, cols: cols, temperature: Double(temperature), logarithm: false) })
            },
            ParityCase(op: "log_softmax_rows T=\(temperature)", tolerance: 1e-5) { rng in
                rowInstances(&rng, op: "log_softmax_rows", outputColumns: { $0 },
                             run: { try $0.logSoftmax($1[0], into: $1[1], temperature: temperature) },
                             reference: { x, rows, cols in referenceSoftmax(x, rows: rows, cols: cols, temperature: Double(temperature), logarithm: true) })
            },
        ]
    }

    static func referenceRowReduce(_ x: [Double], rows: Int, cols: Int, _ reduce: (ArraySlice<Double>) -> Double) -> [Double] {
        (0..<rows).map { r in reduce(x[(r * cols)..<((r + 1) * cols)]) }
    }

    /// Softmax and log-softmax writing over their input (y = x), as the evaluation path does.
    static let inPlaceSoftmaxCases: [ParityCase] = [false, true].map { logarithm in
        ParityCase(op: "\(logarithm ? "log_softmax_rows" : "softmax_rows") in place", tolerance: 1e-5) { rng in
            rowShapes.map { shape in
                let (rows, cols) = (shape[0], shape[1])
                let x = rng.logits(rows: rows, cols: cols, scale: 10, negativeInfinityFraction: cols > 1 ? 0.05 : 0,
                                   maskedRows: rows > 1 ? [rows - 1] : [])
                return ParityInstance(description: "\(rows)x\(cols), T=2", operands: [Operand(shape: shape, values: x)], outputs: [0],
                                      run: { backend, t in
                                          if logarithm { try backend.logSoftmax(t[0], into: t[0], temperature: 2) }
                                          else { try backend.softmax(t[0], into: t[0], temperature: 2) }
                                      },
                                      reference: { [referenceSoftmax($0[0], rows: rows, cols: cols, temperature: 2, logarithm: logarithm)] })
            }
        }
    }

    /// fp64 softmax of each row of x / T; an all -inf row gives 0 (or -inf for the logarithm).
    static func referenceSoftmax(_ x: [Double], rows: Int, cols: Int, temperature: Double, logarithm: Bool) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)]
            let m = row.max()!
            if m == -.infinity {
                for j in 0..<cols { out[r * cols + j] = logarithm ? -.infinity : 0 }
                continue
            }
            let logSum = Foundation.log(row.reduce(0) { $0 + Foundation.exp(($1 - m) / temperature) })
            for (j, value) in row.enumerated() {
                let logP = (value - m) / temperature - logSum
                out[r * cols + j] = logarithm ? logP : Foundation.exp(logP)
            }
        }
        return out
    }
}
