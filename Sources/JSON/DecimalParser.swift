#if canImport(Glibc)
import Glibc
#endif

/// Decimal text to `Double`, exactly as `strtod` rounds it, without allocating.
///
/// Accepts an optional sign, digits with an optional decimal point, and an
/// optional exponent (`-12`, `3.25`, `.5`, `1e-7`). Refuses everything else,
/// including `inf`, `nan`, hex and surrounding spaces: callers name the cell
/// in their error instead.
package enum DecimalParser {
    private static let exactPowers: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// The value of `text`, or nil when it is not a decimal number.

    package static func parse(_ text: UnsafeRawBufferPointer) -> Double? {
        parseBytes(text)
    }


    static func parseBytes(_ text: UnsafeRawBufferPointer) -> Double? {
        let n = text.count
        guard n > 0 else { return nil }
        var i = 0
        var negative = false
        if text[0] == UInt8(ascii: "-") || text[0] == UInt8(ascii: "+") {
            negative = text[0] == UInt8(ascii: "-")
            i = 1
        }
        // The common case first: at most 19 characters of digits with perhaps a point, so at
        // most 19 digits, which a UInt64 holds whole (no digit is dropped, no count is kept):
        // the same mantissa and exponent as below, so the same value.
        if n <= 19 {
            var j = i
            var mantissa: UInt64 = 0
            while j < n, text[j] &- UInt8(ascii: "0") < 10 {
                mantissa = mantissa &* 10 &+ UInt64(text[j] &- UInt8(ascii: "0"))
                j += 1
            }
            var decimals = 0
            var digits = j - i
            if j < n, text[j] == UInt8(ascii: ".") {
                j += 1
                let start = j
                while j < n, text[j] &- UInt8(ascii: "0") < 10 {
                    mantissa = mantissa &* 10 &+ UInt64(text[j] &- UInt8(ascii: "0"))
                    j += 1
                }
                decimals = j - start
                digits += decimals
            }
            if j == n, digits > 0, mantissa <= 1 << 53 {
                let value = decimals == 0 ? Double(mantissa) : Double(mantissa) / exactPowers[decimals]
                return negative ? -value : value
            }
        }
        var mantissa: UInt64 = 0
        var digits = 0  // significant digits taken into the mantissa
        var sawDigit = false
        var exponent = 0
        var truncated = false
        while i < n, text[i] &- UInt8(ascii: "0") < 10 {
            sawDigit = true
            let d = UInt64(text[i] &- UInt8(ascii: "0"))
            if digits < 19 {
                if mantissa != 0 || d != 0 { digits += 1 }
                mantissa = mantissa &* 10 &+ d
            } else {
                exponent += 1
                truncated = true
            }
            i += 1
        }
        if i < n, text[i] == UInt8(ascii: ".") {
            i += 1
            while i < n, text[i] &- UInt8(ascii: "0") < 10 {
                sawDigit = true
                let d = UInt64(text[i] &- UInt8(ascii: "0"))
                if digits < 19 {
                    if mantissa != 0 || d != 0 { digits += 1 }
                    mantissa = mantissa &* 10 &+ d
                    exponent -= 1
                } else {
                    truncated = true
                }
                i += 1
            }
        }
        guard sawDigit else { return nil }
        if i < n, text[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            var expNegative = false
            if i < n, text[i] == UInt8(ascii: "-") || text[i] == UInt8(ascii: "+") {
                expNegative = text[i] == UInt8(ascii: "-")
                i += 1
            }
            guard i < n, text[i] &- UInt8(ascii: "0") < 10 else { return nil }
            var e = 0
            while i < n, text[i] &- UInt8(ascii: "0") < 10 {
                if e < 100_000 { e = e * 10 + Int(text[i] &- UInt8(ascii: "0")) }
                i += 1
            }
            exponent += expNegative ? -e : e
        }
        guard i == n else { return nil }
        // Clinger's fast path: both operands exact, so one rounding, as strtod.
        if !truncated, mantissa <= 1 << 53, exponent >= -22, exponent <= 22 {
            var value = Double(mantissa)
            value = exponent < 0 ? value / exactPowers[-exponent] : value * exactPowers[exponent]
            return negative ? -value : value
        }
        return slowPath(text)
    }

    private static func slowPath(_ text: UnsafeRawBufferPointer) -> Double? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: text.count + 1) { buffer in
            for (i, b) in text.enumerated() { buffer[i] = CChar(bitPattern: b) }
            buffer[text.count] = 0
            return strtod(buffer.baseAddress!, nil)
        }
    }

    /// The value of `text`, or nil when it is not a decimal number.
    package static func parse(_ text: some StringProtocol) -> Double? {
        var s = String(text)
        return s.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }
}
