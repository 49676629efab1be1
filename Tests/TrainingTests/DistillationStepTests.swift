import Checkpoint
import Foundation
import Losses
import Models
import Tensor
import TestSupport
import Training
import TrainingData
import XCTest

/// The training step's fused path (both LM heads and the loss chunk by chunk) against the same step
/// with materialized [N, V] logits, and its memory, on a tiny teacher and student with a large vocabulary.
final class DistillationStepTests: XCTestCase {
    static let config = LlamaConfig(layers: 2, width: 32, feedForward: 48, heads: 4, kvHeads: 2, vocabulary: 3001, contextLength: 64,
                                    ropeBase: 10000, normEpsilon: 1e-5, tiedEmbeddings: false)

    /// An inference model (the teacher) with the weights of `parameters`, its weight GEMMs in `precision`.
    private func teacher(_ parameters: LlamaParameters, on backend: any Backend, precision: DType = .f32) throws -> LlamaModel {
        func upload(_ name: String) throws -> Tensor {
            try backend.tensor(parameters.tensors[name]!.values, shape: parameters.tensors[name]!.shape, label: name)
        }
        let blocks = try (0..<parameters.config.layers).map { l in
            LlamaBlockWeights(attentionNorm: try upload("blk.\(l).attn_norm.weight"), query: try upload("blk.\(l).attn_q.weight"),
                              key: try upload("blk.\(l).attn_k.weight"), value: try upload("blk.\(l).attn_v.weight"),
                              attentionOutput: try upload("blk.\(l).attn_output.weight"), feedForwardNorm: try upload("blk.\(l).ffn_norm.weight"),
                              gate: try upload("blk.\(l).ffn_gate.weight"), up: try upload("blk.\(l).ffn_up.weight"),
                              down: try upload("blk.\(l).ffn_down.weight"))
        }
        return try LlamaModel(weights: LlamaWeights(config: parameters.config, tokenEmbedding: try upload("token_embd.weight"),
                                                    outputNorm: try upload("output_norm.weight"), output: try upload("output.weight"),
                                                    blocks: blocks), precision: precision)
    }

    private func settings(batch: Int, length: Int) -> TrainingConfig {
        var config = TrainingConfig()
        (config.batchSize, config.seqLen, config.temperature, config.hardWeight) = (batch, length, 2, 0.1)
        return config
    }

    func testStepEqualsTheMaterializedLogitsStep() throws {
        let teacherParameters = try StudentGradientTests.randomParameters(Self.config, seed: 21)
        let studentParameters = try StudentGradientTests.randomParameters(Self.config, seed: 22)
        var rng = SeededRandom(seed: 23)
        let tokens = (0..<400).map { _ in Int32(Int.random(in: 0..<Self.config.vocabulary, using: &rng)) }
        let config = settings(batch: 3, length: 11)
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.1, seed: 1)
        for backend in try TestBackends.all() {
            let teacher = try teacher(teacherParameters, on: backend)
            let student = try StudentModel(parameters: studentParameters, backend: backend)
            let objective = DistillationObjective(config: config)
            let trainer = try Trainer(config: config, student: student, teacher: LiveTeacher(model: teacher), features: [], objective: objective)
            var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
            var copy = sampler
            trainer.headChunkBytes = 5 * 2 * Self.config.vocabulary * 4  // several chunks, the last one partial
            let parts = try trainer.accumulateGradients(batches: [StepBatch(sampler.next())], epoch: 0).parts
            let headGradient = try student.outputWeight.gradient.toArray()

            // The same step with whole logits.
            let windows = copy.next().tokens
            let n = windows.count * config.seqLen
            let labels = try backend.tensor(windows.flatMap { $0.dropFirst().map(Float.init) + [-100] }, shape: [n], label: "labels")
            let teacherLogits = try teacher.forward(windows).logits!
            let reference = try StudentModel(parameters: studentParameters, backend: backend)
            let hidden = try reference.forward(windows)
            let logits = try backend.tensor(shape: [n, Self.config.vocabulary], label: "logits")
            try backend.gemm(hidden, reference.outputWeight.value, into: logits, transposeB: true)
            let crossEntropy = try DistillationLoss(temperature: 1, softWeight: 0, hardWeight: 1, forwardOnly: true)(
                student: logits, teacher: .dense(teacherLogits), labels: labels).loss
            let result = try objective.loss(student: logits, teacher: .dense(teacherLogits), labels: labels)
            let expectedHeadGradient = try backend.tensor(shape: reference.outputWeight.value.shape, label: "dW")
            try backend.gemm(logits, hidden, into: expectedHeadGradient, transposeA: true)

            XCTAssertEqual(parts.loss, result.loss, accuracy: abs(result.loss) * 1e-5, backend.name)
            XCTAssertEqual(parts.crossEntropy, crossEntropy, accuracy: abs(crossEntropy) * 1e-5, backend.name)
            let comparison = Comparison(headGradient, reference: try expectedHeadGradient.toArray().map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-5), "LM head gradient on \(backend.name): \(comparison)")
        }
    }

    /// With chunks of 16 rows, the step's peak memory in use grows with the tokens far less than
    /// [N, V] logits would.
    func testStepPeakMemoryDoesNotGrowWithTokensTimesVocabulary() throws {
        let parameters = try StudentGradientTests.randomParameters(Self.config, seed: 31)
        var rng = SeededRandom(seed: 32)
        let tokens = (0..<4000).map { _ in Int32(Int.random(in: 0..<Self.config.vocabulary, using: &rng)) }
        for backend in try TestBackends.all() {
            var peaks: [Int: Int] = [:]
            for (batch, length) in [(2, 8), (8, 32)] {
                let config = settings(batch: batch, length: length)
                let dataset = try TokenDataset(tokens: tokens, sequenceLength: length, validationFraction: 0.1, seed: 1)
                let teacher = LiveTeacher(model: try teacher(parameters, on: backend))
                let student = try StudentModel(parameters: parameters, backend: backend)
                let trainer = try Trainer(config: config, student: student, teacher: teacher, features: [],
                                          objective: DistillationObjective(config: config))
                trainer.headChunkBytes = 16 * 2 * Self.config.vocabulary * 4
                var sampler = try BatchSampler(dataset: dataset, batchSize: batch)
                _ = try trainer.accumulateGradients(batches: [StepBatch(sampler.next())], epoch: 0)
                try backend.synchronize()
                let before = backend.ledger.inUseBytes
                backend.ledger.resetPeak()
                _ = try trainer.accumulateGradients(batches: [StepBatch(sampler.next())], epoch: 0)
                peaks[batch * length] = backend.ledger.peakInUseBytes - before
            }
            let logitsGrowth = 2 * (256 - 16) * Self.config.vocabulary * 4  // student and teacher [N, V]
            XCTAssertLessThan(peaks[256]! - peaks[16]!, logitsGrowth / 2, "step peak in use on \(backend.name): \(peaks)")
        }
    }

    /// A teacher that fails if asked for targets.
    struct RefusingTeacher: TeacherSource {
        func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets {
            throw ModelError.badInput("the teacher was asked for targets")
        }
        func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult { LikelihoodResult() }
    }

    /// Cross-entropy alone (soft weight 0) never runs the teacher, and its step equals the live
    /// teacher's step at soft weight 0: the same loss and the same gradients.
    /// Mixed precision (`precision: bf16`, the teacher in bf16 too): the step's loss and every
    /// parameter's gradient against the fp32 step's, within what bf16's 8 significant bits allow
    /// (unit roundoff u = 2^-9; a GEMM of rounded operands errs by a few u relative to its terms),
    /// and visibly not the fp32 step itself. The compute copies are what the GEMMs read; the master
    /// values stay fp32.
    func testMixedPrecisionStepAgreesWithFP32WithinBF16Rounding() throws {
        let teacherParameters = try StudentGradientTests.randomParameters(Self.config, seed: 61)
        let studentParameters = try StudentGradientTests.randomParameters(Self.config, seed: 62)
        var rng = SeededRandom(seed: 63)
        let tokens = (0..<400).map { _ in Int32(Int.random(in: 0..<Self.config.vocabulary, using: &rng)) }
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: 11, validationFraction: 0.1, seed: 1)
        for backend in try TestBackends.all() {
            var sampler = try BatchSampler(dataset: dataset, batchSize: 3)
            let batch = sampler.next()
            var steps: [(loss: Float, gradients: [String: [Float]])] = []
            for precision in [DType.f32, .bf16] {
                var config = settings(batch: 3, length: 11)
                config.precision = precision == .bf16 ? "bf16" : "fp32"
                let student = try StudentModel(parameters: studentParameters, backend: backend)
                let trainer = try Trainer(config: config, student: student,
                                          teacher: LiveTeacher(model: try teacher(teacherParameters, on: backend, precision: precision)),
                                          features: [], objective: DistillationObjective(config: config))
                XCTAssertEqual(student.computeType, precision, backend.name)
                XCTAssertEqual(student.parameter("blk.0.attn_q.weight").compute.dtype, precision)
                XCTAssertEqual(student.parameter("blk.0.attn_norm.weight").compute.dtype, .f32, "norm weights are read in fp32")
                let parts = try trainer.accumulateGradients(batches: [StepBatch(batch)], epoch: 0).parts
                steps.append((parts.loss, Dictionary(uniqueKeysWithValues: try student.parameters.map { ($0.name, try $0.gradient.toArray()) })))
            }
            let (fp32, bf16) = (steps[0], steps[1])
            XCTAssertEqual(bf16.loss, fp32.loss, accuracy: abs(fp32.loss) * 4e-3, "loss on \(backend.name)")
            XCTAssertNotEqual(bf16.loss, fp32.loss, "the bf16 step rounds somewhere")
            for (name, reference) in fp32.gradients {
                let measured = bf16.gradients[name]!
                let difference = zip(measured, reference).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
                let norm = reference.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                XCTAssertLessThan(difference, 0.03 * norm, "\(name) gradient on \(backend.name): relative L2 error \(difference / norm)")
                XCTAssertGreaterThan(difference, 0, "\(name) gradient on \(backend.name) went through bf16")
            }
        }
    }

    func testCrossEntropyOnlyStepDoesNotRunTheTeacher() throws {
        let teacherParameters = try StudentGradientTests.randomParameters(Self.config, seed: 51)
        let studentParameters = try StudentGradientTests.randomParameters(Self.config, seed: 52)
        var rng = SeededRandom(seed: 53)
        let tokens = (0..<400).map { _ in Int32(Int.random(in: 0..<Self.config.vocabulary, using: &rng)) }
        var config = settings(batch: 3, length: 11)
        (config.softWeight, config.hardWeight) = (0, 1)
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.1, seed: 1)
        for backend in try TestBackends.all() {
            var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
            let batch = sampler.next()
            var results: [(loss: Float, gradient: [Float])] = []
            for teacher: any TeacherSource in [RefusingTeacher(), LiveTeacher(model: try self.teacher(teacherParameters, on: backend))] {
                let trainer = try Trainer(config: config, student: try StudentModel(parameters: studentParameters, backend: backend),
                                          teacher: teacher, features: [], objective: DistillationObjective(config: config))
                let parts = try trainer.accumulateGradients(batches: [StepBatch(batch)], epoch: 0).parts
                results.append((parts.loss, try trainer.arena.gradients.toArray()))
            }
            XCTAssertEqual(results[0].loss, results[1].loss, accuracy: abs(results[1].loss) * 1e-6, backend.name)
            let comparison = Comparison(results[0].gradient, reference: results[1].gradient.map(Double.init))
            XCTAssertTrue(comparison.passes(tolerance: 1e-6), "\(backend.name): \(comparison)")
        }
    }

    /// What `kdgpu bench train`'s `flop_bound` divides: the GEMM operations a profiled step counts, against a
    /// count on paper. A forward is 2 N C (H hs + 2 Hkv hs) + 2 N H hs C + 3 (2 N C F) a block for the
    /// weights, 2 x 2 B H T^2 hs for the attention scores and their product with the values, and 2 N C V
    /// for the head; the student's backward takes two products for each of the forward's, so the
    /// live step is the teacher's forward plus three of the student's, and a step without the teacher three.
    func testProfiledStepCountsItsGemmOperations() throws {
        let teacherConfig = Self.config
        let studentConfig = LlamaConfig(layers: 1, width: 32, feedForward: 40, heads: 4, kvHeads: 1, vocabulary: 3001, contextLength: 64,
                                        ropeBase: 10000, normEpsilon: 1e-5, tiedEmbeddings: true)
        func forwardOperations(_ c: LlamaConfig, batch b: Int, length t: Int) -> Double {
            let (n, w, hs) = (Double(b * t), Double(c.width), Double(c.headDimension))
            let block = 2 * n * w * (Double(c.heads) * hs + 2 * Double(c.kvHeads) * hs) + 2 * n * Double(c.heads) * hs * w
                + 3 * 2 * n * w * Double(c.feedForward) + 2 * 2 * Double(b * c.heads * t * t) * hs
            return Double(c.layers) * block + 2 * n * w * Double(c.vocabulary)
        }
        let teacherParameters = try StudentGradientTests.randomParameters(teacherConfig, seed: 61)
        let studentParameters = try StudentGradientTests.randomParameters(studentConfig, seed: 62)
        var rng = SeededRandom(seed: 63)
        let tokens = (0..<400).map { _ in Int32(Int.random(in: 0..<teacherConfig.vocabulary, using: &rng)) }
        let backend = TestBackends.cpu
        for teacherRuns in [true, false] {
            var config = settings(batch: 3, length: 11)
            if !teacherRuns { (config.softWeight, config.hardWeight) = (0, 1) }
            let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.1, seed: 1)
            let teacher: any TeacherSource = teacherRuns ? LiveTeacher(model: try self.teacher(teacherParameters, on: backend)) : RefusingTeacher()
            let trainer = try Trainer(config: config, student: try StudentModel(parameters: studentParameters, backend: backend),
                                      teacher: teacher, features: [], objective: DistillationObjective(config: config))
            var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
            let profile = Profiling.start(on: backend)
            defer { Profiling.stop(on: backend) }
            _ = try trainer.step(1, batches: &sampler)
            let student = 3 * forwardOperations(studentConfig, batch: config.batchSize, length: config.seqLen)
            let expected = student + (teacherRuns ? forwardOperations(teacherConfig, batch: config.batchSize, length: config.seqLen) : 0)
            XCTAssertEqual(profile.flops["gemm"], expected, "teacher \(teacherRuns ? "live" : "not run")")
        }
    }

    /// What an overlapping reducer is told: in the step's last micro-batch only, the LM head's and
    /// the token embedding's spans (one when tied), then each block's spans from the last block
    /// down, each holding its final gradients when told (a snapshot then equals the arena as the
    /// reduce finds it), the embedding's rows of that micro-batch left out and handed to the reduce,
    /// which comes once, after them all. Adding those rows there gives the gradients of the step
    /// that tells nothing, bit for bit.
    func testSpansReportedFinishedHoldTheirFinalGradients() throws {
        final class RecordingReducer: GradientReducer {
            var worldSize: Int { 1 }
            var rank: Int { 0 }
            var overlapsBackward: Bool { true }
            var told: [(elements: Range<Int>, values: [Float])] = []
            var atReduce: [Float] = []
            var lateRows = 0
            func gradientsFinished(_ gradients: Tensor, elements: Range<Int>) throws {
                XCTAssertTrue(atReduce.isEmpty, "told before the reduce")
                let span = Tensor(shape: [elements.count], storage: gradients.storage, offset: gradients.offset + elements.lowerBound,
                                  backend: gradients.backend, label: "told span")
                told.append((elements, try span.toArray()))
            }
            func reduce(gradients: Tensor, parts: inout StepParts, late: EmbeddingRows?) throws {
                XCTAssertTrue(atReduce.isEmpty, "one reduce a step")
                atReduce = try gradients.toArray()
                lateRows = late?.tokens.count ?? 0
                try late?.add()
            }
        }
        var rng = SeededRandom(seed: 73)
        let tokens = (0..<400).map { _ in Int32(Int.random(in: 0..<Self.config.vocabulary, using: &rng)) }
        var config = settings(batch: 2, length: 11)
        config.gradientAccumulation = 2
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.1, seed: 1)
        let teacherParameters = try StudentGradientTests.randomParameters(Self.config, seed: 71)
        for tied in [false, true] {
            var studentConfig = Self.config
            studentConfig.tiedEmbeddings = tied
            let studentParameters = try StudentGradientTests.randomParameters(studentConfig, seed: 72)
            for backend in try TestBackends.all() {
                var gradients: [[Float]] = []
                for reducer: any GradientReducer in [SingleProcess(), RecordingReducer()] {
                    let student = try StudentModel(parameters: studentParameters, backend: backend)
                    let trainer = try Trainer(config: config, student: student, teacher: LiveTeacher(model: try teacher(teacherParameters, on: backend)),
                                              features: [], objective: DistillationObjective(config: config), reducer: reducer)
                    var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
                    _ = try trainer.step(1, batches: &sampler)
                    gradients.append(try trainer.arena.gradients.toArray())
                    guard let recording = reducer as? RecordingReducer else { continue }
                    let arena = trainer.arena
                    let expected = arena.spans(of: [student.outputWeight, student.tokenEmbedding])
                        + (0..<studentConfig.layers).reversed().flatMap { arena.spans(of: student.blockParameters($0)) }
                    let what = "\(tied ? "tied" : "untied") head on \(backend.name)"
                    XCTAssertEqual(recording.told.map(\.elements), expected, what)
                    XCTAssertEqual(recording.lateRows, config.batchSize * config.seqLen, "the last micro-batch's embedding rows, \(what)")
                    for (elements, values) in recording.told {
                        XCTAssertTrue(values == Array(recording.atReduce[elements]), "span \(elements) told before its last gradient, \(what)")
                        XCTAssertTrue(values.contains { $0 != 0 }, "span \(elements) has gradients, \(what)")
                    }
                }
                XCTAssertTrue(gradients[0] == gradients[1], "\(tied ? "tied" : "untied") head on \(backend.name): the same gradients")
            }
        }
    }
}
