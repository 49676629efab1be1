import Foundation
import TestSupport
import XCTest

/// The `kdgpu` executable as a user runs it: copied away from the source tree, with and without OpenCL.
final class CLITests: XCTestCase {
    private func kdgpu(_ arguments: [String], executable: URL? = nil, environment: [String: String] = [:],
                       workingDirectory: URL? = nil) throws -> KdgpuRun {
        try Kdgpu.run(arguments, environment: environment, executable: executable, workingDirectory: workingDirectory)
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
        XCTAssertEqual(outcome.status, 0, outcome.error)
        XCTAssertTrue(outcome.output.contains("\(device.selector)  \(device.name) (default: --device opencl)"), outcome.output)
        XCTAssertTrue(outcome.output.contains("global memory"), outcome.output)
        // Which GEMM engine runs, and why, for the CPU backend and the CPU OpenCL device.
        XCTAssertTrue(outcome.output.contains("GEMMs: oneDNN"), outcome.output)
        XCTAssertTrue(outcome.output.contains("dispatched by instruction set from"), outcome.output)
        XCTAssertTrue(outcome.output.contains("other host engine: OpenBLAS"), outcome.output)
    }

    /// An engine kdgpu does not have is a one-line error naming the ones it has, before any work.
    func testUnknownGemmEngineIsAOneLineError() throws {
        let outcome = try kdgpu(["bench", "gemm", "--device", "cpu"], environment: ["KDGPU_GEMM": "mkl"])
        XCTAssertNotEqual(outcome.status, 0)
        let lines = outcome.error.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, outcome.error)
        XCTAssertTrue(outcome.error.contains("KDGPU_GEMM=mkl") && outcome.error.contains("onednn, openblas"), outcome.error)
    }

    /// With no OpenCL platform (the ICD loader pointed at an empty folder) kdgpu says so and the CPU backend still works.
    func testWithoutAnyOpenCLPlatformTheCPUBackendStillWorks() throws {
        let emptyVendors = try temporaryFolder("no-icd")
        let environment = ["OCL_ICD_VENDORS": emptyVendors.path]
        let devices = try kdgpu(["devices"], environment: environment)
        XCTAssertEqual(devices.status, 0, devices.error)
        XCTAssertTrue(devices.output.contains("no OpenCL device"), devices.output)
        XCTAssertTrue(devices.output.contains("CL_PLATFORM_NOT_FOUND_KHR"), devices.output)
        XCTAssertTrue(devices.output.contains("cpu "), devices.output)

        let bench = try kdgpu(["bench", "copy", "--runs", "1", "--json"], environment: environment)
        XCTAssertEqual(bench.status, 0, bench.error)
        XCTAssertTrue(bench.error.contains("no OpenCL device, timing the CPU backend only"), bench.error)
        let records = try JSONSerialization.jsonObject(with: Data(bench.output.utf8)) as! [[String: Any]]
        XCTAssertEqual(records.map { $0["backend"] as? String }, ["cpu"])

        let named = try kdgpu(["bench", "copy", "--device", "opencl:0:0"], environment: environment)
        XCTAssertEqual(named.status, 1)
        XCTAssertTrue(named.error.hasPrefix("kdgpu: OpenCL error CL_PLATFORM_NOT_FOUND_KHR"), named.error)

        let model = Kdgpu.tinyModel
        let fallback = try kdgpu(["generate", "--model", model, "--prompt", "in", "--max-tokens", "2", "--temperature", "0"], environment: environment)
        XCTAssertEqual(fallback.status, 0, fallback.error)
        XCTAssertTrue(fallback.error.contains("no OpenCL platform; using the CPU backend"), fallback.error)
    }

    /// A copy of the release binary in another folder, with the source tree out of reach, runs its embedded kernels.
    func testCopiedBinaryBenchesBothBackendsWithValidatedRecords() throws {
        _ = try TestBackends.openCL()
        let folder = try temporaryFolder("copied")
        let copy = folder.appendingPathComponent("kdgpu")
        try FileManager.default.copyItem(at: Kdgpu.builtExecutable, to: copy)
        let outcome = try kdgpu(["bench", "--json", "copy", "--runs", "1"], executable: copy, workingDirectory: folder)
        XCTAssertEqual(outcome.status, 0, outcome.error)
        let records = try JSONSerialization.jsonObject(with: Data(outcome.output.utf8)) as! [[String: Any]]
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
        XCTAssertTrue(outcome.error.contains("kdgpu: OpenCL kernel build failed for elementwise.cl"), outcome.error)
        XCTAssertTrue(outcome.error.contains(folder.appendingPathComponent("elementwise.cl").path), outcome.error)
    }

    func testUnknownSuiteIsRejectedWithTheList() throws {
        let outcome = try kdgpu(["bench", "no-such-suite"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.error.contains("unknown suite 'no-such-suite'; suites: copy, gemm, ops, loss, linear-loss, lens, align, teacher, teacher-cache, generate, train, allreduce"), outcome.error)
    }
}

/// tokenize, generate and eval on a tiny llama fixture (random weights, a byte-level tokenizer with four merges).
final class ModelCommandTests: XCTestCase {
    private let model = Kdgpu.tinyModel

    private func kdgpu(_ arguments: [String]) throws -> KdgpuRun { try Kdgpu.run(arguments) }

    private func textFile(_ contents: Data) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-eval-\(UUID().uuidString).txt")
        try contents.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    func testTokenizePrintsIdsAndJSON() throws {
        let plain = try kdgpu(["tokenize", "--model", model, "in the é"])
        XCTAssertEqual(plain.status, 0, plain.error)
        XCTAssertEqual(plain.output, "259 258 32 195 169\n")
        let json = try kdgpu(["tokenize", "--model", model, "--json", "in the é"])
        XCTAssertEqual(json.output, "[259,258,32,195,169]\n")
    }

    func testGreedyGenerationIsDeterministicAndAgreesAcrossBackends() throws {
        var outputs: [String] = []
        for device in ["cpu", "opencl", "cpu"] {
            let run = try kdgpu(["generate", "--model", model, "--prompt", "in the", "--max-tokens", "8", "--temperature", "0", "--device", device])
            XCTAssertEqual(run.status, 0, run.error)
            XCTAssertTrue(run.error.contains("tokens in"), run.error)
            outputs.append(run.output)
        }
        XCTAssertEqual(Set(outputs).count, 1, "\(outputs)")
        let sampled = try kdgpu(["generate", "--model", model, "--prompt", "in the", "--max-tokens", "8", "--seed", "3", "--device", "cpu"])
        let again = try kdgpu(["generate", "--model", model, "--prompt", "in the", "--max-tokens", "8", "--seed", "3", "--device", "cpu"])
        XCTAssertEqual(sampled.output, again.output, "the same seed samples the same text")
        // A batch: one device batch of 3 continuations, each printed when done; the first greedy one is the single run's text.
        let batch = try kdgpu(["generate", "--model", model, "--prompt", "in the", "--max-tokens", "8", "--temperature", "0", "--batch", "3", "--device", "cpu"])
        XCTAssertEqual(batch.status, 0, batch.error)
        XCTAssertTrue(batch.output.contains("--- 1 of 3") && batch.output.contains("--- 3 of 3"), batch.output)
        XCTAssertTrue(batch.error.contains("3 sequences"), batch.error)
        let blocks = batch.output.components(separatedBy: "--- ").dropFirst().map { $0.split(separator: "\n", maxSplits: 1).dropFirst().joined() }
        XCTAssertEqual(Set(blocks).count, 1, "greedy continuations of one prompt agree: \(blocks)")
        XCTAssertEqual(blocks.first.map { $0.trimmingCharacters(in: .newlines) }, outputs[0].trimmingCharacters(in: .newlines))
    }

    /// `--prompts`: prompts of different lengths continued in one batch (left-padded in the KV cache),
    /// each greedy continuation the text the prompt gives alone, on both backends.
    func testPromptFileContinuesEachPromptAsItWouldAlone() throws {
        let texts = ["in", "the end of the word", "a b"]
        let file = try textFile(Data(texts.map { "{\"prompt\": \"\($0)\"}\n" }.joined().utf8))
        let alone = try texts.map { text in
            try kdgpu(["generate", "--model", model, "--prompt", text, "--max-tokens", "6", "--temperature", "0", "--device", "cpu"]).output
                .trimmingCharacters(in: .newlines)
        }
        for device in ["cpu", "opencl"] {
            let run = try kdgpu(["generate", "--model", model, "--prompts", file, "--max-tokens", "6", "--temperature", "0", "--device", device])
            XCTAssertEqual(run.status, 0, run.error)
            XCTAssertTrue(run.error.contains("3 sequences"), run.error)
            let blocks = run.output.components(separatedBy: "--- ").dropFirst().map { block in
                (header: String(block.prefix { $0 != "\n" }), text: block.split(separator: "\n", maxSplits: 1).dropFirst().joined().trimmingCharacters(in: .newlines))
            }
            XCTAssertEqual(blocks.map(\.header), texts.enumerated().map { "\($0 + 1) of 3: \($1)" })
            XCTAssertEqual(blocks.map(\.text), alone, device)
        }
    }

    func testEvalReportsTheSameNLLOnBothBackends() throws {
        let data = try textFile(Data(String(repeating: "in the beginning there was the word. ", count: 20).utf8))
        var means: [Double] = []
        for device in ["cpu", "opencl"] {
            let run = try kdgpu(["eval", "--model", model, "--data", data, "--seq-len", "32", "--batch-size", "4", "--json", "--device", device])
            XCTAssertEqual(run.status, 0, run.error)
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
            let mean = try XCTUnwrap(object["mean_nll"] as? Double)
            XCTAssertEqual(try XCTUnwrap(object["perplexity"] as? Double), exp(mean), accuracy: 1e-9 * exp(mean))
            XCTAssertGreaterThan(try XCTUnwrap(object["tokens"] as? Int), 100)
            XCTAssertNotNil(object["tokens_per_s"])
            means.append(mean)
        }
        XCTAssertEqual(means[1], means[0], accuracy: 1e-4 * means[0])
    }

    func testBadInputsGiveOneLineErrors() throws {
        let notUTF8 = try textFile(Data([0x68, 0x69, 0xFF, 0xFE, 0x20, 0x68, 0x69]))
        let cases: [([String], String)] = [
            (["eval", "--model", model, "--data", "/no/such/file.txt"], "/no/such/file.txt: cannot read the file"),
            (["eval", "--model", "/no/such/model.gguf", "--data", notUTF8], "/no/such/model.gguf: no such file"),
            (["eval", "--model", model, "--data", notUTF8, "--seq-len", "32", "--device", "cpu"], "\(notUTF8): input is not valid UTF-8 at byte 2"),
            (["eval", "--model", model, "--data", notUTF8, "--seq-len", "65", "--device", "cpu"], "exceeds the model's context length 64"),
            (["generate", "--model", model, "--prompt", "x", "--top-p", "0"], "--top-p must be in (0, 1]"),
            (["tokenize", "--model", notUTF8, "x"], notUTF8),
        ]
        for (arguments, expected) in cases {
            let run = try kdgpu(arguments)
            XCTAssertNotEqual(run.status, 0, "\(arguments)")
            XCTAssertTrue(run.error.contains(expected), "\(arguments): \(run.error)")
            XCTAssertFalse(run.error.contains("Fatal error"), "\(arguments): \(run.error)")
        }
    }
}
