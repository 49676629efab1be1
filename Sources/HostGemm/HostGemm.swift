import COneDNN
import Foundation
import Tensor

/// A GEMM engine: the host libraries (for the CPU backend and for CPU OpenCL devices, whose buffers
/// the host maps in place) and CLBlast (for OpenCL devices).
public enum GemmEngine: String, CaseIterable, Sendable {
    /// oneDNN's `dnnl_sgemm`: picks its kernels by the instruction sets the CPU and the OS enable
    /// (avx2, avx512_core, ...). The default host engine: measured fastest on every processor these
    /// machines have (README, "CPU GEMM engines").
    case onednn
    /// OpenBLAS, loaded after its kernel set is chosen from the CPU's features (``OpenBLASLibrary``).
    case openblas
    /// CLBlast kernels on an OpenCL device: the choice for GPUs.
    case clblast

    /// The environment variable that overrides the engine.
    public static let environmentVariable = "KDGPU_GEMM"
    /// The engine a CPU (backend or OpenCL device) uses unless `KDGPU_GEMM` names another.
    public static let defaultHost = GemmEngine.onednn

    public var runsOnHost: Bool { self != .clblast }

    /// The host engine a CPU runs when `requested` (`KDGPU_GEMM`) names this engine or another: it, if it
    /// runs on the host, else ``defaultHost``.
    public static func host(requested: GemmEngine?) -> GemmEngine { requested.flatMap { $0.runsOnHost ? $0 : nil } ?? defaultHost }

    /// The engine `KDGPU_GEMM` names, nil when it is unset; an unknown name is a one-line error listing the engines.
    public static func requested(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GemmEngine? {
        guard let value = environment[environmentVariable], !value.isEmpty else { return nil }
        guard let engine = GemmEngine(rawValue: value.lowercased()) else {
            throw TensorError.device("\(environmentVariable)=\(value) is not a GEMM engine; available: onednn, openblas "
                                     + "(the CPU backend and CPU OpenCL devices), clblast (OpenCL devices)")
        }
        return engine
    }

    /// What runs and why, e.g. `oneDNN 2.6.3 avx512_core_bf16 (dispatched by ISA from AVX-512F/DQ/BW/VL, AVX512_BF16, AVX2+FMA)`.
    public var description: String {
        switch self {
        case .onednn: return OneDNN.description
        case .openblas: return (try? OpenBLASLibrary.shared.description) ?? "OpenBLAS (not loadable)"
        case .clblast: return "CLBlast"
        }
    }

    /// Whether this host engine's bf16 products take the processor's bf16 instructions (the native
    /// route, ``BF16GemmRoute``), so bf16 is its faster type.
    public var multipliesBF16Natively: Bool { runsOnHost && (try? BF16GemmRoute.choice(for: self).route) == .native }

    /// How a host engine multiplies bf16 inputs and why, e.g. `bf16 inputs: widened to fp32 (no bf16 instructions on this processor)`.
    public var bf16Description: String {
        guard runsOnHost else { return "" }
        guard let (route, reason) = try? BF16GemmRoute.choice(for: self) else { return "bf16 inputs: (route not measurable)" }
        return "bf16 inputs: " + (route == .native ? "oneDNN's bf16 matmul" : "widened to fp32") + " (\(reason))"
    }
}

/// C = alpha op(A) op(B) + beta C (row-major, `p.batch` strided problems) on the host. A and B
/// are f32, bf16 or f16 as `p.inputType` says, products accumulated in fp32. bf16 takes the route
/// chosen for the engine (``BF16GemmRoute``; `bf16Route` sets it): oneDNN's matmul primitive
/// (Debian's OpenBLAS has no bf16 GEMM) or the operands widened to fp32 for the engine's GEMM. f16
/// is always widened, since oneDNN 2.6 multiplies f16 only on CPUs with AVX512-FP16 and no CPU here
/// has them (f16 is the GPUs' 16-bit type; on a CPU prefer bf16). f32 products of 2 to 16 rows run
/// on oneDNN's matmul primitive on the oneDNN engine.
public func hostGemm(_ engine: GemmEngine, _ p: GemmProblem, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer,
                     _ c: UnsafeMutablePointer<Float>, bf16Route: BF16GemmRoute? = nil) throws {
    if p.inputType == .bf16, try (bf16Route ?? BF16GemmRoute.choice(for: engine).route) == .native {
        try OneDNNMatmul.run(p, a: a, b: b, c: c)
        return
    }
    if p.inputType == .bf16 || p.inputType == .f16 {
        let countA = (p.batch - 1) * p.strideA + storedExtent(rows: p.m, columns: p.k, leading: p.lda, transposed: p.transposeA)
        let countB = (p.batch - 1) * p.strideB + storedExtent(rows: p.k, columns: p.n, leading: p.ldb, transposed: p.transposeB)
        var wide = p
        wide.inputType = .f32
        try WidenedOperands.shared.widened(a, count: countA, type: p.inputType) { a in
            try WidenedOperands.shared.widened(b, count: countB, type: p.inputType) { b in try hostGemm(engine, wide, a, b, c) }
        }
        return
    }
    let (a, b) = (a.assumingMemoryBound(to: Float.self), b.assumingMemoryBound(to: Float.self))
    switch engine {
    case .onednn:
        // A few rows against a matrix (a batch of sequences' decode step against the weights): oneDNN's
        // matmul primitive, made once per shape, streams the weights where dnnl_sgemm takes ~2.5x its
        // one-row time for 8 rows here; measured on batched generation (student, 8 sequences), 13-30%
        // faster a step, paired runs. One row stays on sgemm (its GEMV path is as fast).
        if p.m >= 2 && p.m <= OneDNNMatmul.largestFewRows && p.batch == 1 {
            try OneDNNMatmul.run(p, a: UnsafeRawPointer(a), b: UnsafeRawPointer(b), c: c)
            return
        }
        let sgemm = try OneDNN.library.sgemm
        let (ta, tb): (CChar, CChar) = (p.transposeA ? 84 : 78, p.transposeB ? 84 : 78)  // "T" or "N"
        for i in 0..<p.batch {
            let status = sgemm(ta, tb, Int64(p.m), Int64(p.n), Int64(p.k), p.alpha, a + i * p.strideA, Int64(p.lda),
                               b + i * p.strideB, Int64(p.ldb), p.beta, c + i * p.strideC, Int64(p.ldc))
            guard status == dnnl_success else {
                throw TensorError.device("oneDNN dnnl_sgemm failed (status \(status.rawValue)) on M=\(p.m) N=\(p.n) K=\(p.k)")
            }
        }
    case .openblas:
        let sgemm = try OpenBLASLibrary.shared.sgemm
        for i in 0..<p.batch {
            sgemm(101, p.transposeA ? 112 : 111, p.transposeB ? 112 : 111, Int32(p.m), Int32(p.n), Int32(p.k), p.alpha,
                  a + i * p.strideA, Int32(p.lda), b + i * p.strideB, Int32(p.ldb), p.beta, c + i * p.strideC, Int32(p.ldc))
        }
    case .clblast:
        throw TensorError.unsupported("CLBlast runs on OpenCL devices, not on host memory")
    }
}

/// oneDNN, opened at first use (like OpenBLAS, not linked): its version and the instruction set its
/// kernels dispatch to.
///
/// oneDNN runs on OpenMP threads, and libgomp reads its settings once, when it loads. Its default
/// keeps idle threads spinning for about 300,000 rounds after every parallel region; between GEMMs
/// a training step runs kdgpu's own threads or PoCL's, which those spinning threads then starve (a
/// CPU step ran at half its speed on a busy machine). So unless the user set `GOMP_SPINCOUNT` or
/// `OMP_WAIT_POLICY`, kdgpu sets a short spin (``spinCount``) before it loads the library.
public enum OneDNN {
    public typealias Sgemm = @convention(c) (CChar, CChar, Int64, Int64, Int64, Float, UnsafePointer<Float>?, Int64,
                                             UnsafePointer<Float>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> dnnl_status_t

    /// The entry points kdgpu uses.
    public struct Library: @unchecked Sendable {
        /// The `dlopen` handle (the matmul primitive's entry points are looked up in it).
        let handle: UnsafeMutableRawPointer
        public let sgemm: Sgemm
        /// `dnnl_get_effective_cpu_isa()`: a `dnnl_cpu_isa_t` bit set.
        public let effectiveISA: UInt32
        public let version: String
    }

    /// The OpenMP spin count kdgpu sets when the user set none.
    public static let spinCount = "1000"

    private static let loaded: Result<Library, TensorError> = Result { try load() }.mapError { $0 as? TensorError ?? .device("\($0)") }

    public static var library: Library { get throws { try loaded.get() } }

    private static func load() throws -> Library {
        let environment = ProcessInfo.processInfo.environment
        if environment["GOMP_SPINCOUNT"] == nil && environment["OMP_WAIT_POLICY"] == nil { setenv("GOMP_SPINCOUNT", spinCount, 1) }
        guard let handle = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_GLOBAL) ?? dlopen("libdnnl.so", RTLD_NOW | RTLD_GLOBAL) else {
            throw TensorError.device("oneDNN: cannot load libdnnl.so.2 (install the Debian package libdnnl2, or set KDGPU_GEMM=openblas)")
        }
        guard let sgemm = dlsym(handle, "dnnl_sgemm"), let isa = dlsym(handle, "dnnl_get_effective_cpu_isa"),
              let version = dlsym(handle, "dnnl_version") else {
            throw TensorError.device("oneDNN: libdnnl.so.2 lacks dnnl_sgemm, dnnl_get_effective_cpu_isa or dnnl_version")
        }
        let effective = unsafeBitCast(isa, to: (@convention(c) () -> dnnl_cpu_isa_t).self)().rawValue
        let v = unsafeBitCast(version, to: (@convention(c) () -> UnsafePointer<dnnl_version_t>?).self)()?.pointee
        return Library(handle: handle, sgemm: unsafeBitCast(sgemm, to: Sgemm.self), effectiveISA: effective,
                       version: v.map { "\($0.major).\($0.minor).\($0.patch)" } ?? "?")
    }

    /// `avx512_core_bf16`, `avx2`, ...: the widest instruction set oneDNN's kernels use here.
    public static var isa: String {
        guard let raw = try? library.effectiveISA else { return "unavailable" }
        switch dnnl_cpu_isa_t(rawValue: raw) {
        case dnnl_cpu_isa_sse41: return "sse41"
        case dnnl_cpu_isa_avx: return "avx"
        case dnnl_cpu_isa_avx2: return "avx2"
        case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni"
        case dnnl_cpu_isa_avx512_core: return "avx512_core"
        case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx"
        default: return "isa 0x\(String(raw, radix: 16))"
        }
    }

    static var description: String {
        guard let library = try? library else { return "oneDNN (not loadable)" }
        return "oneDNN \(library.version) \(isa) (dispatched by instruction set from \(CPUFeatures.current.gemmSummary))"
    }
}

/// OpenBLAS, opened at first use with its kernel set chosen from the CPU's features.
///
/// OpenBLAS reads `OPENBLAS_CORETYPE` once, when the library initializes, and its own detection
/// falls back to generic `Prescott` kernels on processors newer than its release (Debian's 0.3.21
/// on an Intel family 6 model 207 runs at a seventh of its speed). So kdgpu does not link it:
/// it sets the variable from the CPUID feature bits (never from the model number, never a kernel
/// set the CPU or the OS does not enable), then loads the library. A variable the user set wins.
public final class OpenBLASLibrary: @unchecked Sendable {
    public typealias Sgemm = @convention(c) (Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
                                             UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    public let sgemm: Sgemm
    /// The kernel set OpenBLAS runs (`openblas_get_corename()`).
    public let coreName: String
    /// Why: chosen from which features, or set by the user.
    public let reason: String

    private static let loaded: Result<OpenBLASLibrary, TensorError> = Result { try OpenBLASLibrary() }.mapError {
        $0 as? TensorError ?? .device("\($0)")
    }

    public static var shared: OpenBLASLibrary { get throws { try loaded.get() } }

    /// The kernel set for these features: the widest the CPU and the OS both enable.
    public static func coreType(for features: CPUFeatures) -> String? {
        if features.avx512Core { return features.avx512bf16 ? "Cooperlake" : "SkylakeX" }
        if features.avx2FMA { return features.vendor == "AuthenticAMD" || features.vendor == "HygonGenuine" ? "Zen" : "Haswell" }
        return nil
    }

    public var description: String { "OpenBLAS \(coreName) (\(reason))" }

    private init() throws {
        let variable = "OPENBLAS_CORETYPE"
        let features = CPUFeatures.current
        if let set = ProcessInfo.processInfo.environment[variable], !set.isEmpty {
            reason = "set by \(variable)=\(set)"
        } else if let core = Self.coreType(for: features) {
            setenv(variable, core, 1)
            reason = "chosen from \(features.gemmSummary)"
        } else {
            reason = "OpenBLAS's own detection: no AVX2+FMA"
        }
        guard let handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL) ?? dlopen("libopenblas.so", RTLD_NOW | RTLD_GLOBAL) else {
            throw TensorError.device("OpenBLAS: cannot load libopenblas.so.0 (install the Debian package libopenblas0)")
        }
        guard let sgemm = dlsym(handle, "cblas_sgemm"), let corename = dlsym(handle, "openblas_get_corename") else {
            throw TensorError.device("OpenBLAS: libopenblas.so.0 lacks cblas_sgemm or openblas_get_corename")
        }
        self.sgemm = unsafeBitCast(sgemm, to: Sgemm.self)
        let name = unsafeBitCast(corename, to: (@convention(c) () -> UnsafeMutablePointer<CChar>?).self)()
        coreName = name.map { String(cString: $0) } ?? "unknown"
    }
}

/// Elements from an operand's first to one past its last: op(X) is rows x columns, stored transposed
/// or not with leading dimension `leading`.
func storedExtent(rows: Int, columns: Int, leading: Int, transposed: Bool) -> Int {
    let (storedRows, storedColumns) = transposed ? (columns, rows) : (rows, columns)
    return (storedRows - 1) * leading + storedColumns
}
