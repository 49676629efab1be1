import Foundation
import Models
import Tensor

/// Sparse targets of whole windows from a teacher model, as a cache stores them: one forward with
/// logits, a softmax on the device, then each position's selection or draws on the host.
///
/// ```swift
/// let maker = SparseTargetMaker(spec: .sampled(draws: 50), seqLen: 128, seed: 0)
/// let targets = try maker.targets(of: tokens, windows: [40, 41], model: teacher)   // [2][127]
/// ```
public struct SparseTargetMaker: Sendable {
    public var spec: TeacherTargetSpec
    public var seqLen: Int
    /// The seed of the draws (`sampled:N`).
    public var seed: UInt64

    public init(spec: TeacherTargetSpec, seqLen: Int, seed: UInt64 = 0) {
        self.spec = spec
        self.seqLen = seqLen
        self.seed = seed
    }

    /// The targets of `batch` (`[B][T]` tokens of the window numbers `windows`, which seed the
    /// draws): one teacher forward, softmax on the device, then each position's selection or
    /// draws on the host, rows in parallel.
    public func targets(of batch: [[Int32]], windows: [Int], model: LlamaModel) throws -> [[SparseTarget]] {
        precondition(windows.count == batch.count, "one window number per row")
        guard let logits = try model.forward(batch).logits else { preconditionFailure("forward computes logits by default") }
        guard logits.dtype == .f32 else { throw TensorError.unsupported("teacher logits in \(logits.dtype.rawValue): the cache reads fp32 probabilities") }
        try model.backend.softmax(logits, into: logits)
        let v = model.config.vocabulary, rowsPerWindow = seqLen - 1, rows = batch.count * rowsPerWindow
        var results = [SparseTarget](repeating: SparseTarget(ids: [], values: [], tailMass: 0, labelLogProbability: 0), count: rows)
        // The probabilities read where they lie (no copy on the CPU backend or a device sharing host memory).
        try model.backend.withHostBytes(logits, writing: false) { bytes in
            let all = UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: logits.count)
            results.withUnsafeMutableBufferPointer { out in
                DispatchQueue.concurrentPerform(iterations: rows) { row in
                    let (window, position) = row.quotientAndRemainder(dividingBy: rowsPerWindow)
                    let offset = (window * seqLen + position) * v
                    var random = Self.random(seed: seed, window: windows[window], position: position)
                    out[row] = SparseTarget.extract(probabilities: UnsafeBufferPointer(rebasing: all[offset..<offset + v]),
                                                    label: Int(batch[window][position + 1]), spec: spec, random: &random)
                }
            }
        }
        return (0..<batch.count).map { Array(results[$0 * rowsPerWindow..<($0 + 1) * rowsPerWindow]) }
    }

    /// The draws of one position: their own stream, so a build gives the same cache however it is
    /// split into batches, shards and restarts.
    public static func random(seed: UInt64, window: Int, position: Int) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed ^ (UInt64(window) << 20 | UInt64(position)))
        return SplitMix64(seed: mixer.next())
    }
}
