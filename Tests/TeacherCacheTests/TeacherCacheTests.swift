import Files
import Foundation
import GGUF
import Models
import TeacherCache
import Tensor
import TestSupport
import XCTest

/// Sparse teacher targets against independent references (a full sort, the fp64 numpy forward of
/// the tiny models, the teacher's own distribution for the draws), the shard format, and whole
/// caches: build, resume, read, and refuse what does not match.
final class TeacherCacheTests: XCTestCase {
    static let modelFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("ModelTests/Fixtures")
    static let tinyModel = modelFixtures.appendingPathComponent("tiny-llama-q8_0.gguf").path

    /// One row of log-probabilities of `logits`.
    static func logSoftmax(_ logits: [Double]) -> [Double] {
        let top = logits.max()!
        let total = logits.reduce(0.0) { $0 + exp($1 - top) }
        return logits.map { $0 - top - log(total) }
    }

    // MARK: Selection and draws

    /// Top-k (and top-p) selection equals the first k entries of a full sort by (value descending,
    /// id ascending) of the entries of probability above 0, on rows with ties, -inf entries and k
    /// above the row length.
    func testSelectionEqualsAFullSort() throws {
        var random = SeededRandom(seed: 7)
        for (n, k) in [(1, 1), (5, 8), (260, 8), (1031, 32), (4099, 255)] {
            for _ in 0..<4 {
                var row = random.normals(n, scale: 3).map { ($0 * 4).rounded() / 4 }  // ties on purpose
                for i in stride(from: 3, to: n, by: 7) { row[i] = -.infinity }
                let logProbabilities = Self.logSoftmax(row.map(Double.init)).map(Float.init)
                let sorted = logProbabilities.enumerated().filter { $0.element > -.infinity }.sorted { $0.element != $1.element ? $0.element > $1.element : $0.offset < $1.offset }
                let expected = sorted.prefix(k)
                var unused = SplitMix64(seed: 0)
                let probabilities = logProbabilities.map { expf($0) }
                let target = probabilities.withUnsafeBufferPointer {
                    SparseTarget.extract(probabilities: $0, label: n - 1, spec: .topK(k: k), random: &unused)
                }
                XCTAssertEqual(target.ids, expected.map { Int32($0.offset) }, "n \(n) k \(k)")
                for (value, reference) in zip(target.values, expected) { XCTAssertEqual(Double(value), exp(Double(reference.element)), accuracy: 1e-6) }
                let mass = expected.reduce(0.0) { $0 + exp(Double($1.element)) }
                XCTAssertEqual(Double(target.tailMass), max(0, 1 - mass), accuracy: 1e-5)
                XCTAssertEqual(target.labelLogProbability, logf(probabilities[n - 1]))
                // Top-p: the shortest prefix of the same order whose mass reaches p.
                let p = 0.6
                var prefix = 0, cumulative = 0.0
                while prefix < min(k, sorted.count) && cumulative < p { cumulative += exp(Double(sorted[prefix].element)); prefix += 1 }
                let cut = probabilities.withUnsafeBufferPointer {
                    SparseTarget.extract(probabilities: $0, label: 0, spec: .topP(p: Float(p), k: k), random: &unused)
                }
                XCTAssertEqual(cut.ids, Array(target.ids.prefix(prefix)), "top-p n \(n) k \(k)")
            }
        }
    }

    /// Both sampled specs are unbiased: over many positions, count / N converges to the teacher's
    /// probabilities (each within 5 standard errors of independent draws), and every position has
    /// exactly N draws as ascending unique ids. Systematic draws also give every id floor(N p) or
    /// ceil(N p) draws, which independent draws do not (the head's counts vary by several).
    func testSampledTargetsAreUnbiased() throws {
        let logits = (0..<40).map { Double($0 % 7) * 0.5 - Double($0) * 0.05 }
        let logProbabilities = Self.logSoftmax(logits).map(Float.init)
        let draws = 50, positions = 2000
        for spec in [TeacherTargetSpec.sampled(draws: draws), .systematic(draws: draws)] {
            var totals = [Double](repeating: 0, count: logits.count)
            var largestCountError = 0.0
            for position in 0..<positions {
                var random = SparseTargetMaker.random(seed: 3, window: position / 100, position: position % 100)
                let target = logProbabilities.map { expf($0) }.withUnsafeBufferPointer {
                    SparseTarget.extract(probabilities: $0, label: 0, spec: spec, random: &random)
                }
                XCTAssertEqual(target.values.reduce(0, +), Float(draws), "\(spec)")
                XCTAssertEqual(target.ids, target.ids.sorted(), "\(spec)")
                XCTAssertEqual(Set(target.ids).count, target.ids.count, "\(spec)")
                var counts = [Double](repeating: 0, count: logits.count)
                for (id, count) in zip(target.ids, target.values) { counts[Int(id)] = Double(count) }
                for (id, count) in counts.enumerated() {
                    totals[id] += count
                    largestCountError = max(largestCountError, abs(count - Double(draws) * exp(Double(logProbabilities[id]))))
                }
            }
            let n = Double(draws * positions)
            for (id, logProbability) in logProbabilities.enumerated() {
                let p = exp(Double(logProbability)), estimate = totals[id] / n
                let standardError = (p * (1 - p) / n).squareRoot()
                XCTAssertEqual(estimate, p, accuracy: 5 * standardError, "\(spec) id \(id)")
            }
            if case .systematic = spec {
                XCTAssertLessThan(largestCountError, 1 + 1e-4, "systematic draws: every count within one of N p")
            } else {
                XCTAssertGreaterThan(largestCountError, 3, "independent draws: the head's counts spread further")
            }
        }
    }

    /// The blocked sweep of the draws lands each point where a plain fp64 inverse-CDF search does,
    /// on rows of many blocks with zero entries (which never take a draw) and a zero last block.
    func testDrawsFollowTheInverseCumulativeDistribution() throws {
        var random = SplitMix64(seed: 11)
        for n in [5003, 256, 17, 49152] {
            var row = (0..<n).map { _ in random.uniform(below: 10) < 3 ? Float(0) : Float(random.unit() * random.unit()) }
            for id in max(0, n - 300)..<n { row[id] = 0 }
            row[0] = max(row[0], 1e-3)
            let points = (0..<200).map { _ in random.unit() }.sorted()
            let target = row.withUnsafeBufferPointer { SparseTarget.drawn($0, at: points, labelLogProbability: 0) }
            let total = row.reduce(0.0) { $0 + Double($1) }
            var expected: [Int32: Float] = [:], cumulative = 0.0, next = 0
            for (id, value) in row.enumerated() {
                cumulative += Double(value)
                while next < points.count && points[next] * total < cumulative { expected[Int32(id), default: 0] += 1; next += 1 }
            }
            XCTAssertEqual(next, points.count)
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: zip(target.ids, target.values)), expected, "n \(n)")
            XCTAssertEqual(target.ids, target.ids.sorted())
            XCTAssertTrue(target.ids.allSatisfy { row[Int($0)] > 0 }, "n \(n): a zero entry took a draw")
        }
    }

    // MARK: Against the fp64 reference forward

    /// The cached top-k of the tiny q8_0 model's 33-token reference sequence: each stored
    /// probability (fp16) equals the fp64 numpy forward's, the stored set holds the reference's
    /// top-k mass, and the tail mass and label log-probability agree; on both backends.
    func testTopKTargetsEqualTheFP64ReferenceForward() throws {
        struct Reference: Decodable {
            let sequences: [[Int32]]
            let models: [String: Model]
            struct Model: Decodable { let logits: [[[Double]]] }
        }
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.modelFixtures.appendingPathComponent("tiny-llama-reference.json")))
        let sequence = reference.sequences.max { $0.count < $1.count }!
        let logits = reference.models["q8_0"]!.logits[reference.sequences.firstIndex(of: sequence)!]
        for backend in try TestBackends.all() {
            let model = try LlamaModel(weights: LlamaWeights(gguf: GGUFFile(path: Self.tinyModel), backend: backend))
            for spec in [TeacherTargetSpec.topK(k: 8), .topP(p: 0.3, k: 16)] {
                let targets = try SparseTargetMaker(spec: spec, seqLen: sequence.count).targets(of: [sequence], windows: [0], model: model)[0]
                XCTAssertEqual(targets.count, sequence.count - 1)
                for (position, target) in targets.enumerated() {
                    let p = Self.logSoftmax(logits[position]).map { exp($0) }
                    let k = target.ids.count
                    for (id, value) in zip(target.ids, target.values) {
                        XCTAssertEqual(Double(value), p[Int(id)], accuracy: 2e-3 * p[Int(id)] + 1e-4, "\(backend.name) \(spec) position \(position) id \(id)")
                    }
                    let referenceTop = p.sorted(by: >).prefix(k).reduce(0, +)
                    let storedMass = target.ids.reduce(0.0) { $0 + p[Int($1)] }
                    XCTAssertEqual(storedMass, referenceTop, accuracy: 1e-3, "\(backend.name) \(spec) position \(position): not the top \(k)")
                    XCTAssertEqual(Double(target.tailMass), 1 - storedMass, accuracy: 2e-3)
                    XCTAssertEqual(Double(target.labelLogProbability), log(p[Int(sequence[position + 1])]), accuracy: 1e-3)
                    if case .topP(let cut, _) = spec, k < 16 {
                        XCTAssertGreaterThanOrEqual(storedMass, Double(cut) - 1e-3)
                        XCTAssertLessThan(storedMass - p[Int(target.ids.last!)], Double(cut) + 1e-3, "top-p kept more than it needed")
                    }
                }
            }
        }
    }

    // MARK: Shards

    /// Every layout round-trips, with one-byte pair counts and two-byte ones (format version 3:
    /// positions of more than 255 pairs, draws counted past 255).
    func testShardsRoundTripForEveryValueKindIDWidthAndCountWidth() throws {
        var random = SeededRandom(seed: 11)
        for (vocabulary, storesProbabilities, coded, countBytes) in [(260, true, false, 1), (49152, false, false, 1), (128256, true, false, 1), (128256, false, false, 1),
                                                                     (260, false, true, 1), (49152, false, true, 1), (128256, false, true, 1),
                                                                     (260, true, false, 2), (49152, false, true, 2)] {
            let bits = CacheShard.idBits(vocabulary: vocabulary)
            XCTAssertEqual(bits, vocabulary == 260 ? 9 : vocabulary == 49152 ? 16 : 17)
            // Coded draws: unique ascending ids (as drawn targets have them), ranked by a skewed corpus.
            let order = coded ? TokenIDOrder(frequenciesOf: (0..<3000).map { _ in Int32(random.uniform(below: 1 + random.uniform(below: vocabulary))) },
                                             vocabulary: vocabulary) : nil
            let targets = (0..<3).map { _ in
                (0..<9).map { position -> SparseTarget in
                    // Two-byte counts: a position past what one byte counts, and one that fills two bytes' worth of the vocabulary.
                    let count = countBytes == 1 ? random.uniform(below: 12) : [256, 300, 1000][position % 3] + random.uniform(below: 5)
                    var ids = (0..<count).map { _ in Int32(random.uniform(below: vocabulary)) }
                    if coded { ids = Array(Set(ids)).sorted() }
                    let values = ids.map { _ in storesProbabilities ? Float(Float16(Float(random.uniform(below: 1000)) / 1000))
                                                                    : Float(1 + random.uniform(below: coded ? (countBytes == 1 ? 255 : 1000) : 50)) }
                    return SparseTarget(ids: ids, values: values, tailMass: storesProbabilities ? Float(Float16(0.25)) : 0,
                                        labelLogProbability: Float(Float16(-Float(random.uniform(below: 2000)) / 100)))
                }
            }
            let shard = CacheShard(firstWindow: 6, seqLen: 10, targets: targets)
            let bytes = shard.encoded(idBits: bits, storesProbabilities: storesProbabilities, pairCountBytes: countBytes, idOrder: order)
            let expected = (firstWindow: 6, windows: 3, seqLen: 10, idBits: bits, storesProbabilities: storesProbabilities, pairCountBytes: countBytes)
            XCTAssertEqual(try CacheShard.decode(bytes, file: "s", expected: expected, vocabulary: vocabulary, idOrder: order), shard)
            XCTAssertThrowsError(try CacheShard.decode(Array(bytes.dropLast()), file: "s.bin", expected: expected, vocabulary: vocabulary, idOrder: order)) {
                XCTAssertTrue("\($0)".contains("s.bin") && "\($0)".contains("truncated"), "\($0)")
            }
            XCTAssertThrowsError(try CacheShard.decode(bytes, file: "s.bin", expected: (7, 3, 10, bits, storesProbabilities, countBytes), vocabulary: vocabulary, idOrder: order))
            // Its counts read at the other width do not add up to its pairs.
            XCTAssertThrowsError(try CacheShard.decode(bytes, file: "s.bin", expected: (6, 3, 10, bits, storesProbabilities, 3 - countBytes), vocabulary: vocabulary, idOrder: order)) {
                XCTAssertTrue("\($0)".contains("s.bin"), "\($0)")
            }
            if let order {
                // Read as the other layout, or with its codes damaged: refused, naming the file.
                XCTAssertThrowsError(try CacheShard.decode(bytes, file: "s.bin", expected: expected, vocabulary: vocabulary)) {
                    XCTAssertTrue("\($0)".contains("s.bin") && "\($0)".contains("other layout"), "\($0)")
                }
                var damaged = bytes
                damaged[damaged.count - 2] ^= 0x5a
                XCTAssertThrowsError(try CacheShard.decode(damaged, file: "s.bin", expected: expected, vocabulary: vocabulary, idOrder: order)) {
                    XCTAssertTrue("\($0)".contains("s.bin") && "\($0)".contains("do not decode"), "\($0)")
                }
            }
        }
    }

    /// The draw code on a case worked by hand: corpus tokens 5 5 5 2 2 7 over 8 ids rank them
    /// 5 2 7 0 1 3 4 6; ids 2, 5, 6 drawn 1, 3 and 1 times are ranks 1, 0, 7: gaps 0, 0, 5 in the
    /// order-0 code (order bits 0000; "1", "1", "00" "1" "01"), then counts - 1 = 2, 0, 0 ("0" "1" "1",
    /// "1", "1"): bits 0000 1 1 00101 011 1 1, least significant first 0x30 0xf5, after a one-position
    /// shard's header, count, label and code end (16 bits).
    func testDrawCodeOfACaseWorkedByHand() throws {
        let order = TokenIDOrder(frequenciesOf: [5, 5, 5, 2, 2, 7], vocabulary: 8)
        XCTAssertEqual(order.ids, [5, 2, 7, 0, 1, 3, 4, 6])
        let target = SparseTarget(ids: [2, 5, 6], values: [1, 3, 1], tailMass: 0, labelLogProbability: -2)
        let shard = CacheShard(firstWindow: 0, seqLen: 2, targets: [[target]])
        let bytes = shard.encoded(idBits: 3, storesProbabilities: false, pairCountBytes: 1, idOrder: order)
        XCTAssertEqual(Array(bytes.prefix(8)), Array("KDTCSHD2".utf8))
        XCTAssertEqual(Array(bytes.suffix(13)), [3, 0x00, 0xc0, 16, 0, 0, 0, 0, 0, 0, 0] + [0x30, 0xf5])
        XCTAssertEqual(try CacheShard.decode(bytes, file: "s.bin", expected: (0, 1, 2, 3, false, 1), vocabulary: 8, idOrder: order), shard)
        // The order file lists the ids that occur (the others follow, ascending): round trip, and a repeated id refused.
        XCTAssertEqual(order.encoded(), [5, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0])
        XCTAssertEqual(try TokenIDOrder.decode(order.encoded(), file: "o.bin", vocabulary: 8), order)
        XCTAssertThrowsError(try TokenIDOrder.decode([UInt8](repeating: 0, count: 32), file: "o.bin", vocabulary: 8)) {
            XCTAssertTrue("\($0)".contains("o.bin") && "\($0)".contains("repeated"), "\($0)")
        }
    }

    // MARK: Whole caches

    private func scratch(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-cache-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A corpus of random words for the tiny model (about 2,400 tokens).
    private func corpus() throws -> URL {
        let url = try scratch("corpus").appendingPathExtension("txt")
        let words = "the of and to in that is was he for it with as his on be at by had are but from".split(separator: " ")
        var random = SeededRandom(seed: 5)
        try (0..<700).map { _ in words[random.uniform(below: words.count)] }.joined(separator: " ").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// A stopped build continues where it stopped and ends with the same bytes as one that was not
    /// stopped; another key in the same folder is refused; the reader refuses damage, naming the file.
    func testBuildResumesReadsBackAndRefusesMismatchesAndDamage() throws {
        let data = try corpus(), whole = try scratch("whole"), stopped = try scratch("stopped")
        func build(_ out: URL, spec: TeacherTargetSpec = .sampled(draws: 20), seqLen: Int = 24, windowsPerShard: Int = 10,
                   precision: DType = .f32) throws -> TeacherCacheManifest {
            try TeacherCacheBuild(teacher: Self.tinyModel, data: data.path, seqLen: seqLen, targets: spec, seed: 9, out: out.path,
                                  batchSize: 3, windowsPerShard: windowsPerShard, teacherPrecision: precision)
                .run(backend: TestBackends.cpu, log: { _ in }, progress: { _ in })
        }
        let manifest = try build(whole)
        XCTAssertTrue(manifest.complete)
        XCTAssertGreaterThan(manifest.shards.count, 3)
        // Stop after two shards: the manifest lists two, a third shard file is half-written.
        _ = try build(stopped)
        var partial = try TeacherCacheManifest.read(stopped.appendingPathComponent(TeacherCacheManifest.fileName))
        partial.shards = Array(partial.shards.prefix(2))
        partial.complete = false
        try Data(partial.encoded()).write(to: stopped.appendingPathComponent(TeacherCacheManifest.fileName))
        let third = stopped.appendingPathComponent(TeacherCacheManifest.shardFileName(2))
        try Data(try Data(contentsOf: third).prefix(100)).write(to: third)
        XCTAssertThrowsError(try TeacherCache(folder: stopped.path)) { XCTAssertTrue("\($0)".contains("incomplete (its build stopped with 2 of"), "\($0)") }
        XCTAssertEqual(try build(stopped, windowsPerShard: 7), manifest, "a stopped build continues with its own shard size")
        for shard in manifest.shards {
            XCTAssertEqual(try Data(contentsOf: whole.appendingPathComponent(shard.file)), try Data(contentsOf: stopped.appendingPathComponent(shard.file)))
        }

        // Reading back: window w's targets, and the corpus check.
        let cache = try TeacherCache(folder: whole.path)
        XCTAssertEqual(try cache.targets(ofWindow: manifest.windows - 1).count, 23)
        XCTAssertThrowsError(try cache.targets(ofWindow: manifest.windows)) { XCTAssertTrue("\($0)".contains("outside the cache's"), "\($0)") }
        XCTAssertThrowsError(try cache.checkCorpus(tokens: [1, 2, 3], path: "other.txt")) { XCTAssertTrue("\($0)".contains("other.txt"), "\($0)") }
        // Read from many threads at once (as a batch's windows are), a fresh cache gives every window's targets as one read in turn.
        let threads = try TeacherCache(folder: whole.path)
        let concurrent = try parallelMap(manifest.windows) { try threads.targets(ofWindow: $0) }
        XCTAssertEqual(concurrent, try (0..<manifest.windows).map(cache.targets(ofWindow:)))
        XCTAssertThrowsError(try parallelMap(3) { try threads.targets(ofWindow: manifest.windows + 2 - $0) }) {
            XCTAssertTrue("\($0)".contains("window \(manifest.windows + 2) is outside"), "the first error by index: \($0)")
        }

        // Another key in a folder that holds a cache.
        XCTAssertThrowsError(try build(whole, seqLen: 16)) { XCTAssertTrue("\($0)".contains("seq_len 24 vs 16"), "\($0)") }
        XCTAssertThrowsError(try build(whole, spec: .topK(k: 4))) { XCTAssertTrue("\($0)".contains("targets sampled:20 vs topk:4"), "\($0)") }
        XCTAssertThrowsError(try build(whole, precision: .bf16)) { XCTAssertTrue("\($0)".contains("teacher precision fp32 vs bf16"), "\($0)") }
        // A bf16 teacher's cache says so in its manifest (an fp32 one leaves the key out, as caches made before it did).
        XCTAssertNil(manifest.teacherPrecision)
        XCTAssertEqual(try build(try scratch("bf16"), precision: .bf16).teacherPrecision, "bf16")

        // Damage: an edited shard, a truncated one, an edited manifest.
        let shard = whole.appendingPathComponent(manifest.shards[1].file)
        var bytes = try [UInt8](Data(contentsOf: shard))
        bytes[bytes.count / 2] ^= 1
        try Data(bytes).write(to: shard)
        XCTAssertThrowsError(try TeacherCache(folder: whole.path).targets(ofWindow: 15)) {
            XCTAssertTrue("\($0)".contains(shard.lastPathComponent) && "\($0)".contains("SHA-256"), "\($0)")
        }
        try Data(bytes.dropLast(3)).write(to: shard)
        XCTAssertThrowsError(try TeacherCache(folder: whole.path)) { XCTAssertTrue("\($0)".contains(shard.lastPathComponent) && "\($0)".contains("truncated"), "\($0)") }
        try "{\"format\": \"kdgpu-teacher-cache\"}".write(to: whole.appendingPathComponent(TeacherCacheManifest.fileName), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TeacherCache(folder: whole.path)) { XCTAssertTrue("\($0)".contains("manifest.json") && "\($0)".contains("missing"), "\($0)") }
    }

    /// Drawn targets are coded (format version 2 on; top-k ones are not); more than 255 draws count
    /// their pairs in two bytes (version 3), which a version 2 manifest cannot say; caches of versions
    /// 2 and 1 (fixed-width pairs) still read back the same targets and a stopped version 1 build
    /// continues as such; a damaged id order is refused, naming its file.
    func testVersion3CountsWideAndVersions2And1CachesStillReadAndContinue() throws {
        let data = try corpus(), v2 = try scratch("v2"), v1 = try scratch("v1")
        func build(_ out: URL, spec: TeacherTargetSpec = .systematic(draws: 30)) throws -> TeacherCacheManifest {
            try TeacherCacheBuild(teacher: Self.tinyModel, data: data.path, seqLen: 24, targets: spec, seed: 3, out: out.path, batchSize: 4, windowsPerShard: 10)
                .run(backend: TestBackends.cpu, log: { _ in }, progress: { _ in })
        }
        let manifest = try build(v2)
        XCTAssertEqual(manifest.formatVersion, 3)
        XCTAssertNotNil(manifest.idOrderSHA256)
        XCTAssertNil(try build(try scratch("topk"), spec: .topK(k: 4)).idOrderSHA256, "top-k pairs stay fixed-width")
        let cache = try TeacherCache(folder: v2.path)
        let targets = try (0..<manifest.windows).map { try cache.targets(ofWindow: $0) }

        // 300 draws: counts in two bytes; each position's counts add up to its draws.
        let wide = try scratch("wide"), wideManifest = try build(wide, spec: .systematic(draws: 300))
        let wideCache = try TeacherCache(folder: wide.path)
        for window in 0..<wideManifest.windows {
            for target in try wideCache.targets(ofWindow: window) { XCTAssertEqual(target.values.reduce(0, +), 300) }
        }
        XCTAssertGreaterThan(wideManifest.bytes, manifest.bytes)
        // The same manifest as version 2 (one-byte counts) cannot hold it; the narrow cache as version 2 reads the same.
        var wideAsV2 = wideManifest
        wideAsV2.formatVersion = 2
        try Data(wideAsV2.encoded()).write(to: wide.appendingPathComponent(TeacherCacheManifest.fileName))
        XCTAssertThrowsError(try TeacherCache(folder: wide.path)) {
            XCTAssertTrue("\($0)".contains("manifest.json") && "\($0)".contains("cannot count"), "\($0)")
        }
        var narrowAsV2 = manifest
        narrowAsV2.formatVersion = 2
        try Data(narrowAsV2.encoded()).write(to: v2.appendingPathComponent(TeacherCacheManifest.fileName))
        let cacheAsV2 = try TeacherCache(folder: v2.path)
        XCTAssertEqual(try (0..<manifest.windows).map { try cacheAsV2.targets(ofWindow: $0) }, targets)

        // The same cache written as version 1: fixed-width shards, no id order.
        try FileManager.default.copyItem(at: v2, to: v1)
        try FileManager.default.removeItem(at: v1.appendingPathComponent(TokenIDOrder.fileName))
        var old = manifest
        old.formatVersion = 1
        old.idOrderSHA256 = nil
        for (index, entry) in manifest.shards.enumerated() {
            let shard = CacheShard(firstWindow: entry.firstWindow, seqLen: 24, targets: Array(targets[entry.firstWindow..<entry.firstWindow + entry.windows]))
            let bytes = shard.encoded(idBits: manifest.idBits, storesProbabilities: false, pairCountBytes: 1)
            try Data(bytes).write(to: v1.appendingPathComponent(entry.file))
            old.shards[index].bytes = bytes.count
            old.shards[index].sha256 = SHA256Digest.hex(of: bytes)
        }
        XCTAssertGreaterThan(old.bytes, manifest.bytes, "coded draws take fewer bytes")
        try Data(old.encoded()).write(to: v1.appendingPathComponent(TeacherCacheManifest.fileName))
        let oldCache = try TeacherCache(folder: v1.path)
        XCTAssertEqual(try (0..<manifest.windows).map { try oldCache.targets(ofWindow: $0) }, targets)
        // Stopped after two shards, it continues as version 1, to the same bytes.
        var partial = old
        partial.shards = Array(old.shards.prefix(2))
        partial.complete = false
        try Data(partial.encoded()).write(to: v1.appendingPathComponent(TeacherCacheManifest.fileName))
        XCTAssertEqual(try build(v1), old)
        let last = v1.appendingPathComponent(old.shards.last!.file)
        XCTAssertEqual(Array(try Data(contentsOf: last).prefix(8)), Array("KDTCSHD1".utf8))

        // A damaged or missing id order.
        let orderFile = v2.appendingPathComponent(TokenIDOrder.fileName)
        var orderBytes = try [UInt8](Data(contentsOf: orderFile))
        orderBytes.swapAt(0, 4)
        try Data(orderBytes).write(to: orderFile)
        XCTAssertThrowsError(try TeacherCache(folder: v2.path)) { XCTAssertTrue("\($0)".contains(TokenIDOrder.fileName) && "\($0)".contains("not the id order"), "\($0)") }
        try FileManager.default.removeItem(at: orderFile)
        XCTAssertThrowsError(try TeacherCache(folder: v2.path)) { XCTAssertTrue("\($0)".contains(TokenIDOrder.fileName) && "\($0)".contains("missing"), "\($0)") }
    }
}
