import Checkpoint
import Foundation
import Losses
import Models
import Tensor
import TestSupport
import Training
import XCTest

/// Hidden-state hints through the trainer's wiring (pairs, learned projections, gradients into the
/// student's residual streams): the value and every gradient against an fp64 reference written here,
/// by central differences, on both backends.
final class HiddenStateHintsTests: XCTestCase {
    static let config = StudentGradientTests.config  // width 32, 2 blocks
    static let teacherWidth = 48
    static let pairs: [(student: Int, teacher: Int)] = [(0, 1), (1, 0), (1, 1)]

    /// weight * mean over pairs of mean over rows of hint(P_i h_s, h_t), in fp64; P_i [C_t, C_s] or none.
    static func referenceLoss(kind: HiddenStateHintLoss.Kind, weight: Double, hidden: [Int: [Double]], teacher: [[Double]],
                              projections: [[Double]], rows: Int) -> Double {
        let (cs, ct) = (config.width, projections.isEmpty ? config.width : teacherWidth)
        var total = 0.0
        for (i, pair) in pairs.enumerated() {
            for row in 0..<rows {
                let h = Array(hidden[pair.student]![(row * cs)..<((row + 1) * cs)])
                let s = projections.isEmpty ? h : (0..<ct).map { o in (0..<cs).reduce(0.0) { $0 + projections[i][o * cs + $1] * h[$1] } }
                let t = Array(teacher[pair.teacher][(row * ct)..<((row + 1) * ct)])
                switch kind {
                case .mse:
                    total += zip(s, t).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(ct)
                case .cosine:
                    let dot = zip(s, t).reduce(0.0) { $0 + $1.0 * $1.1 }
                    let ns = s.reduce(0.0) { $0 + $1 * $1 }.squareRoot(), nt = t.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
                    total += 1 - dot / (ns * nt)
                }
            }
        }
        return weight * total / Double(rows * pairs.count)
    }

    func testValueAndGradientsMatchTheFP64Reference() throws {
        let tokens: [[Int32]] = [[3, 9, 27, 1, 44], [8, 8, 2, 40, 13]]
        let rows = tokens.count * tokens[0].count
        for kind in HiddenStateHintLoss.Kind.allCases {
            for teacherWidth in [Self.config.width, Self.teacherWidth] {
                var rng = SeededRandom(seed: 17)
                let teacher = (0..<2).map { _ in rng.normals(rows * teacherWidth, scale: 2) }
                var resultsByBackend: [[Float]] = []
                for backend in try TestBackends.all() {
                    let student = try StudentModel(parameters: StudentGradientTests.randomParameters(Self.config, seed: 5), backend: backend)
                    let hints = try HiddenStateHints(pairs: Self.pairs, weight: 0.7, kind: kind, studentWidth: Self.config.width,
                                                     teacherWidth: teacherWidth, seed: 2, backend: backend)
                    XCTAssertEqual(hints.projections.count, teacherWidth == Self.config.width ? 0 : Self.pairs.count)
                    _ = try student.forward(tokens)
                    let teacherHidden = try teacher.map { try backend.tensor($0, shape: [rows, teacherWidth], label: "teacher hidden") }
                    let (value, gradients) = try hints.apply(student: student, teacherHidden: teacherHidden, gradOutput: 1)
                    let hidden = try Dictionary(uniqueKeysWithValues: [0, 1].map { ($0, try student.hiddenState(after: $0).toArray().map(Double.init)) })
                    let projections = try hints.projections.map { try $0.value.toArray().map(Double.init) }
                    let teacher64 = teacher.map { $0.map(Double.init) }
                    func loss(_ h: [Int: [Double]], _ p: [[Double]]) -> Double {
                        Self.referenceLoss(kind: kind, weight: 0.7, hidden: h, teacher: teacher64, projections: p, rows: rows)
                    }
                    let label = "\(kind) C_t=\(teacherWidth) on \(backend.name)"
                    // The value is the mean before the weight.
                    XCTAssertEqual(0.7 * Double(value), loss(hidden, projections), accuracy: 1e-5, label)

                    let step = 1e-4
                    for block in [0, 1] {
                        let analytic = try gradients[block]!.toArray()
                        for index in stride(from: 0, to: hidden[block]!.count, by: 23) {
                            var up = hidden, down = hidden
                            up[block]![index] += step
                            down[block]![index] -= step
                            let numeric = (loss(up, projections) - loss(down, projections)) / (2 * step)
                            XCTAssertEqual(Double(analytic[index]), numeric, accuracy: 1e-4 * max(1, abs(numeric)), "dh block \(block)[\(index)], \(label)")
                        }
                    }
                    for (i, projection) in hints.projections.enumerated() {
                        let analytic = try projection.gradient.toArray()
                        for index in stride(from: 0, to: analytic.count, by: 37) {
                            var up = projections, down = projections
                            up[i][index] += step
                            down[i][index] -= step
                            let numeric = (loss(hidden, up) - loss(hidden, down)) / (2 * step)
                            XCTAssertEqual(Double(analytic[index]), numeric, accuracy: 1e-4 * max(1, abs(numeric)), "dP\(i)[\(index)], \(label)")
                        }
                    }
                    var results: [Float] = [value]
                    results += try gradients[0]!.toArray()
                    results += try gradients[1]!.toArray()
                    for projection in hints.projections { results += try projection.gradient.toArray() }
                    resultsByBackend.append(results)
                }
                let comparison = Comparison(resultsByBackend[1], reference: resultsByBackend[0].map(Double.init))
                XCTAssertTrue(comparison.passes(tolerance: 1e-5), "OpenCL vs CPU, \(kind) C_t=\(teacherWidth): \(comparison)")
            }
        }
    }
}
