#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Files

/// A read-only memory map of a whole file; unmapped when the object goes away.
final class MappedFile: @unchecked Sendable {
    /// The file's bytes (empty for an empty file). Valid as long as this object lives.
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws {
        do {
            try FileChecks.requireReadableFile(path)  // before open(2): a named pipe would block it
        } catch let problem as FileProblem {
            throw GGUFError.cannotOpen(file: path, reason: problem.reason)
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError.cannotOpen(file: path, reason: MappedFile.systemError()) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw GGUFError.cannotOpen(file: path, reason: MappedFile.systemError())
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError.cannotOpen(file: path, reason: "not a regular file")
        }
        let size = Int(status.st_size)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
              address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw GGUFError.cannotOpen(file: path, reason: "mmap failed: \(MappedFile.systemError())")
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }

    static func systemError() -> String { String(cString: strerror(errno)) }
}
