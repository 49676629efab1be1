// swift-tools-version:5.10
// kdgpu: knowledge distillation for language models on OpenCL devices and CPUs.
//
// Dependency direction (top depends on bottom):
//   kdgpu (CLI) -> Bench -> Training -> Losses -> Tensor (the losses launch through Tensor's kernel protocols)
//   OpenCLBackend, CPUBackend -> Tensor (each implements those protocols: the kernels and their CPU twins)
//   Tokenizer -> GGUF -> Tensor
//   TrainingData -> Tokenizer, GGUF;  Checkpoint -> Models, GGUF, Tensor
//   OpenCLBackend -> KernelSources (the Kernels/*.cl files, embedded at build time), COpenCL, CCLBlast
//   CPUBackend, OpenCLBackend -> HostGemm (oneDNN, OpenBLAS; chosen by the CPU's features) -> COneDNN, CCPUFeatures

import Foundation
import PackageDescription

/// Release builds compile for the processor of the machine that builds them (`-target-cpu native` on
/// x86-64): the CPU backend's 16-lane kernels, AdamW and the loss rows then run on its widest vector
/// registers (AVX-512 or AVX2 with FMA) instead of baseline x86-64's 128-bit SSE. `KDGPU_TARGET_CPU`
/// names another processor (`x86-64` for a binary any x86-64 runs, `haswell`, `znver4`, ...).
let targetCPU: String? = {
    if let chosen = ProcessInfo.processInfo.environment["KDGPU_TARGET_CPU"], !chosen.isEmpty { return chosen }
    #if arch(x86_64)
    return "native"
    #else
    return nil
    #endif
}()

let releaseFlags: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"] + (targetCPU.map { ["-target-cpu", $0] } ?? []),
                                                 .when(configuration: .release))]

let package = Package(
    name: "kdgpu",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kdgpu", targets: ["kdgpu"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    ],
    targets: [
        // System libraries (Debian: ocl-icd-opencl-dev opencl-headers, libclblast-dev, libdnnl-dev, libssl-dev; libopenblas0 is loaded at run time).
        .systemLibrary(name: "COpenCL", path: "Sources/COpenCL", pkgConfig: "OpenCL",
                       providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers"])]),
        .systemLibrary(name: "CCLBlast", path: "Sources/CCLBlast", pkgConfig: "clblast",
                       providers: [.apt(["libclblast-dev"])]),
        .systemLibrary(name: "COneDNN", path: "Sources/COneDNN", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", providers: [.apt(["libssl-dev"])]),
        // CPUID and XGETBV: the instruction sets the processor and the OS enable.
        .target(name: "CCPUFeatures", path: "Sources/CCPUFeatures"),

        // Kernels/*.cl embedded into the binary by the EmbedKernels build-tool plugin.
        .executableTarget(name: "kernel-embedder", path: "Sources/kernel-embedder"),
        .plugin(name: "EmbedKernels", capability: .buildTool(), dependencies: ["kernel-embedder"],
                path: "Plugins/EmbedKernels"),
        .target(name: "KernelSources", path: "Sources/KernelSources", plugins: ["EmbedKernels"]),

        // Paths checked by kind before they are opened; file errors in kdgpu's words.
        .target(name: "Files", dependencies: ["CCrypto"], path: "Sources/Files", swiftSettings: releaseFlags),

        // The device-agnostic tensor API and its two backends.
        .target(name: "Tensor", path: "Sources/Tensor", swiftSettings: releaseFlags),
        // Host GEMMs for the CPU backend and CPU OpenCL devices: oneDNN, or OpenBLAS (loaded at run
        // time, after its kernel set is chosen from the CPU's features).
        .target(name: "HostGemm", dependencies: ["Tensor", "COneDNN", "CCPUFeatures"], path: "Sources/HostGemm", swiftSettings: releaseFlags),
        .target(name: "CPUBackend", dependencies: ["Tensor", "HostGemm"],
                // No errno from the C library's math: Float.squareRoot() is then one instruction that
                // vectorizes, not a call per lane (the same correctly rounded results).
                path: "Sources/CPUBackend", swiftSettings: releaseFlags + [.unsafeFlags(["-Xcc", "-fno-math-errno"])]),
        .target(name: "OpenCLBackend", dependencies: ["Tensor", "COpenCL", "CCLBlast", "HostGemm", "KernelSources"],
                path: "Sources/OpenCLBackend", swiftSettings: releaseFlags),

        // Model files: GGUF reader/writer, and the byte-level BPE tokenizer stored in GGUF metadata.
        .target(name: "GGUF", dependencies: ["Tensor", "Files"], path: "Sources/GGUF", swiftSettings: releaseFlags),
        .target(name: "Tokenizer", dependencies: ["GGUF", "Files"], path: "Sources/Tokenizer", swiftSettings: releaseFlags),

        // Models: the llama forward pass on any backend.
        .target(name: "Models", dependencies: ["Tensor", "GGUF"], path: "Sources/Models", swiftSettings: releaseFlags),

        // Training inputs and outputs: tokenized corpora cut into shuffled windows; safetensors,
        // Hugging Face / GGUF export and import, crash-safe training checkpoints.
        .target(name: "TrainingData", dependencies: ["Tensor", "Tokenizer", "GGUF", "Files"], path: "Sources/TrainingData", swiftSettings: releaseFlags),
        .target(name: "Checkpoint", dependencies: ["Tensor", "GGUF", "Models", "Tokenizer", "Files"], path: "Sources/Checkpoint", swiftSettings: releaseFlags),

        // Offline teacher: sparse targets (top-k, top-p, sampled) made once and read by training.
        .target(name: "TeacherCache", dependencies: ["Tensor", "GGUF", "Models", "Tokenizer", "TrainingData", "Checkpoint", "Files", "ProcessGroup"],
                path: "Sources/TeacherCache", swiftSettings: releaseFlags),

        // Training: the trainable student (forward/backward), optimizer, train loop.
        // Data parallelism: Open MPI, loaded at run time when kdgpu runs under mpirun.
        .target(name: "ProcessGroup", dependencies: ["Tensor"], path: "Sources/ProcessGroup", swiftSettings: releaseFlags),
        .target(name: "Training", dependencies: ["Tensor", "GGUF", "Models", "Losses", "Tokenizer", "TrainingData", "Checkpoint", "Files", "TeacherCache", "ProcessGroup",
                                                 .product(name: "Yams", package: "Yams")],
                path: "Sources/Training", swiftSettings: releaseFlags),

        // Distillation losses: fused softmax-temperature divergences and the chunked linear + loss path.
        .target(name: "Losses", dependencies: ["Tensor"],
                path: "Sources/Losses", swiftSettings: releaseFlags),

        // Kernel microbenchmarks (validate against the CPU backend, then time).
        .target(name: "Bench", dependencies: ["Tensor", "CPUBackend", "OpenCLBackend", "HostGemm", "Losses", "Models", "GGUF", "Training",
                                              "TrainingData", "Checkpoint", "TeacherCache", "ProcessGroup"],
                path: "Sources/Bench", swiftSettings: releaseFlags),

        // The command-line tool.
        .executableTarget(name: "kdgpu",
                          dependencies: ["Tensor", "CPUBackend", "OpenCLBackend", "HostGemm", "Bench", "GGUF", "Tokenizer", "Models", "Training", "Checkpoint", "Files", "TeacherCache", "TrainingData", "ProcessGroup",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Sources/kdgpu", swiftSettings: releaseFlags),

        // Test helpers shared by the test targets: seeded inputs, comparisons, the backends under test.
        .target(name: "TestSupport", dependencies: ["Tensor", "CPUBackend", "OpenCLBackend", "HostGemm"], path: "Tests/TestSupport"),
        .testTarget(name: "BackendParityTests",
                    dependencies: ["Tensor", "CPUBackend", "OpenCLBackend", "HostGemm", "Losses", "TestSupport"],
                    path: "Tests/BackendParityTests"),
        .testTarget(name: "OpenCLRuntimeTests",
                    dependencies: ["Tensor", "CPUBackend", "OpenCLBackend", "HostGemm", "KernelSources", "TestSupport"],
                    path: "Tests/OpenCLRuntimeTests"),
        .testTarget(name: "ModelTests", dependencies: ["Models", "GGUF", "Tensor", "TestSupport"], path: "Tests/ModelTests",
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "TeacherCacheTests", dependencies: ["TeacherCache", "Models", "GGUF", "Tensor", "Files", "TestSupport"],
                    path: "Tests/TeacherCacheTests"),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Losses", "Models", "Checkpoint", "Tensor", "TrainingData", "TeacherCache", "ProcessGroup", "TestSupport"],
                    path: "Tests/TrainingTests"),
        .testTarget(name: "HostGemmTests", dependencies: ["HostGemm", "COneDNN", "Tensor"], path: "Tests/HostGemmTests"),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "Training"], path: "Tests/CLITests", exclude: ["Fixtures"]),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "Tensor"], path: "Tests/GGUFTests",
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "TokenizerTests", dependencies: ["TrainingData", "Tokenizer", "GGUF"], path: "Tests/TokenizerTests",
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "TrainingDataTests", dependencies: ["Tensor", "TrainingData", "Tokenizer", "GGUF"], path: "Tests/TrainingDataTests"),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "Models", "GGUF", "Tensor", "Tokenizer", "TestSupport"],
                    path: "Tests/CheckpointTests", exclude: ["Fixtures"]),
        .testTarget(name: "LossTests", dependencies: ["Losses", "Tensor", "CPUBackend", "OpenCLBackend", "TestSupport"],
                    path: "Tests/LossTests"),
    ]
)
