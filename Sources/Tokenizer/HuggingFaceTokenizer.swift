import Foundation
import GGUF

/// A byte-level BPE tokenizer as a Hugging Face model folder ships it, made from a GGUF's
/// `tokenizer.*` metadata and read back into it, so a checkpoint carries its tokenizer for
/// transformers (`AutoTokenizer`) and for a later GGUF export alike.
///
/// - `tokenizer.json` (the `tokenizers` library's serialization): the BPE vocabulary and merges,
///   the pre-tokenizer's ``PreTokenizer/regexes`` as `Split`s before a regex-free `ByteLevel`, the
///   `ByteLevel` decoder, and control (special) and user-defined tokens as `added_tokens`.
/// - `tokenizer_config.json`: bos/eos/pad/unk tokens, `add_bos_token`, `model_max_length`, the
///   chat template; `special_tokens_map.json`; `generation_config.json` (bos/eos ids).
///
/// ```swift
/// let files = try HuggingFaceTokenizer.files(for: GGUFMetadata(teacher, keysWithPrefix: "tokenizer."), modelMaxLength: 2048)
/// let metadata = try HuggingFaceTokenizer.read(from: folder)   // the same tokenizer.* entries
/// ```
public enum HuggingFaceTokenizer {
    public static let tokenizerFileName = "tokenizer.json"
    public static let configFileName = "tokenizer_config.json"
    public static let specialTokensFileName = "special_tokens_map.json"
    public static let generationConfigFileName = "generation_config.json"
    public static let fileNames = [tokenizerFileName, configFileName, specialTokensFileName, generationConfigFileName]

    /// The GGUF keys of the special ids and the names tokenizer_config.json gives them.
    static let specialRoles = [("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id"),
                               ("unk_token", "tokenizer.ggml.unknown_token_id"), ("pad_token", "tokenizer.ggml.padding_token_id")]

    // MARK: Writing

    /// The four files (name and bytes) of the tokenizer in `metadata` (a GGUF's `tokenizer.*` entries).
    /// - Parameter modelMaxLength: the model's context length.
    public static func files(for metadata: some GGUFMetadataSource, modelMaxLength: Int) throws -> [(name: String, contents: [UInt8])] {
        let tokenizer = try BPETokenizer(gguf: metadata)
        var vocabulary: [String: Int] = [:]
        for (id, token) in tokenizer.tokens.enumerated() {
            if let earlier = vocabulary.updateValue(id, forKey: token) {
                throw TokenizerError.invalidVocabulary(file: metadata.path, reason: "token '\(token)' is both id \(earlier) and \(id); tokenizer.json cannot hold it")
            }
        }
        let added: [[String: Any]] = tokenizer.tokenTypes.enumerated().compactMap { id, type in
            guard type != .normal else { return nil }
            return ["id": id, "content": tokenizer.tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": type != .userDefined]
        }
        var specialNames: [String: String] = [:]  // role -> token text
        var specialIDs: [String: Int] = [:]
        for (role, key) in specialRoles where metadata.contains(key) {
            let id = try metadata.int(key)
            guard tokenizer.tokens.indices.contains(id) else {
                throw TokenizerError.invalidVocabulary(file: metadata.path, reason: "\(key) \(id) is outside the vocabulary of \(tokenizer.tokens.count)")
            }
            specialNames[role] = tokenizer.tokens[id]
            specialIDs[role] = id
        }
        let addsEOS = metadata.contains("tokenizer.ggml.add_eos_token") ? try metadata.bool("tokenizer.ggml.add_eos_token") : false

        var postProcessor: Any = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        if tokenizer.addsBOSByDefault || addsEOS {
            func special(_ role: String) -> [[String: Any]] {
                guard let name = specialNames[role] else { return [] }
                return [["SpecialToken": ["id": name, "type_id": 0]]]
            }
            let (bos, eos) = (tokenizer.addsBOSByDefault ? special("bos_token") : [], addsEOS ? special("eos_token") : [])
            let single = bos + [["Sequence": ["id": "A", "type_id": 0]]] + eos
            let pair = single + bos + [["Sequence": ["id": "B", "type_id": 1]]] + eos
            var specials: [String: Any] = [:]
            for role in ["bos_token", "eos_token"] {
                if let name = specialNames[role], let id = specialIDs[role] { specials[name] = ["id": name, "ids": [id], "tokens": [name]] }
            }
            postProcessor = ["type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials]
        }
        let tokenizerJSON: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": preTokenizerJSON(tokenizer.preTokenizer),
            "post_processor": postProcessor,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": tokenizer.preTokenizer.ignoresMerges, "vocab": vocabulary,
                      "merges": tokenizer.mergeRules.map { $0.split(separator: " ", maxSplits: 1).map(String.init) }],
        ]

        var config: [String: Any] = [
            "add_bos_token": tokenizer.addsBOSByDefault, "add_eos_token": addsEOS, "clean_up_tokenization_spaces": false,
            "model_max_length": modelMaxLength, "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": Dictionary(uniqueKeysWithValues: added.map { entry in
                (String(entry["id"] as! Int), entry.filter { $0.key != "id" })
            }),
        ]
        for (role, name) in specialNames { config[role] = name }
        if metadata.contains("tokenizer.ggml.add_space_prefix") {
            config["add_prefix_space"] = try metadata.bool("tokenizer.ggml.add_space_prefix")
        }
        if metadata.contains("tokenizer.chat_template") { config["chat_template"] = try metadata.string("tokenizer.chat_template") }
        var specialMap: [String: Any] = specialNames
        let others = added.filter { ($0["special"] as! Bool) && !specialNames.values.contains($0["content"] as! String) }.map { $0["content"]! }
        if !others.isEmpty { specialMap["additional_special_tokens"] = others }
        var generation: [String: Any] = ["_from_model_config": false]
        for (role, key) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "pad_token_id")] {
            if let id = specialIDs[role] { generation[key] = id }
        }
        return try [(tokenizerFileName, tokenizerJSON), (configFileName, config), (specialTokensFileName, specialMap),
                    (generationConfigFileName, generation)].map { name, object in
            (name, Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) + [10])
        }
    }

    /// The `pre_tokenizer` of tokenizer.json for `preTokenizer`: its regexes as `Split`s (matches
    /// isolated, text between kept), then `ByteLevel` without its own regex.
    static func preTokenizerJSON(_ preTokenizer: PreTokenizer) -> [String: Any] {
        let splits: [[String: Any]] = preTokenizer.regexes.map {
            ["type": "Split", "pattern": ["Regex": $0], "behavior": "Isolated", "invert": false]
        }
        return ["type": "Sequence", "pretokenizers": splits + [byteLevel(useRegex: false)]]
    }

    static func byteLevel(useRegex: Bool) -> [String: Any] {
        ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex]
    }

    /// Pre-tokenizers of tokenizer.json files written elsewhere that mean the same splits: the
    /// GPT-2 regex is `ByteLevel`'s own, and SmolLM2's repository isolates digits with `Digits`.
    static func equivalentPreTokenizerJSON(_ preTokenizer: PreTokenizer) -> [[String: Any]] {
        switch preTokenizer {
        case .gpt2: return [byteLevel(useRegex: true)]
        case .smollm:
            return [["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel(useRegex: true)]]]
        case .llamaBPE: return []
        }
    }

    // MARK: Reading

    /// Whether `folder` holds a tokenizer (a `tokenizer.json`).
    public static func exists(in folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent(tokenizerFileName).path)
    }

    /// The GGUF `tokenizer.*` metadata of the byte-level BPE tokenizer in `folder` (tokenizer.json
    /// and, when present, tokenizer_config.json), checked by building the tokenizer from it.
    public static func read(from folder: URL) throws -> GGUFMetadata {
        let tokenizerURL = folder.appendingPathComponent(tokenizerFileName)
        let path = tokenizerURL.path
        func invalid(_ reason: String) -> TokenizerError { .invalidVocabulary(file: path, reason: reason) }
        let root = try jsonObject(at: tokenizerURL)
        guard let model = root["model"] as? [String: Any], model["type"] as? String == "BPE",
              let vocabulary = model["vocab"] as? [String: Int] else {
            throw invalid("\"model\" is not a BPE model with a vocab; kdgpu reads byte-level BPE tokenizers")
        }
        let addedTokens = root["added_tokens"] as? [[String: Any]] ?? []
        var tokens: [String?] = []
        func place(_ token: String, _ id: Int) throws {
            guard id >= 0, id < 1 << 24 else { throw invalid("token '\(token)' has id \(id)") }
            if id >= tokens.count { tokens += [String?](repeating: nil, count: id + 1 - tokens.count) }
            if let other = tokens[id], other != token { throw invalid("id \(id) is both '\(other)' and '\(token)'") }
            tokens[id] = token
        }
        for (token, id) in vocabulary { try place(token, id) }
        var types: [TokenType] = []
        var addedTypes: [Int: TokenType] = [:]
        for entry in addedTokens {
            guard let id = entry["id"] as? Int, let content = entry["content"] as? String else { throw invalid("an added token lacks its id or content") }
            try place(content, id)
            addedTypes[id] = entry["special"] as? Bool == false ? .userDefined : .control
        }
        if let missing = tokens.firstIndex(where: { $0 == nil }) { throw invalid("no token has id \(missing) (ids must run from 0 without gaps)") }
        types = tokens.indices.map { addedTypes[$0] ?? .normal }
        let merges: [String] = try (model["merges"] as? [Any] ?? []).map { merge in
            if let text = merge as? String { return text }
            if let pair = merge as? [String], pair.count == 2 { return pair.joined(separator: " ") }
            throw invalid("a merge is neither \"A B\" nor [\"A\", \"B\"]")
        }
        let preJSON = root["pre_tokenizer"] as Any
        guard let preTokenizer = PreTokenizer.allCases.first(where: { candidate in
            ([preTokenizerJSON(candidate)] + equivalentPreTokenizerJSON(candidate)).contains { NSDictionary(dictionary: $0).isEqual(preJSON) }
        }) else {
            throw invalid("its pre_tokenizer is none of the splits kdgpu implements (\(PreTokenizer.allCases.map(\.rawValue).joined(separator: ", ")))")
        }

        let names = tokens.map { $0! }
        var entries: [(key: String, value: GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(preTokenizer.rawValue)),
            ("tokenizer.ggml.tokens", .array(of: names)), ("tokenizer.ggml.token_type", .array(of: types.map(\.rawValue))),
            ("tokenizer.ggml.merges", .array(of: merges)),
        ]
        let configURL = folder.appendingPathComponent(configFileName)
        let config = FileManager.default.fileExists(atPath: configURL.path) ? try jsonObject(at: configURL) : [:]
        let ids = Dictionary(names.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        for (role, key) in specialRoles {
            // A token's text, or {"content": text, ...} as transformers also writes it.
            guard let name = config[role] as? String ?? (config[role] as? [String: Any])?["content"] as? String else { continue }
            guard let id = ids[name] else {
                throw TokenizerError.invalidVocabulary(file: configURL.path, reason: "\(role) '\(name)' is not in the vocabulary of \(path)")
            }
            entries.append((key, .uint32(UInt32(id))))
        }
        entries.append(("tokenizer.ggml.add_bos_token", .bool(config["add_bos_token"] as? Bool ?? false)))
        if let addsEOS = config["add_eos_token"] as? Bool, addsEOS { entries.append(("tokenizer.ggml.add_eos_token", .bool(true))) }
        if let addsSpace = config["add_prefix_space"] as? Bool { entries.append(("tokenizer.ggml.add_space_prefix", .bool(addsSpace))) }
        if let template = config["chat_template"] as? String { entries.append(("tokenizer.chat_template", .string(template))) }
        let metadata = GGUFMetadata(path: folder.path, entries: entries)
        _ = try BPETokenizer(gguf: metadata)
        return metadata
    }

    /// A JSON object file; errors name it in kdgpu's words.
    static func jsonObject(at url: URL) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TokenizerError.invalidVocabulary(file: url.path, reason: "cannot be read")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TokenizerError.invalidVocabulary(file: url.path, reason: "not a JSON object")
        }
        return object
    }
}
