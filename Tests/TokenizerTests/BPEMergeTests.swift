import Tokenizer
import XCTest

/// The merge loop on tiny hand-made vocabularies, where the expected ids can be worked out by hand.
final class BPEMergeTests: XCTestCase {
    /// Byte tokens for "a", "b", "c", "Ġ" (space) plus `extra` merged tokens.
    func tokenizer(extra: [String], merges: [String], pre: PreTokenizer = .gpt2) throws -> BPETokenizer {
        let tokens = ["a", "b", "c", "Ġ"] + extra
        return try BPETokenizer(tokens: tokens, tokenTypes: Array(repeating: .normal, count: tokens.count),
                                merges: merges, preTokenizer: pre, bosTokenID: nil, eosTokenID: nil,
                                addsBOSByDefault: false, source: "test vocabulary")
    }

    func testLowestRankMergesFirst() throws {
        // ids: a 0, b 1, c 2, Ġ 3, ab 4, bc 5, abc 6
        let bpe = try tokenizer(extra: ["ab", "bc", "abc"], merges: ["b c", "a b", "a bc"])
        XCTAssertEqual(try bpe.encode("abc"), [6])       // b c (rank 0) first, then a bc
        let other = try tokenizer(extra: ["ab", "bc", "abc"], merges: ["a b", "b c", "ab c"])
        XCTAssertEqual(try other.encode("abc"), [6])     // a b first, then ab c
        let stuck = try tokenizer(extra: ["ab", "bc"], merges: ["a b", "b c"])
        XCTAssertEqual(try stuck.encode("abc"), [4, 2])  // a b wins; no rule joins ab and c
    }

    func testEqualRanksMergeLeftmostFirst() throws {
        // ids: aa 4. "aaa": both pairs are rank 0, the left one merges.
        let bpe = try tokenizer(extra: ["aa"], merges: ["a a"])
        XCTAssertEqual(try bpe.encode("aaa"), [4, 0])
        XCTAssertEqual(try bpe.encode("aaaa"), [4, 4])
    }

    func testSpacesAreByteTokens() throws {
        let bpe = try tokenizer(extra: ["Ġa"], merges: ["Ġ a"])
        XCTAssertEqual(try bpe.encode("a a"), [0, 4])
        XCTAssertEqual(try bpe.decode([0, 4]), "a a")
    }

    func testMissingByteTokenAndBadMergesAreErrors() throws {
        let bpe = try tokenizer(extra: [], merges: [])
        XCTAssertThrowsError(try bpe.encode("ad")) { error in
            XCTAssertEqual("\(error)", "test vocabulary: the vocabulary has no token for byte 0x64, so this text cannot be encoded")
        }
        XCTAssertThrowsError(try tokenizer(extra: [], merges: ["a b"])) { error in
            XCTAssertEqual("\(error)", "test vocabulary: tokenizer.ggml.merges[0] 'a b' makes a token missing from the vocabulary")
        }
        XCTAssertThrowsError(try tokenizer(extra: ["ab"], merges: ["ab"]))
        XCTAssertThrowsError(try tokenizer(extra: ["ad"], merges: ["a d"]))
    }

    func testLlamaBPEEmitsWholeWordTokensWithoutMerging() throws {
        // "abc" is a token but no merge reaches it: llama-bpe's ignore_merges still emits it whole.
        let llama = try tokenizer(extra: ["abc"], merges: [], pre: .llamaBPE)
        XCTAssertEqual(try llama.encode("abc"), [4])
        let gpt2 = try tokenizer(extra: ["abc"], merges: [], pre: .gpt2)
        XCTAssertEqual(try gpt2.encode("abc"), [0, 1, 2])
    }
}
