import ArgumentParser
import Checkpoint
import Foundation
import GGUF

/// `kdgpu export`: a checkpoint's student as a GGUF (for llama.cpp) or Hugging Face safetensors.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a training checkpoint as GGUF (llama.cpp) or Hugging Face safetensors.")

    @Option(name: .long, help: ArgumentHelp("A run folder (its latest checkpoint) or a checkpoint folder.", valueName: "DIR"))
    var checkpoint: String

    @Option(name: .long, help: "gguf or safetensors.")
    var format: String

    @Option(name: .long, help: "GGUF matrix type: f32, f16 or q8_0.")
    var type = "f16"

    @Option(name: .long, help: ArgumentHelp("A GGUF whose tokenizer the exported GGUF carries (the teacher).", valueName: "file.gguf"))
    var tokenizerFrom = "cache/teacher/SmolLM2-135M-Instruct.Q4_1.gguf"

    @Option(name: .long, help: ArgumentHelp("The output file (gguf) or folder (safetensors).", valueName: "PATH"))
    var out: String

    func validate() throws {
        guard ["gguf", "safetensors"].contains(format) else { throw ValidationError("--format: use gguf or safetensors, got '\(format)'") }
        guard ["f32", "f16", "q8_0"].contains(type) else { throw ValidationError("--type: use f32, f16 or q8_0, got '\(type)'") }
    }

    func run() throws {
        do {
            let folder = URL(fileURLWithPath: checkpoint, isDirectory: true)
            let parameters = try TrainingCheckpoint.load(from: folder).parameters
            let destination = URL(fileURLWithPath: out)
            if format == "gguf" {
                let tokenizer = FileManager.default.fileExists(atPath: tokenizerFrom) ? try GGUFFile(path: tokenizerFrom) : nil
                if tokenizer == nil { note("kdgpu export: \(tokenizerFrom) not found; the GGUF will have no tokenizer (pass --tokenizer-from)") }
                try GGUFExport.write(parameters, to: destination, matrixType: type == "f32" ? .f32 : type == "q8_0" ? .q8_0 : .f16,
                                     tokenizerFrom: tokenizer, name: "kdgpu student")
            } else {
                try HuggingFaceCheckpoint.write(parameters, to: destination)
            }
            print("exported \(destination.path)")
        } catch {
            fail(error)
        }
    }
}
