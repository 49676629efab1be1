import Foundation
import HostGemm
import ProcessGroup
import Tensor

/// This process's place in an `mpirun` job (nil world alone): the world, its entry of a
/// comma-separated `--device` list (rank r takes entry r mod count), and, on a machine shared with
/// other ranks, its share of the cores: each rank's own kernels, oneDNN's OpenMP threads and
/// PoCL's get cores / local ranks unless the user set them (set before any library loads).
struct RankPlace {
    let world: MPIWorld?
    let device: String

    init(device list: String) throws {
        world = try MPIWorld.join()
        let devices = list.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        device = devices.isEmpty ? list : devices[(world?.rank ?? 0) % devices.count]
        if let world {
            let share = String(max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, world.localSize)))
            for variable in [Parallelism.variable, "OMP_NUM_THREADS", "POCL_MAX_PTHREAD_COUNT"] where ProcessInfo.processInfo.environment[variable] == nil {
                setenv(variable, share, 1)
            }
            try shareBF16Route(world)
        }
    }

    /// Rank 0's bf16 GEMM route for every rank (each rank measuring its own could part them where
    /// the two routes run close, and the ranks' products and `auto` teachers with them). Every rank
    /// reaches the collective whatever its environment says: a bad value fails later, as that rank's
    /// one-line error; a rank's own KDGPU_BF16_GEMM still wins.
    private func shareBF16Route(_ world: MPIWorld) throws {
        let engine = GemmEngine.host(requested: (try? GemmEngine.requested()) ?? nil)
        let route = world.rank == 0 ? (try? BF16GemmRoute.choice(for: engine))?.route : nil
        var native: [Float] = [route == .native ? 1 : 0]
        try world.allReduceSum(&native)
        if world.rank != 0 {
            try? BF16GemmRoute.adopt(native[0] > 0 ? .native : .widened, for: engine, reason: "rank 0's measured route, shared by every rank")
        }
    }

    /// Whether this process prints and writes (alone, or rank 0).
    var writes: Bool { (world?.rank ?? 0) == 0 }

    /// `body` as this rank's part: an error on any rank ends the whole job (printed with the rank,
    /// then MPI_Abort, so no rank is left waiting in a collective); alone, the error is thrown.
    func run(_ body: () throws -> Void) throws {
        do {
            try body()
            world?.finish()
        } catch {
            guard let world else { throw error }
            note("kdgpu: rank \(world.rank) of \(world.size): \(error)")
            world.abort(code: 1)
        }
    }
}
