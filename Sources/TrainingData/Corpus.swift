import Files
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the files of a corpus hold their documents.
public enum CorpusFormat: Equatable, Sendable {
    /// Each file is one document of plain UTF-8 text.
    case text
    /// Each non-blank line is a JSON object whose string field `field` is one document.
    case jsonLines(field: String)
}

/// One input file, with what identifies its contents for the token cache.
public struct CorpusFile: Equatable, Sendable {
    /// The absolute, standardized path.
    public let path: String
    public let size: Int
    /// Modification time in nanoseconds since 1970.
    public let modificationTime: Int64
}

/// The text to train on: one text file, a folder of text files, or a JSONL file.
///
/// ```swift
/// let corpus = try Corpus(path: "cache/corpus/plays")          // every .txt/.md/.text file, sorted
/// let chat = try Corpus(path: "data/chat.jsonl", jsonField: "content")
/// ```
public struct Corpus: Sendable {
    /// File extensions a folder corpus takes (compared lowercased).
    public static let textExtensions: Set<String> = ["txt", "md", "text"]
    /// File extensions read as JSONL when the format is chosen automatically.
    public static let jsonLinesExtensions: Set<String> = ["jsonl", "ndjson"]

    /// The path as the user gave it (used in messages).
    public let path: String
    public let format: CorpusFormat
    /// The files in reading order: one file, or a folder's matching files sorted by path.
    public let files: [CorpusFile]

    /// Finds the files of a corpus.
    /// - Parameters:
    ///   - path: a text file, a folder (searched recursively for .txt, .md and .text files; hidden
    ///     files and folders are skipped), or a .jsonl/.ndjson file.
    ///   - jsonField: the field holding the text in each JSONL object.
    ///   - forceJSONLines: read `path` as JSONL whatever its extension.
    public init(path: String, jsonField: String = "text", forceJSONLines: Bool = false) throws {
        self.path = path
        let kind = FileChecks.kind(of: path)
        switch kind {
        case .missing: throw TrainingDataError.missingPath(path)
        case .folder, .regularFile: break
        default:  // refused before any read: a named pipe would block it, a device never end
            throw TrainingDataError.unreadable(path: path, reason: "it is \(FileChecks.article(kind)), not a text file or folder")
        }
        let root = URL(fileURLWithPath: path).standardizedFileURL
        if kind == .folder {
            format = forceJSONLines ? .jsonLines(field: jsonField) : .text
            let wanted = forceJSONLines ? Corpus.jsonLinesExtensions : Corpus.textExtensions
            guard let enumerator = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey],
                                                                  options: [.skipsHiddenFiles]) else {
                throw TrainingDataError.unreadable(path: path, reason: "the folder cannot be listed")
            }
            var paths: [String] = []
            for case let url as URL in enumerator where wanted.contains(url.pathExtension.lowercased()) {
                if (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true {
                    paths.append(url.standardizedFileURL.path)
                }
            }
            guard !paths.isEmpty else {
                let kinds = wanted.sorted().map { "." + $0 }.joined(separator: ", ")
                throw TrainingDataError.emptyCorpus(path: path, reason: "the folder holds no \(kinds) files")
            }
            files = try paths.sorted().map(Corpus.describe)
        } else {
            let isJSONL = forceJSONLines || Corpus.jsonLinesExtensions.contains(root.pathExtension.lowercased())
            format = isJSONL ? .jsonLines(field: jsonField) : .text
            files = [try Corpus.describe(root.path)]
        }
    }

    /// Size and modification time of one file, from stat(2).
    static func describe(_ path: String) throws -> CorpusFile {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw TrainingDataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        #if canImport(Darwin)
        let time = info.st_mtimespec
        #else
        let time = info.st_mtim
        #endif
        return CorpusFile(path: path, size: Int(info.st_size),
                          modificationTime: Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec))
    }

    /// Calls `body` with each document in order, and with the file it came from.
    public func forEachDocument(_ body: (_ document: String, _ file: CorpusFile) throws -> Void) throws {
        for file in files {
            let bytes = try Corpus.readBytes(file.path)
            switch format {
            case .text:
                try body(try Corpus.decodeUTF8(bytes, path: file.path, startingAt: 0), file)
            case .jsonLines(let field):
                try Corpus.forEachJSONLine(bytes, path: file.path, field: field) { try body($0, file) }
            }
        }
    }

    /// Every document in order (the whole corpus in memory; ``forEachDocument(_:)`` streams by file).
    public func documents() throws -> [String] {
        var documents: [String] = []
        try forEachDocument { document, _ in documents.append(document) }
        return documents
    }

    static func readBytes(_ path: String) throws -> [UInt8] {
        do {
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                throw TrainingDataError.missingPath(path)
            }
            let reason = isDirectory.boolValue ? "it is a folder" :
                (FileManager.default.isReadableFile(atPath: path) ? FileChecks.describe(error) : "permission denied")
            throw TrainingDataError.unreadable(path: path, reason: reason)
        }
    }

    /// `bytes[range]` as a String, or the offset (counted from the file's start) of the first byte that is not UTF-8.
    static func decodeUTF8(_ bytes: [UInt8], path: String, startingAt start: Int, end: Int? = nil) throws -> String {
        let end = end ?? bytes.count
        if let bad = firstInvalidUTF8(bytes, start..<end) {
            throw TrainingDataError.notUTF8(path: path, offset: bad)
        }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// The index of the first byte of `range` that does not start or continue a well-formed UTF-8 sequence.
    static func firstInvalidUTF8(_ bytes: [UInt8], _ range: Range<Int>) -> Int? {
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes[range].makeIterator()
        var offset = range.lowerBound
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded):
                offset += encoded.count
            case .emptyInput:
                return nil
            case .error:
                return offset
            }
        }
    }

    /// Parses JSONL: blank lines are skipped, line numbers count from 1.
    static func forEachJSONLine(_ bytes: [UInt8], path: String, field: String, _ body: (String) throws -> Void) throws {
        var lineStart = 0
        var lineNumber = 0
        while lineStart < bytes.count {
            let newline = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            lineNumber += 1
            defer { lineStart = newline + 1 }
            let line = try decodeUTF8(bytes, path: path, startingAt: lineStart, end: newline)
            if line.allSatisfy(\.isWhitespace) { continue }
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed])
            } catch {
                throw TrainingDataError.invalidJSONLine(path: path, line: lineNumber, reason: "not valid JSON")
            }
            guard let dictionary = object as? [String: Any] else {
                throw TrainingDataError.invalidJSONLine(path: path, line: lineNumber, reason: "a JSON value that is not an object")
            }
            guard let text = dictionary[field] as? String else {
                throw TrainingDataError.missingTextField(path: path, line: lineNumber, field: field)
            }
            try body(text)
        }
    }
}
