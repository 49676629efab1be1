import Checkpoint
import Foundation
import GGUF
import Models
import TestSupport
import XCTest

final class TrainingCheckpointTests: CheckpointTestCase {
    let configuration: JSONValue = ["seq_len": 64, "batch_size": 4, "lr": 3e-4, "teacher": "teacher.gguf", "loss": ["kind": "kl", "temperature": 2]]

    /// A checkpoint of the tiny model with moments and state that differ per `step`.
    /// The tiny model's tokenizer, which every checkpoint here carries.
    static let tinyTokenizer = GGUFMetadata.tokenizer(of: try! GGUFFile(contentsOf: tinyF32))

    func checkpoint(step: Int) -> TrainingCheckpoint {
        var moments = AdamWMoments.zeros(like: Self.tiny)
        var random = SeededRandom(seed: UInt64(step))
        for name in Self.tiny.names {
            moments.first[name]!.values = random.normals(moments.first[name]!.values.count, scale: 1e-3)
            moments.second[name]!.values = random.normals(moments.second[name]!.values.count, scale: 1e-6).map(abs)
        }
        var parameters = Self.tiny
        parameters.tensors["output_norm.weight"]!.values[0] = Float(step)
        return TrainingCheckpoint(parameters: parameters, moments: moments,
                                  state: TrainerState(step: step, dataEpoch: step / 10, dataIndex: 4 * (step % 10),
                                                      rngState: UInt64.max - UInt64(step), configuration: configuration),
                                  tokenizer: Self.tinyTokenizer)
    }

    func testSaveThenLoadGivesBackEverything() throws {
        let directory = try scratchFolder().appendingPathComponent("run")
        let saved = checkpoint(step: 5)
        let folder = try saved.save(in: directory)
        XCTAssertEqual(folder.lastPathComponent, "step-00000005")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: directory.appendingPathComponent("checkpoint").path), "step-00000005")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(),
                       ["config.json", "generation_config.json", "model.safetensors", "optimizer.safetensors", "special_tokens_map.json",
                        "tokenizer.json", "tokenizer_config.json", "trainer_state.json"])
        let loaded = try TrainingCheckpoint.load(from: directory)
        XCTAssertEqual(loaded, saved)
        XCTAssertEqual(loaded.state.rngState, UInt64.max - 5, "64-bit RNG state survives JSON")
        XCTAssertEqual(try TrainingCheckpoint.load(from: folder), saved, "a step folder loads directly too")
        // The model inside is a plain Hugging Face folder.
        XCTAssertEqual(try HuggingFaceCheckpoint.read(from: directory.appendingPathComponent("checkpoint")), saved.parameters)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("trainer_state.json"))) as! [String: Any]
        XCTAssertEqual(Set(state.keys), ["format_version", "step", "data_epoch", "data_index", "rng_state", "configuration", "schedules"])
    }

    func testANewSaveReplacesThePreviousOne() throws {
        let directory = try scratchFolder()
        try checkpoint(step: 5).save(in: directory)
        try checkpoint(step: 10).save(in: directory)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["checkpoint", "step-00000010"])
        XCTAssertEqual(try TrainingCheckpoint.load(from: directory), checkpoint(step: 10))
        // Saving the same step again (e.g. the final save) goes to a new folder, then replaces the old.
        var again = checkpoint(step: 10)
        again.state.rngState = 1
        XCTAssertEqual(try again.save(in: directory).lastPathComponent, "step-00000010-2")
        XCTAssertEqual(try TrainingCheckpoint.load(from: directory), again)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["checkpoint", "step-00000010-2"])
    }

    /// A disk that fills up at any point of a save: the save fails with a one-line error, the previous
    /// checkpoint still loads unchanged, and no partial folder is left.
    func testAFullDiskAtAnyPointLeavesThePreviousCheckpointIntact() throws {
        let directory = try scratchFolder()
        let previous = checkpoint(step: 5)
        try previous.save(in: directory)
        let next = checkpoint(step: 6)
        let measuring = DurableFileWriter()
        let probe = try scratchFolder()
        try next.save(in: probe, using: measuring)
        let total = measuring.bytesWritten
        XCTAssertGreaterThan(total, 2 * Self.tiny.parameterCount * 4)

        let limits = [0, 1, 8, 1000, total / 3, total / 2, 2 * total / 3, total - 100, total - 1]
        for limit in limits {
            let writer = DurableFileWriter(failingAfterBytes: limit)
            assertError(try next.save(in: directory, using: writer),
                        contains: ["cannot save the step 6 checkpoint in \(directory.path)", "No space left on device",
                                   "the previous checkpoint \(directory.path)/checkpoint is intact"])
            XCTAssertEqual(try TrainingCheckpoint.load(from: directory), previous, "after failing at byte \(limit)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["checkpoint", "step-00000005"])
        }
        try next.save(in: directory, using: DurableFileWriter(failingAfterBytes: total))
        XCTAssertEqual(try TrainingCheckpoint.load(from: directory), next)
    }

    /// What a crash (power loss, kill -9) can leave behind: a partial folder, a complete but unpublished
    /// step folder, a temporary link. None of it changes what loads, and the next save removes it.
    func testLeftoversOfACrashedSaveAreIgnoredThenCleanedUp() throws {
        let directory = try scratchFolder()
        try checkpoint(step: 5).save(in: directory)
        let manager = FileManager.default
        let partial = directory.appendingPathComponent(".partial-step-00000006-dead")
        try manager.createDirectory(at: partial, withIntermediateDirectories: true)
        try Data("half a safetensors".utf8).write(to: partial.appendingPathComponent("model.safetensors"))
        // A complete step folder renamed into place just before the crash, never linked.
        let unpublished = try checkpoint(step: 7).save(in: directory.appendingPathComponent("elsewhere"))
        try manager.moveItem(at: unpublished, to: directory.appendingPathComponent("step-00000007"))
        try manager.removeItem(at: directory.appendingPathComponent("elsewhere"))
        try manager.createSymbolicLink(atPath: directory.appendingPathComponent(".checkpoint.tmp-dead").path, withDestinationPath: "step-00000007")

        XCTAssertEqual(try TrainingCheckpoint.load(from: directory), checkpoint(step: 5), "the link still names the last published checkpoint")
        try checkpoint(step: 7).save(in: directory)
        XCTAssertEqual(try manager.contentsOfDirectory(atPath: directory.path).sorted(), ["checkpoint", "step-00000007"])
        XCTAssertEqual(try TrainingCheckpoint.load(from: directory), checkpoint(step: 7))
    }

    func testLoadErrorsNameTheFileAndWhatIsWrong() throws {
        let root = try scratchFolder()
        assertError(try TrainingCheckpoint.load(from: root.appendingPathComponent("empty")),
                    contains: ["empty/checkpoint is missing", "there is no checkpoint in"])

        func saved(_ name: String) throws -> URL {
            try checkpoint(step: 3).save(in: root.appendingPathComponent(name))
        }
        let noOptimizer = try saved("no-optimizer")
        try FileManager.default.removeItem(at: noOptimizer.appendingPathComponent("optimizer.safetensors"))
        assertError(try TrainingCheckpoint.load(from: noOptimizer.deletingLastPathComponent()),
                    contains: ["step-00000003/optimizer.safetensors is missing", "incomplete"])

        func editState(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let url = folder.appendingPathComponent("trainer_state.json")
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: url)
        }
        let newer = try saved("newer")
        try editState(newer) { $0["format_version"] = 2 }
        assertError(try TrainingCheckpoint.load(from: newer), contains: ["trainer_state.json: checkpoint format version 2, this build reads version 1"])

        let noStep = try saved("no-step")
        try editState(noStep) { $0["step"] = nil }
        assertError(try TrainingCheckpoint.load(from: noStep), contains: ["trainer_state.json: required key \"step\" is missing"])

        let badRNG = try saved("bad-rng")
        try editState(badRNG) { $0["rng_state"] = "-1" }
        assertError(try TrainingCheckpoint.load(from: badRNG), contains: ["trainer_state.json: key \"rng_state\" is invalid"])

        let garbled = try saved("garbled")
        try Data("{\"step\": ".utf8).write(to: garbled.appendingPathComponent("trainer_state.json"))
        assertError(try TrainingCheckpoint.load(from: garbled), contains: ["garbled/step-00000003/trainer_state.json: not valid JSON"])

        let badMoment = try saved("bad-moment")
        var optimizer = SafeTensorsWriter()
        for name in Self.tiny.names {
            let shape = Self.tiny.tensors[name]!.shape
            let wrong = name == "blk.1.ffn_up.weight" ? [shape[1], shape[0]] : shape
            try optimizer.add("first_moment.\(name)", shape: wrong, values: Self.tiny.tensors[name]!.values)
            if name != "output.weight" { try optimizer.add("second_moment.\(name)", shape: shape, values: Self.tiny.tensors[name]!.values) }
        }
        try optimizer.write(to: badMoment.appendingPathComponent("optimizer.safetensors"))
        assertError(try TrainingCheckpoint.load(from: badMoment),
                    contains: ["optimizer.safetensors: optimizer state does not match the model: first moment of blk.1.ffn_up.weight has shape [64, 96], the parameter [96, 64]"])

        let shrunk = try saved("shrunk")
        let configURL = shrunk.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["vocab_size"] = 259
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        assertError(try TrainingCheckpoint.load(from: shrunk),
                    contains: ["shrunk/step-00000003/model.safetensors: tensor model.embed_tokens.weight has shape [260, 64], expected [259, 64] from config.json"])
    }

    func testConfigurationDifferencesListWhatChanged() {
        let now: JSONValue = ["seq_len": 128, "batch_size": 4, "lr": 3e-4, "loss": ["kind": "kl", "temperature": 1], "seed": 7]
        XCTAssertEqual(now.differences(from: configuration), [
            "loss.temperature: 2 in the checkpoint, 1 now",
            "seed: absent in the checkpoint, 7 now",
            "seq_len: 64 in the checkpoint, 128 now",
            "teacher: \"teacher.gguf\" in the checkpoint, absent now",
        ])
        XCTAssertEqual(configuration.differences(from: configuration), [])
    }
}
