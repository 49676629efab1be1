/// GPT-2's byte-to-unicode map, which byte-level BPE vocabularies store their tokens in: the
/// printable bytes `!`...`~`, `¡`...`¬`, `®`...`ÿ` map to the code point of the same value, and the
/// other 68 bytes to U+0100, U+0101, ... in byte order (so a space, 0x20, is "Ġ" U+0120).
enum ByteLevel {
    /// `scalarForByte[b]` is the code point that stands for byte `b` in token strings.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The inverse map: the byte a token-string code point stands for, or nil for code points outside it.
    static let byteForScalar: [UInt32: UInt8] = {
        var inverse: [UInt32: UInt8] = [:]
        for (byte, scalar) in scalarForByte.enumerated() { inverse[scalar.value] = UInt8(byte) }
        return inverse
    }()

    /// The token string for raw bytes: "Ġthe" for " the".
    static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var result = String.UnicodeScalarView()
        for byte in bytes { result.append(scalarForByte[Int(byte)]) }
        return String(result)
    }

    /// The raw bytes a token string stands for; a code point outside the map (possible only in
    /// hand-made vocabularies) contributes its own UTF-8 bytes.
    static func decode(_ token: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for scalar in token.unicodeScalars {
            if let byte = byteForScalar[scalar.value] {
                bytes.append(byte)
            } else {
                bytes.append(contentsOf: String(scalar).utf8)
            }
        }
        return bytes
    }
}
