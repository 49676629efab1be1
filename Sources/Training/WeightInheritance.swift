import Checkpoint
import Foundation
import Models
import Tensor

extension LlamaParameters {
    /// A student of the teacher blocks `blocks` (in order, renumbered 0, 1, ...), with the teacher's
    /// embedding, final norm and LM head: weight inheritance.
    public func inheriting(blocks: [Int]) throws -> LlamaParameters {
        var studentConfig = config
        studentConfig.layers = blocks.count
        var tensors: [String: ParameterTensor] = [:]
        for (name, tensor) in self.tensors where !name.hasPrefix("blk.") {
            tensors[name] = tensor
        }
        for (studentBlock, teacherBlock) in blocks.enumerated() {
            for (name, tensor) in self.tensors where name.hasPrefix("blk.\(teacherBlock).") {
                tensors["blk.\(studentBlock)." + name.dropFirst("blk.\(teacherBlock).".count)] = tensor
            }
        }
        return try LlamaParameters(config: studentConfig, tensors: tensors, source: "student inherited from blocks \(blocks)")
    }
}

extension LlamaParameters {
    /// A fresh student of `shape` for `teacher`'s vocabulary and position settings, tied embeddings:
    /// matrices drawn from N(0, 0.02^2) (llama's initialization), norm weights 1, seeded.
    public static func random(_ shape: StudentShape, like teacher: LlamaConfig, seed: UInt64) throws -> LlamaParameters {
        let config = shape.config(like: teacher)
        try config.validate(source: "student_shape")
        var random = SplitMix64(seed: seed)
        var tensors: [String: ParameterTensor] = [:]
        for (name, tensorShape) in expectedShapes(for: config) {
            let count = tensorShape.reduce(1, *)
            tensors[name] = ParameterTensor(shape: tensorShape, values: isNorm(name) ? Array(repeating: 1, count: count)
                                                                                    : (0..<count).map { _ in 0.02 * random.normal() })
        }
        return try LlamaParameters(config: config, tensors: tensors, source: "student_shape")
    }
}
