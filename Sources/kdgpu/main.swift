import ArgumentParser
import Foundation

/// kdgpu: knowledge distillation for language models on any OpenCL device or the CPU.
struct KDGPU: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdgpu",
        abstract: "Knowledge distillation for language models on OpenCL devices (AMD, Intel, NVIDIA, Apple) or the CPU.",
        discussion: """
        Environment: KDGPU_KERNEL_DIR reads Kernels/*.cl from a folder instead of the embedded copies; \
        KDGPU_MEMORY_BUDGET (e.g. 6G) caps the device memory kdgpu allocates; KDGPU_VECTOR_WIDTH (2, 4, 8 or 16) \
        overrides the kernels' vector width; KDGPU_GEMM (onednn, openblas or clblast) overrides the GEMM \
        engine, which is otherwise chosen from the processor's features (oneDNN on the CPU backend and CPU OpenCL \
        devices, CLBlast on GPUs); OPENBLAS_CORETYPE, when set, overrides the OpenBLAS kernel set kdgpu chooses.
        """,
        subcommands: [DevicesCommand.self, TokenizeCommand.self, GenerateCommand.self, EvalCommand.self, TeacherCacheCommand.self, TrainCommand.self, ExportCommand.self, BenchCommand.self]
    )
}

// Command-line mistakes are one line, like every other kdgpu error (the usage is in --help);
// help and version requests print as usual.
do {
    var command = try KDGPU.parseAsRoot()
    try command.run()
} catch {
    if KDGPU.exitCode(for: error) == .success { KDGPU.exit(withError: error) }
    let message = KDGPU.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    note("kdgpu: \(message)")
    Foundation.exit(KDGPU.exitCode(for: error).rawValue)
}
