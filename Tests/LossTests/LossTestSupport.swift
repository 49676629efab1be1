import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// One loss problem in host arrays: what the tests build, run on a backend and on the fp64 reference.
struct LossProblem {
    var rows: Int
    var vocabulary: Int
    var student: [Float]
    /// Dense teacher `[rows, teacherStride]`, unless `topK` is set.
    var teacher: [Float]
    var teacherStride: Int
    var topK: (ids: [Float], values: [Float], k: Int, missingMass: MissingTeacherMass)?
    /// `[vocabulary]` log-weights of the top-k teacher's prior tail.
    var tailPrior: [Float]?
    var labels: [Float]?
    var rowMask: [Float]?

    /// randn * scale logits for both models, a shared vocabulary mask of `-inf` entries, and the
    /// given rows entirely -inf in both models (they must then be ignored through labels or the mask).
    static func random(_ rng: inout SeededRandom, rows: Int, vocabulary: Int, scale: Float = 10,
                       maskedFraction: Double = 0.05, maskedRows: Set<Int> = []) -> LossProblem {
        var student = rng.logits(rows: rows, cols: vocabulary, scale: scale, negativeInfinityFraction: 0, maskedRows: maskedRows)
        var teacher = rng.logits(rows: rows, cols: vocabulary, scale: scale, negativeInfinityFraction: 0, maskedRows: maskedRows)
        if vocabulary > 1 {
            for i in 0..<(rows * vocabulary) where Double.random(in: 0..<1, using: &rng) < maskedFraction {
                // Never mask a whole row by chance: keep column 0.
                if i % vocabulary == 0 { continue }
                student[i] = -.infinity
                teacher[i] = -.infinity
            }
        }
        return LossProblem(rows: rows, vocabulary: vocabulary, student: student, teacher: teacher, teacherStride: vocabulary)
    }

    var referenceTeacher: DistillationReference.Teacher {
        if let topK {
            return .topK(ids: topK.ids.map { Int($0) }, values: topK.values.map(Double.init), k: topK.k, missingMass: topK.missingMass,
                         tailPrior: tailPrior?.map(Double.init))
        }
        return .dense(teacher.map(Double.init), stride: teacherStride)
    }

    func reference(_ options: DistillationLoss, gradOutput: Double = 1) -> DistillationReference.Output {
        DistillationReference.compute(options, student: student.map(Double.init), rows: rows, vocabulary: vocabulary,
                                      teacher: referenceTeacher, labels: labels.map { $0.map { Int($0) } },
                                      rowMask: rowMask.map { $0.map(Double.init) }, gradOutput: gradOutput)
    }

    /// Runs the loss on `backend`; returns the result and the gradient (or the logits when forward-only).
    func run(_ options: DistillationLoss, on backend: any Backend, gradOutput: Float = 1, separateGradient: Bool = false)
        throws -> (result: DistillationLossResult, gradient: [Float]) {
        let zs = try backend.tensor(student, shape: [rows, vocabulary], label: "student logits")
        let teacherLogits: TeacherLogits
        if let topK {
            teacherLogits = .topK(TopKTeacher(ids: try backend.tensor(topK.ids, shape: [rows, topK.k], label: "top-k ids"),
                                              values: try backend.tensor(topK.values, shape: [rows, topK.k], label: "top-k values"),
                                              missingMass: topK.missingMass,
                                              tailPrior: try tailPrior.map { try backend.tensor($0, shape: [vocabulary], label: "tail prior") }))
        } else {
            teacherLogits = .dense(try backend.tensor(teacher, shape: [rows, teacherStride], label: "teacher logits"))
        }
        let labelTensor = try labels.map { try backend.tensor($0, shape: [rows], label: "labels") }
        let maskTensor = try rowMask.map { try backend.tensor($0, shape: [rows], label: "row mask") }
        let gradientTensor = separateGradient ? try backend.tensor(shape: [rows, vocabulary], label: "gradient") : zs
        let result = try options(student: zs, teacher: teacherLogits, labels: labelTensor, rowMask: maskTensor,
                                 gradient: separateGradient ? .into(gradientTensor) : .inPlace, gradOutput: gradOutput)
        return (result, try gradientTensor.toArray())
    }
}

/// max |x - ref| / max |ref| (or the absolute error where the reference is all zeros); infinities
/// must match and NaN never passes.
func relativeError(_ values: [Float], _ reference: [Double], unit: Double = 0) -> Double {
    precondition(values.count == reference.count)
    var maxError = 0.0, maxReference = 0.0
    for (x, r) in zip(values, reference) {
        if x.isNaN || r.isNaN { return .infinity }
        if x.isInfinite || r.isInfinite {
            if Double(x) != r { return .infinity }
            continue
        }
        maxError = max(maxError, abs(Double(x) - r))
        maxReference = max(maxReference, abs(r))
    }
    let scale = max(maxReference, unit)
    return scale > 1e-30 ? maxError / scale : maxError
}

func relativeError(_ value: Float, _ reference: Double, unit: Double = 0) -> Double {
    relativeError([value], [reference], unit: unit)
}

extension DistillationLoss {
    /// The natural size of one row's loss: errors are measured against max(|reference|, this), so a
    /// loss that is 0 in fp64 is not held to a relative error of its fp32 rounding noise.
    func lossUnit(validRows: Int) -> Double {
        Double(max(abs(effectiveSoftWeight), abs(hardWeight))) * (reduction == .mean ? 1 : Double(max(1, validRows)))
    }

    /// The natural size of one gradient entry (`gradOutput * weight / T`, over the valid rows for the mean).
    func gradientUnit(validRows: Int, gradOutput: Double) -> Double {
        let perRow = max(Double(abs(effectiveSoftWeight)) / Double(temperature), Double(abs(hardWeight)))
        return abs(gradOutput) * perRow / (reduction == .mean ? Double(max(1, validRows)) : 1)
    }
}

/// The backends every loss test runs on: the CPU twin, and the OpenCL kernels when a platform exists.
func lossBackends() throws -> [any Backend] {
    do {
        return [TestBackends.cpu, try TestBackends.openCL()]
    } catch is XCTSkip {
        return [TestBackends.cpu]
    }
}
