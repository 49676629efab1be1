import Foundation
import TestSupport
import XCTest

/// The `kdgpu` executable as a user runs it: copied away from the source tree, with and without OpenCL.
final class CLITests: XCTestCase {
    /// The built `kdgpu`, next to this test bundle in the build folder.
    private var builtExecutable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kdgpu")
    }

    private struct Outcome {
        let status: Int32
        let standardOutput: String
        let standardError: String
    }

    private func kdgpu(_ arguments: [String], executable: URL? = nil, environment: [String: String] = [:],
                       workingDirectory: URL? = nil) throws -> Outcome {
        let process = Process()
        process.executableURL = executable ?? builtExecutable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let workingDirectory { process.currentDirectoryURL = workingDirectory }
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
                       standardError: String(decoding: errData, as: UTF8.self))
    }

    private func temporaryFolder(_ name: String) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    func testDevicesListsTheDefaultOpenCLDeviceAndTheCPUBackend() throws {
        let device = try TestBackends.openCL().device
        let outcome = try kdgpu(["devices"])
        XCTAssertEqual(outcome.status, 0, outcome.standardError)
        XCTAssertTrue(outcome.standardOutput.contains("\(device.selector)  \(device.name) (default: --device opencl)"), outcome.standardOutput)
        XCTAssertTrue(outcome.standardOutput.contains("global memory"), outcome.standardOutput)
        XCTAssertTrue(outcome.standardOutput.contains("OpenBLAS kernel"), outcome.standardOutput)
    }

    /// With no OpenCL platform (the ICD loader pointed at an empty folder) kdgpu says so and the CPU backend still works.
    func testWithoutAnyOpenCLPlatformTheCPUBackendStillWorks() throws {
        let emptyVendors = try temporaryFolder("no-icd")
        let environment = ["OCL_ICD_VENDORS": emptyVendors.path]
        let devices = try kdgpu(["devices"], environment: environment)
        XCTAssertEqual(devices.status, 0, devices.standardError)
        XCTAssertTrue(devices.standardOutput.contains("no OpenCL device"), devices.standardOutput)
        XCTAssertTrue(devices.standardOutput.contains("CL_PLATFORM_NOT_FOUND_KHR"), devices.standardOutput)
        XCTAssertTrue(devices.standardOutput.contains("cpu "), devices.standardOutput)

        let bench = try kdgpu(["bench", "copy", "--runs", "1", "--json"], environment: environment)
        XCTAssertEqual(bench.status, 0, bench.standardError)
        XCTAssertTrue(bench.standardError.contains("no OpenCL device, timing the CPU backend only"), bench.standardError)
        let records = try JSONSerialization.jsonObject(with: Data(bench.standardOutput.utf8)) as! [[String: Any]]
        XCTAssertEqual(records.map { $0["backend"] as? String }, ["cpu"])

        let forced = try kdgpu(["bench", "copy", "--device", "opencl"], environment: environment)
        XCTAssertEqual(forced.status, 1)
        XCTAssertTrue(forced.standardError.hasPrefix("kdgpu: OpenCL error CL_PLATFORM_NOT_FOUND_KHR"), forced.standardError)
    }

    /// A copy of the release binary in another folder, with the source tree out of reach, runs its embedded kernels.
    func testCopiedBinaryBenchesBothBackendsWithValidatedRecords() throws {
        _ = try TestBackends.openCL()
        let folder = try temporaryFolder("copied")
        let copy = folder.appendingPathComponent("kdgpu")
        try FileManager.default.copyItem(at: builtExecutable, to: copy)
        let outcome = try kdgpu(["bench", "--json", "copy", "--runs", "1"], executable: copy, workingDirectory: folder)
        XCTAssertEqual(outcome.status, 0, outcome.standardError)
        let records = try JSONSerialization.jsonObject(with: Data(outcome.standardOutput.utf8)) as! [[String: Any]]
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(records.first?["backend"] as? String, "cpu")
        XCTAssertTrue((records.last?["backend"] as? String ?? "").hasPrefix("opencl:"))
        for record in records {
            for key in ["suite", "kernel", "backend", "shape", "median_seconds", "gb_per_s", "max_abs_error"] {
                XCTAssertNotNil(record[key], "record lacks \(key): \(record)")
            }
            XCTAssertEqual(record["max_abs_error"] as? Double, 0)
            XCTAssertGreaterThan(record["gb_per_s"] as? Double ?? 0, 0)
        }
    }

    func testBrokenKernelFolderGivesAnErrorNamingTheFile() throws {
        _ = try TestBackends.openCL()
        let folder = try temporaryFolder("broken-kernels")
        try "#define VW 16\n".write(to: folder.appendingPathComponent("common.cl"), atomically: true, encoding: .utf8)
        try "__kernel void copy_f32(__global float* x) { x[0] = ; }\n"
            .write(to: folder.appendingPathComponent("elementwise.cl"), atomically: true, encoding: .utf8)
        let outcome = try kdgpu(["bench", "copy", "--device", "opencl", "--runs", "1"],
                                environment: ["KDGPU_KERNEL_DIR": folder.path])
        XCTAssertEqual(outcome.status, 1)
        XCTAssertTrue(outcome.standardError.contains("kdgpu: OpenCL kernel build failed for elementwise.cl"), outcome.standardError)
        XCTAssertTrue(outcome.standardError.contains(folder.appendingPathComponent("elementwise.cl").path), outcome.standardError)
    }

    func testUnknownSuiteIsRejectedWithTheList() throws {
        let outcome = try kdgpu(["bench", "no-such-suite"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.standardError.contains("unknown suite 'no-such-suite'; suites: copy, gemm"), outcome.standardError)
    }
}
