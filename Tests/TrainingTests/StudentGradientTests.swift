import Checkpoint
import Foundation
import Models
import Tensor
import TestSupport
import Training
import XCTest

/// Every parameter's gradient from the student's explicit backward, against central finite
/// differences of its own forward, on a tiny model on both backends.
final class StudentGradientTests: XCTestCase {
    static let config = LlamaConfig(layers: 2, width: 32, feedForward: 48, heads: 4, kvHeads: 2, vocabulary: 50, contextLength: 16,
                                    ropeBase: 10000, normEpsilon: 1e-5, tiedEmbeddings: true)

    static func randomParameters(_ config: LlamaConfig, seed: UInt64) throws -> LlamaParameters {
        var rng = SeededRandom(seed: seed)
        var tensors: [String: ParameterTensor] = [:]
        for (name, shape) in LlamaParameters.expectedShapes(for: config) {
            let count = shape.reduce(1, *)
            tensors[name] = ParameterTensor(shape: shape, values: shape.count == 1 ? rng.normals(count).map { 1 + 0.2 * $0 }
                                                                                   : rng.normals(count, scale: 1 / Float(shape.last!).squareRoot()))
        }
        return try LlamaParameters(config: config, tensors: tensors)
    }

    /// L = sum(r * finalHidden(tokens)) for a fixed random r, so dL/dfinalHidden = r.
    private func loss(_ model: StudentModel, _ tokens: [[Int32]], _ r: [Float]) throws -> Double {
        let hidden = try model.forward(tokens).toArray()
        return zip(hidden, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    func testEveryParameterGradientMatchesFiniteDifferences() throws {
        let tokens: [[Int32]] = [[1, 7, 7, 49, 0, 3], [12, 5, 30, 30, 2, 8]]
        var rng = SeededRandom(seed: 5)
        let r = rng.normals(tokens.count * tokens[0].count * Self.config.width)
        var gradientsByBackend: [[Float]] = []
        for backend in try TestBackends.all() {
            let model = try StudentModel(parameters: Self.randomParameters(Self.config, seed: 11), backend: backend)
            for p in model.parameters { try backend.fill(p.gradient, value: 0) }
            _ = try model.forward(tokens)
            try model.backward(finalHiddenGradient: backend.tensor(r, shape: [r.count / Self.config.width, Self.config.width], label: "r"))
            var all: [Float] = []
            for parameter in model.parameters {
                let analytic = try parameter.gradient.toArray()
                all += analytic
                var values = try parameter.value.toArray()
                // A few entries per tensor, including the largest gradient.
                let largest = analytic.indices.max { abs(analytic[$0]) < abs(analytic[$1]) }!
                for index in Set([0, values.count / 2, values.count - 1, largest]) {
                    let original = values[index]
                    let step: Float = 1e-2
                    values[index] = original + step
                    try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                    let up = try loss(model, tokens, r)
                    values[index] = original - step
                    try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                    let down = try loss(model, tokens, r)
                    values[index] = original
                    try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                    let numeric = (up - down) / Double(2 * step)
                    XCTAssertEqual(Double(analytic[index]), numeric, accuracy: 2e-2 * max(1, abs(numeric)),
                                   "\(parameter.name)[\(index)] on \(backend.name)")
                }
            }
            gradientsByBackend.append(all)
        }
        let comparison = Comparison(gradientsByBackend[1], reference: gradientsByBackend[0].map(Double.init))
        XCTAssertTrue(comparison.passes(tolerance: 1e-4), "OpenCL vs CPU gradients: \(comparison)")
    }

    /// Gradients injected by feature losses reach every earlier parameter: after an intermediate
    /// block (the logit lens, hints) and into attention maps (alignment):
    /// L = sum(r * finalHidden) + sum(r0 * hidden after block 0) + sum(a_l * attention of block l).
    func testInjectedFeatureGradientsMatchFiniteDifferences() throws {
        let tokens: [[Int32]] = [[3, 9, 27, 1, 44], [8, 8, 2, 40, 13]]
        var rng = SeededRandom(seed: 8)
        let (t, n) = (tokens[0].count, tokens.count * tokens[0].count)
        let r = rng.normals(n * Self.config.width), r0 = rng.normals(n * Self.config.width)
        let mapShape = [tokens.count, Self.config.heads, t, t]
        let a = (0..<Self.config.layers).map { _ in rng.normals(mapShape.reduce(1, *)) }
        func dot(_ x: [Float], _ y: [Float]) -> Double { zip(x, y).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        for backend in try TestBackends.all() {
            let model = try StudentModel(parameters: Self.randomParameters(Self.config, seed: 12), backend: backend)
            func loss() throws -> Double {
                let final = try model.forward(tokens).toArray()
                return try dot(final, r) + dot(model.hiddenState(after: 0).toArray(), r0)
                    + (0..<Self.config.layers).reduce(0.0) { $0 + dot(try model.attentionProbabilities(of: $1).toArray(), a[$1]) }
            }
            for p in model.parameters { try backend.fill(p.gradient, value: 0) }
            _ = try model.forward(tokens)
            try model.backward(finalHiddenGradient: backend.tensor(r, shape: [n, Self.config.width], label: "r"),
                               hiddenGradients: [0: backend.tensor(r0, shape: [n, Self.config.width], label: "r0")],
                               attentionGradients: Dictionary(uniqueKeysWithValues: try (0..<Self.config.layers).map {
                                   ($0, try backend.tensor(a[$0], shape: mapShape, label: "a\($0)"))
                               }))
            for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight", "blk.0.ffn_down.weight", "blk.1.ffn_up.weight", "token_embd.weight"] {
                let parameter = model.parameter(name)
                let analytic = try parameter.gradient.toArray()
                var values = try parameter.value.toArray()
                let index = analytic.indices.max { abs(analytic[$0]) < abs(analytic[$1]) }!
                let original = values[index]
                let step: Float = 1e-2
                values[index] = original + step
                try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                let up = try loss()
                values[index] = original - step
                try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                let down = try loss()
                values[index] = original
                try backend.upload(values.withUnsafeBufferPointer { $0 }, to: parameter.value)
                let numeric = (up - down) / Double(2 * step)
                XCTAssertEqual(Double(analytic[index]), numeric, accuracy: 2e-2 * max(1, abs(numeric)), "\(name) on \(backend.name)")
            }
        }
    }

    /// The lens of the last block, after the final norm, is the ordinary output: its input equals the final hidden state.
    func testLastBlockLensInputIsTheFinalHiddenState() throws {
        let backend = TestBackends.cpu
        let model = try StudentModel(parameters: Self.randomParameters(Self.config, seed: 4), backend: backend)
        let final = try model.forward([[1, 2, 3]]).toArray()
        let last = try model.hiddenState(after: Self.config.layers - 1)
        let normed = try backend.tensor(shape: last.shape, label: "normed")
        try backend.rmsNorm(last, weight: model.parameter("output_norm.weight").value, epsilon: Self.config.normEpsilon, into: normed)
        XCTAssertEqual(try normed.toArray(), final)
        XCTAssertEqual(try BlockPairs.parse("", studentLayers: 6, teacherLayers: 30, inherited: nil, key: "lens_layers").map { $0.teacher },
                       [4, 9, 14, 19, 24, 29])
        XCTAssertEqual(try BlockPairs.parse("", studentLayers: 6, teacherLayers: 30, inherited: [0, 1, 2, 27, 28, 29], key: "lens_layers").map { $0.teacher },
                       [0, 1, 2, 27, 28, 29])
        XCTAssertEqual(try BlockPairs.parse("0:3, 5:29", studentLayers: 6, teacherLayers: 30, inherited: nil, key: "lens_layers").map { [$0.student, $0.teacher] },
                       [[0, 3], [5, 29]])
        XCTAssertThrowsError(try BlockPairs.parse("6:1", studentLayers: 6, teacherLayers: 30, inherited: nil, key: "hint_layers")) {
            XCTAssertTrue("\($0)".contains("hint_layers"), "\($0)")
        }
    }

    /// The student's forward equals the inference model's on the same weights (LlamaModel).
    func testForwardMatchesTheInferenceModel() throws {
        var config = Self.config
        config.tiedEmbeddings = false
        let parameters = try Self.randomParameters(config, seed: 3)
        let tokens: [[Int32]] = [[4, 9, 1, 33, 2]]
        for backend in try TestBackends.all() {
            let student = try StudentModel(parameters: parameters, backend: backend)
            let hidden = try student.forward(tokens).toArray()
            func upload(_ name: String) throws -> Tensor { try backend.tensor(parameters.tensors[name]!.values, shape: parameters.tensors[name]!.shape, label: name) }
            let blocks = try (0..<config.layers).map { l in
                LlamaBlockWeights(attentionNorm: try upload("blk.\(l).attn_norm.weight"), query: try upload("blk.\(l).attn_q.weight"),
                                  key: try upload("blk.\(l).attn_k.weight"), value: try upload("blk.\(l).attn_v.weight"),
                                  attentionOutput: try upload("blk.\(l).attn_output.weight"), feedForwardNorm: try upload("blk.\(l).ffn_norm.weight"),
                                  gate: try upload("blk.\(l).ffn_gate.weight"), up: try upload("blk.\(l).ffn_up.weight"),
                                  down: try upload("blk.\(l).ffn_down.weight"))
            }
            let weights = LlamaWeights(config: config, tokenEmbedding: try upload("token_embd.weight"), outputNorm: try upload("output_norm.weight"),
                                       output: try upload("output.weight"), blocks: blocks)
            let reference = try LlamaModel(weights: weights).forward(tokens, options: LlamaForwardOptions(computeLogits: false)).finalHidden.toArray()
            let comparison = Comparison(hidden, reference: reference.map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(backend.name): \(comparison)")
        }
    }

    /// The student's own inference model (generation) runs its parameter tensors themselves: it
    /// equals the training forward, and still does after the parameters change in place.
    func testInferenceModelSharesTheParameters() throws {
        let parameters = try Self.randomParameters(Self.config, seed: 4)
        let tokens: [[Int32]] = [[4, 9, 1, 33, 2], [7, 7, 0, 49, 12]]
        for backend in try TestBackends.all() {
            let student = try StudentModel(parameters: parameters, backend: backend)
            let inference = try student.inferenceModel()
            for round in 0..<2 {
                let hidden = try student.forward(tokens).toArray()
                student.discardSavedActivations()
                let reference = try inference.forward(tokens, options: LlamaForwardOptions(computeLogits: false)).finalHidden.toArray()
                let comparison = Comparison(hidden, reference: reference.map(Double.init))
                XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(backend.name), round \(round): \(comparison)")
                try backend.scale(student.parameter("blk.1.ffn_up.weight").value, by: 1.5, into: student.parameter("blk.1.ffn_up.weight").value)
            }
        }
    }
}
