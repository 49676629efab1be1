import Foundation

/// An fp64 reference of ``DistillationLoss`` for the tests (and the benchmark's spot checks): plain
/// loops, no fusion, and gradients by a different route than the kernels: the partials
/// `G_j = dD / d log q_j` of each divergence, pushed through the log-softmax as `G - q sum(G)`.
public enum DistillationReference {
    public struct Output {
        /// Per-row `w_hard * CE + w_soft * T^2 * D` (0 for ignored rows).
        public var rowLosses: [Double]
        /// The reduced loss.
        public var loss: Double
        /// `gradOutput * d loss / d student`, `[N, V]`.
        public var gradient: [Double]
        public var validRows: Int
    }

    /// The teacher as the reference sees it.
    public enum Teacher {
        /// `[N, stride]`; the first V columns of each row are used.
        case dense([Double], stride: Int)
        /// `[N, k]` ids and values with a missing-mass rule (`tailPrior`: `[V]` log-weights of the prior rule).
        case topK(ids: [Int], values: [Double], k: Int, missingMass: MissingTeacherMass, tailPrior: [Double]? = nil)
    }

    /// log(e^x + e^y) with -inf handled.
    static func logAddExp(_ x: Double, _ y: Double) -> Double {
        let m = max(x, y)
        if m == -.infinity { return -.infinity }
        return m + Foundation.log1p(Foundation.exp(-abs(x - y)))
    }

    /// log softmax of `x`; nil for an all -inf row.
    static func logSoftmax(_ x: [Double]) -> [Double]? {
        let m = x.max() ?? -.infinity
        if m == -.infinity { return nil }
        let lse = m + Foundation.log(x.reduce(0) { $0 + Foundation.exp($1 - m) })
        return x.map { $0 - lse }
    }

    /// The dense teacher row `r` (untempered logits), densified from a top-k teacher by its rule
    /// (the bucket rule reads the student's row `zs` at `temperature`).
    static func teacherRow(_ teacher: Teacher, row r: Int, vocabulary n: Int, student zs: [Double], temperature: Double) -> [Double] {
        switch teacher {
        case .dense(let values, let stride):
            return Array(values[(r * stride)..<(r * stride + n)])
        case .topK(let ids, let values, let k, let missingMass, let tailPrior):
            let mass = (0..<k).reduce(0.0) { $0 + Foundation.exp(values[r * k + $1]) }
            let listed = Set((0..<k).map { ids[r * k + $0] }.filter { $0 >= 0 })
            var row = [Double](repeating: -.infinity, count: n)
            if missingMass == .uniform, n > k, mass < 1 {
                row = [Double](repeating: Foundation.log((1 - mass) / Double(n - k)), count: n)
            } else if missingMass == .prior, mass < 1, let tailPrior {
                // The rest spread over the unlisted tokens as the prior's weights: log p_rest + w_j - log sum_unlisted e^w.
                let rest = (0..<n).filter { !listed.contains($0) }.reduce(0.0) { $0 + Foundation.exp(tailPrior[$1]) }
                if rest > 0 { row = tailPrior.map { Foundation.log(1 - mass) + $0 - Foundation.log(rest) } }
            } else if missingMass == .bucket, mass < 1, let lq = logSoftmax(zs.map { $0 / temperature }) {
                // The rest p_rest spread as p_rest^(1/T) q_j / q_rest in tempered units: log p_rest + T (log q_j - log q_rest).
                let rest = (0..<n).filter { !listed.contains($0) }.reduce(0.0) { $0 + Foundation.exp(lq[$1]) }
                if rest > 0 {
                    row = lq.map { Foundation.log(1 - mass) + temperature * ($0 - Foundation.log(rest)) }
                }
            }
            for i in 0..<k where ids[r * k + i] >= 0 { row[ids[r * k + i]] = values[r * k + i] }
            return row
        }
    }

    /// One row's divergence and its gradient per unit soft weight (the untempered student logits
    /// `zs`, the dense teacher row `teacher`); nil when either row is entirely -inf.
    static func denseRow(_ options: DistillationLoss, student zs: [Double], teacher: [Double]) -> (value: Double, gradient: [Double])? {
        let temperature = Double(options.temperature), parameter = Double(options.divergence.parameter)
        let n = zs.count
        var zt = teacher
        if let t = options.taidInterpolation.map(Double.init) {
            zt = zip(zs, zt).map { s, u in
                if t == 1 { return u }
                if t == 0 { return s }
                if s == -.infinity || u == -.infinity { return -.infinity }
                return (1 - t) * s + t * u
            }
        }
        guard let lq = logSoftmax(zs.map { $0 / temperature }), let lp = logSoftmax(zt.map { $0 / temperature }) else { return nil }
        let q = lq.map(Foundation.exp), p = lp.map(Foundation.exp)
        var divergence = 0.0
        var partials = [Double](repeating: 0, count: n) // G_j = dD / d log q_j
        for j in 0..<n {
            switch options.divergence {
            case .forwardKL:
                if p[j] > 0 { divergence += p[j] * (lp[j] - lq[j]) }
                partials[j] = -p[j]
            case .reverseKL:
                if q[j] > 0 {
                    divergence += q[j] * (lq[j] - lp[j])
                    partials[j] = q[j] * (lq[j] - lp[j] + 1)
                }
            case .jensenShannon:
                let beta = parameter
                let lm = logAddExp(Foundation.log(beta) + lp[j], Foundation.log(1 - beta) + lq[j])
                let qOverM = q[j] > 0 ? Foundation.exp(lq[j] - lm) : 0
                if p[j] > 0 && beta > 0 { divergence += beta * p[j] * (lp[j] - lm) }
                if q[j] > 0 && beta < 1 { divergence += (1 - beta) * q[j] * (lq[j] - lm) }
                // d lm / d log q = (1 - beta) q / m
                var g = 0.0
                if p[j] > 0 && beta > 0 { g -= beta * p[j] * (1 - beta) * qOverM }
                if q[j] > 0 && beta < 1 { g += (1 - beta) * (q[j] * (lq[j] - lm) + q[j] - q[j] * (1 - beta) * qOverM) }
                partials[j] = g
            case .skewForwardKL:
                let alpha = parameter
                let lm = logAddExp(Foundation.log(alpha) + lp[j], Foundation.log(1 - alpha) + lq[j])
                if p[j] > 0 {
                    divergence += p[j] * (lp[j] - lm)
                    if q[j] > 0 { partials[j] = -p[j] * (1 - alpha) * Foundation.exp(lq[j] - lm) }
                }
            case .skewReverseKL:
                let alpha = parameter
                let lm = logAddExp(Foundation.log(1 - alpha) + lp[j], Foundation.log(alpha) + lq[j])
                if q[j] > 0 {
                    divergence += q[j] * (lq[j] - lm)
                    partials[j] = q[j] * (lq[j] - lm) + q[j] - q[j] * alpha * Foundation.exp(lq[j] - lm)
                }
            case .totalVariation:
                divergence += 0.5 * abs(p[j] - q[j])
                let s: Double = q[j] > p[j] ? 1 : (q[j] < p[j] ? -1 : 0)
                partials[j] = 0.5 * s * q[j]
            }
        }
        let partialSum = partials.reduce(0, +)
        // through log q = a - lse(a), a = z / T
        return (divergence, (0..<n).map { (partials[$0] - q[$0] * partialSum) / temperature })
    }

    /// LFM2's decoupled top-K row per unit soft weight: `KL(Bern(a) || Bern(b)) + scale a KL(p_T(. | S) || q_T(. | S))`
    /// and its gradient, from the partials of each term in the log-probabilities it is a function of
    /// (`log s` for the Bernoulli term, `log q_T` over S for the conditional one), each pushed through
    /// its own log-softmax; nil when the student or the listed teacher values are entirely -inf.
    static func decoupledRow(student zs: [Double], ids: [Int], values: [Double], temperature: Double,
                             conditionalScale: Double) -> (value: Double, gradient: [Double])? {
        let n = zs.count
        let slots = ids.indices.filter { ids[$0] >= 0 }
        let listed = slots.map { ids[$0] }, listedSet = Set(listed)
        guard let ls = logSoftmax(zs), let lp = logSoftmax(slots.map { values[$0] / temperature }),
              let lq = logSoftmax(listed.map { zs[$0] / temperature }) else { return nil }
        let s = ls.map(Foundation.exp)
        let a = min(1, slots.reduce(0.0) { $0 + Foundation.exp(values[$1]) }), m = max(0, 1 - a)
        let b = listed.reduce(0.0) { $0 + s[$1] }
        let rest = (0..<n).filter { !listedSet.contains($0) }.reduce(0.0) { $0 + s[$1] }
        var value = a * Foundation.log(a / b) + (m > 0 ? m * Foundation.log(m / rest) : 0)
        // d value / d log s_j, then through log s = z - lse(z).
        let partials = (0..<n).map { listedSet.contains($0) ? -a * s[$0] / b : (m > 0 ? -m * s[$0] / rest : 0) }
        let partialSum = partials.reduce(0, +)
        var gradient = (0..<n).map { partials[$0] - s[$0] * partialSum }
        let p = lp.map(Foundation.exp), q = lq.map(Foundation.exp)
        let conditional = zip(p, zip(lp, lq)).reduce(0.0) { $0 + ($1.0 > 0 ? $1.0 * ($1.1.0 - $1.1.1) : 0) }
        value += conditionalScale * a * conditional
        // d KL / d log q_i = -p_i, through log q = z_S / T - lse: q_i - p_i (sum p = 1), then 1 / T.
        for (i, id) in listed.enumerated() { gradient[id] += conditionalScale * a * (q[i] - p[i]) / temperature }
        return (value, gradient)
    }

    public static func compute(_ options: DistillationLoss, student: [Double], rows: Int, vocabulary n: Int,
                               teacher: Teacher, labels: [Int]? = nil, rowMask: [Double]? = nil,
                               gradOutput: Double = 1) -> Output {
        let temperature = Double(options.temperature)
        let effectiveSoft = Double(options.effectiveSoftWeight), hardWeight = Double(options.hardWeight)
        var rowLosses = [Double](repeating: 0, count: rows)
        var rowGradients = [Double](repeating: 0, count: rows * n)
        var valid = [Bool](repeating: true, count: rows)
        for r in 0..<rows {
            if let rowMask, rowMask[r] == 0 { valid[r] = false }
            if let labels, labels[r] == options.ignoreIndex { valid[r] = false }
            guard valid[r] else { continue }
            let zs = Array(student[(r * n)..<((r + 1) * n)])
            let soft: (value: Double, gradient: [Double])
            if case .topK(let ids, let values, let k, .decoupled, _) = teacher {
                guard let row = decoupledRow(student: zs, ids: Array(ids[(r * k)..<((r + 1) * k)]),
                                             values: Array(values[(r * k)..<((r + 1) * k)]), temperature: temperature,
                                             conditionalScale: options.scaleBySquaredTemperature ? temperature * temperature : 1) else {
                    rowLosses[r] = .nan
                    continue
                }
                soft = (Double(options.softWeight) * row.value, row.gradient.map { Double(options.softWeight) * $0 })
            } else {
                guard let row = denseRow(options, student: zs, teacher: teacherRow(teacher, row: r, vocabulary: n, student: zs, temperature: temperature)) else {
                    rowLosses[r] = .nan
                    continue
                }
                soft = (effectiveSoft * row.value, row.gradient.map { effectiveSoft * $0 })
            }
            for j in 0..<n { rowGradients[r * n + j] = soft.gradient[j] }
            var rowLoss = soft.value
            if hardWeight != 0, let labels {
                let y = labels[r]
                let logQ = logSoftmax(zs)!
                rowLoss += hardWeight * -logQ[y]
                let untempered = logQ.map(Foundation.exp)
                for j in 0..<n {
                    rowGradients[r * n + j] += hardWeight * (untempered[j] - (j == y ? 1 : 0))
                }
            }
            // A row's weight (its mask entry) scales its loss and gradient.
            let weight = rowMask?[r] ?? 1
            for j in 0..<n { rowGradients[r * n + j] *= weight }
            rowLosses[r] = weight * rowLoss
        }
        let validRows = valid.filter { $0 }.count
        let total = zip(rowLosses, valid).reduce(0.0) { $0 + ($1.1 ? $1.0 : 0) }
        let scale = options.reduction == .mean ? gradOutput / Double(max(1, validRows)) : gradOutput
        let loss = options.reduction == .mean ? total / Double(max(1, validRows)) : total
        return Output(rowLosses: rowLosses, loss: loss, gradient: rowGradients.map { $0 * scale }, validRows: validRows)
    }
}
