import COpenCL
import HostGemm
import Tensor

extension OpenCLBackend {
    /// C = alpha op(A) op(B) + beta C with the host engine on the mapped buffers. The maps are queued
    /// in order and only the last one blocks, so one wait covers every op queued before; the unmaps
    /// order the kernels queued after.
    func mappedHostGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        var buffers: [OpenCLBuffer] = []
        for tensor in [a, b, c] {
            let buffer = try self.buffer(tensor)
            if !buffers.contains(where: { $0 === buffer }) { buffers.append(buffer) }
        }
        var pointers: [UnsafeMutableRawPointer] = []
        defer {
            for (buffer, pointer) in zip(buffers, pointers) { clEnqueueUnmapMemObject(queue, buffer.mem, pointer, 0, nil, nil) }
        }
        let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
        for (index, buffer) in buffers.enumerated() {
            var status: cl_int = 0
            let blocking = cl_bool(index == buffers.count - 1 ? CL_TRUE : CL_FALSE)
            guard let pointer = clEnqueueMapBuffer(queue, buffer.mem, blocking, flags, 0, buffer.byteCount, 0, nil, nil, &status),
                  status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\([a, b, c].first { (try? self.buffer($0)) === buffer }?.label ?? "GEMM operand"))",
                                         device: device.name)
            }
            pointers.append(pointer)
        }
        func address(_ tensor: Tensor) throws -> UnsafePointer<Float> {
            let buffer = try self.buffer(tensor)
            let pointer = pointers[buffers.firstIndex { $0 === buffer }!]
            return UnsafePointer((pointer + tensor.byteOffset).assumingMemoryBound(to: Float.self))
        }
        try hostGemm(gemmEngine, p, try address(a), try address(b), UnsafeMutablePointer(mutating: try address(c)))
    }
}
