import CPUBackend
import Foundation
import ProcessGroup
import Tensor

/// A family of microbenchmarks (`copy`, `gemm`, `loss`, ...). Each suite validates every kernel
/// against the CPU backend before timing it.
public protocol BenchSuite {
    /// The name given on the command line: `kdgpu bench NAME`.
    var name: String { get }
    /// One line for `kdgpu bench --help`.
    var summary: String { get }
    func run(_ context: BenchContext) throws -> [BenchRecord]
}

/// Every suite `kdgpu bench` knows, in the order it runs them.
public var allBenchSuites: [any BenchSuite] { [CopySuite(), GemmSuite(), OpsSuite(), LossSuite(), LinearLossSuite(), LensSuite(), AlignSuite(), TeacherSuite(), TeacherCacheSuite(), GenerateSuite(), TrainSuite(), AllReduceSuite()] }

/// What a suite needs: the backends to measure, the CPU reference, the timing policy, and
/// baselines measured once per run (copy bandwidth, host GEMM speed) for the ratios.
public final class BenchContext {
    /// The backends whose kernels are timed.
    public let backends: [any Backend]
    /// The reference every kernel is validated against (also timed when it is in `backends`).
    public let cpu: CPUBackend
    /// Timed runs per measurement (after one warm-up run that also fills PoCL's compile cache).
    public let runs: Int
    /// The teacher GGUF for the suites that run a model.
    public let teacherPath: String?
    /// Windows per micro-batch and tokens per window of the train suite's step.
    public let trainBatchSize: Int
    public let trainSeqLen: Int
    /// The student precisions the train suite times (bf16 where the backend runs bf16 GEMMs).
    public let trainPrecisions: [DType]
    /// The train suite's cached step reads its targets ahead: `auto`, `on` or `off` (``TrainingConfig/cacheReadAhead``).
    public let trainCacheReadAhead: String
    /// The mpirun job this bench runs in (the allreduce suite), or nil.
    public let world: MPIWorld?
    private let progress: (String) -> Void
    private var copyBandwidths: [ObjectIdentifier: Double] = [:]

    public init(backends: [any Backend], cpu: CPUBackend, runs: Int, teacherPath: String? = nil, trainBatchSize: Int = 4,
                trainSeqLen: Int = 128, trainPrecisions: [DType] = [.f32, .bf16], trainCacheReadAhead: String = "auto", world: MPIWorld? = nil,
                progress: @escaping (String) -> Void) {
        self.backends = backends
        self.cpu = cpu
        self.runs = max(1, runs)
        self.teacherPath = teacherPath
        self.trainBatchSize = trainBatchSize
        self.trainSeqLen = trainSeqLen
        self.trainPrecisions = trainPrecisions
        self.trainCacheReadAhead = trainCacheReadAhead
        self.world = world
        self.progress = progress
    }

    public func report(_ message: String) { progress(message) }

    /// The CPU backend first (whole-model suites check the others against its results), then the
    /// other timed backends.
    public var referenceFirst: [any Backend] { [cpu] + backends.filter { $0 !== cpu } }

    /// Median wall-clock seconds of `body` over `runs` runs after one warm-up; `body` must
    /// synchronize its backend before returning.
    public func median(_ body: () throws -> Void) throws -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return Self.median(times)
    }

    /// Median seconds of `body` and of `reference`, timed in alternation over `runs` pairs after one
    /// warm-up of each, and the median over the pairs of reference time / body time. On a shared
    /// machine whose speed drifts, that ratio moves far less than two medians taken apart.
    public func pairedMedians(_ body: () throws -> Void, against reference: () throws -> Void) throws
        -> (seconds: Double, referenceSeconds: Double, referenceOverBody: Double) {
        try body()
        try reference()
        var times: [Double] = [], referenceTimes: [Double] = [], ratios: [Double] = []
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            let middle = DispatchTime.now().uptimeNanoseconds
            try reference()
            let end = DispatchTime.now().uptimeNanoseconds
            times.append(Double(middle - start) / 1e9)
            referenceTimes.append(Double(end - middle) / 1e9)
            ratios.append(Double(end - middle) / Double(max(1, middle - start)))
        }
        return (Self.median(times), Self.median(referenceTimes), Self.median(ratios))
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Copy bandwidth of `backend` in GB/s (bytes read + written), measured once per run by the copy suite's kernel.
    public func copyBandwidth(of backend: any Backend) throws -> Double {
        if let known = copyBandwidths[ObjectIdentifier(backend)] { return known }
        let measured = try CopySuite.measure(on: backend, context: self).gbPerSecond ?? 0
        copyBandwidths[ObjectIdentifier(backend)] = measured
        return measured
    }

    func recordCopyBandwidth(_ gbPerSecond: Double, of backend: any Backend) {
        copyBandwidths[ObjectIdentifier(backend)] = gbPerSecond
    }
}

/// Largest |a - b| over two equally long arrays (infinite only where they disagree on infinities or NaN).
public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "maxAbsDifference of \(a.count) and \(b.count) values")
    var worst = 0.0
    for (x, y) in zip(a, b) where x != y {
        worst = max(worst, abs(Double(x) - Double(y)))
        if x.isNaN || y.isNaN { return .nan }
    }
    return worst
}

/// `count` token ids below `vocabulary`, the same on every backend and run (the cost of a model
/// step does not depend on the text).
public func benchTokenIds(_ count: Int, below vocabulary: Int, seed: UInt64) -> [Int32] {
    var random = SplitMix64(seed: seed)
    return (0..<count).map { _ in Int32(random.uniform(below: vocabulary)) }
}

/// A deterministic pseudo-random fill (no Foundation RNG: records must be reproducible run to run).
public func benchValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}
