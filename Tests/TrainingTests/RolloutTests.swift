import Foundation
import Models
import Tensor
import TestSupport
import Training
import TrainingData
import XCTest

/// The parts of on-policy distillation below the command line: the prompt mask, the per-step
/// source draws, the replay buffer's ring and DistiLLM's adaptive fraction. (The loss of a whole
/// on-policy step against numpy is in TrainCommandTests.)
final class RolloutTests: XCTestCase {
    private func settings(fraction: Float, sequenceLevel: Bool = false, replayCapacity: Int = 0, replayRatio: Float = 0,
                          adaptive: Float? = nil, seed: UInt64 = 7) -> RolloutSettings {
        var config = TrainingConfig()
        (config.onPolicyFraction, config.seqKd, config.replayCapacity, config.replayRatio, config.seed) = (fraction, sequenceLevel, replayCapacity, replayRatio, seed)
        (config.promptTokens, config.rolloutTokens, config.onPolicySchedule) = (3, 4, adaptive == nil ? "constant" : "adaptive")
        if let adaptive { config.adaptiveLossEps = adaptive }
        return RolloutSettings(config: config)
    }

    /// A two-block student of the tiny fixture's shape, random weights.
    private func student(on backend: any Backend) throws -> StudentModel {
        let config = LlamaConfig(layers: 2, width: 32, feedForward: 48, heads: 4, kvHeads: 2, vocabulary: 50, contextLength: 32,
                                 ropeBase: 10000, normEpsilon: 1e-5, tiedEmbeddings: true)
        return try StudentModel(parameters: StudentGradientTests.randomParameters(config, seed: 3), backend: backend)
    }

    private func corpusBatch(_ rows: Int, length: Int = 9, offset: Int32 = 0) -> TrainingBatch {
        TrainingBatch(tokens: (0..<rows).map { r in (0..<length).map { Int32((r * 7 + $0) % 50) + offset } }, windows: Array(0..<rows),
                      position: .start)
    }

    /// Labels count exactly the positions predicting the continuation, prompts of any length, the
    /// shorter sequence padded at its end: written out by hand.
    func testPromptPositionsAreMaskedFromTheLoss() throws {
        let backend = TestBackends.cpu
        let sampled = StepBatch(sampled: [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24]], continuation: 3, source: .student)
        XCTAssertEqual(sampled.batch.tokens, [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 24]])
        XCTAssertEqual(try sampled.labels(backend: backend).toArray(), [-100, -100, 13, 14, 15, -100, -100, 22, 23, 24, -100, -100])
        XCTAssertEqual(sampled.rows, 6)
        XCTAssertEqual(sampled.tokens, 11, "padding is not counted")
        let batch = TrainingBatch(tokens: [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]], windows: [0, 1], position: .start)
        let corpus = StepBatch(batch)
        XCTAssertEqual(try corpus.labels(backend: backend).toArray(), [11, 12, 13, 14, 15, -100, 21, 22, 23, 24, 25, -100])
        XCTAssertEqual(corpus.rows, 10)
        XCTAssertEqual(corpus.tokens, 12)
    }

    /// With a prompt file, each sampled sequence continues a prompt drawn from it (any length), the
    /// same ones for the same step on every run; the step batch counts only the continuations.
    func testPromptsFromAFileAreDrawnPerStepAndContinued() throws {
        for backend in try TestBackends.all() {
            let student = try student(on: backend)
            let prompts: [[Int32]] = [[1, 2], [3, 4, 5, 6, 7], [8], [9, 10, 11]]
            func make() -> Rollouts { Rollouts(settings: settings(fraction: 1), student: student, teacher: nil, prompts: prompts) }
            let rollouts = make()
            var drawn: Set<[Int32]> = []
            for step in 1...6 {
                let batch = try rollouts.batch(from: corpusBatch(3), source: .student, step: step, microBatch: 0)
                let records = rollouts.takeRecords().rollouts
                XCTAssertEqual(records.count, 3)
                for (record, sequence) in zip(records, batch.batch.tokens) {
                    XCTAssertTrue(prompts.contains(record.prompt))
                    XCTAssertEqual(record.completion.count, 4)
                    XCTAssertEqual(Array(sequence.prefix(record.prompt.count + 4)), record.prompt + record.completion)
                    drawn.insert(record.prompt)
                }
                XCTAssertEqual(batch.predicted, records.map { ($0.prompt.count - 1)..<($0.prompt.count + 3) })
                XCTAssertEqual(batch.rows, 12)
                let again = try make().batch(from: corpusBatch(3), source: .student, step: step, microBatch: 0)
                XCTAssertEqual(again.batch.tokens, batch.batch.tokens, "step \(step) draws the same prompts and tokens on every run")
            }
            XCTAssertEqual(drawn.count, prompts.count, "6 steps of 3 draws reach every prompt")
        }
    }

    /// A step is on-policy with the fraction's probability, the same steps on every run; the other
    /// steps are the teacher's with sequence-level KD, else the corpus's.
    func testStepSourcesFollowTheFractionAndTheSeed() throws {
        let backend = TestBackends.cpu
        let student = try student(on: backend)
        let steps = 1...4000
        for (fraction, sequenceLevel) in [(Float(0.3), false), (0.8, true), (0, true), (1, false)] {
            let rollouts = Rollouts(settings: settings(fraction: fraction, sequenceLevel: sequenceLevel), student: student, teacher: nil)
            let sources = steps.map { rollouts.source(step: $0) }
            let onPolicy = Double(sources.filter { $0 == .student }.count) / Double(steps.count)
            let sd = (Double(fraction) * (1 - Double(fraction)) / Double(steps.count)).squareRoot()
            XCTAssertEqual(onPolicy, Double(fraction), accuracy: 4 * sd + 1e-12, "fraction \(fraction)")
            XCTAssertEqual(Set(sources).subtracting([.student]), fraction == 1 ? [] : [sequenceLevel ? .teacher : .corpus])
            XCTAssertEqual(sources, steps.map { Rollouts(settings: settings(fraction: fraction, sequenceLevel: sequenceLevel), student: student,
                                                         teacher: nil).source(step: $0) }, "a fresh run draws the same sources")
        }
        let other = Rollouts(settings: settings(fraction: 0.5, seed: 8), student: student, teacher: nil)
        let seven = Rollouts(settings: settings(fraction: 0.5), student: student, teacher: nil)
        XCTAssertNotEqual(steps.map { other.source(step: $0) }, steps.map { seven.source(step: $0) }, "another seed, other steps")
    }

    /// Fresh student samples fill the buffer, then overwrite its oldest; replayed micro-batches are
    /// buffered sequences with the prompt mask; a student step replays with the replay ratio once
    /// the buffer has something.
    func testReplayBufferKeepsTheNewestSamples() throws {
        for backend in try TestBackends.all() {
            let student = try student(on: backend)
            let rollouts = Rollouts(settings: settings(fraction: 1, replayCapacity: 3, replayRatio: 0.5), student: student, teacher: nil)
            XCTAssertEqual(rollouts.source(step: 1), .student, "an empty buffer has nothing to replay")
            let first = try rollouts.batch(from: corpusBatch(2), source: .student, step: 1, microBatch: 0)
            let second = try rollouts.batch(from: corpusBatch(2, offset: 1), source: .student, step: 2, microBatch: 0)
            for batch in [first, second] {
                XCTAssertEqual(batch.batch.tokens.map(\.count), [7, 7], "3 prompt + 4 sampled tokens")
                XCTAssertEqual(batch.predicted, [2..<6, 2..<6])
                XCTAssertEqual(batch.rows, 8)
            }
            XCTAssertEqual(first.batch.tokens.map { Array($0.prefix(3)) }, corpusBatch(2).tokens.map { Array($0.prefix(3)) })
            XCTAssertEqual(rollouts.state.buffer, [second.batch.tokens[1]] + Array(first.batch.tokens[1...]) + [second.batch.tokens[0]])
            XCTAssertEqual(rollouts.state.nextSlot, 1, "the oldest kept sequence is in slot 1")
            let (records, rate) = rollouts.takeRecords()
            XCTAssertEqual(records.map(\.completion), (first.batch.tokens + second.batch.tokens).map { Array($0.dropFirst(3)) })
            XCTAssertNotNil(rate)
            XCTAssertTrue(rollouts.takeRecords().rollouts.isEmpty)

            let replayed = try rollouts.batch(from: corpusBatch(4), source: .replay, step: 3, microBatch: 0)
            XCTAssertEqual(replayed.source, .replay)
            XCTAssertEqual(replayed.predicted, Array(repeating: 2..<6, count: 4))
            XCTAssertTrue(replayed.batch.tokens.allSatisfy(rollouts.state.buffer.contains), "replays come from the buffer")
            XCTAssertTrue(rollouts.takeRecords().rollouts.isEmpty, "replays are not new samples")
            let sources = (1...2000).map { rollouts.source(step: $0) }
            XCTAssertEqual(Double(sources.filter { $0 == .replay }.count) / 2000, 0.5, accuracy: 0.05)
        }
    }

    /// DistiLLM: a validation NLL at least the threshold above the previous one raises the fraction by 0.1, to 1 at most.
    func testAdaptiveFractionRisesWithTheValidationLoss() throws {
        let student = try student(on: TestBackends.cpu)
        let rollouts = Rollouts(settings: settings(fraction: 0.75, adaptive: 0.1), student: student, teacher: nil)
        for (nll, fraction) in [(5.0, 0.75), (5.05, 0.75), (5.2, 0.85), (4.0, 0.85), (4.15, 0.95), (4.3, 1.0), (4.5, 1.0)] {
            rollouts.validated(nll: nll)
            XCTAssertEqual(Double(rollouts.state.fraction), fraction, accuracy: 1e-6, "after \(nll)")
        }
        let constant = Rollouts(settings: settings(fraction: 0.25), student: student, teacher: nil)
        for nll in [1.0, 9.0] { constant.validated(nll: nll) }
        XCTAssertEqual(constant.state.fraction, 0.25)
    }
}
