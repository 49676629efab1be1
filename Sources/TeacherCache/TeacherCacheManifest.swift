import Files
import Foundation

/// `manifest.json` of a teacher cache: what it was made from (the key a trainer checks), its shards
/// and their digests, and its size.
public struct TeacherCacheManifest: Codable, Equatable, Sendable {
    public static let fileName = "manifest.json"
    public static let formatName = "kdgpu-teacher-cache"
    /// Version 3 counts each position's pairs in two bytes where its targets allow more than 255
    /// (`systematic:1000`), in one otherwise, as before; version 2 codes drawn targets' pairs
    /// (``DrawCoding``) with the id order kept beside the manifest; version 1 stored them
    /// fixed-width. Versions 1 and 2 are still read, and a stopped build of either continues as such.
    public static let currentVersion = 3
    public static let readableVersions = 1...currentVersion

    public struct Teacher: Codable, Equatable, Sendable {
        /// The path it was built from (for people; the digest is what is checked).
        public var path: String
        public var sha256: String
        public var vocabulary: Int
    }

    public struct Corpus: Codable, Equatable, Sendable {
        public var path: String
        /// Tokens of the whole corpus (the windows use the first `windows * seq_len`).
        public var tokens: Int
        /// SHA-256 of the token stream (little-endian int32s): the corpus as the tokenizer cut it.
        public var tokensSHA256: String

        enum CodingKeys: String, CodingKey { case path, tokens, tokensSHA256 = "tokens_sha256" }
    }

    public struct Shard: Codable, Equatable, Sendable {
        public var file: String
        public var firstWindow: Int
        public var windows: Int
        public var bytes: Int
        public var pairs: Int
        public var sha256: String

        enum CodingKeys: String, CodingKey { case file, firstWindow = "first_window", windows, bytes, pairs, sha256 }
    }

    public var format = formatName
    public var formatVersion = currentVersion
    public var teacher: Teacher
    public var corpus: Corpus
    /// SHA-256 of the cache's `tokenizer.json` (the teacher's tokenizer, kept beside the manifest).
    public var tokenizerSHA256: String
    public var seqLen: Int
    /// Windows of `seq_len` tokens cut from the corpus (window w is tokens `w*T ..< (w+1)*T`), all of
    /// them: training and validation alike.
    public var windows: Int
    public var windowsPerShard: Int
    /// The ``TeacherTargetSpec`` in its text form.
    public var targets: String
    /// The seed of the draws (`sampled:N`).
    public var seed: UInt64
    /// Bits per token id in the shards.
    public var idBits: Int
    public var shards: [Shard]
    /// False while a build is under way or was stopped; a trainer refuses an incomplete cache.
    public var complete: Bool
    /// `bf16` when the teacher's weight GEMMs ran in bf16; absent for fp32 (caches made before it existed are fp32).
    public var teacherPrecision: String?
    /// SHA-256 of `id-order.bin` (``TokenIDOrder``), present where the shards code drawn targets
    /// (format version 2 or 3 with `sampled:N` or `systematic:N`).
    public var idOrderSHA256: String?

    /// The teacher's GEMM precision, `fp32` or `bf16`.
    public var precisionName: String { teacherPrecision ?? "fp32" }

    /// Positions with a target: `seq_len - 1` per window.
    public var storedTokens: Int { windows * (seqLen - 1) }
    public var shardCount: Int { (windows + windowsPerShard - 1) / windowsPerShard }
    public var bytes: Int { shards.reduce(0) { $0 + $1.bytes } }
    public var pairs: Int { shards.reduce(0) { $0 + $1.pairs } }
    /// Bytes on disk per stored position, over the shards written so far.
    public var bytesPerToken: Double {
        let done = shards.reduce(0) { $0 + $1.windows } * (seqLen - 1)
        return done > 0 ? Double(bytes) / Double(done) : 0
    }

    enum CodingKeys: String, CodingKey {
        case format, formatVersion = "format_version", teacher, corpus, tokenizerSHA256 = "tokenizer_sha256", seqLen = "seq_len", windows
        case windowsPerShard = "windows_per_shard", targets, seed, idBits = "id_bits", shards, complete
        case teacherPrecision = "teacher_precision", idOrderSHA256 = "id_order_sha256"
    }

    /// Takes a stopped build's format version: a version 1 cache goes on with fixed-width pairs, so
    /// without an id order.
    mutating func continueInFormatVersion(_ version: Int) {
        formatVersion = version
        if version < 2 { idOrderSHA256 = nil }
    }

    /// What makes two caches interchangeable: the same teacher file, token stream, windowing,
    /// targets and draws. The differences from `other`, in words (empty when none).
    public func keyDifferences(from other: TeacherCacheManifest) -> [String] {
        var differences: [String] = []
        if teacher.sha256 != other.teacher.sha256 { differences.append("teacher \(teacher.path) (sha256 \(teacher.sha256.prefix(12))) vs \(other.teacher.path) (\(other.teacher.sha256.prefix(12)))") }
        if corpus.tokensSHA256 != other.corpus.tokensSHA256 { differences.append("corpus \(corpus.path) (\(corpus.tokens) tokens) vs \(other.corpus.path) (\(other.corpus.tokens) tokens)") }
        if seqLen != other.seqLen { differences.append("seq_len \(seqLen) vs \(other.seqLen)") }
        if targets != other.targets { differences.append("targets \(targets) vs \(other.targets)") }
        if seed != other.seed && targets.hasPrefix("sampled") { differences.append("seed \(seed) vs \(other.seed)") }
        if precisionName != other.precisionName { differences.append("teacher precision \(precisionName) vs \(other.precisionName)") }
        if formatVersion == other.formatVersion && idOrderSHA256 != other.idOrderSHA256 {
            differences.append("id order (\(TokenIDOrder.fileName), sha256 \((idOrderSHA256 ?? "none").prefix(12)) vs \((other.idOrderSHA256 ?? "none").prefix(12)))")
        }
        return differences
    }

    /// The manifest as pretty, key-sorted JSON with `bytes_per_token` added for people and tools.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var object = try JSONSerialization.jsonObject(with: encoder.encode(self)) as! [String: Any]
        object["bytes_per_token"] = (bytesPerToken * 100).rounded() / 100
        object["stored_tokens"] = storedTokens
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) + [10]
    }

    /// The manifest of the cache in `folder` (finished or not); errors name the folder or file.
    public static func read(folder path: String) throws -> TeacherCacheManifest {
        do {
            try FileChecks.requireReadableFolder(path, hint: "build one with `kdgpu teacher-cache build`")
        } catch let problem as FileProblem {
            throw TeacherCacheError.mismatch(folder: problem.path, reason: problem.reason)
        }
        let url = URL(fileURLWithPath: path).appendingPathComponent(fileName)
        guard FileChecks.kind(of: url.path) == .regularFile else {
            throw TeacherCacheError.mismatch(folder: path, reason: "no \(fileName) in it: this is not a teacher cache")
        }
        return try read(url)
    }

    /// Reads and checks a manifest (of a finished build or not); errors name the file.
    public static func read(_ url: URL) throws -> TeacherCacheManifest {
        func invalid(_ reason: String) -> TeacherCacheError { .invalid(file: url.path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: url.path) else { throw invalid("cannot be read") }
        let manifest: TeacherCacheManifest
        do {
            manifest = try JSONDecoder().decode(TeacherCacheManifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw invalid("required key \"\(key.stringValue)\" is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw invalid("key \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has a value of the wrong type")
        } catch {
            throw invalid("not valid JSON")
        }
        guard manifest.format == formatName else { throw invalid("format is '\(manifest.format)', not \(formatName)") }
        guard readableVersions.contains(manifest.formatVersion) else {
            throw invalid("format version \(manifest.formatVersion); this kdgpu reads versions \(readableVersions.lowerBound) to \(readableVersions.upperBound)")
        }
        guard manifest.seqLen >= 2, manifest.windows >= 1, manifest.windowsPerShard >= 1, manifest.teacher.vocabulary >= 1,
              manifest.idBits == CacheShard.idBits(vocabulary: manifest.teacher.vocabulary) else {
            throw invalid("seq_len, windows, windows_per_shard, vocabulary or id_bits is out of range")
        }
        guard let spec = try? TeacherTargetSpec(parsing: manifest.targets) else {
            throw invalid("targets '\(manifest.targets)' is none of \(TeacherTargetSpec.forms())")
        }
        guard spec.pairCountBytes == 1 || manifest.formatVersion >= 3 else {
            throw invalid("targets '\(manifest.targets)' allow more than \(TeacherTargetSpec.maximumNarrowPairs) pairs a position, which a cache of version \(manifest.formatVersion) cannot count")
        }
        let codesDraws = manifest.formatVersion >= 2 && spec.draws != nil
        guard (manifest.idOrderSHA256 != nil) == codesDraws else {
            throw invalid(codesDraws ? "required key \"id_order_sha256\" is missing" : "key \"id_order_sha256\" does not belong to a cache of version \(manifest.formatVersion) with \(manifest.targets) targets")
        }
        for (index, shard) in manifest.shards.enumerated() {
            let first = index * manifest.windowsPerShard
            guard shard.file == shardFileName(index), shard.firstWindow == first,
                  shard.windows == min(manifest.windowsPerShard, manifest.windows - first), shard.bytes > 0 else {
                throw invalid("shard \(index) (\(shard.file)) does not cover windows \(first)..<\(min(manifest.windows, first + manifest.windowsPerShard))")
            }
        }
        guard manifest.shards.count <= manifest.shardCount, !manifest.complete || manifest.shards.count == manifest.shardCount else {
            throw invalid("it lists \(manifest.shards.count) shards for \(manifest.windows) windows of \(manifest.windowsPerShard) a shard")
        }
        return manifest
    }

    public static func shardFileName(_ index: Int) -> String { String(format: "shard-%05d.bin", index) }
}
