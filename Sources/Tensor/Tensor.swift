/// Element types a tensor can hold. Every op computes in fp32; the 16-bit types are storage
/// (``Backend/convert(_:into:)`` narrows with round-to-nearest-even and widens exactly), the
/// quantized types keep weights in their file format on the device.
public enum DType: String, Sendable {
    case f32
    /// Token ids and other indices.
    case i32
    case f16
    /// bfloat16: the high half of an fp32 (8 exponent bits, 7 stored mantissa bits).
    case bf16
    case q8_0
    case q4_0
    case q4_1

    /// Bytes taken by `count` elements (quantized types come in blocks of 32 along the fastest axis).
    public func byteCount(elements count: Int) -> Int {
        switch self {
        case .f32, .i32: return count * 4
        case .f16, .bf16: return count * 2
        case .q8_0: return count / 32 * 34
        case .q4_0: return count / 32 * 18
        case .q4_1: return count / 32 * 20
        }
    }
}

/// Backend-owned memory behind a tensor: a host allocation on the CPU backend, a `cl_mem` on OpenCL.
public protocol TensorStorage: AnyObject {
    /// Size of the allocation in bytes.
    var byteCount: Int { get }
}

/// A dense, row-major tensor that lives on one backend.
///
/// A `Tensor` is a view: a shape and an element offset into shared storage. Views made with
/// ``rows(_:)`` or ``reshaped(_:)`` share the storage and never copy.
public struct Tensor {
    public let shape: [Int]
    public let dtype: DType
    public let storage: TensorStorage
    /// Offset of the first element in the storage, in elements.
    public let offset: Int
    public let backend: any Backend
    /// A name used in error messages and the device-memory ledger.
    public let label: String

    public init(shape: [Int], dtype: DType = .f32, storage: TensorStorage, offset: Int = 0,
                backend: any Backend, label: String) {
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
        self.offset = offset
        self.backend = backend
        self.label = label
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    /// Length of the last axis (1 for a scalar).
    public var columns: Int { shape.last ?? 1 }
    /// Product of every axis but the last: the number of rows a row-wise op sees.
    public var rowCount: Int { shape.isEmpty ? 1 : shape.dropLast().reduce(1, *) }

    /// The same storage seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count else {
            throw TensorError.shapeMismatch("cannot reshape \(label) from \(shape) to \(newShape)")
        }
        return Tensor(shape: newShape, dtype: dtype, storage: storage, offset: offset, backend: backend, label: label)
    }

    /// The slice `range` of the leading axis, sharing storage: `x.rows(0..<128)` of an `[N, V]` tensor is `[128, V]`.
    public func rows(_ range: Range<Int>) throws -> Tensor {
        guard let leading = shape.first, range.lowerBound >= 0, range.upperBound <= leading else {
            throw TensorError.shapeMismatch("rows \(range) out of bounds for \(label) of shape \(shape)")
        }
        let rowElements = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(), dtype: dtype, storage: storage,
                      offset: offset + range.lowerBound * rowElements, backend: backend, label: label)
    }

    /// Offset of the first element in the storage, in bytes.
    public var byteOffset: Int { dtype.byteCount(elements: offset) }
    /// Bytes the tensor's elements take.
    public var byteCount: Int { dtype.byteCount(elements: count) }

    /// Copies the tensor's values to the host.
    public func toArray() throws -> [Float] { try backend.download(self) }
}

public func describeShape(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
