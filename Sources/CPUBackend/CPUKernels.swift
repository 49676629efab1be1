import Foundation

/// The CPU twins of the OpenCL kernels in `Kernels/`.
///
/// Each function has the same name, arguments and math as the `__kernel` of the same name, and
/// processes a range of rows or elements; ``CPUBackend`` spreads ranges over the cores. Names are
/// kept in the kernels' snake_case on purpose, so `grep softmax_rows` finds both twins.
public enum CPUKernels {
    // MARK: elementwise.cl

    /// x[i] = value
    public static func fill_f32(_ x: UnsafeMutablePointer<Float>, _ value: Float, _ range: Range<Int>) {
        (x + range.lowerBound).update(repeating: value, count: range.count)
    }

    /// y[i] = x[i]
    public static func copy_f32(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        (y + range.lowerBound).update(from: x + range.lowerBound, count: range.count)
    }

    /// out[i] = a[i] + b[i]
    public static func add_f32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                               _ range: Range<Int>) {
        for i in range { out[i] = a[i] + b[i] }
    }

    /// out[i] = a[i] * b[i]
    public static func mul_f32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                               _ range: Range<Int>) {
        for i in range { out[i] = a[i] * b[i] }
    }

    /// out[i] = alpha * x[i]
    public static func scale_f32(_ x: UnsafePointer<Float>, _ alpha: Float, _ out: UnsafeMutablePointer<Float>,
                                 _ range: Range<Int>) {
        for i in range { out[i] = alpha * x[i] }
    }

    /// y[i] += alpha * x[i]
    public static func axpy_f32(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                _ range: Range<Int>) {
        for i in range { y[i] += alpha * x[i] }
    }

    /// dst[r, column + c] = src[r, c] for src [rows, cols] inside dst [rows, dstCols].
    public static func copy_columns_f32(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, cols: Int, dstCols: Int,
                                        column: Int, _ rows: Range<Int>) {
        for r in rows { (dst + r * dstCols + column).update(from: src + r * cols, count: cols) }
    }

    // MARK: rows.cl  (x is [rows, cols], row-major)

    /// out[r] = max_j x[r, j]; -inf for an all -inf row.
    public static func row_max(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, cols: Int, _ rows: Range<Int>) {
        for r in rows { out[r] = rowMaximum(x + r * cols, cols) }
    }

    /// out[r] = sum_j x[r, j]
    public static func row_sum(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, cols: Int, _ rows: Range<Int>) {
        for r in rows { out[r] = rowTotal(x + r * cols, cols) }
    }

    /// y[r, :] = softmax(x[r, :] / T). An all -inf row gives zeros.
    public static func softmax_rows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, cols: Int,
                                    inverseTemperature: Float, _ rows: Range<Int>) {
        for r in rows {
            let xr = x + r * cols, yr = y + r * cols
            let m = rowMaximum(xr, cols)
            if m == -.infinity {
                yr.update(repeating: 0, count: cols)
                continue
            }
            // The exps in 16 lanes (the kernels' polynomial, not a libm call per element), summed as written.
            var sum = SIMD16<Float>(repeating: 0)
            forEachLanes(0..<cols) { j, count in
                let e = kdExp((loadLanes(xr + j, count: count) - m) * inverseTemperature)
                storeLanes(e, yr + j, count: count)
                sum += firstLanes(e, count)
            }
            let inverseSum = 1 / sum.sum()
            for j in 0..<cols { yr[j] *= inverseSum }
        }
    }

    /// y[r, :] = log softmax(x[r, :] / T). An all -inf row gives -inf.
    public static func log_softmax_rows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, cols: Int,
                                        inverseTemperature: Float, _ rows: Range<Int>) {
        for r in rows {
            let xr = x + r * cols, yr = y + r * cols
            let m = rowMaximum(xr, cols)
            if m == -.infinity {
                yr.update(repeating: -.infinity, count: cols)
                continue
            }
            // y may be x: sum without writing, in 16 lanes like the kernel's float16 loads.
            let logSum = logf(rowSumExp(xr, cols, shift: m, scale: inverseTemperature))
            for j in 0..<cols { yr[j] = (xr[j] - m) * inverseTemperature - logSum }
        }
    }

    // MARK: shared row helpers (16 lanes, like the kernels' float16 loads)

    @inline(__always)
    static func rowMaximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var lanes = SIMD16<Float>(repeating: -.infinity)
        var j = 0
        while j + 16 <= n {
            // A compare and blend: the standard library's pointwiseMax does not vectorize (~20x slower).
            let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD16<Float>.self)
            lanes = lanes.replacing(with: v, where: v .> lanes)
            j += 16
        }
        var m = lanes.max()
        while j < n {
            m = max(m, x[j])
            j += 1
        }
        return m
    }

    /// sum_j x[j]^2, accumulated in 16 lanes.
    @inline(__always)
    static func rowSumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        var j = 0
        while j + 16 <= n {
            let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD16<Float>.self)
            lanes += v * v
            j += 16
        }
        var s = lanes.sum()
        while j < n {
            s += x[j] * x[j]
            j += 1
        }
        return s
    }

    /// sum_j exp((x[j] - shift) * scale), accumulated in 16 lanes.
    @inline(__always)
    static func rowSumExp(_ x: UnsafePointer<Float>, _ n: Int, shift: Float, scale: Float) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        forEachLanes(0..<n) { j, count in
            let e = kdExp((loadLanes(x + j, count: count) - shift) * scale)
            lanes += firstLanes(e, count)
        }
        return lanes.sum()
    }

    /// `lanes` with the lanes from `count` on zeroed (a row's last, short run of lanes, whose loads
    /// filled them with 0, which an exp would not leave 0).
    @inline(__always)
    static func firstLanes(_ lanes: SIMD16<Float>, _ count: Int) -> SIMD16<Float> {
        count == 16 ? lanes : lanes.replacing(with: 0, where: laneIndices .>= Int32(count))
    }

    /// 0, 1, ..., 15.
    static let laneIndices = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    @inline(__always)
    static func rowTotal(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var lanes = SIMD16<Float>(repeating: 0)
        var j = 0
        while j + 16 <= n {
            lanes += UnsafeRawPointer(x + j).loadUnaligned(as: SIMD16<Float>.self)
            j += 16
        }
        var s = lanes.sum()
        while j < n {
            s += x[j]
            j += 1
        }
        return s
    }
}
