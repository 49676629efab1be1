import ArgumentParser
import Foundation
import Tokenizer

/// `kdgpu tokenize`: token ids of a text under a model's tokenizer.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of TEXT under the model's byte-level BPE tokenizer.")

    @Option(name: .long, help: ArgumentHelp("A GGUF file with tokenizer metadata.", valueName: "file.gguf"))
    var model: String

    @Flag(name: .long, help: "Print a JSON array of integers.")
    var json = false

    @Flag(name: .long, help: "Parse special tokens such as <|im_start|> written in the text.")
    var special = false

    @Flag(name: .long, help: "Prepend the BOS token.")
    var addBos = false

    @Argument(help: "The text to tokenize.")
    var text: String

    func run() throws {
        do {
            let tokenizer = try BPETokenizer(gguf: openModelFile(model))
            let ids = try tokenizer.encode(text, addBOS: addBos, parseSpecial: special)
            print(json ? "[" + ids.map(String.init).joined(separator: ",") + "]" : ids.map(String.init).joined(separator: " "))
        } catch {
            fail(error)
        }
    }
}
