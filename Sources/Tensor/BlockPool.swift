import Foundation

/// Freed memory blocks of a backend, kept by exact size for the next allocation of that size.
///
/// A training step allocates the same activations, gradients and workspaces every step; fresh
/// memory costs a page fault (and the kernel zeroing a page) per 4 KiB on first touch, about a
/// tenth of a CPU step without this pool. The ledger keeps counting a pooled block as held (so
/// its budget check stays exact) but not as in use (so a step's peak in use is what it needs);
/// when an allocation would pass the budget, every pooled block is freed and it is tried again.
public final class BlockPool<Block>: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [Int: [Block]] = [:]
    private var pooledBytes = 0
    private let ledger: MemoryLedger
    private let release: (Block) -> Void
    /// The most bytes kept unused; a block freed past it is released at once.
    public let capacityBytes: Int

    /// - Parameter release: frees a block (the pool returns its bytes to the ledger).
    public init(ledger: MemoryLedger, capacityBytes: Int, release: @escaping (Block) -> Void) {
        self.ledger = ledger
        self.capacityBytes = capacityBytes
        self.release = release
    }

    /// A block of `bytes` for `label`: a kept one, else `create()`'s, counted by the ledger.
    public func obtain(_ bytes: Int, for label: String, create: () throws -> Block) throws -> Block {
        let kept: Block? = lock.withLock {
            guard let block = free[bytes]?.popLast() else { return nil }
            pooledBytes -= bytes
            return block
        }
        if let kept {
            ledger.reuse(bytes)
            return kept
        }
        do {
            try ledger.reserve(bytes, for: label)
        } catch TensorError.outOfDeviceMemory(let message) {
            guard lock.withLock({ pooledBytes }) > 0 else { throw TensorError.outOfDeviceMemory(message) }
            drain()
            try ledger.reserve(bytes, for: label)
        }
        do {
            return try create()
        } catch {
            ledger.release(bytes)
            throw error
        }
    }

    /// Takes back a block no tensor uses any more: kept for reuse, or freed when the pool is full.
    public func recycle(_ block: Block, bytes: Int) {
        let kept: Bool = lock.withLock {
            guard pooledBytes + bytes <= capacityBytes else { return false }
            free[bytes, default: []].append(block)
            pooledBytes += bytes
            return true
        }
        if kept {
            ledger.pool(bytes)
        } else {
            release(block)
            ledger.release(bytes)
        }
    }

    /// Frees every kept block.
    public func drain() {
        let blocks: [(Block, Int)] = lock.withLock {
            defer {
                free = [:]
                pooledBytes = 0
            }
            return free.flatMap { size, blocks in blocks.map { ($0, size) } }
        }
        for (block, bytes) in blocks {
            release(block)
            ledger.releasePooled(bytes)
        }
    }
}
