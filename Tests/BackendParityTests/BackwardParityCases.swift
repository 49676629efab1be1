import Foundation
import Tensor
import TestSupport

/// dL/dx by central finite differences in fp64, for a scalar loss of one flat input.
func finiteDifferenceGradient(_ x: [Double], step: Double = 1e-6, _ loss: ([Double]) -> Double) -> [Double] {
    var probe = x
    return x.indices.map { i in
        probe[i] = x[i] + step
        let up = loss(probe)
        probe[i] = x[i] - step
        let down = loss(probe)
        probe[i] = x[i]
        return (up - down) / (2 * step)
    }
}

func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

/// fp64 forwards the backward rows differentiate: each backward kernel's reference is the finite
/// difference of L = sum(outputGradient * forward(inputs)), not a copy of the kernel's formula.
enum Forward64 {
    static func rmsNorm(_ x: [Double], _ w: [Double], rows: Int, cols: Int, eps: Double) -> [Double] {
        var y = x
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)]
            let rstd = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(cols) + eps).squareRoot()
            for c in 0..<cols { y[r * cols + c] = x[r * cols + c] * rstd * w[c] }
        }
        return y
    }

    static func causalSoftmax(_ s: [Double], rows: Int, keys: Int, queries: Int, scale: Double) -> [Double] {
        var p = [Double](repeating: 0, count: s.count)
        for r in 0..<rows {
            let visible = min(keys, r % queries + 1)
            let row = (0..<visible).map { s[r * keys + $0] * scale }
            let m = row.max()!
            let total = row.reduce(0) { $0 + exp($1 - m) }
            for j in 0..<visible { p[r * keys + j] = exp(row[j] - m) / total }
        }
        return p
    }

    static func swiglu(_ g: [Double], _ u: [Double]) -> [Double] { zip(g, u).map { $0 / (1 + exp(-$0)) * $1 } }
}

extension ParityTable {
    static let backwardCases: [ParityCase] = [
        rowSumSquaresCase, rmsNormBackwardCase, causalSoftmaxBackwardCase, swigluBackwardCase, swigluBackwardBF16Case, embeddingBackwardCase, adamwCase,
    ]

    static let rowSumSquaresCase = ParityCase(op: "row_sum_squares", tolerance: 1e-5) { rng in
        rowShapes.map { shape in
            let (rows, cols) = (shape[0], shape[1])
            return ParityInstance(description: "\(rows)x\(cols)",
                                  operands: [Operand(shape: shape, values: rng.normals(rows * cols)), Operand(shape: [rows], values: rng.normals(rows))],
                                  outputs: [1], run: { try $0.reduceRows(.sumSquares, $1[0], into: $1[1]) },
                                  reference: { [referenceRowReduce($0[0], rows: rows, cols: cols) { $0.reduce(0) { $0 + $1 * $1 } }] })
        }
    }

    static let rmsNormBackwardCase = ParityCase(op: "rms_norm_backward (finite differences)", tolerance: 1e-4) { rng in
        [[1, 1], [3, 17], [4, 40]].map { shape in
            let (rows, cols) = (shape[0], shape[1])
            let eps = 1e-5
            return ParityInstance(
                description: "\(rows)x\(cols)",
                operands: [Operand(shape: shape, values: rng.normals(rows * cols, scale: 2)), Operand(shape: [cols], values: rng.normals(cols)),
                           Operand(shape: shape, values: rng.normals(rows * cols)), Operand(shape: shape, values: rng.normals(rows * cols)),
                           Operand(shape: [cols], values: rng.normals(cols)), Operand(shape: [rows], values: rng.normals(rows))],
                outputs: [3, 4],
                run: { try $0.rmsNormBackward($1[0], weight: $1[1], outputGradient: $1[2], epsilon: Float(eps), inputGradient: $1[3],
                                              weightGradient: $1[4], workspace: $1[5]) },
                reference: { v in
                    let (x, w, dy, dw0) = (v[0], v[1], v[2], v[4])
                    let dx = finiteDifferenceGradient(x) { dot(dy, Forward64.rmsNorm($0, w, rows: rows, cols: cols, eps: eps)) }
                    let dw = finiteDifferenceGradient(w) { dot(dy, Forward64.rmsNorm(x, $0, rows: rows, cols: cols, eps: eps)) }
                    return [dx, zip(dw0, dw).map(+)]
                })
        }
    }

    static let causalSoftmaxBackwardCase = ParityCase(op: "causal_softmax_backward (finite differences)", tolerance: 1e-4) { rng in
        [(1, 1, 1), (6, 3, 3), (8, 4, 4), (5, 5, 5)].map { (rows: Int, keys: Int, queries: Int) in
            let scale = 0.35
            let scores = rng.normals(rows * keys, scale: 3).map(Double.init)
            let probs = Forward64.causalSoftmax(scores, rows: rows, keys: keys, queries: queries, scale: scale)
            return ParityInstance(
                description: "\(rows) rows x \(keys) keys, \(queries) queries",
                operands: [Operand(shape: [rows, keys], values: probs.map(Float.init)), Operand(shape: [rows, keys], values: rng.normals(rows * keys)),
                           Operand(shape: [rows, keys], values: rng.normals(rows * keys))],
                outputs: [2], run: { try $0.causalSoftmaxBackward($1[0], outputGradient: $1[1], into: $1[2], scale: Float(scale)) },
                reference: { v in
                    [finiteDifferenceGradient(scores) { dot(v[1], Forward64.causalSoftmax($0, rows: rows, keys: keys, queries: queries, scale: scale)) }]
                })
        }
    }

    static let swigluBackwardCase = ParityCase(op: "swiglu_backward (finite differences)", tolerance: 1e-4) { rng in
        [1, 7, 97].map { n in
            ParityInstance(
                description: "n=\(n)",
                operands: [Operand(shape: [n], values: rng.normals(n, scale: 3)), Operand(shape: [n], values: rng.normals(n)),
                           Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n)),
                           Operand(shape: [n], values: rng.normals(n))],
                outputs: [3, 4],
                run: { try $0.swigluBackward(gate: $1[0], up: $1[1], outputGradient: $1[2], gateGradient: $1[3], upGradient: $1[4]) },
                reference: { v in
                    [finiteDifferenceGradient(v[0]) { dot(v[2], Forward64.swiglu($0, v[1])) },
                     finiteDifferenceGradient(v[1]) { dot(v[2], Forward64.swiglu(v[0], $0)) }]
                })
        }
    }

    /// The same with gate and up stored in bf16 (a mixed-precision student's saved SwiGLU inputs):
    /// the reference differentiates at the bf16 values, widened exactly.
    static let swigluBackwardBF16Case = ParityCase(op: "swiglu_backward bf16 gate/up (finite differences)", tolerance: 1e-4) { rng in
        [1, 7, 97].map { n in
            let (gate, up) = (rng.normals(n, scale: 3).map(bf16Rounded), rng.normals(n).map(bf16Rounded))
            return ParityInstance(
                description: "n=\(n)",
                operands: [Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n)),
                           Operand(shape: [n], values: rng.normals(n))],
                rawOperands: [RawOperand(shape: [n], dtype: .bf16, bytes: bf16Bytes(gate)), RawOperand(shape: [n], dtype: .bf16, bytes: bf16Bytes(up))],
                outputs: [1, 2],
                run: { try $0.swigluBackward(gate: $1[3], up: $1[4], outputGradient: $1[0], gateGradient: $1[1], upGradient: $1[2]) },
                reference: { v in
                    let (g, u) = (gate.map(Double.init), up.map(Double.init))
                    return [finiteDifferenceGradient(g) { dot(v[0], Forward64.swiglu($0, u)) },
                            finiteDifferenceGradient(u) { dot(v[0], Forward64.swiglu(g, $0)) }]
                })
        }
    }

    /// A float with its low 16 bits cleared: exactly representable in bf16.
    static func bf16Rounded(_ x: Float) -> Float { Float(bitPattern: x.bitPattern & 0xFFFF_0000) }
    /// bf16 values (exact, from ``bf16Rounded(_:)``) as little-endian 2-byte words.
    static func bf16Bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value -> [UInt8] in let high = UInt16(value.bitPattern >> 16); return [UInt8(high & 0xFF), UInt8(high >> 8)] }
    }

    static let embeddingBackwardCase = ParityCase(op: "embedding_backward", tolerance: 1e-5) { rng in
        [(rows: 5, cols: 3, count: 1), (rows: 50, cols: 64, count: 200), (rows: 7, cols: 9, count: 30)].map { shape in
            let ids = (0..<shape.count).map { _ in Int32.random(in: 0..<Int32(shape.rows), using: &rng) }
            return ParityInstance(
                description: "\(shape.count) ids into \(shape.rows)x\(shape.cols)",
                operands: [Operand(shape: [shape.count, shape.cols], values: rng.normals(shape.count * shape.cols)),
                           Operand(shape: [shape.rows, shape.cols], values: rng.normals(shape.rows * shape.cols))],
                outputs: [1], run: { try $0.embeddingBackward($1[0], tokenIds: ids, into: $1[1]) },
                reference: { v in
                    var table = v[1]
                    for (i, id) in ids.enumerated() { for c in 0..<shape.cols { table[Int(id) * shape.cols + c] += v[0][i * shape.cols + c] } }
                    return [table]
                })
        }
    }

    static let adamwCase = ParityCase(op: "adamw", tolerance: 1e-5) { rng in
        elementCounts.map { n in
            // Every other instance clipped (the gradient read times a factor below 1).
            let scale: Float = Bool.random(using: &rng) ? 1 : Float.random(in: 0.01...0.9, using: &rng)
            let step = AdamWStep(learningRate: 0.01, beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1, step: Int.random(in: 1...50, using: &rng),
                                 gradientScale: scale)
            return ParityInstance(
                description: "n=\(n), step \(step.step), gradient x \(scale)",
                operands: [Operand(shape: [n], values: rng.normals(n)), Operand(shape: [n], values: rng.normals(n)),
                           Operand(shape: [n], values: rng.normals(n, scale: 0.1)), Operand(shape: [n], values: rng.normals(n).map { $0 * $0 * 0.01 })],
                outputs: [0, 2, 3],
                run: { try $0.adamw($1[0], gradient: $1[1], firstMoment: $1[2], secondMoment: $1[3], step) },
                reference: { v in
                    let (b1, b2) = (Double(step.beta1), Double(step.beta2))
                    let g = v[1].map { $0 * Double(scale) }
                    let m = zip(v[2], g).map { b1 * $0 + (1 - b1) * $1 }
                    let s = zip(v[3], g).map { b2 * $0 + (1 - b2) * $1 * $1 }
                    let c1 = 1 - pow(b1, Double(step.step)), c2 = 1 - pow(b2, Double(step.step))
                    let p = v[0].indices.map { i in
                        v[0][i] - Double(step.learningRate) * ((m[i] / c1) / ((s[i] / c2).squareRoot() + Double(step.epsilon)) + Double(step.weightDecay) * v[0][i])
                    }
                    return [p, m, s]
                })
        }
    }
}
