import COpenCL
import Foundation
import Tensor

/// What kdgpu knows about one OpenCL device.
public struct OpenCLDeviceInfo: @unchecked Sendable {
    public let platformIndex: Int
    public let deviceIndex: Int
    public let platformName: String
    public let name: String
    public let vendor: String
    public let version: String
    public let driverVersion: String
    public let isCPU: Bool
    public let isGPU: Bool
    public let computeUnits: Int
    public let globalMemoryBytes: Int
    public let maxAllocationBytes: Int
    public let localMemoryBytes: Int
    public let maxWorkGroupSize: Int
    let id: cl_device_id

    /// `opencl:P:D`, the form `--device` accepts.
    public var selector: String { "opencl:\(platformIndex):\(deviceIndex)" }
    public var typeName: String { isGPU ? "GPU" : isCPU ? "CPU" : "accelerator" }
}

/// Enumerates OpenCL platforms and devices.
public enum OpenCLPlatforms {
    /// Every device of every platform. Throws (in words) when no platform is installed.
    public static func devices() throws -> [OpenCLDeviceInfo] {
        var platformCount: cl_uint = 0
        try checkCL(clGetPlatformIDs(0, nil, &platformCount), "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try checkCL(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")
        var result: [OpenCLDeviceInfo] = []
        for (p, platform) in platforms.enumerated() {
            let platformName = platformString(platform, CL_PLATFORM_NAME)
            var deviceCount: cl_uint = 0
            let status = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount)
            if status == CL_DEVICE_NOT_FOUND { continue }
            try checkCL(status, "clGetDeviceIDs(\(platformName))")
            var ids = [cl_device_id?](repeating: nil, count: Int(deviceCount))
            try checkCL(clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &ids, nil),
                        "clGetDeviceIDs(\(platformName))")
            for (d, id) in ids.enumerated() {
                guard let id else { continue }
                let type: cl_device_type = deviceValue(id, CL_DEVICE_TYPE)
                result.append(OpenCLDeviceInfo(
                    platformIndex: p, deviceIndex: d, platformName: platformName,
                    name: deviceString(id, CL_DEVICE_NAME), vendor: deviceString(id, CL_DEVICE_VENDOR),
                    version: deviceString(id, CL_DEVICE_VERSION), driverVersion: deviceString(id, CL_DRIVER_VERSION),
                    isCPU: type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0,
                    isGPU: type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0,
                    computeUnits: Int(deviceValue(id, CL_DEVICE_MAX_COMPUTE_UNITS) as cl_uint),
                    globalMemoryBytes: Int(deviceValue(id, CL_DEVICE_GLOBAL_MEM_SIZE) as cl_ulong),
                    maxAllocationBytes: Int(deviceValue(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE) as cl_ulong),
                    localMemoryBytes: Int(deviceValue(id, CL_DEVICE_LOCAL_MEM_SIZE) as cl_ulong),
                    maxWorkGroupSize: Int(deviceValue(id, CL_DEVICE_MAX_WORK_GROUP_SIZE) as Int),
                    id: id))
            }
        }
        return result
    }

    /// The device `opencl` means: the first GPU, else the first device.
    public static func defaultDevice(among devices: [OpenCLDeviceInfo]) -> OpenCLDeviceInfo? {
        devices.first(where: \.isGPU) ?? devices.first
    }

    /// Resolves `opencl`, `opencl:P:D` or a case-insensitive name substring to one device.
    public static func select(_ selector: String) throws -> OpenCLDeviceInfo {
        let devices = try devices()
        guard !devices.isEmpty else {
            throw TensorError.device("OpenCL platforms exist but list no devices; use --device cpu")
        }
        let listing = devices.map { "\($0.selector) (\($0.name))" }.joined(separator: ", ")
        if selector == "opencl" { return defaultDevice(among: devices)! }
        if selector.hasPrefix("opencl:") {
            let parts = selector.dropFirst("opencl:".count).split(separator: ":").map { Int($0) }
            guard parts.count == 2, let p = parts[0], let d = parts[1] else {
                throw TensorError.device("--device \(selector): write opencl:PLATFORM:DEVICE with numbers, e.g. opencl:0:0")
            }
            guard let device = devices.first(where: { $0.platformIndex == p && $0.deviceIndex == d }) else {
                throw TensorError.device("--device \(selector): no such device; available: \(listing)")
            }
            return device
        }
        let matches = devices.filter { $0.name.lowercased().contains(selector.lowercased()) }
        guard let device = matches.first else {
            throw TensorError.device("--device \(selector): matches no device name; use cpu, opencl, or one of: \(listing)")
        }
        return device
    }

    private static func platformString(_ platform: cl_platform_id?, _ param: Int32) -> String {
        var size = 0
        guard clGetPlatformInfo(platform, cl_platform_info(param), 0, nil, &size) == CL_SUCCESS, size > 0 else { return "?" }
        var bytes = [CChar](repeating: 0, count: size)
        guard clGetPlatformInfo(platform, cl_platform_info(param), size, &bytes, nil) == CL_SUCCESS else { return "?" }
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }

    static func deviceString(_ device: cl_device_id, _ param: Int32) -> String {
        var size = 0
        guard clGetDeviceInfo(device, cl_device_info(param), 0, nil, &size) == CL_SUCCESS, size > 0 else { return "?" }
        var bytes = [CChar](repeating: 0, count: size)
        guard clGetDeviceInfo(device, cl_device_info(param), size, &bytes, nil) == CL_SUCCESS else { return "?" }
        return String(cString: bytes).trimmingCharacters(in: .whitespaces)
    }

    static func deviceValue<T: BitwiseCopyable & Numeric>(_ device: cl_device_id, _ param: Int32) -> T {
        var value: T = 0
        _ = clGetDeviceInfo(device, cl_device_info(param), MemoryLayout<T>.size, &value, nil)
        return value
    }
}
