import Foundation
import Losses
import Models
import TeacherCache
import Tensor
import TestSupport
import Training
import TrainingData
import XCTest

/// Cached targets as the step uses them: the loss and its gradient through ``SparseTeacher`` (rows
/// of different lengths padded, counts turned into probabilities, each window's last row) equal an
/// fp64 reference written from the definitions, for sampled and top-k targets with each tail (sampled with
/// a bucket of Good-Turing's unseen mass, and with the prior tail made from the windows' targets), on
/// both backends; the teacher's cross-entropy and NLL come from the stored label log-probabilities.
final class SparseTeacherTests: XCTestCase {
    func testLossAndGradientEqualTheFP64Reference() throws {
        let (windows, seqLen, vocabulary, temperature) = (3, 5, 37, 2.0)
        var random = SeededRandom(seed: 21)
        // Targets of windows 10, 11, 12: 1 to 9 distinct ids a position.
        func targets(draws: Int?) -> [Int: [SparseTarget]] {
            Dictionary(uniqueKeysWithValues: (10..<10 + windows).map { window in
                (window, (0..<seqLen - 1).map { _ -> SparseTarget in
                    var ids: [Int32] = []
                    while ids.count < min(draws ?? 9, 1 + random.uniform(below: 9)) {  // never more ids than draws
                        let id = Int32(random.uniform(below: vocabulary))
                        if !ids.contains(id) { ids.append(id) }
                    }
                    // Probabilities, or the counts of `draws` draws among the ids (some drawn once: the bucket tail's mass).
                    var values = ids.map { _ in draws == nil ? Float(1 + random.uniform(below: 100)) / 1000 : 1 }
                    if let draws { for _ in ids.count..<max(ids.count, draws) { values[random.uniform(below: ids.count)] += 1 } }
                    return SparseTarget(ids: ids, values: values, tailMass: 0, labelLogProbability: -Float(random.uniform(below: 500)) / 100)
                })
            })
        }
        let cases: [(TeacherTargetSpec, MissingTeacherMass, exact: Bool)] = [
            (.sampled(draws: 50), .renormalize, false), (.systematic(draws: 40), .renormalize, false), (.sampled(draws: 12), .bucket, false),
            (.sampled(draws: 5), .bucket, false), (.topK(k: 9), .renormalize, false), (.topK(k: 9), .uniform, false), (.topK(k: 9), .bucket, false),
            (.sampled(draws: 12), .prior, false), (.systematic(draws: 30), .prior, false), (.topK(k: 9), .prior, false),
            (.sampled(draws: 12), .renormalize, true), (.systematic(draws: 6), .renormalize, true), (.topK(k: 9), .uniform, true), (.topK(k: 9), .prior, true)]
        for backend in try TestBackends.all() {
            for (spec, tail, exact) in cases {
                var stored = targets(draws: spec.draws)
                // Exact labels: the windows' tokens give each position's label; every other position lists it
                // (first id), the rest mostly do not; one drawn position has every draw on its label.
                let tokens = (0..<windows).map { _ in (0..<seqLen).map { _ in Int32(random.uniform(below: vocabulary)) } }
                if exact {
                    for window in 0..<windows {
                        for position in 0..<seqLen - 1 where position % 2 == 0 {
                            var target = stored[10 + window]![position]
                            let label = tokens[window][position + 1]
                            if !target.ids.contains(label) { target.ids[0] = label }
                            if window == 1 && position == 0, let draws = spec.draws { (target.ids, target.values) = ([label], [Float(draws)]) }
                            stored[10 + window]![position] = target
                        }
                    }
                }
                let draws = spec.draws
                // The prior tail: per token, how often it was drawn once (drawn targets) or its listed mass (top-k), counted here.
                var masses = [Double](repeating: 0, count: vocabulary)
                for target in stored.values.joined() {
                    for (id, value) in zip(target.ids, target.values) where draws == nil || value == 1 { masses[Int(id)] += draws == nil ? Double(value) : 1 }
                }
                let floor = 0.5 * (masses.filter { $0 > 0 }.min() ?? 1)
                let prior = masses.map { max($0, floor) / masses.reduce(0) { $0 + max($1, floor) } }
                let priorWeight = 7.0
                let tailPrior = tail != .prior ? nil : try TailPrior.of(spec: spec, vocabulary: vocabulary, windows: 10..<10 + windows,
                                                                         weight: priorWeight) { stored[$0]! }
                if let tailPrior { XCTAssertLessThanOrEqual(zip(tailPrior.probabilities, prior).map { abs($0 - $1) }.max()!, 1e-15) }
                let teacher = try SparseTeacher(spec: spec, tail: tail, tailPrior: tailPrior, exactLabel: exact, seqLen: seqLen, vocabulary: vocabulary,
                                                backend: backend) { stored[$0]! }
                let logits = random.normals(windows * seqLen * vocabulary, scale: 3)
                let student = try backend.tensor(logits, shape: [windows * seqLen, vocabulary], label: "student logits")
                let labels = try backend.tensor((0..<windows * seqLen).map { Float($0 % seqLen == seqLen - 1 ? -100 : $0 % vocabulary) },
                                                shape: [windows * seqLen], label: "labels")
                let (topK, crossEntropy) = try teacher.topK(windows: Array(10..<10 + windows), tokens: tokens)
                let loss = DistillationLoss(temperature: Float(temperature))
                let gradient = try backend.tensor(shape: student.shape, label: "gradient")
                let result = try loss(student: student, teacher: .topK(topK), labels: labels, gradient: .into(gradient))

                // The reference: each predicted row's teacher distribution over the vocabulary, tempered.
                var total = 0.0, expectedGradient = [Double](repeating: 0, count: logits.count)
                let rows = Double(windows * (seqLen - 1))
                for window in 0..<windows {
                    for (position, target) in stored[10 + window]!.enumerated() {
                        let row = window * seqLen + position
                        var p = [Double](repeating: 0, count: vocabulary)
                        var listedMass = 0.0
                        // Drawn targets with a bucket: the ids drawn once are Good-Turing's estimate of the undrawn mass.
                        let drawnOnce = Double(target.values.filter { $0 == 1 }.count)
                        let listedShare = draws.map { tail == .bucket ? 1 - min(drawnOnce, Double($0 - 1)) / Double($0) : 1 } ?? 1
                        for (id, value) in zip(target.ids, target.values) {
                            let probability = Double(value) / Double(draws ?? 1) * listedShare
                            p[Int(id)] = probability
                            listedMass += probability
                        }
                        let label = Int(tokens[window][position + 1])
                        if exact {
                            // The label at exp(its log-probability); drawn: the other ids share the rest by the draws not on it.
                            let exactProbability = exp(Double(target.labelLogProbability))
                            if let draws {
                                let others = Double(draws) - (target.ids.firstIndex(of: Int32(label)).map { Double(target.values[$0]) } ?? 0)
                                for (id, value) in zip(target.ids, target.values) { p[Int(id)] = others > 0 ? (1 - exactProbability) * Double(value) / others : 0 }
                            }
                            p[label] = exactProbability
                            listedMass = p.reduce(0, +)
                        }
                        let listedIDs = Set(target.ids.map(Int.init) + (exact ? [label] : []))
                        if tail == .uniform {
                            let rest = max(0, 1 - listedMass) / Double(vocabulary - listedIDs.count)
                            for id in 0..<vocabulary where !listedIDs.contains(id) { p[id] = rest }
                        }
                        if tail == .prior, let draws, !exact {
                            // The tokens drawn at most once share the drawn-once mass: (c + a prior / Z) / (n1 + a) of it.
                            let count = (0..<vocabulary).map { id in Double(target.ids.firstIndex(of: Int32(id)).map { target.values[$0] } ?? 0) }
                            let once = (0..<vocabulary).filter { count[$0] <= 1 }
                            let z = once.reduce(0.0) { $0 + prior[$1] }
                            for id in once { p[id] = drawnOnce / Double(draws) * (count[id] + priorWeight * prior[id] / z) / (drawnOnce + priorWeight) }
                        } else if tail == .prior {
                            let unlisted = (0..<vocabulary).filter { !listedIDs.contains($0) }
                            let z = unlisted.reduce(0.0) { $0 + prior[$1] }
                            for id in unlisted { p[id] = max(0, 1 - listedMass) * prior[id] / z }
                        }
                        let z = (0..<vocabulary).map { Double(logits[row * vocabulary + $0]) / temperature }
                        let top = z.max()!, logNorm = log(z.reduce(0) { $0 + exp($1 - top) }) + top
                        let q = z.map { exp($0 - logNorm) }
                        var pt: [Double]
                        if tail == .bucket {
                            // k + 1 buckets tempered; the last spread like the student's own tail.
                            let restTempered = pow(max(0, 1 - listedMass), 1 / temperature)
                            let sum = target.ids.reduce(restTempered) { $0 + pow(p[Int($1)], 1 / temperature) }
                            let studentRest = (0..<vocabulary).filter { !target.ids.contains(Int32($0)) }.reduce(0.0) { $0 + q[$1] }
                            pt = (0..<vocabulary).map { target.ids.contains(Int32($0)) ? pow(p[$0], 1 / temperature) / sum
                                                                                       : restTempered / sum * q[$0] / studentRest }
                        } else {
                            let tempered = p.map { pow($0, 1 / temperature) }, sum = tempered.reduce(0, +)
                            pt = tempered.map { $0 / sum }
                        }
                        for v in 0..<vocabulary where pt[v] > 0 { total += pt[v] * (log(pt[v]) - (z[v] - logNorm)) }
                        for v in 0..<vocabulary { expectedGradient[row * vocabulary + v] = temperature * temperature * (q[v] - pt[v]) / temperature / rows }
                    }
                }
                let expectedLoss = temperature * temperature * total / rows
                XCTAssertEqual(Double(result.loss), expectedLoss, accuracy: 1e-4 * max(1, expectedLoss), "\(backend.name) \(spec) \(tail) exact \(exact)")
                let comparison = Comparison(try gradient.toArray(), reference: expectedGradient)
                XCTAssertTrue(comparison.passes(tolerance: 1e-5), "\(backend.name) \(spec) \(tail) exact \(exact): \(comparison)")
                let labelSum = stored.values.joined().reduce(0.0) { $0 - Double($1.labelLogProbability) }
                XCTAssertEqual(Double(crossEntropy), labelSum / rows, accuracy: 1e-5)
                XCTAssertEqual(try teacher.likelihood(windows: [10, 11, 12]).meanNLL, labelSum / rows, accuracy: 1e-9)
            }
        }
    }

    /// A batch's rows hold a multiple of ``SparseTeacher/slotGranule`` slots (tensors of one size from
    /// step to step), the slots past a row's ids empty (-1, -inf) and the loss and gradient with them
    /// bit for bit those of the rows cut to the widest; the uniform tail, whose slots carry tail ids, keeps k exact.
    func testRowsArePaddedToTheSlotGranuleWithoutChangingTheLoss() throws {
        let (seqLen, vocabulary) = (4, 300)
        var random = SeededRandom(seed: 5)
        let stored = (0..<2).map { _ in
            (0..<seqLen - 1).map { _ -> SparseTarget in
                let ids = Array(Set((0..<1 + random.uniform(below: 70)).map { _ in Int32(random.uniform(below: vocabulary)) })).sorted()
                return SparseTarget(ids: ids, values: ids.map { _ in Float(1 + random.uniform(below: 9)) }, tailMass: 0, labelLogProbability: -1)
            }
        }
        let widest = stored.joined().map(\.ids.count).max()!
        for backend in try TestBackends.all() {
            for tail in [MissingTeacherMass.renormalize, .bucket, .uniform] {
                let teacher = try SparseTeacher(spec: .sampled(draws: 600), tail: tail, seqLen: seqLen, vocabulary: vocabulary, backend: backend) { stored[$0] }
                let (padded, _) = try teacher.topK(windows: [0, 1])
                let k = padded.ids.shape[1]
                XCTAssertEqual(k, tail == .uniform ? widest : (widest + SparseTeacher.slotGranule - 1) / SparseTeacher.slotGranule * SparseTeacher.slotGranule)
                let (ids, values) = (try padded.ids.toArray(), try padded.values.toArray())
                for (row, target) in (stored[0] + [nil] + stored[1] + [nil]).enumerated() {
                    let listed = target?.ids.count ?? 1
                    XCTAssertEqual(ids[row * k..<row * k + listed].map { Int32($0) }, target?.ids ?? [0])
                    if tail != .uniform {
                        XCTAssertTrue(ids[row * k + listed..<(row + 1) * k].allSatisfy { $0 == -1 } && values[row * k + listed..<(row + 1) * k].allSatisfy { $0 == -.infinity })
                    }
                }
                guard tail != .uniform else { continue }
                let cut = TopKTeacher(ids: try backend.tensor((0..<2 * seqLen).flatMap { ids[$0 * k..<$0 * k + widest] }, shape: [2 * seqLen, widest], label: "ids"),
                                      values: try backend.tensor((0..<2 * seqLen).flatMap { values[$0 * k..<$0 * k + widest] }, shape: [2 * seqLen, widest], label: "values"),
                                      missingMass: tail)
                let logits = random.normals(2 * seqLen * vocabulary, scale: 4)
                var results: [(loss: Float, gradient: [Float])] = []
                for topK in [padded, cut] {
                    let student = try backend.tensor(logits, shape: [2 * seqLen, vocabulary], label: "student logits")
                    let gradient = try backend.tensor(shape: student.shape, label: "gradient")
                    let result = try DistillationLoss(temperature: 2)(student: student, teacher: .topK(topK), gradient: .into(gradient))
                    results.append((result.loss, try gradient.toArray()))
                }
                XCTAssertEqual(results[0].loss, results[1].loss, "\(backend.name) \(tail)")
                XCTAssertEqual(results[0].gradient, results[1].gradient, "\(backend.name) \(tail)")
            }
        }
    }

    /// Targets read ahead (``SparseTeacher/readAhead(windowsOf:)``, on a thread of their own) are
    /// taken by the batch that asks for their windows without decoding them again, and equal the
    /// targets decoded when asked; a batch not read ahead is decoded when asked; batches skipped, or
    /// two read-ahead calls old, are dropped; an error met while reading ahead reaches the batch that asks.
    func testReadAheadTargetsAreTakenOnceAndTheirErrorsReachTheAsker() throws {
        let (seqLen, vocabulary) = (4, 60)
        struct Refused: Error, CustomStringConvertible { let description = "window 9 is truncated" }
        let decoded = WindowCount()
        func stored(_ window: Int) throws -> [SparseTarget] {
            decoded.add(window)
            if window == 9 { throw Refused() }
            var random = SeededRandom(seed: UInt64(window))
            return (0..<seqLen - 1).map { _ in
                let ids = Array(Set((0..<1 + random.uniform(below: 20)).map { _ in Int32(random.uniform(below: vocabulary)) })).sorted()
                return SparseTarget(ids: ids, values: ids.map { _ in Float(1 + random.uniform(below: 4)) }, tailMass: 0, labelLogProbability: -1)
            }
        }
        for backend in try TestBackends.all() {
            decoded.reset()
            let teacher = try SparseTeacher(spec: .sampled(draws: 100), tail: .renormalize, seqLen: seqLen, vocabulary: vocabulary,
                                            backend: backend, targetsOfWindow: stored)
            let direct = try SparseTeacher(spec: .sampled(draws: 100), tail: .renormalize, seqLen: seqLen, vocabulary: vocabulary,
                                           backend: backend) { window in try stored(window) }
            func assertTaken(_ windows: [Int], decodings: Int, _ line: UInt = #line) throws {
                let (taken, crossEntropy) = try teacher.topK(windows: windows)
                let (expected, expectedCrossEntropy) = try direct.topK(windows: windows)
                XCTAssertEqual(try taken.ids.toArray(), try expected.ids.toArray(), "\(backend.name) \(windows)", line: line)
                XCTAssertEqual(try taken.values.toArray(), try expected.values.toArray(), "\(backend.name) \(windows)", line: line)
                XCTAssertEqual(crossEntropy, expectedCrossEntropy, line: line)
                // `direct` decoded each window once more.
                XCTAssertEqual(windows.map { decoded.count($0) }, windows.map { _ in decodings + 1 }, "\(backend.name) \(windows)", line: line)
            }
            teacher.readAhead(windowsOf: [([0, 1], nil), ([2, 3], nil)])
            teacher.readAhead(windowsOf: [([4, 5], nil)])
            try assertTaken([0, 1], decodings: 1)
            try assertTaken([6, 7], decodings: 1)  // not read ahead
            try assertTaken([4, 5], decodings: 1)  // [2, 3], skipped, is dropped
            try assertTaken([2, 3], decodings: 2)
            teacher.readAhead(windowsOf: [([10, 11], nil)])
            teacher.readAhead(windowsOf: [([12, 13], nil)])
            teacher.readAhead(windowsOf: [([14, 15], nil)])  // [10, 11], two calls old, is dropped
            try assertTaken([10, 11], decodings: 2)
            try assertTaken([12, 13], decodings: 1)
            try assertTaken([14, 15], decodings: 1)
            teacher.readAhead(windowsOf: [([8, 9], nil)])
            XCTAssertThrowsError(try teacher.topK(windows: [8, 9])) { XCTAssertEqual("\($0)", "window 9 is truncated") }
            XCTAssertEqual(decoded.count(9), 1, "the failed batch was read ahead, not decoded again")
        }
    }

    /// Whole training steps from cached targets (gradient accumulation 2) take the same losses,
    /// gradient norms and weights when the trainer reads each step's targets ahead as when it reads
    /// them when asked, on both backends. The trainer reads ahead exactly the next step's batches,
    /// and each window is decoded once (a step's batches past the last at most once more).
    func testStepsReadingTheirTargetsAheadEqualStepsReadingThemWhenAsked() throws {
        let model = DistillationStepTests.config
        let studentParameters = try StudentGradientTests.randomParameters(model, seed: 71)
        var random = SeededRandom(seed: 72)
        let tokens = (0..<600).map { _ in Int32(random.uniform(below: model.vocabulary)) }
        var config = TrainingConfig()
        (config.batchSize, config.seqLen, config.gradientAccumulation, config.steps, config.temperature) = (2, 9, 2, 4, 1)
        let dataset = try TokenDataset(tokens: tokens, sequenceLength: config.seqLen, validationFraction: 0.1, seed: 3)
        let decoded = WindowCount()
        let seqLen = config.seqLen
        func stored(_ window: Int) -> [SparseTarget] {
            decoded.add(window)
            var random = SeededRandom(seed: UInt64(1000 + window))
            return (0..<seqLen - 1).map { _ in
                let ids = Array(Set((0..<1 + random.uniform(below: 40)).map { _ in Int32(random.uniform(below: model.vocabulary)) })).sorted()
                return SparseTarget(ids: ids, values: ids.map { _ in Float(1 + random.uniform(below: 5)) }, tailMass: 0, labelLogProbability: -2)
            }
        }
        // Each step's micro-batches' windows, one step past the last.
        var drawn = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
        let stepWindows = (0...config.steps).map { _ in (0..<config.gradientAccumulation).map { _ in drawn.next().windows } }
        let windowsPerStep = config.gradientAccumulation * config.batchSize
        for backend in try TestBackends.all() {
            var runs: [[Float]] = []
            for readsAhead in [false, true] {
                decoded.reset()
                var sparse = try SparseTeacher(spec: .sampled(draws: 300), tail: .renormalize, seqLen: seqLen, vocabulary: model.vocabulary,
                                               backend: backend, targetsOfWindow: stored)
                sparse.readsAhead = readsAhead
                let teacher = ReadAheadRecorder(sparse)
                let trainer = try Trainer(config: config, student: try StudentModel(parameters: studentParameters, backend: backend),
                                          teacher: teacher, features: [], objective: DistillationObjective(config: config))
                var sampler = try BatchSampler(dataset: dataset, batchSize: config.batchSize)
                var record: [Float] = []
                for step in 1...config.steps {
                    let parts = try trainer.step(step, batches: &sampler)
                    record += [parts.loss, parts.gradientNorm]
                }
                record += try trainer.student.outputWeight.value.toArray()
                runs.append(record)
                XCTAssertEqual(teacher.readAhead, readsAhead ? Array(stepWindows.dropFirst()) : [], backend.name)
                // Read ahead, the last step's next batches may still be decoding.
                let decodings = config.steps * windowsPerStep
                XCTAssertTrue((decodings...decodings + (readsAhead ? windowsPerStep : 0)).contains(decoded.total),
                              "\(backend.name), read ahead: \(readsAhead): \(decoded.total) decodings")
            }
            XCTAssertEqual(runs[0], runs[1], backend.name)
        }
    }
}

/// How often each window's targets were decoded (from several threads).
private final class WindowCount: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [Int: Int] = [:]
    func add(_ window: Int) { lock.withLock { counts[window, default: 0] += 1 } }
    func count(_ window: Int) -> Int { lock.withLock { counts[window] ?? 0 } }
    var total: Int { lock.withLock { counts.values.reduce(0, +) } }
    func reset() { lock.withLock { counts = [:] } }
}

/// A cached teacher whose read-ahead calls are recorded (each call's batches' windows).
private final class ReadAheadRecorder: TeacherSource {
    let sparse: SparseTeacher
    private(set) var readAhead: [[[Int]]] = []
    init(_ sparse: SparseTeacher) { self.sparse = sparse }
    var readsAhead: Bool { sparse.readsAhead }
    func readAhead(_ batches: [TrainingBatch]) {
        readAhead.append(batches.map(\.windows))
        sparse.readAhead(batches)
    }
    func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets { try sparse.targets(for: batch, needs: needs) }
    func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult { try sparse.likelihood(of: tokens, windows: windows) }
}
