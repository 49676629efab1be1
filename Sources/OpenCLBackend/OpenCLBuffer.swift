import COpenCL
import Tensor

/// A `cl_mem` owned by Swift: released, and taken off the memory ledger, when the last tensor using it goes.
public final class OpenCLBuffer: TensorStorage, @unchecked Sendable {
    public let byteCount: Int
    let mem: cl_mem
    private let ledger: MemoryLedger

    init(context: cl_context, byteCount: Int, flags: cl_mem_flags, ledger: MemoryLedger, label: String, device: OpenCLDeviceInfo) throws {
        guard byteCount <= device.maxAllocationBytes else {
            throw TensorError.outOfDeviceMemory(
                "\(label) needs one buffer of \(formatBytes(byteCount)), above \(device.name)'s largest allocation "
                + "(\(formatBytes(device.maxAllocationBytes))); use smaller batches or chunks")
        }
        try ledger.reserve(byteCount, for: label)
        var status: cl_int = 0
        // OpenCL refuses empty buffers; an empty tensor still gets a handle.
        guard let mem = clCreateBuffer(context, flags, max(byteCount, 4), nil, &status), status == CL_SUCCESS else {
            ledger.release(byteCount)
            throw OpenCLStatus.error(status, at: "clCreateBuffer(\(label), \(formatBytes(byteCount)))", device: device.name)
        }
        self.mem = mem
        self.byteCount = byteCount
        self.ledger = ledger
    }

    deinit {
        clReleaseMemObject(mem)
        ledger.release(byteCount)
    }
}

/// A value that can be passed to `clSetKernelArg`.
public protocol KernelArgument {
    func set(on kernel: cl_kernel, index: cl_uint) -> cl_int
}

extension KernelArgument where Self: BitwiseCopyable {
    public func set(on kernel: cl_kernel, index: cl_uint) -> cl_int {
        withUnsafeBytes(of: self) { clSetKernelArg(kernel, index, $0.count, $0.baseAddress) }
    }
}

extension Int32: KernelArgument {}
extension Float: KernelArgument {}

/// `__local` scratch memory of the given size, for a kernel argument declared `__local T*`.
public struct LocalMemory: KernelArgument {
    public let byteCount: Int
    public init(byteCount: Int) { self.byteCount = byteCount }
    public func set(on kernel: cl_kernel, index: cl_uint) -> cl_int { clSetKernelArg(kernel, index, byteCount, nil) }
}

extension OpenCLBuffer: KernelArgument {
    public func set(on kernel: cl_kernel, index: cl_uint) -> cl_int {
        var handle: cl_mem? = mem
        return clSetKernelArg(kernel, index, MemoryLayout<cl_mem>.size, &handle)
    }
}
