import Checkpoint
import Foundation
import GGUF
import Models
import Tensor

/// Gradients by student block for ``StudentModel/backward(finalHiddenGradient:hiddenGradients:attentionGradients:)``,
/// summed where several feature losses reach the same block.
extension Dictionary where Key == Int, Value == Tensor {
    /// Adds `gradient` to the gradient of `block` in place, or makes it that block's gradient.
    mutating func accumulate(_ gradient: Tensor, at block: Int) throws {
        if let earlier = self[block] { try earlier.backend.add(earlier, gradient, into: earlier) } else { self[block] = gradient }
    }
}

/// The activations one block's backward needs, saved by the forward. N = B * T tokens. The weight
/// GEMMs' inputs and the attention's operands are kept as the backward's GEMMs read them (bf16 in
/// mixed precision: half the memory); the residual stream stays fp32.
struct BlockActivations {
    let input: Tensor            // [N, C] residual stream entering the block
    let attentionNormed: Tensor  // [N, C] GEMM input
    let queries: Tensor          // [B, H, T, hs] after RoPE (in the compute type)
    let keys: Tensor             // [B, Hkv, T, hs] after RoPE (in the compute type)
    let values: Tensor           // [B, Hkv, T, hs] (in the compute type)
    let probabilities: Tensor    // [B * Hkv, G * T, T] (in the compute type)
    let context: Tensor          // [N, C]: the attention output projection's input (token-major), GEMM input
    let middle: Tensor           // [N, C] residual stream after attention
    let feedForwardNormed: Tensor // [N, C] GEMM input
    let gate: Tensor             // [N, F] before SwiGLU (in the compute type)
    let up: Tensor               // [N, F] (in the compute type)
    let activation: Tensor       // [N, F] silu(gate) * up, GEMM input
}

/// A trainable llama student: fp32 parameters on a backend, an explicit forward that keeps what the
/// backward needs, and a backward that adds every parameter's gradient (llm.c's layer pairs).
///
/// Mixed precision follows the parameters: when the run's ``ParameterArena`` gives the matrices bf16
/// compute copies, every weight GEMM (forward, input gradient, weight gradient) reads bf16 operands
/// (activations and their gradients narrowed once per use) and accumulates in fp32 into fp32
/// outputs and fp32 gradients. Norms, RoPE, attention scores and softmax, SwiGLU, the residual
/// stream and the embedding stay fp32; the SwiGLU inputs are kept for the backward in bf16 too.
///
/// The LM head and the loss are outside: ``forward(_:)`` returns the final normed hidden state
/// [N, C] and ``backward(finalHiddenGradient:)`` takes its gradient; the LM head weight
/// (``outputWeight``, the embedding when tied) and its gradient are reachable for the loss path.
public final class StudentModel {
    public let config: LlamaConfig
    public let backend: any Backend
    public let parameters: [Parameter]
    private let byName: [String: Parameter]

    /// Tokens and shapes of the last forward, and its saved activations.
    private var saved: (tokens: [Int32], batch: Int, length: Int, blocks: [BlockActivations], last: Tensor, finalHidden: Tensor)?

    /// Uploads `parameters` (fp32, GGUF names and layout) as the student's trainable tensors, with zero gradients and moments.
    public init(parameters: LlamaParameters, backend: any Backend) throws {
        config = parameters.config
        self.backend = backend
        self.parameters = try LlamaParameters.expectedShapes(for: parameters.config).map { name, shape in
            try Parameter(name: name, shape: shape, values: parameters.tensors[name]!.values, backend: backend)
        }
        byName = Dictionary(uniqueKeysWithValues: self.parameters.map { ($0.name, $0) })
    }

    public func parameter(_ name: String) -> Parameter { byName[name]! }
    /// Block `l`'s parameters (norms and matrices).
    public func blockParameters(_ l: Int) -> [Parameter] { parameters.filter { $0.name.hasPrefix("blk.\(l).") } }
    /// The LM head [V, C]: the token embedding when tied.
    public var outputWeight: Parameter { config.tiedEmbeddings ? tokenEmbedding : parameter("output.weight") }
    /// The token embedding [V, C].
    public var tokenEmbedding: Parameter { parameter("token_embd.weight") }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// The parameters on the host, for checkpoints and export.
    public func downloadParameters() throws -> LlamaParameters {
        try LlamaParameters(config: config, tensors: Dictionary(uniqueKeysWithValues: parameters.map {
            ($0.name, ParameterTensor(shape: $0.value.shape, values: try $0.value.toArray()))
        }), source: "student")
    }

    /// The student for generation (rollouts, sampling): a ``LlamaModel`` over these very parameter
    /// tensors, its GEMMs reading the matrices as the training forward does (the bf16 compute copies
    /// in mixed precision), so it always runs the current weights, with the batched KV cache and
    /// device sampling of ``Generation``. Norms, RoPE and attention are the training forward's.
    public func inferenceModel() throws -> LlamaModel {
        let blocks = (0..<config.layers).map { l in
            LlamaBlockWeights(attentionNorm: weight(l, "attn_norm.weight"), query: matrix(l, "attn_q.weight"), key: matrix(l, "attn_k.weight"),
                              value: matrix(l, "attn_v.weight"), attentionOutput: matrix(l, "attn_output.weight"),
                              feedForwardNorm: weight(l, "ffn_norm.weight"), gate: matrix(l, "ffn_gate.weight"), up: matrix(l, "ffn_up.weight"),
                              down: matrix(l, "ffn_down.weight"))
        }
        let weights = LlamaWeights(config: config, tokenEmbedding: tokenEmbedding.value,
                                   outputNorm: parameter("output_norm.weight").value, output: outputWeight.compute, blocks: blocks)
        return try LlamaModel(weights: weights, ropeLayout: .adjacent, precision: computeType)
    }

    /// Drops the activations of the last forward (after an evaluation-only forward).
    public func discardSavedActivations() { saved = nil }

    private func weight(_ l: Int, _ suffix: String) -> Tensor { parameter("blk.\(l).\(suffix)").value }
    /// A matrix as the GEMMs read it (its bf16 compute copy in mixed precision).
    private func matrix(_ l: Int, _ suffix: String) -> Tensor { parameter("blk.\(l).\(suffix)").compute }
    /// The weight GEMMs' input type: f32, or bf16 once an arena gave the matrices compute copies.
    public var computeType: DType { outputWeight.compute.dtype }

    /// `x` in the compute type: itself, or a bf16 copy (one conversion, for every GEMM that reads it, or to keep for the backward).
    private func inComputeType(_ x: Tensor) throws -> Tensor { try backend.converted(x, to: computeType) }
    private func gradient(_ l: Int, _ suffix: String) -> Tensor { parameter("blk.\(l).\(suffix)").gradient }

    private var rope: RoPE {
        RoPE(heads: config.heads, headDimension: config.headDimension, rotatedDimensions: config.ropeDimensions,
             base: config.ropeBase, layout: .adjacent)
    }

    private var kvRope: RoPE {
        RoPE(heads: config.kvHeads, headDimension: config.headDimension, rotatedDimensions: config.ropeDimensions,
             base: config.ropeBase, layout: .adjacent)
    }

    /// The final normed hidden state [B * T, C] of `tokens` ([B][T]), keeping the activations for ``backward(finalHiddenGradient:)``.
    public func forward(_ tokens: [[Int32]]) throws -> Tensor {
        let b = tokens.count, t = tokens.first?.count ?? 0
        guard b > 0, t > 0, tokens.allSatisfy({ $0.count == t }), t <= config.contextLength else {
            throw ModelError.badInput("student forward needs B sequences of equal length T <= \(config.contextLength)")
        }
        let flat = tokens.flatMap { $0 }
        if let bad = flat.first(where: { $0 < 0 || Int($0) >= config.vocabulary }) {
            throw ModelError.badInput("token id \(bad) is outside the student's vocabulary of \(config.vocabulary)")
        }
        let (n, c, h, hkv, hs, f, g) = (b * t, config.width, config.heads, config.kvHeads, config.headDimension, config.feedForward, config.groupSize)
        func tensor(_ shape: [Int], _ label: String) throws -> Tensor { try backend.tensor(shape: shape, label: label) }
        let positionList = (0..<n).map { Int32($0 % t) }
        var x = try tensor([n, c], "residual 0")
        try backend.gatherRows(tokenEmbedding.value, ids: backend.indexTensor(flat, shape: [n], label: "token ids"), into: x)
        let scale = 1 / Float(hs).squareRoot()
        var blocks: [BlockActivations] = []
        for l in 0..<config.layers {
            let xn1 = try tensor([n, c], "attention normed \(l)")
            try backend.rmsNorm(x, weight: weight(l, "attn_norm.weight"), epsilon: config.normEpsilon, into: xn1)
            let xn1In = try inComputeType(xn1)
            let q = try tensor([n, h * hs], "q"), k = try tensor([n, hkv * hs], "k"), v = try tensor([n, hkv * hs], "v")
            try backend.gemm(xn1In, matrix(l, "attn_q.weight"), into: q, transposeB: true)
            try backend.gemm(xn1In, matrix(l, "attn_k.weight"), into: k, transposeB: true)
            try backend.gemm(xn1In, matrix(l, "attn_v.weight"), into: v, transposeB: true)
            try backend.rope(q, positions: positionList, into: q, rope)
            try backend.rope(k, positions: positionList, into: k, kvRope)
            let qT = try tensor([b, h, t, hs], "q by head \(l)"), kT = try tensor([b, hkv, t, hs], "k by head \(l)")
            let vT = try tensor([b, hkv, t, hs], "v by head \(l)")
            try backend.transpose12(q.reshaped([b, t, h, hs]), into: qT)
            try backend.transpose12(k.reshaped([b, t, hkv, hs]), into: kT)
            try backend.transpose12(v.reshaped([b, t, hkv, hs]), into: vT)
            let probs = try tensor([b * hkv, g * t, t], "attention probabilities \(l)")
            try backend.gemm(qT.reshaped([b * hkv, g * t, hs]), kT.reshaped([b * hkv, t, hs]), into: probs, transposeB: true)
            try backend.causalSoftmax(probs, into: probs, queries: t, scale: scale)
            let contextByHead = try tensor([b, h, t, hs], "context by head")
            try backend.gemm(probs, vT.reshaped([b * hkv, t, hs]), into: contextByHead.reshaped([b * hkv, g * t, hs]))
            let context = try tensor([n, c], "context \(l)")
            try backend.transpose12(contextByHead, into: context.reshaped([b, t, h, hs]))
            let middle = try tensor([n, c], "residual middle \(l)")
            let contextIn = try inComputeType(context)
            try backend.gemm(contextIn, matrix(l, "attn_output.weight"), into: middle, transposeB: true)
            try backend.add(x, middle, into: middle)

            let xn2 = try tensor([n, c], "ffn normed \(l)")
            try backend.rmsNorm(middle, weight: weight(l, "ffn_norm.weight"), epsilon: config.normEpsilon, into: xn2)
            let xn2In = try inComputeType(xn2)
            let gate = try tensor([n, f], "gate \(l)"), up = try tensor([n, f], "up \(l)"), act = try tensor([n, f], "swiglu \(l)")
            try backend.gemm(xn2In, matrix(l, "ffn_gate.weight"), into: gate, transposeB: true)
            try backend.gemm(xn2In, matrix(l, "ffn_up.weight"), into: up, transposeB: true)
            try backend.swiglu(gate: gate, up: up, into: act)
            let actIn = try inComputeType(act)
            let output = try tensor([n, c], "residual \(l + 1)")
            try backend.gemm(actIn, matrix(l, "ffn_down.weight"), into: output, transposeB: true)
            try backend.add(middle, output, into: output)
            blocks.append(BlockActivations(input: x, attentionNormed: xn1In, queries: try inComputeType(qT), keys: try inComputeType(kT),
                                           values: try inComputeType(vT), probabilities: try inComputeType(probs),
                                           context: contextIn, middle: middle, feedForwardNormed: xn2In, gate: try inComputeType(gate),
                                           up: try inComputeType(up), activation: actIn))
            x = output
        }
        let finalHidden = try tensor([n, c], "final hidden")
        try backend.rmsNorm(x, weight: parameter("output_norm.weight").value, epsilon: config.normEpsilon, into: finalHidden)
        saved = (flat, b, t, blocks, x, finalHidden)
        return finalHidden
    }

    /// The residual stream after block `l` (0-based) of the last forward: [N, C].
    public func hiddenState(after l: Int) throws -> Tensor {
        guard let saved, l >= 0, l < config.layers else {
            throw ModelError.badInput("hidden state after block \(l): no forward kept, or no such block of \(config.layers)")
        }
        return l == config.layers - 1 ? saved.last : saved.blocks[l + 1].input
    }

    /// The attention probabilities of block `l` (0-based) in the last forward: [B, H, T, T], fp32
    /// (widened from the kept copy in mixed precision).
    public func attentionProbabilities(of l: Int) throws -> Tensor {
        guard let saved, l >= 0, l < config.layers else {
            throw ModelError.badInput("attention of block \(l): no forward kept, or no such block of \(config.layers)")
        }
        return try backend.converted(saved.blocks[l].probabilities, to: .f32).reshaped([saved.batch, config.heads, saved.length, saved.length])
    }

    /// Adds every parameter's gradient, given dL/d(final hidden) [N, C] for the last forward, and
    /// optionally, for feature losses, dL/d(residual stream after block l) for some blocks (the logit
    /// lens, hints) and dL/d(attention probabilities of block l) [B, H, T, T] (attention alignment).
    /// The LM head's own gradient is the loss path's to add.
    @discardableResult
    public func backward(finalHiddenGradient: Tensor, hiddenGradients: [Int: Tensor] = [:], attentionGradients: [Int: Tensor] = [:],
                         blockFinished: (Int) throws -> Void = { _ in }, deferringEmbedding: Bool = false) throws -> EmbeddingRows? {
        guard let saved else { throw ModelError.badInput("student backward without a forward") }
        self.saved = nil
        let (b, t) = (saved.batch, saved.length)
        let (n, c, h, hkv, hs, f, g) = (b * t, config.width, config.heads, config.kvHeads, config.headDimension, config.feedForward, config.groupSize)
        func tensor(_ shape: [Int], _ label: String) throws -> Tensor { try backend.tensor(shape: shape, label: label) }
        let positionList = (0..<n).map { Int32($0 % t) }
        let rstd = try tensor([n], "rms workspace")
        let scale = 1 / Float(hs).squareRoot()
        var inverseRope = rope, inverseKVRope = kvRope
        inverseRope.inverse = true
        inverseKVRope.inverse = true

        // Through the final norm: dx is dL/d(residual stream) from here down.
        let dx = try tensor([n, c], "residual gradient")
        try backend.rmsNormBackward(saved.last, weight: parameter("output_norm.weight").value, outputGradient: finalHiddenGradient,
                                    epsilon: config.normEpsilon, inputGradient: dx, weightGradient: parameter("output_norm.weight").gradient,
                                    workspace: rstd)
        let dNormed = try tensor([n, c], "normed gradient")
        let dAct = try tensor([n, f], "swiglu gradient"), dGate = try tensor([n, f], "gate gradient"), dUp = try tensor([n, f], "up gradient")
        let dContext = try tensor([n, c], "context gradient"), dContextByHead = try tensor([b, h, t, hs], "context by head gradient")
        let dProbs = try tensor([b * hkv, g * t, t], "attention gradient")
        let dqT = try tensor([b, h, t, hs], "q by head gradient"), dkT = try tensor([b, hkv, t, hs], "k by head gradient")
        let dvT = try tensor([b, hkv, t, hs], "v by head gradient")
        let dq = try tensor([n, h * hs], "q gradient"), dk = try tensor([n, hkv * hs], "k gradient"), dv = try tensor([n, hkv * hs], "v gradient")

        for l in (0..<config.layers).reversed() {
            let a = saved.blocks[l]
            if let extra = hiddenGradients[l] { try backend.add(dx, extra, into: dx) }
            // Feed-forward: output = middle + W_down swiglu(W_gate xn2, W_up xn2).
            let dxIn = try inComputeType(dx)
            try backend.gemm(dxIn, matrix(l, "ffn_down.weight"), into: dAct)
            try backend.gemm(dxIn, a.activation, into: gradient(l, "ffn_down.weight"), transposeA: true, beta: 1)
            try backend.swigluBackward(gate: a.gate, up: a.up, outputGradient: dAct, gateGradient: dGate, upGradient: dUp)
            let dGateIn = try inComputeType(dGate), dUpIn = try inComputeType(dUp)
            try backend.gemm(dGateIn, matrix(l, "ffn_gate.weight"), into: dNormed)
            try backend.gemm(dUpIn, matrix(l, "ffn_up.weight"), into: dNormed, beta: 1)
            try backend.gemm(dGateIn, a.feedForwardNormed, into: gradient(l, "ffn_gate.weight"), transposeA: true, beta: 1)
            try backend.gemm(dUpIn, a.feedForwardNormed, into: gradient(l, "ffn_up.weight"), transposeA: true, beta: 1)
            let dMiddle = try tensor([n, c], "middle gradient")
            try backend.rmsNormBackward(a.middle, weight: weight(l, "ffn_norm.weight"), outputGradient: dNormed, epsilon: config.normEpsilon,
                                        inputGradient: dMiddle, weightGradient: gradient(l, "ffn_norm.weight"), workspace: rstd)
            try backend.add(dMiddle, dx, into: dMiddle)

            // Attention: middle = input + W_o context, context = softmax(q kᵀ / √hs) v by head.
            let dMiddleIn = try inComputeType(dMiddle)
            try backend.gemm(dMiddleIn, matrix(l, "attn_output.weight"), into: dContext)
            try backend.gemm(dMiddleIn, a.context, into: gradient(l, "attn_output.weight"), transposeA: true, beta: 1)
            try backend.transpose12(dContext.reshaped([b, t, h, hs]), into: dContextByHead)
            // The attention GEMMs on the kept operands' type (bf16 in mixed precision, each gradient
            // narrowed once for its two GEMMs); the softmax backward in fp32 on the widened probabilities.
            let dContextGrouped = try inComputeType(dContextByHead.reshaped([b * hkv, g * t, hs]))
            try backend.gemm(dContextGrouped, a.values.reshaped([b * hkv, t, hs]), into: dProbs, transposeB: true)
            if let extra = attentionGradients[l] { try backend.add(dProbs, extra.reshaped(dProbs.shape), into: dProbs) }
            try backend.gemm(a.probabilities, dContextGrouped, into: dvT.reshaped([b * hkv, t, hs]), transposeA: true)
            try backend.causalSoftmaxBackward(backend.converted(a.probabilities, to: .f32), outputGradient: dProbs, into: dProbs, scale: scale)
            let dProbsIn = try inComputeType(dProbs)
            try backend.gemm(dProbsIn, a.keys.reshaped([b * hkv, t, hs]), into: dqT.reshaped([b * hkv, g * t, hs]))
            try backend.gemm(dProbsIn, a.queries.reshaped([b * hkv, g * t, hs]), into: dkT.reshaped([b * hkv, t, hs]), transposeA: true)
            try backend.transpose12(dqT, into: dq.reshaped([b, t, h, hs]))
            try backend.transpose12(dkT, into: dk.reshaped([b, t, hkv, hs]))
            try backend.transpose12(dvT, into: dv.reshaped([b, t, hkv, hs]))
            try backend.rope(dq, positions: positionList, into: dq, inverseRope)
            try backend.rope(dk, positions: positionList, into: dk, inverseKVRope)
            let dqIn = try inComputeType(dq), dkIn = try inComputeType(dk), dvIn = try inComputeType(dv)
            try backend.gemm(dqIn, matrix(l, "attn_q.weight"), into: dNormed)
            try backend.gemm(dkIn, matrix(l, "attn_k.weight"), into: dNormed, beta: 1)
            try backend.gemm(dvIn, matrix(l, "attn_v.weight"), into: dNormed, beta: 1)
            try backend.gemm(dqIn, a.attentionNormed, into: gradient(l, "attn_q.weight"), transposeA: true, beta: 1)
            try backend.gemm(dkIn, a.attentionNormed, into: gradient(l, "attn_k.weight"), transposeA: true, beta: 1)
            try backend.gemm(dvIn, a.attentionNormed, into: gradient(l, "attn_v.weight"), transposeA: true, beta: 1)
            try backend.rmsNormBackward(a.input, weight: weight(l, "attn_norm.weight"), outputGradient: dNormed, epsilon: config.normEpsilon,
                                        inputGradient: dx, weightGradient: gradient(l, "attn_norm.weight"), workspace: rstd)
            try backend.add(dx, dMiddle, into: dx)
            try blockFinished(l)
        }
        let rows = EmbeddingRows(gradient: dx, tokens: saved.tokens, table: tokenEmbedding.gradient)
        if deferringEmbedding { return rows }
        try rows.add()
        return nil
    }
}

/// The token embedding's backward, as rows: the gradient at the embedding's output [N, C] adds to
/// rows `tokens` of the table's gradient [V, C]. ``StudentModel/backward(finalHiddenGradient:hiddenGradients:attentionGradients:blockFinished:deferringEmbedding:)``
/// leaves them to its caller when asked, so the table's gradient can be sent for the all-reduce first.
public struct EmbeddingRows {
    public let gradient: Tensor
    public let tokens: [Int32]
    public let table: Tensor

    /// The rows added where they belong.
    public func add() throws { try gradient.backend.embeddingBackward(gradient, tokenIds: tokens, into: table) }
}
