import Checkpoint
import Models

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
