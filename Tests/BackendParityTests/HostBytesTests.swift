import Foundation
import Tensor
import TestSupport
import XCTest

/// `withHostBytes` on each backend: it sees the value the ops enqueued before it left (including a
/// view's offset into its buffer), its writes are what the ops enqueued after read, and a read-only
/// view leaves the tensor as it was.
final class HostBytesTests: XCTestCase {
    func testHostBytesSeeEarlierOpsAndFeedLaterOnes() throws {
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            let whole = try backend.tensor((0..<35).map(Float.init), shape: [7, 5], label: "whole")
            let view = try whole.rows(2..<5)  // 15 floats at byte offset 40
            try backend.scale(view, by: 2, into: view)
            let seen = try backend.withHostBytes(view, writing: false) { bytes in
                Array(bytes.bindMemory(to: Float.self))
            }
            XCTAssertEqual(seen, (10..<25).map { 2 * Float($0) }, "on \(backend.name)")
            try backend.withHostBytes(view, writing: true) { bytes in
                let floats = bytes.bindMemory(to: Float.self)
                for i in floats.indices { floats[i] += 0.5 }
            }
            try backend.scale(view, by: 10, into: view)
            let expected = (0..<35).map { i -> Float in (10..<25).contains(i) ? (2 * Float(i) + 0.5) * 10 : Float(i) }
            XCTAssertEqual(try whole.toArray(), expected, "on \(backend.name): the rows around the view stay, the view's writes reach the op after")
        }
    }

    /// `lendToHost` on each backend: the loan's bytes, read on another thread, are what the ops
    /// enqueued before it left; ops enqueued while it is out run on the rest of the buffer; what the
    /// other thread wrote is the view's value for the ops enqueued after the loan is settled.
    func testALoanSeesEarlierOpsWhileLaterOnesRunOnTheRestAndFeedsTheOpsAfter() throws {
        /// What the other thread holds and leaves.
        final class Holder: @unchecked Sendable {
            let loan: any HostLoan
            var seen: [Float] = []
            var error: Error?
            init(_ loan: any HostLoan) { self.loan = loan }
        }
        for backend in [TestBackends.cpu, try TestBackends.openCL()] as [any Backend] {
            let whole = try backend.tensor((0..<35).map(Float.init), shape: [7, 5], label: "whole")
            let lent = try whole.rows(2..<5), rest = try whole.rows(5..<7)
            try backend.scale(lent, by: 2, into: lent)
            let holder = Holder(try backend.lendToHost(lent))
            try backend.scale(rest, by: 3, into: rest)  // enqueued while the loan is out
            let done = DispatchSemaphore(value: 0)
            DispatchQueue(label: "loan holder").async {
                defer { done.signal() }
                do {
                    let floats = try holder.loan.bytes().bindMemory(to: Float.self)
                    holder.seen = Array(floats)
                    for i in floats.indices { floats[i] += 0.5 }
                    try holder.loan.giveBack()
                } catch {
                    holder.error = error
                }
            }
            done.wait()
            if let error = holder.error { throw error }
            try holder.loan.settle()
            XCTAssertEqual(holder.seen, (10..<25).map { 2 * Float($0) }, "on \(backend.name)")
            try backend.scale(lent, by: 10, into: lent)
            let expected = (0..<35).map { i -> Float in
                (10..<25).contains(i) ? (2 * Float(i) + 0.5) * 10 : i >= 25 ? 3 * Float(i) : Float(i)
            }
            XCTAssertEqual(try whole.toArray(), expected, "on \(backend.name): the rest scaled while the loan was out, the loan's writes reach the op after")
        }
    }
}
