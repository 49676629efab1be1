import Files
import Foundation
import GGUF
import Tokenizer

/// A finished teacher cache, opened for reading: its manifest, its tokenizer and each window's
/// sparse targets (the windows' tokens are the corpus's: ``checkCorpus(tokens:path:)``).
///
/// ```swift
/// let cache = try TeacherCache(folder: "cache/targets")
/// try cache.checkCorpus(tokens: corpusTokens, path: "plays/")
/// let targets = try cache.targets(ofWindow: 12)   // seq_len - 1 positions
/// ```
public final class TeacherCache {
    public let folder: URL
    public let manifest: TeacherCacheManifest
    public let spec: TeacherTargetSpec
    /// The teacher's tokenizer as GGUF metadata (from the cache's tokenizer.json).
    public let tokenizer: GGUFMetadata
    /// The order drawn targets' ids are coded in (format versions 2 and 3); nil where pairs are fixed-width.
    let idOrder: TokenIDOrder?
    /// The shards read so far, each read and checked once (training reads windows in shuffled
    /// order, a few from each shard at a time); their bytes stay in memory, the size of the cache.
    private var shards: [Int: CacheShardView] = [:]
    /// Guards `shards`: a batch's windows are read on several threads at once.
    private let shardsLock = NSLock()

    /// Opens a complete cache; an incomplete, damaged or edited one is a one-line error naming the file.
    public init(folder path: String) throws {
        manifest = try TeacherCacheManifest.read(folder: path)
        folder = URL(fileURLWithPath: path, isDirectory: true)
        guard manifest.complete else {
            throw TeacherCacheError.incomplete(folder: path, shards: manifest.shards.count, of: manifest.shardCount)
        }
        spec = try TeacherTargetSpec(parsing: manifest.targets)
        let tokenizerFile = folder.appendingPathComponent(HuggingFaceTokenizer.tokenizerFileName)
        guard let tokenizerBytes = FileManager.default.contents(atPath: tokenizerFile.path),
              SHA256Digest.hex(of: [UInt8](tokenizerBytes)) == manifest.tokenizerSHA256 else {
            throw TeacherCacheError.invalid(file: tokenizerFile.path, reason: "missing, or not the tokenizer the manifest names")
        }
        tokenizer = try HuggingFaceTokenizer.read(from: folder)
        let folder = folder, vocabulary = manifest.teacher.vocabulary
        idOrder = try manifest.idOrderSHA256.map { digest in
            let url = folder.appendingPathComponent(TokenIDOrder.fileName)
            guard let data = FileManager.default.contents(atPath: url.path), SHA256Digest.hex(of: [UInt8](data)) == digest else {
                throw TeacherCacheError.invalid(file: url.path, reason: "missing, or not the id order the manifest names")
            }
            return try TokenIDOrder.decode([UInt8](data), file: url.path, vocabulary: vocabulary)
        }
        for shard in manifest.shards {
            let url = folder.appendingPathComponent(shard.file)
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? nil
            guard FileChecks.kind(of: url.path) == .regularFile, size == shard.bytes else {
                throw TeacherCacheError.invalid(file: url.path, reason: size == nil ? "missing" : "\(size!) bytes, the manifest says \(shard.bytes) (truncated or replaced)")
            }
        }
    }

    /// Throws unless `tokens` (a corpus tokenized with the cache's tokenizer) are the token stream the
    /// cache was made from.
    public func checkCorpus(tokens: [Int32], path: String) throws {
        let digest = tokens.withUnsafeBytes { SHA256Digest.hex(of: $0) }
        guard digest == manifest.corpus.tokensSHA256 else {
            throw TeacherCacheError.mismatch(folder: folder.path, reason: "made from \(manifest.corpus.tokens) tokens of \(manifest.corpus.path) (sha256 "
                                             + "\(manifest.corpus.tokensSHA256.prefix(12))), but \(path) gives \(tokens.count) tokens (sha256 \(digest.prefix(12))); "
                                             + "give the corpus the cache was made from, or build a cache of this one")
        }
    }

    /// The targets of window `index`'s first `seq_len - 1` positions (safe to call from several threads at once).
    public func targets(ofWindow index: Int) throws -> [SparseTarget] {
        guard (0..<manifest.windows).contains(index) else {
            throw TeacherCacheError.mismatch(folder: folder.path, reason: "window \(index) is outside the cache's \(manifest.windows) windows (0 to \(manifest.windows - 1))")
        }
        let shardIndex = index / manifest.windowsPerShard
        let shard = try shardsLock.withLock {
            let shard = try shards[shardIndex] ?? readShard(shardIndex)
            shards[shardIndex] = shard
            return shard
        }
        return try shard.targets(ofWindow: index - shardIndex * manifest.windowsPerShard)
    }

    func readShard(_ index: Int) throws -> CacheShardView {
        let entry = manifest.shards[index]
        let url = folder.appendingPathComponent(entry.file)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TeacherCacheError.invalid(file: url.path, reason: "cannot be read")
        }
        let bytes = [UInt8](data)
        guard SHA256Digest.hex(of: bytes) == entry.sha256 else {
            throw TeacherCacheError.invalid(file: url.path, reason: "its SHA-256 is not the one in the manifest (damaged or edited)")
        }
        return try CacheShardView(bytes, file: url.path,
                                  expected: (entry.firstWindow, entry.windows, manifest.seqLen, manifest.idBits, spec.storesProbabilities, spec.pairCountBytes),
                                  vocabulary: manifest.teacher.vocabulary, idOrder: idOrder)
    }
}
