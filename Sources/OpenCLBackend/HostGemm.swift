import COpenBLAS
import COpenCL
import Tensor

/// How an OpenCL backend runs GEMMs.
public enum GemmEngine: String, CaseIterable, Sendable {
    /// CLBlast kernels on the device: the choice for GPUs.
    case clblast
    /// OpenBLAS on the host, over the device buffers mapped in place. Only for CPU devices, whose
    /// buffers (allocated with CL_MEM_ALLOC_HOST_PTR) map without a copy: CLBlast on PoCL runs
    /// about a tenth as fast as OpenBLAS on the same cores (`kdgpu bench gemm` measures both).
    case hostBLAS = "host-blas"

    /// The environment variable that picks the engine: `clblast` or `host-blas`.
    public static let environmentVariable = "KDGPU_GEMM"
}

extension OpenCLBackend {
    /// C = alpha op(A) op(B) + beta C with OpenBLAS on the mapped buffers. A blocking map waits for
    /// every op queued before; the unmaps order the kernels queued after.
    func hostGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
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
        for i in 0..<p.batch {
            cblas_sgemm(CblasRowMajor, p.transposeA ? CblasTrans : CblasNoTrans, p.transposeB ? CblasTrans : CblasNoTrans,
                        Int32(p.m), Int32(p.n), Int32(p.k), p.alpha, pa + i * p.strideA, Int32(p.lda), pb + i * p.strideB,
                        Int32(p.ldb), p.beta, pc + i * p.strideC, Int32(p.ldc))
        }
    }
}
