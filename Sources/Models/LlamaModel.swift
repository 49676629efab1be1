import Foundation
import Tensor

/// What a forward pass hands back besides the logits.
public struct LlamaForwardOptions {
    /// Keep the residual stream after every block: `hiddenStates[l]` is `[B * T, C]` after block l.
    public var keepHiddenStates = false
    /// Keep the attention probabilities of these blocks: `[B, H, T, T]` each.
    public var attentionLayers: Set<Int> = []
    /// Compute the LM head (logits); false returns only the final normed hidden state.
    public var computeLogits = true

    public init(keepHiddenStates: Bool = false, attentionLayers: Set<Int> = [], computeLogits: Bool = true) {
        self.keepHiddenStates = keepHiddenStates
        self.attentionLayers = attentionLayers
        self.computeLogits = computeLogits
    }
}

public struct LlamaForwardResult {
    /// [B * T, V], or nil when not asked for.
    public var logits: Tensor?
    /// [B * T, C]: the final hidden state after the output norm (the LM head's input).
    public var finalHidden: Tensor
    public var hiddenStates: [Tensor]
    public var attentionProbabilities: [Int: Tensor]
}

/// Keys and values of earlier positions of `batch` sequences that advance together (generation:
/// the prompts, then one token each per forward). Prompts of different lengths are left-padded to
/// one length: sequence s's first `leadingPadding[s]` positions are filler that no query attends
/// to, and its real tokens take RoPE positions from 0.
public final class LlamaKVCache {
    public let capacity: Int
    /// Sequences held; every forward with the cache takes exactly this many.
    public let batch: Int
    /// Positions filled so far (the same for every sequence, padding included).
    public internal(set) var length = 0
    /// Per sequence: the filler positions before its first token.
    public let leadingPadding: [Int]
    /// i32 [batch]: ``leadingPadding``, the first key each sequence's queries see; nil when no sequence is padded.
    let keyStarts: Tensor?
    /// Per block: [batch * Hkv * capacity, hs], sequence-major, then head-major.
    let keys: [Tensor]
    let values: [Tensor]

    public init(weights: LlamaWeights, capacity: Int, batch: Int = 1, leadingPadding: [Int]? = nil) throws {
        let config = weights.config
        guard capacity >= 1, batch >= 1 else { throw ModelError.badInput("a KV cache needs a capacity and a batch of at least 1 (got \(capacity), \(batch))") }
        let padding = leadingPadding ?? Array(repeating: 0, count: batch)
        guard padding.count == batch, padding.allSatisfy({ 0 <= $0 && $0 < capacity }) else {
            throw ModelError.badInput("a KV cache of \(batch) sequences and \(capacity) positions needs one leading padding in 0..<\(capacity) per sequence (got \(padding))")
        }
        self.capacity = capacity
        self.batch = batch
        self.leadingPadding = padding
        keyStarts = padding.contains(where: { $0 > 0 })
            ? try weights.backend.indexTensor(padding.map { Int32($0) }, shape: [batch], label: "kv cache key starts") : nil
        let rows = batch * config.kvHeads * capacity
        keys = try (0..<config.layers).map { try weights.backend.tensor(shape: [rows, config.headDimension], label: "kv cache keys \($0)") }
        values = try (0..<config.layers).map { try weights.backend.tensor(shape: [rows, config.headDimension], label: "kv cache values \($0)") }
        // Zeros where nothing is written yet: attention runs over the whole capacity, its masked
        // probabilities 0 times these values.
        for tensor in keys + values { try weights.backend.fill(tensor, value: 0) }
    }
}

/// The llama forward pass on any backend: token embedding, RMSNorm, q/k/v projections, RoPE,
/// grouped-query causal attention, output projection, SwiGLU feed-forward, residuals, final norm,
/// LM head. Quantized weight matrices are expanded into one fp32 scratch buffer just before their GEMM;
/// a quantized LM head goes through that scratch in vocabulary chunks, so the device holds the file's
/// bytes plus one block matrix in fp32, not the model in fp32.
///
/// Shapes: B sequences of T tokens, C width, H heads (Hkv key/value heads, G = H / Hkv), hs head size,
/// F feed-forward width, V vocabulary.
public final class LlamaModel {
    public let weights: LlamaWeights
    public var config: LlamaConfig { weights.config }
    public var backend: any Backend { weights.backend }
    /// RoPE pair layout: adjacent for GGUF llama weights, halves for Hugging Face weights.
    public let ropeLayout: RoPE.PairLayout
    /// The element type of the weight-matrix GEMMs' inputs: f32, bf16 or f16 (weights expanded
    /// straight from their blocks to the 16-bit type, activations narrowed once per use, products
    /// accumulated in fp32). Everything else (norms, RoPE, attention, softmax) stays fp32. f16 keeps
    /// 3 more mantissa bits than bf16 but reaches only ±65504: a forward whose final hidden state is
    /// not finite is run again with every GEMM input checked, and the first past the range is named
    /// (``ModelError/f16Overflow(_:)``).
    public let precision: DType
    /// While ``firstF16Overflow(_:)`` runs: the first GEMM input or expanded weight past f16's range.
    private var overflowProbe: (found: String?, active: Bool) = (nil, false)
    /// Scratch in the compute type for one expanded weight matrix: the largest matrix not already in
    /// it, or `minimumLMHeadChunk` rows of the LM head if that is larger.
    private let weightScratch: Tensor?
    static let minimumLMHeadChunk = 1024

    /// - Parameter precision: `.f32`, `.bf16` or `.f16` (``precision``).
    public init(weights: LlamaWeights, ropeLayout: RoPE.PairLayout = .adjacent, precision: DType = .f32) throws {
        guard [.f32, .bf16, .f16].contains(precision) else {
            throw ModelError.unsupported("model precision \(precision.rawValue): use f32, bf16 or f16")
        }
        self.weights = weights
        self.ropeLayout = ropeLayout
        self.precision = precision
        let blockMatrices = weights.blocks.flatMap(\.matrices).filter { $0.dtype != precision }.map(\.count)
        let lmHead = weights.output.dtype != precision ? [Self.minimumLMHeadChunk * weights.config.width] : []
        weightScratch = try (blockMatrices + lmHead).max().map {
            try weights.backend.tensor(shape: [$0], dtype: precision, label: "expanded weight scratch")
        }
    }

    /// Whether `backend` runs bf16 GEMMs (a host engine: the CPU backend or a CPU OpenCL device): one 1 x 1 x 1 product, or its error.
    public static func probeBF16(on backend: any Backend) throws {
        let one = try backend.tensor([1], shape: [1, 1], dtype: .bf16, label: "bf16 probe")
        try backend.gemm(one, one, into: try backend.tensor(shape: [1, 1], label: "bf16 probe product"))
    }

    /// `x` as the weight GEMMs take it: itself in f32, a 16-bit copy otherwise (made once, used by
    /// every GEMM that reads it). `site` names it for an f16 overflow.
    func gemmInput(_ x: Tensor, _ site: @autoclosure () -> String) throws -> Tensor {
        if overflowProbe.active && overflowProbe.found == nil {
            let largest = try x.toArray().reduce(Float(0)) { max($0, $1.magnitude) }  // the diagnostic run only
            if !(largest <= Self.f16Largest) { overflowProbe.found = "\(site()) (largest magnitude \(largest))" }
        }
        return try backend.converted(x, to: precision)
    }

    /// f16's largest finite value; past it (by half an ulp) a value rounds to inf.
    static let f16Largest = Float(Float16.greatestFiniteMagnitude)

    /// With f16 GEMMs, the first GEMM input or expanded weight that `tokens` push past f16's range,
    /// named, from a forward with every one read back to the host (slow: the error path); nil when
    /// none is, or in fp32 and bf16.
    public func firstF16Overflow(_ tokens: [[Int32]]) throws -> String? {
        guard precision == .f16 else { return nil }
        overflowProbe = (nil, true)
        defer { overflowProbe = (nil, false) }
        _ = try forward(tokens, options: LlamaForwardOptions(computeLogits: true))
        return overflowProbe.found
    }

    /// In f16: `result`'s final hidden state checked (one row reduction, n floats to the host). An
    /// overflow upstream makes it non-finite, and the LM head narrows it to f16 too: when a row's sum
    /// of squares is not below 65504², the forward of `tokens` runs again to name the tensor past f16's range.
    func requireF16Range(_ result: LlamaForwardResult, tokens: [[Int32]]) throws {
        guard precision == .f16, !overflowProbe.active else { return }
        let hidden = result.finalHidden
        let sums = try backend.tensor(shape: [hidden.rowCount], label: "f16 range check")
        try backend.reduceRows(.sumSquares, hidden, into: sums)
        let rows = try sums.toArray()
        guard rows.contains(where: { !($0 < Self.f16Largest * Self.f16Largest) }) else { return }
        let site = try firstF16Overflow(tokens)
        guard site != nil || rows.contains(where: { !$0.isFinite }) else { return }  // large, but every value within range
        throw ModelError.f16Overflow("f16 overflow in the model's forward: \(site ?? "a GEMM's fp32 result past fp32's range") "
                                     + "exceeds f16's largest value 65504; run this model in bf16 (fp32's range) or fp32")
    }

    /// The same model with every weight matrix expanded once into the compute type and kept. A
    /// forward expands each quantized matrix afresh (the weights stay quantized in memory); over a
    /// decode step's few rows that expansion costs more than the GEMMs, so generation from a
    /// quantized model is several times faster on the expanded copy, for its bytes (2 a weight in
    /// bf16 or f16, 4 in fp32). The token embedding stays as stored (its rows are gathered).
    public func expanded() throws -> LlamaModel {
        guard expansionBytes > 0 else { return self }
        func expand(_ w: Tensor) throws -> Tensor {
            guard w.dtype != precision else { return w }
            let out = try backend.tensor(shape: w.shape, dtype: precision, label: "\(w.label) (\(precision.rawValue))")
            if w.dtype == .f32 { try backend.convert(w, into: out) } else { try backend.dequantize(w, into: out) }
            return out
        }
        let blocks = try weights.blocks.map { b in
            LlamaBlockWeights(attentionNorm: b.attentionNorm, query: try expand(b.query), key: try expand(b.key), value: try expand(b.value),
                              attentionOutput: try expand(b.attentionOutput), feedForwardNorm: b.feedForwardNorm, gate: try expand(b.gate),
                              up: try expand(b.up), down: try expand(b.down))
        }
        let output = try expand(weights.output)
        return try LlamaModel(weights: LlamaWeights(config: config, tokenEmbedding: weights.tokenEmbedding, outputNorm: weights.outputNorm,
                                                    output: output, blocks: blocks), ropeLayout: ropeLayout, precision: precision)
    }

    /// ``expanded()`` where that costs at most a quarter of the device's memory budget, else the model
    /// itself: keeping the expanded matrices beats expanding them at every forward (generation, the
    /// training and cache-building teacher), and the rest of the budget is left for activations.
    public func expandedWhereItFits() throws -> LlamaModel {
        expansionBytes <= backend.ledger.budgetBytes / 4 ? try expanded() : self
    }

    /// Bytes ``expanded()`` adds: every matrix not already in the compute type, in it.
    public var expansionBytes: Int {
        (weights.blocks.flatMap(\.matrices) + [weights.output]).filter { $0.dtype != precision }
            .reduce(0) { $0 + precision.byteCount(elements: $1.count) }
    }

    /// Bytes of device memory the model holds: weights plus the dequantization scratch.
    public var residentBytes: Int { weights.residentBytes + (weightScratch?.byteCount ?? 0) }

    /// y [N, out] = x [N, in] W^T for a weight W [out, in] of any stored type; `x` from ``gemmInput(_:_:)``.
    func linear(_ x: Tensor, _ w: Tensor, into y: Tensor) throws {
        if w.dtype == precision {
            try backend.gemm(x, w, into: y, transposeB: true)
            return
        }
        let expanded = try weightScratch!.rows(0..<w.count).reshaped(w.shape)
        if w.dtype == .f32 { try backend.convert(w, into: expanded) } else { try backend.dequantize(w, into: expanded) }
        if overflowProbe.active && overflowProbe.found == nil, precision == .f16, try expanded.toArray().contains(where: { $0.isInfinite }) {
            overflowProbe.found = "weight \(w.label) (expanded to f16)"
        }
        try backend.gemm(x, expanded, into: y, transposeB: true)
    }

    /// logits [N, V] = x [N, C] W_out^T; a quantized W_out [V, C] is expanded one vocabulary chunk at a time.
    func lmHead(_ x: Tensor, into logits: Tensor) throws {
        let w = weights.output
        let x = try gemmInput(x, "the LM head's input (the final norm)")
        guard w.dtype != precision, let weightScratch else {
            try linear(x, w, into: logits)
            return
        }
        let (n, c, v) = (x.shape[0], config.width, config.vocabulary)
        let chunk = min(v, weightScratch.count / c)
        let partial = try backend.tensor(shape: [n * chunk], label: "logits chunk")
        for first in stride(from: 0, to: v, by: chunk) {
            let rows = min(chunk, v - first)
            let out = try partial.rows(0..<(n * rows)).reshaped([n, rows])
            try linear(x, w.rows(first..<(first + rows)), into: out)
            try backend.copyColumns(out, into: logits, column: first)
        }
    }

    /// Runs `tokens` ([B][T], equal lengths) through the model. With a cache (of B sequences), each
    /// sequence's tokens continue its cached positions and their keys and values are appended; the
    /// cache's leading padding of a sequence is neither attended to nor counted in its positions.
    public func forward(_ tokens: [[Int32]], cache: LlamaKVCache? = nil,
                        options: LlamaForwardOptions = LlamaForwardOptions()) throws -> LlamaForwardResult {
        let b = tokens.count, t = tokens.first?.count ?? 0
        let (c, h, hkv, hs, f, v) = (config.width, config.heads, config.kvHeads, config.headDimension, config.feedForward, config.vocabulary)
        let g = config.groupSize
        guard b > 0, t > 0, tokens.allSatisfy({ $0.count == t }) else {
            throw ModelError.badInput("forward needs at least one token and sequences of equal length (got lengths \(tokens.map(\.count)))")
        }
        let start = cache?.length ?? 0
        if let cache {
            guard b == cache.batch else { throw ModelError.badInput("the KV cache holds \(cache.batch) sequences; got a batch of \(b)") }
            guard options.attentionLayers.isEmpty else { throw ModelError.badInput("attention probabilities are kept only by a forward without a KV cache") }
            guard start + t <= cache.capacity else {
                throw ModelError.badInput("\(start + t) positions exceed the KV cache's \(cache.capacity)")
            }
        }
        guard start + t <= config.contextLength else {
            throw ModelError.badInput("\(start + t) positions exceed the model's context length \(config.contextLength)")
        }
        let flat = tokens.flatMap { $0 }
        if let bad = flat.first(where: { $0 < 0 || Int($0) >= v }) {
            throw ModelError.badInput("token id \(bad) is outside the vocabulary of \(v)")
        }
        let n = b * t
        let keys = start + t  // L: the keys each query block sees (start is 0 without a cache)

        func scratch(_ shape: [Int], _ label: String) throws -> Tensor { try backend.tensor(shape: shape, label: label) }
        let ids = try backend.indexTensor(flat, shape: [n], label: "token ids")
        // Each token's RoPE position: its place in the sequence, after the sequence's padding (which takes position 0).
        let padding = cache?.leadingPadding ?? Array(repeating: 0, count: b)
        let positionList = (0..<n).map { Int32(max(0, start + $0 % t - padding[$0 / t])) }
        let x = try scratch([n, c], "residual")
        let xn = try scratch([n, c], "normed")
        let q = try scratch([n, h * hs], "q"), k = try scratch([n, hkv * hs], "k"), vv = try scratch([n, hkv * hs], "v")
        let qT = try scratch([b, h, t, hs], "q by head"), kT = try scratch([b, hkv, t, hs], "k by head")
        let vT = try scratch([b, hkv, t, hs], "v by head")
        let scores = try scratch([b * hkv, g * t, cache?.capacity ?? keys], "attention scores")
        let context = try scratch([b, h, t, hs], "attention context"), contextT = try scratch([b, t, h, hs], "attention context by token")
        let attentionOut = try scratch([n, c], "attention output")
        let gate = try scratch([n, f], "ffn gate"), up = try scratch([n, f], "ffn up"), down = try scratch([n, c], "ffn down")
        let rope = RoPE(heads: h, headDimension: hs, rotatedDimensions: config.ropeDimensions, base: config.ropeBase, layout: ropeLayout)
        let ropeKV = RoPE(heads: hkv, headDimension: hs, rotatedDimensions: config.ropeDimensions, base: config.ropeBase, layout: ropeLayout)
        let scale = 1 / Float(hs).squareRoot()

        var hiddenStates: [Tensor] = []
        var attentionProbabilities: [Int: Tensor] = [:]
        try backend.gatherRows(weights.tokenEmbedding, ids: ids, into: x)
        for (l, block) in weights.blocks.enumerated() {
            // Attention: x += Wo · softmax(q kᵀ / √hs, causal) v
            try backend.rmsNorm(x, weight: block.attentionNorm, epsilon: config.normEpsilon, into: xn)
            let attentionInput = try gemmInput(xn, "block \(l)'s attention input (its norm)")
            try linear(attentionInput, block.query, into: q)
            try linear(attentionInput, block.key, into: k)
            try linear(attentionInput, block.value, into: vv)
            try backend.rope(q, positions: positionList, into: q, rope)
            try backend.rope(k, positions: positionList, into: k, ropeKV)
            try backend.transpose12(q.reshaped([b, t, h, hs]), into: qT)
            try backend.transpose12(k.reshaped([b, t, hkv, hs]), into: kT)
            try backend.transpose12(vv.reshaped([b, t, hkv, hs]), into: vT)
            // Query heads of one key/value head are consecutive: [B * Hkv, G * T, hs] against the
            // [B * Hkv, L, hs] keys and values, this step's (L = T), or with a cache every sequence's
            // key/value head's whole block of it (L = capacity): this step's keys and values go into
            // columns [start, start + t) of every block at once, and the causal softmax gives the
            // positions not yet written probability 0.
            var (attendedKeys, attendedValues) = (try kT.reshaped([b * hkv, t, hs]), try vT.reshaped([b * hkv, t, hs]))
            if let cache {
                let blocks = [b * hkv, cache.capacity * hs]
                try backend.copyColumns(kT.reshaped([b * hkv, t * hs]), into: cache.keys[l].reshaped(blocks), column: start * hs)
                try backend.copyColumns(vT.reshaped([b * hkv, t * hs]), into: cache.values[l].reshaped(blocks), column: start * hs)
                attendedKeys = try cache.keys[l].reshaped([b * hkv, cache.capacity, hs])
                attendedValues = try cache.values[l].reshaped([b * hkv, cache.capacity, hs])
            }
            try backend.gemm(qT.reshaped([b * hkv, g * t, hs]), attendedKeys, into: scores, transposeB: true)
            try backend.causalSoftmax(scores, into: scores, queries: t, keyOffset: start, keyStarts: cache?.keyStarts, scale: scale)
            try backend.gemm(scores, attendedValues, into: context.reshaped([b * hkv, g * t, hs]))
            if options.attentionLayers.contains(l) {
                let kept = try scratch([b, h, t, keys], "attention probabilities \(l)")
                try backend.copy(scores, into: kept)
                attentionProbabilities[l] = kept
            }
            try backend.transpose12(context, into: contextT)
            try linear(gemmInput(contextT.reshaped([n, c]), "block \(l)'s attention context"), block.attentionOutput, into: attentionOut)
            try backend.add(x, attentionOut, into: x)

            // Feed-forward: x += W_down (silu(W_gate xn) * W_up xn)
            try backend.rmsNorm(x, weight: block.feedForwardNorm, epsilon: config.normEpsilon, into: xn)
            let feedForwardInput = try gemmInput(xn, "block \(l)'s feed-forward input (its norm)")
            try linear(feedForwardInput, block.gate, into: gate)
            try linear(feedForwardInput, block.up, into: up)
            try backend.swiglu(gate: gate, up: up, into: gate)
            try linear(gemmInput(gate, "block \(l)'s down-projection input (the SwiGLU product)"), block.down, into: down)
            try backend.add(x, down, into: x)
            if options.keepHiddenStates {
                let kept = try scratch([n, c], "hidden state \(l)")
                try backend.copy(x, into: kept)
                hiddenStates.append(kept)
            }
        }
        cache?.length = start + t
        try backend.rmsNorm(x, weight: weights.outputNorm, epsilon: config.normEpsilon, into: xn)
        var logits: Tensor?
        if options.computeLogits {
            let out = try scratch([n, v], "logits")
            try lmHead(xn, into: out)
            logits = out
        }
        let result = LlamaForwardResult(logits: logits, finalHidden: xn, hiddenStates: hiddenStates, attentionProbabilities: attentionProbabilities)
        try requireF16Range(result, tokens: tokens)
        return result
    }
}
