import Foundation
import Tensor

/// How bf16 x bf16 -> fp32 products run on the host. A processor's bf16 instructions do not make
/// them faster everywhere: on the AMD EPYC here (AVX512_BF16) oneDNN's bf16 matmul runs at about
/// twice its fp32 GEMM's speed, on the Intel Xeon here (AVX512_BF16, no AMX) at half of it, and
/// PyTorch's bf16 matmul likewise. A slow native route gives way to widening, which multiplies the
/// same values: a bf16 value is the upper half of an fp32 one, and the products are summed in fp32
/// on either route (in another order, so the two differ at rounding level).
///
/// The route follows the processor (``byProcessor(_:)``), so every run on a machine rounds alike and a
/// resumed run continues exactly; `KDGPU_BF16_GEMM` sets it, or asks for a timing of both routes
/// (`measure`: the faster on this machine, at the price that a loaded machine may time them
/// differently from one process to the next; `kdgpu bench gemm` times both either way).
public enum BF16GemmRoute: String, CaseIterable, Sendable {
    /// oneDNN's matmul primitive on the bf16 operands (AMX or AVX512_BF16 kernels where present).
    case native
    /// Both operands widened to fp32 (exactly) and multiplied by the engine's fp32 GEMM.
    case widened

    /// What `KDGPU_BF16_GEMM` asks for.
    public enum Request: Equatable, Sendable {
        case route(BF16GemmRoute)
        case measure
    }

    /// The environment variable that sets the route.
    public static let environmentVariable = "KDGPU_BF16_GEMM"

    /// What `KDGPU_BF16_GEMM` asks for, nil when it is unset; an unknown value is a one-line error.
    public static func requested(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Request? {
        guard let value = environment[environmentVariable], !value.isEmpty else { return nil }
        if value.lowercased() == "measure" { return .measure }
        guard let route = BF16GemmRoute(rawValue: value.lowercased()) else {
            throw TensorError.device("\(environmentVariable)=\(value) is not a bf16 GEMM route; use native (oneDNN's bf16 matmul), "
                                     + "widened (fp32 GEMMs on the widened operands) or measure (the faster here), or unset it for the processor's")
        }
        return .route(route)
    }

    /// The route for a processor, from the measurements above: native with AMX-BF16 and with AVX512_BF16
    /// on AMD, widened with AVX512_BF16 alone on Intel and without bf16 instructions.
    public static func byProcessor(_ features: CPUFeatures) -> (route: BF16GemmRoute, reason: String) {
        if features.amxBF16 { return (.native, "AMX-BF16 on this processor") }
        guard features.avx512bf16 else { return (.widened, "no bf16 instructions on this processor") }
        if features.vendor == "AuthenticAMD" { return (.native, "AVX512_BF16 on an AMD processor") }
        return (.widened, "AVX512_BF16 without AMX on an Intel processor, where oneDNN's bf16 matmul runs at about half its fp32 GEMM's speed")
    }

    /// With `KDGPU_BF16_GEMM=measure`, the native route is kept unless widening is this much faster.
    static let widenedMargin = 1.15

    /// The route bf16 GEMMs take on `engine` and why: `KDGPU_BF16_GEMM`'s route, else its measurement
    /// (the faster of the two on a 4 x 128-token batch against a default-teacher MLP matrix,
    /// 512 x 576 x 1536, about 50 ms, once per process and engine), else the processor's.
    public static func choice(for engine: GemmEngine) throws -> (route: BF16GemmRoute, reason: String) {
        lock.lock()
        defer { lock.unlock() }
        if let known = choices[engine] { return known }
        let made: (route: BF16GemmRoute, reason: String)
        switch try requested() {
        case .route(let set):
            made = (set, "set by \(environmentVariable)=\(set.rawValue)")
        case .measure:
            let (native, widened) = try measure(engine)
            made = (native <= widened * widenedMargin ? .native : .widened,
                    String(format: "\(environmentVariable)=measure: oneDNN's bf16 matmul measured at %.2fx the widened fp32 route", widened / native))
        case nil:
            made = byProcessor(CPUFeatures.current)
        }
        choices[engine] = made
        return made
    }

    /// Takes `route` for `engine` in place of its own choice (an `mpirun` rank takes rank 0's, so
    /// every rank's products round alike, whatever processors they run on); a route set by
    /// `KDGPU_BF16_GEMM` still wins.
    public static func adopt(_ route: BF16GemmRoute, for engine: GemmEngine, reason: String) throws {
        if case .route = try requested() { return }
        lock.lock()
        defer { lock.unlock() }
        choices[engine] = (route, reason)
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var choices: [GemmEngine: (route: BF16GemmRoute, reason: String)] = [:]

    /// The best of three alternating timings of each route (seconds), after one warm-up each.
    private static func measure(_ engine: GemmEngine) throws -> (native: Double, widened: Double) {
        let p = GemmProblem(m: 512, n: 1536, k: 576, inputType: .bf16)
        var random = SplitMix64(seed: 5)
        // bf16 bit patterns of values in [-1, 1).
        let a = (0..<(p.m * p.k)).map { _ in UInt16(Float(random.unit() * 2 - 1).bitPattern >> 16) }
        let b = (0..<(p.k * p.n)).map { _ in UInt16(Float(random.unit() * 2 - 1).bitPattern >> 16) }
        var c = [Float](repeating: 0, count: p.m * p.n)
        var best: [BF16GemmRoute: Double] = [.native: .infinity, .widened: .infinity]
        try a.withUnsafeBytes { a in
            try b.withUnsafeBytes { b in
                try c.withUnsafeMutableBufferPointer { c in
                    for round in 0..<4 {
                        for route in allCases {
                            let start = DispatchTime.now().uptimeNanoseconds
                            try hostGemm(engine, p, a.baseAddress!, b.baseAddress!, c.baseAddress!, bf16Route: route)
                            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                            if round > 0 { best[route] = min(best[route]!, seconds) }
                        }
                    }
                }
            }
        }
        return (best[.native]!, best[.widened]!)
    }
}

/// Scratch fp32 copies of 16-bit GEMM operands, kept between GEMMs: a fresh allocation the size of
/// the LM head's (28M values) would fault its pages in at every call. Holds at most the two largest
/// operands' copies of the process (host memory, outside the device ledger).
final class WidenedOperands: @unchecked Sendable {
    static let shared = WidenedOperands()

    private let lock = NSLock()
    private var free: [UnsafeMutableBufferPointer<Float>] = []

    /// `count` 16-bit values of `type` (bf16 or f16) widened to fp32 (exact) in a scratch buffer, for `body`.
    func widened<R>(_ source: UnsafeRawPointer, count: Int, type: DType, _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        let buffer = take(count)
        defer { give(buffer) }
        let out = buffer.baseAddress!, chunk = 1 << 16, chunks = (count + chunk - 1) / chunk
        DispatchQueue.concurrentPerform(iterations: chunks) { index in
            let (start, end) = (index * chunk, min(count, (index + 1) * chunk))
            let load = type == .bf16 ? BlockFormat.loadBFloat16s : BlockFormat.loadHalves
            load(source + 2 * start, end - start, out + start)
        }
        return try body(UnsafePointer(out))
    }

    private func take(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        lock.lock()
        defer { lock.unlock() }
        // The smallest free buffer that holds `count`, else a new one (dropping the smallest free one).
        if let i = free.indices.filter({ free[$0].count >= count }).min(by: { free[$0].count < free[$1].count }) {
            return free.remove(at: i)
        }
        if !free.isEmpty, let smallest = free.indices.min(by: { free[$0].count < free[$1].count }) {
            free.remove(at: smallest).deallocate()
        }
        return .allocate(capacity: max(count, 1))
    }

    private func give(_ buffer: UnsafeMutableBufferPointer<Float>) {
        lock.lock()
        defer { lock.unlock() }
        free.append(buffer)
        while free.count > 2, let smallest = free.indices.min(by: { free[$0].count < free[$1].count }) {
            free.remove(at: smallest).deallocate()
        }
    }
}
