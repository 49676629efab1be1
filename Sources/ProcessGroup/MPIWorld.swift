import Foundation
import Tensor

/// The processes of one `mpirun` job (Open MPI), seen from one of them: its rank, the world's size,
/// the ranks on this machine, and the collectives data parallelism needs (all-reduce, abort).
///
/// Open MPI is loaded at run time (`libmpi.so.40`, Debian's `libopenmpi3`), so kdgpu builds and runs
/// without it; outside `mpirun` (no `OMPI_COMM_WORLD_SIZE`, or a world of one) ``join()`` returns nil
/// and no MPI call is ever made. Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`) are the
/// addresses of its predefined objects, found by name. Gradients may travel as bf16
/// (``allReduceSum(bf16:count:)``): Open MPI has no bf16 type, so they go as 16-bit words with a sum
/// of kdgpu's own (``addBFloat16s(_:into:count:)``).
///
/// ```swift
/// if let world = try MPIWorld.join() {           // under `mpirun -np 2`
///     try world.allReduceSum(&values)             // every rank now holds the sum
/// }
/// ```
public final class MPIWorld {
    public let rank: Int
    public let size: Int
    /// Ranks of this job on this machine, and this one's place among them (cores are shared among them).
    public let localRank: Int
    public let localSize: Int
    /// Whether MPI takes calls from any thread, one at a time (`MPI_THREAD_SERIALIZED`): an
    /// all-reduce may then run on a thread of its own while the main thread computes.
    public let callsFromAnyThread: Bool
    private let api: API

    typealias Handle = UnsafeMutableRawPointer
    struct API {
        let initialize: @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
                                        Int32, UnsafeMutablePointer<Int32>) -> Int32
        let finalize: @convention(c) () -> Int32
        let commRank: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
        let commSize: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
        let allreduce: @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle) -> Int32
        let abort: @convention(c) (Handle, Int32) -> Int32
        let opCreate: @convention(c) (UserFunction, Int32, UnsafeMutablePointer<Handle?>) -> Int32
        let world: Handle, float: Handle, double: Handle, uint16: Handle, sum: Handle
    }
    /// `MPI_User_function`: (in, inout, count, datatype).
    typealias UserFunction = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?,
                                             UnsafeMutableRawPointer?) -> Void
    /// The bf16 sum as an MPI operation, made on first use (`MPI_Op_create` is local to the rank).
    private var bf16Sum: Handle?

    /// Elements per all-reduce call (MPI counts are 32-bit; buckets also bound the library's buffers).
    /// 8 MB: two local ranks reduced the 198 MB arena in 32-36 ms in buckets of 2^21 floats, 34-44 in
    /// 2^20 and 2^22, 67-71 in 2^23 and 83 in 2^24 (`kdgpu bench allreduce`, AMD EPYC, Open MPI 4.1).
    public static let bucketElements = 1 << 21
    /// Open MPI's `MPI_IN_PLACE`.
    private static let inPlace = UnsafeRawPointer(bitPattern: 1)
    /// `MPI_THREAD_SERIALIZED` in Open MPI's numbering (single, funneled, serialized, multiple).
    private static let threadSerialized: Int32 = 2

    /// The world this process belongs to, initialized; nil when it runs alone.
    public static func join(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> MPIWorld? {
        guard let text = environment["OMPI_COMM_WORLD_SIZE"], let size = Int(text), size > 1 else { return nil }
        let api = try load()
        var provided: Int32 = 0
        guard api.initialize(nil, nil, threadSerialized, &provided) == 0 else { throw MPIError("MPI_Init_thread failed") }
        var rank: Int32 = 0, count: Int32 = 0
        guard api.commRank(api.world, &rank) == 0, api.commSize(api.world, &count) == 0, Int(count) == size else {
            throw MPIError("MPI_COMM_WORLD has \(count) ranks where OMPI_COMM_WORLD_SIZE says \(size)")
        }
        return MPIWorld(rank: Int(rank), size: size, localRank: Int(environment["OMPI_COMM_WORLD_LOCAL_RANK"] ?? "") ?? 0,
                        localSize: max(1, Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1),
                        callsFromAnyThread: provided >= threadSerialized, api: api)
    }

    private init(rank: Int, size: Int, localRank: Int, localSize: Int, callsFromAnyThread: Bool, api: API) {
        (self.rank, self.size, self.localRank, self.localSize, self.callsFromAnyThread, self.api) = (rank, size, localRank, localSize, callsFromAnyThread, api)
    }

    private static func load() throws -> API {
        guard let library = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL) ?? dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL) else {
            throw MPIError("kdgpu runs under mpirun but cannot load Open MPI's libmpi.so.40: install the Debian package libopenmpi3 (or openmpi-bin)")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let address = dlsym(library, name) else { throw MPIError("libmpi.so.40 lacks \(name): kdgpu needs Open MPI 4 or later") }
            return address
        }
        return API(initialize: unsafeBitCast(try symbol("MPI_Init_thread"),
                                             to: (@convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
                                                                  Int32, UnsafeMutablePointer<Int32>) -> Int32).self),
                   finalize: unsafeBitCast(try symbol("MPI_Finalize"), to: (@convention(c) () -> Int32).self),
                   commRank: unsafeBitCast(try symbol("MPI_Comm_rank"), to: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self),
                   commSize: unsafeBitCast(try symbol("MPI_Comm_size"), to: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self),
                   allreduce: unsafeBitCast(try symbol("MPI_Allreduce"),
                                            to: (@convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle) -> Int32).self),
                   abort: unsafeBitCast(try symbol("MPI_Abort"), to: (@convention(c) (Handle, Int32) -> Int32).self),
                   opCreate: unsafeBitCast(try symbol("MPI_Op_create"), to: (@convention(c) (UserFunction, Int32, UnsafeMutablePointer<Handle?>) -> Int32).self),
                   world: try symbol("ompi_mpi_comm_world"), float: try symbol("ompi_mpi_float"), double: try symbol("ompi_mpi_double"),
                   uint16: try symbol("ompi_mpi_uint16_t"), sum: try symbol("ompi_mpi_op_sum"))
    }

    /// Every rank's `count` floats at `buffer` summed, in place on every rank (in buckets).
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        var start = 0
        while start < count {
            let n = min(Self.bucketElements, count - start)
            guard api.allreduce(Self.inPlace, buffer + start, Int32(n), api.float, api.sum, api.world) == 0 else {
                throw MPIError("MPI_Allreduce of \(n) floats failed on rank \(rank)")
            }
            start += n
        }
    }

    /// Every rank's `count` bf16 values at `buffer` summed, in place on every rank: each addition
    /// widens both to fp32, adds, and rounds to nearest even (``addBFloat16s(_:into:count:)``), so a
    /// sum over N ranks is rounded N - 1 times. Elements per call: up to ``bucketElements``.
    public func allReduceSum(bf16 buffer: UnsafeMutablePointer<UInt16>, count: Int) throws {
        precondition(count <= Self.bucketElements, "a bf16 all-reduce of \(count) values: at most \(Self.bucketElements) a call")
        if bf16Sum == nil {
            let add: UserFunction = { input, accumulator, count, _ in
                guard let input, let accumulator, let count else { return }
                MPIWorld.addBFloat16s(UnsafeRawPointer(input), into: accumulator, count: Int(count.pointee))
            }
            var op: Handle?
            guard api.opCreate(add, 1, &op) == 0, let op else { throw MPIError("MPI_Op_create of the bf16 sum failed on rank \(rank)") }
            bf16Sum = op
        }
        guard api.allreduce(Self.inPlace, buffer, Int32(count), api.uint16, bf16Sum!, api.world) == 0 else {
            throw MPIError("MPI_Allreduce of \(count) bf16 values failed on rank \(rank)")
        }
    }

    /// `sum[i] = bf16(fp32(addend[i]) + fp32(sum[i]))` for `count` bf16 values (little-endian words),
    /// rounding to nearest even as ``BlockFormat/storeBFloat16(_:count:to:)`` does, in chunks of
    /// widened values the compiler vectorizes.
    public static func addBFloat16s(_ addend: UnsafeRawPointer, into sum: UnsafeMutableRawPointer, count: Int) {
        let chunk = 1024
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * chunk) { floats in
            let (a, b) = (floats.baseAddress!, floats.baseAddress! + chunk)
            var start = 0
            while start < count {
                let n = min(chunk, count - start)
                BlockFormat.loadBFloat16s(addend + 2 * start, count: n, to: a)
                BlockFormat.loadBFloat16s(sum + 2 * start, count: n, to: b)
                for i in 0..<n { b[i] += a[i] }
                BlockFormat.storeBFloat16(b, count: n, to: sum + 2 * start)
                start += n
            }
        }
    }

    /// Every rank's values summed, in place on every rank.
    public func allReduceSum(_ values: inout [Float]) throws {
        let count = values.count
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0.baseAddress!, count: count) }
    }

    /// The same in fp64 (counts and totals that must not round).
    public func allReduceSum(_ values: inout [Double]) throws {
        let count = values.count
        let status = values.withUnsafeMutableBufferPointer { api.allreduce(Self.inPlace, $0.baseAddress!, Int32(count), api.double, api.sum, api.world) }
        guard status == 0 else { throw MPIError("MPI_Allreduce of \(count) doubles failed on rank \(rank)") }
    }

    /// Ends every rank of the job with `code` (after this rank's error is printed): no rank is left waiting.
    public func abort(code: Int32) -> Never {
        _ = api.abort(api.world, code)
        exit(code)
    }

    /// The orderly end of this rank's part (every rank calls it once, at the end).
    public func finish() {
        _ = api.finalize()
    }
}

public struct MPIError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
