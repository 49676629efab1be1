import Foundation
import Losses
import Models
import Tensor

/// Logit-lens distillation (DistillLens): chosen hidden states of both models are projected through
/// their own unembedding (after the final RMSNorm, optionally: the classic logit lens applies it,
/// DistillLens' code does not), and `weight * mean over layer pairs of D(teacher lens || student lens)`
/// joins the loss. Each pair runs through the fused chunked linear + loss path, so no [N, V] tensor
/// exists; gradients flow into the student's hidden states and its unembedding.
public struct LogitLens {
    /// (student block, teacher block): the residual stream after each.
    public let pairs: [(student: Int, teacher: Int)]
    public let weight: Float
    public let finalNorm: Bool
    /// Default: symmetric Jensen-Shannon (beta 0.5) at T = 1.
    public let loss: DistillationLoss

    public init(pairs: [(student: Int, teacher: Int)], weight: Float, finalNorm: Bool, loss: DistillationLoss) {
        self.pairs = pairs
        self.weight = weight
        self.finalNorm = finalNorm
        self.loss = loss
    }

    /// Adds the lens loss's gradients (times `gradOutput`) to the student's LM head and output norm,
    /// and returns its value (the mean over pairs, before `weight`) and dL/d(hidden after block) per
    /// student block, for ``StudentModel/backward(finalHiddenGradient:hiddenGradients:)``.
    public func apply(student: StudentModel, teacherHidden: [Tensor], teacherNorm: Tensor, teacherEpsilon: Float,
                      teacherHead: Tensor, labels: Tensor, gradOutput: Float) throws -> (value: Float, hiddenGradients: [Int: Tensor]) {
        let backend = student.backend
        let outputNorm = student.parameter("output_norm.weight")
        let head = student.outputWeight
        var gradients: [Int: Tensor] = [:]
        var total: Float = 0
        for pair in pairs {
            let hidden = try student.hiddenState(after: pair.student)
            let rows = hidden.shape[0]
            var studentInput = hidden, teacherInput = teacherHidden[pair.teacher]
            if finalNorm {
                studentInput = try backend.tensor(shape: hidden.shape, label: "student lens input")
                try backend.rmsNorm(hidden, weight: outputNorm.value, epsilon: student.config.normEpsilon, into: studentInput)
                teacherInput = try backend.tensor(shape: teacherHidden[pair.teacher].shape, label: "teacher lens input")
                try backend.rmsNorm(teacherHidden[pair.teacher], weight: teacherNorm, epsilon: teacherEpsilon, into: teacherInput)
            }
            let inputGradient = try backend.tensor(shape: hidden.shape, label: "lens input gradient")
            let result = try FusedLinearDistillationLoss(loss: loss)(
                hidden: studentInput, weight: head.value, teacher: .hidden(teacherInput, weight: teacherHead), labels: labels,
                gradHidden: inputGradient, gradWeight: head.gradient, gradOutput: gradOutput * weight / Float(pairs.count))
            total += result.loss / Float(pairs.count)
            var hiddenGradient = inputGradient
            if finalNorm {
                hiddenGradient = try backend.tensor(shape: hidden.shape, label: "lens hidden gradient")
                try backend.rmsNormBackward(hidden, weight: outputNorm.value, outputGradient: inputGradient, epsilon: student.config.normEpsilon,
                                            inputGradient: hiddenGradient, weightGradient: outputNorm.gradient,
                                            workspace: backend.tensor(shape: [rows], label: "rms workspace"))
            }
            try gradients.accumulate(hiddenGradient, at: pair.student)
        }
        return (total, gradients)
    }
}
