import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// Finite-difference checks of the fp64 reference's gradients (the kernels are compared with those
/// gradients in DivergenceTests), and the worded errors for bad input.
final class GradientAndErrorTests: XCTestCase {
    /// Central differences in fp64 of the reduced loss, for every divergence, with hard labels, an
    /// ignored row, a masked entry, row weights, T = 2 and grad_output = 1.5.
    func testReferenceGradientsByFiniteDifferences() throws {
        var rng = SeededRandom(seed: 23)
        let (rows, vocabulary) = (3, 7)
        var problem = LossProblem.random(&rng, rows: rows, vocabulary: vocabulary, scale: 3, maskedFraction: 0)
        problem.student[5] = -.infinity
        problem.teacher[5] = -.infinity
        problem.labels = [2, -100, 6]
        problem.rowMask = [0.7, 1, -1.3]  // row weights, one negative (the per-token estimator's kind)
        let divergences: [Divergence] = [.forwardKL, .reverseKL, .jensenShannon(beta: 0.3), .jensenShannon(beta: 0.99),
                                         .skewForwardKL(alpha: 0.1), .skewReverseKL(alpha: 0.1), .skewReverseKL(alpha: 0.7),
                                         .totalVariation]
        for divergence in divergences {
            let options = DistillationLoss(divergence: divergence, temperature: 2, softWeight: 0.8, hardWeight: 0.2)
            let analytic = problem.reference(options, gradOutput: 1.5).gradient
            let x = problem.student.map(Double.init)
            let h = 1e-6
            var worst = 0.0
            for i in x.indices where x[i].isFinite {
                func loss(_ delta: Double) -> Double {
                    var shifted = x
                    shifted[i] += delta
                    return 1.5 * DistillationReference.compute(options, student: shifted, rows: rows, vocabulary: vocabulary,
                                                               teacher: problem.referenceTeacher,
                                                               labels: problem.labels!.map { Int($0) },
                                                               rowMask: problem.rowMask!.map(Double.init)).loss
                }
                let numeric = (loss(h) - loss(-h)) / (2 * h)
                worst = max(worst, abs(numeric - analytic[i]))
            }
            XCTAssertLessThan(worst, 1e-6, "\(divergence): finite differences vs analytic gradient, max abs difference \(worst)")
        }
    }

    /// NaN or +inf in either input, an all -inf row that is not ignored, a label outside the
    /// vocabulary and an infinite divergence each name the first offending row.
    func testNonFiniteInputsNameTheFirstRow() throws {
        let backends = try lossBackends()
        var rng = SeededRandom(seed: 29)
        let clean = LossProblem.random(&rng, rows: 6, vocabulary: 50, maskedFraction: 0)
        var cases: [(String, LossProblem, DistillationLoss, String)] = []
        var nanStudent = clean
        nanStudent.student[3 * 50 + 17] = .nan
        nanStudent.student[5 * 50 + 1] = .nan
        cases.append(("NaN student", nanStudent, DistillationLoss(), "row 3: student logits contain NaN or +inf"))
        var infTeacher = clean
        infTeacher.teacher[2 * 50 + 49] = .infinity
        cases.append(("+inf teacher", infTeacher, DistillationLoss(divergence: .jensenShannon(beta: 0.5)), "row 2: teacher logits contain NaN or +inf"))
        var allMasked = clean
        for j in 0..<50 { allMasked.student[4 * 50 + j] = -.infinity }
        cases.append(("all -inf student row", allMasked, DistillationLoss(), "row 4: every student logit is -inf"))
        var badLabel = clean
        badLabel.labels = [1, 2, 3, 50, 4, 5]
        cases.append(("label out of range", badLabel, DistillationLoss(hardWeight: 1), "row 3: label outside the vocabulary"))
        var infinite = clean
        infinite.teacher[1 * 50 + 9] = -.infinity
        cases.append(("infinite reverse KL", infinite, DistillationLoss(divergence: .reverseKL), "row 1: the loss is inf"))
        for backend in backends {
            for (name, problem, options, expected) in cases {
                XCTAssertThrowsError(try problem.run(options, on: backend), "\(name) on \(backend.name)") { error in
                    XCTAssertTrue("\(error)".contains(expected), "\(name) on \(backend.name): \(error)")
                }
            }
            // The same bad row, ignored, is fine.
            var ignored = nanStudent
            ignored.rowMask = [1, 1, 1, 0, 1, 0]
            XCTAssertNoThrow(try ignored.run(DistillationLoss(), on: backend))
        }
    }

    /// Shape errors name both sizes.
    func testMismatchedShapesNameBothSizes() throws {
        for backend in try lossBackends() {
            let student = try backend.tensor(shape: [4, 10], label: "student logits")
            try backend.fill(student, value: 0)
            let teacherRows = try backend.tensor(shape: [5, 10], label: "teacher logits")
            let teacherColumns = try backend.tensor(shape: [4, 9], label: "teacher logits")
            let labels = try backend.tensor(shape: [3], label: "labels")
            let expectations: [(() throws -> Void, [String])] = [
                ({ _ = try DistillationLoss()(student: student, teacher: .dense(teacherRows)) }, ["4 rows", "[5, 10]"]),
                ({ _ = try DistillationLoss()(student: student, teacher: .dense(teacherColumns)) }, ["vocabulary 10", "vocabulary 9"]),
                ({ _ = try DistillationLoss(truncateTeacherVocabulary: true)(student: student, teacher: .dense(teacherColumns)) }, ["10", "9"]),
                ({ _ = try DistillationLoss()(student: student, teacher: .dense(student), labels: labels) }, ["4 rows", "has 3"]),
                ({ _ = try DistillationLoss(temperature: 0)(student: student, teacher: .dense(student)) }, ["temperature"]),
                ({ _ = try DistillationLoss(divergence: .jensenShannon(beta: 1.5))(student: student, teacher: .dense(student)) }, ["[0, 1]"]),
                ({ _ = try DistillationLoss(hardWeight: 1)(student: student, teacher: .dense(student)) }, ["needs labels"]),
            ]
            for (index, (call, fragments)) in expectations.enumerated() {
                XCTAssertThrowsError(try call(), "case \(index) on \(backend.name)") { error in
                    for fragment in fragments {
                        XCTAssertTrue("\(error)".contains(fragment), "case \(index) on \(backend.name): '\(fragment)' not in: \(error)")
                    }
                }
            }
        }
    }
}
