import Foundation
import Tensor

/// Sequences continued together on the model's backend: the prompts in one forward (shorter ones
/// left-padded to the longest, the padding masked in the cache), then one token per sequence per
/// forward through a ``LlamaKVCache`` of the whole batch, each
/// token drawn on the device by ``Backend/sampleRows(_:uniforms:into:temperature:topK:topP:)`` so
/// that only the batch's ids come back to the host. The draws' uniforms come from one seeded
/// stream, so a seed gives the same sequences on every run.
///
/// ```swift
/// var generation = try Generation(model: teacher, prompts: Array(repeating: prompt, count: 8), capacity: 96, seed: 1)
/// while generation.canContinue { let ids = try generation.step(temperature: 0.8, topK: 0, topP: 0.95) }   // [8] a step
/// ```
public struct Generation {
    public let model: LlamaModel
    public let cache: LlamaKVCache
    /// Every sequence so far: its prompt, then what was drawn (up to capacity + 1 tokens: the last
    /// one drawn is never fed back).
    public private(set) var sequences: [[Int32]]
    private var random: SplitMix64
    private var pending: [[Int32]]

    /// - Parameter capacity: the most positions the longest sequence reaches (prompt and continuation).
    public init(model: LlamaModel, prompts: [[Int32]], capacity: Int, seed: UInt64) throws {
        let length = prompts.map(\.count).max() ?? 0
        guard prompts.allSatisfy({ !$0.isEmpty }) && length >= 1 else {
            throw ModelError.badInput("generation needs at least one prompt, each of at least one token (got lengths \(prompts.map(\.count)))")
        }
        guard length < capacity, capacity <= model.config.contextLength else {
            throw ModelError.badInput("prompts of up to \(length) tokens and a capacity of \(capacity) positions: the capacity must exceed the longest prompt "
                                      + "and stay within the model's context of \(model.config.contextLength)")
        }
        self.model = model
        let padding = prompts.map { length - $0.count }
        cache = try LlamaKVCache(weights: model.weights, capacity: capacity, batch: prompts.count, leadingPadding: padding)
        sequences = prompts
        // The filler repeats the prompt's first token (any id would do: no query attends to it).
        pending = zip(prompts, padding).map { prompt, pad in Array(repeating: prompt[0], count: pad) + prompt }
        random = SplitMix64(seed: seed)
    }

    /// Whether another token fits in every sequence.
    public var canContinue: Bool { cache.length + (pending.first?.count ?? 0) <= cache.capacity }

    /// One forward of the pending tokens and one drawn token per sequence ([B]); temperature 0 is greedy.
    public mutating func step(temperature: Float, topK: Int = 0, topP: Float = 1) throws -> [Int32] {
        let backend = model.backend
        let b = pending.count, t = pending[0].count
        // Only each sequence's last position is drawn from: after a prompt, the LM head runs on those
        // B rows alone (over a batch of prompts it would otherwise cost more than the forward).
        let result = try model.forward(pending, cache: cache, options: LlamaForwardOptions(computeLogits: t == 1))
        let last: Tensor  // [B, V]
        if let logits = result.logits {
            last = logits
        } else {
            let hidden = try backend.tensor(shape: [b, model.config.width], label: "last hidden states")
            try backend.gatherRows(result.finalHidden, ids: backend.indexTensor((0..<b).map { Int32($0 * t + t - 1) }, shape: [b], label: "last rows"),
                                   into: hidden)
            last = try backend.tensor(shape: [b, model.config.vocabulary], label: "last logits")
            try model.lmHead(hidden, into: last)
        }
        let uniforms = try backend.tensor((0..<b).map { _ in Float(random.unit()) }, shape: [b], label: "draw uniforms")
        let ids = try backend.tensor(shape: [b], dtype: .i32, label: "drawn ids")
        try backend.sampleRows(last, uniforms: uniforms, into: ids, temperature: temperature, topK: topK, topP: topP)
        let drawn = try backend.downloadInt32(ids)
        if let bad = drawn.firstIndex(of: -1) {
            throw ModelError.badInput("sequence \(bad)'s logits hold no finite value (or a NaN): nothing to draw from")
        }
        for s in 0..<b { sequences[s].append(drawn[s]) }
        pending = drawn.map { [$0] }
        return drawn
    }
}
