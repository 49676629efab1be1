import Foundation

/// What a `kdgpu` process did.
struct KdgpuRun {
    let status: Int32
    /// Ended by a signal (then `status` is the signal number).
    let signaled: Bool
    let output: String
    let error: String
    /// Killed by ``Kdgpu/run(_:environment:executable:workingDirectory:timeout:)`` after its timeout
    /// (then `signaled` is true and `status` is SIGKILL).
    var timedOut = false
}

/// Runs the built `kdgpu` as a user would, from the build folder next to this test bundle.
enum Kdgpu {
    static var builtExecutable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kdgpu")
    }

    /// The tiny llama fixture with a byte-level tokenizer (Tests/ModelTests/Fixtures).
    static let tinyModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("ModelTests/Fixtures/tiny-llama-q8_0.gguf").path

    /// - Parameter timeout: seconds after which the process is killed with SIGKILL (and the run
    ///   marked `timedOut`); nil waits as long as it takes.
    static func run(_ arguments: [String], environment: [String: String] = [:], executable: URL? = nil,
                    workingDirectory: URL? = nil, timeout: TimeInterval? = nil) throws -> KdgpuRun {
        let process = Process()
        process.executableURL = executable ?? builtExecutable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let workingDirectory { process.currentDirectoryURL = workingDirectory }
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()

        let killed = Killed()
        if let timeout {
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                if process.isRunning {
                    killed.set()
                    kill(pid, SIGKILL)
                }
            }
        }
        // Both pipes drain at once, so a process filling one while the other is read cannot stall.
        let errData = Collected()
        let errorRead = DispatchGroup()
        errorRead.enter()
        DispatchQueue.global().async {
            errData.data = error.fileHandleForReading.readDataToEndOfFile()
            errorRead.leave()
        }
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        errorRead.wait()
        process.waitUntilExit()
        return KdgpuRun(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
                        output: String(decoding: outData, as: UTF8.self), error: String(decoding: errData.data, as: UTF8.self),
                        timedOut: killed.value)
    }
}

/// Whether the timeout fired, shared with the timer's queue.
private final class Killed: @unchecked Sendable {
    private let lock = NSLock()
    private var fired = false
    func set() { lock.lock(); fired = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return fired }
}

/// The bytes read from stderr on another queue (read after the group's wait).
private final class Collected: @unchecked Sendable {
    var data = Data()
}
