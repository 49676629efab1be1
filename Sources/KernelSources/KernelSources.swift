import Foundation

/// The OpenCL C sources of `Kernels/*.cl`.
///
/// They are embedded into the binary at build time. Setting `KDGPU_KERNEL_DIR` to a folder makes
/// kdgpu read the `.cl` files from there instead, for kernel development without rebuilding.
public enum KernelSources {
    public static let overrideEnvironmentVariable = "KDGPU_KERNEL_DIR"

    /// File names of every embedded kernel file, sorted.
    public static var embeddedFileNames: [String] { embeddedKernelFiles.keys.sorted() }

    public struct MissingKernelFile: Error, CustomStringConvertible {
        public let fileName: String
        public let location: String
        public var description: String {
            "kernel file \(fileName) not found in \(location)"
        }
    }

    /// The text of one kernel file (e.g. `softmax.cl`) and where it came from (for error messages).
    public static func source(named fileName: String) throws -> (text: String, origin: String) {
        if let folder = ProcessInfo.processInfo.environment[overrideEnvironmentVariable], !folder.isEmpty {
            let path = URL(fileURLWithPath: folder).appendingPathComponent(fileName).path
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw MissingKernelFile(fileName: fileName,
                                        location: "\(folder) (from \(overrideEnvironmentVariable); unset it to use the embedded kernels)")
            }
            return (text, path)
        }
        guard let text = embeddedKernelFiles[fileName] else {
            throw MissingKernelFile(fileName: fileName, location: "the kernels embedded in this build")
        }
        return (text, "Kernels/\(fileName) (embedded)")
    }
}
