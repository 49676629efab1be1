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
}
