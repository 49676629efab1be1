import Foundation
import GGUF
import Models
import Tensor

/// One parameter tensor on the host: fp32 values, row-major over `shape` (outermost first, so a
/// linear layer's weight is [out, in]).
public struct ParameterTensor: Equatable, Sendable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values for shape \(shape)")
        self.shape = shape
        self.values = values
    }

    /// A tensor of zeros (e.g. fresh AdamW moments).
    public static func zeros(shape: [Int]) -> ParameterTensor {
        ParameterTensor(shape: shape, values: [Float](repeating: 0, count: shape.reduce(1, *)))
    }
}

/// A llama model's weights on the host, in fp32, named and laid out as in GGUF: GGUF tensor
/// names (`token_embd.weight`, `blk.N.attn_q.weight`, ...) and GGUF's RoPE layout, where the rows
/// of each q and k head are ordered for ADJACENT-pair rotation (run them with `LlamaModel`'s
/// `.adjacent` layout). This is the trainer's master copy of the student; the exporters convert
/// it to Hugging Face or GGUF files.
///
/// Shapes (C width, F feed-forward, V vocabulary, H/Hkv heads, hs head size):
/// `token_embd.weight` [V, C], `output_norm.weight` [C], `output.weight` [V, C] (absent when tied),
/// per block: `attn_norm` [C], `attn_q` [H*hs, C], `attn_k` [Hkv*hs, C], `attn_v` [Hkv*hs, C],
/// `attn_output` [C, H*hs], `ffn_norm` [C], `ffn_gate` [F, C], `ffn_up` [F, C], `ffn_down` [C, F].
///
/// ```swift
/// let teacher = try LlamaParameters(gguf: GGUFFile(path: "teacher.gguf"))   // dequantized to fp32
/// let model = try LlamaModel(weights: teacher.makeWeights(on: backend))     // .adjacent RoPE
/// ```
public struct LlamaParameters: Equatable, Sendable {
    public var config: LlamaConfig
    /// Every tensor of ``expectedShapes(for:)``, by GGUF name.
    public var tensors: [String: ParameterTensor]

    /// Checks that `tensors` holds exactly the tensors `config` needs, with their shapes.
    /// - Parameter source: names the origin in errors (a file or folder).
    public init(config: LlamaConfig, tensors: [String: ParameterTensor], source: String = "model parameters") throws {
        try config.validate(source: source)
        let expected = LlamaParameters.expectedShapes(for: config)
        for (name, shape) in expected {
            guard let tensor = tensors[name] else {
                throw CheckpointError.parameterMismatch(source: source, reason: "missing tensor \(name)")
            }
            guard tensor.shape == shape else {
                throw CheckpointError.parameterMismatch(source: source, reason: "tensor \(name) has shape \(describeShape(tensor.shape)), expected \(describeShape(shape)) from the configuration")
            }
        }
        if tensors.count != expected.count {
            let known = Set(expected.map(\.name))
            let extra = tensors.keys.filter { !known.contains($0) }.sorted()
            throw CheckpointError.parameterMismatch(source: source, reason: "unexpected tensors \(extra.joined(separator: ", ")) for a \(config.tiedEmbeddings ? "tied" : "untied") llama of \(config.layers) blocks")
        }
        self.config = config
        self.tensors = tensors
    }

    /// The tensors a llama model of `config` has, in GGUF file order, with their shapes (outermost first).
    public static func expectedShapes(for config: LlamaConfig) -> [(name: String, shape: [Int])] {
        let (c, f, v, hs) = (config.width, config.feedForward, config.vocabulary, config.headDimension)
        var shapes: [(name: String, shape: [Int])] = [("token_embd.weight", [v, c]), ("output_norm.weight", [c])]
        if !config.tiedEmbeddings { shapes.append(("output.weight", [v, c])) }
        for l in 0..<config.layers {
            shapes += [("blk.\(l).attn_norm.weight", [c]), ("blk.\(l).attn_q.weight", [config.heads * hs, c]),
                       ("blk.\(l).attn_k.weight", [config.kvWidth, c]), ("blk.\(l).attn_v.weight", [config.kvWidth, c]),
                       ("blk.\(l).attn_output.weight", [c, config.heads * hs]), ("blk.\(l).ffn_norm.weight", [c]),
                       ("blk.\(l).ffn_gate.weight", [f, c]), ("blk.\(l).ffn_up.weight", [f, c]), ("blk.\(l).ffn_down.weight", [c, f])]
        }
        return shapes
    }

    /// Tensor names in GGUF file order.
    public var names: [String] { LlamaParameters.expectedShapes(for: config).map(\.name) }

    /// Total number of parameters (the tied LM head counted once).
    public var parameterCount: Int { tensors.values.reduce(0) { $0 + $1.values.count } }

    /// The first tensor (in ``names`` order) with a NaN or infinite value, and where.
    public func firstNonFinite() -> (tensor: String, index: Int)? {
        for name in names {
            if let index = tensors[name]!.values.firstIndex(where: { !$0.isFinite }) { return (name, index) }
        }
        return nil
    }

    /// Throws ``CheckpointError/nonFinite(source:tensor:index:)`` when any value is NaN or infinite.
    public func requireFinite(source: String) throws {
        if let (tensor, index) = firstNonFinite() { throw CheckpointError.nonFinite(source: source, tensor: tensor, index: index) }
    }

    /// Whether a tensor is a norm weight (a vector; GGUF exports keep these in F32).
    public static func isNorm(_ name: String) -> Bool { name.hasSuffix("norm.weight") }

    /// Reads every llama tensor of a GGUF file, dequantized to fp32 (the GGUF layout is kept).
    public init(gguf file: GGUFFile) throws {
        let config = try LlamaConfig(gguf: file)
        var tensors: [String: ParameterTensor] = [:]
        for (name, shape) in LlamaParameters.expectedShapes(for: config) {
            guard file.hasTensor(named: name) else {
                throw CheckpointError.parameterMismatch(source: file.path, reason: "missing tensor \(name)")
            }
            let info = try file.tensor(named: name)
            guard info.shape == shape else {
                throw CheckpointError.parameterMismatch(source: file.path, reason: "tensor \(name) has shape \(describeShape(info.shape)), expected \(describeShape(shape)) from the metadata")
            }
            tensors[name] = ParameterTensor(shape: shape, values: file.dequantize(info))
        }
        try self.init(config: config, tensors: tensors, source: file.path)
    }

    /// Uploads the parameters to `backend` as f32 tensors, for `LlamaModel` with the `.adjacent` RoPE layout.
    public func makeWeights(on backend: any Backend) throws -> LlamaWeights {
        func upload(_ name: String) throws -> Tensor {
            let tensor = tensors[name]!
            return try backend.tensor(tensor.values, shape: tensor.shape, label: name)
        }
        let blocks = try (0..<config.layers).map { l in
            LlamaBlockWeights(attentionNorm: try upload("blk.\(l).attn_norm.weight"), query: try upload("blk.\(l).attn_q.weight"),
                              key: try upload("blk.\(l).attn_k.weight"), value: try upload("blk.\(l).attn_v.weight"),
                              attentionOutput: try upload("blk.\(l).attn_output.weight"),
                              feedForwardNorm: try upload("blk.\(l).ffn_norm.weight"), gate: try upload("blk.\(l).ffn_gate.weight"),
                              up: try upload("blk.\(l).ffn_up.weight"), down: try upload("blk.\(l).ffn_down.weight"))
        }
        return LlamaWeights(config: config, tokenEmbedding: try upload("token_embd.weight"),
                            outputNorm: try upload("output_norm.weight"),
                            output: config.tiedEmbeddings ? nil : try upload("output.weight"), blocks: blocks)
    }
}

/// The row permutation between Hugging Face's rotate-half layout and GGUF's adjacent-pair layout
/// of the q and k projections.
///
/// Within each head of hs rows, HF rotates the pairs (row i, row i + hs/2); llama.cpp rotates
/// (row 2i, row 2i + 1). The HF-to-GGUF converter reorders rows with
/// `W.reshape(heads, 2, hs/2, cols).swapaxes(1, 2).reshape(rows, cols)`, i.e.
/// GGUF row `h*hs + 2i + j` = HF row `h*hs + j*hs/2 + i` (j in 0..<2, i in 0..<hs/2).
public enum RoPEPermutation {
    /// HF rows -> GGUF rows (the converter's permutation). `values` is [heads * hs, columns].
    public static func huggingFaceToGGUF(_ values: [Float], heads: Int, columns: Int) -> [Float] {
        permute(values, heads: heads, columns: columns, toGGUF: true)
    }

    /// GGUF rows -> HF rows (the inverse). `values` is [heads * hs, columns].
    public static func ggufToHuggingFace(_ values: [Float], heads: Int, columns: Int) -> [Float] {
        permute(values, heads: heads, columns: columns, toGGUF: false)
    }

    private static func permute(_ values: [Float], heads: Int, columns: Int, toGGUF: Bool) -> [Float] {
        let rows = values.count / columns
        precondition(rows * columns == values.count && rows % (2 * heads) == 0, "\(rows) rows are not \(heads) heads of an even size")
        let headSize = rows / heads, half = headSize / 2
        var output = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                for h in 0..<heads {
                    for i in 0..<half {
                        for j in 0..<2 {
                            let gguf = h * headSize + 2 * i + j
                            let hf = h * headSize + j * half + i
                            let (from, to) = toGGUF ? (hf, gguf) : (gguf, hf)
                            for c in 0..<columns { output[to * columns + c] = input[from * columns + c] }
                        }
                    }
                }
            }
        }
        return output
    }
}
