import Foundation

/// What a `kdgpu` process did.
struct KdgpuRun {
    let status: Int32
    /// Ended by a signal (then `status` is the signal number).
    let signaled: Bool
    let output: String
    let error: String
}

/// Runs the built `kdgpu` as a user would, from the build folder next to this test bundle.
enum Kdgpu {
    static var builtExecutable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kdgpu")
    }

    /// The tiny llama fixture with a byte-level tokenizer (Tests/ModelTests/Fixtures).
    static let tinyModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("ModelTests/Fixtures/tiny-llama-q8_0.gguf").path

    static func run(_ arguments: [String], environment: [String: String] = [:], executable: URL? = nil,
                    workingDirectory: URL? = nil) throws -> KdgpuRun {
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
        return KdgpuRun(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
                        output: String(decoding: outData, as: UTF8.self), error: String(decoding: errData, as: UTF8.self))
    }
}
