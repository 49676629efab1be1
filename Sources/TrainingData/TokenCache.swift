import Files
import Foundation
import Tokenizer
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The token file: a 16-byte header, then the tokens as little-endian Int32.
///
///     bytes 0..<4    magic "KDTK"
///     bytes 4..<8    u32 version (1)
///     bytes 8..<16   u64 token count N
///     bytes 16..<16+4N  N × i32 token ids
public enum TokenFile {
    public static let magic: [UInt8] = Array("KDTK".utf8)
    public static let version: UInt32 = 1
    public static let headerSize = 16

    /// The file's bytes for `tokens`.
    public static func encode(_ tokens: [Int32]) -> [UInt8] {
        var bytes = magic
        bytes.reserveCapacity(headerSize + 4 * tokens.count)
        withUnsafeBytes(of: version.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(tokens.count).littleEndian) { bytes.append(contentsOf: $0) }
        for token in tokens {
            withUnsafeBytes(of: token.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// Reads a token file, checking its magic, version and that its size is exactly the header plus 4 bytes per token.
    public static func read(from url: URL) throws -> [Int32] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TrainingDataError.unreadable(path: url.path, reason: FileChecks.describe(error))
        }
        return try decode([UInt8](data), path: url.path)
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> [Int32] {
        guard bytes.count >= headerSize, Array(bytes[0..<4]) == magic else {
            throw TrainingDataError.invalidTokenFile(path: path, reason: "it does not start with \"KDTK\"")
        }
        func integer<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        let fileVersion = integer(4, UInt32.self)
        guard fileVersion == version else {
            throw TrainingDataError.invalidTokenFile(path: path, reason: "version \(fileVersion), this build reads version \(version)")
        }
        let count = integer(8, UInt64.self)
        guard count <= UInt64(bytes.count - headerSize) / 4, headerSize + 4 * Int(count) == bytes.count else {
            throw TrainingDataError.invalidTokenFile(path: path, reason: "its header says \(count) tokens but the file is \(bytes.count) bytes")
        }
        return bytes.withUnsafeBytes { raw in
            (0..<Int(count)).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: headerSize + 4 * $0, as: Int32.self)) }
        }
    }

    /// Writes atomically: a temporary file in the same folder, fsync, rename.
    public static func write(_ tokens: [Int32], to url: URL) throws {
        let path = url.path
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func failure() -> TrainingDataError { .cacheWriteFailed(path: path, reason: String(cString: strerror(errno))) }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw failure() }
        do {
            defer { close(fd) }
            let bytes = encode(tokens)
            var written = 0
            try bytes.withUnsafeBytes { buffer in
                while written < buffer.count {
                    let result = systemWrite(fd, buffer.baseAddress! + written, buffer.count - written)
                    if result < 0 && errno == EINTR { continue }
                    guard result > 0 else { throw failure() }
                    written += result
                }
            }
            guard fsync(fd) == 0 else { throw failure() }
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = failure()
            unlink(temporary)
            throw error
        }
    }
}

/// What changes the tokens besides the text and the tokenizer.
public struct TokenizationOptions: Equatable, Sendable {
    /// Put the tokenizer's EOS token between documents (when it has one), so the model sees where texts end.
    public var separateDocumentsWithEOS: Bool
    /// Match control tokens such as `<|im_start|>` in the text (``BPETokenizer/encode(_:addBOS:parseSpecial:)``).
    public var parseSpecialTokens: Bool

    public init(separateDocumentsWithEOS: Bool = true, parseSpecialTokens: Bool = false) {
        self.separateDocumentsWithEOS = separateDocumentsWithEOS
        self.parseSpecialTokens = parseSpecialTokens
    }
}

/// A corpus's tokens and where they came from.
public struct TokenizedCorpus {
    /// All documents' tokens, joined with EOS between documents when the options ask for it.
    public let tokens: [Int32]
    /// The cache file holding them.
    public let cacheFile: URL
    /// True when the tokens were read from the cache file and no text was tokenized.
    public let loadedFromCache: Bool
    /// Documents tokenized by this call (0 when loaded from the cache).
    public let documentsTokenized: Int
}

/// Tokenizes corpora once and keeps the tokens in `directory` (default `cache/tokens/`), one file
/// per (tokenizer, input files, options), named by a SHA-256 key of all three:
///
/// - the tokenizer: its token strings and types, merge rules, pre-tokenizer name and BOS/EOS ids;
/// - the inputs: the format (text or JSONL and its field), each file's absolute path, size and
///   modification time (so editing or touching a file re-tokenizes);
/// - the ``TokenizationOptions``.
///
/// ```swift
/// let cache = TokenCache()
/// let corpus = try cache.tokens(for: Corpus(path: "cache/corpus/plays"), tokenizer: tokenizer)
/// let dataset = try TokenDataset(tokens: corpus.tokens, sequenceLength: 256, seed: 1)
/// ```
public struct TokenCache: Sendable {
    public static let defaultDirectory = URL(fileURLWithPath: "cache/tokens", isDirectory: true)
    public let directory: URL

    public init(directory: URL = TokenCache.defaultDirectory) {
        self.directory = directory
    }

    /// The hex SHA-256 that names the cache file for these inputs.
    public func key(for corpus: Corpus, tokenizer: BPETokenizer, options: TokenizationOptions = TokenizationOptions()) -> String {
        var hash = SHA256()
        hash.update(field: "kdgpu token cache v\(TokenFile.version)")
        // Tokenizer identity.
        hash.update(integer: UInt64(tokenizer.tokens.count))
        for token in tokenizer.tokens { hash.update(field: token) }
        for type in tokenizer.tokenTypes { hash.update(integer: UInt64(UInt32(bitPattern: type.rawValue))) }
        hash.update(integer: UInt64(tokenizer.mergeRules.count))
        for merge in tokenizer.mergeRules { hash.update(field: merge) }
        hash.update(field: tokenizer.preTokenizer.rawValue)
        hash.update(integer: tokenizer.bosTokenID.map { UInt64($0) } ?? UInt64.max)
        hash.update(integer: tokenizer.eosTokenID.map { UInt64($0) } ?? UInt64.max)
        // Inputs.
        switch corpus.format {
        case .text: hash.update(field: "text")
        case .jsonLines(let field): hash.update(field: "jsonl"); hash.update(field: field)
        }
        hash.update(integer: UInt64(corpus.files.count))
        for file in corpus.files {
            hash.update(field: file.path)
            hash.update(integer: UInt64(file.size))
            hash.update(integer: UInt64(bitPattern: file.modificationTime))
        }
        // Options.
        hash.update(integer: options.separateDocumentsWithEOS ? 1 : 0)
        hash.update(integer: options.parseSpecialTokens ? 1 : 0)
        return hash.finalizeHex()
    }

    /// The cache file for these inputs (it may not exist yet).
    public func cacheFile(for corpus: Corpus, tokenizer: BPETokenizer, options: TokenizationOptions = TokenizationOptions()) -> URL {
        directory.appendingPathComponent(String(key(for: corpus, tokenizer: tokenizer, options: options).prefix(32)) + ".tokens")
    }

    /// The corpus's tokens: read from the cache file when it exists and is valid, else tokenized
    /// and written to it (atomically, so an interrupted run never leaves a partial cache file).
    public func tokens(for corpus: Corpus, tokenizer: BPETokenizer,
                       options: TokenizationOptions = TokenizationOptions()) throws -> TokenizedCorpus {
        let file = cacheFile(for: corpus, tokenizer: tokenizer, options: options)
        if FileManager.default.fileExists(atPath: file.path), let cached = try? TokenFile.read(from: file) {
            return TokenizedCorpus(tokens: cached, cacheFile: file, loadedFromCache: true, documentsTokenized: 0)
        }
        let (tokens, documents) = try Self.tokenize(corpus, tokenizer: tokenizer, options: options)
        try TokenFile.write(tokens, to: file)
        return TokenizedCorpus(tokens: tokens, cacheFile: file, loadedFromCache: false, documentsTokenized: documents)
    }

    /// Tokenizes every document, joining documents with EOS when asked and the tokenizer has one.
    public static func tokenize(_ corpus: Corpus, tokenizer: BPETokenizer,
                                options: TokenizationOptions = TokenizationOptions()) throws -> (tokens: [Int32], documents: Int) {
        var tokens: [Int32] = []
        var documents = 0
        var nonEmptyDocuments = 0
        try corpus.forEachDocument { document, file in
            let ids: [Int32]
            do {
                ids = try tokenizer.encode(document, parseSpecial: options.parseSpecialTokens)
            } catch {
                throw TrainingDataError.tokenizationFailed(path: file.path, reason: "\(error)")
            }
            documents += 1
            guard !ids.isEmpty else { return }
            if nonEmptyDocuments > 0, options.separateDocumentsWithEOS, let eos = tokenizer.eosTokenID {
                tokens.append(eos)
            }
            tokens.append(contentsOf: ids)
            nonEmptyDocuments += 1
        }
        guard !tokens.isEmpty else {
            throw TrainingDataError.emptyCorpus(path: corpus.path, reason: documents == 0 ? "it holds no documents" : "its \(documents) documents hold no text")
        }
        return (tokens, documents)
    }
}

/// write(2), named apart from ``TokenFile/write(_:to:)``.
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}
