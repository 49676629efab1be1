import Foundation
import GGUF
import Tokenizer
import TrainingData
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Shared set-up: the tiny fixture model's byte-level tokenizer (256 bytes + 4 merges, EOS = 10,
/// pre-tokenizer gpt-2) and scratch folders removed after each test.
class TrainingDataTestCase: XCTestCase {
    static let repositoryTests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static let tinyTokenizer = try! BPETokenizer(gguf: GGUFFile(contentsOf: repositoryTests.appendingPathComponent("ModelTests/Fixtures/tiny-llama-q8_0.gguf")))

    var tokenizer: BPETokenizer { Self.tinyTokenizer }

    func scratchFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    @discardableResult
    func write(_ text: String, to url: URL) throws -> URL {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
        return url
    }

    /// Asserts `body` throws an error whose description is one line containing every one of `fragments`.
    func assertError(_ body: @autoclosure () throws -> Any, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            let message = "\(error)"
            for fragment in fragments {
                XCTAssertTrue(message.contains(fragment), "'\(message)' lacks '\(fragment)'", file: file, line: line)
            }
            XCTAssertFalse(message.contains("\n"), "not one line: \(message)", file: file, line: line)
        }
    }
}

final class CorpusTests: TrainingDataTestCase {
    func testFolderCorpusTakesTextFilesRecursivelyInPathOrder() throws {
        let root = try scratchFolder()
        try write("second", to: root.appendingPathComponent("b/inner.md"))
        try write("first", to: root.appendingPathComponent("a.txt"))
        try write("third", to: root.appendingPathComponent("c.TEXT"))
        try write("{\"text\": \"not taken\"}", to: root.appendingPathComponent("d.jsonl"))
        try write("not taken", to: root.appendingPathComponent("notes.rst"))
        try write("hidden", to: root.appendingPathComponent(".hidden.txt"))
        let corpus = try Corpus(path: root.path)
        XCTAssertEqual(corpus.format, .text)
        XCTAssertEqual(corpus.files.map { URL(fileURLWithPath: $0.path).lastPathComponent }, ["a.txt", "inner.md", "c.TEXT"])
        XCTAssertEqual(try corpus.documents(), ["first", "second", "third"])
        XCTAssertEqual(corpus.files[0].size, 5)
    }

    func testSingleTextFileIsOneDocument() throws {
        let file = try write("line one\nline two\n", to: try scratchFolder().appendingPathComponent("plays.md"))
        XCTAssertEqual(try Corpus(path: file.path).documents(), ["line one\nline two\n"])
    }

    func testJSONLinesTakeTheTextFieldOfEachObjectAndSkipBlankLines() throws {
        let file = try write("""
            {"text": "Hello, world", "id": 1}

            {"id": 2, "text": "two\\nlines \\u00e9 🦙"}
              \t
            {"text": ""}
            """, to: try scratchFolder().appendingPathComponent("data.jsonl"))
        let corpus = try Corpus(path: file.path)
        XCTAssertEqual(corpus.format, .jsonLines(field: "text"))
        XCTAssertEqual(try corpus.documents(), ["Hello, world", "two\nlines é 🦙", ""])
        let other = try write("{\"content\": \"a\"}\n{\"content\": \"b\", \"text\": \"no\"}\n",
                              to: try scratchFolder().appendingPathComponent("chat.json"))
        XCTAssertEqual(try Corpus(path: other.path, jsonField: "content", forceJSONLines: true).documents(), ["a", "b"])
        XCTAssertEqual(try Corpus(path: other.path, jsonField: "content").format, .text, "a .json file is text unless forced")
    }

    func testBadInputsAreOneLineErrorsNamingTheFileAndWhatToDo() throws {
        let root = try scratchFolder()
        assertError(try Corpus(path: root.appendingPathComponent("nope.txt").path),
                    contains: ["corpus path", "nope.txt does not exist", "give a text file, a folder"])

        let latin1 = root.appendingPathComponent("latin1.txt")
        try Data([0x61, 0x62, 0x63, 0xE9, 0x74, 0xE9]).write(to: latin1)  // "abcété" in Latin-1
        assertError(try Corpus(path: latin1.path).documents(), contains: ["latin1.txt is not UTF-8", "offset 3", "convert it to UTF-8"])

        let jsonl = root.appendingPathComponent("bad.jsonl")
        try Data("{\"text\": \"fine\"}\n{\"text\": \"caf".utf8 + [0xC3, 0x28] + Array("\"}\n".utf8)).write(to: jsonl)
        assertError(try Corpus(path: jsonl.path).documents(), contains: ["bad.jsonl is not UTF-8", "offset 30"])

        try write("{\"text\": \"a\"}\n{\"text\": \"b\"\n", to: jsonl)
        assertError(try Corpus(path: jsonl.path).documents(), contains: ["bad.jsonl:2: not valid JSON", "one JSON object"])
        try write("{\"text\": \"a\"}\n[1, 2]\n", to: jsonl)
        assertError(try Corpus(path: jsonl.path).documents(), contains: ["bad.jsonl:2:", "not an object"])
        try write("{\"text\": \"a\"}\n\n{\"body\": \"b\"}\n", to: jsonl)
        assertError(try Corpus(path: jsonl.path).documents(), contains: ["bad.jsonl:3: no string field \"text\"", "--text-field"])
        try write("{\"text\": 5}\n", to: jsonl)
        assertError(try Corpus(path: jsonl.path, jsonField: "text").documents(), contains: ["bad.jsonl:1: no string field \"text\""])

        let empty = root.appendingPathComponent("empty")
        try write("x", to: empty.appendingPathComponent("data.csv"))
        assertError(try Corpus(path: empty.path), contains: ["corpus", "empty: the folder holds no .md, .text, .txt files", "add text"])

        let blank = try write("", to: root.appendingPathComponent("blank/a.txt"))
        try write("", to: blank.deletingLastPathComponent().appendingPathComponent("b.txt"))
        assertError(try TokenCache.tokenize(Corpus(path: blank.deletingLastPathComponent().path), tokenizer: tokenizer),
                    contains: ["blank is empty: its 2 documents hold no text", "add text"])

        #if os(Linux)
        // stat succeeds, read fails (EIO): a file that cannot be read, even for root.
        assertError(try Corpus(path: "/proc/self/mem").documents(), contains: ["cannot read /proc/self/mem", "check the path"])
        #endif
    }
}

final class TokenCacheTests: TrainingDataTestCase {
    func testDocumentsAreJoinedWithEOS() throws {
        let root = try scratchFolder()
        try write("the cat", to: root.appendingPathComponent("1.txt"))
        try write("", to: root.appendingPathComponent("2.txt"))
        try write("in the hat", to: root.appendingPathComponent("3.txt"))
        let corpus = try Corpus(path: root.path)
        let eos = try XCTUnwrap(tokenizer.eosTokenID)
        let expected = try tokenizer.encode("the cat") + [eos] + tokenizer.encode("in the hat")
        XCTAssertEqual(try TokenCache.tokenize(corpus, tokenizer: tokenizer).tokens, expected, "an empty document adds no EOS")
        let joined = try TokenCache.tokenize(corpus, tokenizer: tokenizer, options: TokenizationOptions(separateDocumentsWithEOS: false))
        XCTAssertEqual(joined.tokens, try tokenizer.encode("the cat") + tokenizer.encode("in the hat"))
        XCTAssertEqual(joined.documents, 3)
    }

    func testSecondLoadReadsTheCacheFileWithoutTokenizing() throws {
        let root = try scratchFolder()
        try write(String(repeating: "the thin hen in the inn. ", count: 40), to: root.appendingPathComponent("text/a.txt"))
        try write("then the end", to: root.appendingPathComponent("text/b.txt"))
        let cache = TokenCache(directory: root.appendingPathComponent("cache/tokens"))
        let corpus = try Corpus(path: root.appendingPathComponent("text").path)

        let first = try cache.tokens(for: corpus, tokenizer: tokenizer)
        XCTAssertFalse(first.loadedFromCache)
        XCTAssertEqual(first.documentsTokenized, 2)
        XCTAssertEqual(first.tokens, try TokenCache.tokenize(corpus, tokenizer: tokenizer).tokens)
        XCTAssertEqual(first.cacheFile.deletingLastPathComponent().path, cache.directory.path)
        XCTAssertEqual(try TokenFile.read(from: first.cacheFile), first.tokens)
        let written = try FileManager.default.attributesOfItem(atPath: first.cacheFile.path)[.modificationDate] as? Date

        let second = try cache.tokens(for: Corpus(path: root.appendingPathComponent("text").path), tokenizer: tokenizer)
        XCTAssertTrue(second.loadedFromCache)
        XCTAssertEqual(second.documentsTokenized, 0)
        XCTAssertEqual(second.tokens, first.tokens)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: first.cacheFile.path)[.modificationDate] as? Date, written,
                       "the cache file was not rewritten")

        // Proof that nothing is re-tokenized: tokens planted in the cache file come back as they are.
        try TokenFile.write([7, 7, 7], to: first.cacheFile)
        XCTAssertEqual(try cache.tokens(for: corpus, tokenizer: tokenizer).tokens, [7, 7, 7])
        // A damaged cache file is rebuilt rather than trusted.
        try Data("KDTK garbage".utf8).write(to: first.cacheFile)
        let rebuilt = try cache.tokens(for: corpus, tokenizer: tokenizer)
        XCTAssertFalse(rebuilt.loadedFromCache)
        XCTAssertEqual(rebuilt.tokens, first.tokens)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.directory.path), [first.cacheFile.lastPathComponent],
                       "no temporary files are left behind")
    }

    func testKeyChangesWithTheInputsTheTokenizerAndTheOptions() throws {
        let root = try scratchFolder()
        let file = try write("the thin hen", to: root.appendingPathComponent("a.txt"))
        let cache = TokenCache(directory: root.appendingPathComponent("cache"))
        let key = { (corpus: Corpus, tokenizer: BPETokenizer, options: TokenizationOptions) in
            cache.key(for: corpus, tokenizer: tokenizer, options: options)
        }
        let base = key(try Corpus(path: file.path), tokenizer, TokenizationOptions())
        XCTAssertEqual(base.count, 64)
        XCTAssertEqual(key(try Corpus(path: file.path), tokenizer, TokenizationOptions()), base, "same inputs, same key")

        // Tokenizer: SmolLM2's vocabulary instead of the tiny one.
        let smollm = try BPETokenizer(gguf: GGUFFile(contentsOf: Self.repositoryTests.appendingPathComponent("TokenizerTests/Fixtures/smollm2_vocab.gguf")))
        XCTAssertNotEqual(key(try Corpus(path: file.path), smollm, TokenizationOptions()), base)
        // Tokenizer: same tokens, one merge fewer.
        let fewerMerges = try BPETokenizer(tokens: tokenizer.tokens, tokenTypes: tokenizer.tokenTypes, merges: Array(tokenizer.mergeRules.dropLast()),
                                           preTokenizer: tokenizer.preTokenizer, bosTokenID: tokenizer.bosTokenID, eosTokenID: tokenizer.eosTokenID,
                                           addsBOSByDefault: false, source: "test")
        XCTAssertNotEqual(key(try Corpus(path: file.path), fewerMerges, TokenizationOptions()), base)
        // Options.
        XCTAssertNotEqual(key(try Corpus(path: file.path), tokenizer, TokenizationOptions(separateDocumentsWithEOS: false)), base)
        XCTAssertNotEqual(key(try Corpus(path: file.path), tokenizer, TokenizationOptions(parseSpecialTokens: true)), base)
        // Format and JSON field.
        XCTAssertNotEqual(key(try Corpus(path: file.path, forceJSONLines: true), tokenizer, TokenizationOptions()), base)
        XCTAssertNotEqual(key(try Corpus(path: file.path, jsonField: "body", forceJSONLines: true), tokenizer, TokenizationOptions()),
                          key(try Corpus(path: file.path, forceJSONLines: true), tokenizer, TokenizationOptions()))
        // Input: another path with the same contents.
        let copy = try write("the thin hen", to: root.appendingPathComponent("b.txt"))
        XCTAssertNotEqual(key(try Corpus(path: copy.path), tokenizer, TokenizationOptions()), base)
        // Input: the modification time alone.
        var times = [timeval(tv_sec: 1_000_000_000, tv_usec: 0), timeval(tv_sec: 1_000_000_000, tv_usec: 0)]
        XCTAssertEqual(utimes(file.path, &times), 0)
        let touched = key(try Corpus(path: file.path), tokenizer, TokenizationOptions())
        XCTAssertNotEqual(touched, base)
        // Input: the size (same modification time).
        try write("the thin hens", to: file)
        XCTAssertEqual(utimes(file.path, &times), 0)
        XCTAssertNotEqual(key(try Corpus(path: file.path), tokenizer, TokenizationOptions()), touched)

        // An edited file is re-tokenized on the next load.
        let before = try cache.tokens(for: Corpus(path: file.path), tokenizer: tokenizer)
        try write("hen", to: file)
        let after = try cache.tokens(for: Corpus(path: file.path), tokenizer: tokenizer)
        XCTAssertFalse(after.loadedFromCache)
        XCTAssertNotEqual(after.cacheFile, before.cacheFile)
        XCTAssertEqual(after.tokens, try tokenizer.encode("hen"))
    }

    func testTokenFileLayoutAndItsErrors() throws {
        let url = try scratchFolder().appendingPathComponent("t.tokens")
        try TokenFile.write([1, -2, 0x01020304], to: url)
        let bytes = [UInt8](try Data(contentsOf: url))
        XCTAssertEqual(bytes, Array("KDTK".utf8) + [1, 0, 0, 0] + [3, 0, 0, 0, 0, 0, 0, 0]
                       + [1, 0, 0, 0] + [0xFE, 0xFF, 0xFF, 0xFF] + [4, 3, 2, 1])
        XCTAssertEqual(try TokenFile.read(from: url), [1, -2, 0x01020304])

        try Data(bytes.dropLast()).write(to: url)
        assertError(try TokenFile.read(from: url), contains: ["t.tokens is not a valid kdgpu token file", "says 3 tokens but the file is 27 bytes", "delete it"])
        try Data(Array("KDTK".utf8) + [2, 0, 0, 0] + [UInt8](repeating: 0, count: 8)).write(to: url)
        assertError(try TokenFile.read(from: url), contains: ["version 2"])
        try Data("GGUF".utf8).write(to: url)
        assertError(try TokenFile.read(from: url), contains: ["does not start with \"KDTK\""])
    }

    func testSHA256MatchesKnownDigests() {
        var abc = SHA256()
        abc.update(Array("abc".utf8))
        XCTAssertEqual(abc.finalizeHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var long = SHA256()  // several blocks, digest from Python's hashlib
        long.update([UInt8](repeating: UInt8(ascii: "a"), count: 1000))
        XCTAssertEqual(long.finalizeHex(), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}
