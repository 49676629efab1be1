import COpenCL
import HostGemm
import Tensor

extension OpenCLBackend {
    /// C = alpha op(A) op(B) + beta C with the host engine on the mapped buffers. A blocking map waits for
    /// every op queued before; the unmaps order the kernels queued after.
    func mappedHostGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        var mapped: [(buffer: OpenCLBuffer, pointer: UnsafeMutableRawPointer)] = []
        defer {
            for entry in mapped { clEnqueueUnmapMemObject(queue, entry.buffer.mem, entry.pointer, 0, nil, nil) }
        }
        func address(_ tensor: Tensor) throws -> UnsafeMutablePointer<Float> {
            let buffer = try self.buffer(tensor)
            if let entry = mapped.first(where: { $0.buffer === buffer }) {
                return (entry.pointer + tensor.byteOffset).assumingMemoryBound(to: Float.self)
            }
            var status: cl_int = 0
            let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
            guard let pointer = clEnqueueMapBuffer(queue, buffer.mem, cl_bool(CL_TRUE), flags, 0, buffer.byteCount, 0, nil, nil, &status),
                  status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(tensor.label))", device: device.name)
            }
            mapped.append((buffer, pointer))
            return (pointer + tensor.byteOffset).assumingMemoryBound(to: Float.self)
        }
        let (pa, pb, pc) = (try address(a), try address(b), try address(c))
        try hostGemm(gemmEngine, p, pa, pb, pc)
    }
}
