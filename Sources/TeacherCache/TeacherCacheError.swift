/// Why a teacher cache cannot be built or read; each description is one line naming the file or
/// setting and what to do.
public enum TeacherCacheError: Error, Equatable, CustomStringConvertible {
    /// A `--targets` value that is none of the forms.
    case badSpec(String)
    /// Another setting or input that cannot be used (the message names it).
    case badInput(String)
    /// A cache file that is damaged, truncated or edited.
    case invalid(file: String, reason: String)
    /// A cache made from another teacher, corpus or settings than the ones given.
    case mismatch(folder: String, reason: String)
    /// A cache whose build has not finished.
    case incomplete(folder: String, shards: Int, of: Int)

    public var description: String {
        switch self {
        case let .badSpec(reason): return "targets (--targets): \(reason)"
        case let .badInput(message): return message
        case let .invalid(file, reason): return "\(file): \(reason); rebuild the cache with `kdgpu teacher-cache build`"
        case let .mismatch(folder, reason): return "\(folder): \(reason)"
        case let .incomplete(folder, shards, total):
            return "\(folder): the cache is incomplete (its build stopped with \(shards) of \(total) shards written); run the same `kdgpu teacher-cache build` again to finish it"
        }
    }
}
