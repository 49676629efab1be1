import Foundation
import Tokenizer
import XCTest

/// kdgpu's Jinja subset against transformers' renderer (Jinja2): Fixtures/chat_templates.json,
/// made by bench/reference/make_chat_template_fixture.py from SmolLM2's template (as its GGUF
/// carries it) and templates of the other families' forms, over varied conversations.
final class ChatTemplateTests: XCTestCase {
    struct Fixture: Decodable {
        struct Case: Decodable {
            let name: String
            let template: String
            let bos_token: String
            let eos_token: String
            let add_generation_prompt: Bool
            let messages: [[String: String]]
            let expected: String?
            let error: String?
        }
        let cases: [Case]
    }

    func testRendersAsTransformersDoes() throws {
        let data = try Data(contentsOf: SmolLM2TokenizerTests.fixtures.appendingPathComponent("chat_templates.json"))
        let fixture = try JSONDecoder().decode(Fixture.self, from: data)
        XCTAssertGreaterThanOrEqual(fixture.cases.count, 80)
        for c in fixture.cases {
            let template = try ChatTemplate(source: c.template)
            let messages = c.messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            do {
                let text = try template.render(messages: messages, addGenerationPrompt: c.add_generation_prompt, bosToken: c.bos_token, eosToken: c.eos_token)
                XCTAssertEqual(text, c.expected, c.name)
            } catch let error as ChatTemplateError {
                XCTAssertEqual(error, .refused(c.error ?? "(transformers rendered it)"), c.name)
            }
        }
    }

    func testUnsupportedJinjaIsNamedWhenRead() {
        for (source, named) in [("{% macro f() %}x{% endmacro %}", "'{% macro %}'"), ("{{ x | wordwrap }}", "the filter"),
                                ("{% for a, b in xs %}{% endfor %}", "a for loop"), ("{% if x %}open", "a block left open"),
                                ("{{ 'a' ", "a tag left open"), ("{{ 1.5 }}", "a decimal number")] {
            XCTAssertThrowsError(try ChatTemplate(source: source).render(messages: [], addGenerationPrompt: true, bosToken: "", eosToken: "")) { error in
                guard case ChatTemplateError.unsupported(let what) = error else { return XCTFail("\(source): \(error)") }
                XCTAssertTrue(what.contains(named), "\(source): \(what)")
            }
        }
    }
}
