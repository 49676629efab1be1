import Foundation
import GGUF
import Tokenizer
import XCTest

/// The pre-tokenizer splits on small hand-checked cases, and the errors for unknown tokenizers.
final class PreTokenizerTests: XCTestCase {
    func testGPT2Split() {
        let split = PreTokenizer.gpt2.split
        XCTAssertEqual(split("Hello world"), ["Hello", " world"])
        XCTAssertEqual(split("I'm here, they'll've"), ["I", "'m", " here", ",", " they", "'ll", "'ve"])
        XCTAssertEqual(split("IT'S"), ["IT", "'", "S"])               // contractions are lower case only
        XCTAssertEqual(split("In 2024"), ["In", " 2024"])
        XCTAssertEqual(split("a  b"), ["a", " ", " b"])              // \s+(?!\S) leaves one space for the word
        XCTAssertEqual(split("a\n\nb  "), ["a", "\n", "\n", "b", "  "])
        XCTAssertEqual(split("x !!?"), ["x", " !!?"])
        XCTAssertEqual(split("café日本"), ["café日本"])
        XCTAssertEqual(split("x²½"), ["x", "²½"])
        XCTAssertEqual(split(""), [])
    }

    func testSmolLMSplitIsolatesEveryDigit() {
        let split = PreTokenizer.smollm.split
        XCTAssertEqual(split("In 2024, ok"), ["In", " ", "2", "0", "2", "4", ",", " ok"])
        XCTAssertEqual(split("x²"), ["x", "²"])
        XCTAssertEqual(split("a1b"), ["a", "1", "b"])
        XCTAssertEqual(split("Hi 2024!"), ["Hi", " ", "2", "0", "2", "4", "!"])
    }

    func testLlamaBPESplit() {
        let split = PreTokenizer.llamaBPE.split
        XCTAssertEqual(split("Hello world"), ["Hello", " world"])
        XCTAssertEqual(split("IT'S they'RE"), ["IT", "'S", " they", "'RE"])   // contractions ignore case
        XCTAssertEqual(split("1234567"), ["123", "456", "7"])                // \p{N}{1,3}
        XCTAssertEqual(split("(hello)"), ["(hello", ")"])                    // [^\r\n\p{L}\p{N}]?\p{L}+
        XCTAssertEqual(split("a  \n\n b"), ["a", "  \n\n", " b"])            // \s*[\r\n]+
        XCTAssertEqual(split("x ...\n\ny"), ["x", " ...\n\n", "y"])         // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        XCTAssertEqual(split("a   b"), ["a", "  ", " b"])
        XCTAssertTrue(PreTokenizer.llamaBPE.ignoresMerges)
        XCTAssertFalse(PreTokenizer.smollm.ignoresMerges)
    }

    func testSplitsConcatenateBackToTheInput() {
        let texts = ["  mixed\t\tcontent 123 'quoted' \r\n\n 日本語 🦙🦙 ...!!  ", "ab'sc'LLd\u{00A0}\u{3000}x"]
        for preTokenizer in PreTokenizer.allCases {
            for text in texts {
                XCTAssertEqual(preTokenizer.split(text).joined(), text, "\(preTokenizer)")
            }
        }
    }

    func testUnknownPreTokenizerAndModelAreErrors() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        func tokenizerFile(model: String, pre: String) throws -> GGUFFile {
            var writer = GGUFWriter()
            writer.setMetadata(.string(model), forKey: "tokenizer.ggml.model")
            writer.setMetadata(.string(pre), forKey: "tokenizer.ggml.pre")
            writer.setMetadata(.array(of: ["a", "b", "ab"]), forKey: "tokenizer.ggml.tokens")
            writer.setMetadata(.array(of: ["a b"]), forKey: "tokenizer.ggml.merges")
            let url = directory.appendingPathComponent("\(model)-\(pre).gguf")
            try writer.write(to: url)
            return try GGUFFile(contentsOf: url)
        }
        let qwen = try tokenizerFile(model: "gpt2", pre: "qwen2")
        XCTAssertThrowsError(try BPETokenizer(gguf: qwen)) { error in
            XCTAssertEqual("\(error)", "\(qwen.path): unknown pre-tokenizer tokenizer.ggml.pre = 'qwen2'; supported: 'smollm', 'llama-bpe', 'gpt-2'")
        }
        let sentencePiece = try tokenizerFile(model: "llama", pre: "default")
        XCTAssertThrowsError(try BPETokenizer(gguf: sentencePiece)) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedModel(file: sentencePiece.path, model: "llama"))
        }
        XCTAssertNoThrow(try BPETokenizer(gguf: tokenizerFile(model: "gpt2", pre: "gpt-2")))
    }
}
