import Tensor

/// exp and log polynomials over 16 lanes, the same as `kd_exp2` / `kd_exp` in `Kernels/common.cl` and
/// `kd_log1p_unit` / `kd_logaddexp` in `Kernels/distill_loss.cl` (Cephes expf / logf), so the CPU twins
/// do the same math as the kernels.
typealias Float16Lanes = SIMD16<Float>

/// 2^x for x <= 127: below 2^-126 exactly 0 (so -inf gives 0), relative error below 2e-7, NaN
/// stays NaN. Round-to-nearest by adding 1.5 * 2^23 + 127, whose low mantissa bits then hold the
/// biased exponent n + 127 (one shift by 23 makes 2^n), then 2^r = 1 + r q(r) with a near-minimax
/// quartic q; x is clamped at -127, so the biased exponent is never negative.
@inline(__always)
func kdExp2(_ x0: Float16Lanes) -> Float16Lanes {
    let x = x0.replacing(with: -127, where: x0 .< -127)
    let t = x + 12_583_039
    let r = x - (t - 12_583_039)
    var y = Float16Lanes(repeating: 1.326138386502862e-3)
    y = y * r + 9.671514853835106e-3
    y = y * r + 5.550745129585266e-2
    y = y * r + 2.4022242426872253e-1
    y = y * r + 6.931469440460205e-1
    y = y * r + 1
    return y * unsafeBitCast(unsafeBitCast(t, to: SIMD16<Int32>.self) &<< 23, to: Float16Lanes.self)
}

let log2e: Float = 1.44269504088896341
let ln2: Float = 0.693147180559945309

/// e^x for x <= 88.
@inline(__always)
func kdExp(_ x: Float16Lanes) -> Float16Lanes { kdExp2(x * log2e) }

/// e^x for arguments that may exceed 88 (mixture ratios): clamped there.
@inline(__always)
func kdExpBounded(_ x: Float16Lanes) -> Float16Lanes { kdExp(x.replacing(with: 88, where: x .> 88)) }

/// log(1 + u) for u in [0, 1], to full precision for small u.
@inline(__always)
func kdLog1pUnit(_ u: Float16Lanes) -> Float16Lanes {
    let w = 1 + u
    let big = w .> 1.41421356
    let e = Float16Lanes(repeating: 0).replacing(with: 1, where: big)
    let m = w.replacing(with: w * 0.5, where: big)
    let x = m - 1
    let z = x * x
    var y = Float16Lanes(repeating: 7.0376836292E-2)
    y = y * x - 1.1514610310E-1
    y = y * x + 1.1676998740E-1
    y = y * x - 1.2420140846E-1
    y = y * x + 1.4249322787E-1
    y = y * x - 1.6668057665E-1
    y = y * x + 2.0000714765E-1
    y = y * x - 2.4999993993E-1
    y = y * x + 3.3333331174E-1
    y = y * x * z
    y = y - 2.12194440e-4 * e - 0.5 * z
    return x + y + 0.693359375 * e + (u - (w - 1)) / w
}

/// log(e^x + e^y); -inf when both are -inf.
@inline(__always)
func kdLogAddExp(_ x: Float16Lanes, _ y: Float16Lanes) -> Float16Lanes {
    let mx = lanesMax(x, y)
    let r = mx + kdLog1pUnit(kdExp(-abs(x - y)))
    return r.replacing(with: -.infinity, where: mx .== -.infinity)
}

/// max(a, b) per lane, b where a is NaN (like OpenCL's fmax for a NaN first argument). Written with
/// a compare and blend: the standard library's pointwiseMax does not vectorize (7 ns per lane).
@inline(__always)
func lanesMax(_ a: Float16Lanes, _ b: Float16Lanes) -> Float16Lanes {
    b.replacing(with: a, where: a .> b)
}

/// -1, 0 or 1 per lane.
@inline(__always)
func laneSign(_ x: Float16Lanes) -> Float16Lanes {
    Float16Lanes(repeating: 0).replacing(with: 1, where: x .> 0).replacing(with: -1, where: x .< 0)
}

@inline(__always)
func abs(_ x: Float16Lanes) -> Float16Lanes {
    unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: Float16Lanes.self)
}

/// Lane v of a row of n floats; lanes past n read as -inf (zero probability), like the kernels' load_row.
@inline(__always)
func loadRow(_ row: UnsafePointer<Float>, _ v: Int, _ n: Int) -> Float16Lanes {
    let base = v &* 16
    if base &+ 16 <= n { return UnsafeRawPointer(row + base).loadUnaligned(as: Float16Lanes.self) }
    var t = Float16Lanes(repeating: -.infinity)
    for i in 0..<(n - base) { t[i] = row[base + i] }
    return t
}

@inline(__always)
func storeRow(_ value: Float16Lanes, _ row: UnsafeMutablePointer<Float>, _ v: Int, _ n: Int) {
    let base = v &* 16
    if base &+ 16 <= n {
        UnsafeMutableRawPointer(row + base).storeBytes(of: value, as: Float16Lanes.self)
        return
    }
    for i in 0..<(n - base) { row[base + i] = value[i] }
}

/// Full 16-lane load/store of a scratch row padded to a multiple of 16.
@inline(__always)
func loadLanes(_ row: UnsafePointer<Float>, _ v: Int) -> Float16Lanes {
    UnsafeRawPointer(row + v &* 16).loadUnaligned(as: Float16Lanes.self)
}

@inline(__always)
func storeLanes(_ value: Float16Lanes, _ row: UnsafeMutablePointer<Float>, _ v: Int) {
    UnsafeMutableRawPointer(row + v &* 16).storeBytes(of: value, as: Float16Lanes.self)
}

/// 1 / (1 + e^-x) per lane (``kdExpBounded``: 0 at -inf, 1 at +inf, NaN stays NaN).
@inline(__always)
func laneSigmoid(_ x: Float16Lanes) -> Float16Lanes { 1 / (1 + kdExpBounded(-x)) }

/// `body(i, count)` over `range` in runs of 16 elements (count 16, the last run shorter), so an
/// element-wise kernel written on lanes does the same math on every element however its range is split.
@inline(__always)
func forEachLanes(_ range: Range<Int>, _ body: (Int, Int) -> Void) {
    var i = range.lowerBound
    while i < range.upperBound {
        let count = min(16, range.upperBound - i)
        body(i, count)
        i += count
    }
}

/// `count` (at most 16) floats at `p` as lanes, the rest 0: a full load when `count` is 16.
@inline(__always)
func loadLanes(_ p: UnsafePointer<Float>, count: Int) -> Float16Lanes {
    if count == 16 { return UnsafeRawPointer(p).loadUnaligned(as: Float16Lanes.self) }
    var lanes = Float16Lanes(repeating: 0)
    for k in 0..<count { lanes[k] = p[k] }
    return lanes
}

/// `count` (at most 16) bf16 values from element `i` of `base` widened exactly to lanes, the rest 0:
/// one 16-bit vector load shifted into the high halves when `count` is 16.
@inline(__always)
func loadBFloat16Lanes(_ base: UnsafeRawPointer, _ i: Int, count: Int) -> Float16Lanes {
    if count == 16 {
        let bits = SIMD16<UInt32>(truncatingIfNeeded: (base + 2 * i).loadUnaligned(as: SIMD16<UInt16>.self)) &<< 16
        return unsafeBitCast(bits, to: Float16Lanes.self)
    }
    var lanes = Float16Lanes(repeating: 0)
    for k in 0..<count { lanes[k] = BlockFormat.bfloat16(base, i + k) }
    return lanes
}

/// The first `count` (at most 16) lanes to `p`.
@inline(__always)
func storeLanes(_ value: Float16Lanes, _ p: UnsafeMutablePointer<Float>, count: Int) {
    if count == 16 { UnsafeMutableRawPointer(p).storeBytes(of: value, as: Float16Lanes.self); return }
    for k in 0..<count { p[k] = value[k] }
}

