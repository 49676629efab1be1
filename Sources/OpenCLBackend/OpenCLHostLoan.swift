import COpenCL
import Foundation
import Tensor

/// A device tensor's bytes lent to the host (``OpenCLBackend/lendToHost(_:)``): its range of the
/// buffer mapped on the backend's transfer queue once the ops enqueued before the loan on the main
/// queue have run (a marker), and unmapped there when given back; the main queue's ops enqueued
/// after the loan is settled wait for the unmap (a barrier). Where the device shares host memory
/// (PoCL, integrated GPUs) the map is the buffer's own memory; on a discrete GPU the driver copies
/// the range to the host and back, beside the kernels. The ops enqueued meanwhile use other ranges
/// of the buffer, which the mapping leaves theirs. OpenCL's enqueue calls may come from any thread.
final class OpenCLHostLoan: HostLoan {
    private let queue: cl_command_queue?
    private let transfers: cl_command_queue?
    private let mem: cl_mem
    private let byteCount: Int
    private let what: String, device: String
    private var pointer: UnsafeMutableRawPointer?
    private var mapped: cl_event?
    private var unmapped: cl_event?
    private var settled = false

    init(queue: cl_command_queue?, transfers: cl_command_queue?, mem: cl_mem, byteOffset: Int, byteCount: Int, label: String, device: String) throws {
        (self.queue, self.transfers, self.mem, self.byteCount, what, self.device) = (queue, transfers, mem, byteCount, label, device)
        guard byteCount > 0 else { return }
        var written: cl_event?
        try checkCL(clEnqueueMarkerWithWaitList(queue, 0, nil, &written), "clEnqueueMarkerWithWaitList", device: device)
        defer { clReleaseEvent(written) }
        try checkCL(clFlush(queue), "clFlush", device: device)
        var status: cl_int = 0
        let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
        pointer = clEnqueueMapBuffer(transfers, mem, cl_bool(CL_FALSE), flags, byteOffset, byteCount, 1, &written, &mapped, &status)
        guard pointer != nil, status == CL_SUCCESS else {
            pointer = nil
            throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(label), lent to the host)", device: device)
        }
        try checkCL(clFlush(transfers), "clFlush", device: device)
    }

    func bytes() throws -> UnsafeMutableRawBufferPointer {
        if mapped != nil {
            try checkCL(clWaitForEvents(1, &mapped), "clWaitForEvents(map of \(what))", device: device)
        }
        return UnsafeMutableRawBufferPointer(start: pointer, count: byteCount)
    }

    func giveBack() throws {
        precondition(unmapped == nil, "a loan is given back once")
        guard let pointer else { return }
        self.pointer = nil
        try checkCL(clEnqueueUnmapMemObject(transfers, mem, pointer, 0, nil, &unmapped), "clEnqueueUnmapMemObject(\(what), given back by the host)",
                    device: device)
        try checkCL(clFlush(transfers), "clFlush", device: device)
    }

    func settle() throws {
        precondition(pointer == nil, "a loan is settled after it is given back")
        guard !settled, unmapped != nil else { return }
        settled = true
        try checkCL(clEnqueueBarrierWithWaitList(queue, 1, &unmapped, nil), "clEnqueueBarrierWithWaitList(unmap of \(what))", device: device)
    }

    deinit {
        // A loan dropped without being given back or settled (a step that failed) is here.
        if let pointer { clEnqueueUnmapMemObject(transfers, mem, pointer, 0, nil, &unmapped) }
        if unmapped != nil && !settled { clEnqueueBarrierWithWaitList(queue, 1, &unmapped, nil) }
        for event in [mapped, unmapped] where event != nil { clReleaseEvent(event) }
    }
}
