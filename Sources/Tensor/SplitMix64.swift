import Foundation

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny seedable generator whose whole state is one
/// UInt64, so a checkpoint can store it and a resumed run draws the same numbers. The one random
/// generator of kdgpu: data order, sampling, fresh weights and test inputs all draw from it.
public struct SplitMix64: RandomNumberGenerator, Equatable, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in 0..<bound (rejection sampling, so no modulo bias; bound > 0).
    public mutating func uniform(below bound: Int) -> Int {
        precondition(bound > 0)
        let bound = UInt64(bound)
        let limit = UInt64.max - UInt64.max % bound  // accept draws below the largest multiple of bound
        while true {
            let draw = next()
            if draw < limit { return Int(draw % bound) }
        }
    }

    /// A uniform double in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// A standard normal sample (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return Float((-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}
