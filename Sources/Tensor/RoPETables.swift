import Foundation

/// RoPE angle tables `[positions, rotated / 2, 2]` on one backend, computed (in fp64 on the host)
/// and uploaded once per (positions, rotated dimensions, base) and then reused: a training step
/// rotates q and k in every block of both models, forward and backward, at the same positions.
/// Keeps the last few tables (generation with a KV cache asks for a new position every token).
public final class RoPETables: @unchecked Sendable {
    private struct Key: Hashable {
        var positions: [Int32]
        var rotatedDimensions: Int
        var base: Float
    }

    private let lock = NSLock()
    /// Storage, not tensors: a tensor holds its backend, which holds this cache.
    private var tables: [(key: Key, storage: TensorStorage)] = []
    private let capacity = 8

    public init() {}

    /// The table for `rope` at `positions` on `backend`, uploaded on first use.
    public func table(for rope: RoPE, positions: [Int32], on backend: any Backend) throws -> Tensor {
        let key = Key(positions: positions, rotatedDimensions: rope.rotatedDimensions, base: rope.base)
        let shape = [positions.count, rope.rotatedDimensions]
        if let storage = lock.withLock({ tables.first(where: { $0.key == key })?.storage }) {
            return Tensor(shape: shape, storage: storage, backend: backend, label: "rope angles")
        }
        let table = try backend.tensor(rope.angleTable(positions: positions), shape: shape, label: "rope angles")
        lock.withLock {
            if tables.count == capacity { tables.removeFirst() }
            tables.append((key, table.storage))
        }
        return table
    }
}
