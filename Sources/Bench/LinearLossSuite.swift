import CPUBackend
import Foundation
import Losses
import OpenCLBackend
import Tensor

/// The fused chunked LM head + loss against the materialized-logits path (GEMM into [N, V], loss,
/// GEMMs): time and peak extra device memory for N = 512, 2048, 8192, with a hidden teacher (its
/// logits are made chunk by chunk too). Forward KL, T = 2; dh written, dW accumulated.
public struct LinearLossSuite: BenchSuite {
    public let name = "linear-loss"
    public let summary = "fused chunked LM head + loss vs materialized logits: time and peak extra memory, N=512/2048/8192"

    static let rowCounts = [512, 2048, 8192]
    static let width = 256
    static let teacherWidth = 384
    static let vocabulary = 32000
    /// The chunk's budget: 64 MiB of logits (two [rows, V] chunks with a hidden teacher).
    static let chunkBudget = 64 << 20

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        let fused = FusedLinearDistillationLoss(loss: DistillationLoss(temperature: 2), chunkBudgetBytes: Self.chunkBudget)
        let (c, ct, v) = (Self.width, Self.teacherWidth, Self.vocabulary)
        for backend in context.backends {
            let ledger = backend.ledger
            let weight = try backend.tensor(benchValues(v * c, seed: 21, scale: 0.1), shape: [v, c], label: "bench lm head")
            let teacherWeight = try backend.tensor(benchValues(v * ct, seed: 22, scale: 0.1), shape: [v, ct], label: "bench teacher head")
            let gradWeight = try backend.tensor(shape: [v, c], label: "bench dW")
            var warmed = false
            for n in Self.rowCounts {
                let shape = "N=\(n) C=\(c) C_t=\(ct) V=\(v)"
                let hidden = try backend.tensor(benchValues(n * c, seed: 23, scale: 1), shape: [n, c], label: "bench hidden")
                let teacherHidden = try backend.tensor(benchValues(n * ct, seed: 24, scale: 1), shape: [n, ct], label: "bench teacher hidden")
                let gradHidden = try backend.tensor(shape: [n, c], label: "bench dh")
                let teacher = LinearTeacher.hidden(teacherHidden, weight: teacherWeight)

                /// One timed run (after one warm-up at the first size): seconds, peak extra bytes, loss, dh.
                func measure(_ materialized: Bool) throws -> (seconds: Double, peak: Int, loss: Float, dh: [Float]) {
                    try backend.fill(gradWeight, value: 0)
                    if !warmed {
                        _ = try fused(hidden: hidden, weight: weight, teacher: teacher, gradHidden: gradHidden, gradWeight: gradWeight)
                        _ = try fused.materialized(hidden: hidden, weight: weight, teacher: teacher, gradHidden: gradHidden, gradWeight: gradWeight)
                        warmed = true
                    }
                    try backend.synchronize()
                    let before = ledger.allocatedBytes
                    ledger.resetPeak()
                    let start = DispatchTime.now().uptimeNanoseconds
                    let result = materialized
                        ? try fused.materialized(hidden: hidden, weight: weight, teacher: teacher, gradHidden: gradHidden, gradWeight: gradWeight)
                        : try fused(hidden: hidden, weight: weight, teacher: teacher, gradHidden: gradHidden, gradWeight: gradWeight)
                    try backend.synchronize()
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    let peak = ledger.peakAllocatedBytes - before
                    return (seconds, peak, result.loss, try gradHidden.toArray())
                }
                context.report("linear-loss: \(shape) on \(backend.name): fused")
                let f = try measure(false)
                context.report("linear-loss: \(shape) on \(backend.name): materialized")
                let m = try measure(true)
                let flops = 2.0 * Double(n) * Double(v) * Double(2 * c + ct + c) // z, z_t, dh, dW
                let chunkRows = fused.chunkRows(rows: n, vocabulary: v, teacherIsHidden: true)
                let error = max(Double(abs(f.loss - m.loss)), maxAbsDifference(f.dh, m.dh))
                records.append(BenchRecord(suite: "linear-loss", kernel: "fused chunked head + loss", backend: backend.name, shape: shape,
                                           medianSeconds: f.seconds, gflopPerSecond: flops / f.seconds / 1e9, maxAbsError: error,
                                           extra: ["peak_extra_mib": Double(f.peak) / 1048576, "chunk_rows": Double(chunkRows),
                                                   "speedup_over_materialized": m.seconds / f.seconds],
                                           note: "one timed run; max_abs_error vs the materialized path (loss and dh)"))
                records.append(BenchRecord(suite: "linear-loss", kernel: "materialized logits + loss", backend: backend.name, shape: shape,
                                           medianSeconds: m.seconds, gflopPerSecond: flops / m.seconds / 1e9, maxAbsError: 0,
                                           extra: ["peak_extra_mib": Double(m.peak) / 1048576, "speedup_over_materialized": 1],
                                           note: "one timed run; [N, V] student and teacher logits"))
            }
        }
        return records
    }
}
