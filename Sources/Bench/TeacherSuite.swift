import Foundation
import GGUF
import Models
import OpenCLBackend
import Tensor

/// The teacher's forward pass and the dequantization kernels that keep its weights quantized.
public struct TeacherSuite: BenchSuite {
    public let name = "teacher"
    public let summary = "dequantize_* bandwidth; teacher forward tokens/s and resident memory, batch 8 x 256 (needs `make teacher`)"

    /// Weights per dequantization measurement: 16 Mi (a 64 MiB fp32 output).
    static let dequantizeCount = 16 << 20
    static let batch = 8, sequenceLength = 256

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        var records = try dequantizeRecords(context)
        guard let path = context.teacherPath, FileManager.default.fileExists(atPath: path) else {
            throw TensorError.unsupported("bench teacher: no teacher at \(context.teacherPath ?? "(none)"); run `make teacher` or pass --teacher FILE.gguf")
        }
        records += try forwardRecords(GGUFFile(path: path), context)
        return records
    }

    private func dequantizeRecords(_ context: BenchContext) throws -> [BenchRecord] {
        var records: [BenchRecord] = []
        let n = Self.dequantizeCount
        for dtype in [DType.q8_0, .q4_0, .q4_1, .f16, .bf16] {
            let type = GGMLType(dtype)!
            let values = benchValues(n, seed: 4)
            var blocks = [UInt8](repeating: 0, count: dtype.byteCount(elements: n))
            values.withUnsafeBufferPointer { input in
                blocks.withUnsafeMutableBytes { GGUF.quantize(input.baseAddress!, count: n, type: type, into: $0.baseAddress!) }
            }
            let expected = try cpuDequantize(blocks, dtype: dtype, count: n, context: context)
            // Into fp32, and straight into bf16 and f16 (the 16-bit teachers' GEMM inputs: checked against the
            // fp32 result rounded on the host). A 16-bit type is not expanded into itself (it is used as it is),
            // and bf16 weights not into fp32 here (their widening is the ops suite's dequantize_bf16).
            let bf16Expected = expected.map { Float(bitPattern: UInt32(BlockFormat.bfloat16Bits($0)) << 16) }
            let f16Expected = expected.map { Float(Float16($0)) }
            for (outType, reference) in [(DType.f32, expected), (.bf16, bf16Expected), (.f16, f16Expected)]
            where outType != dtype && !(dtype == .bf16 && outType == .f32) {
                let kernel = "dequantize_\(dtype.rawValue)" + (outType == .f32 ? "" : "_to_\(outType.rawValue)")
                for backend in context.backends {
                    context.report("teacher: \(kernel) of \(n) weights on \(backend.name)")
                    let source = try backend.allocate(shape: [n], dtype: dtype, label: "bench \(dtype.rawValue) blocks")
                    try blocks.withUnsafeBytes { try backend.uploadBytes($0, to: source) }
                    let out = try backend.tensor(shape: [n], dtype: outType, label: "bench dequantized")
                    let seconds = try context.median {
                        try backend.dequantize(source, into: out)
                        try backend.synchronize()
                    }
                    let result = try out.toArray()
                    let gbPerSecond = Double(blocks.count + outType.byteCount(elements: n)) / seconds / 1e9
                    records.append(BenchRecord(suite: name, kernel: kernel, backend: backend.name, shape: "[\(n)]", dtype: outType == .f32 ? dtype.rawValue : outType.rawValue,
                                               medianSeconds: seconds, gbPerSecond: gbPerSecond,
                                               maxAbsError: maxAbsDifference(result, reference),
                                               extra: ["fraction_of_copy_bandwidth": gbPerSecond / (try context.copyBandwidth(of: backend))]))
                }
            }
        }
        return records
    }

    private func cpuDequantize(_ blocks: [UInt8], dtype: DType, count: Int, context: BenchContext) throws -> [Float] {
        let source = try context.cpu.allocate(shape: [count], dtype: dtype, label: "reference blocks")
        try blocks.withUnsafeBytes { try context.cpu.uploadBytes($0, to: source) }
        let out = try context.cpu.tensor(shape: [count], label: "reference dequantized")
        try context.cpu.dequantize(source, into: out)
        return try out.toArray()
    }

    private func forwardRecords(_ file: GGUFFile, _ context: BenchContext) throws -> [BenchRecord] {
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
        var records: [BenchRecord] = []
        var cpuLogits: [Float]?
        var fp32TokensPerSecond: [String: Double] = [:]
        let runs = ([context.cpu] + context.backends.filter({ $0 !== context.cpu })).flatMap { backend in
            [(backend, DType.f32)] + (context.backends.contains { $0 === backend } ? [(backend, DType.bf16)] : [])
        }
        for (backend, precision) in runs {
            // bf16 needs a host GEMM engine (CPUs, CPU OpenCL devices).
            guard precision == .f32 || (try? LlamaModel.probeBF16(on: backend)) != nil else { continue }
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: precision)
            let flat = benchTokenIds(Self.batch * Self.sequenceLength, below: model.config.vocabulary, seed: 12345)
            let tokens = (0..<Self.batch).map { Array(flat[($0 * Self.sequenceLength)..<(($0 + 1) * Self.sequenceLength)]) }
            context.report("teacher: forward \(Self.batch) x \(Self.sequenceLength) tokens on \(backend.name), \(precision.rawValue) GEMMs")
            let ledger = backend.ledger
            let before = ledger.allocatedBytes
            ledger.resetPeak()
            var logits: [Float] = []
            let seconds = try context.median {
                let result = try model.forward(tokens)
                try backend.synchronize()
                logits = try result.logits!.rows(0..<Self.sequenceLength).toArray()  // the first sequence, for validation
            }
            let peak = ledger.peakAllocatedBytes - before + model.residentBytes
            let error = cpuLogits.map { maxAbsDifference(logits, $0) } ?? 0
            cpuLogits = cpuLogits ?? logits
            guard context.backends.contains(where: { $0 === backend }) else { continue }
            let mib = { (bytes: Int) in Double(bytes) / Double(1 << 20) }
            let tokensPerSecond = Double(Self.batch * Self.sequenceLength) / seconds
            var extra = ["tokens_per_s": tokensPerSecond, "file_mib": mib(fileBytes), "resident_mib": mib(model.residentBytes), "peak_mib": mib(peak)]
            if precision == .f32 { fp32TokensPerSecond[backend.name] = tokensPerSecond } else if let fp32 = fp32TokensPerSecond[backend.name] {
                extra["speedup_over_fp32"] = tokensPerSecond / fp32
            }
            records.append(BenchRecord(
                suite: name, kernel: precision == .f32 ? "teacher_forward" : "teacher_forward bf16", backend: backend.name,
                shape: "\(Self.batch)x\(Self.sequenceLength) tokens, \(model.config.layers) blocks, C=\(model.config.width), V=\(model.config.vocabulary)",
                dtype: precision.rawValue,
                medianSeconds: seconds, maxAbsError: error, extra: extra,
                note: "resident = weights as stored + one scratch for the largest quantized matrix (in the GEMMs' type); peak adds the activations and logits"
                    + (precision == .bf16 ? "; dtype bf16: weight GEMMs in bf16 with fp32 accumulation, max_abs_error of the logits vs the CPU backend's fp32" : "")))
        }
        return records
    }
}
