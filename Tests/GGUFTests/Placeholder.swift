import XCTest

final class GGUFTestsPlaceholder: XCTestCase {}
