import Foundation
import Tokenizer

/// Prompts for sampled sequences (`--prompts`): JSON Lines, one object a line, either
/// `{"prompt": "text"}` or `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`.
/// Empty lines are skipped. Tokenized with the teacher's tokenizer, as plain text or rendered with
/// its chat template (a `prompt` as one user message; the assistant's turn opened after the last message).
public struct PromptFile {
    public enum Prompt: Equatable {
        case text(String)
        case conversation([ChatMessage])
    }

    public let path: String
    /// The prompts and their 1-based line numbers.
    public let prompts: [(line: Int, prompt: Prompt)]

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TrainingDataError.badPromptFile(path: path, line: nil, reason: "cannot be read; give a readable JSON Lines file (--prompts)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TrainingDataError.badPromptFile(path: path, line: nil, reason: "is not UTF-8 text; convert it to UTF-8")
        }
        var prompts: [(Int, Prompt)] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.allSatisfy(\.isWhitespace) {
            prompts.append((index + 1, try Self.prompt(String(line), path: path, line: index + 1)))
        }
        guard !prompts.isEmpty else {
            throw TrainingDataError.badPromptFile(path: path, line: nil, reason: "holds no prompt; write one JSON object a line, {\"prompt\": \"...\"} or {\"messages\": [...]}")
        }
        self.prompts = prompts
    }

    static func prompt(_ text: String, path: String, line: Int) throws -> Prompt {
        func bad(_ reason: String) -> TrainingDataError { .badPromptFile(path: path, line: line, reason: reason) }
        let expected = "each line must be {\"prompt\": \"text\"} or {\"messages\": [{\"role\": \"user\", \"content\": \"text\"}, ...]}"
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw bad("not a JSON object; \(expected)")
        }
        if let prompt = object["prompt"] {
            guard let prompt = prompt as? String, !prompt.isEmpty else { throw bad("\"prompt\" must be a non-empty string") }
            return .text(prompt)
        }
        guard let messages = object["messages"] else { throw bad("neither \"prompt\" nor \"messages\"; \(expected)") }
        guard let list = messages as? [[String: Any]], !list.isEmpty else { throw bad("\"messages\" must be a non-empty list of {\"role\", \"content\"} objects") }
        return .conversation(try list.enumerated().map { i, message in
            guard let role = message["role"] as? String, let content = message["content"] as? String else {
                throw bad("message \(i + 1) needs string \"role\" and \"content\"")
            }
            return ChatMessage(role: role, content: content)
        })
    }

    /// Every prompt's token ids: plain text (a `prompt`; with the tokenizer's own BOS rule), or with
    /// `chatTemplate` the rendered conversation, its special tokens read as such. A prompt longer
    /// than `maxTokens` tokens, or a conversation without a template, is an error naming its line
    /// (and `templateOption`, the option that renders with the template).
    public func tokenized(with tokenizer: BPETokenizer, chatTemplate: ChatTemplate?, templateOption: String, maxTokens: Int,
                          limitReason: String) throws -> [[Int32]] {
        try prompts.map { line, prompt in
            func bad(_ reason: String) -> TrainingDataError { .badPromptFile(path: path, line: line, reason: reason) }
            func promptIDs(_ template: ChatTemplate, _ messages: [ChatMessage]) throws -> [Int32] {
                do { return try template.promptIDs(messages, tokenizer: tokenizer) } catch let error as ChatTemplateError { throw bad("\(error)") }
            }
            let ids: [Int32]
            switch (prompt, chatTemplate) {
            case (.text(let text), nil):
                ids = try tokenizer.encode(text, addBOS: tokenizer.addsBOSByDefault)
            case (.conversation, nil):
                throw bad("\"messages\" need the chat template to become text; pass \(templateOption) (or write {\"prompt\": \"...\"})")
            case (.text(let text), let template?):
                ids = try promptIDs(template, [ChatMessage(role: "user", content: text)])
            case (.conversation(let messages), let template?):
                ids = try promptIDs(template, messages)
            }
            guard !ids.isEmpty else { throw bad("the prompt has no tokens") }
            guard ids.count <= maxTokens else { throw bad("the prompt has \(ids.count) tokens, more than \(maxTokens) (\(limitReason)); shorten it") }
            return ids
        }
    }
}
