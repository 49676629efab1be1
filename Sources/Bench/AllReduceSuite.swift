import Foundation
import GGUF
import Checkpoint
import Models
import ProcessGroup
import Tensor
import Training

/// The data-parallel step's communication: the gradient arena all-reduced across the ranks of an
/// `mpirun` job, through the trainer's own ``MPIGradientReducer`` (the buffer seen in host memory,
/// in place or mapped, summed in place in buckets). Each rank fills the buffer with its own values; the
/// sum is checked exactly (small integers). Outside mpirun the suite has nothing to measure.
public struct AllReduceSuite: BenchSuite {
    public let name = "allreduce"
    public let summary = "under `mpirun -np N kdgpu bench allreduce`: the gradient arena all-reduced (the data-parallel step's communication): GB/s, bus GB/s, vs copy bandwidth"

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        guard let world = context.world else {
            context.report("allreduce: not under mpirun; `mpirun -np 2 kdgpu bench allreduce` measures it")
            return []
        }
        // The default student's gradient arena (6 inherited blocks of the default teacher), and a small bucket.
        var sizes = [1 << 20]
        if let path = context.teacherPath, FileManager.default.fileExists(atPath: path) {
            let teacher = try LlamaParameters(gguf: try GGUFFile(path: path))
            let blocks = try StudentLayers.parse(TrainingConfig().studentLayers, teacherLayers: teacher.config.layers)
            sizes.append(try teacher.inheriting(blocks: blocks).tensors.values.reduce(0) { $0 + $1.values.count })
        }
        let reducer = MPIGradientReducer(world: world)
        var records: [BenchRecord] = []
        for backend in context.backends {
            for count in sizes {
                // After the backward (the buffer at once), and overlapped (in 8 spans lent to the
                // communication thread one after another, as a backward finishes them; nothing to
                // overlap with here, so it times the lending's own cost); then after the backward with
                // bf16 on the wire (the sums of small integers are exact in bf16 too).
                for (overlapped, bf16) in [(false, false), (true, false), (false, true)] {
                    guard try reducer.overlap(overlapped) == overlapped else { continue }
                    reducer.bf16OnTheWire = bf16
                    context.report("allreduce: \(count) floats on \(backend.name), \(world.size) ranks\(overlapped ? ", overlapped path" : "")\(bf16 ? ", bf16 on the wire" : "")")
                    let gradients = try backend.tensor(shape: [count], label: "bench gradient arena")
                    let own = Float(world.rank + 1)
                    var parts = StepParts()
                    let spans = (0..<8).map { count * $0 / 8..<count * ($0 + 1) / 8 }
                    let seconds = try context.median {
                        try backend.fill(gradients, value: own)
                        for span in spans where overlapped { try reducer.gradientsFinished(gradients, elements: span) }
                        try reducer.reduce(gradients: gradients, parts: &parts, late: nil)
                        try backend.synchronize()
                    }
                    let expected = Float(world.size * (world.size + 1) / 2)
                    let error = try gradients.toArray().reduce(0.0) { max($0, Double(abs($1 - expected))) }
                    let bytes = Double(count * 4)
                    let busFactor = 2 * Double(world.size - 1) / Double(world.size)
                    records.append(BenchRecord(
                        suite: name, kernel: overlapped ? "allreduce_sum_overlapped (MPIGradientReducer)"
                            : bf16 ? "allreduce_sum_bf16 (MPIGradientReducer)" : "allreduce_sum (MPIGradientReducer)",
                        backend: backend.name,
                        shape: "\(count) floats (\(String(format: "%.0f", bytes / 1e6)) MB), \(world.size) ranks, \(world.localSize) on this machine",
                        dtype: bf16 ? "bf16" : "f32",
                        medianSeconds: seconds, gbPerSecond: bytes / seconds / 1e9, maxAbsError: error,
                        extra: ["bus_gb_per_s": busFactor * bytes / seconds / 1e9,
                                "fraction_of_copy_bandwidth": bytes / seconds / 1e9 / (try context.copyBandwidth(of: backend))],
                        note: (overlapped
                               ? "fill, 8 spans lent to the host (the CPU backend's own storage; OpenCL: mapped) and all-reduced on a thread of their own, then waited for; "
                               : "fill, the buffer mapped to the host (in place on the CPU backend), MPI_Allreduce in place; ")
                            + (bf16 ? "each bucket rounded to bf16, all-reduced as bf16 (an fp32 addition rounded back), widened back; " : "")
                            + "buckets of \(MPIWorld.bucketElements) floats; GB/s: the fp32 buffer's bytes / time; bus GB/s: x 2(N-1)/N, what a ring moves per rank (in fp32)"))
                }
            }
        }
        return records
    }
}
