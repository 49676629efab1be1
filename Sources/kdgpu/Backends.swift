import ArgumentParser
import Foundation
import CPUBackend
import OpenCLBackend
import Tensor

/// Opens the backend a `--device` value names. The default, `opencl`, falls back to the CPU
/// backend (saying so) when no OpenCL platform is installed; a named device does not.
func openBackend(_ selector: String, cpu: CPUBackend) throws -> any Backend {
    if selector == "cpu" { return cpu }
    do {
        return try OpenCLBackend(selector: selector)
    } catch where selector == "opencl" && "\(error)".contains("CL_PLATFORM_NOT_FOUND_KHR") {
        note("kdgpu: no OpenCL platform; using the CPU backend")
        return cpu
    }
}

/// Prints `kdgpu: message` to standard error and exits with status 1: the one-line error every command uses.
func fail(_ error: Error) -> Never {
    note("kdgpu: \(error)")
    Foundation.exit(1)
}
