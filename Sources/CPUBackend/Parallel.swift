import Dispatch
import Foundation

/// Splits `0..<count` into contiguous chunks of at least `grain` items and runs them on all cores.
@inline(__always)
public func parallelChunks(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let workers = min(ProcessInfo.processInfo.activeProcessorCount, max(1, count / max(1, grain)))
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
