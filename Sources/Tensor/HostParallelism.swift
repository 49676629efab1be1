import Dispatch
import Foundation

/// How many threads the host's own loops use (the CPU backend's kernels, the cached teacher's target
/// assembly): `KDGPU_THREADS` when set (several processes on one machine share its cores: `mpirun`
/// ranks get cores / local ranks each), else every core.
public enum Parallelism {
    public static let variable = "KDGPU_THREADS"
    public static let workers: Int = {
        if let text = ProcessInfo.processInfo.environment[variable], let count = Int(text), count > 0 { return count }
        return ProcessInfo.processInfo.activeProcessorCount
    }()
}

/// Splits `0..<count` into contiguous chunks of at least `grain` items and runs them on ``Parallelism/workers`` threads.
@inline(__always)
public func parallelChunks(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let workers = min(Parallelism.workers, max(1, count / max(1, grain)))
    if workers <= 1 {
        body(0..<count)
        return
    }
    let chunk = (count + workers - 1) / workers
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let start = w * chunk
        let end = min(count, start + chunk)
        if start < end { body(start..<end) }
    }
}

/// `body(i)` for every `i` in `0..<count` on up to ``Parallelism/workers`` threads (so `body` must be
/// safe to call from several at once), the results in order; the first error by index is thrown.
public func parallelMap<T>(_ count: Int, _ body: (Int) throws -> T) throws -> [T] {
    let workers = min(Parallelism.workers, count)
    guard workers > 1 else { return try (0..<count).map(body) }
    var results = [Result<T, Error>?](repeating: nil, count: count)
    results.withUnsafeMutableBufferPointer { slots in
        let slots = slots
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for index in stride(from: worker, to: count, by: workers) { slots[index] = Result { try body(index) } }
        }
    }
    return try results.map { try $0!.get() }
}
