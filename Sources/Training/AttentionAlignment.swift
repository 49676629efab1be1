import Foundation
import Losses
import Models
import Tensor

/// Attention alignment (Align-to-Distill): the student's attention maps of chosen blocks are mixed
/// by a learned Attention Alignment Module into one map per teacher head of the chosen teacher
/// blocks, and `weight * decay^epoch * (1/B) sum over sequences and teacher heads of
/// KL(softmax(vec A_t) || softmax(vec Ahat))` joins the loss. Each softmax runs over the causal
/// `t_q x t_k` positions of one map (the maps' values as they are: they are probabilities already);
/// the positions a causal query does not see are left out (set to -inf before the fused loss kernel,
/// which runs with one row per (teacher head, sequence)).
///
/// The module is a 1x1 convolution with bias, `Ahat_j = sum_i W[j, i] A_s_i + b_j`, stored as one
/// matrix [Ct, Cs + 1] whose last column is the bias: the stacked student maps carry a row of ones,
/// so one GEMM gives the maps with their bias and one GEMM gives the gradient of both. It is
/// trained with AdamW next to the student.
///
/// Shapes: B sequences of T tokens, P = T * T positions per map; Cs = student blocks x student heads
/// and Ct = teacher blocks x teacher heads channels.
public final class AttentionAlignment {
    /// The student blocks whose maps are mixed and the teacher blocks whose heads are targets, increasing.
    public let studentBlocks: [Int]
    public let teacherBlocks: [Int]
    public let studentHeads: Int
    public let teacherHeads: Int
    public let weight: Float
    /// The weight is multiplied by `decay^epoch` (epoch 0 first; A2D decays by 0.9 per epoch).
    public let decay: Float
    /// `attn_align.weight` [Ct, Cs + 1]: the mixing weights, the bias as the last column.
    public let module: Parameter

    public var studentChannels: Int { studentBlocks.count * studentHeads }
    public var teacherChannels: Int { teacherBlocks.count * teacherHeads }

    static let moduleName = "attn_align.weight"

    /// The module starts like PyTorch's 1x1 convolution: weights and bias uniform in ±1/sqrt(Cs).
    /// - Parameter pairs: (student block, teacher block) pairs (``BlockPairs``); they only name the
    ///   blocks: every student map of the named student blocks feeds every head of the named teacher blocks.
    public init(pairs: [(student: Int, teacher: Int)], studentHeads: Int, teacherHeads: Int, weight: Float, decay: Float,
                seed: UInt64, backend: any Backend) throws {
        studentBlocks = Array(Set(pairs.map(\.student))).sorted()
        teacherBlocks = Array(Set(pairs.map(\.teacher))).sorted()
        self.studentHeads = studentHeads
        self.teacherHeads = teacherHeads
        self.weight = weight
        self.decay = decay
        let (cs, ct) = (studentBlocks.count * studentHeads, teacherBlocks.count * teacherHeads)
        var random = SplitMix64(seed: seed ^ 0xA2D)
        let bound = 1 / Float(cs).squareRoot()
        let values = (0..<(ct * (cs + 1))).map { _ in Float(2 * random.unit() - 1) * bound }
        module = try Parameter(name: Self.moduleName, shape: [ct, cs + 1], values: values, backend: backend)
    }

    /// Device bytes one micro-batch of B x T tokens adds: the teacher's kept maps, the stacked
    /// student maps and their gradient, the aligned maps and the stacked teacher maps, and the map
    /// gradients handed to the student's backward.
    public func bytesPerMicroBatch(batch: Int, length: Int) -> Int {
        let map = 4 * batch * length * length
        return map * (teacherChannels + 2 * (studentChannels + 1) + 2 * teacherChannels + studentChannels)
    }

    /// Refuses, with what to change, a configuration whose maps do not fit the backend's memory budget
    /// next to what it holds already.
    public func requireFits(batch: Int, length: Int, backend: any Backend) throws {
        let needed = bytesPerMicroBatch(batch: batch, length: length)
        let free = backend.ledger.budgetBytes - backend.ledger.allocatedBytes
        guard needed <= free else {
            throw TrainingError.config("attn_align_layers: the attention maps of \(studentBlocks.count) student and \(teacherBlocks.count) teacher blocks "
                                       + "at \(batch) x \(length) tokens take \(formatBytes(needed)), but \(formatBytes(max(0, free))) of the "
                                       + "\(formatBytes(backend.ledger.budgetBytes)) budget on \(backend.name) is free; align fewer blocks "
                                       + "(--attn-align-layers), use a smaller --batch-size or --seq-len, or raise \(MemoryLedger.budgetEnvironmentVariable)")
        }
    }

    /// The weight in data epoch `epoch` (0-based).
    public func weight(atEpoch epoch: Int) -> Float { weight * Float(pow(Double(decay), Double(epoch))) }

    /// Adds the alignment loss's gradients (times `gradOutput`) to the module and returns its value
    /// (before the weight) and dL/d(attention probabilities) per student block, for
    /// ``StudentModel/backward(finalHiddenGradient:hiddenGradients:attentionGradients:)``.
    /// - Parameters:
    ///   - studentMaps: per student block, its attention probabilities [B, H_s, T, T].
    ///   - teacherMaps: per teacher block, [B, H_t, T, T].
    ///   - gradOutput: the factor of the loss in the objective (the step's weight of this micro-batch times the alignment weight).
    public func apply(studentMaps: [Int: Tensor], teacherMaps: [Int: Tensor], gradOutput: Float) throws -> (value: Float, mapGradients: [Int: Tensor]) {
        let backend = module.value.backend
        guard let first = studentMaps[studentBlocks[0]], first.rank == 3 || first.rank == 4 else {
            throw missingMaps("student block \(studentBlocks[0])")
        }
        let length = first.shape[first.rank - 1]
        let batch = first.count / (studentHeads * length * length)
        let (positions, cs, ct) = (length * length, studentChannels, teacherChannels)

        // Stack: student [Cs + 1, B, P] (the last channel all ones, for the bias), teacher [Ct, B, P].
        let stackedStudent = try backend.tensor(shape: [cs + 1, batch * positions], label: "stacked student attention maps")
        for (i, block) in studentBlocks.enumerated() {
            guard let map = studentMaps[block], map.count == batch * studentHeads * positions else {
                throw missingMaps("student block \(block)")
            }
            try backend.transpose12(map.reshaped([1, batch, studentHeads, positions]),
                                    into: stackedStudent.rows((i * studentHeads)..<((i + 1) * studentHeads)).reshaped([1, studentHeads, batch, positions]))
        }
        try backend.fill(stackedStudent.rows(cs..<(cs + 1)), value: 1)
        let stackedTeacher = try backend.tensor(shape: [ct, batch * positions], label: "stacked teacher attention maps")
        for (i, block) in teacherBlocks.enumerated() {
            guard let map = teacherMaps[block], map.count == batch * teacherHeads * positions else {
                throw missingMaps("teacher block \(block)")
            }
            try backend.transpose12(map.reshaped([1, batch, teacherHeads, positions]),
                                    into: stackedTeacher.rows((i * teacherHeads)..<((i + 1) * teacherHeads)).reshaped([1, teacherHeads, batch, positions]))
        }

        // Ahat [Ct, B * P] = W [Ct, Cs + 1] x stacked student; both sides -inf where a query does not see the key.
        let aligned = try backend.tensor(shape: [ct, batch * positions], label: "aligned attention maps")
        try backend.gemm(module.value, stackedStudent, into: aligned)
        try backend.causalMask(aligned.reshaped([ct * batch * length, length]), queries: length, value: -.infinity)
        try backend.causalMask(stackedTeacher.reshaped([ct * batch * length, length]), queries: length, value: -.infinity)

        // One row per (teacher head, sequence): KL(softmax(teacher row) || softmax(aligned row)), summed over
        // rows and divided by B; the gradient replaces the aligned maps (0 at the masked positions).
        let loss = DistillationLoss(divergence: .forwardKL, temperature: 1, scaleBySquaredTemperature: false, reduction: .sum)
        let result = try loss(student: aligned.reshaped([ct * batch, positions]), teacher: .dense(stackedTeacher.reshaped([ct * batch, positions])),
                              labels: nil, gradient: .inPlace, gradOutput: gradOutput / Float(batch))

        // dW += dAhat stackedᵀ; d stacked = Wᵀ dAhat, unstacked into [B, H_s, T, T] per student block.
        try backend.gemm(aligned, stackedStudent, into: module.gradient, transposeB: true, beta: 1)
        let stackedGradient = try backend.tensor(shape: [cs + 1, batch * positions], label: "stacked student map gradients")
        try backend.gemm(module.value, aligned, into: stackedGradient, transposeA: true)
        var mapGradients: [Int: Tensor] = [:]
        for (i, block) in studentBlocks.enumerated() {
            let gradient = try backend.tensor(shape: [batch, studentHeads, length, length], label: "attention map gradient \(block)")
            try backend.transpose12(stackedGradient.rows((i * studentHeads)..<((i + 1) * studentHeads)).reshaped([1, studentHeads, batch, positions]),
                                    into: gradient.reshaped([1, batch, studentHeads, positions]))
            mapGradients[block] = gradient
        }
        return (result.loss / Float(batch), mapGradients)
    }

    private func missingMaps(_ which: String) -> ModelError {
        .badInput("attention alignment: the attention maps of \(which) are missing or not [B, \(which.hasPrefix("student") ? studentHeads : teacherHeads), T, T]")
    }
}
