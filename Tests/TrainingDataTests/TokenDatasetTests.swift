import Foundation
import GGUF
import Tensor
import Tokenizer
import TrainingData
import XCTest

final class TokenDatasetTests: TrainingDataTestCase {
    /// Tokens 0, 1, 2, ...: window w then holds w*T ..< (w+1)*T, which makes windows easy to recognize.
    func counting(_ count: Int) -> [Int32] { (0..<Int32(count)).map { $0 } }

    func testWindowsAreNonOverlappingChunksAndTheTailIsDropped() throws {
        let dataset = try TokenDataset(tokens: counting(103), sequenceLength: 10, validationFraction: 0, seed: 1)
        XCTAssertEqual(dataset.windowCount, 10)
        XCTAssertEqual(dataset.trainingWindowCount, 10)
        XCTAssertEqual(dataset.window(0), counting(10))
        XCTAssertEqual(dataset.window(9), Array(90..<100))
    }

    func testValidationIsTheLastWindowsOfTheCorpus() throws {
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 100, fraction: 0.05), 5)
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 10, fraction: 0.05), 1, "at least one window")
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 2, fraction: 0.05), 1)
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 1, fraction: 0.05), 0, "a single window trains")
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 4, fraction: 0.9), 3, "at least one training window")
        XCTAssertEqual(TokenDataset.validationWindowCount(windows: 100, fraction: 0), 0)

        let dataset = try TokenDataset(tokens: counting(40 * 8 + 3), sequenceLength: 8, seed: 3)
        XCTAssertEqual(dataset.trainingWindowCount, 38)
        XCTAssertEqual(dataset.validationWindows, 38..<40)
        let validation = dataset.validationBatches(batchSize: 3)
        XCTAssertEqual(validation, [[Array(304..<312), Array(312..<320)]])
        for epoch in 0..<3 {
            XCTAssertEqual(Set(dataset.trainingOrder(epoch: epoch)), Set(0..<38), "training never sees validation windows")
        }
    }

    func testShuffleIsADeterministicPermutationPerSeedAndEpoch() throws {
        var reference = SplitMix64(seed: 1234567)  // the published SplitMix64 test vector
        XCTAssertEqual([reference.next(), reference.next(), reference.next()],
                       [6457827717110365317, 3203168211198807973, 9817491932198370423])

        let a = try TokenDataset(tokens: counting(1000), sequenceLength: 10, seed: 42)
        let b = try TokenDataset(tokens: counting(1000), sequenceLength: 10, seed: 42)
        let c = try TokenDataset(tokens: counting(1000), sequenceLength: 10, seed: 43)
        XCTAssertEqual(a.trainingOrder(epoch: 0), b.trainingOrder(epoch: 0))
        XCTAssertNotEqual(a.trainingOrder(epoch: 0), a.trainingOrder(epoch: 1), "each epoch reshuffles")
        XCTAssertNotEqual(a.trainingOrder(epoch: 0), c.trainingOrder(epoch: 0))
        XCTAssertEqual(a.trainingOrder(epoch: 1), c.trainingOrder(epoch: 0), "epoch e uses seed + e")
        XCTAssertEqual(a.trainingOrder(epoch: 0).sorted(), Array(0..<95))
        XCTAssertNotEqual(a.trainingOrder(epoch: 0), Array(0..<95))

        // Fisher-Yates over SplitMix64(seed + epoch), written out independently of the library.
        var random = SplitMix64(seed: 42)
        var order = Array(0..<95)
        for i in stride(from: 94, to: 0, by: -1) { order.swapAt(i, random.uniform(below: i + 1)) }
        XCTAssertEqual(a.trainingOrder(epoch: 0), order)
    }

    func testEachEpochVisitsWholeBatchesOfDistinctWindows() throws {
        let dataset = try TokenDataset(tokens: counting(23 * 4), sequenceLength: 4, validationFraction: 0, seed: 9)
        var sampler = try BatchSampler(dataset: dataset, batchSize: 5)
        XCTAssertEqual(sampler.batchesPerEpoch, 4, "23 windows: 4 batches of 5, 3 windows skipped")
        for epoch in 0..<3 {
            var seen: [Int] = []
            for index in 0..<4 {
                let batch = sampler.next()
                XCTAssertEqual(batch.position, DataPosition(epoch: epoch, index: 5 * index))
                XCTAssertEqual(batch.tokens.count, 5)
                XCTAssertEqual(batch.tokens, batch.windows.map(dataset.window))
                seen += batch.windows
            }
            XCTAssertEqual(seen, Array(dataset.trainingOrder(epoch: epoch).prefix(20)))
            XCTAssertEqual(Set(seen).count, 20)
            XCTAssertEqual(sampler.position, DataPosition(epoch: epoch + 1, index: 0))
        }
    }

    /// `upcoming(n)` gives the next n batches, into the next epoch, and leaves the sampler where it was.
    func testUpcomingBatchesAreTheNextOnesWithoutMoving() throws {
        let dataset = try TokenDataset(tokens: counting(23 * 4), sequenceLength: 4, validationFraction: 0, seed: 9)
        var sampler = try BatchSampler(dataset: dataset, batchSize: 5)
        for _ in 0..<3 {
            let position = sampler.position
            let ahead = sampler.upcoming(6)  // 4 batches an epoch: across its end
            XCTAssertEqual(sampler.position, position)
            XCTAssertEqual(ahead, (0..<6).map { _ in sampler.next() })
        }
    }

    func testResumingFromASavedPositionDrawsTheSameBatches() throws {
        let dataset = try TokenDataset(tokens: counting(50 * 6), sequenceLength: 6, seed: 2026)
        var uninterrupted = try BatchSampler(dataset: dataset, batchSize: 4)
        let expected = (0..<30).map { _ in uninterrupted.next() }  // 47 training windows: 11 batches per epoch

        for stop in [1, 10, 11, 12, 23] {
            var first = try BatchSampler(dataset: dataset, batchSize: 4)
            let before = (0..<stop).map { _ in first.next() }
            // The position travels through JSON, as in a checkpoint.
            let saved = try JSONEncoder().encode(first.position)
            let restored = try JSONDecoder().decode(DataPosition.self, from: saved)
            let rebuilt = try TokenDataset(tokens: counting(50 * 6), sequenceLength: 6, seed: 2026)
            var resumed = try BatchSampler(dataset: rebuilt, batchSize: 4, position: restored)
            let after = (stop..<30).map { _ in resumed.next() }
            XCTAssertEqual(before + after, expected, "stopped after \(stop) batches at \(restored)")
        }
    }

    func testDatasetErrorsSayWhatToChange() throws {
        assertError(try TokenDataset(tokens: counting(100), sequenceLength: 1, seed: 0),
                    contains: ["sequence length 1 is too short", "T must be at least 2"])
        assertError(try TokenDataset(tokens: counting(100), sequenceLength: 256, seed: 0),
                    contains: ["corpus has 100 tokens, fewer than one window of 256; use a smaller --seq-len or more text"])
        assertError(try TokenDataset(tokens: counting(100), sequenceLength: 10, validationFraction: 1, seed: 0),
                    contains: ["validation fraction 1.0 must be at least 0 and below 1"])
        let dataset = try TokenDataset(tokens: counting(100), sequenceLength: 10, seed: 0)  // 9 training windows
        assertError(try BatchSampler(dataset: dataset, batchSize: 10),
                    contains: ["batch size 10 does not fit the 9 training windows", "from 1 to 9"])
        assertError(try BatchSampler(dataset: dataset, batchSize: 0), contains: ["batch size 0"])
        assertError(try BatchSampler(dataset: dataset, batchSize: 2, position: DataPosition(epoch: 3, index: 12)),
                    contains: ["data position (epoch 3, index 12) is outside this dataset's 9 training windows", "--seq-len changed"])
    }

    func testTokenizedCorpusFeedsTheDataset() throws {
        let root = try scratchFolder()
        let text = String(repeating: "then the thin hen went in. ", count: 30)
        try write(text, to: root.appendingPathComponent("a.txt"))
        let corpus = try TokenCache(directory: root.appendingPathComponent("cache")).tokens(for: Corpus(path: root.appendingPathComponent("a.txt").path), tokenizer: tokenizer)
        let dataset = try TokenDataset(tokens: corpus.tokens, sequenceLength: 16, seed: 5)
        XCTAssertEqual(dataset.windowCount, corpus.tokens.count / 16)
        let joined = (0..<dataset.windowCount).flatMap(dataset.window)
        XCTAssertEqual(try tokenizer.decode(joined), try tokenizer.decode(Array(corpus.tokens.prefix(joined.count))))
        XCTAssertTrue(text.hasPrefix(try tokenizer.decode(joined)))
    }
}

/// The default corpus (Shakespeare's plays, `make corpus`) with SmolLM2's tokenizer; skipped, saying
/// so, when the corpus is not fetched.
final class RealCorpusTests: TrainingDataTestCase {
    func testShakespeareIsTokenizedOnceThenReadFromTheCache() throws {
        let plays = Self.repositoryTests.deletingLastPathComponent().appendingPathComponent("cache/corpus/plays")
        guard FileManager.default.fileExists(atPath: plays.path) else {
            throw XCTSkip("the default corpus is not fetched (run `make corpus`)")
        }
        let smollm = try BPETokenizer(gguf: GGUFFile(contentsOf: Self.repositoryTests.appendingPathComponent("TokenizerTests/Fixtures/smollm2_vocab.gguf")))
        let cache = TokenCache(directory: try scratchFolder())
        let corpus = try Corpus(path: plays.path)
        var start = Date()
        let first = try cache.tokens(for: corpus, tokenizer: smollm)
        let tokenizeSeconds = Date().timeIntervalSince(start)
        start = Date()
        let second = try cache.tokens(for: Corpus(path: plays.path), tokenizer: smollm)
        let cachedSeconds = Date().timeIntervalSince(start)
        print("Shakespeare: \(corpus.files.count) files, \(first.tokens.count) tokens; tokenized in \(tokenizeSeconds) s, read from the cache in \(cachedSeconds) s")
        XCTAssertFalse(first.loadedFromCache)
        XCTAssertTrue(second.loadedFromCache)
        XCTAssertEqual(second.tokens, first.tokens)
        XCTAssertEqual(first.documentsTokenized, corpus.files.count)
        XCTAssertEqual(first.tokens.filter { $0 == smollm.eosTokenID }.count, corpus.files.count - 1, "one EOS between each two plays")
        let dataset = try TokenDataset(tokens: first.tokens, sequenceLength: 256, seed: 1)
        XCTAssertEqual(dataset.windowCount, first.tokens.count / 256)
        XCTAssertEqual(dataset.validationWindowCount, dataset.windowCount / 20)
    }
}
