import ArgumentParser

/// kdgpu: knowledge distillation for language models on any OpenCL device or the CPU.
struct KDGPU: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdgpu",
        abstract: "Knowledge distillation for language models on OpenCL devices (AMD, Intel, NVIDIA, Apple) or the CPU.",
        discussion: """
        Environment: KDGPU_KERNEL_DIR reads Kernels/*.cl from a folder instead of the embedded copies; \
        KDGPU_MEMORY_BUDGET (e.g. 6G) caps the device memory kdgpu allocates; KDGPU_VECTOR_WIDTH (2, 4, 8 or 16) \
        overrides the kernels' vector width; KDGPU_GEMM (clblast or host-blas) picks how an OpenCL \
        backend runs GEMMs.
        """,
        subcommands: [DevicesCommand.self, TokenizeCommand.self, GenerateCommand.self, EvalCommand.self, TrainCommand.self, ExportCommand.self, BenchCommand.self]
    )
}

KDGPU.main()
