import Files
import Foundation
import GGUF
import Models
import Tokenizer

/// The `config.json` of a Hugging Face `LlamaForCausalLM` checkpoint (the keys kdgpu writes and reads).
public struct HuggingFaceLlamaConfig: Codable, Equatable, Sendable {
    public var architectures: [String]?
    public var modelType: String?
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var rmsNormEps: Double?
    public var ropeTheta: Double?
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int?
    public var tieWordEmbeddings: Bool?
    public var hiddenAct: String?
    public var torchDtype: String?
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var attentionBias: Bool?
    public var mlpBias: Bool?
    /// Only `null` (no RoPE scaling) is supported; anything else is refused on import.
    public var ropeScaling: JSONValue?

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", vocabSize = "vocab_size", maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings", hiddenAct = "hidden_act", torchDtype = "torch_dtype"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case ropeScaling = "rope_scaling"
    }

    /// The config.json for `config`. Floats are written as their shortest decimal form (1e-05, not 9.99999974e-06).
    public init(_ config: LlamaConfig, dtype: SafeTensorsDType, bosTokenID: Int? = nil, eosTokenID: Int? = nil) {
        architectures = ["LlamaForCausalLM"]
        modelType = "llama"
        hiddenSize = config.width
        intermediateSize = config.feedForward
        numHiddenLayers = config.layers
        numAttentionHeads = config.heads
        numKeyValueHeads = config.kvHeads
        headDim = config.headDimension
        rmsNormEps = Double("\(config.normEpsilon)")
        ropeTheta = Double("\(config.ropeBase)")
        vocabSize = config.vocabulary
        maxPositionEmbeddings = config.contextLength
        tieWordEmbeddings = config.tiedEmbeddings
        hiddenAct = "silu"
        torchDtype = dtype.torchName
        bosTokenId = bosTokenID
        eosTokenId = eosTokenID
        attentionBias = false
        mlpBias = false
        ropeScaling = nil
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(architectures, forKey: .architectures)
        try container.encodeIfPresent(modelType, forKey: .modelType)
        try container.encode(hiddenSize, forKey: .hiddenSize)
        try container.encode(intermediateSize, forKey: .intermediateSize)
        try container.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try container.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try container.encodeIfPresent(numKeyValueHeads, forKey: .numKeyValueHeads)
        try container.encodeIfPresent(headDim, forKey: .headDim)
        try container.encodeIfPresent(rmsNormEps, forKey: .rmsNormEps)
        try container.encodeIfPresent(ropeTheta, forKey: .ropeTheta)
        try container.encode(vocabSize, forKey: .vocabSize)
        try container.encodeIfPresent(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try container.encodeIfPresent(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try container.encodeIfPresent(hiddenAct, forKey: .hiddenAct)
        try container.encodeIfPresent(torchDtype, forKey: .torchDtype)
        try container.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try container.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
        try container.encodeIfPresent(attentionBias, forKey: .attentionBias)
        try container.encodeIfPresent(mlpBias, forKey: .mlpBias)
        try container.encode(ropeScaling ?? .null, forKey: .ropeScaling)
    }

    /// The kdgpu configuration, after checking the checkpoint is a plain llama kdgpu can run.
    /// Missing optional keys take `transformers`' LlamaConfig defaults.
    public func llamaConfig(source: String) throws -> LlamaConfig {
        func unsupported(_ reason: String) -> CheckpointError { .unsupportedModel(source: source, reason: reason) }
        if let modelType, modelType != "llama" { throw unsupported("model_type is '\(modelType)'; kdgpu imports llama checkpoints") }
        if let hiddenAct, hiddenAct != "silu" { throw unsupported("hidden_act is '\(hiddenAct)'; llama uses 'silu'") }
        if let ropeScaling, ropeScaling != .null { throw unsupported("rope_scaling is set; kdgpu supports plain RoPE only") }
        if attentionBias == true || mlpBias == true { throw unsupported("attention or MLP biases are not supported") }
        let heads = numAttentionHeads
        if let headDim, heads > 0, headDim * heads != hiddenSize {
            throw unsupported("head_dim \(headDim) x \(heads) heads is not hidden_size \(hiddenSize)")
        }
        let config = LlamaConfig(layers: numHiddenLayers, width: hiddenSize, feedForward: intermediateSize, heads: heads,
                                 kvHeads: numKeyValueHeads ?? heads, vocabulary: vocabSize,
                                 contextLength: maxPositionEmbeddings ?? 2048, ropeBase: Float(ropeTheta ?? 10000),
                                 normEpsilon: Float(rmsNormEps ?? 1e-6), tiedEmbeddings: tieWordEmbeddings ?? false)
        do {
            try config.validate(source: source)
        } catch {
            throw CheckpointError.invalidJSON(file: source, reason: "\(error)".replacingOccurrences(of: "\(source): ", with: ""))
        }
        return config
    }
}

/// Hugging Face llama checkpoints: a folder with `model.safetensors` (HF tensor names, rotate-half
/// q/k rows) and `config.json`, loadable with `transformers.LlamaForCausalLM.from_pretrained`.
///
/// ```swift
/// try HuggingFaceCheckpoint.write(student, to: URL(fileURLWithPath: "runs/student-hf"), tokenizer: .tokenizer(of: teacherFile))
/// let reloaded = try HuggingFaceCheckpoint.read(from: URL(fileURLWithPath: "runs/student-hf"))  // GGUF layout again
/// ```
public enum HuggingFaceCheckpoint {
    public static let modelFileName = "model.safetensors"
    public static let configFileName = "config.json"

    /// The HF name of a GGUF tensor name, and the head count whose rows it permutes (q: H, k: Hkv), if any.
    public static func huggingFaceName(of name: String, config: LlamaConfig) -> (name: String, permutedHeads: Int?)? {
        switch name {
        case "token_embd.weight": return ("model.embed_tokens.weight", nil)
        case "output_norm.weight": return ("model.norm.weight", nil)
        case "output.weight": return ("lm_head.weight", nil)
        default: break
        }
        let parts = name.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]) else { return nil }
        let prefix = "model.layers.\(layer)."
        switch parts[2] {
        case "attn_norm.weight": return (prefix + "input_layernorm.weight", nil)
        case "attn_q.weight": return (prefix + "self_attn.q_proj.weight", config.heads)
        case "attn_k.weight": return (prefix + "self_attn.k_proj.weight", config.kvHeads)
        case "attn_v.weight": return (prefix + "self_attn.v_proj.weight", nil)
        case "attn_output.weight": return (prefix + "self_attn.o_proj.weight", nil)
        case "ffn_norm.weight": return (prefix + "post_attention_layernorm.weight", nil)
        case "ffn_gate.weight": return (prefix + "mlp.gate_proj.weight", nil)
        case "ffn_up.weight": return (prefix + "mlp.up_proj.weight", nil)
        case "ffn_down.weight": return (prefix + "mlp.down_proj.weight", nil)
        default: return nil
        }
    }

    /// HF checkpoints can only express RoPE over the whole head.
    static func requireFullRotary(_ config: LlamaConfig, source: String) throws {
        guard config.ropeDimensions == config.headDimension else {
            throw CheckpointError.unsupportedModel(source: source, reason: "RoPE rotates \(config.ropeDimensions) of \(config.headDimension) head dimensions; Hugging Face llama checkpoints rotate whole heads")
        }
    }

    /// The safetensors writer for `parameters` in HF names and layout (q/k rows un-permuted to rotate-half).
    static func safeTensors(for parameters: LlamaParameters, dtype: SafeTensorsDType) throws -> SafeTensorsWriter {
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        for name in parameters.names {
            let tensor = parameters.tensors[name]!
            let (hfName, heads) = huggingFaceName(of: name, config: parameters.config)!
            let values = heads.map { RoPEPermutation.ggufToHuggingFace(tensor.values, heads: $0, columns: tensor.shape[1]) } ?? tensor.values
            try writer.add(hfName, shape: tensor.shape, values: values, dtype: dtype)
        }
        return writer
    }

    static func configJSON(for parameters: LlamaParameters, dtype: SafeTensorsDType, tokenizer: GGUFMetadata?) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        func id(_ key: String) -> Int? { tokenizer?.metadata[key]?.intValue }
        let config = HuggingFaceLlamaConfig(parameters.config, dtype: dtype, bosTokenID: id("tokenizer.ggml.bos_token_id"),
                                            eosTokenID: id("tokenizer.ggml.eos_token_id"))
        return Array(try encoder.encode(config)) + [UInt8(ascii: "\n")]
    }

    /// The folder's files: `model.safetensors`, `config.json` and, with a tokenizer, its four files
    /// (``HuggingFaceTokenizer``), written by `write(url, bytes)`.
    static func writeFiles(_ parameters: LlamaParameters, to folder: URL, dtype: SafeTensorsDType, tokenizer: GGUFMetadata?,
                           using writer: DurableFileWriter, atomically: Bool) throws {
        try requireFullRotary(parameters.config, source: folder.path)
        try parameters.requireFinite(source: folder.path)
        let tokenizerFiles = try tokenizer.map { try TokenizerFiles.files(for: $0, modelMaxLength: parameters.config.contextLength) } ?? []
        let model = try safeTensors(for: parameters, dtype: dtype)
        let modelURL = folder.appendingPathComponent(modelFileName)
        try atomically ? model.write(to: modelURL, using: writer) : model.writeInPlace(to: modelURL, using: writer)
        let files = [(configFileName, try configJSON(for: parameters, dtype: dtype, tokenizer: tokenizer))] + tokenizerFiles.map { ($0.name, $0.contents) }
        for (name, bytes) in files {
            let url = folder.appendingPathComponent(name)
            try atomically ? writer.writeFileAtomically(at: url) { try $0.write(bytes) } : writer.writeFile(at: url) { try $0.write(bytes) }
        }
    }

    /// Writes `model.safetensors`, `config.json` and the tokenizer's files into `folder` (created
    /// if needed), each atomically.
    /// - Parameters:
    ///   - dtype: F32 (exact), F16 or BF16.
    ///   - tokenizer: a GGUF's `tokenizer.*` metadata, written as the tokenizer files transformers
    ///     loads (and its bos/eos ids into config.json); nil writes the model alone.
    public static func write(_ parameters: LlamaParameters, to folder: URL, dtype: SafeTensorsDType = .f32, tokenizer: GGUFMetadata?,
                             using writer: DurableFileWriter = DurableFileWriter()) throws {
        do {
            try FileChecks.createFolder(folder.path)
        } catch let problem as FileProblem {
            throw CheckpointError.writeFailed(path: problem.path, reason: problem.reason)
        }
        try writeFiles(parameters, to: folder, dtype: dtype, tokenizer: tokenizer, using: writer, atomically: true)
    }

    /// Writes the files in place into a folder that is published atomically afterwards.
    static func writeInPlace(_ parameters: LlamaParameters, tokenizer: GGUFMetadata?, to folder: URL, using writer: DurableFileWriter) throws {
        try writeFiles(parameters, to: folder, dtype: .f32, tokenizer: tokenizer, using: writer, atomically: false)
    }

    /// The tokenizer saved in `folder` as GGUF `tokenizer.*` metadata, or nil when it has none.
    public static func readTokenizer(from folder: URL) throws -> GGUFMetadata? {
        HuggingFaceTokenizer.exists(in: folder) ? try HuggingFaceTokenizer.read(from: folder) : nil
    }

    /// Reads `config.json` of a folder.
    public static func readConfig(from folder: URL) throws -> HuggingFaceLlamaConfig {
        let url = folder.appendingPathComponent(configFileName)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw CheckpointError.missingFile(path: url.path, hint: "a Hugging Face model folder needs config.json next to model.safetensors")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CheckpointError.unreadable(path: url.path, reason: FileChecks.describe(error))
        }
        do {
            return try JSONDecoder().decode(HuggingFaceLlamaConfig.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw CheckpointError.invalidJSON(file: url.path, reason: "required key \"\(key.stringValue)\" is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw CheckpointError.invalidJSON(file: url.path, reason: "key \"\(key)\" has the wrong type")
        } catch {
            throw CheckpointError.invalidJSON(file: url.path, reason: "not valid JSON")
        }
    }

    /// Reads a HF llama folder into GGUF names and layout (q/k rows permuted to adjacent pairs),
    /// checking every tensor's presence and shape against config.json. F32, F16 and BF16 tensors
    /// are read; `rotary_emb.inv_freq` buffers are ignored, as is `lm_head.weight` when tied.
    public static func read(from folder: URL) throws -> LlamaParameters {
        let hfConfig = try readConfig(from: folder)
        let configPath = folder.appendingPathComponent(configFileName).path
        let config = try hfConfig.llamaConfig(source: configPath)
        try requireFullRotary(config, source: configPath)
        let modelURL = folder.appendingPathComponent(modelFileName)
        guard FileManager.default.fileExists(atPath: modelURL.path) else {
            let sharded = FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors.index.json").path)
            throw CheckpointError.missingFile(path: modelURL.path, hint: sharded
                ? "sharded checkpoints (model.safetensors.index.json) are not supported; save the model as one file"
                : "a Hugging Face model folder needs model.safetensors")
        }
        let file = try SafeTensorsFile(url: modelURL)
        var tensors: [String: ParameterTensor] = [:]
        var used: Set<String> = []
        for (name, shape) in LlamaParameters.expectedShapes(for: config) {
            let (hfName, heads) = huggingFaceName(of: name, config: config)!
            guard file.contains(hfName) else {
                throw CheckpointError.parameterMismatch(source: file.path, reason: "missing tensor \(hfName) (\(config.layers) layers, \(config.tiedEmbeddings ? "tied" : "untied") embeddings in config.json)")
            }
            let entry = try file.entry(hfName)
            guard entry.shape == shape else {
                throw CheckpointError.parameterMismatch(source: file.path, reason: "tensor \(hfName) has shape \(entry.shape), expected \(shape) from config.json")
            }
            let values = try file.floats(hfName)
            tensors[name] = ParameterTensor(shape: shape, values: heads.map { RoPEPermutation.huggingFaceToGGUF(values, heads: $0, columns: shape[1]) } ?? values)
            used.insert(hfName)
        }
        let extra = file.names.filter { !used.contains($0) && !$0.hasSuffix("rotary_emb.inv_freq") && !(config.tiedEmbeddings && $0 == "lm_head.weight") }
        guard extra.isEmpty else {
            throw CheckpointError.parameterMismatch(source: file.path, reason: "unexpected tensors \(extra.sorted().prefix(5).joined(separator: ", ")) for the llama in config.json")
        }
        let parameters = try LlamaParameters(config: config, tensors: tensors, source: folder.path)
        try parameters.requireFinite(source: modelURL.path)
        return parameters
    }
}

/// The Hugging Face files of the last tokenizer written, kept for the next write of the same one:
/// every checkpoint of a run carries the same tokenizer, and serializing SmolLM2's 49152 tokens and
/// 48900 merges (``HuggingFaceTokenizer/files(for:modelMaxLength:)``) took 3.5 s of a 5.2 s
/// checkpoint of the default student, every 25 steps. The bytes are the same either way.
enum TokenizerFiles {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var last: (metadata: GGUFMetadata, modelMaxLength: Int, files: [(name: String, contents: [UInt8])])?

    static func files(for metadata: GGUFMetadata, modelMaxLength: Int) throws -> [(name: String, contents: [UInt8])] {
        lock.lock()
        defer { lock.unlock() }
        if let last, last.modelMaxLength == modelMaxLength, last.metadata == metadata { return last.files }
        let files = try HuggingFaceTokenizer.files(for: metadata, modelMaxLength: modelMaxLength)
        last = (metadata, modelMaxLength, files)
        return files
    }
}
