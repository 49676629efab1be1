import Foundation
import GGUF

/// A model's chat template (`tokenizer.chat_template`, a Jinja template) rendered the way
/// `transformers`' `apply_chat_template` renders it: Jinja with `trim_blocks` and `lstrip_blocks`,
/// the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and
/// `raise_exception(message)`.
///
/// This is the subset of Jinja that chat templates use: text, `{{ }}`, `{% if/elif/else %}`,
/// `{% for x in xs %}` (with `loop.index0/index/first/last/length`), `{% set %}`, comments,
/// whitespace control (`{%-`, `-%}`), and expressions with literals, `+ - * / % ~`, comparisons,
/// `and/or/not`, `in`, `x if c else y`, attributes, subscripts and slices, the filters `trim`,
/// `length`, `upper`, `lower`, `string`, `tojson`, `first`, `last`, `default`, the tests `defined`,
/// `undefined`, `none`, `string`, `number`, `mapping`, `sequence`, and the string methods `strip`,
/// `lstrip`, `rstrip`, `upper`, `lower`, `startswith`, `endswith`, and dictionary `get`. Anything
/// else is a ``ChatTemplateError/unsupported(_:)`` naming it, raised when the template is read.
///
/// ```swift
/// let template = try ChatTemplate(source: gguf.string("tokenizer.chat_template"))
/// let text = try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true,
///                                bosToken: "<|im_start|>", eosToken: "<|im_end|>")
/// ```
public struct ChatTemplate {
    private let body: [Node]

    public init(source: String) throws {
        var parser = Parser(tokens: try Lexer.tokens(of: source))
        body = try parser.template()
    }

    /// The template a GGUF carries (`tokenizer.chat_template`); a missing or unreadable one is an error naming the file.
    public init(gguf file: some GGUFMetadataSource) throws {
        guard file.contains("tokenizer.chat_template") else { throw ChatTemplateError.missing(file.path) }
        do { try self.init(source: try file.string("tokenizer.chat_template")) } catch let error as ChatTemplateError {
            throw ChatTemplateError.unreadable(path: file.path, error)
        }
    }

    /// `messages` rendered, the assistant's turn opened, and tokenized with its special tokens read as
    /// such (the template writes any BOS itself, as `apply_chat_template` tokenizes).
    public func promptIDs(_ messages: [ChatMessage], tokenizer: BPETokenizer) throws -> [TokenID] {
        let token = { (id: TokenID?) in id.map { tokenizer.tokens[Int($0)] } ?? "" }
        let text = try render(messages: messages, addGenerationPrompt: true, bosToken: token(tokenizer.bosTokenID), eosToken: token(tokenizer.eosTokenID))
        return try tokenizer.encode(text, addBOS: false, parseSpecial: true)
    }

    /// The conversation as the model reads it; with `addGenerationPrompt`, followed by what opens the assistant's turn.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String) throws -> String {
        var scope = Scope(variables: [
            "messages": .list(messages.map { .dict(["role": .string($0.role), "content": .string($0.content)]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken), "eos_token": .string(eosToken),
        ])
        var output = ""
        try Self.run(body, &scope, &output)
        return output
    }

    private static func run(_ nodes: [Node], _ scope: inout Scope, _ output: inout String) throws {
        for node in nodes {
            switch node {
            case .text(let text):
                output += text
            case .output(let expression):
                output += try expression.evaluate(scope).rendered()
            case .set(let name, let expression):
                scope.assign(name, try expression.evaluate(scope))
            case .branches(let branches, let otherwise):
                if let taken = try branches.first(where: { try $0.condition.evaluate(scope).isTrue }) {
                    try run(taken.body, &scope, &output)
                } else {
                    try run(otherwise, &scope, &output)
                }
            case .loop(let name, let sequence, let body):
                let items = try sequence.evaluate(scope).iterated()
                for (i, item) in items.enumerated() {
                    // A loop body's `set`s stay in the body, as in Jinja.
                    var inner = Scope(variables: [:], parent: scope)
                    inner.assign(name, item)
                    inner.assign("loop", .dict(["index0": .int(i), "index": .int(i + 1), "first": .bool(i == 0),
                                                "last": .bool(i == items.count - 1), "length": .int(items.count),
                                                "revindex": .int(items.count - i), "revindex0": .int(items.count - i - 1)]))
                    try run(body, &inner, &output)
                }
            }
        }
    }
}

/// One turn of a conversation.
public struct ChatMessage: Equatable, Sendable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

public indirect enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    /// Jinja the renderer does not implement (named), or a template that is not valid Jinja.
    case unsupported(String)
    /// The template's own `raise_exception(message)`, or a type error while rendering.
    case refused(String)
    /// A model file without `tokenizer.chat_template`.
    case missing(String)
    /// A model file whose template cannot be read.
    case unreadable(path: String, ChatTemplateError)

    public var description: String {
        switch self {
        case .missing(let path): return "\(path) has no chat template (tokenizer.chat_template)"
        case .unreadable(let path, let error): return "\(path): \(error)"
        case .unsupported(let what): return "the chat template uses \(what), which kdgpu's Jinja subset does not render"
        case .refused(let why): return "the chat template refuses these messages: \(why)"
        }
    }
}

// MARK: - Values

/// A Jinja value.
indirect enum TemplateValue: Equatable {
    case undefined, none
    case bool(Bool), int(Int), string(String)
    case list([TemplateValue])
    case dict([String: TemplateValue])

    var isTrue: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .dict(let d): return !d.isEmpty
        }
    }

    /// As `{{ }}` prints it (Python's str(); undefined prints nothing).
    func rendered() throws -> String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .string(let s): return s
        case .list, .dict: throw ChatTemplateError.unsupported("printing a list or mapping (use tojson)")
        }
    }

    func iterated() throws -> [TemplateValue] {
        switch self {
        case .list(let l): return l
        case .string(let s): return s.map { .string(String($0)) }
        case .dict(let d): return d.keys.sorted().map { .string($0) }
        case .undefined: return []
        default: throw ChatTemplateError.refused("cannot loop over \(self)")
        }
    }

    /// JSON text, keys sorted (as `tojson` does).
    func json() throws -> String {
        switch self {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .string(let s):
            let data = try JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
            return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
        case .list(let l): return "[" + (try l.map { try $0.json() }).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + (try d.keys.sorted().map { "\(try TemplateValue.string($0).json()): \(try d[$0]!.json())" }).joined(separator: ", ") + "}"
        }
    }
}

/// Variables, innermost first.
struct Scope {
    var variables: [String: TemplateValue]
    var parent: [[String: TemplateValue]] = []

    init(variables: [String: TemplateValue], parent: Scope? = nil) {
        self.variables = variables
        if let parent { self.parent = [parent.variables] + parent.parent }
    }

    mutating func assign(_ name: String, _ value: TemplateValue) { variables[name] = value }

    func lookup(_ name: String) -> TemplateValue {
        if let value = variables[name] { return value }
        for level in parent { if let value = level[name] { return value } }
        return .undefined
    }
}

// MARK: - Syntax tree

enum Node {
    case text(String)
    case output(Expression)
    case set(String, Expression)
    case branches([(condition: Expression, body: [Node])], otherwise: [Node])
    case loop(variable: String, sequence: Expression, body: [Node])
}

indirect enum Expression {
    case literal(TemplateValue)
    case variable(String)
    case list([Expression])
    case attribute(Expression, String)
    case element(Expression, Expression)
    case slice(Expression, Expression?, Expression?)
    case call(Expression, [Expression])
    case filter(Expression, String, [Expression])
    case test(Expression, String, negated: Bool)
    case unary(String, Expression)
    case binary(String, Expression, Expression)
    case conditional(Expression, condition: Expression, otherwise: Expression?)

    func evaluate(_ scope: Scope) throws -> TemplateValue {
        switch self {
        case .literal(let value): return value
        case .variable(let name): return scope.lookup(name)
        case .list(let items): return .list(try items.map { try $0.evaluate(scope) })
        case .attribute(let base, let name):
            if case .dict(let d) = try base.evaluate(scope) { return d[name] ?? .undefined }
            return .undefined
        case .element(let base, let index):
            return try Self.element(of: base.evaluate(scope), at: index.evaluate(scope))
        case .slice(let base, let from, let to):
            return try Self.slice(base.evaluate(scope), from: from.map { try $0.evaluate(scope) }, to: to.map { try $0.evaluate(scope) })
        case .call(let callee, let arguments):
            let values = try arguments.map { try $0.evaluate(scope) }
            if case .attribute(let base, let method) = callee { return try Self.method(method, of: base.evaluate(scope), values) }
            guard case .variable(let name) = callee else { throw ChatTemplateError.unsupported("calling an expression") }
            switch (name, values.first) {
            case ("raise_exception", let message?): throw ChatTemplateError.refused(try message.rendered())
            case ("range", .int(let n)?) where values.count == 1: return .list((0..<max(0, n)).map { .int($0) })
            default: throw ChatTemplateError.unsupported("the function \(name)()")
            }
        case .filter(let base, let name, let arguments):
            return try Self.filter(name, base.evaluate(scope), arguments.map { try $0.evaluate(scope) })
        case .test(let base, let name, let negated):
            let value = try base.evaluate(scope)
            let result: Bool
            switch (name, value) {
            case ("defined", _): result = value != .undefined
            case ("undefined", _): result = value == .undefined
            case ("none", _): result = value == .none
            case ("string", .string): result = true
            case ("number", .int): result = true
            case ("mapping", .dict): result = true
            case ("sequence", .list), ("sequence", .string), ("iterable", .list), ("iterable", .string): result = true
            case ("string", _), ("number", _), ("mapping", _), ("sequence", _), ("iterable", _): result = false
            default: throw ChatTemplateError.unsupported("the test 'is \(name)'")
            }
            return .bool(result != negated)
        case .unary(let op, let operand):
            let value = try operand.evaluate(scope)
            switch (op, value) {
            case ("not", _): return .bool(!value.isTrue)
            case ("-", .int(let i)): return .int(-i)
            default: throw ChatTemplateError.refused("cannot apply \(op) to \(value)")
            }
        case .binary(let op, let left, let right):
            switch op {
            case "and": let l = try left.evaluate(scope); return l.isTrue ? try right.evaluate(scope) : l
            case "or": let l = try left.evaluate(scope); return l.isTrue ? l : try right.evaluate(scope)
            default: return try Self.binary(op, left.evaluate(scope), right.evaluate(scope))
            }
        case .conditional(let value, let condition, let otherwise):
            if try condition.evaluate(scope).isTrue { return try value.evaluate(scope) }
            return try otherwise?.evaluate(scope) ?? .undefined
        }
    }

    static func element(of base: TemplateValue, at index: TemplateValue) throws -> TemplateValue {
        switch (base, index) {
        case (.dict(let d), .string(let key)): return d[key] ?? .undefined
        case (.list(let l), .int(let i)):
            let j = i < 0 ? l.count + i : i
            return l.indices.contains(j) ? l[j] : .undefined
        case (.string(let s), .int(let i)):
            let characters = Array(s), j = i < 0 ? characters.count + i : i
            return characters.indices.contains(j) ? .string(String(characters[j])) : .undefined
        default: return .undefined
        }
    }

    static func slice(_ base: TemplateValue, from: TemplateValue?, to: TemplateValue?) throws -> TemplateValue {
        func bounds(_ count: Int) throws -> Range<Int> {
            func index(_ value: TemplateValue?, _ fallback: Int) throws -> Int {
                switch value {
                case nil, .none?: return fallback
                case .int(let i)?: return min(count, max(0, i < 0 ? count + i : i))
                default: throw ChatTemplateError.refused("a slice bound must be an integer")
                }
            }
            let (a, b) = (try index(from, 0), try index(to, count))
            return a..<max(a, b)
        }
        switch base {
        case .list(let l): return .list(Array(l[try bounds(l.count)]))
        case .string(let s): let c = Array(s); return .string(String(c[try bounds(c.count)]))
        default: throw ChatTemplateError.refused("cannot slice \(base)")
        }
    }

    static func method(_ name: String, of base: TemplateValue, _ arguments: [TemplateValue]) throws -> TemplateValue {
        switch (base, name, arguments.first) {
        case (.string(let s), "strip", nil): return .string(s.trimmingCharacters(in: .whitespacesAndNewlines))
        case (.string(let s), "lstrip", nil): return .string(String(s.drop(while: { $0.isWhitespace })))
        case (.string(let s), "rstrip", nil): return .string(String(s.reversed().drop(while: { $0.isWhitespace }).reversed()))
        case (.string(let s), "upper", nil): return .string(s.uppercased())
        case (.string(let s), "lower", nil): return .string(s.lowercased())
        case (.string(let s), "startswith", .string(let p)?): return .bool(s.hasPrefix(p))
        case (.string(let s), "endswith", .string(let p)?): return .bool(s.hasSuffix(p))
        case (.dict(let d), "get", .string(let key)?): return d[key] ?? (arguments.count > 1 ? arguments[1] : .none)
        default: throw ChatTemplateError.unsupported("the method .\(name)() on \(base)")
        }
    }

    static func filter(_ name: String, _ value: TemplateValue, _ arguments: [TemplateValue]) throws -> TemplateValue {
        switch (name, value) {
        case ("trim", .string(let s)): return .string(s.trimmingCharacters(in: .whitespacesAndNewlines))
        case ("upper", .string(let s)): return .string(s.uppercased())
        case ("lower", .string(let s)): return .string(s.lowercased())
        case ("length", .string(let s)), ("count", .string(let s)): return .int(s.count)
        case ("length", .list(let l)), ("count", .list(let l)): return .int(l.count)
        case ("length", .dict(let d)), ("count", .dict(let d)): return .int(d.count)
        case ("string", _): return .string(try value.rendered())
        case ("tojson", _): return .string(try value.json())
        case ("first", .list(let l)): return l.first ?? .undefined
        case ("last", .list(let l)): return l.last ?? .undefined
        case ("default", _): return value == .undefined ? arguments.first ?? .string("") : value
        default: throw ChatTemplateError.unsupported("the filter '| \(name)' on \(value)")
        }
    }

    static func binary(_ op: String, _ l: TemplateValue, _ r: TemplateValue) throws -> TemplateValue {
        switch (op, l, r) {
        case ("==", _, _): return .bool(l == r)
        case ("!=", _, _): return .bool(l != r)
        case ("+", .int(let a), .int(let b)): return .int(a + b)
        case ("+", .string(let a), .string(let b)): return .string(a + b)
        case ("+", .list(let a), .list(let b)): return .list(a + b)
        case ("-", .int(let a), .int(let b)): return .int(a - b)
        case ("*", .int(let a), .int(let b)): return .int(a * b)
        case ("*", .string(let a), .int(let b)): return .string(String(repeating: a, count: max(0, b)))
        case ("%", .int(let a), .int(let b)) where b != 0: return .int(((a % b) + b) % b)  // Python's modulo
        case ("//", .int(let a), .int(let b)) where b != 0: return .int(Int((Double(a) / Double(b)).rounded(.down)))
        case ("~", _, _): return .string(try l.rendered() + r.rendered())
        case ("<", .int(let a), .int(let b)): return .bool(a < b)
        case ("<=", .int(let a), .int(let b)): return .bool(a <= b)
        case (">", .int(let a), .int(let b)): return .bool(a > b)
        case (">=", .int(let a), .int(let b)): return .bool(a >= b)
        case ("in", _, .list(let items)): return .bool(items.contains(l))
        case ("in", .string(let key), .dict(let d)): return .bool(d[key] != nil)
        case ("in", .string(let part), .string(let whole)): return .bool(part.isEmpty || whole.contains(part))
        case ("not in", _, _): return .bool(!(try binary("in", l, r)).isTrue)
        default: throw ChatTemplateError.refused("cannot apply \(op) to \(l) and \(r)")
        }
    }
}

// MARK: - Lexer

/// The template cut into text and tags, with Jinja's whitespace control applied to the text
/// (`trim_blocks`, `lstrip_blocks`, and the `-` markers), and each tag's expression tokens.
enum Lexer {
    enum Piece: Equatable {
        case text(String)
        case output([Token])
        case statement([Token])
    }

    enum Token: Equatable {
        case name(String), string(String), int(Int), symbol(String)
    }

    /// A tag as written: its kind ("{", "%" or "#"), its whitespace markers, its inside.
    struct Tag {
        var kind: Character
        var minusBefore = false, plusBefore = false, minusAfter = false
        var inner = ""
        /// Blocks and comments take `trim_blocks` and `lstrip_blocks`; `{{ }}` does not.
        var isBlock: Bool { kind != "{" }
    }

    static func tokens(of source: String) throws -> [Piece] {
        // First the raw cut: texts[k] comes before tags[k] (and the last text after the last tag).
        let s = Array(source)
        var texts: [String] = [], tags: [Tag] = []
        var text = "", i = 0
        while i < s.count {
            guard s[i] == "{", i + 1 < s.count, ["{", "%", "#"].contains(s[i + 1]) else {
                text.append(s[i])
                i += 1
                continue
            }
            var tag = Tag(kind: s[i + 1])
            let close: Character = tag.kind == "{" ? "}" : tag.kind
            var j = i + 2
            if j < s.count && (s[j] == "-" || s[j] == "+") {
                (tag.minusBefore, tag.plusBefore) = (s[j] == "-", s[j] == "+")
                j += 1
            }
            // The tag ends at the first close + "}" outside a string literal.
            var quote: Character?, end = -1, k = j
            while k + 1 < s.count {
                if let q = quote {
                    if s[k] == "\\" { k += 2; continue }
                    if s[k] == q { quote = nil }
                } else if tag.kind != "#" && (s[k] == "'" || s[k] == "\"") {
                    quote = s[k]
                } else if s[k] == close && s[k + 1] == "}" {
                    end = k
                    break
                }
                k += 1
            }
            guard end >= 0 else { throw ChatTemplateError.unsupported("a tag left open at character \(i)") }
            tag.minusAfter = end > j && s[end - 1] == "-"
            tag.inner = String(s[j..<(tag.minusAfter ? end - 1 : end)])
            texts.append(text)
            tags.append(tag)
            text = ""
            i = end + 2
        }
        texts.append(text)

        // Then the whitespace control, as Jinja with trim_blocks and lstrip_blocks applies it.
        var pieces: [Piece] = []
        for (k, raw) in texts.enumerated() {
            var t = Substring(raw)
            if k > 0 {
                let before = tags[k - 1]
                if before.minusAfter { t = t.drop(while: \.isWhitespace) } else if before.isBlock, t.first == "\n" { t = t.dropFirst() }
            }
            if k < tags.count {
                let after = tags[k]
                if after.minusBefore {
                    while let last = t.last, last.isWhitespace { t = t.dropLast() }
                } else if after.isBlock && !after.plusBefore {
                    // lstrip_blocks: the spaces and tabs between a line's start (in the template as
                    // written, or the template's start) and the tag go.
                    let trailing = raw.reversed().prefix(while: { $0 == " " || $0 == "\t" }).count
                    let kept = raw.count - trailing
                    let startsLine = kept == 0 ? k == 0 : raw[raw.index(raw.startIndex, offsetBy: kept - 1)] == "\n"
                    if startsLine { t = t.dropLast(min(trailing, t.count)) }
                }
            }
            if !t.isEmpty { pieces.append(.text(String(t))) }
            if k < tags.count {
                let tag = tags[k]
                switch tag.kind {
                case "{": pieces.append(.output(try expressionTokens(tag.inner)))
                case "%": pieces.append(.statement(try expressionTokens(tag.inner)))
                default: break  // a comment
                }
            }
        }
        return pieces
    }

    static let symbols = ["==", "!=", "<=", ">=", "//", "<", ">", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":", "(", ")", "[", "]", "=", "{", "}"]

    static func expressionTokens(_ source: String) throws -> [Token] {
        let s = Array(source)
        var tokens: [Token] = [], i = 0
        while i < s.count {
            let c = s[i]
            if c.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = "", j = i + 1
                while j < s.count && s[j] != c {
                    if s[j] == "\\", j + 1 < s.count {
                        let escaped: [Character: Character] = ["n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", "\"": "\""]
                        value.append(escaped[s[j + 1]] ?? s[j + 1])
                        j += 2
                    } else {
                        value.append(s[j])
                        j += 1
                    }
                }
                guard j < s.count else { throw ChatTemplateError.unsupported("an unterminated string") }
                tokens.append(.string(value))
                i = j + 1
            } else if c.isNumber {
                var j = i
                while j < s.count && s[j].isNumber { j += 1 }
                if j < s.count && s[j] == "." { throw ChatTemplateError.unsupported("a decimal number") }
                tokens.append(.int(Int(String(s[i..<j]))!))
                i = j
            } else if c.isLetter || c == "_" {
                var j = i
                while j < s.count && (s[j].isLetter || s[j].isNumber || s[j] == "_") { j += 1 }
                tokens.append(.name(String(s[i..<j])))
                i = j
            } else if let symbol = symbols.first(where: { i + $0.count <= s.count && String(s[i..<(i + $0.count)]) == $0 }) {
                tokens.append(.symbol(symbol))
                i += symbol.count
            } else {
                throw ChatTemplateError.unsupported("the character '\(c)'")
            }
        }
        return tokens
    }
}

// MARK: - Parser

struct Parser {
    var pieces: [Lexer.Piece]
    var position = 0

    init(tokens: [Lexer.Piece]) { pieces = tokens }

    /// The whole template.
    mutating func template() throws -> [Node] {
        let (nodes, end) = try block(until: [])
        if let end { throw ChatTemplateError.unsupported("'{% \(end) %}' without its opening tag") }
        return nodes
    }

    /// Nodes up to a statement whose keyword is in `ends` (returned, consumed) or the template's end (nil).
    mutating func block(until ends: Set<String>) throws -> ([Node], String?) {
        var nodes: [Node] = []
        while position < pieces.count {
            let piece = pieces[position]
            position += 1
            switch piece {
            case .text(let text): nodes.append(.text(text))
            case .output(let tokens): nodes.append(.output(try ExpressionParser.parse(tokens)))
            case .statement(let tokens):
                guard case .name(let keyword)? = tokens.first else { throw ChatTemplateError.unsupported("an empty statement") }
                if ends.contains(keyword) {
                    position -= 1
                    return (nodes, keyword)
                }
                nodes.append(try statement(keyword, Array(tokens.dropFirst())))
            }
        }
        if !ends.isEmpty { throw ChatTemplateError.unsupported("a block left open (expected one of \(ends.sorted()))") }
        return (nodes, nil)
    }

    mutating func statement(_ keyword: String, _ rest: [Lexer.Token]) throws -> Node {
        switch keyword {
        case "if":
            var branches: [(condition: Expression, body: [Node])] = []
            var condition = try ExpressionParser.parse(rest)
            while true {
                let (body, end) = try block(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                guard case .statement(let tokens) = pieces[position] else { preconditionFailure("block(until:) stops at a statement") }
                position += 1
                switch end {
                case "elif":
                    condition = try ExpressionParser.parse(Array(tokens.dropFirst()))
                case "else":
                    let (otherwise, _) = try block(until: ["endif"])
                    position += 1
                    return .branches(branches, otherwise: otherwise)
                default:
                    return .branches(branches, otherwise: [])
                }
            }
        case "for":
            guard rest.count >= 3, case .name(let variable) = rest[0], rest[1] == .name("in") else {
                throw ChatTemplateError.unsupported("a for loop other than 'for name in sequence'")
            }
            let (body, end) = try block(until: ["endfor", "else"])
            if end == "else" { throw ChatTemplateError.unsupported("'for ... else'") }
            position += 1
            return .loop(variable: variable, sequence: try ExpressionParser.parse(Array(rest[2...])), body: body)
        case "set":
            guard rest.count >= 3, case .name(let name) = rest[0], rest[1] == .symbol("=") else {
                throw ChatTemplateError.unsupported("a set other than 'set name = expression'")
            }
            return .set(name, try ExpressionParser.parse(Array(rest[2...])))
        default:
            throw ChatTemplateError.unsupported("'{% \(keyword) %}'")
        }
    }
}

/// Jinja's expression grammar, loosest first: conditional, or, and, not, comparison (and `in`),
/// + and -, ~, * / // %, unary minus, then a primary with its postfixes (attribute, subscript,
/// call), filters and tests.
struct ExpressionParser {
    var tokens: [Lexer.Token]
    var i = 0

    static func parse(_ tokens: [Lexer.Token]) throws -> Expression {
        var parser = ExpressionParser(tokens: tokens)
        let expression = try parser.conditional()
        guard parser.i == tokens.count else { throw ChatTemplateError.unsupported("the expression part \(tokens[parser.i...].map(Self.text).joined(separator: " "))") }
        return expression
    }

    static func text(_ token: Lexer.Token) -> String {
        switch token {
        case .name(let s), .symbol(let s): return s
        case .string(let s): return "'\(s)'"
        case .int(let i): return String(i)
        }
    }

    var next: Lexer.Token? { i < tokens.count ? tokens[i] : nil }

    mutating func accept(_ token: Lexer.Token) -> Bool {
        guard next == token else { return false }
        i += 1
        return true
    }

    mutating func expect(_ token: Lexer.Token) throws {
        guard accept(token) else { throw ChatTemplateError.unsupported("an expression missing '\(Self.text(token))'") }
    }

    mutating func conditional() throws -> Expression {
        let value = try or()
        guard accept(.name("if")) else { return value }
        let condition = try or()
        return .conditional(value, condition: condition, otherwise: accept(.name("else")) ? try conditional() : nil)
    }

    mutating func or() throws -> Expression {
        var left = try and()
        while accept(.name("or")) { left = .binary("or", left, try and()) }
        return left
    }

    mutating func and() throws -> Expression {
        var left = try not()
        while accept(.name("and")) { left = .binary("and", left, try not()) }
        return left
    }

    mutating func not() throws -> Expression {
        accept(.name("not")) ? .unary("not", try not()) : try comparison()
    }

    mutating func comparison() throws -> Expression {
        var left = try sum()
        while true {
            if case .symbol(let op)? = next, ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                i += 1
                left = .binary(op, left, try sum())
            } else if accept(.name("in")) {
                left = .binary("in", left, try sum())
            } else if next == .name("not"), i + 1 < tokens.count, tokens[i + 1] == .name("in") {
                i += 2
                left = .binary("not in", left, try sum())
            } else {
                return left
            }
        }
    }

    mutating func sum() throws -> Expression {
        var left = try concatenation()
        while case .symbol(let op)? = next, op == "+" || op == "-" {
            i += 1
            left = .binary(op, left, try concatenation())
        }
        return left
    }

    mutating func concatenation() throws -> Expression {
        var left = try product()
        while accept(.symbol("~")) { left = .binary("~", left, try product()) }
        return left
    }

    mutating func product() throws -> Expression {
        var left = try unary()
        while case .symbol(let op)? = next, ["*", "/", "//", "%"].contains(op) {
            i += 1
            if op == "/" { throw ChatTemplateError.unsupported("division '/'") }
            left = .binary(op, left, try unary())
        }
        return left
    }

    mutating func unary() throws -> Expression {
        if accept(.symbol("-")) { return .unary("-", try unary()) }
        var value = try postfix(try primary())
        while true {
            if accept(.symbol("|")) {
                guard case .name(let name)? = next else { throw ChatTemplateError.unsupported("a filter without a name") }
                i += 1
                value = .filter(value, name, accept(.symbol("(")) ? try arguments() : [])
                value = try postfix(value)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                guard case .name(let name)? = next else { throw ChatTemplateError.unsupported("a test without a name") }
                i += 1
                value = .test(value, name, negated: negated)
            } else {
                return value
            }
        }
    }

    mutating func primary() throws -> Expression {
        guard let token = next else { throw ChatTemplateError.unsupported("an expression that ends early") }
        i += 1
        switch token {
        case .string(let s):
            var value = s
            while case .string(let more)? = next { value += more; i += 1 }  // adjacent literals join
            return .literal(.string(value))
        case .int(let n): return .literal(.int(n))
        case .name("true"), .name("True"): return .literal(.bool(true))
        case .name("false"), .name("False"): return .literal(.bool(false))
        case .name("none"), .name("None"): return .literal(.none)
        case .name(let name): return .variable(name)
        case .symbol("("):
            let inner = try conditional()
            try expect(.symbol(")"))
            return inner
        case .symbol("["):
            var items: [Expression] = []
            while !accept(.symbol("]")) {
                items.append(try conditional())
                if !accept(.symbol(",")) { try expect(.symbol("]")); break }
            }
            return .list(items)
        default: throw ChatTemplateError.unsupported("'\(Self.text(token))' where a value belongs")
        }
    }

    mutating func postfix(_ base: Expression) throws -> Expression {
        var value = base
        while true {
            if accept(.symbol(".")) {
                guard case .name(let name)? = next else { throw ChatTemplateError.unsupported("'.' without a name") }
                i += 1
                value = .attribute(value, name)
            } else if accept(.symbol("[")) {
                let from = next == .symbol(":") ? nil : try conditional()
                if accept(.symbol(":")) {
                    let to = next == .symbol("]") ? nil : try conditional()
                    value = .slice(value, from, to)
                } else {
                    value = .element(value, from!)
                }
                try expect(.symbol("]"))
            } else if accept(.symbol("(")) {
                value = .call(value, try arguments())
            } else {
                return value
            }
        }
    }

    /// Call arguments after "(", through ")".
    mutating func arguments() throws -> [Expression] {
        var values: [Expression] = []
        while !accept(.symbol(")")) {
            if case .name? = next, i + 1 < tokens.count, tokens[i + 1] == .symbol("=") {
                throw ChatTemplateError.unsupported("keyword arguments")
            }
            values.append(try conditional())
            if !accept(.symbol(",")) { try expect(.symbol(")")); break }
        }
        return values
    }
}
