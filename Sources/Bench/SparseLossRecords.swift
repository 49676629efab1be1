import CPUBackend
import Foundation
import Losses
import Tensor

/// The loss suite's rows for a sparse teacher (what a teacher cache feeds the trainer): the top
/// `k` log-probabilities of the bench teacher, forward KL at the suite's T renormalized over them
/// (`distill_sparse_teacher_rows`, the kernel of sampled targets too), with the bucket tail and
/// the prior tail (`distill_loss_rows`; the prior's log-weights `-(j mod 97) / 10` for token j) and
/// LFM2's decoupled objective (`distill_decoupled_topk_rows`), forward +
/// gradient. Bytes counted: z_s read and dz written (2 N V floats) plus the [N, k] ids and values;
/// `ratio_to_dense_fkl` divides the time by the dense forward + gradient's in the same run.
extension LossSuite {
    static let sparseK = 32
    static let sparseRules: [(MissingTeacherMass, String)] = [(.renormalize, "distill_sparse_teacher_rows top-k renormalized"),
                                                              (.bucket, "distill_loss_rows top-k bucket"),
                                                              (.prior, "distill_loss_rows top-k prior"),
                                                              (.decoupled, "distill_decoupled_topk_rows")]

    /// The prior tail's `[V]` log-weights in the bench (a fixed, uneven row).
    static func benchPrior(vocabulary: Int) -> [Float] { (0..<vocabulary).map { -Float($0 % 97) / 10 } }

    /// `[rows, k]` ids and log-probabilities at T = 1 of each teacher row's `k` largest logits.
    static func topK(of teacher: [Float], rows: Int, vocabulary: Int, k: Int) -> (ids: [Float], values: [Float]) {
        var ids = [Float](), values = [Float]()
        ids.reserveCapacity(rows * k)
        values.reserveCapacity(rows * k)
        for r in 0..<rows {
            let row = teacher[(r * vocabulary)..<((r + 1) * vocabulary)]
            let m = Double(row.max() ?? 0)
            let lse = m + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) })
            // The k largest: a running sorted list, replaced from its smallest end.
            var top: [(value: Float, id: Int)] = []
            for (j, value) in zip(row.indices, row) where top.count < k || value > top[top.count - 1].value {
                let at = top.firstIndex { $0.value < value } ?? top.count
                top.insert((value, j - r * vocabulary), at: at)
                if top.count > k { top.removeLast() }
            }
            for entry in top {
                ids.append(Float(entry.id))
                values.append(Float(Double(entry.value) - lse))
            }
        }
        return (ids, values)
    }

    /// One rule's checked forward + gradient (its gradient in place of the student logits).
    static func sparseFused(_ rule: MissingTeacherMass, on backend: any Backend, student: [Float], topK: (ids: [Float], values: [Float]),
                            rows: Int, vocabulary: Int) throws -> Outcome {
        let zs = try backend.tensor(student, shape: [rows, vocabulary], label: "bench student logits")
        let teacher = try sparseTeacher(rule, on: backend, topK: topK, rows: rows, vocabulary: vocabulary)
        let result = try options(student: zs, teacher: .topK(teacher))
        return Outcome(loss: result.loss, rowLosses: result.rowLosses, gradient: try zs.toArray())
    }

    static func sparseTeacher(_ rule: MissingTeacherMass, on backend: any Backend, topK: (ids: [Float], values: [Float]),
                              rows: Int, vocabulary: Int) throws -> TopKTeacher {
        TopKTeacher(ids: try backend.tensor(topK.ids, shape: [rows, sparseK], label: "bench top-k ids"),
                    values: try backend.tensor(topK.values, shape: [rows, sparseK], label: "bench top-k log-probabilities"),
                    missingMass: rule,
                    tailPrior: rule != .prior ? nil : try backend.tensor(benchPrior(vocabulary: vocabulary), shape: [vocabulary], label: "bench tail prior"))
    }

    /// Largest errors of a CPU twin's sparse outcome against the fp64 reference on four sampled rows.
    static func sparseFP64SpotCheck(_ rule: MissingTeacherMass, _ outcome: Outcome, student: [Float], topK: (ids: [Float], values: [Float]),
                                    rows: Int, vocabulary: Int) -> (loss: Double, gradient: Double) {
        var lossError = 0.0, gradientError = 0.0
        for r in Array(Set([0, rows / 3, rows / 2, rows - 1])).sorted() {
            let slots = (r * sparseK)..<((r + 1) * sparseK)
            let reference = DistillationReference.compute(
                options, student: student[(r * vocabulary)..<((r + 1) * vocabulary)].map(Double.init), rows: 1, vocabulary: vocabulary,
                teacher: .topK(ids: topK.ids[slots].map { Int($0) }, values: topK.values[slots].map(Double.init), k: sparseK, missingMass: rule,
                               tailPrior: rule == .prior ? benchPrior(vocabulary: vocabulary).map(Double.init) : nil))
            for j in 0..<vocabulary {
                gradientError = max(gradientError, abs(Double(outcome.gradient[r * vocabulary + j]) - reference.gradient[j] / Double(rows)))
            }
            lossError = max(lossError, abs(Double(outcome.rowLosses[r]) - reference.rowLosses[0]))
        }
        return (lossError, gradientError)
    }

    /// The sparse rows on every backend: CPU twins checked against fp64, OpenCL against the twins.
    static func sparseRecords(_ context: BenchContext, student: [Float], teacher: [Float], rows: Int, vocabulary: Int,
                              shape: String, denseSeconds: [String: Double]) throws -> [BenchRecord] {
        let topK = topK(of: teacher, rows: rows, vocabulary: vocabulary, k: sparseK)
        var records: [BenchRecord] = []
        for (rule, kernel) in sparseRules {
            context.report("loss: \(shape) top-\(sparseK) \(rule): CPU twin reference")
            let cpuReference = try sparseFused(rule, on: context.cpu, student: student, topK: topK, rows: rows, vocabulary: vocabulary)
            let fp64Error = sparseFP64SpotCheck(rule, cpuReference, student: student, topK: topK, rows: rows, vocabulary: vocabulary)
            for backend in context.backends {
                context.report("loss: \(shape) top-\(sparseK) \(rule) on \(backend.name)")
                let check = try sparseFused(rule, on: backend, student: student, topK: topK, rows: rows, vocabulary: vocabulary)
                let zs = try backend.tensor(student, shape: [rows, vocabulary], label: "bench student logits")
                let sparse = try sparseTeacher(rule, on: backend, topK: topK, rows: rows, vocabulary: vocabulary)
                let copyDestination = try backend.tensor(shape: [rows, vocabulary], label: "bench copy destination")
                // In place: after the first run the student holds gradients; the work per element is the same.
                let paired = try context.pairedMedians({ _ = try options(student: zs, teacher: .topK(sparse)) }, against: {
                    try backend.copy(zs, into: copyDestination)
                    try backend.synchronize()
                })
                let isCPU = backend is CPUBackend
                let elements = Double(rows) * Double(vocabulary)
                let bytes = 2 * 4 * elements + 2 * 4 * Double(rows * sparseK), copyBytes = 2 * 4 * elements
                var extra = ["fraction_of_copy_bandwidth": bytes / copyBytes * paired.referenceOverBody,
                             "copy_gb_per_s": copyBytes / paired.referenceSeconds / 1e9, "k": Double(sparseK)]
                if let dense = denseSeconds[backend.name] { extra["ratio_to_dense_fkl"] = paired.seconds / dense }
                records.append(BenchRecord(
                    suite: "loss", kernel: "\(kernel) forward+grad", backend: backend.name, shape: "\(shape) k=\(sparseK)",
                    medianSeconds: paired.seconds, gbPerSecond: bytes / paired.seconds / 1e9,
                    maxAbsError: isCPU ? max(fp64Error.loss, fp64Error.gradient)
                                       : max(abs(Double(check.loss) - Double(cpuReference.loss)), maxAbsDifference(check.gradient, cpuReference.gradient)),
                    extra: extra,
                    note: isCPU ? "CPU twin; max_abs_error (loss or gradient) vs the fp64 reference on sampled rows"
                                : "max_abs_error (loss or gradient) vs the CPU twin; bytes = z_s read, dz written, ids and values read"))
            }
        }
        return records
    }
}
