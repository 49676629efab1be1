import ArgumentParser
import CPUBackend
import Foundation
import GGUF
import Models
import Tensor
import Tokenizer

/// `--model` and `--device`, shared by the commands that run a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A llama-architecture GGUF file (F32, F16, Q8_0, Q4_0 or Q4_1 tensors).", valueName: "file.gguf"))
    var model: String

    @Option(name: .long, help: ArgumentHelp(
        "cpu, opencl (the first GPU, else the first OpenCL device), opencl:P:D, or a device-name substring.",
        valueName: "device"))
    var device: String = "opencl"

    @Option(name: .long, help: ArgumentHelp(
        "fp32, bf16 or f16: the weight GEMMs' inputs in that type (weights expanded straight to it, fp32 accumulation; bf16 is the fast one on CPUs with bf16 instructions, f16 the GPUs' type).",
        valueName: "precision"))
    var precision: String = "fp32"

    /// The tokenizer, the model on the chosen backend, and the backend's name.
    func load() throws -> (tokenizer: BPETokenizer, model: LlamaModel) {
        let computeType = try modelPrecision(precision, flag: "--precision")
        let file = try openModelFile(model)
        let tokenizer = try BPETokenizer(gguf: file)
        let backend = try openBackend(device, cpu: CPUBackend())
        let model = try LlamaModel(weights: LlamaWeights(gguf: file, backend: backend), precision: computeType)
        guard tokenizer.vocabularySize <= model.config.vocabulary else {
            throw ModelError.badInput("\(model): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(model.config.vocabulary) rows")
        }
        return (tokenizer, model)
    }
}

/// The compute type a precision name means (`fp32`, `bf16` or `f16`), or a one-line error naming the flag.
func modelPrecision(_ name: String, flag: String) throws -> DType {
    switch name.lowercased() {
    case "fp32", "f32": return .f32
    case "bf16": return .bf16
    case "f16", "fp16": return .f16
    default: throw ValidationError("\(flag) \(name): use fp32, bf16 or f16")
    }
}

/// Writes to standard error (progress and notes, so standard output stays the result).
func note(_ message: String) {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
}

/// Opens a GGUF file, with a one-line error when it is not there.
func openModelFile(_ path: String) throws -> GGUFFile {
    guard FileManager.default.fileExists(atPath: path) else {
        throw ModelError.badInput("\(path): no such file (the default teacher comes with `make teacher`)")
    }
    return try GGUFFile(path: path)
}
