import Foundation
import ProcessGroup
import Tensor

/// The reducer of a data-parallel job under `mpirun`: the gradient arena (one flat buffer, seen in
/// host memory: in place on the CPU backend and on devices that share host memory, mapped across
/// otherwise) and the step's summed values are all-reduced, so every rank holds the step's whole
/// gradient, in the same order of additions, and takes the same update.
///
/// Overlapped (``overlapsBackward``), the spans of the arena the backward has finished are
/// all-reduced on a thread of its own while the backward goes on with the blocks below: each span
/// is lent to the host (``Backend/lendToHost(_:)``: the CPU backend's own storage, its range mapped
/// on OpenCL) as soon as its last gradient op is enqueued, all-reduced when it has landed, and
/// given back. The LM head and the token embedding go first, before the blocks' backward: the
/// last micro-batch's embedding rows are left out of them (``EmbeddingRows``) and summed over the
/// ranks on their own at the end. ``reduce(gradients:parts:late:)`` sends the rest of the arena
/// (the norms), waits for the thread, adds the ranks' embedding rows, and leaves the step to go on
/// with the reduced arena. Every rank sends the same spans in the same order, so each element is
/// the same sum on every rank; the embedding's rows are added in another order than without the
/// overlap (rounding apart, the same sum).
///
/// With ``bf16OnTheWire`` the gradients travel as bf16 (half the bytes): each bucket of a rank's
/// fp32 gradients is rounded to bf16 in host memory, the ranks' bf16 values are summed (each
/// addition in fp32, rounded back), and the sums are widened into the arena. Every rank gets the
/// same bits; the step's summed values (losses, counts) stay fp32.
public final class MPIGradientReducer: GradientReducer {
    public let world: MPIWorld
    public private(set) var overlapsBackward = false
    /// Whether the gradients cross between ranks as bf16 (`allreduce_dtype bf16`).
    public var bf16OnTheWire = false
    /// One bucket of bf16 words, made on first use, for the all-reduces that run one at a time (on the
    /// communication thread while it runs, on the caller's after).
    private var wireBucket: UnsafeMutablePointer<UInt16>?
    /// Spans sent during this step's backward, in order, with their loans (kept until the step's reduce).
    private var sent: [(elements: Range<Int>, loan: any HostLoan)] = []
    private let communication = DispatchQueue(label: "kdgpu.gradient-all-reduce")
    /// The first error of the communication thread this step (read after waiting for it).
    private var failure: Error?

    public init(world: MPIWorld) {
        self.world = world
    }

    deinit {
        wireBucket?.deallocate()
    }

    public var worldSize: Int { world.size }
    public var rank: Int { world.rank }

    /// Overlaps the all-reduce with the backward where rank 0 `wants` it (a collective: every rank
    /// calls it once, before the first step, and every rank takes rank 0's choice, since the ranks'
    /// calls must pair up). Returns the choice; false where MPI takes calls from one thread only.
    @discardableResult
    public func overlap(_ wants: Bool) throws -> Bool {
        var votes: [Float] = [world.rank == 0 && wants ? 1 : 0, world.callsFromAnyThread ? 1 : 0]
        try world.allReduceSum(&votes)
        overlapsBackward = votes[0] > 0 && Int(votes[1]) == world.size
        return overlapsBackward
    }

    public func gradientsFinished(_ gradients: Tensor, elements: Range<Int>) throws {
        guard overlapsBackward, !elements.isEmpty else { return }
        try send(gradients, elements)
    }

    public func reduce(gradients: Tensor, parts: inout StepParts, late: EmbeddingRows?) throws {
        precondition(gradients.dtype == .f32, "the gradient arena is fp32")
        // The wait is timed from the end of this rank's own device work (the backward, and the spans' transfers so far).
        try gradients.backend.synchronize()
        let start = DispatchTime.now().uptimeNanoseconds
        defer { parts.allReduceSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        if overlapsBackward {
            for elements in unsent(of: gradients.count) { try send(gradients, elements) }
            communication.sync {}
            defer { sent = [] }
            if let failure {
                self.failure = nil
                throw failure
            }
            for (_, loan) in sent { try loan.settle() }
            if let late { try addAcrossRanks(late) }
        } else {
            try late?.add()
            try gradients.backend.withHostBytes(gradients, writing: true) { bytes in
                try allReduceGradients(bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: gradients.count)
            }
        }
        var values = parts.summedValues
        try world.allReduceSum(&values)
        parts.summedValues = values
    }

    /// Lends `elements` of the arena to the communication thread, which all-reduces them once they land.
    private func send(_ gradients: Tensor, _ elements: Range<Int>) throws {
        let span = Tensor(shape: [elements.count], storage: gradients.storage, offset: gradients.offset + elements.lowerBound,
                          backend: gradients.backend, label: "\(gradients.label) [\(elements.lowerBound)..<\(elements.upperBound)]")
        let loan = try gradients.backend.lendToHost(span)
        sent.append((elements, loan))
        communication.async {
            guard self.failure == nil else { return }
            do {
                let bytes = try loan.bytes()
                try self.allReduceGradients(bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: elements.count)
                try loan.giveBack()
            } catch {
                self.failure = error
            }
        }
    }

    /// The ranks' embedding rows added to their table's reduced gradient: the tokens any rank saw
    /// (a presence vector over the vocabulary, all-reduced), each rank's rows added into a block of
    /// those tokens' rows, the blocks all-reduced, and the block added to the table, one addition
    /// per element, so every rank, whatever its device, gets the same sums.
    private func addAcrossRanks(_ late: EmbeddingRows) throws {
        let backend = late.table.backend
        let (vocabulary, width) = (late.table.shape[0], late.table.shape[1])
        var seen = [Float](repeating: 0, count: vocabulary)
        for token in late.tokens { seen[Int(token)] = 1 }
        try world.allReduceSum(&seen)
        let tokens = seen.indices.filter { seen[$0] > 0 }
        var slot = [Int32](repeating: 0, count: vocabulary)
        for (row, token) in tokens.enumerated() { slot[token] = Int32(row) }
        let block = try backend.tensor(shape: [tokens.count, width], label: "embedding rows of every rank's last micro-batch")
        try backend.fill(block, value: 0)
        try backend.embeddingBackward(late.gradient, tokenIds: late.tokens.map { slot[Int($0)] }, into: block)
        try backend.withHostBytes(block, writing: true) { bytes in
            try allReduceGradients(bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: block.count)
        }
        try backend.embeddingBackward(block, tokenIds: tokens.map(Int32.init), into: late.table)
    }

    /// `count` gradients at `floats` summed over the ranks in place: in fp32, or through bf16 a
    /// bucket at a time (rounded, all-reduced as bf16, widened back).
    private func allReduceGradients(_ floats: UnsafeMutablePointer<Float>, count: Int) throws {
        guard bf16OnTheWire else { return try world.allReduceSum(floats, count: count) }
        let wireBucket = self.wireBucket ?? .allocate(capacity: MPIWorld.bucketElements)
        self.wireBucket = wireBucket
        var start = 0
        while start < count {
            let n = min(MPIWorld.bucketElements, count - start)
            BlockFormat.storeBFloat16(floats + start, count: n, to: wireBucket)
            try world.allReduceSum(bf16: wireBucket, count: n)
            BlockFormat.loadBFloat16s(wireBucket, count: n, to: floats + start)
            start += n
        }
    }

    /// The arena's elements no span sent this step covers, in order.
    private func unsent(of count: Int) -> [Range<Int>] {
        var rest: [Range<Int>] = [], next = 0
        for elements in sent.map(\.elements).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if elements.lowerBound > next { rest.append(next..<elements.lowerBound) }
            next = max(next, elements.upperBound)
        }
        if next < count { rest.append(next..<count) }
        return rest
    }
}
