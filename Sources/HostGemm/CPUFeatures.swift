import CCPUFeatures

/// What this processor can execute, from CPUID masked by the register state the OS saves (XGETBV):
/// an instruction set counts only when both the CPU and the operating system enable it.
public struct CPUFeatures: Sendable, Equatable {
    public var vendor: String
    public var brand: String
    public var family: Int
    public var model: Int
    public var avx2: Bool
    public var fma: Bool
    public var avx512f: Bool
    public var avx512dq: Bool
    public var avx512bw: Bool
    public var avx512vl: Bool
    public var avx512vnni: Bool
    public var avx512bf16: Bool
    public var amxBF16: Bool
    public var osSavesZMM: Bool

    /// The processor this process runs on (read once).
    public static let current = CPUFeatures()

    init() {
        var raw = kdgpu_cpu_features()
        kdgpu_read_cpu_features(&raw)
        func text<T>(_ tuple: T) -> String {
            withUnsafeBytes(of: tuple) { bytes in
                String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self).trimmingCharacters(in: " ")
            }
        }
        vendor = text(raw.vendor)
        brand = text(raw.brand)
        family = Int(raw.family)
        model = Int(raw.model)
        avx2 = raw.avx2
        fma = raw.fma
        avx512f = raw.avx512f
        avx512dq = raw.avx512dq
        avx512bw = raw.avx512bw
        avx512vl = raw.avx512vl
        avx512vnni = raw.avx512vnni
        avx512bf16 = raw.avx512bf16
        amxBF16 = raw.amxBF16 && raw.amxTile
        osSavesZMM = raw.osSavesZMM
    }

    /// AVX-512 as the GEMM kernels of oneDNN (`avx512_core`) and OpenBLAS (`SkylakeX`) use it.
    public var avx512Core: Bool { avx512f && avx512dq && avx512bw && avx512vl }
    /// AVX2 with FMA (OpenBLAS's `Haswell` / `Zen` kernels, oneDNN's `avx2`).
    public var avx2FMA: Bool { avx2 && fma }

    /// The instruction sets that decide GEMM speed, e.g. `AVX-512F/DQ/BW/VL, AVX512_BF16, AVX2+FMA`.
    public var gemmSummary: String {
        var parts: [String] = []
        if avx512Core { parts.append("AVX-512F/DQ/BW/VL") } else if avx512f { parts.append("AVX-512F") }
        if avx512vnni { parts.append("AVX512_VNNI") }
        if avx512bf16 { parts.append("AVX512_BF16") }
        if amxBF16 { parts.append("AMX-BF16") }
        if avx2FMA { parts.append("AVX2+FMA") }
        if parts.isEmpty { parts.append("no AVX2") }
        return parts.joined(separator: ", ")
    }

    /// `AMD EPYC (AuthenticAMD family 25 model 17)`.
    public var processorDescription: String {
        "\(brand.isEmpty ? "unknown processor" : brand) (\(vendor.isEmpty ? "unknown vendor" : vendor) family \(family) model \(model))"
    }
}

private extension String {
    func trimmingCharacters(in character: Character) -> String {
        var text = Substring(self)
        while text.first == character { text = text.dropFirst() }
        while text.last == character { text = text.dropLast() }
        return String(text)
    }
}
