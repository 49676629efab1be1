import COneDNN
import Foundation
import HostGemm
import Tensor
import XCTest

/// The host GEMM engines: chosen from the processor's features, and correct on every shape.
final class GemmEngineTests: XCTestCase {
    /// oneDNN's own CPU detection reaches at least the instruction set our CPUID + XGETBV reading
    /// says the CPU and the OS enable, and never uses AVX-512 where we read none.
    func testOneDNNDispatchesToTheInstructionSetsThisProcessorEnables() throws {
        let features = CPUFeatures.current
        let effective = try XCTUnwrap(try? OneDNN.library.effectiveISA)
        let avx512Bit: UInt32 = 0x20  // in every avx512_core* value of dnnl_cpu_isa_t, in none of avx2's
        if features.avx512Core {
            XCTAssertEqual(effective & dnnl_cpu_isa_avx512_core.rawValue, dnnl_cpu_isa_avx512_core.rawValue,
                           "\(features.processorDescription) enables \(features.gemmSummary) but oneDNN dispatches to \(OneDNN.isa)")
        } else if features.avx2FMA {
            XCTAssertEqual(effective & dnnl_cpu_isa_avx2.rawValue, dnnl_cpu_isa_avx2.rawValue, "oneDNN dispatches to \(OneDNN.isa)")
        }
        if !features.avx512f { XCTAssertEqual(effective & avx512Bit, 0, "oneDNN uses AVX-512 (\(OneDNN.isa)) on a CPU or OS without it") }
        XCTAssertTrue(GemmEngine.onednn.description.contains(OneDNN.isa))
        XCTAssertTrue(GemmEngine.onednn.description.contains(features.gemmSummary))
    }

    /// OpenBLAS runs the kernel set chosen from the feature bits (unless the user set OPENBLAS_CORETYPE).
    func testOpenBLASRunsTheKernelSetChosenFromTheFeatureBits() throws {
        let library = try OpenBLASLibrary.shared
        if let set = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], !library.reason.hasPrefix("chosen") {
            XCTAssertEqual(library.reason, "set by OPENBLAS_CORETYPE=\(set)")
            return
        }
        let features = CPUFeatures.current
        guard let expected = OpenBLASLibrary.coreType(for: features) else { return }
        XCTAssertEqual(library.coreName.lowercased(), expected.lowercased(), library.description)
        if features.avx512Core { XCTAssertTrue(["SkylakeX", "Cooperlake"].contains(expected)) }
        if !features.avx512f { XCTAssertFalse(["SkylakeX", "Cooperlake"].contains(expected)) }
    }

    /// Kernel sets from feature sets, including processors this machine is not: never by model number.
    func testKernelSetsFollowFeaturesNotModels() {
        var f = CPUFeatures.current
        (f.avx512f, f.avx512dq, f.avx512bw, f.avx512vl, f.avx512bf16, f.avx2, f.fma) = (true, true, true, true, false, true, true)
        f.vendor = "GenuineIntel"
        f.model = 207
        XCTAssertEqual(OpenBLASLibrary.coreType(for: f), "SkylakeX")
        f.avx512bf16 = true
        XCTAssertEqual(OpenBLASLibrary.coreType(for: f), "Cooperlake")
        f.avx512bw = false
        XCTAssertEqual(OpenBLASLibrary.coreType(for: f), "Haswell")
        f.vendor = "AuthenticAMD"
        XCTAssertEqual(OpenBLASLibrary.coreType(for: f), "Zen")
        f.avx2 = false
        XCTAssertNil(OpenBLASLibrary.coreType(for: f))
    }

    func testUnknownEngineIsOneLineNamingTheAvailableOnes() {
        XCTAssertNil(try GemmEngine.requested([:]))
        XCTAssertEqual(try GemmEngine.requested([GemmEngine.environmentVariable: "OpenBLAS"]), .openblas)
        XCTAssertThrowsError(try GemmEngine.requested([GemmEngine.environmentVariable: "mkl"])) { error in
            let text = "\(error)"
            XCTAssertFalse(text.contains("\n"))
            for name in ["KDGPU_GEMM=mkl", "onednn", "openblas", "clblast"] { XCTAssertTrue(text.contains(name), text) }
        }
    }

    /// Both host engines against an fp64 product: odd shapes, every transpose, alpha and beta, batches;
    /// in fp32, and in bf16 and f16 on every route (the products of the rounded inputs, in fp64).
    func testEveryHostEngineMatchesFP64() throws {
        var random = SplitMix64(seed: 11)
        let inputs: [(DType, BF16GemmRoute?)] = [(.f32, nil), (.bf16, .native), (.bf16, .widened), (.f16, nil)]
        for engine in GemmEngine.allCases where engine.runsOnHost {
            for (inputType, route) in inputs {
                for (m, n, k, batch) in [(1, 1, 1, 1), (7, 13, 5, 1), (33, 17, 65, 3), (130, 129, 31, 2)] {
                    for (transposeA, transposeB) in [(false, false), (true, false), (false, true), (true, true)] {
                        let p = GemmProblem(m: m, n: n, k: k, batch: batch, transposeA: transposeA, transposeB: transposeB,
                                            alpha: 0.75, beta: -0.5, strideA: m * k + 3, strideB: k * n + 1, strideC: m * n + 2,
                                            inputType: inputType)
                        // Values the input type holds exactly, and their stored form.
                        func operand(_ count: Int) -> (values: [Float], bytes: [UInt8]) {
                            let values = (0..<count).map { _ in Float(random.unit() * 2 - 1) }
                            switch inputType {
                            case .bf16:
                                let bits = values.map { UInt16($0.bitPattern >> 16) }
                                return (bits.map { Float(bitPattern: UInt32($0) << 16) }, bits.withUnsafeBytes { Array($0) })
                            case .f16:
                                let halves = values.map { Float16($0) }
                                return (halves.map { Float($0) }, halves.withUnsafeBytes { Array($0) })
                            default:
                                return (values, values.withUnsafeBytes { Array($0) })
                            }
                        }
                        let a = operand(p.strideA * batch), b = operand(p.strideB * batch)
                        var c = (0..<(p.strideC * batch)).map { _ in Float(random.unit() * 2 - 1) }
                        var expected = c.map(Double.init)
                        for i in 0..<batch {
                            for row in 0..<m {
                                for column in 0..<n {
                                    var sum = 0.0
                                    for l in 0..<k {
                                        let x = a.values[i * p.strideA + (transposeA ? l * p.lda + row : row * p.lda + l)]
                                        let y = b.values[i * p.strideB + (transposeB ? column * p.ldb + l : l * p.ldb + column)]
                                        sum += Double(x) * Double(y)
                                    }
                                    let index = i * p.strideC + row * p.ldc + column
                                    expected[index] = 0.75 * sum - 0.5 * expected[index]
                                }
                            }
                        }
                        try a.bytes.withUnsafeBytes { pa in
                            try b.bytes.withUnsafeBytes { pb in
                                try c.withUnsafeMutableBufferPointer { pc in
                                    try hostGemm(engine, p, pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, bf16Route: route)
                                }
                            }
                        }
                        let worst = zip(c, expected).map { abs(Double($0) - $1) }.max() ?? 0
                        XCTAssertLessThan(worst, 1e-5 * Double(k), "\(engine) \(inputType) \(route.map(\.rawValue) ?? "") \(p)")
                    }
                }
            }
        }
    }

    /// Every f16 and every bf16 value reaches an fp32 GEMM exactly on the widened routes (each value
    /// times 1): zeros, subnormals, the largest finite values, infinities, NaNs.
    func testWideningIsExactForEveryHalfValue() throws {
        let patterns = (0...UInt16.max).map { $0 }
        for (inputType, route) in [(DType.f16, BF16GemmRoute?.none), (.bf16, .widened)] {
            let p = GemmProblem(m: patterns.count, n: 1, k: 1, inputType: inputType)
            let one: UInt16 = inputType == .f16 ? Float16(1).bitPattern : UInt16(Float(1).bitPattern >> 16)
            var c = [Float](repeating: 7, count: patterns.count)
            try patterns.withUnsafeBytes { a in
                try withUnsafeBytes(of: one) { b in
                    try c.withUnsafeMutableBufferPointer { try hostGemm(.onednn, p, a.baseAddress!, b.baseAddress!, $0.baseAddress!, bf16Route: route) }
                }
            }
            for (bits, value) in zip(patterns, c) {
                let expected = inputType == .f16 ? Float(Float16(bitPattern: bits)) : Float(bitPattern: UInt32(bits) << 16)
                if expected.isNaN { XCTAssertTrue(value.isNaN, "\(inputType) 0x\(String(bits, radix: 16))") } else if expected == 0 {
                    XCTAssertEqual(value, 0, "\(inputType) 0x\(String(bits, radix: 16))")  // the GEMM's sum may start at +0
                } else {
                    XCTAssertEqual(value.bitPattern, expected.bitPattern, "\(inputType) 0x\(String(bits, radix: 16)): \(value) vs \(expected)")
                }
            }
        }
    }

    /// The bf16 route: set by KDGPU_BF16_GEMM (a route, or `measure`; anything else is a one-line
    /// error naming the choices), else the processor's (by its bf16 instructions and vendor, the same
    /// in every process), chosen once per engine and named with its reason in the engine's description.
    func testTheBF16RouteIsSetOrTheProcessorsAndNamed() throws {
        XCTAssertNil(try BF16GemmRoute.requested([:]))
        XCTAssertEqual(try BF16GemmRoute.requested([BF16GemmRoute.environmentVariable: "Widened"]), .route(.widened))
        XCTAssertEqual(try BF16GemmRoute.requested([BF16GemmRoute.environmentVariable: "measure"]), .measure)
        XCTAssertThrowsError(try BF16GemmRoute.requested([BF16GemmRoute.environmentVariable: "amx"])) { error in
            let text = "\(error)"
            XCTAssertFalse(text.contains("\n"))
            for name in ["KDGPU_BF16_GEMM=amx", "native", "widened", "measure"] { XCTAssertTrue(text.contains(name), text) }
        }
        var features = CPUFeatures.current
        (features.avx512bf16, features.amxBF16, features.vendor) = (false, false, "GenuineIntel")
        XCTAssertEqual(BF16GemmRoute.byProcessor(features).route, .widened)
        features.avx512bf16 = true
        XCTAssertEqual(BF16GemmRoute.byProcessor(features).route, .widened, "AVX512_BF16 alone on Intel")
        features.amxBF16 = true
        XCTAssertEqual(BF16GemmRoute.byProcessor(features).route, .native, "AMX-BF16")
        (features.amxBF16, features.vendor) = (false, "AuthenticAMD")
        XCTAssertEqual(BF16GemmRoute.byProcessor(features).route, .native, "AVX512_BF16 on AMD")
        features.avx512bf16 = false
        XCTAssertEqual(BF16GemmRoute.byProcessor(features).route, .widened, "no bf16 instructions on AMD")

        let (route, reason) = try BF16GemmRoute.choice(for: .onednn)
        XCTAssertEqual(try BF16GemmRoute.choice(for: .onednn).route, route, "chosen once")
        XCTAssertTrue(GemmEngine.onednn.bf16Description.contains(reason))
        if ProcessInfo.processInfo.environment[BF16GemmRoute.environmentVariable] == nil {
            XCTAssertTrue(route == BF16GemmRoute.byProcessor(.current).route && reason == BF16GemmRoute.byProcessor(.current).reason, reason)
        }
    }
}
