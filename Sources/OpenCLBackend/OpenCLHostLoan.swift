import COpenCL
import Foundation
import Tensor

/// A device tensor's bytes lent to the host (``OpenCLBackend/lendToHost(_:)``): its range of the
/// buffer mapped by a map enqueued without waiting, and unmapped by an unmap enqueued the same way
/// (OpenCL's enqueue calls may come from any thread). Where the device shares host memory (PoCL,
/// integrated GPUs) the map is the buffer's own memory; on a discrete GPU the driver copies the
/// range to the host and back. The ops enqueued meanwhile use other ranges of the buffer, which
/// the mapping leaves theirs.
final class OpenCLHostLoan: HostLoan {
    private let queue: cl_command_queue?
    private let mem: cl_mem
    private let byteCount: Int
    private let what: String, device: String
    private var pointer: UnsafeMutableRawPointer?
    private var mapped: cl_event?
    private var unmapped: cl_event?

    init(queue: cl_command_queue?, mem: cl_mem, byteOffset: Int, byteCount: Int, label: String, device: String) throws {
        (self.queue, self.mem, self.byteCount, what, self.device) = (queue, mem, byteCount, label, device)
        guard byteCount > 0 else { return }
        var status: cl_int = 0
        var event: cl_event?
        let flags = cl_map_flags(CL_MAP_READ) | cl_map_flags(CL_MAP_WRITE)
        pointer = clEnqueueMapBuffer(queue, mem, cl_bool(CL_FALSE), flags, byteOffset, byteCount, 0, nil, &event, &status)
        mapped = event  // a throw from here on still waits for it (deinit)
        guard pointer != nil, status == CL_SUCCESS else { throw OpenCLStatus.error(status, at: "clEnqueueMapBuffer(\(label), lent to the host)", device: device) }
        try checkCL(clFlush(queue), "clFlush", device: device)
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
        var event: cl_event?
        try checkCL(clEnqueueUnmapMemObject(queue, mem, pointer, 0, nil, &event), "clEnqueueUnmapMemObject(\(what), given back by the host)",
                    device: device)
        unmapped = event
        try checkCL(clFlush(queue), "clFlush", device: device)
    }

    deinit {
        // A loan dropped without being given back (a step that failed) is unmapped here.
        if let pointer { clEnqueueUnmapMemObject(queue, mem, pointer, 0, nil, &unmapped) }
        for var event in [mapped, unmapped] where event != nil {
            clWaitForEvents(1, &event)
            clReleaseEvent(event)
        }
    }
}
