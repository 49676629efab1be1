import Checkpoint
import Foundation
import Models
import Tensor

/// One trainable fp32 tensor with its gradient and AdamW moments, all on the student's backend: tensors
/// of its own when made, views into a run's ``ParameterArena`` once the arena takes it in.
public final class Parameter {
    /// The student's GGUF names (`blk.3.attn_q.weight`; matrices are [out, in] in GGUF's layout, adjacent
    /// RoPE pairs), or a feature-loss module's (`attn_align.weight`).
    public let name: String
    public internal(set) var value: Tensor
    public internal(set) var gradient: Tensor
    public internal(set) var firstMoment: Tensor
    public internal(set) var secondMoment: Tensor
    /// The value as the GEMMs read it: ``value`` itself, or in a mixed-precision run a bf16 copy
    /// refreshed from it after every update (``ParameterArena``'s compute copy; matrices only).
    public internal(set) var compute: Tensor
    /// Norm weights are not decayed.
    public var decays: Bool { value.rank == 2 }

    public init(name: String, shape: [Int], values: [Float], backend: any Backend) throws {
        self.name = name
        value = try backend.tensor(values, shape: shape, label: name)
        compute = value
        gradient = try backend.tensor(shape: shape, label: "\(name) gradient")
        firstMoment = try backend.tensor(shape: shape, label: "\(name) adam m")
        secondMoment = try backend.tensor(shape: shape, label: "\(name) adam v")
        try backend.fill(gradient, value: 0)
        try backend.fill(firstMoment, value: 0)
        try backend.fill(secondMoment, value: 0)
    }
}

/// The optimizer state of a group of parameters on the host (checkpoints) and the sum of squares
/// the arena's checks use; the update itself is ``ParameterArena/update(_:gradientNorm:clip:)``.
public enum Optimizer {
    /// Σ x² of a tensor, from fp32 per-row sums on its backend added in fp64 (a non-finite row stays non-finite).
    static func sumOfSquares(_ tensor: Tensor) throws -> Double {
        let backend = tensor.backend
        let rows = try tensor.reshaped([tensor.count / tensor.columns, tensor.columns])
        let sums = try backend.tensor(shape: [rows.shape[0]], label: "sum of squares rows")
        try backend.reduceRows(.sumSquares, rows, into: sums)
        return try sums.toArray().reduce(0.0) { $0 + Double($1) }
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
