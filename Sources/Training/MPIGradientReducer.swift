import Foundation
import ProcessGroup
import Tensor

/// The reducer of a data-parallel job under `mpirun`: the gradient arena (one flat buffer, seen in
/// host memory: in place on the CPU backend and on devices that share host memory, mapped across
/// otherwise) and the step's summed values are all-reduced, so every rank holds the step's whole
/// gradient, in the same order of additions, and takes the same update.
public final class MPIGradientReducer: GradientReducer {
    public let world: MPIWorld

    public init(world: MPIWorld) {
        self.world = world
    }

    public var worldSize: Int { world.size }
    public var rank: Int { world.rank }

    public func reduce(gradients: Tensor, parts: inout StepParts) throws {
        precondition(gradients.dtype == .f32, "the gradient arena is fp32")
        try gradients.backend.withHostBytes(gradients, writing: true) { bytes in
            try world.allReduceSum(bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: gradients.count)
        }
        var values = parts.summedValues
        try world.allReduceSum(&values)
        parts.summedValues = values
    }
}
