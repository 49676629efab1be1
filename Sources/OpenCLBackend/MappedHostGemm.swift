import COpenCL
import HostGemm
import Tensor

extension OpenCLBackend {
    /// C = alpha op(A) op(B) + beta C with the host engine on the mapped buffers. The maps are queued
    /// in order and only the last one blocks, so one wait covers every op queued before; the unmaps
    /// order the kernels queued after.
    func mappedHostGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        // Each distinct buffer once (operands may share one), with the first operand that lives in it
        // and the byte range its operands span: only that range is mapped (a weight is a view into
        // the parameter arena, hundreds of MB that a whole-buffer map would touch for every GEMM).
        var buffers: [(buffer: OpenCLBuffer, label: String, range: Range<Int>)] = []
        for tensor in [a, b, c] {
            let buffer = try self.buffer(tensor)
            let bytes = tensor.byteOffset..<(tensor.byteOffset + tensor.byteCount)
            if let i = buffers.firstIndex(where: { $0.buffer === buffer }) {
                let range = buffers[i].range
                buffers[i].range = min(range.lowerBound, bytes.lowerBound)..<max(range.upperBound, bytes.upperBound)
            } else {
                buffers.append((buffer, tensor.label, bytes))
            }
        }
        var pointers: [UnsafeMutableRawPointer] = []
        defer {
            for (entry, pointer) in zip(buffers, pointers) { clEnqueueUnmapMemObject(queue, entry.buffer.mem, pointer, 0, nil, nil) }
        }
        let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
        for (index, entry) in buffers.enumerated() {
            var status: cl_int = 0
            let blocking = cl_bool(index == buffers.count - 1 ? CL_TRUE : CL_FALSE)
            guard let pointer = clEnqueueMapBuffer(queue, entry.buffer.mem, blocking, flags, entry.range.lowerBound, max(1, entry.range.count),
                                                   0, nil, nil, &status),
                  status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(entry.label))", device: device.name)
            }
            pointers.append(pointer)
        }
        func address(_ tensor: Tensor) throws -> UnsafeMutableRawPointer {
            let buffer = try self.buffer(tensor)
            let i = buffers.firstIndex { $0.buffer === buffer }!
            return pointers[i] + (tensor.byteOffset - buffers[i].range.lowerBound)
        }
        try hostGemm(gemmEngine, p, try address(a), try address(b), try address(c).assumingMemoryBound(to: Float.self), bf16Route: bf16GemmRoute)
    }
}
