import Files
import Foundation

/// `DIR/metrics.jsonl`: one JSON object per line, appended and flushed as the run goes.
public final class MetricsLog {
    public let url: URL
    private let handle: FileHandle

    /// Opens the log; `keepingStepsUpTo` drops lines of later steps (a resumed run redoes them).
    public init(url: URL, keepingStepsUpTo lastStep: Int?) throws {
        self.url = url
        var kept = ""
        if let lastStep, let existing = try? String(contentsOf: url, encoding: .utf8) {
            for line in existing.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let step = object["step"] as? Int, step <= lastStep else { continue }
                kept += line + "\n"
            }
        }
        do {
            try kept.write(to: url, atomically: true, encoding: .utf8)
            handle = try FileHandle(forWritingTo: url)
            try handle.seekToEnd()
        } catch {
            throw FileProblem(path: url.path, reason: "cannot write the metrics: \(FileChecks.describe(error))")
        }
    }

    deinit { try? handle.close() }

    /// Appends one line; a non-finite number is written as null (JSON has no NaN or infinity).
    public func append(_ object: [String: Any]) throws {
        let finite = object.mapValues { value -> Any in
            if let number = value as? Double, !number.isFinite { return NSNull() }
            return value
        }
        var data = try JSONSerialization.data(withJSONObject: finite, options: [.sortedKeys])
        data.append(0x0A)
        do {
            try handle.write(contentsOf: data)
        } catch {
            throw FileProblem(path: url.path, reason: "cannot write the metrics: \(FileChecks.describe(error))")
        }
    }

    /// Every logged object, in order.
    public static func read(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").compactMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}

/// A small SVG line chart of the training loss (and validation NLL points) by step.
public func lossCurveSVG(steps: [(step: Int, loss: Double)], validation: [(step: Int, nll: Double)], title: String) -> String {
    let (width, height, margin) = (640.0, 360.0, 48.0)
    let allSteps = steps.map(\.step) + validation.map(\.step)
    let allValues = steps.map(\.loss) + validation.map(\.nll)
    guard let minStep = allSteps.min(), let maxStep = allSteps.max(), let low = allValues.min(), let high = allValues.max() else {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\"></svg>\n"
    }
    let spanX = Double(max(1, maxStep - minStep)), spanY = max(1e-9, high - low)
    func x(_ step: Int) -> Double { margin + (Double(step - minStep) / spanX) * (width - 2 * margin) }
    func y(_ value: Double) -> Double { height - margin - ((value - low) / spanY) * (height - 2 * margin) }
    let path = steps.map { String(format: "%.1f,%.1f", x($0.step), y($0.loss)) }.joined(separator: " ")
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<text x=\"\(Int(margin))\" y=\"20\">\(title)</text>\n"
    svg += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", margin, height - margin, width - margin, height - margin)
    svg += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", margin, margin, margin, height - margin)
    svg += String(format: "<text x=\"%.0f\" y=\"%.0f\">step %d</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">step %d</text>\n",
                  margin, height - margin + 16, minStep, width - margin, height - margin + 16, maxStep)
    svg += String(format: "<text x=\"4\" y=\"%.0f\">%.3f</text><text x=\"4\" y=\"%.0f\">%.3f</text>\n", y(high) + 4, high, y(low), low)
    svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(path)\"/>\n"
    for point in validation {
        svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", x(point.step), y(point.nll))
    }
    svg += String(format: "<text x=\"%.0f\" y=\"36\" fill=\"#1f77b4\">training loss</text><text x=\"%.0f\" y=\"36\" fill=\"#d62728\">validation NLL</text>\n",
                  width - 260, width - 140)
    return svg + "</svg>\n"
}
