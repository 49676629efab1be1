import Tensor

/// Where a run stands in the training data: the epoch, and how many of that epoch's shuffled
/// training windows were already handed out. A checkpoint stores it; resuming from it continues
/// with exactly the batches an uninterrupted run would have drawn.
public struct DataPosition: Codable, Equatable, Hashable, Sendable {
    public var epoch: Int
    /// Windows of this epoch's order already consumed (a multiple of the batch size when written by ``BatchSampler``).
    public var index: Int

    public init(epoch: Int = 0, index: Int = 0) {
        self.epoch = epoch
        self.index = index
    }

    public static let start = DataPosition()
}

/// One training batch: B windows of T tokens.
public struct TrainingBatch: Equatable, Sendable {
    /// [B][T] token ids; the trainer predicts tokens 1..<T of each row from the ones before.
    public let tokens: [[Int32]]
    /// The window numbers (into ``TokenDataset/window(_:)``) of the rows.
    public let windows: [Int]
    /// The position this batch was drawn at.
    public let position: DataPosition

    public init(tokens: [[Int32]], windows: [Int], position: DataPosition) {
        self.tokens = tokens
        self.windows = windows
        self.position = position
    }
}

/// A token stream cut into windows for next-token training, split into training and validation
/// windows, with a deterministic per-epoch shuffle of the training windows.
///
/// - Windows: window w is `tokens[w*T ..< (w+1)*T]`; they do not overlap, and the last
///   `tokens.count % T` tokens (fewer than one window) are not used.
/// - Validation: the LAST `v` windows of the corpus (in file order) are held out, with
///   `v = floor(windowCount * validationFraction)`, raised to 1 when the fraction is positive and
///   there are at least 2 windows, and never more than `windowCount - 1`. Taking one block at the
///   end keeps the held-out text contiguous: it meets the training text at a single seam instead
///   of sharing a document with training windows all through the corpus.
/// - Shuffle: epoch e visits the training windows in a Fisher-Yates permutation drawn from
///   ``SplitMix64`` seeded with `seed &+ e`, so every epoch has its own order and any epoch's order
///   can be recomputed from the seed alone.
///
/// ```swift
/// let dataset = try TokenDataset(tokens: corpus.tokens, sequenceLength: 256, seed: 42)
/// var sampler = try BatchSampler(dataset: dataset, batchSize: 8, position: checkpoint?.position ?? .start)
/// let batch = sampler.next()          // batch.tokens is [8][256]
/// save(sampler.position)              // resume here later
/// ```
public struct TokenDataset: Sendable {
    public static let defaultValidationFraction = 0.05

    /// The whole token stream.
    public let tokens: [Int32]
    /// T: tokens per window.
    public let sequenceLength: Int
    public let seed: UInt64
    /// Windows `0..<trainingWindowCount` train; `trainingWindowCount..<windowCount` validate.
    public let trainingWindowCount: Int
    public let validationWindowCount: Int

    public var windowCount: Int { trainingWindowCount + validationWindowCount }
    public var validationWindows: Range<Int> { trainingWindowCount..<windowCount }

    public init(tokens: [Int32], sequenceLength: Int, validationFraction: Double = TokenDataset.defaultValidationFraction,
                seed: UInt64) throws {
        guard sequenceLength >= 2 else { throw TrainingDataError.sequenceLengthTooShort(sequenceLength) }
        guard validationFraction >= 0, validationFraction < 1 else {
            throw TrainingDataError.invalidValidationFraction(validationFraction)
        }
        let windows = tokens.count / sequenceLength
        guard windows >= 1 else {
            throw TrainingDataError.corpusShorterThanOneWindow(tokens: tokens.count, sequenceLength: sequenceLength)
        }
        self.tokens = tokens
        self.sequenceLength = sequenceLength
        self.seed = seed
        let validation = TokenDataset.validationWindowCount(windows: windows, fraction: validationFraction)
        validationWindowCount = validation
        trainingWindowCount = windows - validation
    }

    /// How many of `windows` windows are held out for `fraction` (see the type's documentation).
    public static func validationWindowCount(windows: Int, fraction: Double) -> Int {
        guard fraction > 0, windows >= 2 else { return 0 }
        return min(windows - 1, max(1, Int((Double(windows) * fraction).rounded(.down))))
    }

    /// Window w: [T] tokens.
    public func window(_ index: Int) -> [Int32] {
        precondition(index >= 0 && index < windowCount, "window \(index) of \(windowCount)")
        return Array(tokens[(index * sequenceLength)..<((index + 1) * sequenceLength)])
    }

    /// The training windows in the order epoch `epoch` visits them.
    public func trainingOrder(epoch: Int) -> [Int] {
        var order = Array(0..<trainingWindowCount)
        var random = SplitMix64(seed: seed &+ UInt64(truncatingIfNeeded: epoch))
        // Fisher-Yates: position i takes a uniform pick from the positions not yet fixed (0...i).
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, random.uniform(below: i + 1))
        }
        return order
    }

    /// The validation windows in corpus order, in batches of at most `batchSize` ([b][T] each; the last may be smaller).
    public func validationBatches(batchSize: Int) -> [[[Int32]]] {
        precondition(batchSize > 0)
        return stride(from: validationWindows.lowerBound, to: validationWindows.upperBound, by: batchSize).map { first in
            (first..<min(first + batchSize, windowCount)).map(window)
        }
    }
}

/// Hands out training batches of B windows in the dataset's per-epoch order, and records where it
/// is (``position``) so a resumed run draws the same batches.
///
/// Each epoch yields `floor(trainingWindows / B)` full batches; the `trainingWindows % B` windows
/// at the end of an epoch's order are skipped (every batch has the same shape, and because each
/// epoch has its own order, different windows are skipped in different epochs).
public struct BatchSampler: Sendable {
    public let dataset: TokenDataset
    /// B: windows per batch.
    public let batchSize: Int
    /// The position of the next batch.
    public private(set) var position: DataPosition
    /// The current epoch's order (recomputed when the epoch changes).
    private var order: [Int]

    public var batchesPerEpoch: Int { dataset.trainingWindowCount / batchSize }

    /// - Parameter position: where to start: ``DataPosition/start``, or a position saved from an earlier run.
    public init(dataset: TokenDataset, batchSize: Int, position: DataPosition = .start) throws {
        guard batchSize >= 1, batchSize <= dataset.trainingWindowCount else {
            throw TrainingDataError.invalidBatchSize(batchSize: batchSize, trainingWindows: dataset.trainingWindowCount)
        }
        guard position.epoch >= 0, position.index >= 0, position.index <= dataset.trainingWindowCount else {
            throw TrainingDataError.positionOutOfRange(epoch: position.epoch, index: position.index,
                                                       trainingWindows: dataset.trainingWindowCount)
        }
        self.dataset = dataset
        self.batchSize = batchSize
        self.position = position
        order = dataset.trainingOrder(epoch: position.epoch)
        normalizePosition()
    }

    /// Moves to the next epoch when fewer than B windows are left in this one.
    private mutating func normalizePosition() {
        if position.index + batchSize > order.count {
            position = DataPosition(epoch: position.epoch + 1, index: 0)
            order = dataset.trainingOrder(epoch: position.epoch)
        }
    }

    /// The next batch ([B][T] tokens); the sampler never runs out (epochs follow one another).
    public mutating func next() -> TrainingBatch {
        let windows = Array(order[position.index..<(position.index + batchSize)])
        let batch = TrainingBatch(tokens: windows.map(dataset.window), windows: windows, position: position)
        position.index += batchSize
        normalizePosition()
        return batch
    }

    /// The next `count` batches ``next()`` would give (into the next epochs if need be), without moving.
    public func upcoming(_ count: Int) -> [TrainingBatch] {
        var ahead = self
        return (0..<count).map { _ in ahead.next() }
    }
}
