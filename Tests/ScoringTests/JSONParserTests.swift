import Foundation
import JSON
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let value = try JSONValue.parse(#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}} "#)
        #expect(value["a"] == .array([.number(1), .number(-2500), .bool(true), .bool(false), .null]))
        #expect(value["b"]?["c"] == .string("x\"\\/\u{8}\u{c}\n\r\té😀"))
    }

    @Test func keepsMemberOrderAndTheLastDuplicate() throws {
        guard case .object(let o) = try JSONValue.parse(#"{"z":1,"a":2,"z":3}"#) else { Issue.record("not an object"); return }
        #expect(o.keys == ["z", "a", "z"])
        #expect(o["z"] == .number(3))
    }

    @Test(arguments: [
        ("", 0, "unexpected end of input"),
        ("{", 1, "expected a string key"),
        (#"{"a" 1}"#, 5, "expected ':'"),
        (#"{"a":1,}"#, 7, "expected a string key"),
        ("[1 2]", 3, "expected ',' or ']'"),
        ("01", 1, "leading zeros"),
        ("1.", 2, "expected a digit after '.'"),
        ("-", 1, "expected a digit after '-'"),
        ("1e", 2, "exponent"),
        ("tru", 0, "invalid literal"),
        (#""abc"#, 4, "unterminated string"),
        ("\"a\u{1}\"", 2, "control character"),
        (#""\x""#, 2, "invalid escape"),
        (#""\ud800""#, 7, "unpaired UTF-16 surrogate"),
        ("[1] x", 4, "after the JSON value"),
        ("NaN", 0, "expected a value"),
    ])
    func namesTheByteOfEachError(text: String, offset: Int, reason: String) {
        #expect {
            try JSONValue.parse(text)
        } throws: { error in
            guard let e = error as? JSONError else { return false }
            return e.offset == offset && e.reason.contains(reason)
        }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: JSONError.self) { try JSONValue.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONError.self) { try JSONValue.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }  // an encoded surrogate
    }

    @Test func refusesDeepNestingWithoutCrashing() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONError.self) { try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect((try? JSONValue.parse(ok)) != nil)
    }

    @Test func survivesRandomBytes() {
        var random = SystemRandomNumberGenerator()
        let seeds = [#"{"amount": 12000.5, "region": "north", "x": [1, {"y": null}]}"#]
        for _ in 0..<20_000 {
            let bytes = mutated(Array(seeds[0].utf8), edits: 1...4, &random)
            // Either a value or a JSONError; never a crash.
            _ = try? JSONValue.parse(bytes)
        }
    }

    @Test func numbersRoundTripThroughTheWriter() throws {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let x = Double(bitPattern: random.next() & 0x7FEF_FFFF_FFFF_FFFF) * (Bool.random() ? 1 : -1)
            let text = JSONWriter.numberText(x)
            #expect(try JSONValue.parse(text) == .number(x), "\(x) → \(text)")
        }
    }

    /// `number` writes in place what `numberText` returns: probabilities, whole numbers (no ".0"),
    /// negative zero, the largest and smallest magnitudes, and non-finite values as null.
    @Test func numbersWrittenInPlaceMatchTheirText() {
        var random = SystemRandomNumberGenerator()
        var values: [Double] = [0, -0.0, 1, -1, 0.1, 1e15, 1e15 - 1, -1e15, 1e16, 123456789012345678, .pi, .ulpOfOne,
                                .leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .infinity, -.infinity, .nan]
        for _ in 0..<20_000 { values.append(Double.random(in: 0...1, using: &random)) }
        for _ in 0..<20_000 { values.append(Double(bitPattern: random.next()) ) }
        for x in values {
            var w = JSONWriter()
            w.raw("[")
            w.number(x)
            w.raw("]")
            #expect(w.string == "[" + JSONWriter.numberText(x) + "]", "\(x)")
        }
    }
}

@Suite struct DecimalParserTests {
    @Test func agreesWithStrtod() {
        var random = SystemRandomNumberGenerator()
        var texts = ["0", "-0", "1", "0.1", "123456789012345678901234567890", "1e308", "1e309", "4.9e-324", "2.2250738585072014e-308",
                     "9007199254740993", "0.30000000000000004", ".5", "5.", "+7", "1E+2", "00012"]
        for _ in 0..<20_000 {
            let digits = String(random.next() % 100_000_000_000_000_000, radix: 10)
            let exponent = Int.random(in: -330...310, using: &random)
            texts.append(Bool.random() ? "\(digits)e\(exponent)" : "\(digits.prefix(9)).\(digits.dropFirst(9))")
        }
        // Short ones (19 characters or fewer, the fast path): integers, decimals, signs, leading
        // and trailing zeros, points at either end, and past 2^53.
        for _ in 0..<20_000 {
            let length = Int.random(in: 1...18, using: &random)
            var text = String((0..<length).map { _ in Character(String(random.next() % 10)) })
            if Bool.random(using: &random) { text.insert(".", at: text.index(text.startIndex, offsetBy: Int.random(in: 0...length, using: &random))) }
            if random.next() % 4 == 0 { text = (Bool.random(using: &random) ? "-" : "+") + text }
            texts.append(text)
        }
        texts += ["9007199254740992", "9007199254740993", "18446744073709551615", "0.0000000000000000001", "-.5", "+0.", "1234567890.12345678"]
        for text in texts {
            let expected = strtod(text, nil)
            #expect(DecimalParser.parse(text) == expected, "\(text)")
        }
    }

    @Test(arguments: ["", " 1", "1 ", "inf", "nan", "NaN", "-", ".", "e5", "1e", "0x10", "1,5", "1.2.3", "--1"])
    func refusesWhatIsNotADecimal(text: String) {
        #expect(DecimalParser.parse(text) == nil)
    }
}
