import Checkpoint
import Foundation
import Models
import Tensor

/// One trainable fp32 tensor with its gradient and AdamW moments, all on the student's backend.
public final class Parameter {
    /// The student's GGUF names (`blk.3.attn_q.weight`; matrices are [out, in] in GGUF's layout, adjacent
    /// RoPE pairs), or a feature-loss module's (`attn_align.weight`).
    public let name: String
    public let value: Tensor
    public let gradient: Tensor
    public let firstMoment: Tensor
    public let secondMoment: Tensor
    /// Norm weights are not decayed.
    public var decays: Bool { value.rank == 2 }

    init(name: String, shape: [Int], values: [Float], backend: any Backend) throws {
        self.name = name
        value = try backend.tensor(values, shape: shape, label: name)
        gradient = try backend.tensor(shape: shape, label: "\(name) gradient")
        firstMoment = try backend.tensor(shape: shape, label: "\(name) adam m")
        secondMoment = try backend.tensor(shape: shape, label: "\(name) adam v")
        try backend.fill(gradient, value: 0)
        try backend.fill(firstMoment, value: 0)
        try backend.fill(secondMoment, value: 0)
    }
}

/// AdamW over a group of parameters trained together: the student's, and the modules of feature
/// losses (the attention alignment module, hint projections), which share its clip and schedule.
public enum Optimizer {
    public static func zeroGradients(_ parameters: [Parameter]) throws {
        for p in parameters { try p.value.backend.fill(p.gradient, value: 0) }
    }

    /// The global L2 norm of every gradient (summed in fp64 from per-row sums of squares).
    public static func gradientNorm(_ parameters: [Parameter]) throws -> Float {
        Float(try parameters.reduce(0.0) { $0 + (try sumOfSquares($1.gradient)) }.squareRoot())
    }

    /// The first parameter whose values hold a NaN or an infinity, or are so large their sum of
    /// squares overflows fp32 (an exploding run): one row reduction per tensor on the device.
    public static func firstNonFinite(_ parameters: [Parameter]) throws -> String? {
        try parameters.first { !(try sumOfSquares($0.value)).isFinite }?.name
    }

    /// Σ x² of a tensor, from fp32 per-row sums on its backend added in fp64 (a non-finite row stays non-finite).
    static func sumOfSquares(_ tensor: Tensor) throws -> Double {
        let backend = tensor.backend
        let rows = try tensor.reshaped([tensor.count / tensor.columns, tensor.columns])
        let sums = try backend.tensor(shape: [rows.shape[0]], label: "sum of squares rows")
        try backend.reduceRows(.sumSquares, rows, into: sums)
        return try sums.toArray().reduce(0.0) { $0 + Double($1) }
    }

    /// Clips the gradients to `clip` (global norm of the group; 0 is no clipping), then one AdamW
    /// step of every parameter; norm weights (rank 1) are not decayed.
    public static func update(_ parameters: [Parameter], _ step: AdamWStep, gradientNorm: Float, clip: Float) throws {
        for p in parameters {
            let backend = p.value.backend
            if clip > 0, gradientNorm > clip { try backend.scale(p.gradient, by: clip / gradientNorm, into: p.gradient) }
            var parameterStep = step
            if !p.decays { parameterStep.weightDecay = 0 }
            try backend.adamw(p.value, gradient: p.gradient, firstMoment: p.firstMoment, secondMoment: p.secondMoment, parameterStep)
        }
    }

    /// The values on the host, by name.
    public static func download(_ parameters: [Parameter]) throws -> [String: ParameterTensor] {
        Dictionary(uniqueKeysWithValues: try parameters.map { ($0.name, ParameterTensor(shape: $0.value.shape, values: try $0.value.toArray())) })
    }

    /// The AdamW moments on the host, for checkpoints.
    public static func downloadMoments(_ parameters: [Parameter]) throws -> AdamWMoments {
        AdamWMoments(first: Dictionary(uniqueKeysWithValues: try parameters.map { ($0.name, ParameterTensor(shape: $0.value.shape, values: try $0.firstMoment.toArray())) }),
                     second: Dictionary(uniqueKeysWithValues: try parameters.map { ($0.name, ParameterTensor(shape: $0.value.shape, values: try $0.secondMoment.toArray())) }))
    }

    /// Restores values (when given) and AdamW moments saved by ``download(_:)`` and ``downloadMoments(_:)``.
    public static func load(_ parameters: [Parameter], values: [String: ParameterTensor]? = nil, moments: AdamWMoments, source: String) throws {
        for p in parameters {
            let value = values?[p.name]
            guard let first = moments.first[p.name], let second = moments.second[p.name], first.shape == p.value.shape,
                  second.shape == p.value.shape, values == nil || value?.shape == p.value.shape else {
                throw ModelError.badTensor("\(source): \(p.name) or its optimizer moments are missing or of the wrong shape")
            }
            let backend = p.value.backend
            if let value { try backend.upload(value.values.withUnsafeBufferPointer { $0 }, to: p.value) }
            try backend.upload(first.values.withUnsafeBufferPointer { $0 }, to: p.firstMoment)
            try backend.upload(second.values.withUnsafeBufferPointer { $0 }, to: p.secondMoment)
        }
    }
}
