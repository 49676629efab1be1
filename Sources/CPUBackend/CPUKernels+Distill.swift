import Tensor
import Foundation

/// The arguments of `distill_loss_rows` (Kernels/distill_loss.cl) as host pointers, offsets applied.
/// `zs` and `dz` may be the same memory (in place).
public struct DistillRowArguments {
    public var zs: UnsafePointer<Float>
    public var zt: UnsafePointer<Float>?
    public var teacherStride: Int
    public var topKIDs: UnsafePointer<Float>?
    public var topKValues: UnsafePointer<Float>?
    public var k: Int
    /// `[n]` log-weights of the prior tail (read with `topKPrior`).
    public var tailPrior: UnsafePointer<Float>?
    public var labels: UnsafePointer<Float>?
    public var mask: UnsafePointer<Float>?
    public var dz: UnsafeMutablePointer<Float>
    public var rowLoss: UnsafeMutablePointer<Float>
    public var rowStatus: UnsafeMutablePointer<Float>
    /// Each row's hard-label cross-entropy (written when the flags have `hard`, else 0).
    public var rowCrossEntropy: UnsafeMutablePointer<Float>
    public var validCount: Float
    /// `[groups, 4, Vp]`, Vp = V rounded up to 16.
    public var scratch: UnsafeMutablePointer<Float>
    public var rows: Int
    public var n: Int
    public var kind: Int32
    public var flags: Int32
    public var ignoreIndex: Int
    public var inverseTemperature: Float
    public var parameter: Float
    public var taid: Float
    public var softWeight: Float
    public var hardWeight: Float
    public var gradOutput: Float
}

/// CPU twins of `Kernels/distill_loss.cl` and `Kernels/loss_baseline.cl`: same names, same passes,
/// same exp/log polynomials, 16 lanes; one "work-group" is one thread walking rows group, group + groups, ...
extension CPUKernels {
    static func rowIsValid(_ row: Int, _ flags: Int32, _ labels: UnsafePointer<Float>?, _ mask: UnsafePointer<Float>?,
                           _ ignoreIndex: Int) -> Bool {
        var valid = true
        if flags & DistillFlags.mask != 0, let mask { valid = mask[row] != 0 }
        if flags & DistillFlags.labels != 0, let labels { valid = valid && Int(labels[row]) != ignoreIndex }
        return valid
    }

    /// A row's validity, its status so far (ignored, or a label outside the vocabulary) and its
    /// label (-1 without hard labels), as the kernels' row loops begin.
    static func rowStart(_ a: DistillRowArguments, _ row: Int, hard: Bool) -> (valid: Bool, status: Int, label: Int) {
        let valid = rowIsValid(row, a.flags, a.labels, a.mask, a.ignoreIndex)
        var status = valid ? 0 : DistillRowStatus.ignored
        var label = -1
        if hard, let labels = a.labels {
            label = Int(labels[row])
            if valid && (label < 0 || label >= a.n) { status |= DistillRowStatus.badLabel }
        }
        return (valid, status, label)
    }

    /// A row's weight: its mask value (which multiplies its loss and gradient), 1 without a mask.
    static func rowWeightOf(_ a: DistillRowArguments, _ row: Int) -> Float {
        a.flags & DistillFlags.mask != 0 ? a.mask.map { $0[row] } ?? 1 : 1
    }

    /// The fused loss for a teacher whose whole mass lies on its listed ids (``DistillFlags/topKSparse``:
    /// a renormalized top-k or sampled teacher, forward KL, no TAID): the student's passes are dense, the
    /// teacher's max, exp sum and KL terms run over the listed ids alone, and its part of the gradient,
    /// -c p, is subtracted at those ids after the student's. An id listed twice counts once, at its
    /// last slot (as the dense row's last write); scratch: row 1 the listed ids' e_b by slot, row 2
    /// (as Int32) the slot `row * k + i` that last listed each id, row 3 e_h.
    public static func distill_sparse_teacher_rows(_ a: DistillRowArguments, group: Int, groups: Int) {
        let n = a.n, k = a.k, nvec = (n + 15) / 16, vp = nvec * 16
        let flags = a.flags, invT = a.inverseTemperature
        let gradient = flags & DistillFlags.gradient != 0
        let hard = flags & DistillFlags.hard != 0
        let hardSeparate = hard && invT != 1
        let gradScale = flags & DistillFlags.mean != 0 ? a.gradOutput / max(1, a.validCount) : a.gradOutput
        let ebList = a.scratch + group * 4 * vp + vp, ehRow = ebList + 2 * vp
        let zero = Float16Lanes(repeating: 0), negativeInfinity = Float16Lanes(repeating: -.infinity)
        let lastSlot = UnsafeMutableRawPointer(ebList + vp).bindMemory(to: Int32.self, capacity: vp)
        lastSlot.update(repeating: -1, count: vp)
        defer { UnsafeMutableRawPointer(lastSlot).bindMemory(to: Float.self, capacity: vp) }

        var row = group
        while row < a.rows {
            defer { row += groups }
            let zr = a.zs + row * n, dr = a.dz + row * n
            let idRow = a.topKIDs! + row * k, valueRow = a.topKValues! + row * k
            var (valid, status, label) = rowStart(a, row, hard: hard)
            let rowWeight = rowWeightOf(a, row)

            // The listed ids: each marked with its last slot; the teacher's maximum over those slots.
            var badID = false
            for i in 0..<k {
                let id = Int(idRow[i])
                if id >= 0 && id < n { lastSlot[id] = Int32(row * k + i) } else if id != -1 { badID = true }  // -1: an empty slot
            }
            func listed(_ i: Int) -> Int? {
                let id = Int(idRow[i])
                return id >= 0 && id < n && lastSlot[id] == Int32(row * k + i) ? id : nil
            }
            var maximumT = -Float.infinity
            for i in 0..<k where listed(i) != nil && valueRow[i] > maximumT { maximumT = valueRow[i] }
            var maxS = negativeInfinity
            for v in 0..<nvec { maxS = lanesMax(maxS, loadRow(zr, v, n)) }
            let maximumS = maxS.max()
            let labelLogit: Float = hard && label >= 0 && label < n ? zr[label] : 0
            let shiftS: Float = maximumS == -.infinity ? 0 : maximumS * invT
            let shiftT: Float = maximumT == -.infinity ? 0 : maximumT * invT
            let shiftH: Float = maximumS == -.infinity ? 0 : maximumS
            let invT2 = invT * log2e, shiftS2 = shiftS * log2e, shiftT2 = shiftT * log2e

            // The teacher over its listed ids (log2 units; before the student's pass, which may overwrite
            // zs with e_a): e_b, its sum and the forward-KL terms e_b (lb - la).
            var sb: Float = 0, sx: Float = 0
            for i in 0..<k {
                guard let id = listed(i) else { ebList[i] = 0; continue }
                let lb = valueRow[i] * invT2 - shiftT2, la = zr[id] * invT2 - shiftS2
                let eb = kdExp2(Float16Lanes(repeating: lb))[0]
                let difference = lb - la
                sb += eb
                sx += eb * (difference > -.greatestFiniteMagnitude ? difference : -.greatestFiniteMagnitude)
                ebList[i] = eb
            }
            // The student: e_a and its sum, stashed in the dz row; e_h for an untempered cross-entropy.
            var sumA = zero, sumH = zero
            for v in 0..<nvec {
                let zsv = loadRow(zr, v, n)
                let ea = kdExp2(zsv * invT2 - shiftS2)
                sumA += ea
                if gradient { storeRow(ea, dr, v, n) }
                if hardSeparate {
                    let eh = kdExp2((zsv - shiftH) * log2e)
                    sumH += eh
                    storeLanes(eh, ehRow, v)
                }
            }
            let sa = sumA.sum()
            if valid {
                status |= inputStatus(studentNonFinite: sa.isNaN, teacherNonFinite: sb.isNaN, maximumS: maximumS, maximumT: maximumT, badID: badID)
            }
            let invSA = 1 / sa, invSB = 1 / sb
            let sumEH = hardSeparate ? sumH.sum() : sa
            let divergence = sx * ln2 * invSB - logf(sb) + logf(sa)
            let crossEntropy: Float = hard ? logf(sumEH) + shiftH - labelLogit : 0
            let loss = a.softWeight * divergence + a.hardWeight * crossEntropy

            // dz = c (q - p) + h (softmax(zs) - onehot(label)): the dense part, then -c p at the listed ids.
            let ok = valid && status == 0
            if gradient && ok {
                let c = gradScale * rowWeight * a.softWeight * invT, h = gradScale * rowWeight * a.hardWeight
                let ca = c * invSA + (hard && !hardSeparate ? h * invSA : 0), ch = hardSeparate ? h / sumEH : 0
                for v in 0..<nvec {
                    let q = loadRow(dr, v, n) * ca
                    storeRow(hardSeparate ? q + loadLanes(ehRow, v) * ch : q, dr, v, n)
                }
                let cb = c * invSB
                for i in 0..<k where ebList[i] != 0 { dr[Int(idRow[i])] -= ebList[i] * cb }
                if hard { dr[label] -= h }
            } else if gradient {
                for v in 0..<nvec { storeRow(zero, dr, v, n) }
            }
            a.rowLoss[row] = valid ? rowWeight * loss : 0
            a.rowStatus[row] = Float(status)
            a.rowCrossEntropy[row] = valid ? crossEntropy : 0
        }
    }

    /// A valid row's bad-input bits (`input_status` in the kernels): non-finite student or teacher input
    /// (NaN or +inf anywhere in a row makes its exp sum NaN), a row all -inf, a top-k id outside the vocabulary.
    static func inputStatus(studentNonFinite: Bool, teacherNonFinite: Bool, maximumS: Float, maximumT: Float, badID: Bool) -> Int {
        var status = 0
        if studentNonFinite { status |= DistillRowStatus.studentNonFinite }
        if teacherNonFinite { status |= DistillRowStatus.teacherNonFinite }
        if maximumS == -.infinity { status |= DistillRowStatus.studentAllMasked }
        if maximumT == -.infinity { status |= DistillRowStatus.teacherAllMasked }
        if badID { status |= DistillRowStatus.badTopKID }
        return status
    }

    /// The number of valid rows (mask != 0 and label != ignoreIndex).
    public static func distill_count_valid_rows(_ labels: UnsafePointer<Float>?, _ mask: UnsafePointer<Float>?,
                                                flags: Int32, ignoreIndex: Int, rows: Int) -> Float {
        var count = 0
        for r in 0..<rows where rowIsValid(r, flags, labels, mask, ignoreIndex) { count += 1 }
        return Float(count)
    }

    /// The fused loss over rows `group, group + groups, ...`, using this group's scratch rows.
    public static func distill_loss_rows(_ a: DistillRowArguments, group: Int, groups: Int) {
        let n = a.n, nvec = (n + 15) / 16, vp = nvec * 16
        let flags = a.flags, kind = a.kind, invT = a.inverseTemperature, param = a.parameter
        let gradient = flags & DistillFlags.gradient != 0
        let topK = flags & DistillFlags.topK != 0
        let taid = flags & DistillFlags.taid != 0
        let hard = flags & DistillFlags.hard != 0
        let hardSeparate = hard && invT != 1
        let gradScale = flags & DistillFlags.mean != 0 ? a.gradOutput / max(1, a.validCount) : a.gradOutput
        let logParam = logf(param), logOneMinus = logf(1 - param)
        let eaRow = a.scratch + group * 4 * vp, ebRow = eaRow + vp, tmRow = eaRow + 2 * vp, ehRow = eaRow + 3 * vp
        let zero = Float16Lanes(repeating: 0), negativeInfinity = Float16Lanes(repeating: -.infinity)

        var row = group
        while row < a.rows {
            defer { row += groups }
            let zr = a.zs + row * n
            let dr = a.dz + row * n
            var (valid, status, label) = rowStart(a, row, hard: hard)
            let rowWeight = rowWeightOf(a, row)

            // Pass 0: a dense teacher row from the top-k (see the kernel for the missing-mass rules).
            var tr: UnsafePointer<Float> = UnsafePointer(tmRow)
            var badID = false
            if topK, let ids = a.topKIDs, let values = a.topKValues {
                let k = a.k, idRow = ids + row * k, valueRow = values + row * k
                // The rest 1 - sum exp(values) without cancellation: -expm1(largest) - sum of the others.
                var largest = -Float.infinity
                for i in 0..<k { largest = max(largest, valueRow[i]) }
                var first = 0
                while first < k && valueRow[first] != largest { first += 1 }
                var others: Float = 0
                for i in 0..<k where i != first { others += expf(valueRow[i]) }
                // Within k ulps of 0 (the exps' rounding when the listed mass is 1) the rest is 0.
                let residue = -expm1f(largest) - others
                let missing = residue > Float(k) * .ulpOfOne ? residue : 0
                if flags & (DistillFlags.topKBucket | DistillFlags.topKPrior) != 0 {
                    // The rest spread in proportion to a row s: the student's tempered (bucket) or the prior's
                    // (at T = 1): tm_j = log rest + s_j - smax - log(rest_s) / u, u = 1/T or 1.
                    let prior = flags & DistillFlags.topKPrior != 0
                    let sr = prior ? a.tailPrior! : zr, su = prior ? 1 : invT
                    var zmaxLanes = negativeInfinity
                    for v in 0..<nvec { zmaxLanes = lanesMax(zmaxLanes, loadRow(sr, v, n)) }
                    let zmax = zmaxLanes.max()
                    let zshift = zmax == -.infinity ? 0 : zmax
                    // Summed over the unlisted tokens alone (marked in tmRow), not as all minus listed.
                    tmRow.update(repeating: 0, count: vp)
                    for i in 0..<k {
                        let id = Int(idRow[i])
                        if id >= 0 && id < n { tmRow[id] = 1 }
                    }
                    var restLanes = zero
                    for v in 0..<nvec {
                        restLanes += kdExp((loadRow(sr, v, n) - zshift) * su).replacing(with: 0, where: loadLanes(tmRow, v) .!= 0)
                    }
                    let restS = restLanes.sum()
                    let c = missing > 0 && restS > 0 ? logf(missing) - zshift - logf(restS) / su : -Float.infinity
                    for v in 0..<nvec { storeLanes(c + loadRow(sr, v, n), tmRow, v) }
                } else {
                    var rest = -Float.infinity
                    if flags & DistillFlags.topKUniform != 0 && n > k && missing > 0 { rest = logf(missing / Float(n - k)) }
                    tmRow.update(repeating: rest, count: vp)
                }
                for i in 0..<k {
                    let id = Int(idRow[i])
                    if id >= 0 && id < n { tmRow[id] = valueRow[i] } else if id != -1 { badID = true }  // -1: an empty slot
                }
            } else if let zt = a.zt {
                tr = zt + row * a.teacherStride
            }

            // Pass 1: maxima; TAID target. (NaN and +inf show up as NaN exp sums in pass 2.)
            var maxS = negativeInfinity, maxT = negativeInfinity
            if taid {
                let t = a.taid
                for v in 0..<nvec {
                    let x = loadRow(zr, v, n), y = loadRow(tr, v, n)
                    var mixed: Float16Lanes
                    if t == 1 { mixed = y } else if t == 0 { mixed = x } else {
                        mixed = ((1 - t) * x + t * y).replacing(with: -.infinity, where: (x .== -.infinity) .| (y .== -.infinity))
                    }
                    storeLanes(mixed, tmRow, v)
                    maxS = lanesMax(maxS, x)
                    maxT = lanesMax(maxT, mixed)
                }
                tr = UnsafePointer(tmRow)
            } else {
                for v in 0..<nvec {
                    maxS = lanesMax(maxS, loadRow(zr, v, n))
                    maxT = lanesMax(maxT, loadRow(tr, v, n))
                }
            }
            let labelLogit: Float = hard && label >= 0 && label < n ? zr[label] : 0
            let maximumS = maxS.max(), maximumT = maxT.max()
            let shiftS: Float = maximumS == -.infinity ? 0 : maximumS * invT
            let shiftT: Float = maximumT == -.infinity ? 0 : maximumT * invT
            let shiftH: Float = maximumS == -.infinity ? 0 : maximumS

            // Pass 2 (log2 units): exp sums, online KL terms, stashes (forward KL keeps e_a in the dz row).
            let stash = gradient || (kind != 0 && kind != 1)
            let fklFast = kind == 0 && !hardSeparate
            let invT2 = invT * log2e, shiftS2 = shiftS * log2e, shiftT2 = shiftT * log2e
            let floor = Float16Lanes(repeating: -.greatestFiniteMagnitude)
            var sumA = zero, sumB = zero, sumX = zero, sumH = zero
            for v in 0..<nvec {
                let zsv = loadRow(zr, v, n)
                let la = zsv * invT2 - shiftS2, lb = loadRow(tr, v, n) * invT2 - shiftT2
                let ea = kdExp2(la), eb = kdExp2(lb)
                sumA += ea
                sumB += eb
                if kind == 0 {
                    sumX += eb * lanesMax(lb - la, floor)
                } else if kind == 1 {
                    sumX += ea * lanesMax(la - lb, floor)
                }
                if stash {
                    if fklFast { storeRow(ea, dr, v, n) } else { storeLanes(ea, eaRow, v) }
                    storeLanes(eb, ebRow, v)
                }
                if hardSeparate {
                    let eh = kdExp2((zsv - shiftH) * log2e)
                    sumH += eh
                    storeLanes(eh, ehRow, v)
                }
            }
            let sa = sumA.sum(), sb = sumB.sum(), sx = sumX.sum()
            if valid {
                status |= inputStatus(studentNonFinite: sa.isNaN, teacherNonFinite: sb.isNaN, maximumS: maximumS, maximumT: maximumT, badID: badID)
            }
            let logSA = logf(sa), logSB = logf(sb), invSA = 1 / sa, invSB = 1 / sb
            let sumEH = hardSeparate ? sumH.sum() : sa
            let invSH = 1 / sumEH
            let ehSource = hardSeparate ? ehRow : eaRow

            // Pass 3: mixture divergences, g stashed in the dz row.
            var divergence: Float = 0, qg: Float = 0
            if kind == 0 {
                divergence = sx * ln2 * invSB - logSB + logSA
            } else if kind == 1 {
                divergence = sx * ln2 * invSA - logSA + logSB
                qg = divergence
            } else {
                var value = zero, weighted = zero
                for v in 0..<nvec {
                    let q = loadLanes(eaRow, v) * invSA, p = loadLanes(ebRow, v) * invSB
                    let lq = loadRow(zr, v, n) * invT - shiftS - logSA
                    let lp = loadRow(tr, v, n) * invT - shiftT - logSB
                    var g: Float16Lanes
                    if kind == 2 {
                        let lm = kdLogAddExp(logParam + lp, logOneMinus + lq)
                        if param != 0 { value += (param * p * (lp - lm)).replacing(with: 0, where: p .== 0) }
                        if param != 1 {
                            value += ((1 - param) * q * (lq - lm)).replacing(with: 0, where: q .== 0)
                            g = (lq - lm).replacing(with: 0, where: q .== 0)
                        } else {
                            g = zero
                        }
                        weighted += q * g
                    } else if kind == 3 {
                        let lm = kdLogAddExp(logParam + lp, logOneMinus + lq)
                        value += (p * (lp - lm)).replacing(with: 0, where: p .== 0)
                        g = kdExpBounded(lp + lq - lm).replacing(with: 0, where: (lp .== -.infinity) .| (lq .== -.infinity))
                        weighted += g
                    } else if kind == 4 {
                        let d = lq - kdLogAddExp(logOneMinus + lp, logParam + lq)
                        value += (q * d).replacing(with: 0, where: q .== 0)
                        g = (d - param * kdExpBounded(d)).replacing(with: 0, where: q .== 0)
                        weighted += q * g
                    } else {
                        value += 0.5 * abs(p - q)
                        g = laneSign(q - p)
                        weighted += q * g
                    }
                    if gradient { storeRow(g, dr, v, n) }
                }
                divergence = value.sum()
                qg = weighted.sum()
            }
            let crossEntropy: Float = hard ? logf(sumEH) + shiftH - labelLogit : 0
            let loss = a.softWeight * divergence + a.hardWeight * crossEntropy

            // Pass 4: the gradient.
            let ok = valid && status == 0
            let c: Float = ok ? gradScale * rowWeight * a.softWeight * invT : 0
            let h: Float = ok ? gradScale * rowWeight * a.hardWeight : 0
            if gradient && fklFast {
                // dz = c (q - p) + h softmax(zs), q = e_a / S_a from the dz row, p = e_b / S_b.
                let ca = c * invSA + (hard ? h * invSA : 0), cb = c * invSB
                for v in 0..<nvec {
                    storeRow(ok ? loadRow(dr, v, n) * ca - loadLanes(ebRow, v) * cb : zero, dr, v, n)
                }
                if hard && ok { dr[label] -= h }
            } else if gradient {
                let logRatio = logSA - logSB
                for v in 0..<nvec {
                    let q = loadLanes(eaRow, v) * invSA
                    var grad: Float16Lanes
                    switch kind {
                    case 0:
                        grad = c * (q - loadLanes(ebRow, v) * invSB)
                    case 1:
                        let la = loadRow(zr, v, n) * invT - shiftS, lb = loadRow(tr, v, n) * invT - shiftT
                        grad = (c * q * ((la - lb) - logRatio - qg)).replacing(with: 0, where: q .== 0)
                    default:
                        let g = loadRow(dr, v, n)
                        if kind == 5 { grad = (0.5 * c) * q * (g - qg) }
                        else if kind == 2 { grad = ((1 - param) * c) * q * (g - qg) }
                        else if kind == 3 { grad = (-(1 - param) * c) * (g - q * qg) }
                        else { grad = c * q * (g - qg) }
                    }
                    if hard { grad += h * loadLanes(ehSource, v) * invSH }
                    storeRow(ok ? grad : zero, dr, v, n)
                }
                if hard && ok { dr[label] -= h }
            }
            a.rowLoss[row] = valid ? rowWeight * loss : 0
            a.rowStatus[row] = Float(status)
            a.rowCrossEntropy[row] = valid ? crossEntropy : 0
        }
    }

    /// LFM2's decoupled top-K loss over rows `group, group + groups, ...` (the kernel's comment has
    /// the math): scratch row 2 marks the listed ids, row 0 holds exp(zs - max), row 1 the listed q - p.
    public static func distill_decoupled_topk_rows(_ a: DistillRowArguments, group: Int, groups: Int) {
        guard let ids = a.topKIDs, let values = a.topKValues else { return }
        let n = a.n, nvec = (n + 15) / 16, vp = nvec * 16, k = a.k
        let flags = a.flags, invT = a.inverseTemperature
        let gradient = flags & DistillFlags.gradient != 0
        let hard = flags & DistillFlags.hard != 0
        let gradScale = flags & DistillFlags.mean != 0 && gradient ? a.gradOutput / max(1, a.validCount) : a.gradOutput
        let eaRow = a.scratch + group * 4 * vp, qpRow = eaRow + vp, listedRow = eaRow + 2 * vp
        let zero = Float16Lanes(repeating: 0)

        var row = group
        while row < a.rows {
            defer { row += groups }
            let zr = a.zs + row * n, dr = a.dz + row * n
            let idRow = ids + row * k, valueRow = values + row * k
            func listedID(_ i: Int) -> Int? {
                let id = Int(idRow[i])
                return id >= 0 && id < n ? id : nil
            }
            var (valid, status, label) = rowStart(a, row, hard: hard)
            let rowWeight = rowWeightOf(a, row)

            // Pass 1: the student's maximum, marks and q - p cleared; the teacher's largest value, bad values and ids.
            var maxS = Float16Lanes(repeating: -.infinity)
            for v in 0..<nvec { maxS = lanesMax(maxS, loadRow(zr, v, n)) }
            listedRow.update(repeating: 0, count: vp)
            qpRow.update(repeating: 0, count: vp)
            var largest = -Float.infinity, badID = false, badValue = false
            for i in 0..<k {
                let value = valueRow[i]
                if value.isNaN || value == .infinity { badValue = true }
                if listedID(i) != nil { largest = max(largest, value) } else if Int(idRow[i]) != -1 { badID = true }
            }
            for i in 0..<k { if let id = listedID(i) { listedRow[id] = 1 } }
            let maximumS = maxS.max()
            let zmax: Float = maximumS == -.infinity ? 0 : maximumS

            // Pass 2: e = exp(zs - max), its sums over all tokens and over the unlisted ones.
            var sumAll = zero, sumRest = zero
            for v in 0..<nvec {
                let e = kdExp(loadRow(zr, v, n) - zmax)
                sumAll += e
                sumRest += e.replacing(with: 0, where: loadLanes(listedRow, v) .!= 0)
                storeLanes(e, eaRow, v)
            }

            // Over the listed ids: the teacher's masses, the student's listed mass, the conditional sums.
            var first = -1, zlMaximum = -Float.infinity
            for i in 0..<k {
                guard let id = listedID(i) else { continue }
                if first < 0 && valueRow[i] == largest { first = i }
                zlMaximum = max(zlMaximum, zr[id] * invT)
            }
            let zlMax: Float = zlMaximum == -.infinity ? 0 : zlMaximum
            let vlMax: Float = largest == -.infinity ? 0 : largest * invT
            var others: Float = 0, mass: Float = 0, listed: Float = 0, sp: Float = 0, sq: Float = 0, x: Float = 0
            for i in 0..<k {
                guard let id = listedID(i) else { continue }
                let value = valueRow[i], ev = expf(value)
                mass += ev
                if i != first { others += ev }
                listed += eaRow[id]
                let lpu = value * invT - vlMax, lqu = zr[id] * invT - zlMax
                let ep = expf(lpu)
                sp += ep
                sq += expf(lqu)
                if ep > 0 { x += ep * (lpu - lqu) }
            }
            let sAll = sumAll.sum(), sRest = sumRest.sum()
            if valid {
                status |= inputStatus(studentNonFinite: sAll.isNaN, teacherNonFinite: badValue, maximumS: maximumS, maximumT: largest, badID: badID)
            }
            let pa = min(mass, 1)
            let m: Float = first < 0 ? 0 : max(0, -expm1f(largest) - others)
            let logAll = logf(sAll)
            var bernoulli: Float = pa > 0 ? pa * (logf(pa) - logf(listed) + logAll) : 0
            if m > 0 { bernoulli += m * (logf(m) - logf(sRest) + logAll) }
            let klConditional = x / sp - logf(sp) + logf(sq)
            let divergence = bernoulli + a.parameter * pa * klConditional
            let crossEntropy: Float = hard ? logAll + zmax - (label >= 0 && label < n ? zr[label] : 0) : 0
            let loss = a.softWeight * divergence + a.hardWeight * crossEntropy

            // Pass 3: the listed q - p, then dz = regrouped mass + conditional part, then the one-hot part.
            let ok = valid && status == 0
            if gradient {
                for i in 0..<k {
                    guard let id = listedID(i) else { continue }
                    qpRow[id] = expf(zr[id] * invT - zlMax) / sq - expf(valueRow[i] * invT - vlMax) / sp
                }
                let c: Float = ok ? gradScale * rowWeight * a.softWeight : 0
                let h: Float = ok ? gradScale * rowWeight * a.hardWeight : 0
                let cAll = (c * (pa + m) + h) / sAll
                let cListed = cAll - c * pa / listed
                let cRest = cAll - (m > 0 ? c * m / sRest : 0)
                let cConditional = c * a.parameter * pa * invT
                for v in 0..<nvec {
                    let coefficient = Float16Lanes(repeating: cRest).replacing(with: cListed, where: loadLanes(listedRow, v) .!= 0)
                    let grad = loadLanes(eaRow, v) * coefficient + cConditional * loadLanes(qpRow, v)
                    storeRow(ok ? grad : zero, dr, v, n)
                }
                if hard && ok { dr[label] -= h }
            }
            a.rowLoss[row] = valid ? rowWeight * loss : 0
            a.rowStatus[row] = Float(status)
            a.rowCrossEntropy[row] = valid ? crossEntropy : 0
        }
    }

    // MARK: loss_baseline.cl (the unfused baseline: log-softmax rows, then these)

    /// out[r] = sum_j exp(lt[r, j]) (lt[r, j] - ls[r, j]): forward KL from log-probabilities.
    public static func kl_div_rows(_ ls: UnsafePointer<Float>, _ lt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                                   cols: Int, _ rows: Range<Int>) {
        let nvec = (cols + 15) / 16
        for r in rows {
            var total = Float16Lanes(repeating: 0)
            for v in 0..<nvec {
                let s = loadRow(ls + r * cols, v, cols), t = loadRow(lt + r * cols, v, cols)
                total += (kdExp(t) * (t - s)).replacing(with: 0, where: t .== -.infinity)
            }
            out[r] = total.sum()
        }
    }

    /// dz[r, j] = scale * (exp(ls[r, j]) - exp(lt[r, j])): the forward-KL gradient from log-probabilities.
    public static func kl_div_backward_rows(_ ls: UnsafePointer<Float>, _ lt: UnsafePointer<Float>, _ dz: UnsafeMutablePointer<Float>,
                                            cols: Int, scale: Float, _ rows: Range<Int>) {
        let nvec = (cols + 15) / 16
        for r in rows {
            for v in 0..<nvec {
                let s = loadRow(ls + r * cols, v, cols), t = loadRow(lt + r * cols, v, cols)
                storeRow(scale * (kdExp(s) - kdExp(t)), dz + r * cols, v, cols)
            }
        }
    }
}
