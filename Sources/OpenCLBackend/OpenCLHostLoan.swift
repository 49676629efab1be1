import COpenCL
import Foundation
import Tensor

/// A device tensor's bytes lent to the host (``OpenCLBackend/lendToHost(_:)``): read into host
/// staging memory by a read enqueued without waiting, written back by a write enqueued the same way
/// (OpenCL's enqueue calls may come from any thread). The staging returns to its pool once the
/// write has landed.
final class OpenCLHostLoan: HostLoan {
    private let queue: cl_command_queue?
    private let mem: cl_mem
    private let byteOffset: Int
    private let staging: UnsafeMutableRawBufferPointer
    private let pool: HostStagingPool
    private let what: String, device: String
    private var read: cl_event?
    private var write: cl_event?

    init(queue: cl_command_queue?, mem: cl_mem, byteOffset: Int, byteCount: Int, pool: HostStagingPool, label: String, device: String) throws {
        (self.queue, self.mem, self.byteOffset, self.pool, what, self.device) = (queue, mem, byteOffset, pool, label, device)
        staging = pool.take(byteCount)
        guard byteCount > 0 else { return }
        var event: cl_event?
        try checkCL(clEnqueueReadBuffer(queue, mem, cl_bool(CL_FALSE), byteOffset, byteCount, staging.baseAddress, 0, nil, &event),
                    "clEnqueueReadBuffer(\(label), lent to the host)", device: device)
        read = event  // a throw from here on still waits for it (deinit)
        try checkCL(clFlush(queue), "clFlush", device: device)
    }

    func bytes() throws -> UnsafeMutableRawBufferPointer {
        if read != nil {
            try checkCL(clWaitForEvents(1, &read), "clWaitForEvents(read of \(what))", device: device)
        }
        return staging
    }

    func giveBack() throws {
        precondition(write == nil, "a loan is given back once")
        guard staging.count > 0 else { return }
        var event: cl_event?
        try checkCL(clEnqueueWriteBuffer(queue, mem, cl_bool(CL_FALSE), byteOffset, staging.count, staging.baseAddress, 0, nil, &event),
                    "clEnqueueWriteBuffer(\(what), given back by the host)", device: device)
        write = event
        try checkCL(clFlush(queue), "clFlush", device: device)
    }

    deinit {
        // The staging may serve another loan only once the device is done with it.
        for var event in [read, write] where event != nil {
            clWaitForEvents(1, &event)
            clReleaseEvent(event)
        }
        pool.give(staging)
    }
}

/// Page-aligned host memory for loans, kept by size for the next step's loans of the same spans.
final class HostStagingPool {
    private var free: [Int: [UnsafeMutableRawBufferPointer]] = [:]
    private let lock = NSLock()

    func take(_ byteCount: Int) -> UnsafeMutableRawBufferPointer {
        lock.lock()
        defer { lock.unlock() }
        if let kept = free[byteCount]?.popLast() { return kept }
        return UnsafeMutableRawBufferPointer.allocate(byteCount: byteCount, alignment: 4096)
    }

    func give(_ block: UnsafeMutableRawBufferPointer) {
        lock.lock()
        defer { lock.unlock() }
        free[block.count, default: []].append(block)
    }

    deinit {
        for blocks in free.values { for block in blocks { block.deallocate() } }
    }
}
