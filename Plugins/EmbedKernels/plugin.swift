import Foundation
import PackagePlugin

/// Embeds every `Kernels/*.cl` file of the package into the target as a generated Swift source,
/// so a built `kdgpu` carries its kernels and runs wherever it is copied.
@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let kernelsDirectory = context.package.directory.appending("Kernels")
        let names = try FileManager.default.contentsOfDirectory(atPath: kernelsDirectory.string)
            .filter { $0.hasSuffix(".cl") }
            .sorted()
        let inputs = names.map { kernelsDirectory.appending($0) }
        let output = context.pluginWorkDirectory.appending("EmbeddedKernelSources.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(names.count) OpenCL kernel files",
                executable: try context.tool(named: "kernel-embedder").path,
                arguments: [output.string] + inputs.map(\.string),
                inputFiles: inputs,
                outputFiles: [output]
            ),
        ]
    }
}
