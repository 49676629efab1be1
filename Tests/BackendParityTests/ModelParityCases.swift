import Foundation
import Tensor
import TestSupport

/// An operand of raw bytes (quantized blocks, f16 values or i32 ids), uploaded as it is.
struct RawOperand {
    let shape: [Int]
    let dtype: DType
    let bytes: [UInt8]
}

/// Random GGUF blocks with finite scales: `count` weights of `dtype`, plus their fp64 values decoded
/// from the block layouts in formats.md.
func randomBlocks(_ dtype: DType, count: Int, _ rng: inout SeededRandom) -> (bytes: [UInt8], values: [Double]) {
    func half(_ value: Float) -> [UInt8] {
        let bits = Float16(value).bitPattern
        return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
    }
    func scale() -> Float { Float.random(in: 0.001...0.2, using: &rng) * (Bool.random(using: &rng) ? 1 : -1) }
    var bytes: [UInt8] = []
    var values: [Double] = []
    switch dtype {
    case .f16:
        for _ in 0..<count {
            let v = Float16(rng.normal() * 3)
            bytes += half(Float(v))
            values.append(Double(Float(v)))
        }
    case .q8_0:
        for _ in 0..<(count / 32) {
            let d = Float(Float16(scale()))
            let qs = (0..<32).map { _ in Int8.random(in: -128...127, using: &rng) }
            bytes += half(d) + qs.map { UInt8(bitPattern: $0) }
            values += qs.map { Double($0) * Double(d) }
        }
    case .q4_0, .q4_1:
        for _ in 0..<(count / 32) {
            let d = Float(Float16(scale()))
            let m = Float(Float16(rng.normal() * 0.1))
            let qs = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes += half(d) + (dtype == .q4_1 ? half(m) : []) + qs
            let low = qs.map { Double($0 & 15) }, high = qs.map { Double($0 >> 4) }
            values += dtype == .q4_1 ? (low + high).map { $0 * Double(d) + Double(m) }
                                     : (low + high).map { ($0 - 8) * Double(d) }
        }
    case .bf16:
        // Random bit patterns of finite values (exponent field below 255): the reference decodes the bits by hand.
        for _ in 0..<count {
            let bits = UInt16.random(in: 0...UInt16.max, using: &rng) & 0xBFFF  // exponent's top bit clear: |x| < 2
                | (Bool.random(using: &rng) ? 0x0000 : 0x3000)
            bytes += [UInt8(bits & 0xFF), UInt8(bits >> 8)]
            let sign: Double = bits & 0x8000 != 0 ? -1 : 1
            let exponent = Int((bits >> 7) & 0xFF), mantissa = Double(bits & 0x7F)
            values.append(sign * (exponent == 0 ? mantissa / 128 * pow(2, -126) : (1 + mantissa / 128) * pow(2, Double(exponent - 127))))
        }
    case .f32, .i32:
        preconditionFailure("randomBlocks makes 16-bit and block types")
    }
    return (bytes, values)
}

extension ParityTable {
    /// The llama forward pass's ops.
    static let modelCases: [ParityCase] = dequantizeCases + dequantizeTo16BitCases + gatherCases + [rmsNormCase, ropeCase, causalSoftmaxCase, causalMaskCase, transposeCase, swigluCase]

    static let quantizedTypes: [DType] = [.q8_0, .q4_0, .q4_1, .f16, .bf16]

    static let dequantizeCases: [ParityCase] = quantizedTypes.map { dtype in
        ParityCase(op: "dequantize_\(dtype.rawValue)", tolerance: 1e-6) { rng in
            [32, 96, 32 * 37, 32 * 1000].map { n in
                let blocks = randomBlocks(dtype, count: n, &rng)
                return ParityInstance(description: "n=\(n)", operands: [Operand(shape: [n], values: rng.normals(n))],
                                      rawOperands: [RawOperand(shape: [n], dtype: dtype, bytes: blocks.bytes)], outputs: [0],
                                      run: { backend, t in try backend.dequantize(t[1], into: t[0]) },
                                      reference: { _ in [blocks.values] })
            }
        }
    }

    /// Block types and the other 16-bit type expanded straight to bf16 or f16 (read back through the
    /// exact widening), against the decoded values rounded to that type in fp64: exactly.
    static let dequantizeTo16BitCases: [ParityCase] = sixteenBitFormats.flatMap { format in
        [DType.q8_0, .q4_0, .q4_1, format.dtype == .bf16 ? .f16 : .bf16].map { dtype in (format, dtype) }
    }.map { format, dtype in
        ParityCase(op: "dequantize_\(dtype.rawValue)_to_\(format.dtype.rawValue)", tolerance: 0) { rng in
            [32, 96, 32 * 37, 32 * 1000].map { n in
                let blocks = randomBlocks(dtype, count: n, &rng)
                return ParityInstance(description: "n=\(n)", operands: [Operand(shape: [n], values: rng.normals(n))],
                                      rawOperands: [RawOperand(shape: [n], dtype: dtype, bytes: blocks.bytes)], outputs: [0],
                                      run: { backend, t in
                                          let narrow = try backend.tensor(shape: [n], dtype: format.dtype, label: "expanded")
                                          try backend.dequantize(t[1], into: narrow)
                                          try backend.convert(narrow, into: t[0])
                                      },
                                      reference: { _ in [blocks.values.map { roundToNearestEven($0, significandBits: format.p, minExponent: format.minExponent, maxExponent: format.maxExponent) }] })
            }
        }
    }

    static let gatherCases: [ParityCase] = ([DType.f32] + quantizedTypes).map { dtype in
        ParityCase(op: "get_rows_\(dtype.rawValue)", tolerance: 1e-6) { rng in
            let shapes: [(rows: Int, cols: Int, count: Int)] = [(1, 32, 1), (50, 64, 7), (1000, 576, 33)]
                + ([.f32, .f16, .bf16].contains(dtype) ? [(9, 7, 13)] : [])
            return shapes.map { shape in
                let n = shape.rows * shape.cols
                let table: (bytes: [UInt8], values: [Double])
                if dtype == .f32 {
                    let values = rng.normals(n)
                    table = (values.withUnsafeBytes { Array($0) }, values.map(Double.init))
                } else {
                    table = randomBlocks(dtype, count: n, &rng)
                }
                // Valid ids, plus one below and one past the table: those rows come out as zeros.
                var ids = (0..<shape.count).map { _ in Int32.random(in: 0..<Int32(shape.rows), using: &rng) }
                if shape.count > 2 { ids[0] = -1; ids[1] = Int32(shape.rows) }
                let idBytes = ids.withUnsafeBytes { Array($0) }
                return ParityInstance(
                    description: "table \(shape.rows)x\(shape.cols), \(shape.count) ids", operands: [Operand(shape: [shape.count, shape.cols], values: rng.normals(shape.count * shape.cols))],
                    rawOperands: [RawOperand(shape: [shape.rows, shape.cols], dtype: dtype, bytes: table.bytes),
                                  RawOperand(shape: [shape.count], dtype: .i32, bytes: idBytes)],
                    outputs: [0], run: { backend, t in try backend.gatherRows(t[1], ids: t[2], into: t[0]) },
                    reference: { _ in
                        [ids.flatMap { id -> [Double] in
                            id < 0 || Int(id) >= shape.rows ? Array(repeating: 0, count: shape.cols)
                                : Array(table.values[(Int(id) * shape.cols)..<((Int(id) + 1) * shape.cols)])
                        }]
                    })
            }
        }
    }

    static let rmsNormCase = ParityCase(op: "rms_norm", tolerance: 1e-5) { rng in
        [[1, 1], [3, 17], [41, 576], [2, 1271], [4, 4096]].map { shape in
            let (rows, cols) = (shape[0], shape[1])
            let epsilon: Float = 1e-5
            return ParityInstance(
                description: "\(rows)x\(cols)",
                operands: [Operand(shape: shape, values: rng.normals(rows * cols, scale: 5)), Operand(shape: [cols], values: rng.normals(cols)),
                           Operand(shape: shape, values: rng.normals(rows * cols))],
                outputs: [2], run: { try $0.rmsNorm($1[0], weight: $1[1], epsilon: epsilon, into: $1[2]) },
                reference: { inputs in
                    let (x, w) = (inputs[0], inputs[1])
                    var y = [Double](repeating: 0, count: rows * cols)
                    for r in 0..<rows {
                        let row = x[(r * cols)..<((r + 1) * cols)]
                        let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(cols) + Double(epsilon)).squareRoot()
                        for c in 0..<cols { y[r * cols + c] = x[r * cols + c] * scale * w[c] }
                    }
                    return [y]
                })
        }
    }

    static let ropeCase = ParityCase(op: "rope", tolerance: 1e-5) { rng in
        var instances: [ParityInstance] = []
        // The last: 131150 pairs, which the CPU backend splits into chunks (of 65536 or more) that cut a
        // head row inside its rotated pairs (pair 5 of 10, 6 rotated).
        let shapes: [(tokens: Int, heads: Int, headDim: Int, rotated: Int)] = [(1, 1, 2, 2), (7, 3, 8, 8), (5, 9, 64, 64), (4, 2, 16, 8), (2623, 5, 20, 12)]
        for shape in shapes {
            for layout in [RoPE.PairLayout.adjacent, .halves] {
                for inverse in [false, true] {
                    let rope = RoPE(heads: shape.heads, headDimension: shape.headDim, rotatedDimensions: shape.rotated,
                                    base: [10000, 100000][Int.random(in: 0..<2, using: &rng)], layout: layout, inverse: inverse)
                    let positions = (0..<shape.tokens).map { _ in Int32.random(in: 0..<4096, using: &rng) }
                    let n = shape.tokens * shape.heads * shape.headDim
                    instances.append(ParityInstance(
                        description: "\(shape.tokens) tokens x \(shape.heads) heads x \(shape.headDim) (\(shape.rotated) rotated), \(layout)\(inverse ? ", inverse" : ""), base \(rope.base)",
                        operands: [Operand(shape: [shape.tokens, shape.heads * shape.headDim], values: rng.normals(n)),
                                   Operand(shape: [shape.tokens, shape.heads * shape.headDim], values: rng.normals(n))],
                        outputs: [1], run: { try $0.rope($1[0], positions: positions, into: $1[1], rope) },
                        reference: { inputs in [referenceRoPE(inputs[0], positions: positions, rope)] }))
                }
            }
        }
        return instances
    }

    /// fp64 rotary embedding, written from the formula: pair i turns by pos * base^(-2i/d).
    static func referenceRoPE(_ x: [Double], positions: [Int32], _ rope: RoPE) -> [Double] {
        var y = x
        let d = rope.headDimension, rotated = rope.rotatedDimensions
        for (token, position) in positions.enumerated() {
            for head in 0..<rope.heads {
                let base = (token * rope.heads + head) * d
                for i in 0..<(rotated / 2) {
                    let theta = Double(position) * pow(Double(rope.base), -2 * Double(i) / Double(rotated)) * (rope.inverse ? -1 : 1)
                    let (i0, i1) = rope.layout == .halves ? (i, i + rotated / 2) : (2 * i, 2 * i + 1)
                    let (a, b) = (x[base + i0], x[base + i1])
                    y[base + i0] = a * cos(theta) - b * sin(theta)
                    y[base + i1] = a * sin(theta) + b * cos(theta)
                }
            }
        }
        return y
    }

    /// Causal softmax, plain and with key starts (left-padded sequences: one start per block of rows,
    /// some past every key a row sees, so whole rows come out zero); some scores -inf.
    static let causalSoftmaxCase = ParityCase(op: "causal_softmax", tolerance: 1e-5) { rng in
        let shapes: [(blocks: Int, queries: Int, keys: Int, keyOffset: Int, starts: Int)] = [
            (1, 1, 1, 0, 0), (1, 5, 5, 0, 0), (3, 3, 9, 6, 0), (6, 64, 64, 0, 0), (2, 1, 300, 299, 0), (3, 17, 40, 23, 0),
            (4, 7, 7, 0, 4), (6, 3, 20, 9, 2), (3, 1, 33, 32, 3), (2, 5, 96, 40, 1),
        ]
        return shapes.map { shape in
            let rows = shape.blocks * shape.queries
            let scale = 1 / Float(64).squareRoot()
            var scores = rng.normals(rows * shape.keys, scale: 30)
            for i in stride(from: 3, to: scores.count, by: 11) { scores[i] = -.infinity }
            let starts = (0..<shape.starts).map { _ in Int32.random(in: 0...Int32(shape.keys + 1), using: &rng) }
            let rowsPerStart = shape.starts > 0 ? rows / shape.starts : rows
            return ParityInstance(
                description: "\(rows) rows (\(shape.queries) queries) x \(shape.keys) keys from \(shape.keyOffset)"
                    + (starts.isEmpty ? "" : ", key starts \(starts)"),
                operands: [Operand(shape: [rows, shape.keys], values: scores), Operand(shape: [rows, shape.keys], values: rng.normals(rows * shape.keys))],
                rawOperands: starts.isEmpty ? [] : [RawOperand(shape: [starts.count], dtype: .i32, bytes: starts.withUnsafeBytes { Array($0) })],
                outputs: [1],
                run: { try $0.causalSoftmax($1[0], into: $1[1], queries: shape.queries, keyOffset: shape.keyOffset,
                                            keyStarts: starts.isEmpty ? nil : $1[2], scale: scale) },
                reference: { inputs in
                    var probs = [Double](repeating: 0, count: rows * shape.keys)
                    for r in 0..<rows {
                        let first = starts.isEmpty ? 0 : min(shape.keys, Int(starts[r / rowsPerStart]))
                        let end = min(shape.keys, r % shape.queries + shape.keyOffset + 1)
                        guard first < end else { continue }
                        let row = inputs[0][(r * shape.keys + first)..<(r * shape.keys + end)].map { $0 * Double(scale) }
                        let m = row.max()!
                        guard m > -.infinity else { continue }
                        let total = row.reduce(0) { $0 + exp($1 - m) }
                        for (j, value) in row.enumerated() { probs[r * shape.keys + first + j] = exp(value - m) / total }
                    }
                    return [probs]
                })
        }
    }

    /// The attention-alignment masking: -inf (and a finite value) past each query's position.
    static let causalMaskCase = ParityCase(op: "causal_mask", tolerance: 0) { rng in
        let shapes: [(blocks: Int, queries: Int, keys: Int, keyOffset: Int, value: Float)] = [
            (1, 1, 1, 0, -.infinity), (1, 5, 5, 0, -.infinity), (3, 3, 9, 6, 7.5), (6, 64, 64, 0, -.infinity), (2, 1, 300, 299, 0),
            (3, 17, 40, 23, -.infinity), (2, 37, 37, 0, -.infinity),
        ]
        return shapes.map { shape in
            let rows = shape.blocks * shape.queries
            return ParityInstance(
                description: "\(rows) rows (\(shape.queries) queries) x \(shape.keys) keys from \(shape.keyOffset), value \(shape.value)",
                operands: [Operand(shape: [rows, shape.keys], values: rng.normals(rows * shape.keys, scale: 10))],
                outputs: [0],
                run: { try $0.causalMask($1[0], queries: shape.queries, keyOffset: shape.keyOffset, value: shape.value) },
                reference: { inputs in
                    [inputs[0].enumerated().map { i, x in
                        i % shape.keys > (i / shape.keys) % shape.queries + shape.keyOffset ? Double(shape.value) : x
                    }]
                })
        }
    }

    static let transposeCase = ParityCase(op: "transpose_12", tolerance: 0) { rng in
        [[1, 1, 1, 1], [2, 3, 5, 7], [3, 4, 5, 19], [2, 17, 9, 64], [1, 256, 3, 64]].map { s in
            let n = s.reduce(1, *)
            return ParityInstance(
                description: describeShape(s),
                operands: [Operand(shape: s, values: rng.normals(n)), Operand(shape: [s[0], s[2], s[1], s[3]], values: rng.normals(n))],
                outputs: [1], run: { try $0.transpose12($1[0], into: $1[1]) },
                reference: { inputs in
                    var y = [Double](repeating: 0, count: n)
                    for a in 0..<s[0] { for b in 0..<s[1] { for c in 0..<s[2] { for d in 0..<s[3] {
                        y[((a * s[2] + c) * s[1] + b) * s[3] + d] = inputs[0][((a * s[1] + b) * s[2] + c) * s[3] + d]
                    } } } }
                    return [y]
                })
        }
    }

    static let swigluCase = ParityCase(op: "swiglu", tolerance: 1e-5) { rng in
        elementCounts.map { n in
            ParityInstance(
                description: "n=\(n)",
                operands: [Operand(shape: [n], values: rng.normals(n, scale: 4)), Operand(shape: [n], values: rng.normals(n)),
                           Operand(shape: [n], values: rng.normals(n))],
                outputs: [2], run: { try $0.swiglu(gate: $1[0], up: $1[1], into: $1[2]) },
                reference: { inputs in [zip(inputs[0], inputs[1]).map { g, u in g / (1 + exp(-g)) * u }] })
        }
    }
}
