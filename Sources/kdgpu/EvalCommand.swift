import ArgumentParser
import Foundation
import Models
import Tokenizer

/// `kdgpu eval`: mean negative log-likelihood and perplexity of a text file.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Mean negative log-likelihood per predicted token (natural log) and perplexity of a text file.",
        discussion: "The text is tokenized and cut into consecutive windows of --seq-len tokens; each window is evaluated on its own, so its first token is context, not predicted.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("A UTF-8 text file.", valueName: "file"))
    var data: String

    @Option(name: .long, parsing: .unconditional, help: "Tokens per window.")
    var seqLen = 256

    @Option(name: .long, parsing: .unconditional, help: "Windows per forward pass.")
    var batchSize = 8

    @Flag(name: .long, help: "Print one JSON object: mean_nll, perplexity, tokens, tokens_per_s, windows, device.")
    var json = false

    func validate() throws {
        guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2, got \(seqLen)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
    }

    func run() throws {
        do {
            guard let bytes = FileManager.default.contents(atPath: data) else {
                throw ModelError.badInput("\(data): cannot read the file; give a UTF-8 text file with --data")
            }
            let (tokenizer, model) = try modelOptions.load()
            guard seqLen <= model.config.contextLength else {
                throw ModelError.badInput("--seq-len \(seqLen) exceeds the model's context length \(model.config.contextLength)")
            }
            let tokens: [Int32]
            do {
                tokens = try tokenizer.encode(utf8: [UInt8](bytes))
            } catch {
                throw ModelError.badInput("\(data): \(error)")
            }
            let windows = tokenWindows(tokens, length: seqLen)
            guard !windows.isEmpty else {
                throw ModelError.badInput("\(data): \(tokens.count) token(s) is too little text to evaluate (need at least 2)")
            }
            let start = DispatchTime.now().uptimeNanoseconds
            var result = LikelihoodResult()
            // Full windows go in batches; a shorter last window goes alone.
            let full = windows.filter { $0.count == seqLen }, rest = windows.filter { $0.count < seqLen }
            var batches = stride(from: 0, to: full.count, by: batchSize).map { Array(full[$0..<min(full.count, $0 + batchSize)]) }
            batches += rest.map { [$0] }
            for (index, batch) in batches.enumerated() {
                result = result + (try model.likelihood(of: batch))
                if !json, batches.count > 1 { note("eval: batch \(index + 1)/\(batches.count), mean NLL so far \(String(format: "%.4f", result.meanNLL))") }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let tokensPerSecond = Double(windows.reduce(0) { $0 + $1.count }) / seconds
            if json {
                let object: [String: Any] = ["mean_nll": result.meanNLL, "perplexity": result.perplexity, "tokens": result.tokens,
                                             "tokens_per_s": tokensPerSecond, "windows": windows.count, "seq_len": seqLen,
                                             "device": model.backend.name]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "mean NLL %.5f nats/token, perplexity %.3f, %d tokens predicted in %d windows of up to %d, %.0f tokens/s on %@",
                             result.meanNLL, result.perplexity, result.tokens, windows.count, seqLen, tokensPerSecond, model.backend.name))
            }
        } catch {
            fail(error)
        }
    }
}
