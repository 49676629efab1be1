import ArgumentParser
import Checkpoint
import Foundation
import GGUF
import Models
import Tokenizer

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

    @Option(name: .long, help: ArgumentHelp("A GGUF whose tokenizer the export carries instead of the checkpoint's own (needed only for checkpoints of kdgpu versions that did not keep one).", valueName: "file.gguf"))
    var tokenizerFrom: String?

    @Option(name: .long, help: ArgumentHelp("The output file (gguf) or folder (safetensors).", valueName: "PATH"))
    var out: String

    func validate() throws {
        guard ["gguf", "safetensors"].contains(format) else { throw ValidationError("--format: use gguf or safetensors, got '\(format)'") }
        guard ["f32", "f16", "q8_0"].contains(type) else { throw ValidationError("--type: use f32, f16 or q8_0, got '\(type)'") }
    }

    func run() throws {
        do {
            let checkpoint = try TrainingCheckpoint.load(from: URL(fileURLWithPath: self.checkpoint, isDirectory: true))
            let tokenizer = try tokenizerFrom.map { GGUFMetadata.tokenizer(of: try openModelFile($0)) } ?? checkpoint.tokenizer
            guard let tokenizer else {
                throw ModelError.badInput("\(self.checkpoint): the checkpoint has no tokenizer (written by an older kdgpu); "
                                          + "pass --tokenizer-from TEACHER.gguf, the teacher it was trained from")
            }
            _ = try BPETokenizer(gguf: tokenizer)  // a --tokenizer-from file without one is refused here, naming it
            let destination = URL(fileURLWithPath: out)
            if format == "gguf" {
                try GGUFExport.write(checkpoint.parameters, to: destination, matrixType: type == "f32" ? .f32 : type == "q8_0" ? .q8_0 : .f16,
                                     tokenizer: tokenizer, name: "kdgpu student")
            } else {
                try HuggingFaceCheckpoint.write(checkpoint.parameters, to: destination, tokenizer: tokenizer)
            }
            print("exported \(destination.path)")
        } catch {
            fail(error)
        }
    }
}
