import Foundation

/// Counts the bytes a backend holds and refuses allocations past a budget.
///
/// PoCL does not enforce its reported global memory (allocations succeed until the process is
/// killed), so kdgpu keeps its own account and fails early with a message that says what to do.
/// Held bytes include blocks kept for reuse (``BlockPool``); in-use bytes are those tensors own.
public final class MemoryLedger: @unchecked Sendable {
    public let deviceName: String
    public let budgetBytes: Int
    private let lock = NSLock()
    private var liveBytes = 0
    private var peakBytes = 0
    private var usedBytes = 0
    private var peakUsedBytes = 0

    /// The environment variable that overrides every backend's budget, in bytes or with a K/M/G suffix.
    public static let budgetEnvironmentVariable = "KDGPU_MEMORY_BUDGET"

    public init(deviceName: String, budgetBytes: Int) {
        self.deviceName = deviceName
        self.budgetBytes = budgetBytes
    }

    /// Bytes held: in use by tensors, or kept for reuse.
    public var allocatedBytes: Int { lock.withLock { liveBytes } }
    public var peakAllocatedBytes: Int { lock.withLock { peakBytes } }
    /// Bytes tensors own now, and the most since ``resetPeak()``.
    public var inUseBytes: Int { lock.withLock { usedBytes } }
    public var peakInUseBytes: Int { lock.withLock { peakUsedBytes } }

    /// Restarts peak tracking at the current figures, so a caller can measure one phase.
    public func resetPeak() {
        lock.withLock {
            peakBytes = liveBytes
            peakUsedBytes = usedBytes
        }
    }

    /// Records an allocation of `bytes` for `label`, or throws if it would pass the budget.
    public func reserve(_ bytes: Int, for label: String) throws {
        try lock.withLock {
            guard liveBytes + bytes <= budgetBytes else {
                throw TensorError.outOfDeviceMemory(
                    "allocating \(formatBytes(bytes)) for \(label) on \(deviceName) would bring kdgpu's use to "
                    + "\(formatBytes(liveBytes + bytes)) of its \(formatBytes(budgetBytes)) budget; "
                    + "use smaller batches or set \(Self.budgetEnvironmentVariable) (e.g. 8G) if the device has more")
            }
            liveBytes += bytes
            peakBytes = max(peakBytes, liveBytes)
            usedBytes += bytes
            peakUsedBytes = max(peakUsedBytes, usedBytes)
        }
    }

    /// A block in use is freed.
    public func release(_ bytes: Int) {
        lock.withLock {
            liveBytes -= bytes
            usedBytes -= bytes
        }
    }

    /// A block in use is kept for reuse: still held, no longer in use.
    public func pool(_ bytes: Int) { lock.withLock { usedBytes -= bytes } }

    /// A kept block is in use again.
    public func reuse(_ bytes: Int) {
        lock.withLock {
            usedBytes += bytes
            peakUsedBytes = max(peakUsedBytes, usedBytes)
        }
    }

    /// A kept block is freed.
    public func releasePooled(_ bytes: Int) { lock.withLock { liveBytes -= bytes } }

    /// The budget from `KDGPU_MEMORY_BUDGET` if set, else `defaultBytes`.
    public static func budget(default defaultBytes: Int) throws -> Int {
        guard let text = ProcessInfo.processInfo.environment[budgetEnvironmentVariable], !text.isEmpty else {
            return defaultBytes
        }
        guard let bytes = parseByteCount(text) else {
            throw TensorError.unsupported("\(budgetEnvironmentVariable)=\(text) is not a size; write a positive size below 8388608T, e.g. 6G, 512M or 1000000")
        }
        return bytes
    }
}

/// Parses `123`, `64K`, `512M`, `8G` (powers of 1024).
public func parseByteCount(_ text: String) -> Int? {
    let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
    let multipliers: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = Substring(trimmed)
    var multiplier = 1
    if digits.hasSuffix("B") { digits = digits.dropLast() }
    if let last = digits.last, let m = multipliers[last] {
        multiplier = m
        digits = digits.dropLast()
    }
    guard let value = Double(digits), value > 0, value.isFinite else { return nil }
    let bytes = value * Double(multiplier)
    return bytes < Double(Int.max) ? Int(bytes) : nil  // past Int.max (8 EiB): no size a machine has
}

/// `1.5 GiB`, `320.0 MiB`, `12 B`.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while abs(value) >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// Physical memory of this machine in bytes.
public var physicalMemoryBytes: Int { Int(ProcessInfo.processInfo.physicalMemory) }
