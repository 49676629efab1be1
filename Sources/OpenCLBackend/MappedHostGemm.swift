import COpenCL
import HostGemm
import Tensor

extension OpenCLBackend {
    /// C = alpha op(A) op(B) + beta C with the host engine on the mapped buffers. The maps are queued
    /// in order and only the last one blocks, so one wait covers every op queued before; the unmaps
    /// order the kernels queued after.
    func mappedHostGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        // Each distinct buffer once (operands may share one), with the first operand that lives in it.
        var buffers: [(buffer: OpenCLBuffer, label: String)] = []
        for tensor in [a, b, c] {
            let buffer = try self.buffer(tensor)
            if !buffers.contains(where: { $0.buffer === buffer }) { buffers.append((buffer, tensor.label)) }
        }
        var pointers: [UnsafeMutableRawPointer] = []
        defer {
            for (entry, pointer) in zip(buffers, pointers) { clEnqueueUnmapMemObject(queue, entry.buffer.mem, pointer, 0, nil, nil) }
        }
        let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
        for (index, entry) in buffers.enumerated() {
            var status: cl_int = 0
            let blocking = cl_bool(index == buffers.count - 1 ? CL_TRUE : CL_FALSE)
            guard let pointer = clEnqueueMapBuffer(queue, entry.buffer.mem, blocking, flags, 0, entry.buffer.byteCount, 0, nil, nil, &status),
                  status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(entry.label))", device: device.name)
            }
            pointers.append(pointer)
        }
        func address(_ tensor: Tensor) throws -> UnsafeMutableRawPointer {
            let buffer = try self.buffer(tensor)
            return pointers[buffers.firstIndex { $0.buffer === buffer }!] + tensor.byteOffset
        }
        try hostGemm(gemmEngine, p, try address(a), try address(b), try address(c).assumingMemoryBound(to: Float.self))
    }
}
