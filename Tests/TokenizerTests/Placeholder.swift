import XCTest

final class TokenizerTestsPlaceholder: XCTestCase {}
