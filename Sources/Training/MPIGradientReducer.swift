import Foundation
import ProcessGroup
import Tensor

/// The reducer of a data-parallel job under `mpirun`: the gradient arena (one flat buffer, brought
/// to the host when it lives on a device) and the step's summed values are all-reduced, so every
/// rank holds the step's whole gradient, in the same order of additions, and takes the same update.
public final class MPIGradientReducer: GradientReducer {
    public let world: MPIWorld
    /// The host copy of the arena's gradients, made once.
    private var host: [Float] = []

    public init(world: MPIWorld) {
        self.world = world
    }

    public var worldSize: Int { world.size }
    public var rank: Int { world.rank }

    public func reduce(gradients: Tensor, parts: inout StepParts) throws {
        let backend = gradients.backend
        if host.count != gradients.count { host = [Float](repeating: 0, count: gradients.count) }
        try host.withUnsafeMutableBytes { try backend.downloadBytes(gradients, into: $0) }
        try host.withUnsafeMutableBufferPointer { try world.allReduceSum($0.baseAddress!, count: $0.count) }
        try host.withUnsafeBytes { try backend.uploadBytes($0, to: gradients) }
        var values = parts.summedValues
        try world.allReduceSum(&values)
        parts.summedValues = values
    }
}
