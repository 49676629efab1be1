import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes files so that they survive a crash once a call returns: every file is fsynced, and so is
/// the folder entry that names it. Every byte goes through one instance, so a test can make it act
/// like a disk that fills up after a given number of bytes (``init(failingAfterBytes:)``).
/// One instance is meant for one thread at a time (it counts bytes without a lock).
///
/// ```swift
/// let writer = DurableFileWriter()
/// try writer.writeFileAtomically(at: url) { sink in try sink.write(headerBytes) }
/// ```
public final class DurableFileWriter: @unchecked Sendable {
    /// Bytes accepted before writes fail with "No space left on device" (nil: no limit).
    public let byteLimit: Int?
    /// Bytes written so far through this writer.
    public private(set) var bytesWritten = 0

    /// - Parameter failingAfterBytes: act as a full disk after this many bytes: the write that
    ///   crosses the limit stores the bytes that fit, then fails with ENOSPC's message.
    public init(failingAfterBytes: Int? = nil) {
        byteLimit = failingAfterBytes
    }

    /// An open file being written.
    public final class Sink {
        fileprivate let fd: Int32
        fileprivate let path: String
        fileprivate let owner: DurableFileWriter

        fileprivate init(fd: Int32, path: String, owner: DurableFileWriter) {
            self.fd = fd
            self.path = path
            self.owner = owner
        }

        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            try owner.write(bytes, fd: fd, path: path)
        }

        public func write(_ bytes: [UInt8]) throws {
            try bytes.withUnsafeBytes { try write($0) }
        }
    }

    fileprivate func write(_ bytes: UnsafeRawBufferPointer, fd: Int32, path: String) throws {
        var allowed = bytes.count
        if let byteLimit { allowed = max(0, min(allowed, byteLimit - bytesWritten)) }
        var written = 0
        while written < allowed {
            let result = systemWrite(fd, bytes.baseAddress! + written, allowed - written)
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { throw CheckpointError.writeFailed(path: path, reason: systemError()) }
            written += result
            bytesWritten += result
        }
        if allowed < bytes.count {
            throw CheckpointError.writeFailed(path: path, reason: String(cString: strerror(ENOSPC)))
        }
    }

    /// Creates (or truncates) `url`, lets `body` write it, then fsyncs it. Not atomic: use for files
    /// inside a folder that is itself published atomically, or ``writeFileAtomically(at:_:)``.
    public func writeFile(at url: URL, _ body: (Sink) throws -> Void) throws {
        let path = url.path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CheckpointError.writeFailed(path: path, reason: systemError()) }
        defer { close(fd) }
        try body(Sink(fd: fd, path: path, owner: self))
        guard fsync(fd) == 0 else { throw CheckpointError.writeFailed(path: path, reason: systemError()) }
    }

    /// Writes a temporary file in `url`'s folder, fsyncs it, renames it over `url` and fsyncs the
    /// folder: readers see the old file or the whole new one, never a part.
    public func writeFileAtomically(at url: URL, _ body: (Sink) throws -> Void) throws {
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try writeFile(at: temporary, body)
            try rename(temporary, to: url)
        } catch {
            unlink(temporary.path)
            throw error
        }
        try syncFolder(folder)
    }

    /// rename(2): atomic replacement of `destination` (a file, a symbolic link or an empty folder).
    public func rename(_ source: URL, to destination: URL) throws {
        guard systemRename(source.path, destination.path) == 0 else {
            throw CheckpointError.writeFailed(path: destination.path, reason: "rename from \(source.lastPathComponent) failed: \(systemError())")
        }
    }

    /// fsync of a folder, so the names created or renamed in it are on disk.
    public func syncFolder(_ folder: URL) throws {
        let fd = open(folder.path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError.writeFailed(path: folder.path, reason: systemError()) }
        defer { close(fd) }
        // Some file systems refuse fsync on folders (EINVAL); the rename is then as durable as they make it.
        if fsync(fd) != 0 && errno != EINVAL {
            throw CheckpointError.writeFailed(path: folder.path, reason: systemError())
        }
    }
}

func systemError() -> String { String(cString: strerror(errno)) }

/// write(2), named apart from the methods called `write`.
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}

/// rename(2), named apart from ``DurableFileWriter/rename(_:to:)``.
private func systemRename(_ source: String, _ destination: String) -> Int32 {
    rename(source, destination)
}
