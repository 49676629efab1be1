import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// Every divergence and option of the fused loss, on the CPU twin and the OpenCL kernel, against the
/// fp64 reference with wide logits (randn * 10), masked vocabulary entries and ignored rows.
final class DivergenceTests: XCTestCase {
    static let divergences: [Divergence] = [
        .forwardKL, .reverseKL, .totalVariation,
        .jensenShannon(beta: 0), .jensenShannon(beta: 0.01), .jensenShannon(beta: 0.5), .jensenShannon(beta: 0.9), .jensenShannon(beta: 1),
        .skewForwardKL(alpha: 0), .skewForwardKL(alpha: 0.01), .skewForwardKL(alpha: 0.1), .skewForwardKL(alpha: 0.5), .skewForwardKL(alpha: 0.9), .skewForwardKL(alpha: 1),
        .skewReverseKL(alpha: 0), .skewReverseKL(alpha: 0.01), .skewReverseKL(alpha: 0.1), .skewReverseKL(alpha: 0.5), .skewReverseKL(alpha: 0.9), .skewReverseKL(alpha: 1),
    ]
    static let temperatures: [Float] = [0.5, 1, 2, 8]
    /// Loss values and gradients: largest relative error allowed against fp64.
    static let tolerance = 2e-4

    private func check(_ problem: LossProblem, _ options: DistillationLoss, gradOutput: Float = 1, on backends: [any Backend],
                       context: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = problem.reference(options, gradOutput: Double(gradOutput))
        for backend in backends {
            let (result, gradient) = try problem.run(options, on: backend, gradOutput: gradOutput)
            let lossError = relativeError(result.loss, reference.loss, unit: options.lossUnit(validRows: reference.validRows))
            let rowError = relativeError(result.rowLosses, reference.rowLosses, unit: options.lossUnit(validRows: 1))
            XCTAssertEqual(result.validRows, reference.validRows, "\(context) on \(backend.name)", file: file, line: line)
            XCTAssertLessThanOrEqual(lossError, Self.tolerance,
                                     "\(context) on \(backend.name): loss \(result.loss) vs fp64 \(reference.loss)", file: file, line: line)
            XCTAssertLessThanOrEqual(rowError, Self.tolerance, "\(context) on \(backend.name): row losses", file: file, line: line)
            if !options.forwardOnly {
                let gradientError = relativeError(gradient, reference.gradient,
                                                  unit: options.gradientUnit(validRows: reference.validRows, gradOutput: Double(gradOutput)))
                XCTAssertLessThanOrEqual(gradientError, Self.tolerance,
                                         "\(context) on \(backend.name): gradient error \(gradientError)", file: file, line: line)
            }
        }
    }

    /// 41 x 1271 (odd rows, prime-ish columns), every divergence at every temperature; the last row is
    /// all -inf and ignored by its label, another row is masked out, the others weighted (one negatively).
    func testEveryDivergenceAndTemperatureAgainstFP64() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 3)
        var problem = LossProblem.random(&rng, rows: 41, vocabulary: 1271, maskedRows: [40])
        problem.labels = (0..<41).map { $0 == 40 || $0 == 7 ? -100 : Float(Int.random(in: 0..<1271, using: &rng)) }
        problem.rowMask = (0..<41).map { $0 == 12 ? 0 : $0 == 5 ? -0.6 : 0.5 + Float($0 % 4) * 0.5 }  // row weights; row 12 masked out
        for divergence in Self.divergences {
            for temperature in Self.temperatures {
                let options = DistillationLoss(divergence: divergence, temperature: temperature)
                try check(problem, options, on: backends, context: "\(divergence) T=\(temperature) 41x1271")
            }
        }
    }

    /// Odd shapes: V = 1, V prime and below / above the vector width, a single row, many short rows.
    func testOddShapes() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 5)
        for (rows, vocabulary) in [(1, 1), (3, 1), (1, 2), (2, 7), (5, 17), (3, 1031), (64, 5), (2, 32003)] {
            let problem = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary)
            for divergence in [Divergence.forwardKL, .reverseKL, .jensenShannon(beta: 0.5), .skewForwardKL(alpha: 0.1),
                               .skewReverseKL(alpha: 0.1), .totalVariation] {
                try check(problem, DistillationLoss(divergence: divergence, temperature: 2), on: backends,
                          context: "\(divergence) \(rows)x\(vocabulary)")
            }
        }
    }

    /// Hard-label cross-entropy on the untempered logits mixed with the soft term, T^2 on and off,
    /// reductions, grad_output != 1, forward-only and a separate gradient buffer.
    func testHardLabelsReductionsAndGradOutput() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 7)
        var problem = LossProblem.random(&rng, rows: 9, vocabulary: 301)
        problem.labels = (0..<9).map { $0 == 4 ? -100 : Float(Int.random(in: 0..<301, using: &rng)) }
        // A label must have a finite logit for a finite cross-entropy.
        for r in 0..<9 where problem.labels![r] >= 0 {
            let j = Int(problem.labels![r])
            if problem.student[r * 301 + j] == -.infinity {
                problem.student[r * 301 + j] = 1
                problem.teacher[r * 301 + j] = 1
            }
        }
        for temperature: Float in [1, 2] {
            for divergence in [Divergence.forwardKL, .jensenShannon(beta: 0.3)] {
                for (squared, reduction) in [(true, LossReduction.mean), (false, .sum), (true, .none)] {
                    let options = DistillationLoss(divergence: divergence, temperature: temperature, scaleBySquaredTemperature: squared,
                                                   softWeight: 0.7, hardWeight: 0.3, reduction: reduction)
                    try check(problem, options, gradOutput: 2.5, on: backends,
                              context: "hard+\(divergence) T=\(temperature) T^2=\(squared) \(reduction) gradOutput=2.5")
                }
            }
        }
        for backend in backends {
            let options = DistillationLoss(divergence: .reverseKL, temperature: 2, hardWeight: 0.5)
            let (inPlace, inPlaceGradient) = try problem.run(options, on: backend)
            let (separate, separateGradient) = try problem.run(options, on: backend, separateGradient: true)
            XCTAssertEqual(inPlace.loss, separate.loss)
            XCTAssertEqual(inPlaceGradient, separateGradient, "in place vs separate gradient on \(backend.name)")
            var forward = options
            forward.forwardOnly = true
            let (evaluation, untouched) = try problem.run(forward, on: backend)
            XCTAssertEqual(evaluation.loss, inPlace.loss, accuracy: abs(inPlace.loss) * 1e-6)
            XCTAssertEqual(untouched, problem.student, "forward-only must leave the logits as they were")
        }
    }

    /// The hard-label cross-entropy comes out of the same pass as the soft loss, at any hard weight
    /// (0 included), equal to an fp64 CE-only reference; asking for it changes neither loss nor gradient.
    func testCrossEntropyReportedFromTheSamePass() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 31)
        var problem = LossProblem.random(&rng, rows: 11, vocabulary: 1037, scale: 30, maskedRows: [6])
        problem.labels = (0..<11).map { $0 == 4 || $0 == 6 ? -100 : Float(Int.random(in: 0..<1037, using: &rng)) }
        for r in 0..<11 where problem.labels![r] >= 0 {
            let j = Int(problem.labels![r])
            if problem.student[r * 1037 + j] == -.infinity { (problem.student[r * 1037 + j], problem.teacher[r * 1037 + j]) = (1, 1) }
        }
        let reference = problem.reference(DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, forwardOnly: true)).loss
        for backend in backends {
            for temperature: Float in [1, 2] {
                for divergence in [Divergence.forwardKL, .jensenShannon(beta: 0.5)] {
                    for hardWeight: Float in [0, 0.1] {
                        var options = DistillationLoss(divergence: divergence, temperature: temperature, hardWeight: hardWeight)
                        let context = "\(divergence) T=\(temperature) hard \(hardWeight) on \(backend.name)"
                        let (plain, plainGradient) = try problem.run(options, on: backend)
                        options.reportCrossEntropy = true
                        let (reported, gradient) = try problem.run(options, on: backend)
                        let crossEntropy = try XCTUnwrap(reported.crossEntropy, context)
                        XCTAssertEqual(Double(crossEntropy), reference, accuracy: abs(reference) * 2e-6, context)
                        XCTAssertEqual(reported.loss, plain.loss, accuracy: abs(plain.loss) * 1e-6, context)
                        let comparison = Comparison(gradient, reference: plainGradient.map(Double.init))
                        XCTAssertTrue(comparison.passes(tolerance: 1e-6), "\(context): gradient \(comparison)")
                        if hardWeight == 0 { XCTAssertNil(plain.crossEntropy, context) } else { XCTAssertNotNil(plain.crossEntropy, context) }
                    }
                }
            }
        }
    }

    /// Infinite entries: a teacher-only -inf under forward KL and a student-only -inf under reverse KL
    /// are finite losses; a fully masked row that is ignored adds nothing.
    func testOneSidedNegativeInfinity() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 11)
        var problem = LossProblem.random(&rng, rows: 4, vocabulary: 97, maskedFraction: 0)
        for r in 0..<4 { for j in stride(from: 3, to: 97, by: 5) { problem.teacher[r * 97 + j] = -.infinity } }
        try check(problem, DistillationLoss(divergence: .forwardKL, temperature: 2), on: backends, context: "fkl, teacher-only -inf")
        try check(problem, DistillationLoss(divergence: .jensenShannon(beta: 0.5)), on: backends, context: "jsd, teacher-only -inf")
        try check(problem, DistillationLoss(divergence: .totalVariation), on: backends, context: "tvd, teacher-only -inf")
        try check(problem, DistillationLoss(divergence: .skewReverseKL(alpha: 0.1)), on: backends, context: "srkl, teacher-only -inf")
        swap(&problem.student, &problem.teacher)
        try check(problem, DistillationLoss(divergence: .reverseKL, temperature: 0.5), on: backends, context: "rkl, student-only -inf")
        try check(problem, DistillationLoss(divergence: .skewForwardKL(alpha: 0.1)), on: backends, context: "sfkl, student-only -inf")
    }

    /// TAID: t = 0 gives 0, t = 1 equals the plain teacher, t in between matches the reference, and
    /// its gradient treats the student inside the target as a constant.
    func testTAIDInterpolation() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 13)
        let problem = LossProblem.random(&rng, rows: 6, vocabulary: 513)
        for t: Float in [0, 0.4, 0.9, 1] {
            for divergence in [Divergence.forwardKL, .reverseKL, .jensenShannon(beta: 0.5)] {
                try check(problem, DistillationLoss(divergence: divergence, temperature: 2, taidInterpolation: t), on: backends,
                          context: "taid t=\(t) \(divergence)")
            }
        }
        // Stop-gradient: the TAID gradient equals the plain loss's against the precomputed target.
        var mixed = problem
        mixed.teacher = zip(problem.student, problem.teacher).map { s, u in
            s == -.infinity || u == -.infinity ? -.infinity : 0.6 * s + 0.4 * u
        }
        for backend in backends {
            let (_, taidGradient) = try problem.run(DistillationLoss(temperature: 2, taidInterpolation: 0.4), on: backend)
            let plain = mixed.reference(DistillationLoss(temperature: 2))
            XCTAssertLessThanOrEqual(relativeError(taidGradient, plain.gradient), Self.tolerance, "TAID stop-gradient on \(backend.name)")
        }
        for backend in backends {
            let zero = try problem.run(DistillationLoss(temperature: 2, taidInterpolation: 0), on: backend)
            XCTAssertEqual(zero.result.loss, 0, accuracy: 1e-5, "TAID t = 0 on \(backend.name)")
        }
    }

    /// A top-k teacher with each missing-mass rule; k = V with renormalize equals the dense teacher.
    func testTopKTeacher() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 17)
        let (rows, vocabulary, k) = (5, 263, 20)
        // randn * 4: with randn * 10 the top 20 of 263 leave a rest mass near 1e-8, which fp32
        // log-probabilities only carry to a few digits (d rest / d value_i = -p_i), however it is computed.
        let dense = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary, scale: 4, maskedFraction: 0)
        var ids: [Float] = [], logits: [Float] = [], logProbabilities: [Float] = []
        for r in 0..<rows {
            let row = Array(dense.teacher[(r * vocabulary)..<((r + 1) * vocabulary)])
            let order = row.indices.sorted { row[$0] > row[$1] }.prefix(k)
            let m = Double(row.max()!)
            let lse = m + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) })
            for j in order {
                ids.append(Float(j))
                logits.append(row[j])
                logProbabilities.append(Float(Double(row[j]) - lse))
            }
        }
        for (missingMass, values) in [(MissingTeacherMass.renormalize, logits), (.uniform, logProbabilities), (.bucket, logProbabilities),
                                      (.decoupled, logProbabilities), (.prior, logProbabilities)] {
            var problem = dense
            problem.topK = (ids, values, k, missingMass)
            if missingMass == .prior { problem.tailPrior = rng.normals(vocabulary).map { 3 * $0 } }
            var divergences: [Divergence] = [.forwardKL]
            if missingMass != .bucket && missingMass != .decoupled { divergences += [.jensenShannon(beta: 0.5), .totalVariation, .skewForwardKL(alpha: 0.1)] }
            if [.uniform, .prior].contains(missingMass) { divergences += [.reverseKL, .skewReverseKL(alpha: 0.1)] }
            for divergence in divergences {
                for temperature: Float in [1, 2] {
                    try check(problem, DistillationLoss(divergence: divergence, temperature: temperature), on: backends,
                              context: "top-\(k) \(missingMass) \(divergence) T=\(temperature)")
                }
            }
        }
        // k = V, renormalized: the dense teacher in another order.
        var full = dense
        var allIDs: [Float] = [], allValues: [Float] = []
        for r in 0..<rows {
            for j in (0..<vocabulary).reversed() {
                allIDs.append(Float(j))
                allValues.append(dense.teacher[r * vocabulary + j])
            }
        }
        full.topK = (allIDs, allValues, vocabulary, .renormalize)
        for backend in backends {
            let a = try full.run(DistillationLoss(temperature: 2), on: backend)
            let b = try dense.run(DistillationLoss(temperature: 2), on: backend)
            XCTAssertLessThanOrEqual(relativeError(a.gradient, b.gradient.map(Double.init)), 1e-6)
            XCTAssertEqual(a.result.loss, b.result.loss, accuracy: abs(b.result.loss) * 1e-6)
        }
    }

    /// The bucket tail (DistillKit's symmetric_uniform): its fp64 value's finite differences equal
    /// the reference gradient (the forward KL against the teacher completed like the student's
    /// tail), at T = 1 and 2, with rows whose listed ids hold nearly all of the teacher's mass; the
    /// kernels agree with it, also with the GPU work-group layout; other divergences are refused.
    func testTopKBucketTailGradientIsTheTrueGradient() throws {
        var rng = SeededRandom(seed: 29)
        let (rows, vocabulary, k) = (4, 29, 5)
        let dense = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary, scale: 3, maskedFraction: 0)
        var problem = dense
        var ids: [Float] = [], values: [Float] = []
        for r in 0..<rows {
            let row = Array(dense.teacher[(r * vocabulary)..<((r + 1) * vocabulary)]).map { Double($0) * (r == 3 ? 4 : 1) }
            let lse = Foundation.log(row.reduce(0.0) { $0 + Foundation.exp($1) })
            for j in row.indices.sorted(by: { row[$0] > row[$1] }).prefix(k) {
                ids.append(Float(j))
                values.append(Float(row[j] - lse))
            }
        }
        problem.topK = (ids, values, k, .bucket)
        for temperature: Float in [1, 2] {
            let options = DistillationLoss(temperature: temperature)
            let reference = problem.reference(options)
            // The value from its definition: k + 1 buckets, the teacher's tempered as p^(1/T) renormalized.
            let t = Double(temperature)
            for r in 0..<rows {
                let listed = (0..<k).map { Int(ids[r * k + $0]) }
                let p = (0..<k).map { Foundation.exp(Double(values[r * k + $0])) }
                let tempered = (p + [1 - p.reduce(0, +)]).map { Foundation.pow($0, 1 / t) }
                let pt = tempered.map { $0 / tempered.reduce(0, +) }
                let z = (0..<vocabulary).map { Double(problem.student[r * vocabulary + $0]) / t }
                let lse = Foundation.log(z.reduce(0.0) { $0 + Foundation.exp($1) })
                let q = z.map { Foundation.exp($0 - lse) }
                let qt = listed.map { q[$0] } + [(0..<vocabulary).filter { !listed.contains($0) }.reduce(0.0) { $0 + q[$1] }]
                let value = zip(pt, qt).reduce(0.0) { $0 + $1.0 * Foundation.log($1.0 / $1.1) }
                XCTAssertEqual(reference.rowLosses[r], t * t * value, accuracy: 1e-9, "T=\(temperature) row \(r)")
            }
            try assertFiniteDifferences(problem, options, reference: reference, every: 3, context: "T=\(temperature)")
            let backends = try lossBackendsWithGPULayout()
            try check(problem, options, on: backends, context: "top-\(k) bucket T=\(temperature)")
        }
        for backend in try lossBackends() {
            XCTAssertThrowsError(try problem.run(DistillationLoss(divergence: .jensenShannon(beta: 0.5)), on: backend)) {
                XCTAssertTrue("\($0)".contains("bucket tail is defined for forward KL"), "\($0)")
            }
        }
    }

    /// The prior tail: the fp64 reference's completed teacher is its definition (the listed
    /// probabilities, the rest spread over the unlisted tokens as a prior's weights), so its row
    /// losses equal the KL written out, at T = 1 and 2 (the completed row tempered as p^(1/T));
    /// its finite differences equal its gradient, and the kernels agree with it (also in the GPU
    /// work-group layout), with a row whose listed mass is 1 (no rest); and reverse KL, which the
    /// spread rest keeps finite on the rows that have one.
    func testTopKPriorTailMatchesItsDefinitionAndGradient() throws {
        var rng = SeededRandom(seed: 37)
        let (rows, vocabulary, k) = (4, 31, 5)
        var problem = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary, scale: 3, maskedFraction: 0)
        var ids: [Float] = [], values: [Float] = []
        for r in 0..<rows {
            let row = Array(problem.teacher[(r * vocabulary)..<((r + 1) * vocabulary)]).map(Double.init)
            let order = row.indices.sorted { row[$0] > row[$1] }.prefix(k)
            // Row 2 lists k ids holding all the mass (a drawn target without drawn-once ids).
            let lse = Foundation.log(order.reduce(0.0) { $0 + Foundation.exp(row[$1]) } + (r == 2 ? 0 : 0.3))
            for j in order {
                ids.append(Float(j))
                values.append(Float(row[j] - lse))
            }
        }
        problem.topK = (ids, values, k, .prior)
        let prior = rng.normals(vocabulary).map { 2 * $0 }
        problem.tailPrior = prior
        for temperature: Float in [1, 2] {
            let options = DistillationLoss(temperature: temperature)
            let reference = problem.reference(options)
            let t = Double(temperature)
            for r in 0..<rows {
                let listed = Dictionary(uniqueKeysWithValues: (0..<k).map { (Int(ids[r * k + $0]), Foundation.exp(Double(values[r * k + $0]))) })
                let rest = 1 - listed.values.reduce(0, +)
                let unlisted = (0..<vocabulary).filter { listed[$0] == nil }
                let weights = unlisted.reduce(0.0) { $0 + Foundation.exp(Double(prior[$1])) }
                let p = (0..<vocabulary).map { listed[$0] ?? rest * Foundation.exp(Double(prior[$0])) / weights }
                let tempered = p.map { Foundation.pow(max($0, 0), 1 / t) }
                let pt = tempered.map { $0 / tempered.reduce(0, +) }
                let z = (0..<vocabulary).map { Double(problem.student[r * vocabulary + $0]) / t }
                let lse = Foundation.log(z.reduce(0.0) { $0 + Foundation.exp($1) })
                let value = (0..<vocabulary).reduce(0.0) { $0 + (pt[$1] > 0 ? pt[$1] * (Foundation.log(pt[$1]) - z[$1] + lse) : 0) }
                XCTAssertEqual(reference.rowLosses[r], t * t * value, accuracy: 1e-6 * max(1, value), "T=\(temperature) row \(r)")
            }
            try assertFiniteDifferences(problem, options, reference: reference, every: 3, context: "T=\(temperature)")
            try check(problem, options, on: try lossBackendsWithGPULayout(), context: "top-\(k) prior T=\(temperature)")
            // Reverse KL without row 2, whose unlisted tokens get nothing.
            var withRest = problem
            withRest.rowMask = (0..<rows).map { $0 == 2 ? 0 : 1 }
            try check(withRest, DistillationLoss(divergence: .reverseKL, temperature: temperature), on: try lossBackends(),
                      context: "top-\(k) prior rkl T=\(temperature)")
        }
    }

    /// LFM2's decoupled top-K loss: the fp64 reference equals the objective written out from its
    /// definition (two Bernoulli buckets, then the conditionals over the listed ids at T, weighted by
    /// the teacher's listed mass and T^2), its finite differences equal its gradient, and the kernels
    /// agree with it (also in the GPU work-group layout) at T = 1 and 2: rows whose listed ids hold
    /// nearly all the teacher's mass, a row with an empty slot, a sampled-style row whose values sum
    /// to 1 (no rest), hard labels; other divergences and TAID are refused.
    func testDecoupledTopKMatchesItsDefinitionAndGradient() throws {
        var rng = SeededRandom(seed: 31)
        let (rows, vocabulary, k) = (5, 37, 6)
        let dense = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary, scale: 3, maskedFraction: 0)
        var problem = dense
        var ids: [Float] = [], values: [Float] = []
        for r in 0..<rows {
            let row = Array(dense.teacher[(r * vocabulary)..<((r + 1) * vocabulary)]).map { Double($0) * (r == 3 ? 4 : 1) }
            let top = row.indices.sorted(by: { row[$0] > row[$1] }).prefix(k)
            // Row 4 is a sampled target: its listed values renormalized to sum to 1.
            let lse = Foundation.log((r == 4 ? Array(top) : Array(row.indices)).reduce(0.0) { $0 + Foundation.exp(row[$1]) })
            for (slot, j) in top.enumerated() {
                let empty = r == 2 && slot == k - 1
                ids.append(empty ? -1 : Float(j))
                values.append(empty ? -.infinity : Float(row[j] - lse))
            }
        }
        problem.topK = (ids, values, k, .decoupled)
        problem.labels = (0..<rows).map { _ in Float(Int.random(in: 0..<vocabulary, using: &rng)) }
        for temperature: Float in [1, 2] {
            let options = DistillationLoss(temperature: temperature, softWeight: 0.7)
            let reference = problem.reference(options)
            let t = Double(temperature)
            for r in 0..<rows {
                let slots = (0..<k).filter { ids[r * k + $0] >= 0 }
                let listed = slots.map { Int(ids[r * k + $0]) }
                let p = slots.map { Foundation.exp(Double(values[r * k + $0])) }
                let z = (0..<vocabulary).map { Double(problem.student[r * vocabulary + $0]) }
                let total = z.reduce(0.0) { $0 + Foundation.exp($1) }
                let a = p.reduce(0, +), b = listed.reduce(0.0) { $0 + Foundation.exp(z[$1]) } / total
                var value = a * Foundation.log(a / b)
                if 1 - a > 1e-12 { value += (1 - a) * Foundation.log((1 - a) / (1 - b)) }
                let pt = p.map { Foundation.pow($0, 1 / t) }, qt = listed.map { Foundation.exp(z[$0] / t) }
                let (sp, sq) = (pt.reduce(0, +), qt.reduce(0, +))
                value += t * t * a * zip(pt, qt).reduce(0.0) { $0 + $1.0 / sp * Foundation.log(($1.0 / sp) / ($1.1 / sq)) }
                XCTAssertEqual(reference.rowLosses[r], Double(Float(0.7)) * value, accuracy: 1e-9 * max(1, value), "T=\(temperature) row \(r)")
            }
            try assertFiniteDifferences(problem, options, reference: reference, every: 2, context: "T=\(temperature)")
            let backends = try lossBackendsWithGPULayout()
            try check(problem, options, on: backends, context: "top-\(k) decoupled T=\(temperature)")
        }
        for backend in try lossBackends() {
            for options in [DistillationLoss(divergence: .reverseKL), DistillationLoss(taidInterpolation: 0.5)] {
                XCTAssertThrowsError(try problem.run(options, on: backend)) {
                    XCTAssertTrue("\($0)".contains("decoupled tail is defined for forward KL without TAID"), "\($0)")
                }
            }
        }
    }

    /// A padded teacher vocabulary: refused with both sizes named, accepted with the truncation option.
    func testTeacherVocabularyTruncation() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 19)
        let problem = LossProblem.random(&rng, rows: 3, vocabulary: 100)
        var padded = problem
        padded.teacherStride = 107
        padded.teacher = []
        for r in 0..<3 {
            let row: [Float] = Array(problem.teacher[(r * 100)..<((r + 1) * 100)])
            padded.teacher += row + rng.normals(7, scale: 10)
        }
        for backend in backends {
            XCTAssertThrowsError(try padded.run(DistillationLoss(), on: backend)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("100") && text.contains("107") && text.contains("truncateTeacherVocabulary"), text)
            }
            let truncated = try padded.run(DistillationLoss(temperature: 2, truncateTeacherVocabulary: true), on: backend)
            let plain = try problem.run(DistillationLoss(temperature: 2), on: backend)
            XCTAssertEqual(truncated.result.loss, plain.result.loss)
            XCTAssertEqual(truncated.gradient, plain.gradient)
        }
    }

    /// The fp64 reference gradient against central differences of the fp64 loss, every `every`-th logit.
    func assertFiniteDifferences(_ problem: LossProblem, _ options: DistillationLoss, reference: DistillationReference.Output,
                                 every: Int, context: String) throws {
        let h = 1e-5
        for index in stride(from: 0, to: problem.student.count, by: every) {
            var plus = problem, minus = problem
            plus.student[index] += Float(h)
            minus.student[index] -= Float(h)
            let step = Double(plus.student[index]) - Double(minus.student[index])
            let difference = (plus.reference(options).loss - minus.reference(options).loss) / step
            XCTAssertEqual(difference, reference.gradient[index], accuracy: 1e-4 * max(1, abs(reference.gradient[index])),
                           "\(context) logit \(index)")
        }
    }

    /// The loss backends, and the OpenCL device again with the GPU work-group layout.
    func lossBackendsWithGPULayout() throws -> [any Backend] {
        var backends = try lossBackends()
        if let openCL = backends.last as? OpenCLBackend {
            backends.append(try OpenCLBackend(device: openCL.device, layout: .gpu(on: openCL.device)))
        }
        return backends
    }
}
