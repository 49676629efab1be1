import Foundation
import GGUF
import XCTest

/// Every file of the bad-input corpus (scripts/make_bad_gguf.py) must fail on open with the
/// error its manifest row names, mentioning the key or tensor, fast and without a crash.
final class GGUFBadInputTests: XCTestCase {
    func testEveryBadFileFailsWithItsSpecificError() throws {
        let manifest = try XCTUnwrap(JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("bad/manifest.json"))) as? [[String: String]])
        XCTAssertGreaterThanOrEqual(manifest.count, 20)
        for row in manifest {
            let name = try XCTUnwrap(row["file"])
            let url = Fixtures.url("bad/\(name)")
            XCTAssertThrowsError(try GGUFFile(contentsOf: url), name) { error in
                guard let error = error as? GGUFError else { return XCTFail("\(name): \(error) is not a GGUFError") }
                XCTAssertEqual(caseName(of: error), row["error"], "\(name): \(error)")
                let message = error.description
                XCTAssertTrue(message.contains(url.path), "\(name): message does not name the file: \(message)")
                XCTAssertFalse(message.contains("\n"), "\(name): message is not one line")
                if let subject = row["subject"], !subject.isEmpty {
                    XCTAssertTrue(message.contains(subject), "\(name): message does not name \(subject): \(message)")
                }
            }
        }
    }

    func testSpecificMessagesSayWhatIsWrong() throws {
        func message(_ name: String) -> String {
            do {
                _ = try GGUFFile(contentsOf: Fixtures.url("bad/\(name)"))
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message("k_quant_type.gguf").contains("has ggml type Q4_K (id 12)"))
        XCTAssertTrue(message("unknown_type.gguf").contains("unknown type id 99"))
        XCTAssertTrue(message("big_endian.gguf").contains("big-endian"))
        XCTAssertTrue(message("huge_tensor_count.gguf").contains("tensor count is 1152921504606846976"))
        XCTAssertTrue(message("misaligned_offset.gguf").contains("data offset 4, not a multiple of the alignment 32"))
        XCTAssertTrue(message("wrong_magic.gguf").contains("is not a GGUF file"))
        XCTAssertTrue(message("truncated_metadata.gguf").contains("truncated"))
    }

    func testMissingFileAndDirectoryAreOpenErrors() throws {
        XCTAssertThrowsError(try GGUFFile(path: "/nonexistent/model.gguf")) { error in
            XCTAssertEqual("\(error)", "cannot open GGUF file /nonexistent/model.gguf: no such file")
        }
        XCTAssertThrowsError(try GGUFFile(contentsOf: Fixtures.directory)) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
    }
}

/// The name of an error's case ("truncated"), matching the manifest's `error` column.
private func caseName(of error: GGUFError) -> String {
    let mirror = Mirror(reflecting: error)
    return mirror.children.first?.label ?? "\(error)"
}
