import Foundation
import GGUF
import Models
import Tensor
import TestSupport
import XCTest

/// Tests on the real default teacher (SmolLM2-135M-Instruct, Q4_1). They run when `make teacher`
/// has fetched it (or KDGPU_TEACHER_GGUF names a copy) and skip, saying so, otherwise.
final class TeacherTests: XCTestCase {
    static var teacherPath: String? {
        if let path = ProcessInfo.processInfo.environment["KDGPU_TEACHER_GGUF"], FileManager.default.fileExists(atPath: path) {
            return path
        }
        // The package root, from this file's location: Tests/ModelTests/TeacherTests.swift.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf").path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    private func teacher() throws -> GGUFFile {
        guard let path = Self.teacherPath else {
            throw XCTSkip("the default teacher is not fetched (run `make teacher`, or set KDGPU_TEACHER_GGUF)")
        }
        return try GGUFFile(path: path)
    }

    /// "The capital of France is" -> " Paris" (llama.cpp's ids: [504, 3575, 282, 4649, 314] -> 7042).
    func testGreedyNextTokenIsParisOnBothBackends() throws {
        let file = try teacher()
        let prompt: [Int32] = [504, 3575, 282, 4649, 314]
        var lastRows: [[Float]] = []
        for backend in try TestBackends.all() {
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
            let logits = try XCTUnwrap(model.forward([prompt]).logits)
            let last = Array(try logits.toArray().suffix(model.config.vocabulary))
            let best = last.indices.max { last[$0] < last[$1] }!
            XCTAssertEqual(best, 7042, "greedy token on \(backend.name)")
            lastRows.append(last)
        }
        let comparison = Comparison(lastRows[1], reference: lastRows[0].map(Double.init))
        XCTAssertTrue(comparison.passes(tolerance: 1e-4), "OpenCL vs CPU logits: \(comparison)")
    }
}

/// The teacher's NLL on a few texts (ids from llama.cpp's tokenizer) against the numpy reference
/// and llama.cpp, both in Fixtures/teacher-reference.json (bench/reference/llama_reference.py teacher).
final class TeacherLikelihoodTests: XCTestCase {
    struct Reference: Decodable {
        struct Text: Decodable {
            let ids: [Int32]
            let reference_mean_nll: Double
            let llama_cpp_mean_nll: Double
        }
        let texts: [Text]
    }

    /// The teacher file, the reference texts, their predicted-token count and the fp64 reference's mean NLL over them.
    func referenceSetUp() throws -> (file: GGUFFile, reference: Reference, tokens: Int, referenceMean: Double) {
        guard let path = TeacherTests.teacherPath else {
            throw XCTSkip("the default teacher is not fetched (run `make teacher`, or set KDGPU_TEACHER_GGUF)")
        }
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/teacher-reference.json")
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
        let tokens = reference.texts.reduce(0) { $0 + $1.ids.count - 1 }
        let referenceMean = reference.texts.reduce(0) { $0 + $1.reference_mean_nll * Double($1.ids.count - 1) } / Double(tokens)
        return (try GGUFFile(path: path), reference, tokens, referenceMean)
    }

    func testMeanNLLAgreesWithTheReferenceAndLlamaCppOnBothBackends() throws {
        let (file, reference, tokens, referenceMean) = try referenceSetUp()
        let llamaCppMean = reference.texts.reduce(0) { $0 + $1.llama_cpp_mean_nll * Double($1.ids.count - 1) } / Double(tokens)
        var means: [Double] = []
        for backend in try TestBackends.all() {
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend))
            let total = try reference.texts.reduce(LikelihoodResult()) { $0 + (try model.likelihood(of: [$1.ids])) }
            XCTAssertEqual(total.tokens, tokens)
            XCTAssertEqual(total.meanNLL, referenceMean, accuracy: 1e-3 * referenceMean, "fp64 reference, \(backend.name)")
            XCTAssertEqual(total.meanNLL, llamaCppMean, accuracy: 1e-2 * llamaCppMean, "llama.cpp, \(backend.name)")
            for text in reference.texts {
                let single = try model.likelihood(of: [text.ids]).meanNLL
                XCTAssertEqual(single, text.reference_mean_nll, accuracy: 1e-3 * text.reference_mean_nll, "text of \(text.ids.count) tokens on \(backend.name)")
            }
            means.append(total.meanNLL)
        }
        XCTAssertEqual(means[1], means[0], accuracy: 1e-4 * means[0], "OpenCL vs CPU")
    }

    /// The teacher in bf16 (weights expanded from Q4_1 straight to bf16, activations narrowed per
    /// GEMM, fp32 accumulation): its mean NLL within 1% of the fp64 numpy reference, on both backends.
    func testBF16TeacherNLLIsWithinOnePercentOfTheReference() throws {
        let (file, reference, _, referenceMean) = try referenceSetUp()
        for backend in try TestBackends.all() {
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: .bf16)
            let total = try reference.texts.reduce(LikelihoodResult()) { $0 + (try model.likelihood(of: [$1.ids])) }
            XCTAssertEqual(total.meanNLL, referenceMean, accuracy: 1e-2 * referenceMean, "bf16 vs the fp64 reference on \(backend.name)")
            print("bf16 teacher on \(backend.name): mean NLL \(total.meanNLL), fp64 reference \(referenceMean) (\(String(format: "%+.3f", 100 * (total.meanNLL - referenceMean) / referenceMean))%)")
        }
    }

    /// The teacher in f16 (weights expanded straight to f16, activations narrowed per GEMM, fp32
    /// accumulation): its mean NLL within 0.5% of the fp64 numpy reference, on both backends, with
    /// no activation past f16's range.
    func testF16TeacherNLLIsWithinHalfAPercentOfTheReference() throws {
        let (file, reference, _, referenceMean) = try referenceSetUp()
        for backend in try TestBackends.all() {
            let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: .f16)
            let total = try reference.texts.reduce(LikelihoodResult()) { $0 + (try model.likelihood(of: [$1.ids])) }
            XCTAssertEqual(total.meanNLL, referenceMean, accuracy: 5e-3 * referenceMean, "f16 vs the fp64 reference on \(backend.name)")
            XCTAssertNil(try model.firstF16Overflow([reference.texts[0].ids]))
            print("f16 teacher on \(backend.name): mean NLL \(total.meanNLL), fp64 reference \(referenceMean) (\(String(format: "%+.3f", 100 * (total.meanNLL - referenceMean) / referenceMean))%)")
        }
    }
}
