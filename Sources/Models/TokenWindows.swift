import Foundation
import Tensor

/// Consecutive windows of `length` tokens (the last may be shorter, but has at least 2).
public func tokenWindows(_ tokens: [Int32], length: Int) -> [[Int32]] {
    stride(from: 0, to: tokens.count, by: length)
        .map { Array(tokens[$0..<min(tokens.count, $0 + length)]) }
        .filter { $0.count >= 2 }
}
