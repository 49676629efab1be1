import Foundation
import GGUF
import XCTest

/// The checked-in fixtures (see bench/reference/make_gguf_fixtures.py and scripts/make_bad_gguf.py).
enum Fixtures {
    static let directory = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A fresh empty folder for files a test writes.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kdgpu-gguf-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Decodes the typed JSON form the Python scripts write, `{"type": "uint32", "value": "7"}`
/// (integers as strings so that u64 values above 2^63 survive), into a GGUFValue.
func decodeTypedValue(_ object: Any) throws -> GGUFValue {
    let entry = try XCTUnwrap(object as? [String: Any])
    let type = try XCTUnwrap(entry["type"] as? String)
    let value = try XCTUnwrap(entry["value"])
    func integer<T: FixedWidthInteger>(_: T.Type) throws -> T { try XCTUnwrap(T(try XCTUnwrap(value as? String))) }
    func double() throws -> Double { try XCTUnwrap((value as? NSNumber)?.doubleValue) }
    switch type {
    case "uint8": return .uint8(try integer(UInt8.self))
    case "int8": return .int8(try integer(Int8.self))
    case "uint16": return .uint16(try integer(UInt16.self))
    case "int16": return .int16(try integer(Int16.self))
    case "uint32": return .uint32(try integer(UInt32.self))
    case "int32": return .int32(try integer(Int32.self))
    case "uint64": return .uint64(try integer(UInt64.self))
    case "int64": return .int64(try integer(Int64.self))
    case "float32": return .float32(Float(try double()))
    case "float64": return .float64(try double())
    case "bool": return .bool(try XCTUnwrap(value as? Bool))
    case "string": return .string(try XCTUnwrap(value as? String))
    case "array":
        let elementTypeName = try XCTUnwrap(entry["elementType"] as? String)
        let elements = try XCTUnwrap(value as? [Any])
        if elementTypeName == "array" {
            return .array(.array, try elements.map(decodeTypedValue))
        }
        let elementType = try XCTUnwrap(GGUFValueType.allCases.first { "\($0)" == shortName(elementTypeName) })
        return .array(elementType, try elements.map { try decodeTypedValue(["type": elementTypeName, "value": $0]) })
    default:
        throw FixtureError(message: "unknown value type \(type) in fixture")
    }
}

/// The gguf package's type names ("uint32") in this module's short form ("u32").
private func shortName(_ name: String) -> String {
    let names = ["uint8": "u8", "int8": "i8", "uint16": "u16", "int16": "i16", "uint32": "u32", "int32": "i32",
                 "uint64": "u64", "int64": "i64", "float32": "f32", "float64": "f64"]
    return names[name] ?? name
}

/// Hex string to bytes.
func bytes(fromHex hex: String) -> [UInt8] {
    var result: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

/// Asserts two float arrays are equal bit for bit, reporting the first difference.
func assertBitwiseEqual(_ actual: [Float], _ expected: [Float], _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(label): element count", file: file, line: line)
    if let index = zip(actual, expected).enumerated().first(where: { $1.0.bitPattern != $1.1.bitPattern })?.offset {
        XCTFail("\(label): element \(index) is \(actual[index]), expected \(expected[index])", file: file, line: line)
    }
}
