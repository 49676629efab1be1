import Foundation
import KernelSources
import OpenCLBackend
import Tensor
import TestSupport
import XCTest

/// The OpenCL runtime around the kernels: device selection, build errors, the memory ledger, views.
final class OpenCLRuntimeTests: XCTestCase {
    func testDefaultDeviceIsListedAndSelectable() throws {
        let backend = try TestBackends.openCL()
        let devices = try OpenCLPlatforms.devices()
        XCTAssertTrue(devices.contains { $0.selector == backend.device.selector })
        let byIndex = try OpenCLPlatforms.select(backend.device.selector)
        XCTAssertEqual(byIndex.name, backend.device.name)
        let byName = try OpenCLPlatforms.select(String(backend.device.name.prefix(4)).lowercased())
        XCTAssertEqual(byName.selector, devices.first { $0.name.lowercased().contains(String(backend.device.name.prefix(4)).lowercased()) }!.selector)
    }

    func testUnknownDeviceSelectorsAreWordedErrors() throws {
        _ = try TestBackends.openCL()
        for selector in ["opencl:9:9", "opencl:x", "no-such-device-name"] {
            XCTAssertThrowsError(try OpenCLPlatforms.select(selector)) { error in
                XCTAssertTrue("\(error)".contains("--device \(selector)"), "\(error)")
            }
        }
    }

    /// A kernel with a syntax error, read through the kernel-folder override, names the file and carries the compiler log.
    func testKernelSyntaxErrorNamesFileAndCompilerLog() throws {
        let device = try TestBackends.openCL().device
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-bad-kernels-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for name in KernelSources.embeddedFileNames {
            try KernelSources.source(named: name).text.write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try "__kernel void row_max(__global float* x) { this is not C; }\n"
            .write(to: folder.appendingPathComponent("rows.cl"), atomically: true, encoding: .utf8)
        setenv(KernelSources.overrideEnvironmentVariable, folder.path, 1)
        defer { unsetenv(KernelSources.overrideEnvironmentVariable) }

        let backend = try OpenCLBackend(device: device)
        let x = try backend.tensor([1, 2, 3, 4], shape: [2, 2], label: "x")
        let out = try backend.tensor(shape: [2], label: "out")
        XCTAssertThrowsError(try backend.reduceRows(.max, x, into: out)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("rows.cl"), message)
            XCTAssertTrue(message.contains(folder.path), message)
            XCTAssertTrue(message.contains("compiler log"), message)
            XCTAssertTrue(message.lowercased().contains("error"), message)
        }
        // Files the override folder holds intact still build.
        try backend.fill(out, value: 3)
        XCTAssertEqual(try out.toArray(), [3, 3])
    }

    func testMissingKernelFileInOverrideFolderIsNamed() throws {
        let device = try TestBackends.openCL().device
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-empty-kernels-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        setenv(KernelSources.overrideEnvironmentVariable, folder.path, 1)
        defer { unsetenv(KernelSources.overrideEnvironmentVariable) }
        let backend = try OpenCLBackend(device: device)
        let x = try backend.tensor(shape: [4], label: "x")
        XCTAssertThrowsError(try backend.fill(x, value: 1)) { error in
            XCTAssertTrue("\(error)".contains("common.cl not found in \(folder.path)"), "\(error)")
        }
    }

    /// PoCL does not enforce its memory size; kdgpu's ledger refuses first and says what to do.
    func testMemoryBudgetRefusesAllocationsPastIt() throws {
        let device = try TestBackends.openCL().device
        setenv(MemoryLedger.budgetEnvironmentVariable, "1M", 1)
        defer { unsetenv(MemoryLedger.budgetEnvironmentVariable) }
        let backend = try OpenCLBackend(device: device)
        XCTAssertEqual(backend.ledger.budgetBytes, 1 << 20)
        var kept: Tensor? = try backend.tensor(shape: [128 * 1024], label: "half")  // 512 KiB
        XCTAssertEqual(backend.ledger.allocatedBytes, 512 * 1024)
        XCTAssertThrowsError(try backend.tensor(shape: [160 * 1024], label: "logits chunk")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("logits chunk"), message)
            XCTAssertTrue(message.contains(MemoryLedger.budgetEnvironmentVariable), message)
        }
        XCTAssertEqual(backend.ledger.allocatedBytes, 512 * 1024, "a refused allocation is not counted")
        kept = nil
        XCTAssertNil(kept)
        XCTAssertEqual(backend.ledger.allocatedBytes, 0, "freed tensors leave the ledger")
    }

    func testBadBudgetValueIsAnError() throws {
        let device = try TestBackends.openCL().device
        setenv(MemoryLedger.budgetEnvironmentVariable, "lots", 1)
        defer { unsetenv(MemoryLedger.budgetEnvironmentVariable) }
        XCTAssertThrowsError(try OpenCLBackend(device: device)) { error in
            XCTAssertTrue("\(error)".contains("KDGPU_MEMORY_BUDGET=lots"), "\(error)")
        }
    }

    /// Ops on row views (element offsets into shared buffers) touch only the view.
    func testOpsOnRowViewsMatchCPU() throws {
        var rng = SeededRandom(seed: 7)
        let values = rng.logits(rows: 9, cols: 37, scale: 10)
        var results: [[Float]] = []
        for backend in try TestBackends.all() {
            let x = try backend.tensor(values, shape: [9, 37], label: "x")
            let y = try backend.tensor([Float](repeating: 42, count: 9 * 37), shape: [9, 37], label: "y")
            try backend.softmax(try x.rows(2..<5), into: try y.rows(3..<6), temperature: 2)
            try backend.axpy(alpha: 0.5, try x.rows(7..<9), try y.rows(0..<2))
            results.append(try y.toArray())
        }
        let comparison = Comparison(results[1], reference: results[0].map(Double.init))
        XCTAssertTrue(comparison.passes(tolerance: 1e-6), "\(comparison)")
        XCTAssertEqual(results[0][(2 * 37)..<(3 * 37)], ArraySlice(repeating: 42, count: 37), "rows outside the views are untouched")
    }

    func testShapeMismatchesAreWordedErrors() throws {
        for backend in try TestBackends.all() {
            let a = try backend.tensor(shape: [3, 4], label: "a")
            let b = try backend.tensor(shape: [5, 6], label: "b")
            let c = try backend.tensor(shape: [3, 6], label: "c")
            XCTAssertThrowsError(try backend.gemm(a, b, into: c)) { error in
                XCTAssertTrue("\(error)".contains("a [3, 4] x b [5, 6]"), "\(error)")
            }
            XCTAssertThrowsError(try backend.add(a, b, into: a)) { error in
                XCTAssertTrue("\(error)".contains("a [3, 4] vs b [5, 6]"), "\(error)")
            }
        }
    }
}
