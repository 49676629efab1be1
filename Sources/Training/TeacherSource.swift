import Losses
import Models
import TeacherCache
import Tensor
import TrainingData

/// What one micro-batch's objective gets from the teacher.
public struct TeacherTargets {
    /// The teacher side of the fused head + loss: its final hidden states and head (live), or
    /// sparse targets (cached).
    public var output: LinearTeacher
    /// The teacher's own cross-entropy on the batch when the source has it at hand (a cache's
    /// stored label log-probabilities); nil: the fused path computes it when DTS asks.
    public var crossEntropy: Float?
    /// Residual streams and attention maps for the feature losses (a live teacher only).
    public var activations: LlamaForwardResult?

    public init(output: LinearTeacher, crossEntropy: Float? = nil, activations: LlamaForwardResult? = nil) {
        self.output = output
        self.crossEntropy = crossEntropy
        self.activations = activations
    }
}

/// What a step needs from the teacher beyond its output targets.
public struct TeacherNeeds {
    /// The residual stream after every block (logit lens, hidden-state hints).
    public var hiddenStates = false
    /// The attention probabilities of these blocks (attention alignment).
    public var attentionLayers: Set<Int> = []

    public init(hiddenStates: Bool = false, attentionLayers: Set<Int> = []) {
        self.hiddenStates = hiddenStates
        self.attentionLayers = attentionLayers
    }
}

/// Where a step's teacher targets come from: the model on the device (``LiveTeacher``), or a
/// teacher cache (``SparseTeacher``).
public protocol TeacherSource {
    /// The targets of `batch`'s windows.
    func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets
    /// The teacher's NLL of validation windows: their tokens `[B][T]` and window numbers.
    func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult
    /// Whether ``readAhead(_:)`` does anything: the source assembles its targets on the host and
    /// can do it for the next step while the device runs this one.
    var readsAhead: Bool { get }
    /// The next step's batches (this process's), whose targets ``targets(for:needs:)`` will be asked for.
    func readAhead(_ batches: [TrainingBatch])
}

extension TeacherSource {
    public var readsAhead: Bool { false }
    public func readAhead(_ batches: [TrainingBatch]) {}
}

/// The teacher model itself, run on every micro-batch.
public final class LiveTeacher: TeacherSource {
    public let model: LlamaModel
    private var expandedHead: Tensor?

    public init(model: LlamaModel) {
        self.model = model
    }

    /// The unembedding `[V, C_t]` for the fused head path (main loss and logit lens) in the model's
    /// GEMM precision (fp32, bf16 or f16), expanded from its quantized blocks once.
    public func head() throws -> Tensor {
        if let expandedHead { return expandedHead }
        var head = model.weights.output
        let precision = model.precision
        if head.dtype != precision {
            let expanded = try model.backend.tensor(shape: head.shape, dtype: precision, label: "teacher unembedding (\(precision.rawValue))")
            if head.dtype == .f32 { try model.backend.convert(head, into: expanded) } else { try model.backend.dequantize(head, into: expanded) }
            // In f16 a weight past 65504 becomes inf (checked once, here: the fused head multiplies by it every step).
            if precision == .f16, try expanded.toArray().contains(where: { $0.isInfinite }) {
                throw ModelError.f16Overflow("f16 overflow: the teacher's unembedding \(head.label) has weights past f16's largest value 65504; "
                                             + "use --teacher-precision bf16 (fp32's range) or fp32")
            }
            head = expanded
        }
        expandedHead = head
        return head
    }

    public func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets {
        let result = try model.forward(batch.tokens, options: LlamaForwardOptions(keepHiddenStates: needs.hiddenStates,
                                                                                  attentionLayers: needs.attentionLayers, computeLogits: false))
        return TeacherTargets(output: .hidden(result.finalHidden, weight: try head()), crossEntropy: nil, activations: result)
    }

    public func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult {
        try model.likelihood(of: tokens)
    }
}

extension SparseTeacher: TeacherSource {
    public func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets {
        let (teacher, crossEntropy) = try topK(windows: batch.windows, tokens: batch.tokens)
        return TeacherTargets(output: .topK(teacher), crossEntropy: crossEntropy, activations: nil)
    }

    public func readAhead(_ batches: [TrainingBatch]) {
        readAhead(windowsOf: batches.map { (windows: $0.windows, tokens: $0.tokens) })
    }

    public func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult {
        try likelihood(windows: windows)
    }
}

/// The live teacher's targets made sparse at every micro-batch exactly as a teacher cache of the
/// same form stores them (``SparseTargetMaker``: the same draws for the same window numbers, with
/// the cache's default seed), then trained on as cached targets are (``SparseTeacher``): a
/// training run from a cache and one with `--sparsify-teacher` of its form take the same steps.
final class SparsifiedTeacher: TeacherSource {
    let live: LiveTeacher
    let maker: SparseTargetMaker
    let tail: MissingTeacherMass
    let exactLabel: Bool

    init(live: LiveTeacher, spec: TeacherTargetSpec, tail: MissingTeacherMass, exactLabel: Bool, seqLen: Int) {
        self.live = live
        self.tail = tail
        self.exactLabel = exactLabel
        maker = SparseTargetMaker(spec: spec, seqLen: seqLen)
    }

    func targets(for batch: TrainingBatch, needs: TeacherNeeds) throws -> TeacherTargets {
        let targets = try maker.targets(of: batch.tokens, windows: batch.windows, model: live.model)
        let ofWindow = Dictionary(zip(batch.windows, targets)) { first, _ in first }
        let sparse = try SparseTeacher(spec: maker.spec, tail: tail, exactLabel: exactLabel, seqLen: maker.seqLen,
                                       vocabulary: live.model.config.vocabulary, backend: live.model.backend) { window in ofWindow[window]! }
        let (teacher, crossEntropy) = try sparse.topK(windows: batch.windows, tokens: batch.tokens)
        return TeacherTargets(output: .topK(teacher), crossEntropy: crossEntropy, activations: nil)
    }

    func likelihood(of tokens: [[Int32]], windows: [Int]) throws -> LikelihoodResult {
        try live.likelihood(of: tokens, windows: windows)
    }
}
