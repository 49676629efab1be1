import Foundation
import GGUF
import Tokenizer
import TrainingData
import XCTest

/// The Hugging Face tokenizer files kdgpu writes, against transformers' ids for them
/// (Fixtures/hf_tokenizer_ids.json, made by bench/reference/make_hf_tokenizer_fixture.py).
final class HuggingFaceTokenizerTests: XCTestCase {
    struct Reference: Decodable {
        let files: [String: String]
        let texts: [String]
        let ids: [String: [[TokenID]]]
    }

    /// The teacher's tokenizer metadata (smollm2_vocab.gguf), relabelled with another pre-tokenizer.
    func vocabulary(pre: String) throws -> GGUFMetadata {
        let file = try GGUFFile(contentsOf: SmolLM2TokenizerTests.fixtures.appendingPathComponent("smollm2_vocab.gguf"))
        let entries = GGUFMetadata.tokenizer(of: file).entries.map { entry in
            entry.key == "tokenizer.ggml.pre" ? (entry.key, GGUFValue.string(pre)) : entry
        }
        return GGUFMetadata(path: file.path, entries: entries)
    }

    func scratchFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-hf-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func write(_ metadata: GGUFMetadata, to folder: URL) throws {
        for file in try HuggingFaceTokenizer.files(for: metadata, modelMaxLength: 8192) {
            try Data(file.contents).write(to: folder.appendingPathComponent(file.name))
        }
    }

    /// For every pre-tokenizer: the tokenizer.json written now is the one transformers read (same
    /// SHA-256), and kdgpu's ids (special tokens matched, as transformers does) equal transformers'.
    func testIdsEqualTransformersOnVariedText() throws {
        let url = SmolLM2TokenizerTests.fixtures.appendingPathComponent("hf_tokenizer_ids.json")
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
        XCTAssertEqual(Set(reference.files.keys), Set(PreTokenizer.allCases.map(\.rawValue)))
        XCTAssertGreaterThan(reference.texts.count, 300)
        for pre in PreTokenizer.allCases.map(\.rawValue) {
            let metadata = try vocabulary(pre: pre)
            let files = try HuggingFaceTokenizer.files(for: metadata, modelMaxLength: 8192)
            var hash = SHA256()
            hash.update(files.first { $0.name == HuggingFaceTokenizer.tokenizerFileName }!.contents)
            XCTAssertEqual(hash.finalizeHex(), reference.files[pre],
                           "\(pre): tokenizer.json changed since the fixture was made; rerun bench/reference/make_hf_tokenizer_fixture.py")
            let tokenizer = try BPETokenizer(gguf: metadata)
            var mismatches: [String] = []
            for (text, expected) in zip(reference.texts, reference.ids[pre]!) where try tokenizer.encode(text, parseSpecial: true) != expected {
                mismatches.append(text)
            }
            XCTAssertEqual(mismatches.count, 0, "\(pre): \(mismatches.count) texts differ from transformers, e.g. \(mismatches.prefix(3))")
        }
    }

    /// Files -> GGUF metadata gives the teacher's tokenizer.* entries back, value for value.
    func testFilesReadBackAsTheSameGGUFMetadata() throws {
        for pre in PreTokenizer.allCases.map(\.rawValue) {
            let original = try vocabulary(pre: pre)
            let folder = try scratchFolder()
            try write(original, to: folder)
            let read = try HuggingFaceTokenizer.read(from: folder)
            XCTAssertEqual(Set(read.metadataKeys), Set(original.metadataKeys), pre)
            for key in original.metadataKeys { XCTAssertEqual(read.metadata[key], original.metadata[key], "\(pre): \(key)") }
        }
    }

    func testConfigFilesCarryTheSpecialTokensAndChatTemplate() throws {
        let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        let base = try vocabulary(pre: "smollm")
        let metadata = GGUFMetadata(path: base.path, entries: base.entries + [("tokenizer.chat_template", .string(template))])
        let folder = try scratchFolder()
        try write(metadata, to: folder)
        func object(_ name: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent(name))) as! [String: Any]
        }
        let config = try object(HuggingFaceTokenizer.configFileName)
        XCTAssertEqual(config["bos_token"] as? String, "<|im_start|>")
        XCTAssertEqual(config["eos_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["pad_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["unk_token"] as? String, "<|endoftext|>")
        XCTAssertEqual(config["add_bos_token"] as? Bool, false)
        XCTAssertEqual(config["model_max_length"] as? Int, 8192)
        XCTAssertEqual(config["chat_template"] as? String, template)
        XCTAssertEqual(config["tokenizer_class"] as? String, "PreTrainedTokenizerFast", "GPT2Tokenizer would replace the pre-tokenizer with its own in transformers 5")
        let generation = try object(HuggingFaceTokenizer.generationConfigFileName)
        XCTAssertEqual(generation["bos_token_id"] as? Int, 1)
        XCTAssertEqual(generation["eos_token_id"] as? Int, 2)
        let special = try object(HuggingFaceTokenizer.specialTokensFileName)
        XCTAssertEqual(special["eos_token"] as? String, "<|im_end|>")
        XCTAssertTrue((special["additional_special_tokens"] as? [String] ?? []).contains("<repo_name>"))
        let tokenizer = try object(HuggingFaceTokenizer.tokenizerFileName)
        let added = tokenizer["added_tokens"] as! [[String: Any]]
        XCTAssertEqual(added.count, 17, "SmolLM2's 17 control tokens")
        XCTAssertTrue(added.allSatisfy { $0["special"] as? Bool == true })
        XCTAssertEqual(try HuggingFaceTokenizer.read(from: folder).metadata["tokenizer.chat_template"], .string(template))
    }

    func testBadTokenizerFilesAreErrorsNamingTheFile() throws {
        let folder = try scratchFolder()
        try write(try vocabulary(pre: "gpt-2"), to: folder)
        let tokenizerURL = folder.appendingPathComponent(HuggingFaceTokenizer.tokenizerFileName)
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: tokenizerURL)) as! [String: Any]
        object["pre_tokenizer"] = ["type": "Whitespace"]
        try JSONSerialization.data(withJSONObject: object).write(to: tokenizerURL)
        XCTAssertThrowsError(try HuggingFaceTokenizer.read(from: folder)) {
            XCTAssertTrue("\($0)".contains("tokenizer.json") && "\($0)".contains("pre_tokenizer"), "\($0)")
        }
        try Data("{not json".utf8).write(to: tokenizerURL)
        XCTAssertThrowsError(try HuggingFaceTokenizer.read(from: folder)) {
            XCTAssertTrue("\($0)".contains("tokenizer.json") && "\($0)".contains("not a JSON object"), "\($0)")
            XCTAssertFalse("\($0)".contains("Error Domain"), "\($0)")
        }
        try write(try vocabulary(pre: "gpt-2"), to: folder)
        let configURL = folder.appendingPathComponent(HuggingFaceTokenizer.configFileName)
        try Data(#"{"eos_token": "<|no such token|>"}"#.utf8).write(to: configURL)
        XCTAssertThrowsError(try HuggingFaceTokenizer.read(from: folder)) {
            XCTAssertTrue("\($0)".contains("tokenizer_config.json") && "\($0)".contains("eos_token"), "\($0)")
        }
    }
}
