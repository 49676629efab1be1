import GGUF
import Tensor

/// The shape of a llama-architecture model.
public struct LlamaConfig: Equatable, Sendable {
    public var layers: Int
    /// C: the residual stream's width.
    public var width: Int
    /// F: the feed-forward's inner width.
    public var feedForward: Int
    /// H: query heads.
    public var heads: Int
    /// Hkv: key/value heads (grouped-query attention when fewer than `heads`).
    public var kvHeads: Int
    /// V
    public var vocabulary: Int
    public var contextLength: Int
    public var ropeBase: Float
    public var ropeDimensions: Int
    public var normEpsilon: Float
    public var tiedEmbeddings: Bool

    /// hs: each head's width.
    public var headDimension: Int { width / heads }
    /// Query heads per key/value head.
    public var groupSize: Int { heads / kvHeads }
    public var kvWidth: Int { kvHeads * headDimension }

    public init(layers: Int, width: Int, feedForward: Int, heads: Int, kvHeads: Int, vocabulary: Int, contextLength: Int,
                ropeBase: Float, ropeDimensions: Int? = nil, normEpsilon: Float, tiedEmbeddings: Bool) {
        self.layers = layers
        self.width = width
        self.feedForward = feedForward
        self.heads = heads
        self.kvHeads = kvHeads
        self.vocabulary = vocabulary
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.ropeDimensions = ropeDimensions ?? (heads > 0 ? width / heads : 0)  // zero heads: refused by validate()
        self.normEpsilon = normEpsilon
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// Reads `llama.*` metadata; the vocabulary comes from `llama.vocab_size` or the embedding's rows.
    public init(gguf file: GGUFFile) throws {
        let architecture = try file.string("general.architecture")
        guard architecture == "llama" else {
            throw ModelError.unsupported("\(file.path): architecture '\(architecture)' is not supported; kdgpu runs llama-architecture GGUF files")
        }
        let embedding = try file.tensor(named: "token_embd.weight")
        self.init(layers: try file.int("llama.block_count"), width: try file.int("llama.embedding_length"),
                  feedForward: try file.int("llama.feed_forward_length"), heads: try file.int("llama.attention.head_count"),
                  kvHeads: file.contains("llama.attention.head_count_kv") ? try file.int("llama.attention.head_count_kv")
                                                                           : try file.int("llama.attention.head_count"),
                  vocabulary: file.contains("llama.vocab_size") ? try file.int("llama.vocab_size") : embedding.shape[0],
                  contextLength: try file.int("llama.context_length"),
                  ropeBase: file.contains("llama.rope.freq_base") ? try file.float("llama.rope.freq_base") : 10000,
                  ropeDimensions: file.contains("llama.rope.dimension_count") ? try file.int("llama.rope.dimension_count") : nil,
                  normEpsilon: try file.float("llama.attention.layer_norm_rms_epsilon"),
                  tiedEmbeddings: !file.hasTensor(named: "output.weight"))
        try validate(source: file.path)
    }

    /// Bounds far above any model that fits a machine, so a corrupt or mistyped size is refused
    /// before it is multiplied into an allocation.
    public static let limits = (layers: 1024, width: 1 << 17, feedForward: 1 << 19, vocabulary: 1 << 22, contextLength: 1 << 22)

    /// Parameters of a model of this shape (embedding, blocks, final norm, and the head when untied).
    public var parameterCount: Int {
        let attention = 2 * width * width + 2 * width * kvWidth
        let block = attention + 3 * width * feedForward + 2 * width
        return vocabulary * width * (tiedEmbeddings ? 1 : 2) + layers * block + width
    }

    /// Checks the numbers fit together; `source` names the file in the error.
    public func validate(source: String) throws {
        func require(_ condition: Bool, _ message: String) throws {
            if !condition { throw ModelError.invalidConfig("\(source): \(message)") }
        }
        try require(layers > 0 && width > 0 && feedForward > 0 && vocabulary > 0 && contextLength > 0,
                    "layers, width, feed-forward, vocabulary and context length must be positive (got \(layers), \(width), \(feedForward), \(vocabulary), \(contextLength))")
        for (name, value, limit) in [("block count", layers, Self.limits.layers), ("width", width, Self.limits.width),
                                     ("feed-forward width", feedForward, Self.limits.feedForward), ("vocabulary", vocabulary, Self.limits.vocabulary),
                                     ("context length", contextLength, Self.limits.contextLength)] {
            try require(value <= limit, "\(name) \(value) is beyond any model kdgpu can hold (at most \(limit))")
        }
        try require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0, "\(heads) heads are not a multiple of \(kvHeads) key/value heads")
        try require(width % heads == 0 && headDimension % 2 == 0, "width \(width) is not \(heads) heads of an even size")
        try require(ropeDimensions > 0 && ropeDimensions <= headDimension && ropeDimensions % 2 == 0,
                    "rope dimension count \(ropeDimensions) must be even and at most the head size \(headDimension)")
        try require(normEpsilon > 0 && ropeBase > 0, "rms epsilon and rope base must be positive")
    }
}

/// Errors in model files and model use, worded for the user.
public enum ModelError: Error, CustomStringConvertible {
    case unsupported(String)
    case invalidConfig(String)
    case missingTensor(String)
    case badTensor(String)
    case badInput(String)
    /// An f16 model's GEMM input past f16's range (what, and the advice).
    case f16Overflow(String)

    public var description: String {
        switch self {
        case .unsupported(let message), .invalidConfig(let message), .missingTensor(let message),
             .badTensor(let message), .badInput(let message), .f16Overflow(let message):
            return message
        }
    }
}
