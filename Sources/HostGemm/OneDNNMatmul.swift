import COneDNN
import Foundation
import Tensor

/// bf16 x bf16 -> fp32 GEMMs on the host through oneDNN's matmul primitive, which picks its kernels
/// by instruction set (AMX-BF16 or AVX512_BF16 where the CPU has them, a correct emulation
/// elsewhere) and accumulates in fp32; and f32 products of a few rows (``largestFewRows``), which it
/// runs faster than dnnl_sgemm. Debian's oneDNN 2.6 has no bf16 BLAS-style call, so each
/// problem shape becomes a primitive, made once and cached (with its memory objects, whose data
/// pointers are set per call).
enum OneDNNMatmul {
    typealias Status = dnnl_status_t
    /// The matmul primitive's entry points, from the library ``OneDNN`` opened.
    struct API: @unchecked Sendable {
        let engineCreate: @convention(c) (UnsafeMutablePointer<dnnl_engine_t?>?, dnnl_engine_kind_t, Int) -> Status
        let streamCreate: @convention(c) (UnsafeMutablePointer<dnnl_stream_t?>?, dnnl_engine_t?, UInt32) -> Status
        let memoryDescInitByStrides: @convention(c) (UnsafeMutablePointer<dnnl_memory_desc_t>?, Int32, UnsafePointer<Int64>?,
                                                     dnnl_data_type_t, UnsafePointer<Int64>?) -> Status
        let matmulDescInit: @convention(c) (UnsafeMutablePointer<dnnl_matmul_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?,
                                            UnsafePointer<dnnl_memory_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?,
                                            UnsafePointer<dnnl_memory_desc_t>?) -> Status
        let attrCreate: @convention(c) (UnsafeMutablePointer<dnnl_primitive_attr_t?>?) -> Status
        let attrDestroy: @convention(c) (dnnl_primitive_attr_t?) -> Status
        let attrSetOutputScales: @convention(c) (dnnl_primitive_attr_t?, Int64, Int32, UnsafePointer<Float>?) -> Status
        let attrSetPostOps: @convention(c) (dnnl_primitive_attr_t?, const_dnnl_post_ops_t?) -> Status
        let postOpsCreate: @convention(c) (UnsafeMutablePointer<dnnl_post_ops_t?>?) -> Status
        let postOpsDestroy: @convention(c) (dnnl_post_ops_t?) -> Status
        let postOpsAppendSum: @convention(c) (dnnl_post_ops_t?, Float) -> Status
        let primitiveDescCreate: @convention(c) (UnsafeMutablePointer<dnnl_primitive_desc_t?>?, UnsafeRawPointer?,
                                                 const_dnnl_primitive_attr_t?, dnnl_engine_t?, const_dnnl_primitive_desc_t?) -> Status
        let primitiveDescDestroy: @convention(c) (dnnl_primitive_desc_t?) -> Status
        let primitiveCreate: @convention(c) (UnsafeMutablePointer<dnnl_primitive_t?>?, const_dnnl_primitive_desc_t?) -> Status
        let memoryCreate: @convention(c) (UnsafeMutablePointer<dnnl_memory_t?>?, UnsafePointer<dnnl_memory_desc_t>?, dnnl_engine_t?,
                                          UnsafeMutableRawPointer?) -> Status
        let memorySetDataHandle: @convention(c) (dnnl_memory_t?, UnsafeMutableRawPointer?) -> Status
        let execute: @convention(c) (const_dnnl_primitive_t?, dnnl_stream_t?, Int32, UnsafePointer<dnnl_exec_arg_t>?) -> Status
        let streamWait: @convention(c) (dnnl_stream_t?) -> Status
        let engine: dnnl_engine_t
        let stream: dnnl_stream_t
    }

    private static let loaded: Result<API, TensorError> = Result { try load() }.mapError { $0 as? TensorError ?? .device("\($0)") }

    private static func load() throws -> API {
        let handle = try OneDNN.library.handle
        func symbol<T>(_ name: String, _ type: T.Type) throws -> T {
            guard let address = dlsym(handle, name) else { throw TensorError.device("oneDNN: libdnnl lacks \(name), which bf16 GEMMs need") }
            return unsafeBitCast(address, to: type)
        }
        let engineCreate = try symbol("dnnl_engine_create", (@convention(c) (UnsafeMutablePointer<dnnl_engine_t?>?, dnnl_engine_kind_t, Int) -> Status).self)
        let streamCreate = try symbol("dnnl_stream_create", (@convention(c) (UnsafeMutablePointer<dnnl_stream_t?>?, dnnl_engine_t?, UInt32) -> Status).self)
        var engine: dnnl_engine_t?, stream: dnnl_stream_t?
        guard engineCreate(&engine, dnnl_cpu, 0) == dnnl_success, let engine,
              streamCreate(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success, let stream else {
            throw TensorError.device("oneDNN: cannot create its CPU engine and stream")
        }
        return API(engineCreate: engineCreate, streamCreate: streamCreate,
                   memoryDescInitByStrides: try symbol("dnnl_memory_desc_init_by_strides", (@convention(c) (UnsafeMutablePointer<dnnl_memory_desc_t>?, Int32, UnsafePointer<Int64>?, dnnl_data_type_t, UnsafePointer<Int64>?) -> Status).self),
                   matmulDescInit: try symbol("dnnl_matmul_desc_init", (@convention(c) (UnsafeMutablePointer<dnnl_matmul_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?, UnsafePointer<dnnl_memory_desc_t>?) -> Status).self),
                   attrCreate: try symbol("dnnl_primitive_attr_create", (@convention(c) (UnsafeMutablePointer<dnnl_primitive_attr_t?>?) -> Status).self),
                   attrDestroy: try symbol("dnnl_primitive_attr_destroy", (@convention(c) (dnnl_primitive_attr_t?) -> Status).self),
                   attrSetOutputScales: try symbol("dnnl_primitive_attr_set_output_scales", (@convention(c) (dnnl_primitive_attr_t?, Int64, Int32, UnsafePointer<Float>?) -> Status).self),
                   attrSetPostOps: try symbol("dnnl_primitive_attr_set_post_ops", (@convention(c) (dnnl_primitive_attr_t?, const_dnnl_post_ops_t?) -> Status).self),
                   postOpsCreate: try symbol("dnnl_post_ops_create", (@convention(c) (UnsafeMutablePointer<dnnl_post_ops_t?>?) -> Status).self),
                   postOpsDestroy: try symbol("dnnl_post_ops_destroy", (@convention(c) (dnnl_post_ops_t?) -> Status).self),
                   postOpsAppendSum: try symbol("dnnl_post_ops_append_sum", (@convention(c) (dnnl_post_ops_t?, Float) -> Status).self),
                   primitiveDescCreate: try symbol("dnnl_primitive_desc_create", (@convention(c) (UnsafeMutablePointer<dnnl_primitive_desc_t?>?, UnsafeRawPointer?, const_dnnl_primitive_attr_t?, dnnl_engine_t?, const_dnnl_primitive_desc_t?) -> Status).self),
                   primitiveDescDestroy: try symbol("dnnl_primitive_desc_destroy", (@convention(c) (dnnl_primitive_desc_t?) -> Status).self),
                   primitiveCreate: try symbol("dnnl_primitive_create", (@convention(c) (UnsafeMutablePointer<dnnl_primitive_t?>?, const_dnnl_primitive_desc_t?) -> Status).self),
                   memoryCreate: try symbol("dnnl_memory_create", (@convention(c) (UnsafeMutablePointer<dnnl_memory_t?>?, UnsafePointer<dnnl_memory_desc_t>?, dnnl_engine_t?, UnsafeMutableRawPointer?) -> Status).self),
                   memorySetDataHandle: try symbol("dnnl_memory_set_data_handle", (@convention(c) (dnnl_memory_t?, UnsafeMutableRawPointer?) -> Status).self),
                   execute: try symbol("dnnl_primitive_execute", (@convention(c) (const_dnnl_primitive_t?, dnnl_stream_t?, Int32, UnsafePointer<dnnl_exec_arg_t>?) -> Status).self),
                   streamWait: try symbol("dnnl_stream_wait", (@convention(c) (dnnl_stream_t?) -> Status).self),
                   engine: engine, stream: stream)
    }

    /// One problem shape's primitive and the memory objects its three operands are bound to.
    final class Prepared: @unchecked Sendable {
        let primitive: dnnl_primitive_t
        let a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t
        init(primitive: dnnl_primitive_t, a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t) {
            (self.primitive, self.a, self.b, self.c) = (primitive, a, b, c)
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [GemmProblem: Prepared] = [:]

    /// The most rows of A that f32 products take through the primitive rather than sgemm (``hostGemm(_:_:_:_:_:)``).
    static let largestFewRows = 16

    /// C (fp32) = alpha op(A) op(B) + beta C with A and B in bf16, or both in f32 (row-major, `p.batch` strided problems).
    static func run(_ p: GemmProblem, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>) throws {
        let api = try loaded.get()
        lock.lock()
        defer { lock.unlock() }
        let prepared: Prepared
        if let cached = cache[p] { prepared = cached } else {
            prepared = try prepare(p, api)
            cache[p] = prepared
        }
        func check(_ status: Status, _ what: String) throws {
            guard status == dnnl_success else {
                throw TensorError.device("oneDNN matmul (\(p.inputType.rawValue), M=\(p.m) N=\(p.n) K=\(p.k)): \(what) failed (status \(status.rawValue))")
            }
        }
        try check(api.memorySetDataHandle(prepared.a, UnsafeMutableRawPointer(mutating: a)), "binding A")
        try check(api.memorySetDataHandle(prepared.b, UnsafeMutableRawPointer(mutating: b)), "binding B")
        try check(api.memorySetDataHandle(prepared.c, UnsafeMutableRawPointer(c)), "binding C")
        // DNNL_ARG_SRC 1, DNNL_ARG_WEIGHTS 33, DNNL_ARG_DST 17 (dnnl_types.h).
        let args = [dnnl_exec_arg_t(arg: 1, memory: prepared.a), dnnl_exec_arg_t(arg: 33, memory: prepared.b),
                    dnnl_exec_arg_t(arg: 17, memory: prepared.c)]
        try check(api.execute(prepared.primitive, api.stream, Int32(args.count), args), "execution")
        try check(api.streamWait(api.stream), "waiting")
    }

    /// Memory descriptors from the problem's strides (a transposed operand is the stored matrix read
    /// with swapped strides), output scale alpha, a sum post-op for beta.
    private static func prepare(_ p: GemmProblem, _ api: API) throws -> Prepared {
        func check(_ status: Status, _ what: String) throws {
            guard status == dnnl_success else {
                throw TensorError.device("oneDNN matmul (\(p.inputType.rawValue), M=\(p.m) N=\(p.n) K=\(p.k)): \(what) failed (status \(status.rawValue))")
            }
        }
        let batched = p.batch > 1
        func descriptor(rows: Int, columns: Int, leading: Int, transposed: Bool, batchStride: Int, type: dnnl_data_type_t) throws -> dnnl_memory_desc_t {
            var md = dnnl_memory_desc_t()
            let (rowStride, columnStride) = transposed ? (1, leading) : (leading, 1)
            // A batch stride of 0 is one matrix shared by the batch: a batch dimension of 1, which matmul broadcasts.
            let dims: [Int64] = (batched ? [Int64(batchStride == 0 ? 1 : p.batch)] : []) + [Int64(rows), Int64(columns)]
            let strides: [Int64] = (batched ? [Int64(batchStride == 0 ? rows * columns : batchStride)] : []) + [Int64(rowStride), Int64(columnStride)]
            try check(api.memoryDescInitByStrides(&md, Int32(dims.count), dims, type, strides), "a memory descriptor")
            return md
        }
        let inputType = p.inputType == .bf16 ? dnnl_bf16 : dnnl_f32
        var aDesc = try descriptor(rows: p.m, columns: p.k, leading: p.lda, transposed: p.transposeA, batchStride: p.strideA, type: inputType)
        var bDesc = try descriptor(rows: p.k, columns: p.n, leading: p.ldb, transposed: p.transposeB, batchStride: p.strideB, type: inputType)
        var cDesc = try descriptor(rows: p.m, columns: p.n, leading: p.ldc, transposed: false, batchStride: p.strideC, type: dnnl_f32)
        var matmul = dnnl_matmul_desc_t()
        try check(api.matmulDescInit(&matmul, &aDesc, &bDesc, nil, &cDesc), "the matmul descriptor")
        var attr: dnnl_primitive_attr_t?, postOps: dnnl_post_ops_t?
        try check(api.attrCreate(&attr), "attributes")
        defer { _ = api.attrDestroy(attr) }
        if p.alpha != 1 {
            var alpha = p.alpha
            try check(api.attrSetOutputScales(attr, 1, 0, &alpha), "the output scale")
        }
        if p.beta != 0 {
            try check(api.postOpsCreate(&postOps), "post-ops")
            defer { _ = api.postOpsDestroy(postOps) }
            try check(api.postOpsAppendSum(postOps, p.beta), "the sum post-op")
            try check(api.attrSetPostOps(attr, postOps), "setting the post-ops")
        }
        var pd: dnnl_primitive_desc_t?
        try check(withUnsafePointer(to: &matmul) { api.primitiveDescCreate(&pd, UnsafeRawPointer($0), attr, api.engine, nil) },
                  "the primitive descriptor")
        defer { _ = api.primitiveDescDestroy(pd) }
        var primitive: dnnl_primitive_t?, a: dnnl_memory_t?, b: dnnl_memory_t?, c: dnnl_memory_t?
        try check(api.primitiveCreate(&primitive, pd), "the primitive")
        try check(api.memoryCreate(&a, &aDesc, api.engine, nil), "memory A")
        try check(api.memoryCreate(&b, &bDesc, api.engine, nil), "memory B")
        try check(api.memoryCreate(&c, &cDesc, api.engine, nil), "memory C")
        guard let primitive, let a, let b, let c else { throw TensorError.device("oneDNN matmul: a null object without an error") }
        return Prepared(primitive: primitive, a: a, b: b, c: c)
    }
}
