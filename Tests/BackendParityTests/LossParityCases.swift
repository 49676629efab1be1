import Foundation
import Losses
import Tensor
import TestSupport

/// The loss kernels' rows of the parity table: `distill_loss_rows` for every divergence (with
/// `distill_count_valid_rows` behind the mean), and the unfused baseline's `kl_div_rows` and
/// `kl_div_backward_rows`. Inputs: wide logits (randn * 10), a shared 5% vocabulary mask of -inf,
/// the last row all -inf and masked out. Then `hint_loss_rows` for both kinds on hidden states.
extension ParityTable {
    static let lossShapes = [[1, 1], [3, 17], [41, 1271], [2, 32003]]

    static let lossCases: [ParityCase] = [
        Divergence.forwardKL, .reverseKL, .jensenShannon(beta: 0.5), .skewForwardKL(alpha: 0.1), .skewReverseKL(alpha: 0.1),
        .totalVariation,
    ].map(distillCase) + [MissingTeacherMass.renormalize, .uniform, .bucket, .decoupled, .prior].map(topKCase)
        + [countedMeanCase, klDivCase, klDivBackwardCase] + HiddenStateHintLoss.Kind.allCases.map(hintCase)

    /// Student, teacher and row weights with a shared vocabulary mask; the last of several rows all -inf and masked out.
    static func lossInputs(_ rng: inout SeededRandom, rows: Int, cols: Int) -> (student: [Float], teacher: [Float], mask: [Float]) {
        let masked: Set<Int> = rows > 1 ? [rows - 1] : []
        var student = rng.logits(rows: rows, cols: cols, scale: 10, maskedRows: masked)
        var teacher = rng.logits(rows: rows, cols: cols, scale: 10, maskedRows: masked)
        if cols > 1 {
            for i in 0..<(rows * cols) where i % cols != 0 && Double.random(in: 0..<1, using: &rng) < 0.05 {
                student[i] = -.infinity
                teacher[i] = -.infinity
            }
        }
        // Row weights (the mask's entries scale each row; 0 drops it): positive, one negative.
        return (student, teacher, (0..<rows).map { masked.contains($0) ? 0 : $0 == 1 ? -0.5 : 0.25 + Float($0 % 3) * 0.75 })
    }

    /// Runs a loss in place on operand 0 and writes its row losses into operand 3.
    static func runLoss(_ options: DistillationLoss, labels: Int? = nil) -> (any Backend, [Tensor]) throws -> Void {
        { backend, t in
            let result = try options(student: t[0], teacher: .dense(t[1]), labels: labels.map { t[$0] }, rowMask: t[2])
            try result.rowLosses.withUnsafeBufferPointer { try backend.upload($0, to: t[3]) }
        }
    }

    static func referenceLoss(_ options: DistillationLoss, rows: Int, cols: Int, labels: [Int]? = nil) -> ([[Double]]) -> [[Double]] {
        { inputs in
            let output = DistillationReference.compute(options, student: inputs[0], rows: rows, vocabulary: cols,
                                                       teacher: .dense(inputs[1], stride: cols), labels: labels,
                                                       rowMask: inputs[2])
            return [output.gradient, output.rowLosses]
        }
    }

    /// One divergence, T in {0.5, 2}, summed over rows so the gradient keeps its natural size.
    static func distillCase(_ divergence: Divergence) -> ParityCase {
        ParityCase(op: "distill_loss_rows \(divergence)", tolerance: 2e-5) { rng in
            lossShapes.flatMap { shape in
                [Float(0.5), 2].map { temperature in
                    let (rows, cols) = (shape[0], shape[1])
                    let inputs = lossInputs(&rng, rows: rows, cols: cols)
                    let options = DistillationLoss(divergence: divergence, temperature: temperature, reduction: .sum)
                    return ParityInstance(
                        description: "\(rows)x\(cols) T=\(temperature)",
                        operands: [Operand(shape: shape, values: inputs.student), Operand(shape: shape, values: inputs.teacher),
                                   Operand(shape: [rows], values: inputs.mask), Operand(shape: [rows], values: rng.normals(rows))],
                        outputs: [0, 3], run: runLoss(options), reference: referenceLoss(options, rows: rows, cols: cols))
                }
            }
        }
    }

    /// A top-k teacher of log-probabilities (the top min(V, 7) of the shared-mask teacher / 4, so -inf
    /// values are listed where a row has fewer finite entries; row 1's last slot empty, id -1;
    /// the student unmasked for the uniform rule, whose rest reaches every unlisted token)
    /// with each missing-mass rule, forward KL, T in {0.5, 2}, hard labels at weight 0.5;
    /// `distill_decoupled_topk_rows` for the decoupled rule; `distill_sparse_teacher_rows` for the
    /// renormalized one (also at T = 1, where the cross-entropy shares the soft part's exps, and with
    /// row 0's last slot listing its first id again, which counts once, at the later slot).
    static func topKCase(_ missingMass: MissingTeacherMass) -> ParityCase {
        let kernel = missingMass == .decoupled ? "distill_decoupled_topk_rows"
            : missingMass == .renormalize ? "distill_sparse_teacher_rows" : "distill_loss_rows top-k \(missingMass)"
        // The uniform rest gives every one of the V - k unlisted tokens a share, so the forward KL
        // sums V comparable fp32 terms (about 3e-5 relative at V = 32003), where a dense teacher's mass sits on few.
        // The prior rest reaches every unlisted token too, with weights exp(3 randn) (a prior row shared by all rows).
        let spread = [MissingTeacherMass.uniform, .prior].contains(missingMass)
        return ParityCase(op: kernel, tolerance: spread ? 5e-5 : 2e-5) { rng in
            lossShapes.flatMap { shape in
                (missingMass == .renormalize ? [Float(0.5), 1, 2] : [0.5, 2]).map { temperature in
                    let (rows, cols) = (shape[0], shape[1]), k = min(cols, 7)
                    var inputs = lossInputs(&rng, rows: rows, cols: cols)
                    if spread {
                        // The rest reaches every unlisted token: a student -inf there would make fkl infinite.
                        for i in inputs.student.indices where inputs.student[i] == -.infinity && inputs.mask[i / cols] != 0 { inputs.student[i] = -20 }
                    }
                    // randn * 2.5 teacher logits: with randn * 10 the unlisted rest is so small that its fp32
                    // value (1 - the listed mass, from fp32 log-probabilities) keeps only a few digits.
                    let logProbabilities = referenceSoftmax(inputs.teacher.map { Double($0) / 4 }, rows: rows, cols: cols, temperature: 1, logarithm: true)
                    var ids: [Float] = [], values: [Float] = []
                    for r in 0..<rows {
                        let row = (0..<cols).map { logProbabilities[r * cols + $0] }
                        for (slot, j) in row.indices.sorted(by: { row[$0] > row[$1] }).prefix(k).enumerated() {
                            let empty = r == 1 && k > 1 && slot == k - 1
                            ids.append(empty ? -1 : Float(j))
                            values.append(empty ? -.infinity : Float(row[j]))
                        }
                    }
                    if missingMass == .renormalize && k > 2 { ids[k - 1] = ids[0] }
                    let labels = (0..<rows).map { r -> Int in
                        let label = Int.random(in: 0..<cols, using: &rng)
                        inputs.student[r * cols + label] = inputs.mask[r] == 0 ? -.infinity : 1
                        return label
                    }
                    let options = DistillationLoss(temperature: temperature, hardWeight: 0.5, reduction: .sum)
                    let prior = rng.normals(cols).map { 3 * $0 }
                    return ParityInstance(
                        description: "\(rows)x\(cols) k=\(k) T=\(temperature)",
                        operands: [Operand(shape: shape, values: inputs.student), Operand(shape: [rows, k], values: ids),
                                   Operand(shape: [rows, k], values: values), Operand(shape: [rows], values: inputs.mask),
                                   Operand(shape: [rows], values: rng.normals(rows)), Operand(shape: [rows], values: labels.map(Float.init)),
                                   Operand(shape: [cols], values: prior)],
                        outputs: [0, 4],
                        run: { backend, t in
                            let teacher = TopKTeacher(ids: t[1], values: t[2], missingMass: missingMass, tailPrior: missingMass == .prior ? t[6] : nil)
                            let result = try options(student: t[0], teacher: .topK(teacher), labels: t[5], rowMask: t[3])
                            try result.rowLosses.withUnsafeBufferPointer { try backend.upload($0, to: t[4]) }
                        },
                        reference: { inputs in
                            let output = DistillationReference.compute(
                                options, student: inputs[0], rows: rows, vocabulary: cols,
                                teacher: .topK(ids: inputs[1].map { Int($0) }, values: inputs[2], k: k, missingMass: missingMass,
                                               tailPrior: missingMass == .prior ? inputs[6] : nil),
                                labels: labels, rowMask: inputs[3])
                            return [output.gradient, output.rowLosses]
                        })
                }
            }
        }
    }

    /// The mean over labelled rows (distill_count_valid_rows feeds the gradient's 1 / N) with hard labels.
    static let countedMeanCase = ParityCase(op: "distill_count_valid_rows + distill_loss_rows mean, hard labels", tolerance: 2e-5) { rng in
        lossShapes.map { shape in
            let (rows, cols) = (shape[0], shape[1])
            var inputs = lossInputs(&rng, rows: rows, cols: cols)
            var labels = (0..<rows).map { r -> Int in r % 3 == 1 ? -100 : Int.random(in: 0..<cols, using: &rng) }
            for r in 0..<rows where labels[r] >= 0 {
                if inputs.student[r * cols + labels[r]] == -.infinity { labels[r] = 0 }
                inputs.student[r * cols + labels[r]] = 1
                inputs.teacher[r * cols + labels[r]] = 1
            }
            let options = DistillationLoss(temperature: 2, hardWeight: 0.5)
            return ParityInstance(
                description: "\(rows)x\(cols)",
                operands: [Operand(shape: shape, values: inputs.student), Operand(shape: shape, values: inputs.teacher),
                           Operand(shape: [rows], values: inputs.mask), Operand(shape: [rows], values: rng.normals(rows)),
                           Operand(shape: [rows], values: labels.map(Float.init))],
                outputs: [0, 3], run: runLoss(options, labels: 4),
                reference: referenceLoss(options, rows: rows, cols: cols, labels: labels))
        }
    }

    /// Log-probabilities at T = 1 of the shared-mask inputs (the baseline's log_softmax_rows output).
    static func logProbabilityInputs(_ rng: inout SeededRandom, rows: Int, cols: Int) -> ([Float], [Float]) {
        let inputs = lossInputs(&rng, rows: rows, cols: cols)
        let ls = referenceSoftmax(inputs.student.map(Double.init), rows: rows, cols: cols, temperature: 1, logarithm: true)
        let lt = referenceSoftmax(inputs.teacher.map(Double.init), rows: rows, cols: cols, temperature: 1, logarithm: true)
        // Masked rows stay -inf in both: kl_div_rows gives 0 for them.
        return (ls.map(Float.init), lt.map(Float.init))
    }

    static let klDivCase = ParityCase(op: "kl_div_rows", tolerance: 1e-5) { rng in
        lossShapes.map { shape in
            let (rows, cols) = (shape[0], shape[1])
            let (ls, lt) = logProbabilityInputs(&rng, rows: rows, cols: cols)
            return ParityInstance(
                description: "\(rows)x\(cols)",
                operands: [Operand(shape: shape, values: ls), Operand(shape: shape, values: lt), Operand(shape: [rows], values: rng.normals(rows))],
                outputs: [2],
                run: { backend, t in
                    try (backend as! any DistillationLossKernel).enqueueKLDivRows(logStudent: t[0], logTeacher: t[1], into: t[2])
                },
                reference: { inputs in
                    [(0..<rows).map { r in
                        (0..<cols).reduce(0.0) { sum, j in
                            let (s, u) = (inputs[0][r * cols + j], inputs[1][r * cols + j])
                            return u == -.infinity ? sum : sum + Foundation.exp(u) * (u - s)
                        }
                    }]
                })
        }
    }

    static let klDivBackwardCase = ParityCase(op: "kl_div_backward_rows", tolerance: 1e-6) { rng in
        lossShapes.map { shape in
            let (rows, cols) = (shape[0], shape[1])
            let (ls, lt) = logProbabilityInputs(&rng, rows: rows, cols: cols)
            let scale: Float = 0.75
            return ParityInstance(
                description: "\(rows)x\(cols) scale=\(scale)",
                operands: [Operand(shape: shape, values: ls), Operand(shape: shape, values: lt), Operand(shape: shape, values: rng.normals(rows * cols))],
                outputs: [2],
                run: { backend, t in
                    try (backend as! any DistillationLossKernel).enqueueKLDivBackward(logStudent: t[0], logTeacher: t[1], into: t[2], scale: scale)
                },
                reference: { inputs in
                    [zip(inputs[0], inputs[1]).map { Double(scale) * (Foundation.exp($0) - Foundation.exp($1)) }]
                })
        }
    }

    /// Row losses and gradient of `hint_loss_rows` on hidden states randn * 10; with 3 rows or more,
    /// teacher row 1 and both rows 2 are zero (cosine: loss 1, gradient 0). grad_scale brings the
    /// gradient entries to order 1 (mse: C / 2; cosine: 10 sqrt(C)), so the table's max(1, |ref|)
    /// normalization measures them relative to their size.
    static func hintCase(_ kind: HiddenStateHintLoss.Kind) -> ParityCase {
        ParityCase(op: "hint_loss_rows \(kind)", tolerance: 1e-5) { rng in
            lossShapes.map { shape in
                let (rows, cols) = (shape[0], shape[1])
                var student = rng.normals(rows * cols, scale: 10), teacher = rng.normals(rows * cols, scale: 10)
                if rows >= 3 {
                    for j in 0..<cols {
                        teacher[cols + j] = 0
                        student[2 * cols + j] = 0
                        teacher[2 * cols + j] = 0
                    }
                }
                let gradScale = kind == .mse ? Float(cols) / 2 : 10 * Float(cols).squareRoot()
                return ParityInstance(
                    description: "\(rows)x\(cols)\(rows >= 3 ? ", zero rows" : ""), grad_scale=\(gradScale)",
                    operands: [Operand(shape: shape, values: student), Operand(shape: shape, values: teacher),
                               Operand(shape: [rows], values: rng.normals(rows)), Operand(shape: shape, values: rng.normals(rows * cols))],
                    outputs: [2, 3],
                    run: { backend, t in
                        try (backend as! any HintLossKernel).enqueueHintLossRows(
                            HintLossLaunch(student: t[0], teacher: t[1], rowLoss: t[2], gradient: t[3], kind: kind.kernelKind, gradScale: gradScale))
                    },
                    reference: { inputs in
                        let cosine = kind == .cosine
                        let gradient = HintReference.rowLossGradients(inputs[0], inputs[1], rows: rows, cols: cols, cosine: cosine)
                        return [HintReference.rowLosses(inputs[0], inputs[1], rows: rows, cols: cols, cosine: cosine),
                                gradient.map { Double(gradScale) * $0 }]
                    })
            }
        }
    }
}
