import Foundation
import Tensor

/// CPU twins of backward.cl (and rows.cl's row_sum_squares).
extension CPUKernels {
    /// out[r] = sum_j x[r, j]^2
    public static func row_sum_squares(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, cols: Int, _ rows: Range<Int>) {
        for r in rows { out[r] = rowSumOfSquares(x + r * cols, cols) }
    }

    /// dx = rstd * w * dy - x * rstd^3 * sum(w * dy * x) / C per row (written); rstd[r] written.
    public static func rms_norm_backward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                         _ dx: UnsafeMutablePointer<Float>, _ rstdOut: UnsafeMutablePointer<Float>, cols: Int,
                                         eps: Float, _ rows: Range<Int>) {
        for r in rows {
            let xr = x + r * cols, dyr = dy + r * cols, dxr = dx + r * cols
            var squares: Float = 0, dot: Float = 0
            for j in 0..<cols {
                squares += xr[j] * xr[j]
                dot += w[j] * dyr[j] * xr[j]
            }
            let rstd = 1 / (squares / Float(cols) + eps).squareRoot()
            let correction = dot * rstd * rstd * rstd / Float(cols)
            for j in 0..<cols { dxr[j] = rstd * w[j] * dyr[j] - xr[j] * correction }
            rstdOut[r] = rstd
        }
    }

    /// dw[c] += sum_r dy[r, c] * x[r, c] * rstd[r], for c in `columns`.
    public static func rms_norm_backward_weight(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                                                _ dw: UnsafeMutablePointer<Float>, rows: Int, cols: Int, _ columns: Range<Int>) {
        for c in columns {
            var sum: Float = 0
            for r in 0..<rows { sum += dy[r * cols + c] * x[r * cols + c] * rstd[r] }
            dw[c] += sum
        }
    }

    /// ds = scale * p * (dp - sum_j p dp) per row (written; ds may be dp).
    public static func causal_softmax_backward(_ p: UnsafePointer<Float>, _ dp: UnsafePointer<Float>, _ ds: UnsafeMutablePointer<Float>,
                                               keys: Int, scale: Float, _ rows: Range<Int>) {
        for r in rows {
            let pr = p + r * keys, dpr = dp + r * keys, dsr = ds + r * keys
            var total: Float = 0
            for j in 0..<keys { total += pr[j] * dpr[j] }
            for j in 0..<keys { dsr[j] = scale * pr[j] * (dpr[j] - total) }
        }
    }

    /// dgate = dout * up * s * (1 + gate * (1 - s)), dup = dout * gate * s, s = sigmoid(gate) (written).
    public static func swiglu_backward(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ dout: UnsafePointer<Float>,
                                       _ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        forEachLanes(range) { i, count in
            let g = loadLanes(gate + i, count: count), s = laneSigmoid(g), d = loadLanes(dout + i, count: count)
            storeLanes(d * loadLanes(up + i, count: count) * s * (1 + g * (1 - s)), dgate + i, count: count)
            storeLanes(d * g * s, dup + i, count: count)
        }
    }

    /// As ``swiglu_backward(_:_:_:_:_:_:)`` with gate and up as bf16 bits, widened exactly.
    public static func swiglu_backward_bf16(_ gate: UnsafeRawPointer, _ up: UnsafeRawPointer, _ dout: UnsafePointer<Float>,
                                            _ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        forEachLanes(range) { i, count in
            let g = loadBFloat16Lanes(gate, i, count: count), u = loadBFloat16Lanes(up, i, count: count)
            let s = laneSigmoid(g), d = loadLanes(dout + i, count: count)
            storeLanes(d * u * s * (1 + g * (1 - s)), dgate + i, count: count)
            storeLanes(d * g * s, dup + i, count: count)
        }
    }

    /// dtable[ids[u], :] += sum of dx rows positions[offsets[u] ..< offsets[u + 1]], for u in `unique`.
    public static func embedding_backward(_ dx: UnsafePointer<Float>, _ ids: UnsafePointer<Int32>, _ offsets: UnsafePointer<Int32>,
                                          _ positions: UnsafePointer<Int32>, _ dtable: UnsafeMutablePointer<Float>, cols: Int,
                                          _ unique: Range<Int>) {
        for u in unique {
            let row = dtable + Int(ids[u]) * cols
            for k in Int(offsets[u])..<Int(offsets[u + 1]) {
                let source = dx + Int(positions[k]) * cols
                for c in 0..<cols { row[c] += source[c] }
            }
        }
    }

    /// AdamW, as adamw in backward.cl.
    public static func adamw(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                             _ v: UnsafeMutablePointer<Float>, lr: Float, b1: Float, b2: Float, eps: Float, wd: Float,
                             c1: Float, c2: Float, gs: Float, _ range: Range<Int>) {
        // 16 lanes at a time (the compiler leaves the plain loop scalar; this form vectorizes, square roots
        // included under the target's -fno-math-errno: 2.6x on 8.4M parameters here), each lane the same
        // operations in the same order, so the same bits; then the rest one by one.
        typealias Lanes = SIMD16<Float>
        var i = range.lowerBound
        while i + Lanes.scalarCount <= range.upperBound {
            let grad = UnsafeRawPointer(g + i).loadUnaligned(as: Lanes.self) * gs
            let mi = b1 * UnsafeRawPointer(m + i).loadUnaligned(as: Lanes.self) + (1 - b1) * grad
            let vi = b2 * UnsafeRawPointer(v + i).loadUnaligned(as: Lanes.self) + (1 - b2) * grad * grad
            UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: Lanes.self)
            UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: Lanes.self)
            let param = UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self)
            let updated = param - lr * ((mi / c1) / ((vi / c2).squareRoot() + eps) + wd * param)
            UnsafeMutableRawPointer(p + i).storeBytes(of: updated, as: Lanes.self)
            i += Lanes.scalarCount
        }
        for i in i..<range.upperBound {
            let grad = g[i] * gs
            let mi = b1 * m[i] + (1 - b1) * grad
            let vi = b2 * v[i] + (1 - b2) * grad * grad
            m[i] = mi
            v[i] = vi
            p[i] -= lr * ((mi / c1) / ((vi / c2).squareRoot() + eps) + wd * p[i])
        }
    }
}
