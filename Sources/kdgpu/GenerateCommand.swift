import ArgumentParser
import Foundation
import Models
import Tokenizer
import TrainingData

/// `kdgpu generate`: streams a continuation of a prompt, or continues a batch of them (`--batch`
/// draws of one prompt, or every prompt of a `--prompts` file at once).
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with the model, streaming the text as it comes (temperature 0 is greedy).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "The text to continue.")
    var prompt: String?

    @Option(name: .long, help: ArgumentHelp("Continue every prompt of this JSON Lines file in one batch instead, one {\"prompt\": \"text\"} or {\"messages\": [...]} a line (messages need --chat).", valueName: "file.jsonl"))
    var prompts: String?

    @Option(name: .long, parsing: .unconditional, help: "Tokens to generate at most (generation also stops at the end-of-sequence token).")
    var maxTokens = 64

    @Option(name: .long, parsing: .unconditional, help: "Sampling temperature; 0 picks the most likely token every time.")
    var temperature: Float = 0.8

    @Option(name: .long, parsing: .unconditional, help: "Nucleus sampling: draw from the smallest set of tokens whose probability reaches P.")
    var topP: Float = 0.95

    @Option(name: .long, parsing: .unconditional, help: "Draw only from the K most likely tokens (before top-p); 0 keeps them all.")
    var topK = 0

    @Option(name: .long, parsing: .unconditional, help: "Continuations of the prompt drawn together (one batch on the device); more than 1 prints each when done.")
    var batch = 1

    @Option(name: .long, parsing: .unconditional, help: "Seed of the sampler.")
    var seed: UInt64 = 0

    @Flag(name: .long, help: "Parse special tokens such as <|im_start|> written in the prompt.")
    var special = false

    @Flag(name: .long, help: "Read --prompt (or each of --prompts) as a user's message: render it with the model's chat template (tokenizer.chat_template) and open the assistant's turn.")
    var chat = false

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 or more, got \(temperature)") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        guard topK >= 0 else { throw ValidationError("--top-k must be 0 (all) or more, got \(topK)") }
        guard (1...256).contains(batch) else { throw ValidationError("--batch must be 1 to 256, got \(batch)") }
        guard (prompt == nil) != (prompts == nil) else { throw ValidationError("give the text to continue: --prompt TEXT or --prompts FILE.jsonl (one of them)") }
        guard prompts == nil || batch == 1 else { throw ValidationError("--batch draws several continuations of one --prompt; --prompts continues each of its prompts once") }
    }

    func run() throws {
        do {
            let (tokenizer, stored) = try modelOptions.load()
            // Its matrices expanded once where that fits: a decode step's few rows cost less than
            // expanding quantized blocks afresh (LlamaModel.expanded()).
            let model = try stored.expandedWhereItFits()
            let template: ChatTemplate?
            do { template = chat ? try ChatTemplate(gguf: openModelFile(modelOptions.model)) : nil } catch let error as ChatTemplateError {
                throw ValidationError("--chat: \(error); write the prompt as plain text and drop --chat")
            }
            let promptIds: [[Int32]]
            if let prompts {
                do {
                    let file = try PromptFile(path: prompts)
                    guard file.prompts.count <= 256 else {
                        throw ValidationError("--prompts \(prompts): \(file.prompts.count) prompts; one batch takes at most 256, split the file")
                    }
                    promptIds = try file.tokenized(with: tokenizer, chatTemplate: template, templateOption: "--chat", maxTokens: model.config.contextLength - 1,
                                                   limitReason: "the model's context of \(model.config.contextLength) less one token to draw")
                } catch let error as TrainingDataError {
                    throw ValidationError("--prompts: \(error)")
                }
            } else if let template {
                promptIds = Array(repeating: try template.promptIDs([ChatMessage(role: "user", content: prompt!)], tokenizer: tokenizer), count: batch)
            } else {
                promptIds = Array(repeating: try tokenizer.encode(prompt!, addBOS: tokenizer.addsBOSByDefault, parseSpecial: special), count: batch)
            }
            let longest = promptIds.map(\.count).max() ?? 0
            guard longest > 0 else { throw ModelError.badInput("--prompt is empty after tokenization; give some text") }
            let capacity = min(model.config.contextLength, longest + maxTokens)
            guard longest < capacity else {
                throw ModelError.badInput("the prompt's \(longest) tokens fill the model's context of \(model.config.contextLength)")
            }
            let batch = promptIds.count
            var generation = try Generation(model: model, prompts: promptIds, capacity: capacity, seed: seed)
            var finished = [Bool](repeating: false, count: batch)
            var continuations = [[Int32]](repeating: [], count: batch)
            var pending: [UInt8] = []  // bytes of a UTF-8 character split across tokens (streaming, batch 1)
            let start = DispatchTime.now().uptimeNanoseconds
            var generated = 0
            while generation.canContinue, generated < maxTokens, finished.contains(false) {
                let tokens = try generation.step(temperature: temperature, topK: topK, topP: topP)
                generated += 1
                for (s, token) in tokens.enumerated() where !finished[s] {
                    if token == tokenizer.eosTokenID { finished[s] = true; continue }
                    continuations[s].append(token)
                }
                guard batch == 1, !finished[0] else { continue }
                pending += try tokenizer.decodeBytes([tokens[0]], includeSpecialTokens: special)
                let complete = completeUTF8Prefix(pending)
                if complete > 0 {
                    FileHandle.standardOutput.write(Data(pending[..<complete]))
                    pending.removeFirst(complete)
                }
            }
            if batch == 1 {
                if !pending.isEmpty { FileHandle.standardOutput.write(String(decoding: pending, as: UTF8.self).data(using: .utf8)!) }
                print()
            } else {
                for (s, tokens) in continuations.enumerated() {
                    print("--- \(s + 1) of \(batch)" + (prompts != nil ? ": " + String(decoding: try tokenizer.decodeBytes(promptIds[s], includeSpecialTokens: special), as: UTF8.self)
                                                                                .replacingOccurrences(of: "\n", with: " ") : ""))
                    print(String(decoding: try tokenizer.decodeBytes(tokens, includeSpecialTokens: special), as: UTF8.self))
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let tokens = continuations.reduce(0) { $0 + $1.count }
            note(String(format: "kdgpu generate: %d tokens in %.2f s (%.1f tokens/s, %d sequence%@) on %@", tokens, seconds,
                        Double(tokens) / seconds, batch, batch == 1 ? "" : "s", model.backend.name))
        } catch {
            fail(error)
        }
    }
}

/// Length of the longest prefix of `bytes` that ends on a UTF-8 character boundary.
func completeUTF8Prefix(_ bytes: [UInt8]) -> Int {
    var end = bytes.count
    // Step back over at most 3 continuation bytes to the lead byte of the last character.
    var lead = end - 1
    while lead >= 0, lead >= end - 4, bytes[lead] & 0xC0 == 0x80 { lead -= 1 }
    guard lead >= 0 else { return end }
    let byte = bytes[lead]
    let length = byte < 0x80 ? 1 : byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
    if lead + length > end { end = lead }
    return end
}
