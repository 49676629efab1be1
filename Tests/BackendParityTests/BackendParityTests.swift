import CPUBackend
import Foundation
import HostGemm
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// Runs every row of ``ParityTable`` on the CPU backend and on the default OpenCL device.
final class BackendParityTests: XCTestCase {
    func testCPUBackendAgainstFP64Reference() throws {
        try runTable(on: [TestBackends.cpu])
    }

    func testOpenCLBackendAgainstFP64ReferenceAndCPU() throws {
        try runTable(on: [TestBackends.cpu, try TestBackends.openCL()])
    }

    /// The whole table with the row kernels built as for a GPU (`float4`, a 256-wide work-group
    /// reduced by a local-memory tree, interleaved vectors) on this machine's OpenCL device: the GPU
    /// code paths are checked even where no GPU is.
    func testOpenCLBackendWithGPUKernelLayout() throws {
        let device = try TestBackends.openCL().device
        let backend = try OpenCLBackend(device: device, layout: .gpu(on: device))
        try runTable(on: [TestBackends.cpu, backend])
    }

    /// The GEMM rows through each engine the device offers: CLBlast always (bf16 and f16 through the
    /// project's kernels: tiled, and on tensor cores where offered), the host engines on CPU devices;
    /// and through each host engine of the CPU backend.
    func testGemmThroughEveryEngine() throws {
        for engine in GemmEngine.allCases where engine.runsOnHost {
            let cpu = try CPUBackend()
            cpu.gemmEngine = engine
            try runTable(on: [cpu], rows: [ParityTable.gemmCase])
        }
        let device = try TestBackends.openCL().device
        for engine in GemmEngine.allCases where !engine.runsOnHost || device.isCPU {
            let backend = try OpenCLBackend(device: device)
            backend.gemmEngine = engine
            // 16-bit inputs: the host paths (oneDNN's bf16 matmul, f16 widened), or with CLBlast the project's
            // tiled gemm_bf16 / gemm_f16 kernels and, where the device offers them (NVIDIA, compute capability
            // 8.0 and later), the tensor-core gemm_bf16_mma / gemm_f16_mma.
            for tensorCores in !engine.runsOnHost && backend.offersTensorCoreGemm ? [false, true] : [false] {
                backend.prefersTensorCoreGemm = tensorCores
                try runTable(on: [TestBackends.cpu, backend], rows: [ParityTable.gemmCase, ParityTable.gemmCase(inputType: .bf16), ParityTable.gemmCase(inputType: .f16)])
            }
            // Where the device has no tensor cores (CI's PoCL), gemm16_mma.cl with its mma instruction emulated
            // in OpenCL C: its tiling, copies and fragment layouts checked on every run.
            if !engine.runsOnHost && !backend.offersTensorCoreGemm {
                let emulated = try OpenCLBackend(device: device)
                emulated.gemmEngine = engine
                emulated.emulatesTensorCores = true
                XCTAssertEqual(emulated.gemm16KernelName(.bf16), "gemm_bf16_mma", emulated.gemmDescription)
                try runTable(on: [TestBackends.cpu, emulated], rows: [ParityTable.gemmCase(inputType: .bf16), ParityTable.gemmCase(inputType: .f16)])
            }
        }
    }

    /// Runs each instance on `backends`; the last backend is also compared with the first.
    private func runTable(on backends: [any Backend], rows: [ParityCase] = ParityTable.cases) throws {
        var checked = 0
        for row in rows {
            // Each row's own stream (seeded by its name), so adding a row changes no other row's inputs.
            var rng = SeededRandom(seed: row.op.utf8.reduce(UInt64(20_261_123)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 })
            for instance in row.instances(&rng) {
                let reference = instance.reference(instance.operands.map { $0.values.map(Double.init) })
                var firstResults: [[Float]]?
                for backend in backends {
                    let results = try run(instance, on: backend)
                    for (output, expected) in zip(results, reference) {
                        let comparison = Comparison(output, reference: expected)
                        XCTAssertTrue(comparison.passes(tolerance: row.tolerance),
                                      "\(row.op) [\(instance.description)] on \(backend.name) vs fp64: \(comparison), tolerance \(row.tolerance)")
                    }
                    if let firstResults, backends.count > 1 {
                        for (output, cpuOutput) in zip(results, firstResults) {
                            let comparison = Comparison(output, reference: cpuOutput.map(Double.init))
                            XCTAssertTrue(comparison.passes(tolerance: row.tolerance),
                                          "\(row.op) [\(instance.description)] on \(backend.name) vs \(backends[0].name): \(comparison)")
                        }
                    }
                    firstResults = firstResults ?? results
                }
                checked += 1
            }
        }
        let gemms = (backends.last as? OpenCLBackend).map { " (GEMMs: \($0.gemmDescription))" } ?? ""
        print("parity table: \(rows.count) ops, \(checked) instances on \(backends.map(\.name).joined(separator: ", "))\(gemms)")
    }

    private func run(_ instance: ParityInstance, on backend: any Backend) throws -> [[Float]] {
        var tensors = try instance.operands.enumerated().map { index, operand in
            try backend.tensor(operand.values, shape: operand.shape, label: "operand\(index)")
        }
        for (index, operand) in instance.rawOperands.enumerated() {
            let tensor = try backend.allocate(shape: operand.shape, dtype: operand.dtype, label: "raw operand\(index)")
            try operand.bytes.withUnsafeBytes { try backend.uploadBytes($0, to: tensor) }
            tensors.append(tensor)
        }
        try instance.run(backend, tensors)
        return try instance.outputs.map { try tensors[$0].toArray() }
    }
}
