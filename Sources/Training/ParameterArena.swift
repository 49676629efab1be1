import Foundation
import Tensor

/// Every trainable tensor of a run (the student's and its feature losses' modules) in one flat
/// allocation per role: values, gradients, first and second AdamW moments, each `[rows, width]`.
/// Each ``Parameter`` becomes four views into them, so zeroing the gradients, their norm, clipping,
/// the update and a later all-reduce across processes are each one operation over one buffer.
///
/// Layout: the decayed parameters (matrices) first, then the rest (norm weights: not decayed), each
/// starting on a multiple of ``alignment`` elements; the gaps and the tail stay zero in every role
/// (zero gradient, zero moments: AdamW leaves a zero value at zero). Within each, parameters with a
/// learning-rate scale other than 1 (`learningRateScales`) come after the others, grouped by scale,
/// so the update is one AdamW call per group.
///
/// Mixed precision (`computeType` bf16): the values stay the fp32 master copy the optimizer
/// updates, and one more bf16 buffer mirrors the decayed span (the matrices), which the GEMMs read
/// (``Parameter/compute``): one conversion of the whole span after each update
/// (``refreshCompute()``). Norm weights and the embedding's row lookup read the fp32 values.
///
/// The conversion rounds stochastically by default, with each weight's random threshold drawn once
/// for the run (from its seed): an early AdamW update (about the learning rate per element) is
/// smaller than half a bf16 ulp of most weights, so rounding to nearest drops it for every weight
/// that sits on a bf16 value (a quarter of a Q4_1 teacher's) and the bf16 run falls behind the fp32
/// one (README, mixed precision). With random thresholds a move of a fraction f of an ulp carries
/// the expected share f of the weights across theirs, so the matrix moves as its master does on
/// average; and a weight's copy changes only when its master crosses its threshold (thresholds
/// drawn again at every step measured worse: every step's forward saw fresh noise in every weight).
public final class ParameterArena {
    public let parameters: [Parameter]
    /// `[rows, width]` each.
    public let values: Tensor
    public let gradients: Tensor
    public let firstMoments: Tensor
    public let secondMoments: Tensor
    /// The bf16 copy of the decayed span `[rows, width]` (mixed precision), or nil (fp32).
    public let computeValues: Tensor?
    /// How the compute copy rounds: `.stochastic` with one key for the run, or `.nearestEven`.
    let rounding: Rounding
    /// Elements `[0, decayedEnd)` hold the decayed parameters, `[decayedEnd, count)` the others.
    let decayedEnd: Int
    /// The update's groups: contiguous elements with one weight-decay rule and learning-rate scale.
    let groups: [(elements: Range<Int>, decays: Bool, learningRateScale: Float)]
    /// Each parameter's elements, in arena order.
    let layout: [(parameter: Parameter, elements: Range<Int>)]

    /// Row width of the arena's tensors (the row reductions of the norm and the finiteness check run over rows of this many).
    public static let width = 4096
    /// Each parameter starts on a multiple of this many elements (256 bytes).
    static let alignment = 64

    /// Takes `parameters` in: their current values and moments are copied into the arena (one role at
    /// a time, so memory peaks at one role's size above the parameters' own), and each parameter's
    /// tensors become views into it. Their gradients start at zero.
    /// - Parameters:
    ///   - computeType: `.f32`, or `.bf16` for a bf16 compute copy of the matrices.
    ///   - stochasticRoundingSeed: round the compute copy stochastically, each weight's threshold drawn from
    ///     this seed (nil: to nearest even).
    ///   - learningRateScales: by parameter name, a factor on the learning rate of its updates (others: 1).
    public init(_ parameters: [Parameter], backend: any Backend, computeType: DType = .f32, stochasticRoundingSeed: UInt64? = nil,
                learningRateScales: [String: Float] = [:]) throws {
        guard computeType == .f32 || computeType == .bf16 else {
            throw TensorError.unsupported("parameter arena: compute type \(computeType.rawValue); use f32 or bf16")
        }
        func scale(_ p: Parameter) -> Float { learningRateScales[p.name] ?? 1 }
        // Decayed first; within each, scale 1 first, then each other scale in order of first appearance.
        var groupKeys: [(decays: Bool, scale: Float)] = []
        for decays in [true, false] {
            groupKeys.append((decays, 1))
            for p in parameters where p.decays == decays && scale(p) != 1 && !groupKeys.contains(where: { $0 == (decays, scale(p)) }) {
                groupKeys.append((decays, scale(p)))
            }
        }
        var layout: [(parameter: Parameter, elements: Range<Int>)] = []
        var groups: [(elements: Range<Int>, decays: Bool, learningRateScale: Float)] = []
        var next = 0, firstUndecayed: Int?
        for key in groupKeys {
            let start = next
            for parameter in parameters where parameter.decays == key.decays && scale(parameter) == key.scale {
                if !parameter.decays && firstUndecayed == nil { firstUndecayed = next }
                layout.append((parameter, next..<(next + parameter.value.count)))
                next = (next + parameter.value.count + Self.alignment - 1) / Self.alignment * Self.alignment
            }
            if next > start { groups.append((start..<next, key.decays, key.scale)) }
        }
        let ordered = layout.map(\.parameter)
        let decayedEnd = firstUndecayed ?? next
        let rows = max(1, (next + Self.width - 1) / Self.width)
        self.parameters = ordered
        self.layout = layout
        self.decayedEnd = decayedEnd
        self.groups = groups
        rounding = stochasticRoundingSeed.map { seed in
            var random = SplitMix64(seed: seed ^ 0xB16_C0DE)
            return .stochastic(key: UInt32(truncatingIfNeeded: random.next() >> 32))
        } ?? .nearestEven

        func arena(_ role: String, _ tensor: (Parameter) -> Tensor, copy: Bool) throws -> Tensor {
            let flat = try backend.tensor(shape: [rows, Self.width], label: "parameter arena: \(role)")
            try backend.fill(flat, value: 0)
            if copy {
                for (parameter, elements) in layout { try backend.copy(tensor(parameter), into: try Self.view(flat, elements, parameter, role)) }
            }
            return flat
        }
        // One role at a time: a role's own tensors are released as soon as its views replace them.
        values = try arena("values", \.value, copy: true)
        for (p, elements) in layout {
            p.value = try Self.view(values, elements, p, "")
            p.compute = p.value
        }
        gradients = try arena("gradients", \.gradient, copy: false)
        for (p, elements) in layout { p.gradient = try Self.view(gradients, elements, p, "gradient") }
        firstMoments = try arena("adam m", \.firstMoment, copy: true)
        for (p, elements) in layout { p.firstMoment = try Self.view(firstMoments, elements, p, "adam m") }
        secondMoments = try arena("adam v", \.secondMoment, copy: true)
        for (p, elements) in layout { p.secondMoment = try Self.view(secondMoments, elements, p, "adam v") }
        if computeType == .bf16 && decayedEnd > 0 {
            let mirror = try backend.tensor(shape: [(decayedEnd + Self.width - 1) / Self.width, Self.width], dtype: .bf16,
                                            label: "parameter arena: bf16 compute copy")
            for (p, elements) in layout where p.decays { p.compute = try Self.view(mirror, elements, p, "bf16") }
            computeValues = mirror
        } else {
            computeValues = nil
        }
        try refreshCompute()
    }

    /// Rounds the decayed span of the fp32 values into the bf16 compute copy (as ``rounding`` says);
    /// nothing in fp32. The trainer calls it after every update.
    public func refreshCompute() throws {
        guard let computeValues else { return }
        let rows = computeValues.shape[0]
        try values.backend.convert(try values.rows(0..<rows), into: computeValues, rounding: rounding)
    }

    /// `parameter`'s elements of a flat role tensor, in the parameter's shape.
    static func view(_ flat: Tensor, _ elements: Range<Int>, _ parameter: Parameter, _ role: String) throws -> Tensor {
        Tensor(shape: parameter.value.shape, dtype: flat.dtype, storage: flat.storage, offset: flat.offset + elements.lowerBound, backend: flat.backend,
               label: role.isEmpty ? parameter.name : "\(parameter.name) \(role)")
    }

    /// Elements `range` of a flat role tensor as one vector.
    func span(_ flat: Tensor, _ range: Range<Int>) -> Tensor {
        Tensor(shape: [range.count], storage: flat.storage, offset: flat.offset + range.lowerBound, backend: flat.backend, label: flat.label)
    }

    public var count: Int { values.count }

    /// Where `parameters` lie in the arena, in as few spans as they allow (a parameter's alignment
    /// padding, zeros, joins it to the next).
    public func spans(of parameters: [Parameter]) -> [Range<Int>] {
        let ranges = layout.filter { entry in parameters.contains { $0 === entry.parameter } }.map(\.elements)
            .sorted { $0.lowerBound < $1.lowerBound }
        var spans: [Range<Int>] = []
        for range in ranges {
            if let last = spans.last, (last.upperBound + Self.alignment - 1) / Self.alignment * Self.alignment >= range.lowerBound {
                spans[spans.count - 1] = last.lowerBound..<range.upperBound
            } else {
                spans.append(range)
            }
        }
        return spans
    }

    public func zeroGradients() throws {
        try gradients.backend.fill(gradients, value: 0)
    }

    /// The global L2 norm of every gradient: fp32 sums of squares per arena row, added in fp64.
    public func gradientNorm() throws -> Float {
        Float(try rowSumsOfSquares(gradients).reduce(0.0) { $0 + Double($1) }.squareRoot())
    }

    /// One AdamW step of the whole arena with the gradients clipped to `clip` (the global norm; 0 is
    /// no clipping: the update reads them times `clip / norm`, the stored gradients stay as they are):
    /// one AdamW call per group, the decayed ones with the step's weight decay, the rest without,
    /// each at its learning-rate scale.
    public func update(_ step: AdamWStep, gradientNorm: Float, clip: Float) throws {
        let backend = values.backend
        var step = step
        if clip > 0, gradientNorm > clip { step.gradientScale *= clip / gradientNorm }
        for (range, decays, learningRateScale) in groups {
            var spanStep = step
            spanStep.learningRate *= learningRateScale
            if !decays { spanStep.weightDecay = 0 }
            try backend.adamw(span(values, range), gradient: span(gradients, range), firstMoment: span(firstMoments, range),
                              secondMoment: span(secondMoments, range), spanStep)
        }
    }

    /// The first parameter whose values hold a NaN or an infinity, or are so large their sum of
    /// squares overflows fp32 (an exploding run): one row reduction over the arena.
    public func firstNonFinite() throws -> String? {
        let sums = try rowSumsOfSquares(values)
        guard let row = sums.firstIndex(where: { !$0.isFinite }) else { return nil }
        // The row's parameters: the first whose own sum of squares is not finite.
        let rowElements = (row * Self.width)..<((row + 1) * Self.width)
        let candidates = layout.filter { $0.elements.overlaps(rowElements) }.map(\.parameter)
        for parameter in candidates where !(try Optimizer.sumOfSquares(parameter.value)).isFinite { return parameter.name }
        return candidates.first?.name
    }

    func rowSumsOfSquares(_ flat: Tensor) throws -> [Float] {
        let backend = flat.backend
        let sums = try backend.tensor(shape: [flat.shape[0]], label: "arena row sums of squares")
        try backend.reduceRows(.sumSquares, flat, into: sums)
        return try sums.toArray()
    }
}
