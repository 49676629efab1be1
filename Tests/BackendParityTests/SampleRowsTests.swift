import Foundation
import Tensor
import TestSupport
import XCTest

/// `sample_rows` (Kernels/sample.cl and its CPU twin) against exact references written here:
/// greedy picks the first largest logit; with evenly spaced uniforms u_j = (j + 0.5) / R the rows'
/// draws follow the kept distribution's inverse CDF, so each token is drawn R p (within one) times,
/// where p is the fp64 softmax kept to the top-k, then top-p set, renormalized; rows of -inf or NaN
/// give -1; and the two backends draw the same ids for random rows and uniforms.
final class SampleRowsTests: XCTestCase {
    /// The kept distribution in fp64: softmax(z / T) over the top-k, then the smallest set of the most
    /// likely reaching top-p of that mass (ties at a cut kept), renormalized.
    static func keptDistribution(_ z: [Float], temperature: Double, topK: Int, topP: Double) -> [Double] {
        let top = Double(z.max()!)
        var weights = z.map { exp((Double($0) - top) / temperature) }
        let order = z.indices.sorted { z[$0] > z[$1] }
        if topK > 0 && topK < z.count {
            let cut = z[order[topK - 1]]
            for j in z.indices where z[j] < cut { weights[j] = 0 }
        }
        if topP < 1 {
            let goal = topP * weights.reduce(0, +)
            var mass = 0.0, cut = z[order[0]]
            for j in order where weights[j] > 0 {
                cut = z[j]
                mass += weights[j]
                if mass >= goal { break }
            }
            for j in z.indices where z[j] < cut { weights[j] = 0 }
        }
        let total = weights.reduce(0, +)
        return weights.map { $0 / total }
    }

    func testDrawsFollowTheKeptDistribution() throws {
        var rng = SeededRandom(seed: 5)
        let v = 301, rows = 2000
        var z = rng.normals(v, scale: 2)
        z[17] = -.infinity
        z[40] = z[41]  // a tie
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            for (temperature, topK, topP) in [(Float(1), 0, Float(1)), (0.7, 20, 1), (1.3, 0, 0.8), (1, 12, 0.6), (1, 1, 1)] {
                let logits = try backend.tensor(Array((0..<rows).map { _ in z }.joined()), shape: [rows, v], label: "logits")
                let uniforms = try backend.tensor((0..<rows).map { (Float($0) + 0.5) / Float(rows) }, shape: [rows], label: "uniforms")
                let ids = try backend.tensor(shape: [rows], dtype: .i32, label: "ids")
                try backend.sampleRows(logits, uniforms: uniforms, into: ids, temperature: temperature, topK: topK, topP: topP)
                let drawn = try backend.downloadInt32(ids)
                let p = Self.keptDistribution(z, temperature: Double(temperature), topK: topK, topP: Double(topP))
                var counts = [Int](repeating: 0, count: v)
                for id in drawn { counts[Int(id)] += 1 }
                let context = "T \(temperature) top-k \(topK) top-p \(topP) on \(backend.name)"
                for j in 0..<v {
                    XCTAssertEqual(Double(counts[j]), Double(rows) * p[j], accuracy: 1.01, "token \(j): \(context)")
                }
            }
        }
    }

    func testGreedyAndDegenerateRows() throws {
        let v = 50
        var rows: [[Float]] = []
        var tied = [Float](repeating: 0, count: v)
        tied[7] = 3; tied[31] = 3
        rows.append(tied)                                          // greedy: the first of the tie
        rows.append([Float](repeating: -.infinity, count: v))      // -1
        var withNaN = [Float](repeating: 1, count: v)
        withNaN[3] = .nan
        rows.append(withNaN)                                       // -1 when sampling
        var sharp = [Float](repeating: -.infinity, count: v)
        sharp[44] = 0
        rows.append(sharp)                                         // 44 whatever u
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            let logits = try backend.tensor(Array(rows.joined()), shape: [rows.count, v], label: "logits")
            let uniforms = try backend.tensor([0.99, 0.5, 0.5, 0.999], shape: [rows.count], label: "uniforms")
            let ids = try backend.tensor(shape: [rows.count], dtype: .i32, label: "ids")
            try backend.sampleRows(logits, uniforms: uniforms, into: ids, temperature: 0)
            XCTAssertEqual(try backend.downloadInt32(ids), [7, -1, 0, 44], "greedy on \(backend.name) (NaN is skipped by the maximum)")
            try backend.sampleRows(logits, uniforms: uniforms, into: ids, temperature: 1)
            let sampled = try backend.downloadInt32(ids)
            XCTAssertTrue(sampled[0] >= 0 && sampled[0] < Int32(v), "\(backend.name)")
            XCTAssertEqual(Array(sampled[1...]), [-1, -1, 44], "\(backend.name)")
            XCTAssertThrowsError(try backend.sampleRows(logits, uniforms: uniforms, into: ids, temperature: 1, topP: 0))
        }
    }

    /// Random rows of the teacher's vocabulary size, random uniforms: the OpenCL kernel draws what
    /// the CPU twin draws (a draw within float rounding of a boundary may differ: at most 1 in 200).
    func testBackendsDrawTheSameIds() throws {
        var rng = SeededRandom(seed: 9)
        let rows = 200, v = 49152
        let z = rng.normals(rows * v, scale: 3)
        let u = (0..<rows).map { _ in Float(rng.unit()) }
        var results: [[Int32]] = []
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            let logits = try backend.tensor(z, shape: [rows, v], label: "logits")
            let uniforms = try backend.tensor(u, shape: [rows], label: "uniforms")
            let ids = try backend.tensor(shape: [rows], dtype: .i32, label: "ids")
            try backend.sampleRows(logits, uniforms: uniforms, into: ids, temperature: 0.9, topK: 50, topP: 0.95)
            results.append(try backend.downloadInt32(ids))
        }
        let differing = zip(results[0], results[1]).filter { $0 != $1 }.count
        XCTAssertLessThanOrEqual(differing, 1, "CPU vs OpenCL ids")
        XCTAssertTrue(results[0].allSatisfy { $0 >= 0 })
    }
}
