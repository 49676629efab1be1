/// A cursor over the mapped bytes of a GGUF file that checks every read against the file size,
/// so that a corrupt length or count fails with an error before anything is allocated.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    private(set) var offset = 0

    init(bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    var bytesLeft: Int { bytes.count - offset }

    /// Throws unless a length field's `count` bytes can be read: `countExceedsFile` when `count` is
    /// larger than the whole file (a corrupt length), `truncated` when the file merely ends too soon.
    func requireLength(_ count: UInt64, for what: String) throws {
        guard count <= UInt64(bytesLeft) else {
            if count > UInt64(bytes.count) {
                throw GGUFError.countExceedsFile(file: file, what: what, count: count, bytesLeft: bytesLeft)
            }
            throw GGUFError.truncated(file: file, what: what, offset: offset, needed: Int(count), fileSize: bytes.count)
        }
    }

    /// Throws unless `count` items of at least `minimumSize` bytes each could fit in the rest of the file.
    func requireItems(_ count: UInt64, minimumSize: Int, for what: String) throws {
        let (total, overflow) = count.multipliedReportingOverflow(by: UInt64(minimumSize))
        guard !overflow, total <= UInt64(bytesLeft) else {
            throw GGUFError.countExceedsFile(file: file, what: what, count: count, bytesLeft: bytesLeft)
        }
    }

    private func truncated(_ needed: Int, _ what: String) -> GGUFError {
        .truncated(file: file, what: what, offset: offset, needed: needed, fileSize: bytes.count)
    }

    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let size = MemoryLayout<T>.size
        if size > bytesLeft { throw truncated(size, what()) }
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: value)
    }

    mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        if count > bytesLeft { throw truncated(count, what()) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
        offset += count
        return slice
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    mutating func readString(_ what: @autoclosure () -> String) throws -> String {
        let length = try read(UInt64.self, "length of \(what())")
        try requireLength(length, for: "length of \(what())")
        let utf8 = try readBytes(Int(length), what())
        let string = String(decoding: utf8, as: UTF8.self)
        // Decoding replaces invalid sequences with U+FFFD; an exact round trip means the bytes were valid.
        guard string.utf8.elementsEqual(utf8) else {
            throw GGUFError.invalidUTF8(file: file, what: what())
        }
        return string
    }
}
