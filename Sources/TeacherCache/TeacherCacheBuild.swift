import Checkpoint
import Files
import Foundation
import GGUF
import Models
import ProcessGroup
import Tensor
import Tokenizer
import TrainingData

/// Runs the teacher once over a corpus's windows and stores each position's sparse target
/// (``TeacherTargetSpec``) in shards of `windowsPerShard` windows, each written atomically and
/// listed in the manifest as it lands, so a killed build continues where it stopped.
///
/// Under `mpirun` every rank runs the teacher on its own device and builds every N-th shard (rank r
/// takes shards r, r + N, ... of each round of N); rank 0 alone prepares the folder and writes the
/// manifest, from the shards' entries every rank contributes after each round. The shards are the
/// same files one process would write (the draws are seeded by position), so a build stopped under
/// one world size continues under another.
///
/// ```swift
/// let build = TeacherCacheBuild(teacher: "teacher.gguf", data: "plays/", seqLen: 128, targets: .sampled(draws: 50), out: "targets")
/// let manifest = try build.run(backend: backend, log: { print($0) }, progress: { _ in })
/// ```
public struct TeacherCacheBuild {
    public var teacher: String
    public var data: String
    public var seqLen: Int
    public var targets: TeacherTargetSpec
    public var seed: UInt64
    public var out: String
    /// Windows per teacher forward.
    public var batchSize: Int
    public var windowsPerShard: Int
    /// The teacher's weight GEMMs: `.f32`, `.bf16` or `.f16` (``LlamaModel/precision``; recorded in the manifest).
    public var teacherPrecision: DType

    public init(teacher: String, data: String, seqLen: Int, targets: TeacherTargetSpec, seed: UInt64 = 0, out: String,
                batchSize: Int = 4, windowsPerShard: Int = 64, teacherPrecision: DType = .f32) {
        self.teacherPrecision = teacherPrecision
        self.teacher = teacher
        self.data = data
        self.seqLen = seqLen
        self.targets = targets
        self.seed = seed
        self.out = out
        self.batchSize = batchSize
        self.windowsPerShard = windowsPerShard
    }

    /// How far a build is, after each batch.
    public struct Progress {
        public var windowsDone: Int
        public var windows: Int
        /// Tokens through the teacher per second in this run so far.
        public var tokensPerSecond: Double
        public var secondsLeft: Double
        public var bytesPerToken: Double
    }

    /// - Parameter world: the ranks building together under mpirun; nil alone.
    public func run(backend: any Backend, world: MPIWorld? = nil, log: (String) -> Void, progress: (Progress) -> Void) throws -> TeacherCacheManifest {
        // Settings and inputs first, before the teacher's weights load.
        func bad(_ message: String) -> TeacherCacheError { .badInput(message) }
        guard seqLen >= 2 else { throw bad("seq_len (--seq-len): \(seqLen) is out of range; use an integer of at least 2") }
        guard batchSize >= 1 else { throw bad("batch_size (--batch-size): \(batchSize) is out of range; use an integer of at least 1") }
        guard (1...4096).contains(windowsPerShard) else { throw bad("--windows-per-shard: \(windowsPerShard) is out of range; use 1 to 4096") }
        do {
            try FileChecks.requireReadableFile(teacher, hint: "run `make teacher` or pass --teacher FILE.gguf")
        } catch let problem as FileProblem {
            throw bad("teacher (--teacher): \(problem)")
        }
        let teacherFile = try GGUFFile(path: teacher)
        let config = try LlamaConfig(gguf: teacherFile)
        guard seqLen <= config.contextLength else {
            throw bad("seq_len (--seq-len): \(seqLen) exceeds the teacher's context length \(config.contextLength)")
        }
        let tokenizerMetadata = GGUFMetadata.tokenizer(of: teacherFile)
        let tokenizer = try BPETokenizer(gguf: teacherFile)
        let tokenizerFiles = try HuggingFaceTokenizer.files(for: tokenizerMetadata, modelMaxLength: config.contextLength)
        let corpus = try Corpus(path: data)
        let tokens = try TokenCache().tokens(for: corpus, tokenizer: tokenizer).tokens
        let windows = tokens.count / seqLen
        guard windows >= 1 else {
            throw bad("\(data): \(tokens.count) tokens make no window of \(seqLen); use more text or a smaller --seq-len")
        }
        let tokenizerJSON = tokenizerFiles.first { $0.name == HuggingFaceTokenizer.tokenizerFileName }!.contents
        var manifest = TeacherCacheManifest(
            teacher: .init(path: teacher, sha256: try SHA256Digest.file(at: teacher), vocabulary: config.vocabulary),
            corpus: .init(path: data, tokens: tokens.count, tokensSHA256: tokens.withUnsafeBytes { SHA256Digest.hex(of: $0) }),
            tokenizerSHA256: SHA256Digest.hex(of: tokenizerJSON), seqLen: seqLen, windows: windows, windowsPerShard: windowsPerShard,
            targets: targets.description, seed: seed, idBits: CacheShard.idBits(vocabulary: config.vocabulary), shards: [], complete: false,
            teacherPrecision: teacherPrecision == .f32 ? nil : teacherPrecision.rawValue)
        // Drawn targets' ids are coded by their rank in the corpus's token frequencies (DrawCoding);
        // the manifest's id_order_sha256 says whether the shards use it.
        let corpusOrder = targets.draws == nil ? nil : TokenIDOrder(frequenciesOf: tokens, vocabulary: config.vocabulary)
        let idOrderBytes = corpusOrder?.encoded()
        manifest.idOrderSHA256 = idOrderBytes.map { SHA256Digest.hex(of: $0) }

        // The folder: new, or a cache of the same key to continue. Rank 0 alone reads and prepares
        // it; the others learn where the build stands from it.
        let rank = world?.rank ?? 0
        let folder = URL(fileURLWithPath: out, isDirectory: true)
        let writer = DurableFileWriter()
        let manifestURL = folder.appendingPathComponent(TeacherCacheManifest.fileName)
        var complete = false
        if rank == 0 {
            do { try FileChecks.createFolder(out) } catch let problem as FileProblem { throw bad("out (--out): \(problem)") }
            if FileChecks.kind(of: manifestURL.path) != .missing {
                let existing = try TeacherCacheManifest.read(manifestURL)
                let differences = existing.keyDifferences(from: manifest)
                guard differences.isEmpty else {
                    throw TeacherCacheError.mismatch(folder: out, reason: "holds a cache made differently (\(differences.joined(separator: "; "))); choose another --out or delete it")
                }
                // A stopped build keeps its own shard size and format, whatever --windows-per-shard says now
                // (a version 1 cache goes on with fixed-width pairs; a version 2 one's order is the same
                // corpus's, so the same order).
                manifest.windowsPerShard = existing.windowsPerShard
                manifest.continueInFormatVersion(existing.formatVersion)
                manifest.shards = try verifiedShards(existing, in: folder)
                if existing.complete && manifest.shards.count == manifest.shardCount {
                    log("teacher-cache: \(out) is complete already (\(manifest.windows) windows, \(String(format: "%.1f", existing.bytesPerToken)) bytes/token)")
                    manifest = existing
                    complete = true
                } else {
                    log("teacher-cache: continuing \(out) at shard \(manifest.shards.count) of \(manifest.shardCount)")
                }
            } else if let entries = try? FileManager.default.contentsOfDirectory(atPath: out), !entries.isEmpty {
                throw bad("out (--out): \(out) is a folder with other files in it; give a new or empty folder")
            }
            if !complete {
                for file in tokenizerFiles {
                    try writer.writeFileAtomically(at: folder.appendingPathComponent(file.name)) { try $0.write(file.contents) }
                }
                if let idOrderBytes, manifest.idOrderSHA256 != nil {
                    try writer.writeFileAtomically(at: folder.appendingPathComponent(TokenIDOrder.fileName)) { try $0.write(idOrderBytes) }
                }
                try writeManifest(manifest, to: manifestURL, writer: writer)
            }
        }
        var firstShard = manifest.shards.count
        if let world {
            var state = rank == 0 ? [Double(manifest.shards.count), Double(manifest.windowsPerShard), complete ? 1 : 0, Double(manifest.formatVersion)] : [0, 0, 0, 0]
            try world.allReduceSum(&state)
            if rank != 0 {
                manifest.windowsPerShard = Int(state[1])
                complete = state[2] != 0
                manifest.continueInFormatVersion(Int(state[3]))
            }
            firstShard = Int(state[0])
        }
        if complete { return manifest }
        return try buildShards(from: firstShard, manifest: manifest, idOrder: manifest.idOrderSHA256 == nil ? nil : corpusOrder, world: world, teacherFile: teacherFile, backend: backend,
                               tokens: tokens, folder: folder, writer: writer, log: log, progress: progress)
    }

    /// Shards `first...` built (under mpirun: this rank's share, each round's entries gathered to
    /// rank 0), listed in the manifest as they land, and the manifest completed.
    func buildShards(from firstShard: Int, manifest: TeacherCacheManifest, idOrder: TokenIDOrder?, world: MPIWorld?, teacherFile: GGUFFile, backend: any Backend, tokens: [Int32],
                     folder: URL, writer: DurableFileWriter, log: (String) -> Void, progress: (Progress) -> Void) throws -> TeacherCacheManifest {
        var manifest = manifest
        let rank = world?.rank ?? 0, ranks = world?.size ?? 1, windows = manifest.windows
        let manifestURL = folder.appendingPathComponent(TeacherCacheManifest.fileName)
        log("teacher-cache: \(targets) targets of \(windows) windows of \(seqLen) tokens (\(tokens.count) tokens) from \(teacher) on \(backend.name)"
            + (teacherPrecision == .f32 ? "" : " (\(teacherPrecision.rawValue) GEMMs)") + (ranks > 1 ? ", \(ranks) processes (mpirun) building every \(ranks)th shard" : "")
            + ", into \(out)")
        // The teacher's matrices expanded once where that fits (as `kdgpu train`'s teacher_weights auto):
        // the same values as expanding them at every forward, without the work.
        let model = try LlamaModel(weights: LlamaWeights(gguf: teacherFile, backend: backend), precision: teacherPrecision).expandedWhereItFits()
        let maker = SparseTargetMaker(spec: targets, seqLen: seqLen, seed: seed)
        let start = DispatchTime.now().uptimeNanoseconds
        var windowsThisRun = 0
        let windowsPerShard = manifest.windowsPerShard, windowsBefore = firstShard * windowsPerShard
        for round in stride(from: firstShard, to: manifest.shardCount, by: ranks) {
            // This rank's shard of the round, if the round has one for it.
            var entry: TeacherCacheManifest.Shard?
            let shardIndex = round + rank
            if shardIndex < manifest.shardCount {
                let first = shardIndex * windowsPerShard, count = min(windowsPerShard, windows - first)
                var shard = CacheShard(firstWindow: first, seqLen: seqLen, targets: [])
                for batchStart in stride(from: first, to: first + count, by: batchSize) {
                    let batch = (batchStart..<min(first + count, batchStart + batchSize)).map { Array(tokens[$0 * seqLen..<($0 + 1) * seqLen]) }
                    shard.targets += try maker.targets(of: batch, windows: Array(batchStart..<batchStart + batch.count), model: model)
                    windowsThisRun += batch.count
                    // Progress as rank 0 sees it: every rank goes at about its pace.
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    let done = min(windows, windowsBefore + windowsThisRun * ranks)
                    progress(Progress(windowsDone: done, windows: windows, tokensPerSecond: Double(windowsThisRun * ranks * seqLen) / seconds,
                                      secondsLeft: seconds / Double(windowsThisRun * ranks) * Double(windows - done), bytesPerToken: manifest.bytesPerToken))
                }
                let bytes = shard.encoded(idBits: manifest.idBits, storesProbabilities: targets.storesProbabilities,
                                          pairCountBytes: targets.pairCountBytes, idOrder: idOrder)
                let name = TeacherCacheManifest.shardFileName(shardIndex)
                try writer.writeFileAtomically(at: folder.appendingPathComponent(name)) { try $0.write(bytes) }
                entry = .init(file: name, firstWindow: first, windows: count, bytes: bytes.count,
                              pairs: shard.targets.joined().reduce(0) { $0 + $1.ids.count }, sha256: SHA256Digest.hex(of: bytes))
            }
            let entries = try world.map { try Self.gather(entry, round: round, world: $0, windowsPerShard: windowsPerShard) } ?? [entry!]
            manifest.shards += entries
            if rank == 0 { try writeManifest(manifest, to: manifestURL, writer: writer) }
        }
        manifest.complete = true
        if rank == 0 { try writeManifest(manifest, to: manifestURL, writer: writer) }
        return manifest
    }

    /// Every rank's shard entry of a round, in shard order, on every rank: each rank's (windows,
    /// bytes, pairs, SHA-256 as eight 32-bit words) in its slot of one all-reduced sum (exact in fp64).
    static func gather(_ entry: TeacherCacheManifest.Shard?, round: Int, world: MPIWorld, windowsPerShard: Int) throws -> [TeacherCacheManifest.Shard] {
        let fields = 11
        var values = [Double](repeating: 0, count: world.size * fields)
        if let entry {
            let digest = stride(from: 0, to: 64, by: 8).map { offset -> Double in
                let start = entry.sha256.index(entry.sha256.startIndex, offsetBy: offset)
                return Double(UInt32(entry.sha256[start..<entry.sha256.index(start, offsetBy: 8)], radix: 16)!)
            }
            values.replaceSubrange(world.rank * fields..<(world.rank + 1) * fields, with: [Double(entry.windows), Double(entry.bytes), Double(entry.pairs)] + digest)
        }
        try world.allReduceSum(&values)
        return (0..<world.size).compactMap { slot -> TeacherCacheManifest.Shard? in
            let field = Array(values[slot * fields..<(slot + 1) * fields])
            guard field[0] > 0 else { return nil }  // no shard for this rank in the last round
            let index = round + slot
            return .init(file: TeacherCacheManifest.shardFileName(index), firstWindow: index * windowsPerShard, windows: Int(field[0]),
                         bytes: Int(field[1]), pairs: Int(field[2]),
                         sha256: field[3...].map { String(format: "%08x", UInt32($0)) }.joined())
        }
    }

    /// The shards of an unfinished build whose files are whole, up to the first that is not.
    func verifiedShards(_ manifest: TeacherCacheManifest, in folder: URL) throws -> [TeacherCacheManifest.Shard] {
        var kept: [TeacherCacheManifest.Shard] = []
        for shard in manifest.shards {
            guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(shard.file).path),
                  data.count == shard.bytes, SHA256Digest.hex(of: [UInt8](data)) == shard.sha256 else { break }
            kept.append(shard)
        }
        return kept
    }

    func writeManifest(_ manifest: TeacherCacheManifest, to url: URL, writer: DurableFileWriter) throws {
        let bytes = try manifest.encoded()
        try writer.writeFileAtomically(at: url) { try $0.write(bytes) }
    }
}
