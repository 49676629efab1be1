import Tensor

/// The element types of GGUF tensors that kdgpu reads and writes (ggml's type ids).
///
/// Quantized types store blocks of ``blockSize`` weights along the fastest dimension;
/// the block layouts are documented on `BlockFormat` in the Tensor module.
public enum GGMLType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8
    case bf16 = 30

    /// Weights per block: 1 for the float types, 32 for the quantized ones.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q8_0: return 32
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18  // f16 d, u8 qs[16]
        case .q4_1: return 20  // f16 d, f16 m, u8 qs[16]
        case .q8_0: return 34  // f16 d, i8 qs[32]
        }
    }

    /// Bytes taken by `count` elements, or nil when `count` is not a whole number of blocks.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }

    /// ggml's name for the type, as llama.cpp and the `gguf` Python package print it.
    public var description: String { GGMLType.name(ofTypeID: rawValue) }

    /// The project's tensor element type a model keeps this GGUF type in on the device, or nil for
    /// BF16, which the model's kernels do not read yet (embedding lookups): BF16 tensors are
    /// widened to f32 on the host (``GGUFFile/dequantize(_:)``).
    public var tensorDType: DType? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q8_0: return .q8_0
        case .bf16: return nil
        }
    }

    /// The GGUF type holding tensors of element type `dtype` (none for index tensors).
    public init?(_ dtype: DType) {
        switch dtype {
        case .i32: return nil
        case .f32: self = .f32
        case .f16: self = .f16
        case .q4_0: self = .q4_0
        case .q4_1: self = .q4_1
        case .q8_0: self = .q8_0
        case .bf16: self = .bf16
        }
    }

    /// ggml's name for any type id, supported here or not ("Q4_K" for 12), so that errors about
    /// unsupported tensors say which type the file holds.
    public static func name(ofTypeID id: UInt32) -> String {
        let names: [UInt32: String] = [
            0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
            10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
            16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
            22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
            29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return names[id] ?? "unknown type id \(id)"
    }
}
