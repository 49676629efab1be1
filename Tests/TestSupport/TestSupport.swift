import CPUBackend
import Foundation
import OpenCLBackend
import Tensor
import XCTest

/// Test inputs come from kdgpu's own seeded generator, so every input is reproducible from its seed.
public typealias SeededRandom = SplitMix64

extension SplitMix64 {
    public mutating func normals(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in normal() * scale }
    }

    /// Logits `randn * scale` of shape [rows, cols] with a fraction of `-inf` entries (a masked
    /// vocabulary) and the given rows entirely `-inf`.
    public mutating func logits(rows: Int, cols: Int, scale: Float = 10, negativeInfinityFraction: Double = 0,
                                maskedRows: Set<Int> = []) -> [Float] {
        var values = normals(rows * cols, scale: scale)
        for r in 0..<rows {
            for c in 0..<cols where maskedRows.contains(r) || Double.random(in: 0..<1, using: &self) < negativeInfinityFraction {
                values[r * cols + c] = -.infinity
            }
        }
        return values
    }
}

/// The outcome of comparing computed values with a reference.
public struct Comparison: CustomStringConvertible {
    public var maxAbsError: Double = 0
    public var maxAbsReference: Double = 0
    public var mismatch: String?

    /// max |x - ref| / max(1, max |ref|), over finite entries.
    public var normalizedError: Double { maxAbsError / max(1, maxAbsReference) }

    public var description: String {
        mismatch ?? String(format: "normalized error %.3g (max abs error %.3g, max |ref| %.3g)",
                           normalizedError, maxAbsError, maxAbsReference)
    }

    /// Compares element by element. Infinities must match exactly; any NaN is a mismatch.
    public init(_ values: [Float], reference: [Double]) {
        guard values.count == reference.count else {
            mismatch = "count \(values.count) vs reference \(reference.count)"
            return
        }
        for (i, (x, r)) in zip(values, reference).enumerated() {
            if x.isNaN || r.isNaN {
                mismatch = mismatch ?? "NaN at \(i): got \(x), reference \(r)"
                continue
            }
            if x.isInfinite || r.isInfinite {
                if Double(x) != r { mismatch = mismatch ?? "at \(i): got \(x), reference \(r)" }
                continue
            }
            maxAbsError = max(maxAbsError, abs(Double(x) - r))
            maxAbsReference = max(maxAbsReference, abs(r))
        }
    }

    public func passes(tolerance: Double) -> Bool { mismatch == nil && normalizedError <= tolerance }
}

/// The backends tests run on, shared by all tests of a process (compiled programs are cached per backend).
public enum TestBackends {
    public static let cpu: CPUBackend = try! CPUBackend()

    private static let openCLResult: Result<OpenCLBackend, Error> = Result { try OpenCLBackend(selector: "opencl") }

    /// The default OpenCL device. Skips the test, saying why, only when no OpenCL platform exists at all.
    public static func openCL() throws -> OpenCLBackend {
        switch openCLResult {
        case .success(let backend): return backend
        case .failure(let error):
            if "\(error)".contains("CL_PLATFORM_NOT_FOUND_KHR") {
                throw XCTSkip("no OpenCL platform installed (\(error)); the OpenCL half of this test is skipped")
            }
            throw error
        }
    }

    /// Both backends, CPU first.
    public static func all() throws -> [any Backend] { [cpu, try openCL()] }
}
