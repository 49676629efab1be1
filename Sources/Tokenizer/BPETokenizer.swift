import GGUF

/// A token id, as llama.cpp numbers them (`llama_token`).
public typealias TokenID = Int32

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
public enum TokenType: Int32, Sendable {
    case undefined = 0
    case normal = 1
    case unknown = 2
    /// Special tokens such as `<|im_start|>`: matched in text only when the caller asks.
    case control = 3
    /// Added tokens that are always matched in text before pre-tokenization.
    case userDefined = 4
    case unused = 5
    case byte = 6
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), producing the ids llama.cpp produces.
///
/// Encoding: special tokens are cut out of the text first (``encode(_:addBOS:parseSpecial:)``
/// says which); the rest is split by the ``PreTokenizer``; each piece's UTF-8 bytes start as
/// single-byte tokens and are merged pairwise, always the adjacent pair of lowest merge rank
/// (leftmost on ties), until no pair has a merge. Pieces repeat a lot in real text, so each
/// distinct piece is merged once per call.
///
/// ```swift
/// let tokenizer = try BPETokenizer(gguf: GGUFFile(contentsOf: modelURL))
/// let ids = try tokenizer.encode("Hello world")        // [19556, 905] for SmolLM2
/// let text = try tokenizer.decode(ids)                 // "Hello world"
/// ```
public struct BPETokenizer: Sendable {
    /// Token strings in byte-to-unicode form ("Ġthe"), indexed by id.
    public let tokens: [String]
    public let tokenTypes: [TokenType]
    public let preTokenizer: PreTokenizer
    public let bosTokenID: TokenID?
    public let eosTokenID: TokenID?
    /// `tokenizer.ggml.add_bos_token`: whether the model expects a BOS token in front of prompts.
    /// llama.cpp adds one only when this is true; pass it as `addBOS` for the same behaviour.
    public let addsBOSByDefault: Bool
    /// Where the vocabulary came from, for error messages.
    public let source: String
    /// The merge rules as given ("A B", index = rank): with ``tokens``, ``tokenTypes`` and
    /// ``preTokenizer`` they identify the tokenizer (token caches are keyed by them).
    public let mergeRules: [String]

    private let tokenIDs: [String: TokenID]
    /// `byteTokens[b]` is the id of the single-byte token for byte `b`, or -1 when the vocabulary lacks it.
    private let byteTokens: [TokenID]
    /// Merge rules keyed by `left << 32 | right` (token ids).
    private let merges: [UInt64: Merge]
    /// Tokens matched in text before pre-tokenization, longest first (see ``encode(_:addBOS:parseSpecial:)``).
    private let specialTokens: [(id: TokenID, utf8: [UInt8], type: TokenType)]
    /// The bytes each token decodes to.
    private let decodedTokens: [[UInt8]]

    private struct Merge {
        let rank: Int32
        let result: TokenID
    }

    public var vocabularySize: Int { tokens.count }

    /// Reads the tokenizer of a GGUF model: `tokenizer.ggml.{model, pre, tokens, token_type,
    /// merges, bos_token_id, eos_token_id, add_bos_token}`.
    public init(gguf file: some GGUFMetadataSource) throws {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(file: file.path, model: model) }
        let preName = try file.string("tokenizer.ggml.pre")
        guard let preTokenizer = PreTokenizer(rawValue: preName) else {
            throw TokenizerError.unknownPreTokenizer(file: file.path, name: preName)
        }
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let rawTypes = file.contains("tokenizer.ggml.token_type")
            ? try file.intArray("tokenizer.ggml.token_type")
            : [Int](repeating: Int(TokenType.normal.rawValue), count: tokens.count)
        let types = try rawTypes.enumerated().map { index, raw in
            guard let type = Int32(exactly: raw).flatMap(TokenType.init(rawValue:)) else {
                throw TokenizerError.invalidVocabulary(file: file.path, reason: "tokenizer.ggml.token_type[\(index)] is \(raw), not 0...6")
            }
            return type
        }
        func optionalID(_ key: String) throws -> TokenID? {
            guard file.contains(key) else { return nil }
            guard let id = TokenID(exactly: try file.int(key)) else {
                throw TokenizerError.invalidVocabulary(file: file.path, reason: "\(key) is out of range")
            }
            return id
        }
        try self.init(tokens: tokens, tokenTypes: types, merges: try file.stringArray("tokenizer.ggml.merges"),
                      preTokenizer: preTokenizer,
                      bosTokenID: try optionalID("tokenizer.ggml.bos_token_id"),
                      eosTokenID: try optionalID("tokenizer.ggml.eos_token_id"),
                      addsBOSByDefault: file.contains("tokenizer.ggml.add_bos_token")
                          ? try file.bool("tokenizer.ggml.add_bos_token") : false,
                      source: file.path)
    }

    /// A tokenizer from vocabulary arrays as GGUF stores them.
    /// - Parameters:
    ///   - tokens: token strings in byte-to-unicode form, indexed by id.
    ///   - tokenTypes: one per token.
    ///   - merges: "A B" rules; the index is the rank (lower merges first).
    public init(tokens: [String], tokenTypes: [TokenType], merges mergeRules: [String], preTokenizer: PreTokenizer,
                bosTokenID: TokenID?, eosTokenID: TokenID?, addsBOSByDefault: Bool, source: String) throws {
        guard tokens.count == tokenTypes.count else {
            throw TokenizerError.invalidVocabulary(file: source, reason: "\(tokens.count) tokens but \(tokenTypes.count) token types")
        }
        guard tokens.count < Int(TokenID.max) else {
            throw TokenizerError.invalidVocabulary(file: source, reason: "\(tokens.count) tokens do not fit 32-bit ids")
        }
        for (key, id) in [("bos", bosTokenID), ("eos", eosTokenID)] {
            if let id, !(0..<TokenID(tokens.count)).contains(id) {
                throw TokenizerError.invalidVocabulary(file: source, reason: "\(key) token id \(id) is not below the vocabulary size \(tokens.count)")
            }
        }
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.preTokenizer = preTokenizer
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.addsBOSByDefault = addsBOSByDefault
        self.source = source
        self.mergeRules = mergeRules

        // A duplicated string maps to its last id, as in llama.cpp.
        var tokenIDs: [String: TokenID] = [:]
        tokenIDs.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() { tokenIDs[token] = TokenID(id) }
        self.tokenIDs = tokenIDs
        byteTokens = ByteLevel.scalarForByte.map { tokenIDs[String($0)] ?? -1 }

        // The first rule for a pair wins, as in llama.cpp.
        var merges: [UInt64: Merge] = [:]
        merges.reserveCapacity(mergeRules.count)
        for (rank, rule) in mergeRules.enumerated() {
            let parts = rule.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.invalidMerge(file: source, rank: rank, merge: rule, reason: "is not two tokens separated by a space")
            }
            guard let left = tokenIDs[String(parts[0])], let right = tokenIDs[String(parts[1])] else {
                throw TokenizerError.invalidMerge(file: source, rank: rank, merge: rule, reason: "names a token missing from the vocabulary")
            }
            guard let result = tokenIDs[String(parts[0] + parts[1])] else {
                throw TokenizerError.invalidMerge(file: source, rank: rank, merge: rule, reason: "makes a token missing from the vocabulary")
            }
            let key = UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
            if merges[key] == nil { merges[key] = Merge(rank: Int32(rank), result: result) }
        }
        self.merges = merges

        specialTokens = tokenTypes.enumerated()
            .filter { $0.element == .control || $0.element == .userDefined || $0.element == .unknown }
            .map { (id: TokenID($0.offset), utf8: Array(tokens[$0.offset].utf8), type: $0.element) }
            .filter { !$0.utf8.isEmpty }
            .sorted { $0.utf8.count != $1.utf8.count ? $0.utf8.count > $1.utf8.count : $0.id < $1.id }
        decodedTokens = zip(tokens, tokenTypes).map { token, type in
            switch type {
            case .control, .userDefined, .unknown: return Array(token.utf8)
            case .normal, .byte, .unused, .undefined: return ByteLevel.decode(token)
            }
        }
    }

    // MARK: Encoding

    /// The token ids of `text`.
    /// - Parameters:
    ///   - addBOS: put ``bosTokenID`` first (when the vocabulary has one). llama.cpp does this only
    ///     for models whose ``addsBOSByDefault`` is true.
    ///   - parseSpecial: match control tokens such as `<|im_start|>` in the text as single tokens
    ///     (llama.cpp's `parse_special`). When false they are tokenized as plain text. User-defined
    ///     tokens are always matched, as llama.cpp does.
    public func encode(_ text: String, addBOS: Bool = false, parseSpecial: Bool = false) throws -> [TokenID] {
        try encode(utf8: Array(text.utf8), addBOS: addBOS, parseSpecial: parseSpecial)
    }

    /// The token ids of UTF-8 `bytes`; bytes that are not UTF-8 are an error (``TokenizerError/invalidUTF8(offset:)``).
    public func encode(utf8 bytes: [UInt8], addBOS: Bool = false, parseSpecial: Bool = false) throws -> [TokenID] {
        let (scalars, scalarOffsets) = try decodeUTF8(bytes)
        var output: [TokenID] = []
        output.reserveCapacity(bytes.count / 3)
        if addBOS, let bosTokenID { output.append(bosTokenID) }
        var cache: [ArraySlice<UInt8>: [TokenID]] = [:]
        for fragment in partitionSpecialTokens(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id):
                output.append(id)
            case .text(let byteRange):
                // Scalar indices of the fragment: the fragment starts and ends on scalar boundaries.
                let first = scalarIndex(ofByte: byteRange.lowerBound, in: scalarOffsets)
                let last = scalarIndex(ofByte: byteRange.upperBound, in: scalarOffsets)
                let fragmentScalars = Array(scalars[first..<last])
                let classes = fragmentScalars.map(characterClass)
                for piece in preTokenizer.splitRanges(scalars: fragmentScalars, classes: classes) {
                    let word = bytes[scalarOffsets[first + piece.lowerBound]..<scalarOffsets[first + piece.upperBound]]
                    if let ids = cache[word] {
                        output.append(contentsOf: ids)
                    } else {
                        let ids = try mergeWord(word)
                        cache[word] = ids
                        output.append(contentsOf: ids)
                    }
                }
            }
        }
        return output
    }

    private enum Fragment {
        case special(TokenID)
        case text(Range<Int>)
    }

    /// Cuts special tokens out of `bytes`, longest token first, each at every occurrence in the text
    /// left by the longer ones (llama.cpp's `tokenizer_st_partition`).
    private func partitionSpecialTokens(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = bytes.isEmpty ? [] : [.text(0..<bytes.count)]
        for special in specialTokens where parseSpecial || special.type == .userDefined {
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count)
            for fragment in fragments {
                guard case .text(let range) = fragment else {
                    next.append(fragment)
                    continue
                }
                var start = range.lowerBound
                var position = range.lowerBound
                let needle = special.utf8
                while position + needle.count <= range.upperBound {
                    if bytes[position] == needle[0] && bytes[position..<position + needle.count].elementsEqual(needle) {
                        if position > start { next.append(.text(start..<position)) }
                        next.append(.special(special.id))
                        position += needle.count
                        start = position
                    } else {
                        position += 1
                    }
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            fragments = next
        }
        return fragments
    }

    /// BPE over one pre-tokenized word: byte tokens merged by rank until no adjacent pair has a merge.
    private func mergeWord(_ word: ArraySlice<UInt8>) throws -> [TokenID] {
        if preTokenizer.ignoresMerges, let whole = tokenIDs[ByteLevel.encode(word)] { return [whole] }
        // symbols[i] is the token at original position i; merged-away positions are skipped via next/previous.
        var symbols: [TokenID] = []
        symbols.reserveCapacity(word.count)
        for byte in word {
            let id = byteTokens[Int(byte)]
            guard id >= 0 else { throw TokenizerError.byteWithoutToken(file: source, byte: byte) }
            symbols.append(id)
        }
        if symbols.count < 2 { return symbols }
        var next = Array(1...symbols.count)   // symbols.count marks the end
        var previous = Array(-1..<symbols.count - 1)
        var removed = [Bool](repeating: false, count: symbols.count)

        var queue = PairQueue()
        func pushPair(_ left: Int, _ right: Int) {
            guard left >= 0, right < symbols.count,
                  let merge = merges[UInt64(UInt32(symbols[left])) << 32 | UInt64(UInt32(symbols[right]))] else { return }
            queue.push(PairQueue.Entry(rank: merge.rank, left: Int32(left), right: Int32(right),
                                       leftToken: symbols[left], rightToken: symbols[right], result: merge.result))
        }
        for index in 0..<symbols.count - 1 { pushPair(index, index + 1) }
        while let pair = queue.pop() {
            let left = Int(pair.left), right = Int(pair.right)
            // Skip pairs made stale by an earlier merge of either side.
            guard !removed[left], !removed[right], symbols[left] == pair.leftToken, symbols[right] == pair.rightToken else {
                continue
            }
            symbols[left] = pair.result
            removed[right] = true
            next[left] = next[right]
            if next[right] < symbols.count { previous[next[right]] = left }
            pushPair(previous[left], left)
            pushPair(left, next[left])
        }
        var result: [TokenID] = []
        var index = 0
        while index < symbols.count {
            result.append(symbols[index])
            index = next[index]
        }
        return result
    }

    // MARK: Decoding

    /// The bytes `ids` stand for. Control tokens give their text (`<|im_end|>`) unless
    /// `includeSpecialTokens` is false, in which case they give nothing (llama.cpp's
    /// `detokenize(..., special: false)`).
    public func decodeBytes(_ ids: [TokenID], includeSpecialTokens: Bool = true) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            guard id >= 0 && Int(id) < tokens.count else {
                throw TokenizerError.tokenIDOutOfRange(id: id, vocabularySize: tokens.count)
            }
            let type = tokenTypes[Int(id)]
            if !includeSpecialTokens && (type == .control || type == .unknown) { continue }
            bytes.append(contentsOf: decodedTokens[Int(id)])
        }
        return bytes
    }

    /// The text `ids` stand for; byte sequences that are not UTF-8 (a multi-byte character cut
    /// between tokens) become U+FFFD here, and only here.
    public func decode(_ ids: [TokenID], includeSpecialTokens: Bool = true) throws -> String {
        String(decoding: try decodeBytes(ids, includeSpecialTokens: includeSpecialTokens), as: UTF8.self)
    }

    /// The id of a token string in byte-to-unicode form ("Ġthe"), if the vocabulary has it.
    public func id(ofToken token: String) -> TokenID? { tokenIDs[token] }
}

/// Decodes UTF-8 into scalars and the byte offset of each scalar (plus the end offset),
/// throwing at the first invalid byte.
private func decodeUTF8(_ bytes: [UInt8]) throws -> (scalars: [Unicode.Scalar], offsets: [Int]) {
    var scalars: [Unicode.Scalar] = []
    var offsets: [Int] = []
    scalars.reserveCapacity(bytes.count)
    offsets.reserveCapacity(bytes.count + 1)
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    var offset = 0
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue(let scalar):
            scalars.append(scalar)
            offsets.append(offset)
            offset += UTF8.width(scalar)
        case .emptyInput:
            offsets.append(offset)
            return (scalars, offsets)
        case .error:
            throw TokenizerError.invalidUTF8(offset: offset)
        }
    }
}

/// The index of the scalar starting at byte `offset` (binary search in the sorted `offsets`).
private func scalarIndex(ofByte offset: Int, in offsets: [Int]) -> Int {
    var low = 0, high = offsets.count - 1
    while low < high {
        let middle = (low + high) / 2
        if offsets[middle] < offset { low = middle + 1 } else { high = middle }
    }
    return low
}

/// A binary min-heap of candidate merges ordered by rank, then by leftmost position.
private struct PairQueue {
    struct Entry {
        let rank: Int32
        let left: Int32
        let right: Int32
        let leftToken: TokenID
        let rightToken: TokenID
        let result: TokenID

        func precedes(_ other: Entry) -> Bool {
            rank != other.rank ? rank < other.rank : left < other.left
        }
    }

    private var heap: [Entry] = []

    mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < heap.count && heap[left].precedes(heap[smallest]) { smallest = left }
                if right < heap.count && heap[right].precedes(heap[smallest]) { smallest = right }
                if smallest == parent { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
