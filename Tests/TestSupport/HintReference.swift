import Foundation

/// The hidden-state hint losses in fp64, written apart from the kernels (`Kernels/hint_loss.cl`):
/// the loss of each row of s [rows, cols] against t [rows, cols] and its derivative by s.
///   mse:    mean_j (s_j - t_j)^2
///   cosine: 1 - s.t / (max(|s|, eps) max(|t|, eps)), eps = 1e-8
public enum HintReference {
    public static let epsilon = 1e-8

    public static func rowLosses(_ s: [Double], _ t: [Double], rows: Int, cols: Int, cosine: Bool) -> [Double] {
        (0..<rows).map { r in
            let (sr, tr) = (row(s, r, cols), row(t, r, cols))
            if !cosine { return zip(sr, tr).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(cols) }
            let dot = zip(sr, tr).reduce(0) { $0 + $1.0 * $1.1 }
            return 1 - dot / (max(norm(sr), epsilon) * max(norm(tr), epsilon))
        }
    }

    /// d(row loss)/ds, row by row, `[rows, cols]`.
    public static func rowLossGradients(_ s: [Double], _ t: [Double], rows: Int, cols: Int, cosine: Bool) -> [Double] {
        (0..<rows).flatMap { r -> [Double] in
            let (sr, tr) = (row(s, r, cols), row(t, r, cols))
            if !cosine { return zip(sr, tr).map { 2 * ($0 - $1) / Double(cols) } }
            // cos = s.t / (|s|_e |t|_e). Where |s| > eps: d cos/ds = (t / |t|_e - cos s / |s|) / |s|;
            // at or below eps |s|_e is the constant eps: d cos/ds = t / (eps |t|_e).
            let (normS, normT) = (norm(sr), max(norm(tr), epsilon))
            let cos = zip(sr, tr).reduce(0) { $0 + $1.0 * $1.1 } / (max(normS, epsilon) * normT)
            if normS <= epsilon { return tr.map { -$0 / (epsilon * normT) } }
            return zip(sr, tr).map { -($1 / normT - cos * $0 / normS) / normS }
        }
    }

    static func row(_ x: [Double], _ r: Int, _ cols: Int) -> ArraySlice<Double> { x[(r * cols)..<((r + 1) * cols)] }

    static func norm(_ x: ArraySlice<Double>) -> Double { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}
