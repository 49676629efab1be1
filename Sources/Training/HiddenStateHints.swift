import Foundation
import Losses
import Models
import Tensor

/// Hidden-state hints (FitNets, PKD): chosen residual streams of the student are pulled toward the
/// teacher's, `weight * mean over block pairs of mean over tokens of hint(P h_s, h_t)` with hint the
/// cosine distance or the mean squared error. When the widths differ, a learned projection
/// P [C_t, C_s] (FitNets' regressor, trained with AdamW next to the student) maps the student's
/// state to the teacher's width; when they are equal the states are compared directly.
public final class HiddenStateHints {
    /// (student block, teacher block): the residual stream after each.
    public let pairs: [(student: Int, teacher: Int)]
    public let weight: Float
    public let loss: HiddenStateHintLoss
    /// Per pair, `hint_projection.<pair index>.weight` [C_t, C_s]; empty when the widths are equal.
    public let projections: [Parameter]

    /// Projections start uniform in ±1/sqrt(C_s) (PyTorch's default for a linear layer).
    public init(pairs: [(student: Int, teacher: Int)], weight: Float, kind: HiddenStateHintLoss.Kind, studentWidth: Int, teacherWidth: Int,
                seed: UInt64, backend: any Backend) throws {
        self.pairs = pairs
        self.weight = weight
        loss = HiddenStateHintLoss(kind: kind)
        guard studentWidth != teacherWidth else {
            projections = []
            return
        }
        var random = SplitMix64(seed: seed ^ 0x417)
        let bound = 1 / Float(studentWidth).squareRoot()
        projections = try pairs.indices.map { i in
            try Parameter(name: "hint_projection.\(i).weight", shape: [teacherWidth, studentWidth],
                          values: (0..<(teacherWidth * studentWidth)).map { _ in Float(2 * random.unit() - 1) * bound }, backend: backend)
        }
    }

    /// Adds the projections' gradients (times `gradOutput * weight`) and returns the hint loss (the
    /// mean over pairs, before the weight) and dL/d(hidden after block) per student block, for
    /// ``StudentModel/backward(finalHiddenGradient:hiddenGradients:attentionGradients:)``.
    /// - Parameter teacherHidden: the teacher's residual stream after every block, [N, C_t] each.
    public func apply(student: StudentModel, teacherHidden: [Tensor], gradOutput: Float) throws -> (value: Float, hiddenGradients: [Int: Tensor]) {
        let backend = student.backend
        var gradients: [Int: Tensor] = [:]
        var total: Float = 0
        let scale = gradOutput * weight / Float(pairs.count)
        for (i, pair) in pairs.enumerated() {
            let hidden = try student.hiddenState(after: pair.student)  // [N, C_s]
            let target = teacherHidden[pair.teacher]                   // [N, C_t]
            let projection = projections.isEmpty ? nil : projections[i]
            var compared = hidden
            if let projection {
                compared = try backend.tensor(shape: target.shape, label: "projected student hidden state")
                try backend.gemm(hidden, projection.value, into: compared, transposeB: true)
            }
            let comparedGradient = try backend.tensor(shape: compared.shape, label: "hint gradient")
            total += try loss(student: compared, teacher: target, gradient: comparedGradient, gradOutput: scale) / Float(pairs.count)
            var hiddenGradient = comparedGradient
            if let projection {
                try backend.gemm(comparedGradient, hidden, into: projection.gradient, transposeA: true, beta: 1)
                hiddenGradient = try backend.tensor(shape: hidden.shape, label: "hint hidden gradient")
                try backend.gemm(comparedGradient, projection.value, into: hiddenGradient)
            }
            try gradients.accumulate(hiddenGradient, at: pair.student)
        }
        return (total, gradients)
    }
}
