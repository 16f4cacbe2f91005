/// Writes compact JSON into a byte buffer. Non-finite numbers, which JSON
/// cannot express, are written as `null`.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// Empties the buffer, keeping its capacity (a writer reused without allocating).
    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: raw("null")
        case .bool(let b): raw(b ? "true" : "false")
        case .number(let n): number(n)
        case .string(let s): string(s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            for (i, element) in a.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                self.value(element)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o):
            bytes.append(UInt8(ascii: "{"))
            for i in 0..<o.count {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                string(o.keys[i])
                bytes.append(UInt8(ascii: ":"))
                self.value(o.values[i])
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    public mutating func raw(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    /// Bytes that are already JSON (or part of it), as they are.
    public mutating func raw(_ text: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: text)
    }

    public mutating func reserveCapacity(_ count: Int) { bytes.reserveCapacity(count) }

    /// A whole number, digit by digit.
    public mutating func integer(_ n: Int) {
        if n < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = n.magnitude
        var divisor: UInt = 1
        while divisor <= magnitude / 10 { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(truncatingIfNeeded: magnitude / divisor % 10) &+ 0x30)
            divisor /= 10
        }
    }

    /// `numberText(n)`, written in place: the shortest digits come from the standard library's
    /// `write(to:)` as ASCII bytes, so no String is made (one was, per number, past 15 characters).
    public mutating func number(_ n: Double) {
        guard n.isFinite else { return raw("null") }
        if n == n.rounded(), abs(n) < 1e15 { return integer(Int(n)) }
        var sink = ASCIISink()
        swap(&sink.bytes, &bytes)
        n.write(to: &sink)
        swap(&sink.bytes, &bytes)
    }

    /// Takes the digits `Double.write(to:)` hands over as ASCII (`_writeASCII`) without a String.
    private struct ASCIISink: TextOutputStream {
        var bytes: [UInt8] = []
        mutating func write(_ string: String) { bytes.append(contentsOf: string.utf8) }
        mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) { bytes.append(contentsOf: buffer) }
    }

    /// The JSON text of `value`.
    public static func text(_ value: JSONValue) -> String {
        var writer = JSONWriter()
        writer.value(value)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// Shortest text that reads back as the same double; integers without ".0".
    public static func numberText(_ n: Double) -> String {
        guard n.isFinite else { return "null" }
        if n == n.rounded(), abs(n) < 1e15 { return String(Int64(n)) }
        return n.description
    }

    public mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0..<0x20:
                let hex = String(b, radix: 16)
                raw("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
