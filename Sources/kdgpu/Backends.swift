import ArgumentParser
import Foundation
import CPUBackend
import OpenCLBackend
import Tensor

/// Opens the backend a `--device` value names.
func openBackend(_ selector: String, cpu: CPUBackend) throws -> any Backend {
    selector == "cpu" ? cpu : try OpenCLBackend(selector: selector)
}

/// Prints `kdgpu: message` to standard error and exits with status 1: the one-line error every command uses.
func fail(_ error: Error) -> Never {
    FileHandle.standardError.write("kdgpu: \(error)\n".data(using: .utf8)!)
    Foundation.exit(1)
}
