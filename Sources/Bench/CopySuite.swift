import Foundation
import Tensor

/// Device copy bandwidth: the yardstick every memory-bound kernel is measured against.
public struct CopySuite: BenchSuite {
    public let name = "copy"
    public let summary = "copy_f32 of 256 MiB: device copy bandwidth (bytes read + written)"

    /// 64 Mi floats = 256 MiB per buffer.
    static let elementCount = 64 << 20

    public init() {}

    public func run(_ context: BenchContext) throws -> [BenchRecord] {
        try context.backends.map { backend in
            let record = try Self.measure(on: backend, context: context)
            context.recordCopyBandwidth(record.gbPerSecond ?? 0, of: backend)
            return record
        }
    }

    /// Times copy_f32 on `backend` and checks the copy is exact.
    static func measure(on backend: any Backend, context: BenchContext) throws -> BenchRecord {
        context.report("copy: 256 MiB on \(backend.name)")
        let values = benchValues(elementCount, seed: 1)
        let source = try backend.tensor(values, shape: [elementCount], label: "bench copy source")
        let destination = try backend.tensor(shape: [elementCount], label: "bench copy destination")
        let seconds = try context.median {
            try backend.copy(source, into: destination)
            try backend.synchronize()
        }
        let error = maxAbsDifference(try destination.toArray(), values)
        let bytes = Double(2 * 4 * elementCount)
        return BenchRecord(suite: "copy", kernel: "copy_f32", backend: backend.name, shape: "[\(elementCount)]",
                           medianSeconds: seconds, gbPerSecond: bytes / seconds / 1e9, maxAbsError: error)
    }
}
