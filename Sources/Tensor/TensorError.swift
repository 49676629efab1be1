/// Errors from tensor operations, worded for the person running kdgpu.
public enum TensorError: Error, CustomStringConvertible {
    /// Operand shapes do not fit the operation.
    case shapeMismatch(String)
    /// The backend does not implement this operation for this element type.
    case unsupported(String)
    /// An allocation would exceed the device-memory budget.
    case outOfDeviceMemory(String)
    /// A failure of the device runtime (OpenCL error, kernel build failure, missing kernel file).
    case device(String)

    public var description: String {
        switch self {
        case .shapeMismatch(let message): return "shape mismatch: \(message)"
        case .unsupported(let message): return "unsupported: \(message)"
        case .outOfDeviceMemory(let message): return "out of device memory: \(message)"
        case .device(let message): return message
        }
    }
}
