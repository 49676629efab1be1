import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest

/// The command-line bad-input corpus (Tests/BadInputs/cases.json, from scripts/make_bad_inputs.py):
/// corpora, YAML configs, flags, environment variables, GGUF and safetensors files, checkpoints,
/// teacher caches and faults (SIGKILL, a full disk, NaN-producing settings). Every case must make `kdgpu` exit
/// non-zero on its own (no signal, no timeout) with 1-3 lines on stderr that name what is wrong,
/// leaving nothing half-written. `KDGPU_BAD_INPUT_ONLY=NAME swift test -c release --filter BadInputCorpusTests`
/// runs the cases whose name contains NAME and prints their stderr.
final class BadInputCorpusTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("BadInputs")
    /// Substrings no message may contain: Foundation's raw error descriptions, Int.max, Swift traps, optionals.
    static let defaultForbidden = ["Error Domain=", "NSCocoaErrorDomain", "9223372036854775807", "Fatal error", "Code=",
                                   "Swift/", "Optional("]
    static let timeout: TimeInterval = 60
    /// The small valid run that setup steps start from (a checkpoint at step 2 in {work}/run).
    static let setupTraining = ["train", "--teacher", "{tiny}", "--data", "{files}/corpus/words.txt", "--student-layers", "0",
                                "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--device", "cpu",
                                "--export-gguf", "none", "--out", "{work}/run"]

    /// The small valid teacher cache that setup steps start from ({work}/tc).
    static let setupTeacherCache = ["teacher-cache", "build", "--teacher", "{tiny}", "--data", "{files}/corpus/words.txt", "--seq-len", "16",
                                    "--targets", "topk:4", "--device", "cpu", "--windows-per-shard", "8", "--out", "{work}/tc"]

    func testEveryBadInputFailsCleanly() throws {
        let data = try Data(contentsOf: Self.folder.appendingPathComponent("cases.json"))
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let all = try XCTUnwrap(root["cases"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(all.count, 110)
        // KDGPU_BAD_INPUT_ONLY=SUBSTRING runs only the cases whose name contains it (and prints their stderr).
        let only = ProcessInfo.processInfo.environment["KDGPU_BAD_INPUT_ONLY"]
        let cases = all.filter { only == nil || ($0["name"] as? String ?? "").contains(only!) }
        var failures: [String] = [], skipped: [String] = []
        let start = Date()
        for (index, entry) in cases.enumerated() {
            let name = entry["name"] as? String ?? "?"
            do {
                let outcome = try BadInputCase(entry).run(index: index, verbose: only != nil)
                switch outcome {
                case .passed: break
                case let .skipped(reason): skipped.append("\(name): \(reason)")
                case let .failed(problems, stderr):
                    failures.append("\(name): \(problems.joined(separator: "; "))\n    stderr: "
                                    + stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").suffix(6)
                                        .joined(separator: "\n            "))
                }
            } catch {
                failures.append("\(name): setup: \(error)")
            }
        }
        for line in skipped { print("bad-input case skipped: \(line)") }
        print("bad-input corpus: \(cases.count) cases, \(failures.count) failed, \(skipped.count) skipped, "
              + "\(Int(Date().timeIntervalSince(start))) s")
        if !failures.isEmpty {
            XCTFail("\(failures.count) of \(cases.count) bad-input cases did not fail cleanly:\n" + failures.joined(separator: "\n"))
        }
    }
}

private struct SetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private enum Outcome {
    case passed
    case skipped(String)
    case failed([String], stderr: String)
}

/// One case of cases.json, run in a fresh folder (see scripts/make_bad_inputs.py for the format).
private struct BadInputCase {
    let entry: [String: Any]
    let name: String

    init(_ entry: [String: Any]) throws {
        self.entry = entry
        guard let name = entry["name"] as? String else { throw SetupError("a case without a name") }
        self.name = name
    }

    /// - Parameter index: names the case's folder (digits only: a name in the path could satisfy `expect`).
    func run(index: Int, verbose: Bool = false) throws -> Outcome {
        let manager = FileManager.default
        let work = manager.temporaryDirectory.appendingPathComponent("kdgpu-bad-\(getpid())-\(index)")
        try? manager.removeItem(at: work)
        try manager.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? manager.removeItem(at: work) }
        let places = ["files": BadInputCorpusTests.folder.appendingPathComponent("files").path, "tiny": Kdgpu.tinyModel,
                      "work": work.path, "fifo": work.appendingPathComponent("input.fifo").path,
                      "tmpfs": work.appendingPathComponent("tmpfs").path]
        let text = String(decoding: try JSONSerialization.data(withJSONObject: entry), as: UTF8.self)  // to find placeholders
        if text.contains("{tmpfs}") {
            let mountPoint = work.appendingPathComponent("tmpfs")
            try manager.createDirectory(at: mountPoint, withIntermediateDirectories: false)
            let size = entry["tmpfs_kb"] as? Int ?? 2048
            let mount = try command(["mount", "-t", "tmpfs", "-o", "size=\(size)k", "tmpfs", mountPoint.path])
            if mount.status != 0 {
                return .skipped("cannot mount a tmpfs (\(mount.error.trimmingCharacters(in: .whitespacesAndNewlines))); run as root to include it")
            }
        }
        defer { if text.contains("{tmpfs}") { _ = try? command(["umount", places["tmpfs"]!]) } }
        if text.contains("{fifo}"), mkfifo(places["fifo"]!, 0o644) != 0 {
            throw SetupError("mkfifo \(places["fifo"]!): \(String(cString: strerror(errno)))")
        }
        for step in entry["setup"] as? [Any] ?? [] {
            let object = step as? [String: Any] ?? ["step": step as? String ?? "?"]
            try setUp(object, places: places, work: work)
        }
        let before = entries(under: work)

        let arguments = (entry["args"] as? [String] ?? []).map { substitute($0, places) }
        let environment = (entry["env"] as? [String: String] ?? [:]).mapValues { substitute($0, places) }
        let directory = URL(fileURLWithPath: substitute(entry["cwd"] as? String ?? "{work}", places))
        let result = try Kdgpu.run(arguments, environment: environment, workingDirectory: directory,
                                   timeout: BadInputCorpusTests.timeout)
        let problems = check(result, work: work, before: before, places: places)
        if verbose { print("\(name): status \(result.status)\(result.signaled ? " (signal)" : ""), stderr:\n\(result.error)") }
        return problems.isEmpty ? .passed : .failed(problems, stderr: result.error)
    }

    // MARK: Checks

    private func check(_ result: KdgpuRun, work: URL, before: Set<String>, places: [String: String]) -> [String] {
        if result.timedOut { return ["timed out after \(Int(BadInputCorpusTests.timeout)) s (killed)"] }
        if result.signaled { return ["ended by signal \(result.status)"] }
        var problems: [String] = []
        if result.status == 0 { problems.append("exit status 0") }
        let lines = result.error.replacingOccurrences(of: "\r", with: "\n").split(separator: "\n", omittingEmptySubsequences: true)
            .map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        var block = lines
        if entry["after_work"] as? Bool == true {
            if let last = lines.lastIndex(where: { $0.hasPrefix("kdgpu: ") }) {
                block = Array(lines[last...])
            } else {
                problems.append("no line starting with 'kdgpu: ' on stderr")
                block = Array(lines.suffix(3))
            }
        }
        if !(1...3).contains(block.count) { problems.append("\(block.count) lines on stderr (want 1-3)") }
        let message = block.joined(separator: "\n")
        for item in entry["expect"] as? [Any] ?? [] {
            let options = ((item as? [String]) ?? [item as? String ?? ""]).map { substitute($0, places) }
            if !options.contains(where: { message.contains($0) }) {
                problems.append("stderr lacks " + options.map { "'\($0)'" }.joined(separator: " or "))
            }
        }
        for item in BadInputCorpusTests.defaultForbidden + (entry["forbid"] as? [String] ?? []).map({ substitute($0, places) })
        where result.error.contains(item) {
            problems.append("stderr contains '\(item)'")
        }
        for path in entries(under: work).subtracting(before).sorted() {
            let file = (path as NSString).lastPathComponent
            if file.hasPrefix(".partial-") || file.contains(".tmp") { problems.append("half-written \(path) left behind") }
        }
        for path in entry["no_output"] as? [String] ?? [] {
            var status = stat()
            if lstat(work.appendingPathComponent(path).path, &status) == 0 { problems.append("output \(path) exists") }
        }
        for path in entry["no_nan"] as? [String] ?? [] {
            let url = work.appendingPathComponent(path)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            do {
                let bad = try nonFiniteTensors(url)
                if !bad.isEmpty { problems.append("\(path) holds non-finite values in \(bad.prefix(3).joined(separator: ", "))") }
            } catch {
                problems.append("\(path) cannot be read back: \(error)")
            }
        }
        return problems
    }

    // MARK: Setup steps

    private func setUp(_ step: [String: Any], places: [String: String], work: URL) throws {
        let kind = step["step"] as? String ?? "?"
        let url = (step["path"] as? String).map { work.appendingPathComponent($0) }
        func path() throws -> URL {
            guard let url else { throw SetupError("setup step \(kind) lacks a path") }
            return url
        }
        let manager = FileManager.default
        switch kind {
        case "train_checkpoint", "kill_after_step":
            let arguments = (BadInputCorpusTests.setupTraining + (step["args"] as? [String] ?? [])).map { substitute($0, places) }
            var environment: [String: String] = [:]
            if kind == "kill_after_step" { environment["KDGPU_KILL_AFTER_STEP"] = "\(step["after"] ?? 1)" }
            let run = try Kdgpu.run(arguments, environment: environment, workingDirectory: work, timeout: BadInputCorpusTests.timeout)
            if kind == "train_checkpoint", run.status != 0 || run.signaled {
                throw SetupError("train_checkpoint failed (status \(run.status)): \(run.error.suffix(300))")
            }
            if kind == "kill_after_step", !(run.signaled && run.status == SIGKILL) {
                throw SetupError("kill_after_step: the run was not killed (status \(run.status)): \(run.error.suffix(300))")
            }
        case "teacher_cache":
            let arguments = (BadInputCorpusTests.setupTeacherCache + (step["args"] as? [String] ?? [])).map { substitute($0, places) }
            let run = try Kdgpu.run(arguments, workingDirectory: work, timeout: BadInputCorpusTests.timeout)
            if run.status != 0 || run.signaled { throw SetupError("teacher_cache failed (status \(run.status)): \(run.error.suffix(300))") }
        case "write":
            let target = try path()
            try manager.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            if let source = step["from"] as? String {
                try Data(contentsOf: URL(fileURLWithPath: substitute(source, places))).write(to: target)
            } else {
                try Data((step["text"] as? String ?? "").utf8).write(to: target)
            }
        case "mkdir":
            try manager.createDirectory(at: try path(), withIntermediateDirectories: true)
        case "remove":
            try manager.removeItem(at: try path())
        case "symlink":
            try manager.createSymbolicLink(atPath: try path().path, withDestinationPath: step["target"] as? String ?? "")
        case "rename":
            try manager.moveItem(at: try path(), to: work.appendingPathComponent(step["to"] as? String ?? ""))
        case "truncate":
            guard truncate(try path().path, off_t(step["size"] as? Int ?? 0)) == 0 else {
                throw SetupError("truncate \(try path().path): \(String(cString: strerror(errno)))")
            }
        case "json_set":
            let target = try path()
            guard let document = try JSONSerialization.jsonObject(with: Data(contentsOf: target)) as? [String: Any] else {
                throw SetupError("\(target.path) is not a JSON object")
            }
            let keys = (step["key"] as? String ?? "").split(separator: ".").map(String.init)
            let edited = setting(step["value"] ?? NSNull(), at: keys[...], in: document)
            try JSONSerialization.data(withJSONObject: edited, options: [.prettyPrinted, .sortedKeys]).write(to: target)
        case "header_set", "nan_tensor":
            let target = try path()
            var (header, body) = try readSafetensors(target)
            let tensor = step["tensor"] as? String ?? ""
            guard var info = header[tensor] as? [String: Any] else { throw SetupError("\(target.path) has no tensor \(tensor)") }
            if kind == "header_set" {
                info[step["field"] as? String ?? ""] = step["value"]
                header[tensor] = info
            } else {
                guard let offsets = info["data_offsets"] as? [Int], offsets.count == 2, info["dtype"] as? String == "F32" else {
                    throw SetupError("\(tensor) in \(target.path) is not an F32 tensor with data_offsets")
                }
                var nan = Float.nan.bitPattern.littleEndian
                let bytes = withUnsafeBytes(of: &nan) { Data($0) }
                for offset in stride(from: offsets[0], to: offsets[1], by: 4) {
                    body.replaceSubrange(body.startIndex + offset ..< body.startIndex + offset + 4, with: bytes)
                }
            }
            try writeSafetensors(target, header: header, body: body)
        case "fill_tmpfs":
            let mountPoint = places["tmpfs"]!
            var status = statvfs()
            guard statvfs(mountPoint, &status) == 0 else { throw SetupError("statvfs \(mountPoint): \(String(cString: strerror(errno)))") }
            let free = Int(status.f_bavail) * Int(status.f_frsize) - (step["free_kb"] as? Int ?? 0) * 1024
            let filler = mountPoint + "/filler"
            let descriptor = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard descriptor >= 0 else { throw SetupError("open \(filler): \(String(cString: strerror(errno)))") }
            defer { close(descriptor) }
            var remaining = max(0, free)
            let chunk = [UInt8](repeating: 0, count: 65536)
            while remaining > 0 {
                let written = chunk.withUnsafeBytes { write(descriptor, $0.baseAddress, min(remaining, chunk.count)) }
                if written <= 0 { break }  // full already
                remaining -= written
            }
        default:
            throw SetupError("unknown setup step '\(kind)'")
        }
    }

    /// `node` with the value at `keys` (object keys, or array indices as numbers) replaced; NSNull removes it.
    private func setting(_ value: Any, at keys: ArraySlice<String>, in node: Any) -> Any {
        guard let key = keys.first else { return value }
        let removes = keys.count == 1 && value is NSNull
        if var array = node as? [Any], let index = Int(key), array.indices.contains(index) {
            if removes { array.remove(at: index) } else { array[index] = setting(value, at: keys.dropFirst(), in: array[index]) }
            return array
        }
        var object = node as? [String: Any] ?? [:]
        if removes { object.removeValue(forKey: key) } else { object[key] = setting(value, at: keys.dropFirst(), in: object[key] ?? [String: Any]()) }
        return object
    }

    // MARK: Helpers

    private func substitute(_ text: String, _ places: [String: String]) -> String {
        places.reduce(text) { $0.replacingOccurrences(of: "{\($1.key)}", with: $1.value) }
    }

    /// `/usr/bin/env COMMAND...`, for mount and umount.
    private func command(_ arguments: [String]) throws -> KdgpuRun {
        try Kdgpu.run(arguments, executable: URL(fileURLWithPath: "/usr/bin/env"), timeout: 30)
    }

    /// Every path under `folder`, relative, without following symbolic links.
    private func entries(under folder: URL) -> Set<String> {
        var found = Set<String>()
        func walk(_ relative: String) {
            let full = relative.isEmpty ? folder.path : folder.path + "/" + relative
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: full) else { return }
            for name in names {
                let child = relative.isEmpty ? name : relative + "/" + name
                found.insert(child)
                var status = stat()
                if lstat(folder.path + "/" + child, &status) == 0, status.st_mode & S_IFMT == S_IFDIR { walk(child) }
            }
        }
        walk("")
        return found
    }
}

// MARK: safetensors, minimally: 8-byte little-endian header length, JSON header, data section

private func readSafetensors(_ url: URL) throws -> (header: [String: Any], body: Data) {
    let data = try Data(contentsOf: url)
    guard data.count >= 8 else { throw SetupError("\(url.path): shorter than a safetensors header") }
    let length = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    guard length <= UInt64(data.count - 8),
          let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + Int(length))) as? [String: Any] else {
        throw SetupError("\(url.path): not a safetensors file")
    }
    return (header, data.subdata(in: 8 + Int(length) ..< data.count))
}

private func writeSafetensors(_ url: URL, header: [String: Any], body: Data) throws {
    var text = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    text.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: (8 - text.count % 8) % 8))
    var file = Data((0..<8).map { UInt8(truncatingIfNeeded: UInt64(text.count) >> (8 * UInt64($0))) })
    file.append(text)
    file.append(body)
    try file.write(to: url)
}

/// The F32 tensors of a safetensors file that hold a NaN or an infinity.
private func nonFiniteTensors(_ url: URL) throws -> [String] {
    let (header, body) = try readSafetensors(url)
    var bad: [String] = []
    for (name, value) in header.sorted(by: { $0.key < $1.key }) where name != "__metadata__" {
        guard let info = value as? [String: Any], info["dtype"] as? String == "F32",
              let offsets = info["data_offsets"] as? [Int], offsets.count == 2,
              offsets[0] <= offsets[1], offsets[1] <= body.count else { continue }
        let finite = body.withUnsafeBytes { raw -> Bool in
            for offset in stride(from: offsets[0], to: offsets[1] - 3, by: 4) {
                let bits = raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                if !Float(bitPattern: UInt32(littleEndian: bits)).isFinite { return false }
            }
            return true
        }
        if !finite { bad.append(name) }
    }
    return bad
}
