import ArgumentParser
import CPUBackend
import Foundation
import OpenCLBackend
import Tensor

/// `kdgpu devices`: what kdgpu can run on.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List OpenCL platforms and devices, and the CPU backend.")

    func run() throws {
        let cpuLine = "cpu            CPU backend: \(ProcessInfo.processInfo.activeProcessorCount) threads, OpenBLAS kernel "
            + "\(CPUBackend.blasCoreName), \(formatBytes(physicalMemoryBytes)) memory"
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
                print("      \(device.computeUnits) compute units, global memory \(formatBytes(device.globalMemoryBytes)), "
                      + "max allocation \(formatBytes(device.maxAllocationBytes)), local memory \(formatBytes(device.localMemoryBytes)), "
                      + "max work-group \(device.maxWorkGroupSize)")
            }
            if devices.isEmpty { print("OpenCL platforms are installed but list no devices") }
        } catch {
            print("no OpenCL device: \(error)")
        }
        print(cpuLine)
    }
}
