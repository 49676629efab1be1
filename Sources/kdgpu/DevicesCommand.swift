import ArgumentParser
import CPUBackend
import Foundation
import HostGemm
import OpenCLBackend
import Tensor

/// `kdgpu devices`: what kdgpu can run on.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List OpenCL platforms and devices, and the CPU backend.")

    func run() throws {
        let features = CPUFeatures.current
        var cpuLines = ["cpu            CPU backend: \(features.processorDescription), \(ProcessInfo.processInfo.activeProcessorCount) threads, "
                        + "\(formatBytes(physicalMemoryBytes)) memory"]
        do {
            cpuLines.append("      GEMMs: \(try CPUBackend().gemmDescription)")
        } catch {
            cpuLines.append("      GEMMs: \(error)")
        }
        cpuLines.append("      other host engine: \(GemmEngine.openblas.description)")
        do {
            let devices = try OpenCLPlatforms.devices()
            let defaultDevice = OpenCLPlatforms.defaultDevice(among: devices)
            var platform = -1
            for device in devices {
                if device.platformIndex != platform {
                    platform = device.platformIndex
                    print("platform \(platform): \(device.platformName)")
                }
                let marker = device.selector == defaultDevice?.selector ? " (default: --device opencl)" : ""
                print("  \(device.selector)  \(device.name)\(marker)")
                print("      type \(device.typeName), vendor \(device.vendor), \(device.version), driver \(device.driverVersion)")
                if device.isCPU || device.selector == defaultDevice?.selector, let backend = try? OpenCLBackend(device: device) {
                    print("      GEMMs: \(backend.gemmDescription)")
                }
                print("      \(device.computeUnits) compute units, global memory \(formatBytes(device.globalMemoryBytes)), "
                      + "max allocation \(formatBytes(device.maxAllocationBytes)), local memory \(formatBytes(device.localMemoryBytes)), "
                      + "max work-group \(device.maxWorkGroupSize)")
            }
            if devices.isEmpty { print("OpenCL platforms are installed but list no devices") }
        } catch {
            print("no OpenCL device: \(error)")
        }
        cpuLines.forEach { print($0) }
    }
}
