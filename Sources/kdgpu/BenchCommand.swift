import ArgumentParser
import Bench
import CPUBackend
import Foundation
import OpenCLBackend
import ProcessGroup
import Tensor
import Training

/// `kdgpu bench`: kernel microbenchmarks, each validated against the CPU backend first.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Validate kernels against the CPU backend, then time them and compare with this machine's limits.",
        discussion: "Suites:\n" + allBenchSuites.map { "  \($0.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.summary)" }.joined(separator: "\n"))

    @Argument(help: "Suites to run (default: all).")
    var suites: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "Backend to time: cpu, opencl, opencl:P:D or a device-name substring; repeat for several (default: cpu and the default OpenCL device).",
        valueName: "device"))
    var device: [String] = []

    @Option(name: .long, parsing: .unconditional, help: "Timed runs per measurement; the median is reported.")
    var runs: Int = 5

    @Option(name: .long, help: ArgumentHelp("The teacher GGUF for the teacher suite.", valueName: "file.gguf"))
    var teacher = "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"

    @Option(name: .long, parsing: .unconditional, help: "Windows per micro-batch of the train suite's step.")
    var batchSize = 4

    @Option(name: .long, parsing: .unconditional, help: "Tokens per window of the train suite's step.")
    var seqLen = 128

    @Option(name: .long, help: ArgumentHelp("Student precision of the train suite's step: fp32 or bf16; repeat for both (default: both, bf16 where the backend runs bf16 GEMMs).", valueName: "precision"))
    var precision: [String] = []

    @Option(name: .long, help: ArgumentHelp("The train suite's cached step: assemble each step's targets while the step before runs: auto (on devices that compute off the host's cores), on or off.", valueName: "when"))
    var cacheReadAhead = "auto"

    @Flag(name: .long, help: "Print one JSON array of records instead of a table.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also write the records as a JSON array to this file.", valueName: "file.json"))
    var jsonOut: String?

    func validate() throws {
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1, got \(runs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2 (one predicted token), got \(seqLen)") }
        for value in precision where !TrainingConfig.fp32OrBF16.contains(value) {
            throw ValidationError("--precision: '\(value)' is not a precision; use fp32 or bf16")
        }
        guard TrainingConfig.autoOnOff.contains(cacheReadAhead) else {
            throw ValidationError("--cache-read-ahead: '\(cacheReadAhead)' is not one of auto, on, off")
        }
        let known = allBenchSuites.map(\.name)
        for suite in suites where !known.contains(suite) {
            throw ValidationError("unknown suite '\(suite)'; suites: \(known.joined(separator: ", "))")
        }
    }

    func run() throws {
        do {
            // Under mpirun: the allreduce suite only (every rank runs it in step), rank 0 reports.
            let world = try MPIWorld.join()
            if world != nil && suites != ["allreduce"] {
                throw ValidationError("under mpirun, bench runs the allreduce suite alone: mpirun -np N kdgpu bench allreduce")
            }
            let writes = (world?.rank ?? 0) == 0
            defer { world?.finish() }
            let cpu = try CPUBackend()
            var backends: [any Backend] = []
            if device.isEmpty {
                backends.append(cpu)
                do {
                    backends.append(try OpenCLBackend(selector: "opencl"))
                } catch {
                    note("kdgpu bench: no OpenCL device, timing the CPU backend only (\(error))")
                }
            } else {
                backends = try device.map { try openBackend($0, cpu: cpu) }
            }
            let context = BenchContext(backends: backends, cpu: cpu, runs: runs, teacherPath: teacher,
                                       trainBatchSize: batchSize, trainSeqLen: seqLen,
                                       trainPrecisions: precision.isEmpty ? [.f32, .bf16] : precision.map { $0 == "bf16" ? .bf16 : .f32 },
                                       trainCacheReadAhead: cacheReadAhead, world: world) { message in
                if writes { note("bench \(message)") }
            }
            // Which engine runs each backend's GEMMs, and why: it decides most of the figures below.
            let engines = backends.map { "GEMMs on \($0.name): \($0.gemmDescription)" }.joined(separator: "\n")
            let selected = suites.isEmpty ? allBenchSuites : allBenchSuites.filter { suites.contains($0.name) }
            var records: [BenchRecord] = []
            for suite in selected {
                records += try suite.run(context)
            }
            guard writes else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            if let jsonOut { try encoder.encode(records).write(to: URL(fileURLWithPath: jsonOut), options: .atomic) }
            if json {
                print(String(decoding: try encoder.encode(records), as: UTF8.self))
            } else {
                print(engines + "\n\n" + formatBenchTable(records))
            }
        } catch {
            fail(error)
        }
    }
}
