import CPUBackend
import Foundation
import HostGemm
import OpenCLBackend
import Tensor

/// SGEMM throughput on square sizes and the LM-head shape of the default teacher (M=2048 tokens,
/// K=576 width, N=49152 vocabulary), for every engine each backend offers. The ratio column is
/// against a reference engine that is not the one in use, measured in the same run (OpenBLAS when
/// oneDNN is in use, else oneDNN), so a mis-detected CPU shows up as a low fraction; the README's
/// bench script adds PyTorch's matmul on the same shapes.
public struct GemmSuite: BenchSuite {
    public let name = "gemm"
    public let summary = "SGEMM 512^3, 1024^3, 2048^3 and the LM head 2048x576x49152 on every engine, and bf16 / f16 inputs -> f32: GFLOP/s, ratio to an independent engine"

    static let shapes: [(m: Int, k: Int, n: Int, label: String)] = [
        (512, 512, 512, "square"), (1024, 1024, 1024, "square"), (2048, 2048, 2048, "square"),
        (2048, 576, 49152, "lm-head"),
    ]

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        let cpuEngine = context.cpu.gemmEngine
        let referenceEngine: GemmEngine = cpuEngine == .onednn ? .openblas : .onednn
        for shape in Self.shapes {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            let a = benchValues(m * k, seed: 2)
            // x^T W for an LM head: B is W [N, K], used transposed.
            let transposeB = shape.label == "lm-head"
            let b = benchValues(k * n, seed: 3)
            let flops = 2.0 * Double(m) * Double(n) * Double(k)
            let shapeText = "M=\(m) K=\(k) N=\(n)\(transposeB ? " (B transposed)" : "")"
            let kernel = shape.label == "lm-head" ? "sgemm_lm_head" : "sgemm"

            // The reference engine on the CPU backend: checked against fp64, then the speed every ratio is against.
            context.report("gemm: \(shapeText) on cpu through \(referenceEngine.rawValue) (reference)")
            context.cpu.gemmEngine = referenceEngine
            let reference = try gemm(on: context.cpu, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB, context: context)
            context.cpu.gemmEngine = cpuEngine
            let referenceError = fp64SpotCheck(reference.values, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB)
            let referenceGflops = flops / reference.seconds / 1e9
            for backend in context.backends {
                let engines: [GemmEngine]
                let inUse: GemmEngine
                let select: (GemmEngine) -> Void
                if let openCL = backend as? OpenCLBackend {
                    inUse = openCL.gemmEngine
                    engines = GemmEngine.allCases.filter { !$0.runsOnHost || openCL.device.isCPU }
                    select = { openCL.gemmEngine = $0 }
                } else if let cpu = backend as? CPUBackend {
                    inUse = cpu.gemmEngine
                    engines = GemmEngine.allCases.filter(\.runsOnHost)
                    select = { cpu.gemmEngine = $0 }
                } else {
                    continue
                }
                defer { select(inUse) }
                var inUseGflops = 0.0
                for engine in engines {
                    select(engine)
                    let isReference = backend === context.cpu && engine == referenceEngine
                    context.report("gemm: \(shapeText) on \(backend.name) through \(engine.rawValue)")
                    let result = isReference ? reference
                        : try gemm(on: backend, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB, context: context)
                    let gflops = flops / result.seconds / 1e9
                    if engine == inUse { inUseGflops = gflops }
                    let note = engine == inUse ? "in use: \(backend.gemmDescription)"
                        : isReference ? "the reference: \(engine.description); error vs fp64 on 256 sampled entries" : nil
                    records.append(BenchRecord(suite: "gemm", kernel: "\(kernel) (\(engine.rawValue))", backend: backend.name,
                                               shape: shapeText, medianSeconds: result.seconds, gflopPerSecond: gflops,
                                               maxAbsError: isReference ? referenceError : maxAbsDifference(result.values, reference.values),
                                               extra: ["fraction_of_\(referenceEngine.rawValue)": gflops / referenceGflops],
                                               note: note))
                }
                // 16-bit inputs, fp32 accumulation and output (the engine in use, not the last one timed): bf16
                // on both routes wherever the host engine runs (oneDNN's matmul primitive, the operands widened
                // to fp32: which one a run takes is measured, BF16GemmRoute), f16 widened to fp32 there (no CPU
                // here multiplies f16); the project's kernels where CLBlast runs: the tiled ones, and the
                // tensor-core ones where the device offers them (each timed).
                select(inUse)
                let openCL = inUse.runsOnHost ? nil : backend as? OpenCLBackend
                let routeInUse = inUse.runsOnHost ? try BF16GemmRoute.choice(for: inUse).route : nil
                defer { openCL?.prefersTensorCoreGemm = true; setRoute(nil, on: backend) }
                for inputType in [DType.bf16, .f16] {
                    // (its set-up, then its label; whether a run takes it)
                    let widened = "widened to f32, \(inUse.rawValue)"
                    let paths: [(setUp: () -> String, inUse: Bool)]
                    if let openCL {
                        paths = (openCL.offersTensorCoreGemm ? [false, true] : [false]).map { tensorCores in
                            ({ openCL.prefersTensorCoreGemm = tensorCores; return "\(openCL.gemm16KernelName(inputType)) kernel" },
                             tensorCores == openCL.offersTensorCoreGemm)
                        }
                    } else if inputType == .bf16 {
                        paths = BF16GemmRoute.allCases.map { route in
                            ({ setRoute(route, on: backend); return route == .native ? "onednn matmul" : widened }, route == routeInUse)
                        }
                    } else {
                        paths = [({ widened }, true)]
                    }
                    for path in paths {
                        let label = path.setUp()
                        context.report("gemm: \(shapeText) on \(backend.name), \(inputType.rawValue) inputs (\(label))")
                        let result = try gemm(on: backend, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB, context: context, inputType: inputType)
                        let gflops = flops / result.seconds / 1e9
                        let bits = inputType == .bf16 ? 8 : 11
                        records.append(BenchRecord(suite: "gemm", kernel: "\(kernel) \(inputType.rawValue) x \(inputType.rawValue) -> f32 (\(label))", backend: backend.name,
                                                   shape: shapeText, dtype: inputType.rawValue, medianSeconds: result.seconds, gflopPerSecond: gflops,
                                                   maxAbsError: maxAbsDifference(result.values, reference.values),
                                                   extra: ["fraction_of_\(referenceEngine.rawValue)": gflops / referenceGflops,
                                                           "speedup_over_f32_in_use": gflops / inUseGflops],
                                                   note: "dtype \(inputType.rawValue): A and B narrowed once before timing; max_abs_error vs the fp32 reference (\(inputType.rawValue) rounds inputs to \(bits) significant bits)"
                                                       + (path.inUse ? "; in use" : "; not in use here")))
                    }
                }
            }
        }
        return records
    }

    /// Sets the bf16 route of a host engine's backend (nil: the measured one).
    private func setRoute(_ route: BF16GemmRoute?, on backend: any Backend) {
        if let cpu = backend as? CPUBackend { cpu.bf16GemmRoute = route }
        if let openCL = backend as? OpenCLBackend { openCL.bf16GemmRoute = route }
    }

    private func gemm(on backend: any Backend, a: [Float], b: [Float], m: Int, k: Int, n: Int, transposeB: Bool,
                      context: BenchContext, inputType: DType = .f32) throws -> (values: [Float], seconds: Double) {
        let ta = try backend.tensor(a, shape: [m, k], dtype: inputType, label: "bench gemm A")
        let tb = try backend.tensor(b, shape: transposeB ? [n, k] : [k, n], dtype: inputType, label: "bench gemm B")
        let tc = try backend.tensor(shape: [m, n], label: "bench gemm C")
        let seconds = try context.median {
            try backend.gemm(ta, tb, into: tc, transposeB: transposeB)
            try backend.synchronize()
        }
        return (try tc.toArray(), seconds)
    }

    /// Largest error of 256 sampled entries of C against an fp64 dot product.
    private func fp64SpotCheck(_ c: [Float], a: [Float], b: [Float], m: Int, k: Int, n: Int, transposeB: Bool) -> Double {
        var worst = 0.0
        for sample in 0..<256 {
            let i = (sample * 7919) % m, j = (sample * 104_729) % n
            var sum = 0.0
            for l in 0..<k {
                sum += Double(a[i * k + l]) * Double(transposeB ? b[j * k + l] : b[l * n + j])
            }
            worst = max(worst, abs(sum - Double(c[i * n + j])))
        }
        return worst
    }
}
