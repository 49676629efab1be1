import Foundation
import Losses
import Models
import Tensor

/// What a feature loss reads in one micro-batch.
public struct FeatureLossInput {
    /// The student after its forward (its hidden states and attention maps are kept).
    public var student: StudentModel
    /// The live teacher's residual streams and attention maps.
    public var teacher: LlamaForwardResult
    /// The teacher's unembedding `[V, C_t]` in fp32.
    public var teacherHead: Tensor
    /// `[N]` next-token labels.
    public var labels: Tensor
}

/// What a feature loss hands back: its value (before its weight) and the gradients it sends into
/// the student's backward. Its own parameters' gradients (and any it adds to the student's head
/// and output norm) are already added.
public struct FeatureLossOutput {
    public var value: Float
    /// dL/d(residual stream after block), by student block.
    public var hiddenGradients: [Int: Tensor] = [:]
    /// dL/d(attention probabilities), by student block.
    public var attentionGradients: [Int: Tensor] = [:]
}

/// One part of the objective beside the output divergence, computed from the live teacher's
/// activations: the logit lens, hidden-state hints, attention alignment. The trainer asks each for
/// what it needs from the teacher, applies it per micro-batch, trains its parameters with the
/// student's and reports it under its name.
public protocol FeatureLoss {
    /// `lens`, `hint`, `align`: the progress line's label; metrics hold `<name>_loss`.
    var name: String { get }
    /// The teacher activations it reads.
    var needs: TeacherNeeds { get }
    /// Its trainable parameters (in the run's parameter arena, next to the student's).
    var parameters: [Parameter] { get }
    /// Its weight in the objective in data epoch `epoch`.
    func weight(atEpoch epoch: Int) -> Float
    /// Whether the weight changes during a run (then metrics hold `<name>_weight` too).
    var weightVaries: Bool { get }
    /// Adds `gradOutput * weight(atEpoch: epoch) * d value` to its parameters (and the student's
    /// head where it uses it) and returns the value with the student's gradients.
    func apply(_ input: FeatureLossInput, epoch: Int, gradOutput: Float) throws -> FeatureLossOutput
}

extension TeacherNeeds {
    /// Everything `features` read.
    public init(features: [any FeatureLoss]) {
        self.init(hiddenStates: features.contains { $0.needs.hiddenStates },
                  attentionLayers: features.reduce(into: Set<Int>()) { $0.formUnion($1.needs.attentionLayers) })
    }
}

/// The logit lens with the teacher's final norm it projects through.
public struct LogitLensLoss: FeatureLoss {
    public let lens: LogitLens
    let teacherNorm: Tensor
    let teacherEpsilon: Float

    public init(lens: LogitLens, teacher: LlamaModel) {
        self.lens = lens
        teacherNorm = teacher.weights.outputNorm
        teacherEpsilon = teacher.config.normEpsilon
    }

    public var name: String { "lens" }
    public var needs: TeacherNeeds { TeacherNeeds(hiddenStates: true) }
    public var parameters: [Parameter] { [] }
    public func weight(atEpoch epoch: Int) -> Float { lens.weight }
    public var weightVaries: Bool { false }

    public func apply(_ input: FeatureLossInput, epoch: Int, gradOutput: Float) throws -> FeatureLossOutput {
        let result = try lens.apply(student: input.student, teacherHidden: input.teacher.hiddenStates, teacherNorm: teacherNorm,
                                    teacherEpsilon: teacherEpsilon, teacherHead: input.teacherHead, labels: input.labels, gradOutput: gradOutput)
        return FeatureLossOutput(value: result.value, hiddenGradients: result.hiddenGradients)
    }
}

extension HiddenStateHints: FeatureLoss {
    public var name: String { "hint" }
    public var needs: TeacherNeeds { TeacherNeeds(hiddenStates: true) }
    public var parameters: [Parameter] { projections }
    public func weight(atEpoch epoch: Int) -> Float { weight }
    public var weightVaries: Bool { false }

    public func apply(_ input: FeatureLossInput, epoch: Int, gradOutput: Float) throws -> FeatureLossOutput {
        let result = try apply(student: input.student, teacherHidden: input.teacher.hiddenStates, gradOutput: gradOutput)
        return FeatureLossOutput(value: result.value, hiddenGradients: result.hiddenGradients)
    }
}

extension AttentionAlignment: FeatureLoss {
    public var name: String { "align" }
    public var needs: TeacherNeeds { TeacherNeeds(attentionLayers: Set(teacherBlocks)) }
    public var parameters: [Parameter] { [module] }
    public var weightVaries: Bool { decay != 1 }

    public func apply(_ input: FeatureLossInput, epoch: Int, gradOutput: Float) throws -> FeatureLossOutput {
        let studentMaps = try Dictionary(uniqueKeysWithValues: studentBlocks.map { ($0, try input.student.attentionProbabilities(of: $0)) })
        let aligned = try apply(studentMaps: studentMaps, teacherMaps: input.teacher.attentionProbabilities,
                                gradOutput: gradOutput * weight(atEpoch: epoch))
        return FeatureLossOutput(value: aligned.value, attentionGradients: aligned.mapGradients)
    }
}
