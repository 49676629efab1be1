import XCTest

final class LossTestsPlaceholder: XCTestCase {}
