import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor

/// The fused distillation loss (forward KL, T = 2) against an unfused baseline and the copy bandwidth,
/// and the same loss against a sparse top-k teacher (SparseLossRecords.swift).
///
/// Bytes counted are the compulsory traffic: the forward pass reads z_s and z_t once (2 N V floats);
/// forward + gradient also writes dz once (3 N V floats). Re-reads of a row that is still in cache
/// are not counted: they are what fusion buys. The unfused baseline (log_softmax_rows twice into
/// materialized [N, V] tensors, then kl_div_rows and kl_div_backward_rows) is timed in the same run,
/// and `speedup_over_unfused` divides its time by the fused forward + gradient time. Each measurement
/// alternates with a copy of one [N, V] tensor (copy_f32), and `fraction_of_copy_bandwidth` is the
/// median over those pairs, so the ratio compares the kernel with a copy made under the same load.
public struct LossSuite: BenchSuite {
    public let name = "loss"
    public let summary = "fused softmax-temperature KL (forward, forward + gradient) vs unfused, N=2048, V=32000/49152/128256; top-32 bucket, prior and decoupled"

    /// `KDGPU_BENCH_LOSS_VOCABULARIES=49152` (comma-separated) times fewer vocabularies.
    static var vocabularies: [Int] {
        let text = ProcessInfo.processInfo.environment["KDGPU_BENCH_LOSS_VOCABULARIES"] ?? ""
        let chosen = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
        return chosen.isEmpty ? [32000, 49152, 128256] : chosen
    }
    static let rows = 2048
    static let temperature: Float = 2

    public init() {}

    /// Rows that fit: the benchmark holds 6 [rows, V] tensors at once (inputs, the copy destination,
    /// the baseline's two log-softmax tensors and its gradient), within a quarter of the memory budget.
    static func rowsFitting(vocabulary: Int, backend: any Backend) -> Int {
        max(16, min(rows, backend.ledger.budgetBytes / 4 / (6 * vocabulary * 4)))
    }

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        for vocabulary in Self.vocabularies {
            let n = context.backends.map { Self.rowsFitting(vocabulary: vocabulary, backend: $0) }.min() ?? Self.rows
            let student = benchValues(n * vocabulary, seed: 11, scale: 10)
            let teacher = benchValues(n * vocabulary, seed: 12, scale: 10)
            let shape = "N=\(n) V=\(vocabulary) T=\(Self.temperature)"
            // The CPU twin's results are the reference for the OpenCL kernels.
            context.report("loss: \(shape): CPU twin reference")
            let cpuReference = try Self.fused(on: context.cpu, student: student, teacher: teacher, rows: n, vocabulary: vocabulary)
            let fp64Error = Self.fp64SpotCheck(cpuReference, student: student, teacher: teacher, rows: n, vocabulary: vocabulary)
            var denseSeconds: [String: Double] = [:]
            for backend in context.backends {
                context.report("loss: \(shape) on \(backend.name)")
                let measured = try Self.measure(on: backend, context: context, student: student, teacher: teacher,
                                                rows: n, vocabulary: vocabulary)
                let isCPU = backend is CPUBackend
                let errorForward = isCPU ? fp64Error.loss : abs(Double(measured.check.loss) - Double(cpuReference.loss))
                let errorGradient = isCPU ? fp64Error.gradient : maxAbsDifference(measured.check.gradient, cpuReference.gradient)
                let note = isCPU ? "CPU twin; max_abs_error vs the fp64 reference on sampled rows"
                                 : "max_abs_error vs the CPU twin; bytes = compulsory traffic (2 reads, + 1 write with the gradient)"
                let elements = Double(n) * Double(vocabulary)
                let copyBytes = 2 * 4 * elements
                func record(_ kernel: String, _ timing: PairedTiming, bytes: Double, error: Double, note: String,
                            extra: [String: Double] = [:]) -> BenchRecord {
                    BenchRecord(suite: "loss", kernel: kernel, backend: backend.name, shape: shape, medianSeconds: timing.seconds,
                                gbPerSecond: bytes / timing.seconds / 1e9, maxAbsError: error,
                                extra: extra.merging(["fraction_of_copy_bandwidth": bytes / copyBytes * timing.copyOverKernel,
                                                      "copy_gb_per_s": copyBytes / timing.copySeconds / 1e9]) { a, _ in a },
                                note: note)
                }
                records.append(record("distill_loss_rows fkl forward", measured.forward, bytes: 2 * 4 * elements,
                                      error: errorForward, note: note))
                records.append(record("distill_loss_rows fkl forward+grad", measured.forwardGradient, bytes: 3 * 4 * elements,
                                      error: errorGradient, note: note,
                                      extra: ["speedup_over_unfused": measured.unfused.seconds / measured.forwardGradient.seconds]))
                records.append(record("unfused log_softmax x2 + kl_div + backward", measured.unfused, bytes: 3 * 4 * elements,
                                      error: maxAbsDifference(measured.unfusedGradient, cpuReference.gradient),
                                      note: "the baseline's GB/s counts the same compulsory bytes as the fused kernel",
                                      extra: ["speedup_over_unfused": 1]))
                denseSeconds[backend.name] = measured.forwardGradient.seconds
            }
            records += try Self.sparseRecords(context, student: student, teacher: teacher, rows: n, vocabulary: vocabulary,
                                              shape: shape, denseSeconds: denseSeconds)
        }
        return records
    }

    struct Outcome {
        var loss: Float
        var rowLosses: [Float]
        var gradient: [Float]
    }

    static let options = DistillationLoss(divergence: .forwardKL, temperature: temperature)

    /// One checked fused forward + gradient on fresh inputs.
    static func fused(on backend: any Backend, student: [Float], teacher: [Float], rows: Int, vocabulary: Int) throws -> Outcome {
        let zs = try backend.tensor(student, shape: [rows, vocabulary], label: "bench student logits")
        let zt = try backend.tensor(teacher, shape: [rows, vocabulary], label: "bench teacher logits")
        let result = try options(student: zs, teacher: .dense(zt))
        return Outcome(loss: result.loss, rowLosses: result.rowLosses, gradient: try zs.toArray())
    }

    /// A kernel's median time, the median time of the copy it alternated with, and the median of
    /// copy time / kernel time over the pairs.
    struct PairedTiming {
        var seconds: Double
        var copySeconds: Double
        var copyOverKernel: Double
    }

    struct Measurement {
        var forward: PairedTiming
        var forwardGradient: PairedTiming
        var unfused: PairedTiming
        var check: Outcome
        var unfusedGradient: [Float]
    }

    static func measure(on backend: any Backend, context: BenchContext, student: [Float], teacher: [Float],
                        rows: Int, vocabulary: Int) throws -> Measurement {
        guard let kernels = backend as? any DistillationLossKernel else {
            throw TensorError.unsupported("loss bench: \(backend.name) has no distillation-loss kernels")
        }
        let check = try fused(on: backend, student: student, teacher: teacher, rows: rows, vocabulary: vocabulary)
        let zs = try backend.tensor(student, shape: [rows, vocabulary], label: "bench student logits")
        let zt = try backend.tensor(teacher, shape: [rows, vocabulary], label: "bench teacher logits")
        let copyDestination = try backend.tensor(shape: [rows, vocabulary], label: "bench copy destination")
        func timed(_ body: () throws -> Void) throws -> PairedTiming {
            let paired = try context.pairedMedians(body, against: {
                try backend.copy(zt, into: copyDestination)
                try backend.synchronize()
            })
            return PairedTiming(seconds: paired.seconds, copySeconds: paired.referenceSeconds, copyOverKernel: paired.referenceOverBody)
        }
        var forwardOnly = options
        forwardOnly.forwardOnly = true
        let forward = try timed {
            _ = try forwardOnly(student: zs, teacher: .dense(zt))
        }
        // In place: after the first run the student holds gradients; the work per element is the same.
        let forwardGradient = try timed {
            _ = try options(student: zs, teacher: .dense(zt))
        }
        try backend.upload(student.withUnsafeBufferPointer { $0 }, to: zs)
        // The unfused baseline: materialized log-probabilities, a divergence kernel, a gradient kernel.
        let logStudent = try backend.tensor(shape: [rows, vocabulary], label: "bench log q")
        let logTeacher = try backend.tensor(shape: [rows, vocabulary], label: "bench log p")
        let gradient = try backend.tensor(shape: [rows, vocabulary], label: "bench unfused gradient")
        let rowLoss = try backend.tensor(shape: [rows], label: "bench unfused row losses")
        let scale = temperature / Float(rows) // T^2 / T / N
        let unfused = try timed {
            try backend.logSoftmax(zs, into: logStudent, temperature: temperature)
            try backend.logSoftmax(zt, into: logTeacher, temperature: temperature)
            try kernels.enqueueKLDivRows(logStudent: logStudent, logTeacher: logTeacher, into: rowLoss)
            try kernels.enqueueKLDivBackward(logStudent: logStudent, logTeacher: logTeacher, into: gradient, scale: scale)
            _ = try rowLoss.toArray()
        }
        return Measurement(forward: forward, forwardGradient: forwardGradient, unfused: unfused, check: check,
                           unfusedGradient: try gradient.toArray())
    }

    /// Largest errors of the CPU twin against the fp64 reference on four sampled rows.
    static func fp64SpotCheck(_ outcome: Outcome, student: [Float], teacher: [Float], rows: Int, vocabulary: Int)
        -> (loss: Double, gradient: Double) {
        let sampled = Array(Set([0, rows / 3, rows / 2, rows - 1])).sorted()
        var lossError = 0.0, gradientError = 0.0
        for r in sampled {
            let range = (r * vocabulary)..<((r + 1) * vocabulary)
            let reference = DistillationReference.compute(options, student: student[range].map(Double.init), rows: 1,
                                                          vocabulary: vocabulary,
                                                          teacher: .dense(teacher[range].map(Double.init), stride: vocabulary))
            // The benchmark's loss is a mean over `rows`; the row's own gradient carries 1 / rows.
            for j in 0..<vocabulary {
                gradientError = max(gradientError, abs(Double(outcome.gradient[r * vocabulary + j]) - reference.gradient[j] / Double(rows)))
            }
            lossError = max(lossError, abs(Double(outcome.rowLosses[r]) - reference.rowLosses[0]))
        }
        return (lossError, gradientError)
    }
}
