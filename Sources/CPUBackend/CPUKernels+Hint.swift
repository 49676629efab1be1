import Tensor
import Foundation

/// CPU twin of `Kernels/hint_loss.cl`: same name, same passes, 16 lanes per vector; the rows of
/// `rows` run one after another (``CPUBackend`` spreads ranges of rows over the cores).
extension CPUKernels {
    /// The hint loss of each row of `rows`, and with `gradient` set, `gradScale * d(row loss)/d student`.
    ///
    /// - Parameters:
    ///   - student: `[rows, cols]`, projected to the teacher's width.
    ///   - teacher: `[rows, cols]`.
    ///   - rowLoss: `[rows]`, written.
    ///   - gradient: `[rows, cols]`, written; memory apart from `student` and `teacher`.
    ///   - kind: ``HintKernelKind``: mse (mean over `cols` of the squared difference) or cosine
    ///     (`1 - s.t / (max(|s|, 1e-8) max(|t|, 1e-8))`); the gradients are in the kernel file.
    public static func hint_loss_rows(_ student: UnsafePointer<Float>, _ teacher: UnsafePointer<Float>,
                                      _ rowLoss: UnsafeMutablePointer<Float>, _ gradient: UnsafeMutablePointer<Float>?,
                                      cols: Int, kind: Int32, gradScale: Float, _ rows: Range<Int>) {
        let vectors = cols / 16
        let zero = Float16Lanes(repeating: 0)
        for row in rows {
            let sr = student + row * cols, tr = teacher + row * cols
            let dr = gradient.map { $0 + row * cols }
            if kind == HintKernelKind.mse {
                // Pass 1: sum d^2, and the gradient on the way.
                let k = gradScale * 2 / Float(cols)
                var squares = zero
                for v in 0..<vectors {
                    let d = loadLanes(sr, v) - loadLanes(tr, v)
                    squares += d * d
                    if let dr { storeLanes(k * d, dr, v) }
                }
                var total = squares.sum()
                for j in (vectors * 16)..<cols {
                    let d = sr[j] - tr[j]
                    total += d * d
                    dr?[j] = k * d
                }
                rowLoss[row] = total / Float(cols)
            } else {
                // Pass 1: s.s, t.t, s.t.
                var ss = zero, tt = zero, st = zero
                for v in 0..<vectors {
                    let a = loadLanes(sr, v), b = loadLanes(tr, v)
                    ss += a * a
                    tt += b * b
                    st += a * b
                }
                var (sumSS, sumTT, sumST) = (ss.sum(), tt.sum(), st.sum())
                for j in (vectors * 16)..<cols {
                    let (a, b) = (sr[j], tr[j])
                    sumSS += a * a
                    sumTT += b * b
                    sumST += a * b
                }
                // Pass 2: the gradient; divisions one norm at a time (|s|_e |t|_e may overflow).
                // Float.maximum, like OpenCL's fmax, picks the number over a NaN.
                let normS = Float.maximum(sumSS.squareRoot(), hintNormEpsilon)
                let normT = Float.maximum(sumTT.squareRoot(), hintNormEpsilon)
                let finite = sumSS.isFinite && sumTT.isFinite && sumST.isFinite
                let cosine = finite ? sumST / normS / normT : .nan
                rowLoss[row] = 1 - cosine
                guard let dr else { continue }
                let ks: Float = normS > hintNormEpsilon ? gradScale * cosine / normS / normS : 0
                let kt = gradScale / normS / normT
                for v in 0..<vectors { storeLanes(ks * loadLanes(sr, v) - kt * loadLanes(tr, v), dr, v) }
                for j in (vectors * 16)..<cols { dr[j] = ks * sr[j] - kt * tr[j] }
            }
        }
    }
}
