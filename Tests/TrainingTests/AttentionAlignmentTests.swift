import Foundation
import Tensor
import TestSupport
import Training
import XCTest

/// Attention alignment (A2D) against an fp64 reference written here from the definition: the loss
/// value, its gradients with respect to the student's maps and the alignment module by central
/// differences of that reference, both backends, and the memory-budget refusal.
final class AttentionAlignmentTests: XCTestCase {
    /// B sequences of T tokens; student blocks 0 and 2 of 3 heads, teacher block 1 of 2 heads.
    struct Problem {
        let batch: Int, length: Int, studentHeads = 3, teacherHeads = 2
        let studentBlocks = [0, 2], teacherBlocks = [1]
        /// Per block, [B, H, T, T] causal probability maps (rows of a causal softmax of wide scores).
        var studentMaps: [Int: [Float]] = [:]
        var teacherMaps: [Int: [Float]] = [:]

        init(batch: Int, length: Int, seed: UInt64) {
            self.batch = batch
            self.length = length
            var rng = SeededRandom(seed: seed)
            func causalMaps(heads: Int) -> [Float] {
                var maps = [Float](repeating: 0, count: batch * heads * length * length)
                for row in 0..<(batch * heads * length) {
                    let q = row % length
                    let scores = rng.normals(q + 1, scale: 3).map(Double.init)
                    let m = scores.max()!
                    let total = scores.reduce(0) { $0 + exp($1 - m) }
                    for k in 0...q { maps[row * length + k] = Float(exp(scores[k] - m) / total) }
                }
                return maps
            }
            for block in studentBlocks { studentMaps[block] = causalMaps(heads: studentHeads) }
            for block in teacherBlocks { teacherMaps[block] = causalMaps(heads: teacherHeads) }
        }

        var studentChannels: Int { studentBlocks.count * studentHeads }
        var teacherChannels: Int { teacherBlocks.count * teacherHeads }

        /// (1/B) sum over sequences and teacher heads of KL(softmax(teacher map) || softmax(W student maps + b)),
        /// each softmax over the causal positions (k <= q), in fp64. module is [Ct, Cs + 1], the bias last.
        func referenceLoss(module: [Double], studentMaps: [Int: [Double]]) -> Double {
            let (t, cs) = (length, studentChannels)
            var total = 0.0
            for b in 0..<batch {
                for j in 0..<teacherChannels {
                    let teacherBlock = teacherBlocks[j / teacherHeads], teacherHead = j % teacherHeads
                    var teacherRow: [Double] = [], alignedRow: [Double] = []
                    for q in 0..<t {
                        for k in 0...q {
                            let position = q * t + k
                            teacherRow.append(Double(teacherMaps[teacherBlock]![((b * teacherHeads + teacherHead) * t * t) + position]))
                            var value = module[j * (cs + 1) + cs]
                            for i in 0..<cs {
                                let block = studentBlocks[i / studentHeads], head = i % studentHeads
                                value += module[j * (cs + 1) + i] * studentMaps[block]![((b * studentHeads + head) * t * t) + position]
                            }
                            alignedRow.append(value)
                        }
                    }
                    func logSoftmax(_ x: [Double]) -> [Double] {
                        let m = x.max()!
                        let lse = m + log(x.reduce(0) { $0 + exp($1 - m) })
                        return x.map { $0 - lse }
                    }
                    let (lp, lq) = (logSoftmax(teacherRow), logSoftmax(alignedRow))
                    total += zip(lp, lq).reduce(0) { $0 + exp($1.0) * ($1.0 - $1.1) }
                }
            }
            return total / Double(batch)
        }
    }

    private func alignment(_ problem: Problem, on backend: any Backend) throws -> AttentionAlignment {
        try AttentionAlignment(pairs: [(0, 1), (2, 1)], studentHeads: problem.studentHeads,
                               teacherHeads: problem.teacherHeads, weight: 1, decay: 0.9, seed: 3, backend: backend)
    }

    /// Runs the alignment once; returns its value, the module's gradient and the student map gradients.
    private func run(_ problem: Problem, _ alignment: AttentionAlignment, on backend: any Backend,
                     gradOutput: Float = 1) throws -> (value: Float, moduleGradient: [Float], mapGradients: [Int: [Float]]) {
        let (b, t) = (problem.batch, problem.length)
        try backend.fill(alignment.module.gradient, value: 0)
        let studentMaps = try problem.studentMaps.mapValues { try backend.tensor($0, shape: [b, problem.studentHeads, t, t], label: "student map") }
        let teacherMaps = try problem.teacherMaps.mapValues { try backend.tensor($0, shape: [b, problem.teacherHeads, t, t], label: "teacher map") }
        let result = try alignment.apply(studentMaps: studentMaps, teacherMaps: teacherMaps, gradOutput: gradOutput)
        return (result.value, try alignment.module.gradient.toArray(), try result.mapGradients.mapValues { try $0.toArray() })
    }

    func testValueAndGradientsMatchTheFP64Reference() throws {
        for (batch, length) in [(2, 5), (1, 1), (3, 8)] {
            let problem = Problem(batch: batch, length: length, seed: UInt64(batch * 100 + length))
            var valuesByBackend: [[Float]] = []
            for backend in try TestBackends.all() {
                let alignment = try alignment(problem, on: backend)
                let module = try alignment.module.value.toArray().map(Double.init)
                let maps = problem.studentMaps.mapValues { $0.map(Double.init) }
                let (value, moduleGradient, mapGradients) = try run(problem, alignment, on: backend)
                let reference = problem.referenceLoss(module: module, studentMaps: maps)
                XCTAssertEqual(Double(value), reference, accuracy: 1e-5 * max(1, abs(reference)), "B=\(batch) T=\(length) on \(backend.name)")

                // Module: every entry (weights and the bias column), by central differences of the reference.
                let step = 1e-4
                for index in module.indices {
                    var up = module, down = module
                    up[index] += step
                    down[index] -= step
                    let numeric = (problem.referenceLoss(module: up, studentMaps: maps) - problem.referenceLoss(module: down, studentMaps: maps)) / (2 * step)
                    XCTAssertEqual(Double(moduleGradient[index]), numeric, accuracy: 1e-4 * max(1, abs(numeric)),
                                   "module[\(index)] B=\(batch) T=\(length) on \(backend.name)")
                }
                // Student maps: every causal position of a few (block, sequence, head) maps.
                for block in problem.studentBlocks {
                    for index in maps[block]!.indices where index % (length * length) % length <= index % (length * length) / length
                        && index % 7 == 0 {
                        var up = maps, down = maps
                        up[block]![index] += step
                        down[block]![index] -= step
                        let numeric = (problem.referenceLoss(module: module, studentMaps: up) - problem.referenceLoss(module: module, studentMaps: down)) / (2 * step)
                        XCTAssertEqual(Double(mapGradients[block]![index]), numeric, accuracy: 1e-4 * max(1, abs(numeric)),
                                       "student block \(block) map[\(index)] B=\(batch) T=\(length) on \(backend.name)")
                    }
                }
                valuesByBackend.append([value] + moduleGradient + problem.studentBlocks.flatMap { mapGradients[$0]! })
            }
            let comparison = Comparison(valuesByBackend[1], reference: valuesByBackend[0].map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "OpenCL vs CPU, B=\(batch) T=\(length): \(comparison)")
        }
    }

    /// gradOutput scales every gradient and leaves the value alone.
    func testGradOutputScalesTheGradients() throws {
        let problem = Problem(batch: 2, length: 6, seed: 9)
        let backend = TestBackends.cpu
        let alignment = try alignment(problem, on: backend)
        let one = try run(problem, alignment, on: backend)
        let scaled = try run(problem, alignment, on: backend, gradOutput: -2.5)
        XCTAssertEqual(one.value, scaled.value)
        for (a, b) in zip(one.moduleGradient, scaled.moduleGradient) { XCTAssertEqual(-2.5 * a, b, accuracy: 1e-6 * max(1, abs(b))) }
        for (a, b) in zip(one.mapGradients[0]!, scaled.mapGradients[0]!) { XCTAssertEqual(-2.5 * a, b, accuracy: 1e-6 * max(1, abs(b))) }
    }

    func testTheWeightDecaysPerEpoch() throws {
        let alignment = try alignment(Problem(batch: 1, length: 2, seed: 1), on: TestBackends.cpu)
        XCTAssertEqual(alignment.weight(atEpoch: 0), 1)
        XCTAssertEqual(alignment.weight(atEpoch: 2), 0.81, accuracy: 1e-6)
    }

    func testPairsNameTheBlocks() throws {
        let alignment = try AttentionAlignment(pairs: [(0, 3), (5, 29), (2, 3)], studentHeads: 2, teacherHeads: 3, weight: 1, decay: 1, seed: 0,
                                               backend: TestBackends.cpu)
        XCTAssertEqual(alignment.studentBlocks, [0, 2, 5])
        XCTAssertEqual(alignment.teacherBlocks, [3, 29])
        XCTAssertEqual(alignment.module.value.shape, [6, 7])
    }

    /// A configuration whose maps cannot fit is refused before training, naming the flags to change.
    func testConfigurationsPastTheMemoryBudgetAreRefused() throws {
        let backend = TestBackends.cpu
        let alignment = try AttentionAlignment(pairs: (0..<30).map { ($0 % 6, $0) }, studentHeads: 9, teacherHeads: 9,
                                               weight: 1, decay: 0.9, seed: 0, backend: backend)
        XCTAssertNoThrow(try alignment.requireFits(batch: 1, length: 16, backend: backend))
        XCTAssertThrowsError(try alignment.requireFits(batch: 64, length: 2048, backend: backend)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("attn_align_layers") && message.contains("--seq-len") && message.contains("budget"), message)
        }
    }
}
