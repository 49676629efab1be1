import Foundation
import GGUF
import Models

/// Writes a llama model as a GGUF file that llama.cpp and `LlamaModel` run: `llama.*` metadata,
/// matrices in one chosen type (norms always F32), and the tokenizer copied from another GGUF
/// (the teacher's), via ``GGUFWriter`` (atomic: temporary file, fsync, rename).
///
/// ```swift
/// try GGUFExport.write(student, to: URL(fileURLWithPath: "student.gguf"), matrixType: .q8_0,
///                      tokenizer: .tokenizer(of: GGUFFile(path: "teacher.gguf")), name: "kdgpu student")
/// ```
public enum GGUFExport {
    /// Matrix types the exporter writes.
    public static let supportedMatrixTypes: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// llama.cpp's `general.file_type` (`llama_ftype`) for models whose matrices are all `type`.
    static func fileType(_ type: GGMLType) -> UInt32 {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .bf16: return 32
        }
    }

    /// - Parameters:
    ///   - matrixType: the type of every matrix (embedding, projections, LM head); norms stay F32.
    ///     Block types need the width and feed-forward width to be multiples of 32.
    ///   - tokenizer: `tokenizer.*` metadata (a teacher's, or a checkpoint's), written unchanged in
    ///     its order, so the file tokenizes as that model does; nil writes a file without a tokenizer,
    ///     which llama.cpp cannot run (callers that export for users require one).
    ///   - name: `general.name`.
    public static func write(_ parameters: LlamaParameters, to url: URL, matrixType: GGMLType = .f32,
                             tokenizer: GGUFMetadata?, name: String? = nil) throws {
        guard supportedMatrixTypes.contains(matrixType) else {
            throw CheckpointError.unsupportedModel(source: url.path, reason: "cannot export matrices as \(matrixType)")
        }
        try parameters.requireFinite(source: url.path)
        let config = parameters.config
        var writer = GGUFWriter()
        writer.setMetadata(.string("llama"), forKey: "general.architecture")
        if let name { writer.setMetadata(.string(name), forKey: "general.name") }
        writer.setMetadata(.uint32(fileType(matrixType)), forKey: "general.file_type")
        let integers: [(String, Int)] = [("block_count", config.layers), ("context_length", config.contextLength),
                                         ("embedding_length", config.width), ("feed_forward_length", config.feedForward),
                                         ("attention.head_count", config.heads), ("attention.head_count_kv", config.kvHeads),
                                         ("rope.dimension_count", config.ropeDimensions), ("vocab_size", config.vocabulary)]
        for (key, value) in integers { writer.setMetadata(.uint32(UInt32(value)), forKey: "llama.\(key)") }
        writer.setMetadata(.float32(config.ropeBase), forKey: "llama.rope.freq_base")
        writer.setMetadata(.float32(config.normEpsilon), forKey: "llama.attention.layer_norm_rms_epsilon")
        for (key, value) in tokenizer?.entries ?? [] where key.hasPrefix("tokenizer.") { writer.setMetadata(value, forKey: key) }
        for name in parameters.names {
            let tensor = parameters.tensors[name]!
            let type = LlamaParameters.isNorm(name) ? GGMLType.f32 : matrixType
            let dimensions = Array(tensor.shape.reversed())  // GGUF lists the fastest-varying dimension first
            guard dimensions[0] % type.blockSize == 0 else {
                throw CheckpointError.unsupportedModel(source: url.path, reason: "tensor \(name) has rows of \(dimensions[0]) values, not a multiple of \(type)'s block of \(type.blockSize); export as f32 or f16")
            }
            do {
                try writer.addTensor(named: name, dimensions: dimensions, type: type, values: tensor.values)
            } catch {
                throw CheckpointError.unsupportedModel(source: url.path, reason: "\(error)")
            }
        }
        do {
            try writer.write(to: url)
        } catch let error as GGUFError {
            if case let .writeFailed(file, reason) = error { throw CheckpointError.writeFailed(path: file, reason: reason) }
            throw CheckpointError.unsupportedModel(source: url.path, reason: "\(error)")
        }
    }
}
