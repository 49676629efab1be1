import Foundation

/// Progress on standard error: on a terminal one line redrawn in place, with log lines printed
/// above it; otherwise a line at most every `interval` seconds (every line with 0).
final class ProgressPrinter {
    private let terminal = isatty(STDERR_FILENO) != 0
    private let interval: Double
    private var progressShown = false
    private var lastPrinted: UInt64?

    init(interval: Double = 0) { self.interval = interval }

    func log(_ line: String) {
        if progressShown { FileHandle.standardError.write(Data("\n".utf8)) }
        progressShown = false
        note(line)
    }

    func progress(_ line: String) {
        if terminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
            progressShown = true
        } else {
            let now = DispatchTime.now().uptimeNanoseconds
            if let lastPrinted, Double(now - lastPrinted) / 1e9 < interval { return }
            lastPrinted = now
            note(line)
        }
    }

    /// Ends a progress line left on the terminal.
    func finish() {
        if progressShown { note("") }
        progressShown = false
    }
}
