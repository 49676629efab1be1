import Checkpoint
import Foundation
import GGUF
import Models
import TestSupport
import XCTest

/// The real default teacher (SmolLM2-135M-Instruct, Q4_1: 9 heads, 3 kv heads, head size 64, rope
/// base 100000, tied embeddings) through the Hugging Face export. Runs when `make teacher` has
/// fetched it (or KDGPU_TEACHER_GGUF names a copy) and skips, saying so, otherwise.
final class RealTeacherExportTests: CheckpointTestCase {
    struct TransformersTeacherReference: Decodable {
        let prompt: [Int32]
        let top_ids: [Int]
        let top_logits: [Float]
    }

    /// "The capital of France is": the re-imported export gives the GGUF model's logits exactly
    /// (F32 export and the permutation are lossless), and transformers' logits of the same export
    /// (Fixtures/teacher-hf-logits.json, from bench/reference/check_hf_export.py teacher).
    func testTeacherSurvivesHuggingFaceExportAndMatchesTransformers() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = ProcessInfo.processInfo.environment["KDGPU_TEACHER_GGUF"]
            ?? root.appendingPathComponent("cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("the default teacher is not fetched (run `make teacher`, or set KDGPU_TEACHER_GGUF)")
        }
        let reference = try JSONDecoder().decode(TransformersTeacherReference.self,
                                                 from: Data(contentsOf: Self.fixtures.appendingPathComponent("teacher-hf-logits.json")))
        let teacherFile = try GGUFFile(path: path)
        let teacher = try LlamaParameters(gguf: teacherFile)
        let folder = try scratchFolder().appendingPathComponent("teacher-hf")
        let tokenizer = GGUFMetadata.tokenizer(of: teacherFile)
        try HuggingFaceCheckpoint.write(teacher, to: folder, tokenizer: tokenizer)
        // The tokenizer files read back as the teacher's tokenizer.* metadata, chat template included.
        let tokenizerBack = try XCTUnwrap(HuggingFaceCheckpoint.readTokenizer(from: folder))
        XCTAssertEqual(Set(tokenizerBack.metadataKeys), Set(tokenizer.metadataKeys))
        for key in tokenizer.metadataKeys { XCTAssertEqual(tokenizerBack.metadata[key], tokenizer.metadata[key], key) }
        XCTAssertNotNil(tokenizer.metadata["tokenizer.chat_template"])
        if let exportPath = ProcessInfo.processInfo.environment["KDGPU_TEACHER_HF_EXPORT_DIR"] {
            try FileManager.default.createDirectory(atPath: exportPath, withIntermediateDirectories: true)
            for file in ["model.safetensors", "config.json"] {
                try? FileManager.default.removeItem(atPath: exportPath + "/" + file)
                try FileManager.default.copyItem(at: folder.appendingPathComponent(file), to: URL(fileURLWithPath: exportPath + "/" + file))
            }
        }
        let reimported = try HuggingFaceCheckpoint.read(from: folder)
        XCTAssertEqual(reimported, teacher)

        let vocabulary = teacher.config.vocabulary
        let last = Array(try logits(reimported, reference.prompt).suffix(vocabulary))
        let best = last.indices.max { last[$0] < last[$1] }!
        XCTAssertEqual(best, reference.top_ids[0], "greedy token (' Paris' is 7042)")
        for (id, expected) in zip(reference.top_ids, reference.top_logits) {
            XCTAssertEqual(last[id], expected, accuracy: 2e-3 * max(1, abs(expected)), "logit of token \(id) vs transformers")
        }
    }
}
