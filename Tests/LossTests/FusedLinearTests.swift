import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// The chunked linear + loss path equals the materialized one (GEMM, loss, GEMMs), and its peak
/// extra memory does not grow with the number of rows.
final class FusedLinearTests: XCTestCase {
    struct Head {
        var rows: Int, width: Int, vocabulary: Int
        var hidden: [Float], weight: [Float]
        var teacherWidth: Int, teacherHidden: [Float], teacherWeight: [Float]
        var labels: [Float]
        var gradWeightStart: [Float]

        init(_ rng: inout SeededRandom, rows: Int, width: Int = 24, vocabulary: Int = 301, teacherWidth: Int = 40) {
            self.rows = rows
            self.width = width
            self.vocabulary = vocabulary
            self.teacherWidth = teacherWidth
            hidden = rng.normals(rows * width)
            weight = rng.normals(vocabulary * width, scale: 0.5)
            teacherHidden = rng.normals(rows * teacherWidth)
            teacherWeight = rng.normals(vocabulary * teacherWidth, scale: 0.5)
            labels = (0..<rows).map { r in r % 7 == 3 ? -100 : Float(Int.random(in: 0..<vocabulary, using: &rng)) }
            gradWeightStart = rng.normals(vocabulary * width, scale: 0.1)
        }
    }

    enum TeacherKind: CaseIterable { case logits, hidden, topK }

    /// Runs one path and returns (result, dh, dW).
    func run(_ head: Head, teacherKind: TeacherKind, fused: FusedLinearDistillationLoss, materialized: Bool,
             on backend: any Backend) throws -> (DistillationLossResult, [Float], [Float]) {
        let h = try backend.tensor(head.hidden, shape: [head.rows, head.width], label: "hidden")
        let w = try backend.tensor(head.weight, shape: [head.vocabulary, head.width], label: "lm head")
        let ht = try backend.tensor(head.teacherHidden, shape: [head.rows, head.teacherWidth], label: "teacher hidden")
        let wt = try backend.tensor(head.teacherWeight, shape: [head.vocabulary, head.teacherWidth], label: "teacher head")
        let labels = try backend.tensor(head.labels, shape: [head.rows], label: "labels")
        let dh = try backend.tensor(shape: [head.rows, head.width], label: "dh")
        let dw = try backend.tensor(head.gradWeightStart, shape: [head.vocabulary, head.width], label: "dW")
        let teacher: LinearTeacher
        switch teacherKind {
        case .hidden: teacher = .hidden(ht, weight: wt)
        case .logits:
            let t = try backend.tensor(shape: [head.rows, head.vocabulary], label: "teacher logits")
            try backend.gemm(ht, wt, into: t, transposeB: true)
            teacher = .logits(t)
        case .topK:
            // Top-8 of the teacher logits, computed on the host.
            let t = try backend.tensor(shape: [head.rows, head.vocabulary], label: "teacher logits")
            try backend.gemm(ht, wt, into: t, transposeB: true)
            let values = try t.toArray()
            var ids: [Float] = [], top: [Float] = []
            for r in 0..<head.rows {
                let row = Array(values[(r * head.vocabulary)..<((r + 1) * head.vocabulary)])
                for j in row.indices.sorted(by: { row[$0] > row[$1] }).prefix(8) {
                    ids.append(Float(j))
                    top.append(row[j])
                }
            }
            teacher = .topK(TopKTeacher(ids: try backend.tensor(ids, shape: [head.rows, 8], label: "top-k ids"),
                                        values: try backend.tensor(top, shape: [head.rows, 8], label: "top-k values"),
                                        missingMass: .renormalize))
        }
        let result = materialized
            ? try fused.materialized(hidden: h, weight: w, teacher: teacher, labels: labels, gradHidden: dh, gradWeight: dw, gradOutput: 1.5)
            : try fused(hidden: h, weight: w, teacher: teacher, labels: labels, gradHidden: dh, gradWeight: dw, gradOutput: 1.5)
        return (result, try dh.toArray(), try dw.toArray())
    }

    func testFusedEqualsMaterialized() throws {
        var rng = SeededRandom(seed: 31)
        let head = Head(&rng, rows: 37)
        for backend in try lossBackends() {
            for kind in TeacherKind.allCases {
                for divergence in [Divergence.forwardKL, .jensenShannon(beta: 0.5)] {
                    let options = DistillationLoss(divergence: divergence, temperature: 2, hardWeight: 0.25)
                    // 301 * 4 * 2 * 8 bytes: chunks of 8 rows with a hidden teacher, 16 otherwise; 37 rows leave a ragged last chunk.
                    let fused = FusedLinearDistillationLoss(loss: options, chunkBudgetBytes: 301 * 4 * 2 * 8)
                    let (a, dhA, dwA) = try run(head, teacherKind: kind, fused: fused, materialized: false, on: backend)
                    let (b, dhB, dwB) = try run(head, teacherKind: kind, fused: fused, materialized: true, on: backend)
                    let context = "\(kind) \(divergence) on \(backend.name)"
                    XCTAssertEqual(a.validRows, b.validRows, context)
                    XCTAssertEqual(a.loss, b.loss, accuracy: abs(b.loss) * 1e-5, context)
                    XCTAssertLessThanOrEqual(relativeError(dhA, dhB.map(Double.init)), 1e-5, "dh, \(context)")
                    XCTAssertLessThanOrEqual(relativeError(dwA, dwB.map(Double.init)), 1e-5, "dW, \(context)")
                }
            }
        }
    }

    /// Peak extra memory is one chunk (plus [N] row values), not N rows of logits.
    func testPeakMemoryIsFlatInRows() throws {
        var rng = SeededRandom(seed: 37)
        let fused = FusedLinearDistillationLoss(loss: DistillationLoss(temperature: 2), chunkBudgetBytes: 301 * 4 * 2 * 16)
        for backend in try lossBackends() {
            let ledger = (backend as? CPUBackend)?.ledger ?? (backend as! OpenCLBackend).ledger
            var peaks: [Int: Int] = [:]
            for rows in [64, 512] {
                let head = Head(&rng, rows: rows)
                let h = try backend.tensor(head.hidden, shape: [rows, head.width], label: "hidden")
                let w = try backend.tensor(head.weight, shape: [head.vocabulary, head.width], label: "lm head")
                let ht = try backend.tensor(head.teacherHidden, shape: [rows, head.teacherWidth], label: "teacher hidden")
                let wt = try backend.tensor(head.teacherWeight, shape: [head.vocabulary, head.teacherWidth], label: "teacher head")
                let dh = try backend.tensor(shape: [rows, head.width], label: "dh")
                let dw = try backend.tensor(shape: [head.vocabulary, head.width], label: "dW")
                try backend.fill(dw, value: 0)
                try backend.synchronize()
                let before = ledger.allocatedBytes
                ledger.resetPeak()
                _ = try fused(hidden: h, weight: w, teacher: .hidden(ht, weight: wt), gradHidden: dh, gradWeight: dw)
                peaks[rows] = ledger.peakAllocatedBytes - before
            }
            let growth = peaks[512]! - peaks[64]!
            // Only the [N] row losses, statuses and cross-entropies grow: 12 bytes a row.
            XCTAssertLessThanOrEqual(growth, 12 * (512 - 64), "peak extra memory on \(backend.name): \(peaks)")
            XCTAssertLessThan(peaks[512]!, 512 * 301 * 4, "a materialized [N, V] would be larger: \(peaks)")
        }
    }

    func testMismatchedHeadsNameBothSizes() throws {
        let backend = TestBackends.cpu
        let h = try backend.tensor(shape: [4, 8], label: "hidden")
        let w = try backend.tensor(shape: [10, 9], label: "lm head")
        let w2 = try backend.tensor(shape: [10, 8], label: "lm head")
        let ht = try backend.tensor(shape: [4, 5], label: "teacher hidden")
        let wt = try backend.tensor(shape: [12, 5], label: "teacher head")
        for t in [h, w, w2, ht, wt] { try backend.fill(t, value: 0) }
        let fused = FusedLinearDistillationLoss(loss: DistillationLoss())
        XCTAssertThrowsError(try fused(hidden: h, weight: w, teacher: .hidden(ht, weight: wt))) { error in
            XCTAssertTrue("\(error)".contains("width 8") && "\(error)".contains("width 9"), "\(error)")
        }
        XCTAssertThrowsError(try fused(hidden: h, weight: w2, teacher: .hidden(ht, weight: wt))) { error in
            XCTAssertTrue("\(error)".contains("vocabulary 10") && "\(error)".contains("vocabulary 12"), "\(error)")
        }
        var truncating = fused
        truncating.loss.truncateTeacherVocabulary = true
        XCTAssertNoThrow(try truncating(hidden: h, weight: w2, teacher: .hidden(ht, weight: wt)))
    }
}
