import CCLBlast
import COpenCL
import Foundation
import HostGemm
import KernelSources
import Tensor

/// The OpenCL backend: one device, one context, one in-order queue. Every op but GEMM is a
/// hand-written kernel from `Kernels/`; GEMMs run through CLBlast, or on CPU devices through a host
/// engine (oneDNN, OpenBLAS) over the mapped buffers (``GemmEngine``).
///
/// Not thread-safe: all ops of one backend are enqueued from one thread (a loan to the host,
/// ``lendToHost(_:)``, may be waited for and given back from another).
public final class OpenCLBackend: Backend {
    public let device: OpenCLDeviceInfo
    public let ledger: MemoryLedger
    public var name: String { "\(device.selector) (\(device.name))" }

    /// Vector width of the kernels' explicit loads (`float16` on CPU devices, `float4` on GPUs).
    public let vectorWidth: Int
    /// Work-group size of the row kernels (one work-group per row).
    public let rowWorkGroupSize: Int
    /// Whether each work-item of a row kernel takes one contiguous block of the row (CPU devices: one
    /// stream per thread) or every `rowWorkGroupSize`-th vector (GPUs: coalesced loads).
    public let contiguousRows: Bool
    /// How GEMMs run: the default host engine on mapped buffers for CPU devices, CLBlast otherwise
    /// (`KDGPU_GEMM` overrides).
    public var gemmEngine: GemmEngine {
        didSet { precondition(!gemmEngine.runsOnHost || device.isCPU, "host GEMMs need a CPU device's host-visible buffers") }
    }

    /// The route of bf16 GEMMs under a host engine: nil for the one chosen for the engine
    /// (``BF16GemmRoute``); the bench sets each to time both.
    public var bf16GemmRoute: BF16GemmRoute?

    public let ropeTables = RoPETables()

    /// Host engines on a CPU device use the processor's bf16 instructions where their route is
    /// native, and so do the tensor-core kernels on NVIDIA GPUs; the tiled `gemm_bf16` kernel is fp32
    /// arithmetic on widened inputs.
    public var hasFastBF16GEMMs: Bool {
        gemmEngine.runsOnHost ? gemmEngine.multipliesBF16Natively : usesTensorCoreGemm && !emulatesTensorCores
    }
    public var computesOffHost: Bool { !device.isCPU }
    public var gemmDescription: String {
        gemmEngine.runsOnHost ? "\(gemmEngine.description), on the device's mapped buffers; \(gemmEngine.bf16Description)"
            : "CLBlast on \(device.name); 16-bit inputs: "
                + (!usesTensorCoreGemm ? "gemm16.cl (tiled, fp32 arithmetic)"
                   : emulatesTensorCores ? "gemm16_mma.cl with its mma instruction emulated (a test)" : "gemm16_mma.cl on the tensor cores")
                + (tensorCoreGemmBuildError.map { " (gemm16_mma.cl did not build: \($0))" } ?? "")
    }
    /// Whether the device builds gemm16_mma.cl (NVIDIA's OpenCL on a chip with bf16 and f16
    /// `mma.sync.m16n8k16`: compute capability 8.0 and later); tried once, on first use.
    public private(set) lazy var offersTensorCoreGemm: Bool = {
        guard device.vendor.contains("NVIDIA") || emulatesTensorCores else { return false }
        do {
            _ = try program("gemm16_mma.cl")
            return true
        } catch {
            // The compiler log's first error line, for `kdgpu devices` (an older chip: "not supported on .target").
            let lines = "\(error)".split(separator: "\n")
            tensorCoreGemmBuildError = String(lines.first { $0.contains("error") } ?? lines.first ?? "")
            return false
        }
    }()
    /// Why an NVIDIA device does not offer the tensor-core kernels, when it does not.
    public private(set) var tensorCoreGemmBuildError: String?
    /// Whether 16-bit GEMMs take the tensor-core kernels where the device offers them (the parity
    /// table turns it off to check the tiled kernels on the same device).
    public var prefersTensorCoreGemm = true
    /// For the tests, set before the first 16-bit GEMM: builds gemm16_mma.cl on any device with its
    /// mma instruction emulated in OpenCL C (`-DGEMM16_MMA_EMULATE`), so that where no tensor cores are
    /// (CI's PoCL) the kernel's tiling, copies and fragment layouts are still checked against the CPU
    /// backend.
    public var emulatesTensorCores = false {
        didSet { fileBuildOptions["gemm16_mma.cl"] = emulatesTensorCores ? "-DGEMM16_MMA_EMULATE" : nil }
    }
    /// Build options added for one kernel file.
    private var fileBuildOptions: [String: String] = [:]
    var usesTensorCoreGemm: Bool { prefersTensorCoreGemm && offersTensorCoreGemm }
    /// The kernel a GEMM with `inputType` (bf16 or f16) inputs runs where CLBlast is the engine.
    public func gemm16KernelName(_ inputType: DType) -> String {
        "gemm_\(inputType.rawValue)" + (usesTensorCoreGemm ? "_mma" : "")
    }

    let context: cl_context
    /// Freed buffers kept for reuse (up to an eighth of the budget).
    let pool: BlockPool<cl_mem>
    var queue: cl_command_queue?
    /// A second in-order queue for the loans' maps and unmaps (``lendToHost(_:)``), so that a
    /// discrete GPU's copy engine moves a span while its kernels go on; made on the first loan.
    private var transferQueue: cl_command_queue?
    private var programs: [String: cl_program] = [:]
    private var kernels: [String: cl_kernel] = [:]
    private let bufferFlags: cl_mem_flags

    /// How the row kernels are compiled and spread over a work-group.
    public struct RowKernelLayout: Equatable {
        public var vectorWidth: Int
        public var workGroupSize: Int
        public var contiguous: Bool

        /// The widths the kernels build with (OpenCL C has no `float1`).
        public static let vectorWidths = [2, 4, 8, 16]

        public init(vectorWidth: Int, workGroupSize: Int, contiguous: Bool) {
            self.vectorWidth = vectorWidth
            self.workGroupSize = workGroupSize
            self.contiguous = contiguous
        }

        /// The layout a GPU gets (`float4`, 256 work-items, interleaved), capped at what `device` allows.
        public static func gpu(on device: OpenCLDeviceInfo) -> RowKernelLayout {
            RowKernelLayout(vectorWidth: 4, workGroupSize: min(256, OpenCLBackend.floorPowerOfTwo(device.maxWorkGroupSize)), contiguous: false)
        }

        /// The layout for `device`: CPU devices `float16`, 16 work-items, contiguous blocks; GPUs ``gpu(on:)``.
        public static func preferred(for device: OpenCLDeviceInfo) -> RowKernelLayout {
            device.isCPU ? RowKernelLayout(vectorWidth: 16, workGroupSize: min(16, OpenCLBackend.floorPowerOfTwo(device.maxWorkGroupSize)), contiguous: true)
                         : gpu(on: device)
        }
    }

    /// Opens `device`. The memory budget is the device's global memory (for CPU devices, whose
    /// memory is the host's, three quarters of physical memory), or `KDGPU_MEMORY_BUDGET`.
    /// `layout` defaults to the device's preferred one, with `KDGPU_VECTOR_WIDTH` overriding its
    /// vector width; tests pass ``RowKernelLayout/gpu(on:)`` to run the GPU code paths on a CPU device.
    public init(device: OpenCLDeviceInfo, layout: RowKernelLayout? = nil) throws {
        self.device = device
        let defaultBudget = device.isCPU ? min(physicalMemoryBytes * 3 / 4, max(device.globalMemoryBytes, physicalMemoryBytes / 2))
                                         : device.globalMemoryBytes * 9 / 10
        ledger = MemoryLedger(deviceName: device.name, budgetBytes: try MemoryLedger.budget(default: defaultBudget))
        pool = BlockPool(ledger: ledger, capacityBytes: ledger.budgetBytes / 8) { clReleaseMemObject($0) }
        let environment = ProcessInfo.processInfo.environment
        var chosen = layout ?? RowKernelLayout.preferred(for: device)
        let widths = RowKernelLayout.vectorWidths.map(String.init).joined(separator: ", ")
        if layout == nil, let text = environment["KDGPU_VECTOR_WIDTH"] {
            guard let width = Int(text), RowKernelLayout.vectorWidths.contains(width) else {
                throw TensorError.device("KDGPU_VECTOR_WIDTH=\(text): use one of \(widths)")
            }
            chosen.vectorWidth = width
        }
        guard RowKernelLayout.vectorWidths.contains(chosen.vectorWidth), chosen.workGroupSize >= 1,
              chosen.workGroupSize & (chosen.workGroupSize - 1) == 0, chosen.workGroupSize <= device.maxWorkGroupSize else {
            throw TensorError.device("row kernel layout \(chosen) does not suit \(device.name): a vector width of \(widths) and a power-of-two work-group of at most \(device.maxWorkGroupSize)")
        }
        vectorWidth = chosen.vectorWidth
        rowWorkGroupSize = chosen.workGroupSize
        contiguousRows = chosen.contiguous
        _ = try BF16GemmRoute.requested(environment)  // a bad KDGPU_BF16_GEMM fails here, before any work
        if let engine = try GemmEngine.requested(environment) {
            guard !engine.runsOnHost || device.isCPU else {
                throw TensorError.device("\(GemmEngine.environmentVariable)=\(engine.rawValue) runs on CPU OpenCL devices only; "
                                         + "\(device.name) is a \(device.typeName): use clblast")
            }
            gemmEngine = engine
        } else {
            gemmEngine = device.isCPU ? GemmEngine.defaultHost : .clblast
        }
        // CPU devices: host-visible buffers, so host code can map them without copies.
        bufferFlags = cl_mem_flags(CL_MEM_READ_WRITE) | (device.isCPU ? cl_mem_flags(CL_MEM_ALLOC_HOST_PTR) : 0)

        var status: cl_int = 0
        var deviceID: cl_device_id? = device.id
        guard let context = clCreateContext(nil, 1, &deviceID, nil, nil, &status), status == CL_SUCCESS else {
            throw OpenCLStatus.error(status, at: "clCreateContext", device: device.name)
        }
        self.context = context
        guard let queue = clCreateCommandQueue(context, device.id, 0, &status), status == CL_SUCCESS else {
            clReleaseContext(context)
            throw OpenCLStatus.error(status, at: "clCreateCommandQueue", device: device.name)
        }
        self.queue = queue
    }

    /// Opens the device named by `opencl`, `opencl:P:D` or a name substring.
    public convenience init(selector: String = "opencl") throws {
        try self.init(device: OpenCLPlatforms.select(selector))
    }

    deinit {
        clFinish(queue)
        if let transferQueue {
            clFinish(transferQueue)
            clReleaseCommandQueue(transferQueue)
        }
        pool.drain()
        for kernel in kernels.values { clReleaseKernel(kernel) }
        for program in programs.values { clReleaseProgram(program) }
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    static func floorPowerOfTwo(_ n: Int) -> Int {
        var p = 1
        while p * 2 <= n { p *= 2 }
        return p
    }

    // MARK: memory

    public func allocate(shape: [Int], dtype: DType, label: String) throws -> Tensor {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.shapeMismatch("\(label): negative dimension in \(describeShape(shape))")
        }
        let bytes = dtype.byteCount(elements: shape.reduce(1, *))
        let buffer = try OpenCLBuffer(context: context, byteCount: bytes, flags: bufferFlags, pool: pool,
                                      label: label, device: device)
        return Tensor(shape: shape, dtype: dtype, storage: buffer, backend: self, label: label)
    }

    public func uploadBytes(_ bytes: UnsafeRawBufferPointer, to tensor: Tensor) throws {
        guard bytes.count == tensor.byteCount else {
            throw TensorError.shapeMismatch("upload of \(bytes.count) bytes into \(tensor.label) \(describeShape(tensor.shape)) \(tensor.dtype.rawValue) of \(tensor.byteCount) bytes")
        }
        guard bytes.count > 0 else { return }
        try checkCL(clEnqueueWriteBuffer(queue, try buffer(tensor).mem, cl_bool(CL_TRUE), tensor.byteOffset,
                                         bytes.count, bytes.baseAddress, 0, nil, nil),
                    "clEnqueueWriteBuffer(\(tensor.label))", device: device.name)
    }

    public func downloadBytes(_ tensor: Tensor, into destination: UnsafeMutableRawBufferPointer) throws {
        guard destination.count == tensor.byteCount else {
            throw TensorError.shapeMismatch("download of \(tensor.label) (\(tensor.byteCount) bytes) into \(destination.count) bytes")
        }
        guard destination.count > 0 else { return }
        try checkCL(clEnqueueReadBuffer(queue, try buffer(tensor).mem, cl_bool(CL_TRUE), tensor.byteOffset,
                                        destination.count, destination.baseAddress, 0, nil, nil),
                    "clEnqueueReadBuffer(\(tensor.label))", device: device.name)
    }

    public func withHostBytes<R>(_ tensor: Tensor, writing: Bool, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        guard tensor.byteCount > 0 else { return try body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        let mem = try buffer(tensor).mem
        let flags = cl_map_flags(CL_MAP_READ) | (writing ? cl_map_flags(CL_MAP_WRITE) : 0)
        var status: cl_int = 0
        guard let pointer = clEnqueueMapBuffer(queue, mem, cl_bool(CL_TRUE), flags, tensor.byteOffset, tensor.byteCount, 0, nil, nil, &status),
              status == CL_SUCCESS else {
            throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(tensor.label))", device: device.name)
        }
        defer { clEnqueueUnmapMemObject(queue, mem, pointer, 0, nil, nil) }
        return try body(UnsafeMutableRawBufferPointer(start: pointer, count: tensor.byteCount))
    }

    /// The map and unmap run on the transfer queue: the map after a marker of the ops enqueued so
    /// far on the main queue, and the main queue's later ops wait for the unmap once the loan is
    /// settled (a barrier), so only the ops enqueued while the loan is out run beside it.
    public func lendToHost(_ tensor: Tensor) throws -> any HostLoan {
        if transferQueue == nil {
            var status: cl_int = 0
            guard let made = clCreateCommandQueue(context, device.id, 0, &status), status == CL_SUCCESS else {
                throw OpenCLStatus.error(status, at: "clCreateCommandQueue (transfers)", device: device.name)
            }
            transferQueue = made
        }
        return try OpenCLHostLoan(queue: queue, transfers: transferQueue, mem: try buffer(tensor).mem, byteOffset: tensor.byteOffset,
                                  byteCount: tensor.byteCount, label: tensor.label, device: device.name)
    }

    public func synchronize() throws {
        try checkCL(clFinish(queue), "clFinish", device: device.name)
    }

    public func buffer(_ tensor: Tensor) throws -> OpenCLBuffer {
        guard let buffer = tensor.storage as? OpenCLBuffer, tensor.backend === self else {
            throw TensorError.unsupported("\(tensor.label) lives on \(tensor.backend.name), not on \(name)")
        }
        return buffer
    }

    // MARK: programs and kernels

    /// Build options every kernel file is compiled with.
    public var buildOptions: String { "-cl-std=CL1.2 -DVW=\(vectorWidth) -DWG=\(rowWorkGroupSize)" }

    /// Compiles `file` (with `common.cl` in front) once per backend; the error carries the compiler log.
    func program(_ file: String) throws -> cl_program {
        if let program = programs[file] { return program }
        let common = try KernelSources.source(named: "common.cl")
        let body = try KernelSources.source(named: file)
        let text = common.text + "\n#line 1 \"\(file)\"\n" + body.text
        var status: cl_int = 0
        let program: cl_program? = text.withCString { pointer in
            var source: UnsafePointer<CChar>? = pointer
            var length = strlen(pointer)
            return clCreateProgramWithSource(context, 1, &source, &length, &status)
        }
        guard let program, status == CL_SUCCESS else {
            throw OpenCLStatus.error(status, at: "clCreateProgramWithSource(\(file))", device: device.name)
        }
        var deviceID: cl_device_id? = device.id
        let options = buildOptions + (fileBuildOptions[file].map { " " + $0 } ?? "")
        let buildStatus = clBuildProgram(program, 1, &deviceID, options, nil, nil)
        if buildStatus != CL_SUCCESS {
            let log = buildLog(program)
            clReleaseProgram(program)
            throw TensorError.device("OpenCL kernel build failed for \(file) (\(body.origin)) on \(device.name): "
                                     + "\(OpenCLStatus.name(buildStatus)); compiler log:\n\(log)")
        }
        programs[file] = program
        return program
    }

    private func buildLog(_ program: cl_program) -> String {
        var size = 0
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
        guard size > 1 else { return "(empty log)" }
        var bytes = [CChar](repeating: 0, count: size)
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil)
        return String(cString: bytes).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func kernel(_ name: String, in file: String) throws -> cl_kernel {
        if let kernel = kernels[name] { return kernel }
        var status: cl_int = 0
        guard let kernel = clCreateKernel(try program(file), name, &status), status == CL_SUCCESS else {
            throw OpenCLStatus.error(status, at: "clCreateKernel(\(name) in \(file))", device: device.name)
        }
        kernels[name] = kernel
        return kernel
    }

    /// Sets the arguments of kernel `name` from `file` and enqueues it (kernel families in other
    /// modules, such as the losses, launch their kernels through this) over `globalSize` work-items
    /// (`localSize` nil lets the driver choose).
    public func launch(_ name: String, in file: String, globalSize: Int, localSize: Int?, _ arguments: [any KernelArgument]) throws {
        let kernel = try kernel(name, in: file)
        for (index, argument) in arguments.enumerated() {
            try checkCL(argument.set(on: kernel, index: cl_uint(index)), "clSetKernelArg(\(name), \(index))", device: device.name)
        }
        var global = globalSize
        let status: cl_int
        if var local = localSize {
            status = clEnqueueNDRangeKernel(queue, kernel, 1, nil, &global, &local, 0, nil, nil)
        } else {
            status = clEnqueueNDRangeKernel(queue, kernel, 1, nil, &global, nil, 0, nil, nil)
        }
        try checkCL(status, "clEnqueueNDRangeKernel(\(name))", device: device.name)
    }

    /// Kernel arguments for a tensor: its buffer and its offset, in elements for f32 and i32 tensors
    /// (kernels see `float*` / `int*`), in bytes for f16 and block types (kernels see `uchar*`).
    public func arguments(_ tensor: Tensor) throws -> [any KernelArgument] {
        let offset = tensor.dtype == .f32 || tensor.dtype == .i32 ? tensor.offset : tensor.byteOffset
        return [try buffer(tensor), try int32(offset, tensor.label)]
    }

    public func int32(_ value: Int, _ what: String) throws -> Int32 {
        guard let narrow = Int32(exactly: value) else {
            throw TensorError.unsupported("\(what): \(value) exceeds the kernels' 32-bit index range")
        }
        return narrow
    }

    /// Work-items of an elementwise kernel over `n` elements: one per full vector, one per tail element.
    public func elementwiseWorkItems(_ n: Int) -> Int { n / vectorWidth + n % vectorWidth }

    // MARK: ops

    public func enqueueFill(_ x: Tensor, value: Float) throws {
        try launch("fill_f32", in: "elementwise.cl", globalSize: elementwiseWorkItems(x.count), localSize: nil,
                   try arguments(x) + [value, try int32(x.count, x.label)])
    }

    public func enqueueCopy(_ source: Tensor, into destination: Tensor) throws {
        try launch("copy_f32", in: "elementwise.cl", globalSize: elementwiseWorkItems(source.count), localSize: nil,
                   try arguments(source) + arguments(destination) + [try int32(source.count, source.label)])
    }

    public func enqueueCopyColumns(_ source: Tensor, into destination: Tensor, column: Int) throws {
        try launch("copy_columns_f32", in: "elementwise.cl", globalSize: source.count, localSize: nil,
                   try arguments(source) + arguments(destination)
                       + [try int32(source.shape[0], source.label), try int32(source.shape[1], source.label),
                          try int32(destination.shape[1], destination.label), try int32(column, destination.label)])
    }

    public func enqueueBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into out: Tensor) throws {
        try launch("\(op.rawValue)_f32", in: "elementwise.cl", globalSize: elementwiseWorkItems(a.count), localSize: nil,
                   try arguments(a) + arguments(b) + arguments(out) + [try int32(a.count, a.label)])
    }

    public func enqueueScale(_ x: Tensor, by alpha: Float, into out: Tensor) throws {
        try launch("scale_f32", in: "elementwise.cl", globalSize: elementwiseWorkItems(x.count), localSize: nil,
                   try arguments(x) + [alpha] + arguments(out) + [try int32(x.count, x.label)])
    }

    public func enqueueAxpy(alpha: Float, _ x: Tensor, _ y: Tensor) throws {
        try launch("axpy_f32", in: "elementwise.cl", globalSize: elementwiseWorkItems(x.count), localSize: nil,
                   [alpha] + arguments(x) + arguments(y) + [try int32(x.count, x.label)])
    }

    public func enqueueRowReduction(_ op: RowReduction, _ x: Tensor, into out: Tensor) throws {
        try launch("row_\(op.rawValue)", in: "rows.cl", globalSize: x.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(x) + arguments(out) + [try int32(x.columns, x.label)])
    }

    public func enqueueSampleRows(_ logits: Tensor, uniforms: Tensor, into ids: Tensor, temperature: Float, topK: Int, topP: Float) throws {
        try launch("sample_rows", in: "sample.cl", globalSize: logits.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(logits) + arguments(uniforms) + arguments(ids)
                   + [try int32(logits.columns, logits.label), temperature, try int32(topK, "top-k"), topP])
    }

    public func enqueueSoftmaxRows(_ x: Tensor, into y: Tensor, temperature: Float, logarithm: Bool) throws {
        try launch(logarithm ? "log_softmax_rows" : "softmax_rows", in: "rows.cl",
                   globalSize: x.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(x) + arguments(y) + [try int32(x.columns, x.label), 1 / temperature])
    }

    public func enqueueGemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ p: GemmProblem) throws {
        if gemmEngine.runsOnHost {
            try mappedHostGemm(a, b, c, p)
            return
        }
        if p.inputType == .bf16 || p.inputType == .f16 {
            // CLBlast has no bf16 GEMM and its HGEMM accumulates in half: the project's kernels, each
            // group one 64 x 64 tile of C with fp32 accumulation: on the tensor cores (128 work-items)
            // where the device offers them, else tiled (256 work-items, 4 x 4 entries each).
            let (file, group) = usesTensorCoreGemm ? ("gemm16_mma.cl", 128) : ("gemm16.cl", 256)
            guard device.maxWorkGroupSize >= group else {
                throw TensorError.unsupported("gemm: \(p.inputType.rawValue) inputs on \(device.name) need work-groups of \(group) (it allows \(device.maxWorkGroupSize))")
            }
            let tiles = (p.m + 63) / 64 * ((p.n + 63) / 64) * p.batch
            try launch(gemm16KernelName(p.inputType), in: file, globalSize: tiles * group, localSize: group,
                       try arguments(a) + arguments(b) + arguments(c)
                       + [try int32(p.m, "M"), try int32(p.n, "N"), try int32(p.k, "K"), try int32(p.lda, "lda"), try int32(p.ldb, "ldb"),
                          try int32(p.ldc, "ldc"), Int32(p.transposeA ? 1 : 0), Int32(p.transposeB ? 1 : 0),
                          try int32(p.strideA, "A batch stride"), try int32(p.strideB, "B batch stride"), try int32(p.strideC, "C batch stride"),
                          p.alpha, p.beta])
            return
        }
        let (bufferA, bufferB, bufferC) = (try buffer(a), try buffer(b), try buffer(c))
        let transposeA = p.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
        let transposeB = p.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
        let status: CLBlastStatusCode
        if p.batch == 1 {
            status = CLBlastSgemm(CLBlastLayoutRowMajor, transposeA, transposeB, p.m, p.n, p.k, p.alpha,
                                  bufferA.mem, a.offset, p.lda, bufferB.mem, b.offset, p.ldb, p.beta,
                                  bufferC.mem, c.offset, p.ldc, &queue, nil)
        } else {
            status = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, transposeA, transposeB, p.m, p.n, p.k, p.alpha,
                                                bufferA.mem, a.offset, p.lda, p.strideA, bufferB.mem, b.offset, p.ldb, p.strideB,
                                                p.beta, bufferC.mem, c.offset, p.ldc, p.strideC, p.batch, &queue, nil)
        }
        guard status == CLBlastSuccess else {
            throw TensorError.device("CLBlast error \(status.rawValue) at \(p.batch == 1 ? "CLBlastSgemm" : "CLBlastSgemmStridedBatched")"
                                     + "(M=\(p.m) N=\(p.n) K=\(p.k) batch=\(p.batch)) on \(device.name)"
                                     + (status.rawValue > -1000 ? " (\(OpenCLStatus.name(status.rawValue)))" : ""))
        }
    }

    // MARK: model kernels

    public func enqueueDequantize(_ source: Tensor, into out: Tensor) throws {
        let n = source.dtype == .f16 || source.dtype == .bf16 ? source.count : source.count / 32
        try launch("dequantize_\(source.dtype.rawValue)\(out.dtype == .f32 ? "" : "_to_\(out.dtype.rawValue)")", in: "quant.cl", globalSize: n, localSize: nil,
                   try arguments(source) + arguments(out) + [try int32(n, source.label)])
    }

    public func enqueueNarrow(_ source: Tensor, into out: Tensor, rounding: Rounding) throws {
        let common = try arguments(source) + arguments(out) + [try int32(source.count, source.label)]
        if case .stochastic(let key) = rounding {
            try launch("convert_f32_to_bf16_stochastic", in: "convert.cl", globalSize: elementwiseWorkItems(source.count), localSize: nil,
                       common + [key])
        } else {
            try launch("convert_f32_to_\(out.dtype.rawValue)", in: "convert.cl", globalSize: elementwiseWorkItems(source.count), localSize: nil, common)
        }
    }

    public func enqueueGatherRows(_ table: Tensor, ids: Tensor, into out: Tensor) throws {
        let (rows, cols) = (table.shape[0], table.shape[1])
        let quantized = table.dtype != .f32 && table.dtype != .f16 && table.dtype != .bf16
        let workItems = ids.count * (quantized ? cols / 32 : cols)
        try launch("get_rows_\(table.dtype.rawValue)", in: "quant.cl", globalSize: workItems, localSize: nil,
                   try arguments(table) + [try int32(rows, table.label)] + arguments(ids) + arguments(out)
                       + [try int32(cols, table.label), try int32(ids.count, ids.label)])
    }

    public func enqueueRMSNorm(_ x: Tensor, weight: Tensor, epsilon: Float, into y: Tensor) throws {
        try launch("rms_norm", in: "norm.cl", globalSize: x.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(x) + arguments(weight) + arguments(y) + [try int32(x.columns, x.label), epsilon])
    }

    public func enqueueRoPE(_ x: Tensor, table: Tensor, into y: Tensor, _ rope: RoPE) throws {
        try launch("rope", in: "rope.cl", globalSize: x.count / 2, localSize: nil,
                   try arguments(x) + arguments(table) + arguments(y)
                       + [try int32(table.shape[0], table.label), try int32(rope.heads, x.label),
                          try int32(rope.headDimension, x.label), try int32(rope.rotatedDimensions, x.label),
                          Int32(rope.layout == .halves ? 1 : 0), Float(rope.inverse ? -1 : 1)])
    }

    public func enqueueCausalSoftmax(_ scores: Tensor, into probs: Tensor, queries: Int, keyOffset: Int, keyStarts: Tensor?, scale: Float) throws {
        // Without key starts the kernel reads no start (rows per start 0): scores stands in for the buffer.
        let starts = try keyStarts.map { try arguments($0) + [try int32(scores.rowCount / $0.count, $0.label)] } ?? arguments(scores) + [Int32(0)]
        try launch("causal_softmax", in: "attention.cl", globalSize: scores.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(scores) + arguments(probs)
                       + [try int32(scores.columns, scores.label), try int32(queries, scores.label), try int32(keyOffset, scores.label), scale] + starts)
    }

    public func enqueueCausalMask(_ x: Tensor, queries: Int, keyOffset: Int, value: Float) throws {
        try launch("causal_mask", in: "attention.cl", globalSize: x.count, localSize: nil,
                   try arguments(x) + [try int32(x.columns, x.label), try int32(queries, x.label), try int32(keyOffset, x.label), value,
                                       try int32(x.count, x.label)])
    }

    public func enqueueTranspose12(_ x: Tensor, into y: Tensor) throws {
        let s = try x.shape.map { try int32($0, x.label) }
        try launch("transpose_12", in: "attention.cl", globalSize: x.count / max(1, x.shape[3]), localSize: nil,
                   try arguments(x) + arguments(y) + [s[0], s[1], s[2], s[3]])
    }

    public func enqueueSwiGLU(gate: Tensor, up: Tensor, into out: Tensor) throws {
        try launch("swiglu", in: "activation.cl", globalSize: elementwiseWorkItems(gate.count), localSize: nil,
                   try arguments(gate) + arguments(up) + arguments(out) + [try int32(gate.count, gate.label)])
    }

    // MARK: backward kernels

    public func enqueueRMSNormBackward(_ x: Tensor, weight: Tensor, outputGradient: Tensor, epsilon: Float,
                                       inputGradient: Tensor, weightGradient: Tensor, workspace rstd: Tensor) throws {
        let (rows, cols) = (try int32(x.rowCount, x.label), try int32(x.columns, x.label))
        try launch("rms_norm_backward", in: "backward.cl", globalSize: x.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(x) + arguments(weight) + arguments(outputGradient) + arguments(inputGradient) + arguments(rstd)
                       + [cols, epsilon])
        try launch("rms_norm_backward_weight", in: "backward.cl", globalSize: x.columns, localSize: nil,
                   try arguments(x) + arguments(outputGradient) + arguments(rstd) + arguments(weightGradient) + [rows, cols])
    }

    public func enqueueCausalSoftmaxBackward(_ probs: Tensor, outputGradient: Tensor, into scoresGradient: Tensor, scale: Float) throws {
        try launch("causal_softmax_backward", in: "backward.cl", globalSize: probs.rowCount * rowWorkGroupSize, localSize: rowWorkGroupSize,
                   try arguments(probs) + arguments(outputGradient) + arguments(scoresGradient) + [try int32(probs.columns, probs.label), scale])
    }

    public func enqueueSwiGLUBackward(gate: Tensor, up: Tensor, outputGradient: Tensor, gateGradient: Tensor, upGradient: Tensor) throws {
        try launch(gate.dtype == .bf16 ? "swiglu_backward_bf16" : "swiglu_backward", in: "backward.cl", globalSize: elementwiseWorkItems(gate.count), localSize: nil,
                   try arguments(gate) + arguments(up) + arguments(outputGradient) + arguments(gateGradient) + arguments(upGradient)
                       + [try int32(gate.count, gate.label)])
    }

    public func enqueueEmbeddingBackward(_ outputGradient: Tensor, uniqueIds: Tensor, offsets: Tensor, positions: Tensor,
                                         into tableGradient: Tensor) throws {
        let cols = tableGradient.shape[1]
        try launch("embedding_backward", in: "backward.cl", globalSize: uniqueIds.count * cols, localSize: nil,
                   try arguments(outputGradient) + arguments(uniqueIds) + arguments(offsets) + arguments(positions) + arguments(tableGradient)
                       + [try int32(uniqueIds.count, uniqueIds.label), try int32(cols, tableGradient.label)])
    }

    public func enqueueAdamW(_ parameter: Tensor, gradient: Tensor, firstMoment: Tensor, secondMoment: Tensor, _ step: AdamWStep) throws {
        try launch("adamw", in: "backward.cl", globalSize: elementwiseWorkItems(parameter.count), localSize: nil,
                   try arguments(parameter) + arguments(gradient) + arguments(firstMoment) + arguments(secondMoment)
                       + [try int32(parameter.count, parameter.label), step.learningRate, step.beta1, step.beta2, step.epsilon,
                          step.weightDecay, step.firstCorrection, step.secondCorrection, step.gradientScale])
    }
}
