import Foundation
import GGUF
import Tensor

/// One transformer block's weights, on a backend, each in its stored type (quantized stays quantized).
/// Matrices are `[out, in]` (PyTorch order): a linear layer computes `x W^T`.
public struct LlamaBlockWeights {
    public var attentionNorm: Tensor   // [C]
    public var query: Tensor           // [H * hs, C]
    public var key: Tensor             // [Hkv * hs, C]
    public var value: Tensor           // [Hkv * hs, C]
    public var attentionOutput: Tensor // [C, H * hs]
    public var feedForwardNorm: Tensor // [C]
    public var gate: Tensor            // [F, C]
    public var up: Tensor              // [F, C]
    public var down: Tensor            // [C, F]

    public init(attentionNorm: Tensor, query: Tensor, key: Tensor, value: Tensor, attentionOutput: Tensor,
                feedForwardNorm: Tensor, gate: Tensor, up: Tensor, down: Tensor) {
        self.attentionNorm = attentionNorm
        self.query = query
        self.key = key
        self.value = value
        self.attentionOutput = attentionOutput
        self.feedForwardNorm = feedForwardNorm
        self.gate = gate
        self.up = up
        self.down = down
    }

    public var matrices: [Tensor] { [query, key, value, attentionOutput, gate, up, down] }
}

/// A llama model's weights on one backend.
public final class LlamaWeights {
    public let config: LlamaConfig
    public let tokenEmbedding: Tensor  // [V, C]
    public let outputNorm: Tensor      // [C]
    /// The LM head [V, C]: the token embedding itself when the embeddings are tied.
    public let output: Tensor
    public let blocks: [LlamaBlockWeights]
    public let backend: any Backend

    public init(config: LlamaConfig, tokenEmbedding: Tensor, outputNorm: Tensor, output: Tensor?, blocks: [LlamaBlockWeights]) {
        self.config = config
        self.tokenEmbedding = tokenEmbedding
        self.outputNorm = outputNorm
        self.output = output ?? tokenEmbedding
        self.blocks = blocks
        backend = tokenEmbedding.backend
    }

    /// Bytes the weights take on the backend (the tied LM head counted once).
    public var residentBytes: Int {
        var tensors = [tokenEmbedding, outputNorm] + blocks.flatMap { $0.matrices + [$0.attentionNorm, $0.feedForwardNorm] }
        if output.storage !== tokenEmbedding.storage { tensors.append(output) }
        return tensors.reduce(0) { $0 + $1.byteCount }
    }

    /// Uploads every tensor of a llama GGUF file to `backend` in its stored type (F32, F16, Q8_0,
    /// Q4_0, Q4_1; BF16 is widened to F32), after checking names and shapes against the metadata.
    public convenience init(gguf file: GGUFFile, backend: any Backend) throws {
        let config = try LlamaConfig(gguf: file)
        let (c, f, hs) = (config.width, config.feedForward, config.headDimension)
        func load(_ name: String, _ shape: [Int]) throws -> Tensor {
            guard file.hasTensor(named: name) else {
                throw ModelError.missingTensor("\(file.path): missing required tensor \(name)")
            }
            let info = try file.tensor(named: name)
            guard info.shape == shape else {
                throw ModelError.badTensor("\(file.path): tensor \(name) has shape \(describeShape(info.shape)), expected \(describeShape(shape)) from the metadata")
            }
            if let dtype = info.type.tensorDType {
                let tensor = try backend.allocate(shape: shape, dtype: dtype, label: name)
                try file.withRawBytes(of: info) { try backend.uploadBytes($0, to: tensor) }
                return tensor
            }
            return try backend.tensor(file.dequantize(info), shape: shape, label: name)
        }
        let embedding = try load("token_embd.weight", [config.vocabulary, c])
        let blocks = try (0..<config.layers).map { l in
            LlamaBlockWeights(
                attentionNorm: try load("blk.\(l).attn_norm.weight", [c]),
                query: try load("blk.\(l).attn_q.weight", [config.heads * hs, c]),
                key: try load("blk.\(l).attn_k.weight", [config.kvWidth, c]),
                value: try load("blk.\(l).attn_v.weight", [config.kvWidth, c]),
                attentionOutput: try load("blk.\(l).attn_output.weight", [c, config.heads * hs]),
                feedForwardNorm: try load("blk.\(l).ffn_norm.weight", [c]),
                gate: try load("blk.\(l).ffn_gate.weight", [f, c]),
                up: try load("blk.\(l).ffn_up.weight", [f, c]),
                down: try load("blk.\(l).ffn_down.weight", [c, f]))
        }
        for block in blocks {
            for norm in [block.attentionNorm, block.feedForwardNorm] where norm.dtype != .f32 {
                throw ModelError.unsupported("\(file.path): norm \(norm.label) is \(norm.dtype.rawValue); kdgpu reads F32 norms")
            }
        }
        self.init(config: config, tokenEmbedding: embedding, outputNorm: try load("output_norm.weight", [c]),
                  output: config.tiedEmbeddings ? nil : try load("output.weight", [config.vocabulary, c]), blocks: blocks)
    }
}
