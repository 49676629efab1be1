import COpenCL
import Tensor

/// A `cl_mem` owned by Swift: released, and taken off the memory ledger, when the last tensor using it goes.
/// A device buffer owned by a tensor, from the backend's pool when it keeps one of the size; given
/// back to the pool when the tensor goes (``BlockPool``).
public final class OpenCLBuffer: TensorStorage, @unchecked Sendable {
    public let byteCount: Int
    let mem: cl_mem
    private let pool: BlockPool<cl_mem>

    init(context: cl_context, byteCount: Int, flags: cl_mem_flags, pool: BlockPool<cl_mem>, label: String,
         device: OpenCLDeviceInfo) throws {
        guard byteCount <= device.maxAllocationBytes else {
            throw TensorError.outOfDeviceMemory(
                "\(label) needs one buffer of \(formatBytes(byteCount)), above \(device.name)'s largest allocation "
                + "(\(formatBytes(device.maxAllocationBytes))); use smaller batches or chunks")
        }
        self.byteCount = byteCount
        self.pool = pool
        mem = try pool.obtain(byteCount, for: label) {
            var status: cl_int = 0
            // OpenCL refuses empty buffers; an empty tensor still gets a handle.
            guard let mem = clCreateBuffer(context, flags, max(byteCount, 4), nil, &status), status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clCreateBuffer(\(label), \(formatBytes(byteCount)))", device: device.name)
            }
            return mem
        }
    }

    deinit { pool.recycle(mem, bytes: byteCount) }
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
extension UInt32: KernelArgument {}

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
