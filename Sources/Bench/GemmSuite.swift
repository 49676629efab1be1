import CPUBackend
import Foundation
import OpenCLBackend
import Tensor

/// SGEMM throughput: CLBlast on OpenCL devices, OpenBLAS on the CPU backend, on square sizes and
/// the LM-head shape of the default teacher (M=2048 tokens, K=576 width, N=49152 vocabulary).
public struct GemmSuite: BenchSuite {
    public let name = "gemm"
    public let summary = "SGEMM 512^3, 1024^3, 2048^3 and the LM head 2048x576x49152: GFLOP/s, ratio to OpenBLAS"

    static let shapes: [(m: Int, k: Int, n: Int, label: String)] = [
        (512, 512, 512, "square"), (1024, 1024, 1024, "square"), (2048, 2048, 2048, "square"),
        (2048, 576, 49152, "lm-head"),
    ]

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        for shape in Self.shapes {
            let (m, k, n) = (shape.m, shape.k, shape.n)
            let a = benchValues(m * k, seed: 2)
            // x^T W for an LM head: B is W [N, K], used transposed.
            let transposeB = shape.label == "lm-head"
            let b = benchValues(k * n, seed: 3)
            let flops = 2.0 * Double(m) * Double(n) * Double(k)
            let shapeText = "M=\(m) K=\(k) N=\(n)\(transposeB ? " (B transposed)" : "")"

            // The CPU result is the reference for the OpenCL backends; it is checked against fp64 itself.
            context.report("gemm: \(shapeText) on cpu (reference)")
            let cpuResult = try gemm(on: context.cpu, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB, context: context)
            let cpuError = fp64SpotCheck(cpuResult.values, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB)
            let blasGflops = flops / cpuResult.seconds / 1e9
            let kernel = shape.label == "lm-head" ? "sgemm_lm_head" : "sgemm"
            for backend in context.backends {
                guard let openCL = backend as? OpenCLBackend else {
                    records.append(BenchRecord(suite: "gemm", kernel: kernel, backend: backend.name, shape: shapeText,
                                               medianSeconds: cpuResult.seconds, gflopPerSecond: blasGflops, maxAbsError: cpuError,
                                               extra: ["fraction_of_openblas": 1],
                                               note: "OpenBLAS core \(CPUBackend.blasCoreName); error vs fp64 on 256 sampled entries"))
                    continue
                }
                // Every engine the device offers, the one in use last restored.
                let inUse = openCL.gemmEngine
                defer { openCL.gemmEngine = inUse }
                for engine in GemmEngine.allCases where engine == .clblast || openCL.device.isCPU {
                    openCL.gemmEngine = engine
                    context.report("gemm: \(shapeText) on \(backend.name) through \(engine.rawValue)")
                    let result = try gemm(on: backend, a: a, b: b, m: m, k: k, n: n, transposeB: transposeB, context: context)
                    let gflops = flops / result.seconds / 1e9
                    records.append(BenchRecord(suite: "gemm", kernel: "\(kernel) (\(engine.rawValue))", backend: backend.name,
                                               shape: shapeText, medianSeconds: result.seconds, gflopPerSecond: gflops,
                                               maxAbsError: maxAbsDifference(result.values, cpuResult.values),
                                               extra: ["fraction_of_openblas": gflops / blasGflops],
                                               note: engine == inUse ? "the engine this device uses" : nil))
                }
            }
        }
        return records
    }

    private func gemm(on backend: any Backend, a: [Float], b: [Float], m: Int, k: Int, n: Int, transposeB: Bool,
                      context: BenchContext) throws -> (values: [Float], seconds: Double) {
        let ta = try backend.tensor(a, shape: [m, k], label: "bench gemm A")
        let tb = try backend.tensor(b, shape: transposeB ? [n, k] : [k, n], label: "bench gemm B")
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
