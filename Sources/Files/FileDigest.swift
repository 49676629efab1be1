import CCrypto
import Foundation

/// SHA-256 digests (OpenSSL's EVP), as lowercase hex: what `sha256sum` prints.
///
/// ```swift
/// let key = try SHA256Digest.file(at: "teacher.gguf")   // "4f2a..."
/// let same = SHA256Digest.hex(of: bytes)
/// ```
public enum SHA256Digest {
    /// The digest of `bytes`.
    public static func hex(of bytes: UnsafeRawBufferPointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = EVP_Digest(bytes.baseAddress, bytes.count, &digest, &length, EVP_sha256(), nil)
        precondition(ok == 1 && length == 32, "OpenSSL's SHA-256 failed")
        return digest.prefix(32).map { String(format: "%02x", $0) }.joined()
    }

    public static func hex(of bytes: [UInt8]) -> String { bytes.withUnsafeBytes { hex(of: $0) } }

    /// The digest of a regular file, read through a memory map.
    public static func file(at path: String) throws -> String {
        try FileChecks.requireReadableFile(path)
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw FileProblem(path: path, reason: "cannot read it: \(FileChecks.describe(error))")
        }
        return data.withUnsafeBytes { hex(of: $0) }
    }
}
