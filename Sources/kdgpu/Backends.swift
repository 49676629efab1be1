import ArgumentParser
import Foundation
import CPUBackend
import HostGemm
import OpenCLBackend
import Tensor

/// Opens the backend a `--device` value names. The default, `opencl`, falls back to the CPU
/// backend (saying so) when no OpenCL platform is installed; a named device does not.
func openBackend(_ selector: String, cpu: CPUBackend) throws -> any Backend {
    if selector == "cpu" { return try hostBackend(cpu) }
    do {
        return try OpenCLBackend(selector: selector)
    } catch where selector == "opencl" && "\(error)".contains("CL_PLATFORM_NOT_FOUND_KHR") {
        note("kdgpu: no OpenCL platform; using the CPU backend")
        return try hostBackend(cpu)
    }
}

/// The CPU backend as the run's device, refusing a `KDGPU_GEMM` engine it cannot run.
private func hostBackend(_ cpu: CPUBackend) throws -> CPUBackend {
    if let engine = try GemmEngine.requested(), !engine.runsOnHost {
        throw TensorError.device("\(GemmEngine.environmentVariable)=\(engine.rawValue) runs on OpenCL devices only; the CPU backend "
                                 + "runs onednn or openblas: unset \(GemmEngine.environmentVariable) or choose an OpenCL --device")
    }
    return cpu
}

/// Prints `kdgpu: message` to standard error and exits with status 1: the one-line error every command uses.
func fail(_ error: Error) -> Never {
    note("kdgpu: \(error)")
    Foundation.exit(1)
}
