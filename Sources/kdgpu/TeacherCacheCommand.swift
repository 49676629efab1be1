import ArgumentParser
import CPUBackend
import Foundation
import TeacherCache
import Tensor
import Tokenizer
import Training
import TrainingData

/// `kdgpu teacher-cache`: the teacher's targets made once, for training without the teacher.
struct TeacherCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher-cache",
        abstract: "Run the teacher once over a corpus and keep its sparse next-token targets (top-k, top-p or sampled).",
        subcommands: [Build.self, Show.self])

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build a teacher cache: the teacher's targets for every window of the corpus.",
            discussion: """
            Targets: topk:K keeps the K most likely ids with their probabilities and the tail mass; topp:P,K the \
            smallest such prefix reaching mass P (at most K); sampled:N draws N ids from the teacher's distribution \
            (RS-KD) and keeps the unique ids with their counts, an unbiased estimate; systematic:N takes the N draws at \
            evenly spaced points of the cumulative distribution behind one random offset: still unbiased, with each \
            count within one of N p, so far less noise at the same size. Drawn ids are coded by their rank in the \
            corpus's token frequencies (about 1.2-1.4 bytes a pair on Shakespeare); K and N go up to 65535. The \
            default, \(TeacherTargetSpec.recommended), took 273 bytes a token on the whole corpus of plays and trained a student to \
            0.13% of live distillation's perplexity there (systematic:120: 69 bytes, 1.4%; systematic:250: 113 bytes, \
            1.2%; on one folder of plays systematic:120 came to 0.4%, systematic:50 to 2.2%; README, Ablation). \
            Every position also keeps the \
            teacher's log-probability of the token that follows. Shards are written atomically and listed in \
            DIR/manifest.json as they land: run the same command again to continue a stopped build. Under \
            `mpirun -np N` the ranks build every N-th shard each, rank 0 writing the manifest; DIR must be one folder all \
            of them reach.
            """)

        @Option(name: .long, help: ArgumentHelp("The teacher GGUF.", valueName: "file.gguf"))
        var teacher = TrainingConfig().teacher
        @Option(name: .long, help: ArgumentHelp("Text file, folder of .txt/.md files, or JSONL (as kdgpu train reads it).", valueName: "path"))
        var data = TrainingConfig().data
        @Option(name: .long, parsing: .unconditional, help: "Tokens per window (the training run's --seq-len).")
        var seqLen = TrainingConfig().seqLen
        @Option(name: .long, help: ArgumentHelp("topk:K, topp:P,K, sampled:N or systematic:N.", valueName: "spec"))
        var targets = TeacherTargetSpec.recommended.description
        @Option(name: .long, parsing: .unconditional, help: "Seed of the draws (sampled:N, systematic:N).")
        var seed: UInt64 = 0
        @Option(name: .long, parsing: .unconditional, help: "Windows per teacher forward.")
        var batchSize = 4
        @Option(name: .long, parsing: .unconditional, help: "Windows per shard file.")
        var windowsPerShard = 64
        @Option(name: .long, help: ArgumentHelp("cpu, opencl, opencl:P:D, or a device-name substring; under mpirun a comma-separated list, rank r taking entry r mod count.", valueName: "device"))
        var device = "opencl"
        @Option(name: .long, help: ArgumentHelp("The cache folder (new, empty, or a stopped build of the same settings).", valueName: "DIR"))
        var out: String
        @Option(name: .long, help: ArgumentHelp("The teacher's weight GEMMs: fp32, bf16 (faster on CPUs with bf16 instructions) or f16; recorded in the manifest.",
                                                valueName: "precision"))
        var teacherPrecision = "fp32"

        func run() throws {
            do {
                let precision = try modelPrecision(teacherPrecision, flag: "--teacher-precision")
                let spec = try TeacherTargetSpec(parsing: targets)
                // Under mpirun every rank builds its share of the shards on its --device entry.
                let place = try RankPlace(device: device)
                try place.run {
                    let backend = try openBackend(place.device, cpu: try CPUBackend())
                    let printer = ProgressPrinter(interval: 10)
                    let build = TeacherCacheBuild(teacher: teacher, data: data, seqLen: seqLen, targets: spec, seed: seed, out: out,
                                                  batchSize: batchSize, windowsPerShard: windowsPerShard, teacherPrecision: precision)
                    let manifest = try build.run(backend: backend, world: place.world, log: place.writes ? printer.log : { _ in }) { p in
                        guard place.writes else { return }
                        printer.progress(String(format: "[%@] window %d/%d  %.0f tok/s  %.1f bytes/token  ETA %@", progressBar(p.windowsDone, of: p.windows),
                                                p.windowsDone, p.windows, p.tokensPerSecond, p.bytesPerToken, formatDuration(p.secondsLeft)))
                    }
                    printer.finish()
                    if place.writes { print(summary(of: manifest, folder: out)) }
                }
            } catch {
                fail(error)
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a teacher cache's manifest, or one window's tokens and targets.")

        @Argument(help: ArgumentHelp("The cache folder.", valueName: "DIR"))
        var folder: String
        @Option(name: .long, parsing: .unconditional, help: "Print this window's tokens and, per position, the stored distribution.")
        var window: Int?
        @Flag(name: .long, help: "Print JSON.")
        var json = false

        func run() throws {
            do {
                guard let window else {
                    let manifest = try TeacherCacheManifest.read(folder: folder)
                    if json {
                        let object = try JSONSerialization.jsonObject(with: Data(manifest.encoded()))
                        print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
                    } else {
                        print(summary(of: manifest, folder: folder))
                    }
                    return
                }
                let cache = try TeacherCache(folder: folder)
                let targets = try cache.targets(ofWindow: window)
                // The tokens are the corpus's: read again (from the token cache) and checked against the manifest.
                let corpusPath = cache.manifest.corpus.path
                let corpusTokens = try TokenCache().tokens(for: try Corpus(path: corpusPath), tokenizer: try BPETokenizer(gguf: cache.tokenizer)).tokens
                try cache.checkCorpus(tokens: corpusTokens, path: corpusPath)
                let seqLen = cache.manifest.seqLen
                let tokens = Array(corpusTokens[window * seqLen..<(window + 1) * seqLen])
                let rows: [[String: Any]] = targets.map { target in
                    ["pairs": target.probabilities(spec: cache.spec).map { [Int($0.id), Double($0.probability)] },
                     "tail_mass": Double(target.tailMass), "label_log_probability": Double(target.labelLogProbability)]
                }
                if json {
                    let object: [String: Any] = ["window": window, "tokens": tokens.map(Int.init), "targets": rows, "spec": cache.manifest.targets]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
                } else {
                    print("window \(window) of \(cache.manifest.windows) (\(cache.manifest.targets)): position, next token, its teacher log-probability, the stored pairs")
                    for (position, target) in targets.enumerated() {
                        let pairs = target.probabilities(spec: cache.spec).prefix(5).map { String(format: "%d:%.3f", $0.id, $0.probability) }
                        print(String(format: "%5d  %6d  %8.3f  ", position, tokens[position + 1], target.labelLogProbability)
                              + pairs.joined(separator: " ") + (target.ids.count > 5 ? " ... (\(target.ids.count))" : "")
                              + (cache.spec.storesProbabilities ? String(format: "  tail %.3f", target.tailMass) : ""))
                    }
                }
            } catch {
                fail(error)
            }
        }
    }
}

/// A few lines on a cache: what it was made from, how far it is, its size.
func summary(of manifest: TeacherCacheManifest, folder: String) -> String {
    let state = manifest.complete ? "complete" : "incomplete (\(manifest.shards.count) of \(manifest.shardCount) shards; run the build again to finish it)"
    let done = manifest.shards.reduce(0) { $0 + $1.windows } * (manifest.seqLen - 1)
    return """
    teacher cache \(folder): \(state)
      teacher:  \(manifest.teacher.path) (sha256 \(manifest.teacher.sha256.prefix(16)), vocabulary \(manifest.teacher.vocabulary), \(manifest.precisionName) GEMMs)
      corpus:   \(manifest.corpus.path), \(manifest.corpus.tokens) tokens (sha256 \(manifest.corpus.tokensSHA256.prefix(16)))
      windows:  \(manifest.windows) of \(manifest.seqLen) tokens, \(manifest.windowsPerShard) a shard
      targets:  \(manifest.targets)\(((try? TeacherTargetSpec(parsing: manifest.targets))?.draws != nil) ? " (seed \(manifest.seed))" : ""), \
    \(String(format: "%.1f", done > 0 ? Double(manifest.pairs) / Double(done) : 0)) pairs a position\(manifest.idOrderSHA256 == nil ? "" : ", coded by the ids' corpus ranks")
      size:     \(formatBytes(manifest.bytes)), \(String(format: "%.1f", manifest.bytesPerToken)) bytes/token over \(done) positions
    """
}
