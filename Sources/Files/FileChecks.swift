import Foundation

/// Why a path cannot be used, in kdgpu's words: ``description`` is one line naming the path.
public struct FileProblem: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// Checks on paths before they are opened, so a named pipe never blocks a read, a folder is not
/// taken for a file, and no message carries Foundation's error text.
public enum FileChecks {
    /// What kind of thing is at a path (following symbolic links).
    public enum Kind: Equatable {
        case missing, regularFile, folder, namedPipe, device, socket
    }

    public static func kind(of path: String) -> Kind {
        var status = stat()
        guard stat(path, &status) == 0 else { return .missing }
        switch status.st_mode & S_IFMT {
        case S_IFREG: return .regularFile
        case S_IFDIR: return .folder
        case S_IFIFO: return .namedPipe
        case S_IFCHR, S_IFBLK: return .device
        case S_IFSOCK: return .socket
        default: return .device
        }
    }

    /// Throws unless `path` is a regular file this process may read.
    /// - Parameter hint: what to do when it is missing (e.g. "run `make teacher`").
    public static func requireReadableFile(_ path: String, hint: String? = nil) throws {
        let kind = kind(of: path)
        guard kind == .regularFile else { throw FileProblem(path: path, reason: notAFile(kind, hint: hint)) }
        guard access(path, R_OK) == 0 else { throw FileProblem(path: path, reason: "permission denied (cannot read it)") }
    }

    /// Throws unless `path` is a folder this process may read.
    public static func requireReadableFolder(_ path: String, hint: String? = nil) throws {
        let kind = kind(of: path)
        switch kind {
        case .folder:
            guard access(path, R_OK | X_OK) == 0 else { throw FileProblem(path: path, reason: "permission denied (cannot list it)") }
        case .missing:
            throw FileProblem(path: path, reason: "no such folder" + (hint.map { "; \($0)" } ?? ""))
        default:
            throw FileProblem(path: path, reason: "is \(article(kind)), not a folder")
        }
    }

    /// Creates the folder `path` and any missing parents (like `mkdir -p`); an error names the
    /// part of the path at fault (a file where a folder should be, no permission, a full disk).
    public static func createFolder(_ path: String) throws {
        let kind = kind(of: path)
        switch kind {
        case .folder: return
        case .missing:
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty && parent != path { try createFolder(parent) }
            guard mkdir(path, 0o777) == 0 || (errno == EEXIST && self.kind(of: path) == .folder) else {
                throw FileProblem(path: path, reason: "cannot create the folder: \(String(cString: strerror(errno)).lowercased())")
            }
        default:
            throw FileProblem(path: path, reason: "is \(article(kind)), not a folder")
        }
    }

    /// The reason a non-file `kind` is refused.
    static func notAFile(_ kind: Kind, hint: String?) -> String {
        switch kind {
        case .missing: return "no such file" + (hint.map { "; \($0)" } ?? "")
        default: return "is \(article(kind)), not a regular file"
        }
    }

    /// "a folder", "a named pipe (FIFO)", ...
    public static func article(_ kind: Kind) -> String {
        switch kind {
        case .missing: return "missing"
        case .regularFile: return "a regular file"
        case .folder: return "a folder"
        case .namedPipe: return "a named pipe (FIFO)"
        case .device: return "a device"
        case .socket: return "a socket"
        }
    }

    /// A Foundation or POSIX error as a short reason ("no space left on device", "permission
    /// denied"), never the raw `Error Domain=... Code=...` text.
    public static func describe(_ error: Error) -> String {
        if let problem = error as? FileProblem { return problem.reason }
        let nsError = error as NSError
        if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))).lowercased() }
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code))).lowercased()
        }
        switch nsError.code {
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or folder"
        case NSFileWriteFileExistsError: return "already exists"
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return "permission denied"
        case NSFileWriteOutOfSpaceError: return "no space left on device"
        case NSFileWriteVolumeReadOnlyError: return "the file system is read-only"
        case NSPropertyListReadCorruptError: return "not valid JSON"
        case NSFileReadCorruptFileError: return "unreadable or corrupt"
        default: return "the operation failed (error \(nsError.code))"
        }
    }
}
