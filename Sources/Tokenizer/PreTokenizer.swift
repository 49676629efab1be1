/// The regex splits that cut text into words before BPE; the raw values are the names
/// `tokenizer.ggml.pre` stores (llama.cpp's: "smollm", "llama-bpe", "gpt-2").
///
/// Each is a hand-written matcher with the semantics llama.cpp gives its ``regexes``
/// (llama-vocab.cpp lists them; unicode.cpp runs the gpt2 and llama3 ones as custom code):
///
/// - `gpt-2`: the GPT-2 regex (contractions, letters, numbers, other symbols, whitespace).
/// - `smollm`: first `\p{N}` (every number character becomes its own piece), then the gpt2 regex
///   inside each remaining piece, so `2024` splits into `2`,`0`,`2`,`4`.
/// - `llama-bpe` (Llama 3): case-insensitive contractions, up to three digits per number, newlines
///   kept apart; its vocabularies also look a whole word up before merging (``ignoresMerges``).
///
/// Text between matches is kept as pieces of its own, so the pieces always concatenate back to
/// the input. `\p{L}` and `\p{N}` are Unicode general categories L* and N*; `\s` is White_Space.
public enum PreTokenizer: String, CaseIterable, Sendable {
    case smollm
    case llamaBPE = "llama-bpe"
    case gpt2 = "gpt-2"

    /// Whether a word that is itself a token is emitted whole, without running the merges
    /// (llama.cpp's `ignore_merges`, set for `llama-bpe`).
    public var ignoresMerges: Bool { self == .llamaBPE }

    /// The regexes applied in turn, each inside the pieces the previous one cut (matches and the
    /// text between them both kept): what the matchers below implement, and what a Hugging Face
    /// `tokenizer.json` writes as `Split` pre-tokenizers.
    public var regexes: [String] {
        let gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        switch self {
        case .gpt2: return [gpt2]
        case .smollm: return [#"\p{N}"#, gpt2]
        case .llamaBPE:
            return [#"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#]
        }
    }

    /// The pieces of `text`: `PreTokenizer.smollm.split("Hi 2024!")` is `["Hi", " ", "2", "0", "2", "4", "!"]`.
    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let classes = scalars.map(characterClass)
        return splitRanges(scalars: scalars, classes: classes).map { range in
            var piece = String.UnicodeScalarView()
            piece.append(contentsOf: scalars[range])
            return String(piece)
        }
    }

    /// The pieces as ranges of scalar indices; `classes[i]` is `characterClass(scalars[i])`.
    func splitRanges(scalars: [Unicode.Scalar], classes: [UInt8]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        pieces.reserveCapacity(scalars.count / 3)
        switch self {
        case .gpt2:
            splitGPT2(scalars, classes, 0..<scalars.count, into: &pieces)
        case .smollm:
            // \p{N} first: each number character alone, the gpt2 regex on the text between them.
            var start = 0
            for index in 0..<scalars.count where classes[index] & CharacterClass.number != 0 {
                splitGPT2(scalars, classes, start..<index, into: &pieces)
                pieces.append(index..<index + 1)
                start = index + 1
            }
            splitGPT2(scalars, classes, start..<scalars.count, into: &pieces)
        case .llamaBPE:
            splitLlama3(scalars, classes, 0..<scalars.count, into: &pieces)
        }
        return pieces
    }
}

/// Bit flags of a code point's regex classes.
enum CharacterClass {
    static let letter: UInt8 = 1      // \p{L}
    static let number: UInt8 = 2      // \p{N}
    static let whitespace: UInt8 = 4  // \s
    static let letterNumberOrSpace: UInt8 = letter | number | whitespace
}

private let asciiClasses: [UInt8] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

private func classify(_ scalar: Unicode.Scalar) -> UInt8 {
    let properties = scalar.properties
    var flags: UInt8 = properties.isWhitespace ? CharacterClass.whitespace : 0
    switch properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        flags |= CharacterClass.letter
    case .decimalNumber, .letterNumber, .otherNumber:
        flags |= CharacterClass.number
    default:
        break
    }
    return flags
}

/// The ``CharacterClass`` flags of a code point (a table for ASCII).
@inline(__always)
func characterClass(_ scalar: Unicode.Scalar) -> UInt8 {
    scalar.value < 128 ? asciiClasses[Int(scalar.value)] : classify(scalar)
}

private let apostrophe: Unicode.Scalar = "'"
private let space: Unicode.Scalar = " "

@inline(__always)
private func isNewline(_ scalar: Unicode.Scalar) -> Bool { scalar == "\r" || scalar == "\n" }

/// The contraction at `index` (`'s`, `'t`, `'m`, `'d`, `'re`, `'ve`, `'ll`), returning its length or 0.
@inline(__always)
private func contractionLength(_ scalars: [Unicode.Scalar], at index: Int, end: Int, ignoringCase: Bool) -> Int {
    guard scalars[index] == apostrophe, index + 1 < end else { return 0 }
    func lower(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        ignoringCase && ("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32)! : scalar
    }
    let next = lower(scalars[index + 1])
    if next == "s" || next == "t" || next == "m" || next == "d" { return 2 }
    guard index + 2 < end else { return 0 }
    let pair = (next, lower(scalars[index + 2]))
    if pair == ("r", "e") || pair == ("v", "e") || pair == ("l", "l") { return 3 }
    return 0
}

/// The gpt2 regex over `range`, appending one range per match.
private func splitGPT2(_ scalars: [Unicode.Scalar], _ classes: [UInt8], _ range: Range<Int>,
                       into pieces: inout [Range<Int>]) {
    let end = range.upperBound
    var position = range.lowerBound
    while position < end {
        let start = position
        let contraction = contractionLength(scalars, at: position, end: end, ignoringCase: false)
        if contraction > 0 {
            position += contraction
        } else {
            // ` ?X+` for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: the class is that of the character after an optional space.
            let afterSpace = scalars[position] == space ? position + 1 : position
            let flags = afterSpace < end ? classes[afterSpace] : CharacterClass.whitespace
            if flags & CharacterClass.letter != 0 {
                position = afterSpace + 1
                while position < end && classes[position] & CharacterClass.letter != 0 { position += 1 }
            } else if flags & CharacterClass.number != 0 {
                position = afterSpace + 1
                while position < end && classes[position] & CharacterClass.number != 0 { position += 1 }
            } else if flags & CharacterClass.letterNumberOrSpace == 0 {
                position = afterSpace + 1
                while position < end && classes[position] & CharacterClass.letterNumberOrSpace == 0 { position += 1 }
            } else {
                // \s+(?!\S) | \s+ : a whitespace run, leaving its last character to prefix the next word.
                var runEnd = position
                while runEnd < end && classes[runEnd] & CharacterClass.whitespace != 0 { runEnd += 1 }
                position = runEnd - position > 1 && runEnd < end ? runEnd - 1 : runEnd
            }
        }
        pieces.append(start..<position)
    }
}

/// The llama-bpe (Llama 3) regex over `range`, appending one range per match.
private func splitLlama3(_ scalars: [Unicode.Scalar], _ classes: [UInt8], _ range: Range<Int>,
                         into pieces: inout [Range<Int>]) {
    let end = range.upperBound
    var position = range.lowerBound
    while position < end {
        let start = position
        let scalar = scalars[position]
        let flags = classes[position]
        let contraction = contractionLength(scalars, at: position, end: end, ignoringCase: true)
        let nextIsLetter = position + 1 < end && classes[position + 1] & CharacterClass.letter != 0
        let afterSpace = scalar == space ? position + 1 : position
        if contraction > 0 {
            position += contraction
        } else if !isNewline(scalar) && flags & CharacterClass.number == 0
                    && (flags & CharacterClass.letter != 0 || nextIsLetter) {
            // [^\r\n\p{L}\p{N}]?\p{L}+
            position += 1
            while position < end && classes[position] & CharacterClass.letter != 0 { position += 1 }
        } else if flags & CharacterClass.number != 0 {
            // \p{N}{1,3}
            position += 1
            while position < end && position - start < 3 && classes[position] & CharacterClass.number != 0 { position += 1 }
        } else if afterSpace < end && classes[afterSpace] & CharacterClass.letterNumberOrSpace == 0 {
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            position = afterSpace + 1
            while position < end && classes[position] & CharacterClass.letterNumberOrSpace == 0 { position += 1 }
            while position < end && isNewline(scalars[position]) { position += 1 }
        } else {
            // \s*[\r\n]+ : a whitespace run up to its last newline; else \s+(?!\S) | \s+.
            var runEnd = position
            var afterLastNewline = -1
            while runEnd < end && classes[runEnd] & CharacterClass.whitespace != 0 {
                if isNewline(scalars[runEnd]) { afterLastNewline = runEnd + 1 }
                runEnd += 1
            }
            if afterLastNewline > 0 {
                position = afterLastNewline
            } else {
                position = runEnd - position > 1 && runEnd < end ? runEnd - 1 : runEnd
            }
        }
        pieces.append(start..<position)
    }
}
