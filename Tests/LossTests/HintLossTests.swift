import Foundation
import Losses
import Tensor
import TestSupport
import XCTest

/// ``HiddenStateHintLoss`` on both backends against the fp64 reference of TestSupport
/// (`HintReference`) and against central differences of it, the scaling by gradOutput, and the
/// worded errors.
final class HintLossTests: XCTestCase {
    /// One hint problem in host arrays: hidden states s, t `[rows, cols]`.
    struct HintProblem {
        var rows: Int
        var cols: Int
        var student: [Float]
        var teacher: [Float]

        static func random(_ rng: inout SeededRandom, rows: Int, cols: Int, scale: Float = 10) -> HintProblem {
            HintProblem(rows: rows, cols: cols, student: rng.normals(rows * cols, scale: scale),
                        teacher: rng.normals(rows * cols, scale: scale))
        }

        /// `weight * mean over rows` of the fp64 row losses, at student values `s`.
        func referenceLoss(_ hint: HiddenStateHintLoss, student s: [Double]) -> Double {
            let losses = HintReference.rowLosses(s, teacher.map(Double.init), rows: rows, cols: cols, cosine: hint.kind == .cosine)
            return Double(hint.weight) * losses.reduce(0, +) / Double(rows)
        }

        /// `gradOutput * d(weight * mean loss)/ds` in fp64.
        func referenceGradient(_ hint: HiddenStateHintLoss, gradOutput: Double) -> [Double] {
            let scale = gradOutput * Double(hint.weight) / Double(rows)
            return HintReference.rowLossGradients(student.map(Double.init), teacher.map(Double.init), rows: rows, cols: cols,
                                                  cosine: hint.kind == .cosine).map { scale * $0 }
        }

        /// The loss and the gradient from `backend`.
        func run(_ hint: HiddenStateHintLoss, on backend: any Backend, gradOutput: Float = 1) throws -> (loss: Float, gradient: [Float]) {
            let s = try backend.tensor(student, shape: [rows, cols], label: "student hidden state")
            let t = try backend.tensor(teacher, shape: [rows, cols], label: "teacher hidden state")
            let gradient = try backend.tensor(shape: [rows, cols], label: "student hidden state gradient")
            let loss = try hint(student: s, teacher: t, gradient: gradient, gradOutput: gradOutput)
            return (loss, try gradient.toArray())
        }

        /// The largest over rows of max_j |x - ref| / max(max_j |ref|, the row's natural gradient size):
        /// mse 2 |scale| rms(s - t) / cols, cosine |scale| / max(|s|, eps) (the bound of its entries
        /// is twice that). Rows are compared one by one: a zero student row's cosine gradient is 1e8
        /// times larger than the others'.
        func worstRowError(_ values: [Float], _ reference: [Double], kind: HiddenStateHintLoss.Kind, scale: Double) -> Double {
            (0..<rows).map { r -> Double in
                let range = (r * cols)..<((r + 1) * cols)
                let s = student[range].map(Double.init), t = teacher[range].map(Double.init)
                let unit: Double
                if kind == .mse {
                    let meanSquare = zip(s, t).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(cols)
                    unit = 2 * abs(scale) * meanSquare.squareRoot() / Double(cols)
                } else {
                    unit = abs(scale) / max(s.reduce(0) { $0 + $1 * $1 }.squareRoot(), HintReference.epsilon)
                }
                return relativeError(Array(values[range]), Array(reference[range]), unit: unit)
            }.max() ?? 0
        }
    }

    /// Unit and odd widths, one row and 41, randn * 10: loss and gradient against fp64, with a weight.
    func testLossAndGradientMatchFP64Reference() throws {
        var rng = SeededRandom(seed: 41)
        let shapes = [(1, 1), (41, 1), (1, 1271), (41, 1271), (3, 17), (2, 4096)]
        for backend in try lossBackends() {
            for kind in HiddenStateHintLoss.Kind.allCases {
                for (rows, cols) in shapes {
                    let problem = HintProblem.random(&rng, rows: rows, cols: cols)
                    let hint = HiddenStateHintLoss(kind: kind, weight: 0.7)
                    let (loss, gradient) = try problem.run(hint, on: backend)
                    let what = "\(kind) [\(rows), \(cols)] on \(backend.name)"
                    let lossError = relativeError(loss, problem.referenceLoss(hint, student: problem.student.map(Double.init)), unit: 1)
                    XCTAssertLessThan(lossError, 1e-5, "\(what): loss \(loss)")
                    let gradientError = problem.worstRowError(gradient, problem.referenceGradient(hint, gradOutput: 1), kind: kind,
                                                              scale: 0.7 / Double(rows))
                    XCTAssertLessThan(gradientError, 1e-5, "\(what): gradient")
                }
            }
        }
    }

    /// Cosine with a zero student row, a zero teacher row and a row where both are zero: loss 1 on
    /// each, finite gradients (-t / (eps |t|) scaled, 0, 0), the other rows unaffected.
    func testCosineZeroRowsStayFinite() throws {
        var rng = SeededRandom(seed: 43)
        for backend in try lossBackends() {
            for (rows, cols) in [(4, 1271), (4, 1), (41, 64)] {
                var problem = HintProblem.random(&rng, rows: rows, cols: cols)
                for j in 0..<cols {
                    problem.student[0 * cols + j] = 0
                    problem.teacher[1 * cols + j] = 0
                    problem.student[2 * cols + j] = 0
                    problem.teacher[2 * cols + j] = 0
                }
                let hint = HiddenStateHintLoss(kind: .cosine)
                let (loss, gradient) = try problem.run(hint, on: backend)
                let what = "[\(rows), \(cols)] on \(backend.name)"
                XCTAssertTrue(loss.isFinite && gradient.allSatisfy(\.isFinite), "\(what): loss \(loss), gradient not finite")
                XCTAssertLessThan(relativeError(loss, problem.referenceLoss(hint, student: problem.student.map(Double.init)), unit: 1),
                                  1e-5, "\(what): loss \(loss)")
                XCTAssertLessThan(problem.worstRowError(gradient, problem.referenceGradient(hint, gradOutput: 1), kind: .cosine,
                                                        scale: 1 / Double(rows)), 1e-5, "\(what): gradient")
                XCTAssertTrue(gradient[cols..<(3 * cols)].allSatisfy { $0 == 0 }, "\(what): rows with a zero teacher have gradient 0")
            }
        }
    }

    /// The kernels' gradients against central differences of the fp64 loss, both kinds, widths
    /// with and without a tail of fewer than 16, weight 0.6 and gradOutput -1.5.
    func testGradientsByFiniteDifferences() throws {
        var rng = SeededRandom(seed: 47)
        for backend in try lossBackends() {
            for kind in HiddenStateHintLoss.Kind.allCases {
                for (rows, cols) in [(3, 5), (2, 19), (1, 32)] {
                    let problem = HintProblem.random(&rng, rows: rows, cols: cols, scale: 1)
                    let hint = HiddenStateHintLoss(kind: kind, weight: 0.6)
                    let gradOutput = -1.5
                    let (_, gradient) = try problem.run(hint, on: backend, gradOutput: Float(gradOutput))
                    let x = problem.student.map(Double.init)
                    let h = 1e-6
                    let numeric = x.indices.map { i -> Double in
                        var shifted = x
                        shifted[i] = x[i] + h
                        let up = problem.referenceLoss(hint, student: shifted)
                        shifted[i] = x[i] - h
                        let down = problem.referenceLoss(hint, student: shifted)
                        return gradOutput * (up - down) / (2 * h)
                    }
                    let error = problem.worstRowError(gradient, numeric, kind: kind, scale: gradOutput * 0.6 / Double(rows))
                    XCTAssertLessThan(error, 1e-4, "\(kind) [\(rows), \(cols)] on \(backend.name): kernel vs central differences")
                }
            }
        }
    }

    /// gradOutput multiplies the gradient and leaves the loss alone.
    func testGradOutputScalesTheGradient() throws {
        var rng = SeededRandom(seed: 53)
        for backend in try lossBackends() {
            for kind in HiddenStateHintLoss.Kind.allCases {
                let problem = HintProblem.random(&rng, rows: 5, cols: 300)
                let hint = HiddenStateHintLoss(kind: kind)
                let unit = try problem.run(hint, on: backend)
                let scaled = try problem.run(hint, on: backend, gradOutput: -2.5)
                XCTAssertEqual(scaled.loss, unit.loss, "\(kind) on \(backend.name): the loss does not depend on gradOutput")
                XCTAssertLessThan(relativeError(scaled.gradient, unit.gradient.map { -2.5 * Double($0) }), 1e-6,
                                  "\(kind) on \(backend.name): gradient with gradOutput -2.5")
            }
        }
    }

    /// Mismatched shapes name both shapes; a gradient sharing memory with an input, a tensor on
    /// another backend and a non-finite weight are refused.
    func testBadArgumentsAreNamed() throws {
        let backends = try lossBackends()
        for backend in backends {
            let student = try backend.tensor(shape: [4, 8], label: "student hidden state")
            try backend.fill(student, value: 1)
            let wide = try backend.tensor(shape: [4, 9], label: "teacher hidden state")
            let tall = try backend.tensor(shape: [5, 8], label: "teacher hidden state")
            let flat = try backend.tensor(shape: [32], label: "flat student")
            let teacher = try backend.tensor(shape: [4, 8], label: "teacher hidden state")
            try backend.fill(teacher, value: 2)
            let hint = HiddenStateHintLoss()
            var cases: [(String, () throws -> Float, [String])] = [
                ("wider teacher", { try hint(student: student, teacher: wide) }, ["[4, 8]", "[4, 9]"]),
                ("more teacher rows", { try hint(student: student, teacher: tall) }, ["[4, 8]", "[5, 8]"]),
                ("gradient shape", { try hint(student: student, teacher: teacher, gradient: wide) }, ["[4, 9]", "[4, 8]"]),
                ("rank 1 student", { try hint(student: flat, teacher: flat) }, ["[rows, width]", "[32]"]),
                ("gradient over the student", { try hint(student: student, teacher: teacher, gradient: student) }, ["shares memory"]),
                ("gradient over the teacher rows", {
                    let shared = try backend.tensor(shape: [12, 8], label: "shared hidden states")
                    return try hint(student: shared.rows(0..<4), teacher: shared.rows(4..<8), gradient: shared.rows(6..<10))
                }, ["shares memory"]),
                ("infinite weight", { try HiddenStateHintLoss(weight: .infinity)(student: student, teacher: teacher) }, ["weight"]),
            ]
            if let other = backends.first(where: { $0 !== backend }) {
                let elsewhere = try other.tensor(shape: [4, 8], label: "teacher elsewhere")
                cases.append(("teacher on another backend", { try hint(student: student, teacher: elsewhere) }, ["lives on"]))
            }
            for (name, call, fragments) in cases {
                XCTAssertThrowsError(try call(), "\(name) on \(backend.name)") { error in
                    for fragment in fragments {
                        XCTAssertTrue("\(error)".contains(fragment), "\(name) on \(backend.name): '\(fragment)' not in: \(error)")
                    }
                }
            }
        }
    }

    /// NaN or inf in either input names the first such row and the tensor; values whose squares
    /// overflow fp32 are reported as too large rather than giving a wrong loss.
    func testNonFiniteInputsNameTheFirstRow() throws {
        var rng = SeededRandom(seed: 59)
        let clean = HintProblem.random(&rng, rows: 6, cols: 40)
        var nanStudent = clean
        nanStudent.student[3 * 40 + 17] = .nan
        nanStudent.student[5 * 40 + 1] = .nan
        var infTeacher = clean
        infTeacher.teacher[2 * 40 + 39] = -.infinity
        var huge = clean
        huge.student[1 * 40 + 5] = 3e19
        huge.teacher[1 * 40 + 5] = -3e19
        let cases: [(String, HintProblem, [String])] = [
            ("NaN student", nanStudent, ["row 3", "student hidden state", "nan", "column 17"]),
            ("-inf teacher", infTeacher, ["row 2", "teacher hidden state", "-inf", "column 39"]),
            ("squares beyond fp32", huge, ["row 1", "too large"]),
        ]
        for backend in try lossBackends() {
            for kind in HiddenStateHintLoss.Kind.allCases {
                for (name, problem, fragments) in cases {
                    XCTAssertThrowsError(try problem.run(HiddenStateHintLoss(kind: kind), on: backend), "\(name), \(kind) on \(backend.name)") { error in
                        XCTAssertTrue(error is HintLossError, "\(name), \(kind) on \(backend.name): \(error)")
                        for fragment in fragments {
                            XCTAssertTrue("\(error)".contains(fragment), "\(name), \(kind) on \(backend.name): '\(fragment)' not in: \(error)")
                        }
                    }
                }
            }
        }
    }
}
