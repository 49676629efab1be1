import Foundation
import Losses

/// Linear warm-up to the peak, then cosine decay to `minimumFraction` of it at the last step.
public struct LearningRateSchedule: Equatable, Sendable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minimumFraction: Float

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, minimumFraction: Float) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minimumFraction = minimumFraction
    }

    /// The rate of optimizer step `step` (1-based).
    public func rate(at step: Int) -> Float {
        if step <= warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        let progress = Float(step - warmupSteps) / Float(max(1, totalSteps - warmupSteps))
        let cosine = 0.5 * (1 + cos(Float.pi * min(1, progress)))
        return peak * (minimumFraction + (1 - minimumFraction) * cosine)
    }
}

/// Dynamic temperature scheduling (DTS): the temperature follows a cosine target from T0, raised
/// while the student's cross-entropy is above the teacher's, clamped and smoothed:
///   gap = max(0, CE_student - CE_teacher)
///   target = clamp(T0 (1 + cos(pi progress)) / 2 * (1 + gap / (gap + 1)), T_min, T_max)
///   T = 0.9 T + 0.1 target
public struct DynamicTemperature: Codable, Equatable, Sendable {
    public var initial: Float = 3
    public var minimum: Float = 1
    public var maximum: Float = 3
    public private(set) var current: Float

    public init(initial: Float) {
        self.initial = initial
        current = initial
    }

    public mutating func update(progress: Float, studentCrossEntropy: Float, teacherCrossEntropy: Float) {
        let gap = max(0, studentCrossEntropy - teacherCrossEntropy)
        let cosine = initial * (1 + cos(Float.pi * min(1, max(0, progress)))) / 2
        let target = min(maximum, max(minimum, cosine * (1 + gap / (gap + 1))))
        current = 0.9 * current + 0.1 * target
    }
}

/// TAID's interpolation coefficient t (losses.md): the target is softmax((1 - t) stopgrad(z_s) + t z_t),
/// and t rises from t_start to t_end, faster while the loss falls:
///   delta = (L_prev - L) / (L_prev + 1e-15);  m = 0.99 m + 0.01 delta
///   t = min(t_end, max(t_start + (t_end - t_start) step / total, t + a sigmoid(m) (1 - t)))
public struct TAIDSchedule: Codable, Equatable, Sendable {
    public var start: Float = 0.4
    public var end: Float = 1
    public var rate: Float = 5e-4
    public private(set) var t: Float
    public private(set) var momentum: Float = 0
    public private(set) var previousLoss: Float?

    public init() { t = start }

    public mutating func update(loss: Float, step: Int, totalSteps: Int) {
        if let previousLoss {
            let delta = (previousLoss - loss) / (previousLoss + 1e-15)
            momentum = 0.99 * momentum + 0.01 * delta
        }
        previousLoss = loss
        let linear = start + (end - start) * Float(step) / Float(max(1, totalSteps))
        let adaptive = t + rate * (1 / (1 + exp(-momentum))) * (1 - t)
        t = min(end, max(linear, adaptive))
    }
}

/// How the temperature moves during a run.
public enum TemperatureSchedule: String, Codable, CaseIterable, Sendable {
    case constant
    /// Dynamic temperature from the teacher-student cross-entropy gap (DTS).
    case dts
}

/// The run's loss and its schedules: `w_hard * CE + w_soft * T^2 * D(teacher || student)`.
public struct DistillationObjective: Codable, Equatable, Sendable {
    public var divergenceName: String
    public var temperatureSchedule: TemperatureSchedule
    public var dynamicTemperature: DynamicTemperature
    public var taid: TAIDSchedule?
    public let baseTemperature: Float
    public let softWeight: Float
    public let hardWeight: Float
    public let scaleBySquaredTemperature: Bool

    public init(config: TrainingConfig) {
        divergenceName = config.divergence
        temperatureSchedule = config.typedTemperatureSchedule
        dynamicTemperature = DynamicTemperature(initial: config.temperature)
        taid = config.divergence == "taid" ? TAIDSchedule() : nil
        baseTemperature = config.temperature
        softWeight = config.softWeight
        hardWeight = config.hardWeight
        scaleBySquaredTemperature = config.scaleBySquaredTemperature
    }

    /// `fkl`, `jsd(0.5)`, ...; TAID distills with forward KL to its interpolated target.
    public static func divergence(named name: String) -> Divergence? {
        name == "taid" ? .forwardKL : Divergence(name: name)
    }

    public var temperature: Float { temperatureSchedule == .dts ? dynamicTemperature.current : baseTemperature }

    /// The loss call for this step (gradient written in place of the student logits).
    public var loss: DistillationLoss {
        DistillationLoss(divergence: Self.divergence(named: divergenceName)!, temperature: temperature,
                         scaleBySquaredTemperature: scaleBySquaredTemperature, softWeight: softWeight, hardWeight: hardWeight,
                         taidInterpolation: taid?.t)
    }

    /// Advances the schedules after a step with these measurements.
    public mutating func update(step: Int, totalSteps: Int, loss: Float, studentCrossEntropy: Float, teacherCrossEntropy: Float) {
        if temperatureSchedule == .dts {
            dynamicTemperature.update(progress: Float(step) / Float(max(1, totalSteps)), studentCrossEntropy: studentCrossEntropy,
                                      teacherCrossEntropy: teacherCrossEntropy)
        }
        taid?.update(loss: loss, step: step, totalSteps: totalSteps)
    }
}
