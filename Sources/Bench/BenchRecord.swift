import Foundation

/// One measured kernel on one backend: what `kdgpu bench --json` prints, one object per record.
public struct BenchRecord: Encodable {
    public var suite: String
    public var kernel: String
    public var backend: String
    public var shape: String
    /// The element type the kernel computes on or stores (`f32`, `bf16`, `f16`, a block type): for a
    /// training step, the student's GEMM precision.
    public var dtype: String
    public var medianSeconds: Double
    /// Memory traffic per second, counting the bytes the kernel must read and write.
    public var gbPerSecond: Double?
    public var gflopPerSecond: Double?
    /// Largest |difference| from the reference: the CPU backend for OpenCL records, an fp64 or exact reference for CPU records.
    public var maxAbsError: Double
    /// Suite-specific ratios and figures (`fraction_of_copy_bandwidth`, `speedup_over_unfused`, ...).
    public var extra: [String: Double]
    public var note: String?

    public init(suite: String, kernel: String, backend: String, shape: String, dtype: String = "f32", medianSeconds: Double,
                gbPerSecond: Double? = nil, gflopPerSecond: Double? = nil, maxAbsError: Double,
                extra: [String: Double] = [:], note: String? = nil) {
        self.suite = suite
        self.kernel = kernel
        self.backend = backend
        self.shape = shape
        self.dtype = dtype
        self.medianSeconds = medianSeconds
        self.gbPerSecond = gbPerSecond
        self.gflopPerSecond = gflopPerSecond
        self.maxAbsError = maxAbsError
        self.extra = extra
        self.note = note
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(suite, forKey: Key("suite"))
        try container.encode(kernel, forKey: Key("kernel"))
        try container.encode(backend, forKey: Key("backend"))
        try container.encode(shape, forKey: Key("shape"))
        try container.encode(dtype, forKey: Key("dtype"))
        try container.encode(medianSeconds, forKey: Key("median_seconds"))
        try container.encodeIfPresent(gbPerSecond, forKey: Key("gb_per_s"))
        try container.encodeIfPresent(gflopPerSecond, forKey: Key("gflop_per_s"))
        try container.encode(maxAbsError, forKey: Key("max_abs_error"))
        for (key, value) in extra.sorted(by: { $0.key < $1.key }) {
            try container.encode(value, forKey: Key(key))
        }
        try container.encodeIfPresent(note, forKey: Key("note"))
    }
}

/// Renders records as aligned text tables, one per suite, each with its own extra columns.
public func formatBenchTable(_ records: [BenchRecord]) -> String {
    var suites: [String] = []
    for record in records where !suites.contains(record.suite) { suites.append(record.suite) }
    return suites.map { suite in formatSuiteTable(records.filter { $0.suite == suite }) }.joined(separator: "\n\n")
}

private func formatSuiteTable(_ records: [BenchRecord]) -> String {
    let extraKeys = Array(Set(records.flatMap { $0.extra.keys })).sorted()
    let showBandwidth = records.contains { $0.gbPerSecond != nil }, showFlops = records.contains { $0.gflopPerSecond != nil }
    let header = ["suite", "kernel", "backend", "shape", "dtype", "median ms"] + (showBandwidth ? ["GB/s"] : []) + (showFlops ? ["GFLOP/s"] : [])
        + ["max abs err"] + extraKeys
    func number(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }
    let rows = records.map { r in
        [r.suite, r.kernel, r.backend, r.shape, r.dtype, number(r.medianSeconds * 1000, "%.3f")]
            + (showBandwidth ? [number(r.gbPerSecond, "%.1f")] : []) + (showFlops ? [number(r.gflopPerSecond, "%.1f")] : [])
            + [number(r.maxAbsError, "%.2e")] + extraKeys.map { number(r.extra[$0], "%.3f") }
    }
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { column, cell in
            column < 5 ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                       : String(repeating: " ", count: widths[column] - cell.count) + cell
        }.joined(separator: "  ")
    }
    var notes: [String] = []
    for r in records {
        if let note = r.note {
            let text = "  \(r.kernel) (\(r.dtype)) on \(r.backend): \(note)"
            if !notes.contains(text) { notes.append(text) }
        }
    }
    return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
        + (notes.isEmpty ? "" : "\n" + notes.joined(separator: "\n"))
}
