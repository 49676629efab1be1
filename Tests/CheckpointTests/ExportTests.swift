import Checkpoint
import Foundation
import GGUF
import Models
import Tensor
import TestSupport
import Tokenizer
import XCTest

final class HuggingFaceExportTests: CheckpointTestCase {
    struct TransformersReference: Decodable {
        let transformers: String
        let max_abs_diff_vs_numpy_reference: Double
        let sequences: [[Int32]]
        let logits: [[[Float]]]
    }

    func testPermutationIsTheConvertersAndItsInverse() {
        // One head of 4 rows, 1 column: W.reshape(1, 2, 2, 1).swapaxes(1, 2) orders HF rows 0, 2, 1, 3.
        XCTAssertEqual(RoPEPermutation.huggingFaceToGGUF([0, 1, 2, 3], heads: 1, columns: 1), [0, 2, 1, 3])
        // Two heads of 6 rows, 2 columns: per head HF rows (0 1 2 | 3 4 5) -> 0 3 1 4 2 5.
        let hf = (0..<24).map(Float.init)
        let gguf = RoPEPermutation.huggingFaceToGGUF(hf, heads: 2, columns: 2)
        let rowOrder = [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]
        XCTAssertEqual(gguf, rowOrder.flatMap { [Float(2 * $0), Float(2 * $0 + 1)] })
        XCTAssertEqual(RoPEPermutation.ggufToHuggingFace(gguf, heads: 2, columns: 2), hf)
    }

    /// The folder transformers loads: HF names, no lm_head when tied, config.json with every key.
    func testExportFolderHasHuggingFaceNamesAndConfig() throws {
        let folder = try scratchFolder().appendingPathComponent("hf")
        let model = try randomTiedModel()
        let tokenizer = GGUFMetadata.tokenizer(of: try GGUFFile(contentsOf: Self.tinyF32))
        try HuggingFaceCheckpoint.write(model, to: folder, dtype: .bf16, tokenizer: tokenizer)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(),
                       ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"])
        XCTAssertEqual(try HuggingFaceCheckpoint.readTokenizer(from: folder).map { try BPETokenizer(gguf: $0).encode("the thin hen") },
                       try BPETokenizer(gguf: tokenizer).encode("the thin hen"))
        let file = try SafeTensorsFile(url: folder.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(Set(file.names), ["model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
                                         "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                         "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                                         "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_proj.weight",
                                         "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"])
        XCTAssertTrue(file.entries.allSatisfy { $0.dtype == .bf16 })
        XCTAssertEqual(try file.entry("model.layers.0.self_attn.k_proj.weight").shape, [16, 32])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("config.json"))) as? [String: Any])
        XCTAssertEqual(json["architectures"] as? [String], ["LlamaForCausalLM"])
        XCTAssertEqual(json["model_type"] as? String, "llama")
        XCTAssertEqual(json["hidden_act"] as? String, "silu")
        XCTAssertEqual(json["torch_dtype"] as? String, "bfloat16")
        let integers = ["hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "num_key_value_heads": 1, "vocab_size": 40, "max_position_embeddings": 16, "head_dim": 16,
                        "bos_token_id": 0, "eos_token_id": 10]  // the tiny tokenizer's
        for (key, value) in integers { XCTAssertEqual((json[key] as? NSNumber)?.intValue, value, key) }
        XCTAssertEqual(json["tie_word_embeddings"] as? Bool, true)
        XCTAssertEqual((json["rms_norm_eps"] as? NSNumber)?.doubleValue, 1e-5)
        XCTAssertEqual((json["rope_theta"] as? NSNumber)?.doubleValue, 10000)
        XCTAssertTrue(json["rope_scaling"] is NSNull)
        let text = String(decoding: try Data(contentsOf: folder.appendingPathComponent("config.json")), as: UTF8.self)
        XCTAssertTrue(text.contains("1e-05"), "epsilon written in its short form: \(text)")
    }

    /// Folders written one after another with different tokenizers each hold their own tokenizer's
    /// files (a run's checkpoints reuse the serialized files of the last tokenizer written).
    func testEachFolderHoldsItsOwnTokenizersFiles() throws {
        let model = try randomTiedModel()
        let scratch = try scratchFolder()
        let plain = GGUFMetadata.tokenizer(of: try GGUFFile(contentsOf: Self.tinyF32))
        let templated = GGUFMetadata(path: plain.path, entries: plain.metadataKeys.map { ($0, plain.metadata[$0]!) }
                                        + [("tokenizer.chat_template", .string("{{ messages[0]['content'] }}"))])
        for (index, tokenizer) in [plain, templated, plain, templated].enumerated() {
            let folder = scratch.appendingPathComponent("hf-\(index)")
            try HuggingFaceCheckpoint.write(model, to: folder, tokenizer: tokenizer)
            for file in try HuggingFaceTokenizer.files(for: tokenizer, modelMaxLength: model.config.contextLength) {
                XCTAssertEqual(Array(try Data(contentsOf: folder.appendingPathComponent(file.name))), file.contents, "folder \(index): \(file.name)")
            }
        }
        let config = { (index: Int) in try Data(contentsOf: scratch.appendingPathComponent("hf-\(index)/tokenizer_config.json")) }
        XCTAssertNotEqual(try config(0), try config(1), "the chat template is in the second tokenizer's config alone")
    }

    /// Export -> import gives back the GGUF-layout tensors exactly in F32, within rounding in F16/BF16.
    func testImportInvertsExport() throws {
        for model in [Self.tiny, try randomTiedModel()] {
            let folder = try scratchFolder()
            try HuggingFaceCheckpoint.write(model, to: folder, tokenizer: nil)
            XCTAssertEqual(try HuggingFaceCheckpoint.read(from: folder), model)
            for dtype in [SafeTensorsDType.f16, .bf16] {
                try HuggingFaceCheckpoint.write(model, to: folder, dtype: dtype, tokenizer: nil)
                let reloaded = try HuggingFaceCheckpoint.read(from: folder)
                XCTAssertEqual(reloaded.config, model.config)
                for (name, tensor) in model.tensors {
                    let relative = zip(reloaded.tensors[name]!.values, tensor.values).map { abs($0 - $1) / max(abs($1), 1e-3) }.max()!
                    XCTAssertLessThan(relative, dtype == .f16 ? 1e-3 : 8e-3, "\(name) in \(dtype)")
                }
            }
        }
    }

    /// The independent reference: transformers' LlamaForCausalLM ran the Swift export of the tiny
    /// model (bench/reference/check_hf_export.py). Re-importing the export and running LlamaModel
    /// must give its logits, and the numpy reference logits of the GGUF the model came from.
    /// With KDGPU_HF_EXPORT_DIR set, the export is also written there for the script.
    func testReimportedExportMatchesTransformersLogits() throws {
        let folder = try scratchFolder().appendingPathComponent("tiny-hf")
        try HuggingFaceCheckpoint.write(Self.tiny, to: folder, tokenizer: nil)
        if let path = ProcessInfo.processInfo.environment["KDGPU_HF_EXPORT_DIR"] {
            try HuggingFaceCheckpoint.write(Self.tiny, to: URL(fileURLWithPath: path), tokenizer: nil)
        }
        let reimported = try HuggingFaceCheckpoint.read(from: folder)
        let transformers = try JSONDecoder().decode(TransformersReference.self,
                                                    from: Data(contentsOf: Self.fixtures.appendingPathComponent("hf-export-logits.json")))
        XCTAssertEqual(transformers.sequences, Self.reference.sequences)
        XCTAssertLessThan(transformers.max_abs_diff_vs_numpy_reference, 1e-3, "the fixture itself agrees with the numpy reference")
        for (index, sequence) in transformers.sequences.enumerated() {
            let swift = try logits(reimported, sequence)
            let hf = transformers.logits[index].flatMap { $0 }
            let numpy = Self.reference.models["f32"]!.logits[index].flatMap { $0 }
            XCTAssertLessThan(maxAbsDifference(swift, hf), 2e-4, "\(sequence.count) tokens vs transformers \(transformers.transformers)")
            XCTAssertLessThan(maxAbsDifference(swift, numpy), 2e-4, "\(sequence.count) tokens vs the numpy reference")
        }
    }

    /// The exported HF-layout weights, run as they are with rotate-half RoPE (`.halves`), give the
    /// GGUF model's logits: the un-permutation is exactly the change of RoPE convention.
    func testExportedLayoutRunsWithRotateHalfRoPE() throws {
        let folder = try scratchFolder()
        try HuggingFaceCheckpoint.write(Self.tiny, to: folder, tokenizer: nil)
        let file = try SafeTensorsFile(url: folder.appendingPathComponent("model.safetensors"))
        var hfLayout = Self.tiny
        for name in Self.tiny.names {
            let hfName = try XCTUnwrap(HuggingFaceCheckpoint.huggingFaceName(of: name, config: Self.tiny.config)).name
            hfLayout.tensors[name] = ParameterTensor(shape: Self.tiny.tensors[name]!.shape, values: try file.floats(hfName))
        }
        XCTAssertNotEqual(hfLayout.tensors["blk.0.attn_q.weight"], Self.tiny.tensors["blk.0.attn_q.weight"])
        let sequence = Self.reference.sequences[2]
        let adjacent = try logits(Self.tiny, sequence, layout: .adjacent)
        XCTAssertLessThan(maxAbsDifference(try logits(hfLayout, sequence, layout: .halves), adjacent), 1e-4)
        XCTAssertGreaterThan(maxAbsDifference(try logits(hfLayout, sequence, layout: .adjacent), adjacent), 1e-2,
                             "the wrong layout gives other logits (the RoPE trap)")
    }

    func testImportErrorsNameTheFileAndTheProblem() throws {
        let root = try scratchFolder()
        let model = try randomTiedModel()
        func fresh(_ name: String) throws -> URL {
            let folder = root.appendingPathComponent(name)
            try HuggingFaceCheckpoint.write(model, to: folder, tokenizer: nil)
            return folder
        }
        func editConfig(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let url = folder.appendingPathComponent("config.json")
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: url)
        }

        let noConfig = try fresh("no-config")
        try FileManager.default.removeItem(at: noConfig.appendingPathComponent("config.json"))
        assertError(try HuggingFaceCheckpoint.read(from: noConfig), contains: ["no-config/config.json is missing", "needs config.json"])

        let sharded = try fresh("sharded")
        try FileManager.default.moveItem(at: sharded.appendingPathComponent("model.safetensors"),
                                         to: sharded.appendingPathComponent("model.safetensors.index.json"))
        assertError(try HuggingFaceCheckpoint.read(from: sharded), contains: ["sharded/model.safetensors is missing", "sharded checkpoints"])

        let gpt = try fresh("gpt")
        try editConfig(gpt) { $0["model_type"] = "gpt2" }
        assertError(try HuggingFaceCheckpoint.read(from: gpt), contains: ["gpt/config.json: model_type is 'gpt2'"])

        let scaled = try fresh("scaled")
        try editConfig(scaled) { $0["rope_scaling"] = ["type": "linear", "factor": 2] }
        assertError(try HuggingFaceCheckpoint.read(from: scaled), contains: ["rope_scaling is set"])

        let noWidth = try fresh("no-width")
        try editConfig(noWidth) { $0["hidden_size"] = nil }
        assertError(try HuggingFaceCheckpoint.read(from: noWidth), contains: ["no-width/config.json: required key \"hidden_size\" is missing"])

        let badHeads = try fresh("bad-heads")
        try editConfig(badHeads) { $0["num_key_value_heads"] = 3; $0["head_dim"] = nil }
        assertError(try HuggingFaceCheckpoint.read(from: badHeads), contains: ["bad-heads/config.json", "2 heads are not a multiple of 3 key/value heads"])

        let untied = try fresh("untied")
        try editConfig(untied) { $0["tie_word_embeddings"] = false }
        assertError(try HuggingFaceCheckpoint.read(from: untied), contains: ["untied/model.safetensors: missing tensor lm_head.weight"])

        let deeper = try fresh("deeper")
        try editConfig(deeper) { $0["intermediate_size"] = 65 }
        assertError(try HuggingFaceCheckpoint.read(from: deeper),
                    contains: ["deeper/model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape [64, 32], expected [65, 32] from config.json"])

        let extra = root.appendingPathComponent("extra")
        try HuggingFaceCheckpoint.write(Self.tiny, to: extra, tokenizer: nil)
        try editConfig(extra) { $0["tie_word_embeddings"] = true }
        XCTAssertNoThrow(try HuggingFaceCheckpoint.read(from: extra), "a saved lm_head is ignored when tied")
        try editConfig(extra) { $0["num_hidden_layers"] = 1 }
        assertError(try HuggingFaceCheckpoint.read(from: extra), contains: ["extra/model.safetensors: unexpected tensors model.layers.1."])
    }

    func testPartialRotaryCannotBeExported() throws {
        var model = try randomTiedModel()
        model.config.ropeDimensions = 8
        assertError(try HuggingFaceCheckpoint.write(model, to: try scratchFolder(), tokenizer: nil),
                    contains: ["RoPE rotates 8 of 16 head dimensions", "rotate whole heads"])
    }
}

final class GGUFExportTests: CheckpointTestCase {
    /// Export -> GGUFFile -> LlamaModel: F32 reproduces the source model's logits exactly, F16 and Q8_0 within their rounding.
    func testExportedGGUFRunsLikeTheSource() throws {
        let source = try GGUFFile(contentsOf: Self.tinyF32)
        let sequence = Self.reference.sequences[2]
        let expected = try XCTUnwrap(LlamaModel(weights: LlamaWeights(gguf: source, backend: TestBackends.cpu)).forward([sequence]).logits).toArray()
        let folder = try scratchFolder()
        for (type, tolerance) in [(GGMLType.f32, Float(0)), (.f16, 2e-2), (.q8_0, 1e-1)] {
            let url = folder.appendingPathComponent("student-\(type).gguf")
            try GGUFExport.write(Self.tiny, to: url, matrixType: type, tokenizer: .tokenizer(of: source), name: "tiny student")
            let file = try GGUFFile(contentsOf: url)
            let got = try XCTUnwrap(LlamaModel(weights: LlamaWeights(gguf: file, backend: TestBackends.cpu)).forward([sequence]).logits).toArray()
            let difference = maxAbsDifference(got, expected)
            XCTAssertLessThanOrEqual(difference, tolerance, "\(type)")
            if type != .f32 { XCTAssertGreaterThan(difference, 0, "\(type) rounds") }
            XCTAssertEqual(try file.tensor(named: "blk.1.attn_norm.weight").type, .f32, "norms stay F32")
            XCTAssertEqual(try file.tensor(named: "blk.1.ffn_down.weight").type, type)
            XCTAssertEqual(try file.tensor(named: "output.weight").type, type)
            XCTAssertEqual(try file.string("general.name"), "tiny student")
            XCTAssertEqual(try LlamaConfig(gguf: file), Self.tiny.config)
        }
    }

    func testTokenizerMetadataIsCopiedFromTheTeacher() throws {
        let teacher = try GGUFFile(contentsOf: Self.tinyF32)
        let url = try scratchFolder().appendingPathComponent("student.gguf")
        try GGUFExport.write(try randomTiedModel(), to: url, matrixType: .q8_0, tokenizer: .tokenizer(of: teacher))
        let student = try GGUFFile(contentsOf: url)
        let tokenizerKeys = teacher.metadataKeys.filter { $0.hasPrefix("tokenizer.") }
        XCTAssertGreaterThan(tokenizerKeys.count, 5)
        XCTAssertEqual(student.metadataKeys.filter { $0.hasPrefix("tokenizer.") }, tokenizerKeys)
        for key in tokenizerKeys { XCTAssertEqual(student.metadata[key], teacher.metadata[key], key) }
        XCTAssertEqual(try BPETokenizer(gguf: student).encode("the thin hen"), try BPETokenizer(gguf: teacher).encode("the thin hen"))
        XCTAssertFalse(student.hasTensor(named: "output.weight"), "tied embeddings have no LM head tensor")
        XCTAssertEqual(try student.int("general.file_type"), 7)
        XCTAssertEqual(try LlamaParameters(gguf: student).config, try randomTiedModel().config)
    }

    func testBlockTypesNeedWholeBlocks() throws {
        var model = try randomTiedModel()
        model.config.feedForward = 48
        for name in ["blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"] { model.tensors[name] = .zeros(shape: [48, 32]) }
        model.tensors["blk.0.ffn_down.weight"] = .zeros(shape: [32, 48])
        let url = try scratchFolder().appendingPathComponent("odd.gguf")
        assertError(try GGUFExport.write(model, to: url, matrixType: .q8_0, tokenizer: nil),
                    contains: ["odd.gguf: tensor blk.0.ffn_down.weight has rows of 48 values, not a multiple of Q8_0's block of 32", "export as f32 or f16"])
        XCTAssertNoThrow(try GGUFExport.write(model, to: url, matrixType: .f16, tokenizer: nil))
    }
}
