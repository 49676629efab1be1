import Foundation
import Tensor
import TestSupport
import Training
import XCTest

/// The parameter arena: its views keep each parameter's values, AdamW over the whole arena (the
/// decayed span and the rest, each parameter at its learning-rate scale) equals AdamW per parameter
/// written out in fp64, the gradient norm is the fp64 norm, clipping scales by clip / norm, the gaps
/// stay zero, and a non-finite value is named by its parameter.
final class ParameterArenaTests: XCTestCase {
    func testArenaUpdateEqualsPerParameterAdamW() throws {
        try checkArenaUpdate(scales: [:], order: ["a.weight", "b.weight", "c.weight", "a_norm.weight", "b_norm.weight"])
    }

    /// Learning-rate scales (`embedding_lr_scale`): scaled parameters are grouped after the others of
    /// their decay rule, each group updated at its rate; 0 leaves a parameter as it is.
    func testArenaUpdateWithLearningRateScales() throws {
        try checkArenaUpdate(scales: ["b.weight": 0.5, "c.weight": 0, "a_norm.weight": 3],
                             order: ["a.weight", "b.weight", "c.weight", "b_norm.weight", "a_norm.weight"])
    }

    private func checkArenaUpdate(scales: [String: Float], order: [String]) throws {
        let shapes: [(String, [Int])] = [("a.weight", [3, 5]), ("a_norm.weight", [7]), ("b.weight", [2, 70]), ("b_norm.weight", [1]), ("c.weight", [65, 1])]
        for backend in try TestBackends.all() {
            var random = SeededRandom(seed: 41)
            let initial = shapes.map { random.normals($0.1.reduce(1, *)) }
            let parameters = try zip(shapes, initial).map { try Parameter(name: $0.0, shape: $0.1, values: $1, backend: backend) }
            let arena = try ParameterArena(parameters, backend: backend, learningRateScales: scales)
            XCTAssertEqual(arena.parameters.map(\.name), order, "decayed first, scaled ones after the others")
            for (p, values) in zip(parameters, initial) { XCTAssertEqual(try p.value.toArray(), values, "\(p.name) on \(backend.name)") }

            var host = initial.map { $0.map(Double.init) }
            var m = host.map { $0.map { _ in 0.0 } }, v = m
            for step in 1...2 {
                try arena.zeroGradients()
                let gradients = shapes.map { random.normals($0.1.reduce(1, *), scale: 3) }
                for (p, g) in zip(parameters, gradients) { try backend.upload(g.withUnsafeBufferPointer { $0 }, to: p.gradient) }
                let norm = gradients.joined().reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                let measured = try arena.gradientNorm()
                XCTAssertEqual(Double(measured), norm, accuracy: norm * 1e-6, "gradient norm on \(backend.name)")
                let clip: Float = 2
                let adamw = AdamWStep(learningRate: 0.01, beta1: 0.9, beta2: 0.95, weightDecay: 0.1, step: step)
                try arena.update(adamw, gradientNorm: measured, clip: clip)
                // The update read the gradients clipped; the stored ones are as they were.
                for (p, g) in zip(parameters, gradients) { XCTAssertEqual(try p.gradient.toArray(), g, "\(p.name) gradient on \(backend.name)") }
                // fp64 AdamW of each parameter, the gradient clipped to norm `clip`, norm weights not decayed.
                let scale = Double(clip) / Double(measured)
                for i in parameters.indices {
                    let decay = shapes[i].1.count == 2 ? 0.1 : 0
                    let lr = 0.01 * Double(scales[shapes[i].0] ?? 1)
                    let (c1, c2) = (1 - pow(0.9, Double(step)), 1 - pow(0.95, Double(step)))
                    for j in host[i].indices {
                        let g = Double(gradients[i][j]) * scale
                        m[i][j] = 0.9 * m[i][j] + 0.1 * g
                        v[i][j] = 0.95 * v[i][j] + 0.05 * g * g
                        host[i][j] -= lr * ((m[i][j] / c1) / ((v[i][j] / c2).squareRoot() + 1e-8) + decay * host[i][j])
                    }
                    let comparison = Comparison(try parameters[i].value.toArray(), reference: host[i])
                    XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(shapes[i].0) step \(step) on \(backend.name): \(comparison)")
                }
            }
            // The gaps between parameters and the tail stay zero in every role.
            let listed = parameters.reduce(0) { $0 + $1.value.count }
            for flat in [arena.values, arena.gradients, arena.firstMoments, arena.secondMoments] {
                let all = try flat.toArray()
                let nonzero = all.filter { $0 != 0 }.count
                XCTAssertLessThanOrEqual(nonzero, listed, "\(flat.label) on \(backend.name)")
            }
            XCTAssertNil(try arena.firstNonFinite())
            var broken = try parameters[3].value.toArray()
            broken[0] = .nan
            try backend.upload(broken.withUnsafeBufferPointer { $0 }, to: parameters[3].value)
            XCTAssertEqual(try arena.firstNonFinite(), "b_norm.weight", backend.name)
        }
    }

    /// Mixed precision: the bf16 compute copy of each matrix is its fp32 master value rounded to the
    /// nearest bf16 (ties to even; found here from the two neighbouring bf16 values in fp64), after
    /// the arena is made and again after an update; norm weights keep reading their fp32 values.
    func testBF16ComputeCopyIsTheMasterRoundedToNearestEven() throws {
        let shapes: [(String, [Int])] = [("a.weight", [3, 5]), ("a_norm.weight", [7]), ("b.weight", [2, 70])]
        func nearestBF16(_ x: Float) -> Float {
            let below = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
            let above = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
            let (dBelow, dAbove) = (abs(Double(x) - Double(below)), abs(Double(above) - Double(x)))
            if dBelow != dAbove { return dBelow < dAbove ? below : above }
            return (below.bitPattern >> 16) & 1 == 0 ? below : above
        }
        for backend in try TestBackends.all() {
            var random = SeededRandom(seed: 43)
            // Values with bits below bf16's precision, including exact ties.
            var initial = shapes.map { random.normals($0.1.reduce(1, *), scale: 5) }
            initial[0][0] = Float(bitPattern: 0x3F80_8000)  // 1 + 2^-8: a tie, rounds down to 1 (even)
            initial[0][1] = Float(bitPattern: 0x3F81_8000)  // a tie that rounds up to the even neighbour
            let parameters = try zip(shapes, initial).map { try Parameter(name: $0.0, shape: $0.1, values: $1, backend: backend) }
            let arena = try ParameterArena(parameters, backend: backend, computeType: .bf16)
            func check(_ moment: String) throws {
                for p in parameters {
                    let values = try p.value.toArray(), compute = try p.compute.toArray()
                    if p.decays {
                        XCTAssertEqual(p.compute.dtype, .bf16)
                        XCTAssertEqual(compute, values.map(nearestBF16), "\(p.name) \(moment) on \(backend.name)")
                    } else {
                        XCTAssertEqual(p.compute.dtype, .f32)
                        XCTAssertEqual(compute, values, "\(p.name) \(moment) on \(backend.name)")
                    }
                }
            }
            try check("when made")
            XCTAssertEqual(try parameters[0].compute.toArray()[0], 1)
            XCTAssertEqual(try parameters[0].compute.toArray()[1], Float(bitPattern: 0x3F82_0000))
            for p in parameters { try backend.upload(random.normals(p.value.count).withUnsafeBufferPointer { $0 }, to: p.gradient) }
            try arena.update(AdamWStep(learningRate: 0.01, beta1: 0.9, beta2: 0.95, weightDecay: 0.1, step: 1), gradientNorm: 1, clip: 0)
            try arena.refreshCompute()
            try check("after an update")
        }
    }

    /// Stochastic rounding of the compute copy, each weight's threshold drawn once: every element is
    /// one of the two bf16 values either side of its master (found in fp64 here), a refresh of
    /// unchanged masters repeats the copy exactly, and over many weights with the same master the
    /// copies' mean is the master (rounding to nearest is a whole ulp fraction off), so a move of
    /// masters sitting on bf16 values by 0.3 of an ulp moves about 30% of their copies by one ulp
    /// (rounding to nearest moves none).
    func testStochasticComputeCopyIsUnbiasedOverWeights() throws {
        let (rows, cols) = (64, 128)  // a matrix: decayed, so mirrored
        let count = rows * cols
        for backend in try TestBackends.all() {
            // Masters 1.5 + k/8 of an ulp (2^-7 at 1.5), k = 0...7, each in count/8 elements.
            let ulp = Double(1) / 128
            let masters = (0..<count).map { Float(1.5 + Double($0 % 8) / 8 * ulp) }
            let parameter = try Parameter(name: "m.weight", shape: [rows, cols], values: masters, backend: backend)
            let arena = try ParameterArena([parameter], backend: backend, computeType: .bf16, stochasticRoundingSeed: 7)
            let copy = try parameter.compute.toArray()
            try arena.refreshCompute()
            XCTAssertEqual(try parameter.compute.toArray(), copy, "a refresh of unchanged masters on \(backend.name)")
            for k in 0..<8 {
                let values = stride(from: k, to: count, by: 8).map { Double(copy[$0]) }
                XCTAssert(values.allSatisfy { $0 == 1.5 || $0 == 1.5 + ulp }, "k=\(k): a copy outside the two neighbours on \(backend.name)")
                // The mean of n draws up with probability k/8: within 4 standard deviations of the master.
                let n = Double(values.count), p = Double(k) / 8
                XCTAssertEqual(values.reduce(0, +) / n, 1.5 + p * ulp, accuracy: 4 * ulp * (p * (1 - p) / n).squareRoot() + 1e-12,
                               "k=\(k) on \(backend.name)")
            }
            // The masters on bf16 values (k = 0) moved by 0.3 of an ulp: about 30% of their copies move up.
            let moved = masters.enumerated().map { $0 % 8 == 0 ? Float(1.5 + 0.3 * ulp) : $1 }
            try backend.upload(moved.withUnsafeBufferPointer { $0 }, to: parameter.value)
            try arena.refreshCompute()
            let after = try parameter.compute.toArray()
            let up = Double(stride(from: 0, to: count, by: 8).filter { after[$0] > 1.5 }.count) / Double(count / 8)
            XCTAssertEqual(up, 0.3, accuracy: 4 * (0.3 * 0.7 / Double(count / 8)).squareRoot(), "share moved on \(backend.name)")
        }
    }
}
