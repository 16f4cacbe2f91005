#if canImport(Glibc)
import Glibc
#endif

/// A JSON document parsed into a flat array of nodes ("tape", after simdjson):
/// values are byte ranges into the input, containers know their child count
/// and where they end, and the node array is reused from document to document,
/// so reading a request allocates nothing per value. Validation is the same as
/// `JSONParser`'s (it runs the same grammar), and errors name the byte.
///
/// The input bytes must outlive the tape's use: nodes point into them.
package struct JSONTape {
    package enum Kind: UInt8 {
        case null, `false`, `true`, number, string, array, object
    }

    package struct Node {
        package var kind: Kind
        /// For a string, whether it has escapes (its bytes then need decoding).
        package var escaped: Bool
        /// Byte range: strings without the quotes; numbers and literals as written;
        /// containers from the opening to the closing bracket.
        package var start: Int32
        package var end: Int32
        /// Containers: number of children (an object's are key, value, key, value…).
        package var count: Int32
        /// The index of the node after this value and its children.
        package var next: Int32
    }

    package private(set) var nodes: [Node] = []
    private var stack: [Int32] = []
    private var bytes = UnsafeRawBufferPointer(start: nil, count: 0)

    package init() {
        nodes.reserveCapacity(256)
        stack.reserveCapacity(32)
    }

    /// Parses `input`, replacing the previous document.
    package mutating func parse(_ input: UnsafeRawBufferPointer) throws(JSONError) {
        nodes.removeAll(keepingCapacity: true)
        stack.removeAll(keepingCapacity: true)
        bytes = input
        var i = skipWhitespace(0)
        i = try value(at: i, depth: 0)
        i = skipWhitespace(i)
        if i != input.count { throw JSONError(offset: i, reason: "unexpected \(describeByte(input[i])) after the JSON value") }
    }

    // MARK: - Reading

    /// The root node (index 0).
    package var root: Int { 0 }

    package func kind(_ node: Int) -> Kind { nodes[node].kind }

    /// Whether a string node has escapes (its raw bytes are not its text).
    package func isEscaped(_ node: Int) -> Bool { nodes[node].escaped }

    /// Children of an array, or the values of an object, in order.
    package func elements(_ node: Int) -> [Int] {
        var out: [Int] = []
        forEachElement(node) { out.append($0) }
        return out
    }

    package func forEachElement(_ node: Int, _ body: (Int) -> Void) {
        let n = nodes[node]
        var child = node + 1
        let step = n.kind == .object ? 2 : 1
        var seen: Int32 = 0
        while seen < n.count {
            if step == 2 {
                body(Int(nodes[child].next))  // the value after the key
                child = Int(nodes[Int(nodes[child].next)].next)
            } else {
                body(child)
                child = Int(nodes[child].next)
            }
            seen += Int32(step)
        }
    }

    /// Calls `body(keyNode, valueNode)` for each member of an object.
    package func forEachMember(_ node: Int, _ body: (Int, Int) -> Void) {
        let n = nodes[node]
        var key = node + 1
        var seen: Int32 = 0
        while seen < n.count {
            let value = Int(nodes[key].next)
            body(key, value)
            key = Int(nodes[value].next)
            seen += 2
        }
    }

    /// The value of member `name` of an object (the last, if repeated).
    package func member(_ node: Int, _ name: StaticString) -> Int? {
        guard nodes[node].kind == .object else { return nil }
        let length = Int32(name.utf8CodeUnitCount)
        var found: Int?
        nodes.withUnsafeBufferPointer { nodes in
            var key = node + 1
            for _ in 0..<(nodes[node].count / 2) {
                let k = nodes[key]
                let value = Int(k.next)
                if k.end - k.start == length && !k.escaped
                    && memcmp(bytes.baseAddress! + Int(k.start), name.utf8Start, Int(length)) == 0
                {
                    found = value
                }
                key = Int(nodes[value].next)
            }
        }
        return found
    }

    /// The raw bytes of a node (a string's without quotes and undecoded).
    package func rawBytes(_ node: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Int(nodes[node].start)..<Int(nodes[node].end)])
    }

    /// A number node's value.
    package func number(_ node: Int) -> Double? {
        guard nodes[node].kind == .number else { return nil }
        return DecimalParser.parse(rawBytes(node))
    }

    /// A string node's decoded text.
    package func string(_ node: Int) -> String? {
        guard nodes[node].kind == .string else { return nil }
        if !nodes[node].escaped { return String(decoding: rawBytes(node), as: UTF8.self) }
        return try? JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[Int(nodes[node].start - 1)..<Int(nodes[node].end + 1)]))
            .stringValue
    }

    /// The node as a `JSONValue` (for error messages and rare paths).
    package func value(_ node: Int) -> JSONValue {
        (try? JSONValue.parse(text(node))) ?? .null
    }

    /// The node's JSON text as it was sent (a string with its quotes).
    package func text(_ node: Int) -> UnsafeRawBufferPointer {
        let n = nodes[node]
        let start = n.kind == .string ? Int(n.start) - 1 : Int(n.start)
        let end = n.kind == .string ? Int(n.end) + 1 : Int(n.end)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// An array's first element; each element's `next` is the one after it.
    package func firstElement(_ array: Int) -> Int { array + 1 }

    /// The node after `node` and its children: an array element's next sibling.
    package func next(_ node: Int) -> Int { Int(nodes[node].next) }

    /// Children of an array, values and keys of an object.
    package func count(_ node: Int) -> Int { Int(nodes[node].count) }

    // MARK: - Parsing

    private mutating func value(at start: Int, depth: Int) throws(JSONError) -> Int {
        guard start < bytes.count else { throw JSONError(offset: start, reason: "unexpected end of input, expected a value") }
        let b = bytes[start]
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < JSONParser.maximumDepth else {
                throw JSONError(offset: start, reason: "nesting deeper than \(JSONParser.maximumDepth) levels")
            }
            let isObject = b == UInt8(ascii: "{")
            let index = nodes.count
            nodes.append(Node(kind: isObject ? .object : .array, escaped: false, start: Int32(start), end: 0, count: 0, next: 0))
            var i = skipWhitespace(start + 1)
            var count: Int32 = 0
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            if i < bytes.count && bytes[i] == close {
                i += 1
            } else {
                while true {
                    if isObject {
                        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
                            throw JSONError(offset: i, reason: "expected a string key in object")
                        }
                        i = try string(at: i)
                        i = skipWhitespace(i)
                        guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else {
                            throw JSONError(offset: i, reason: "expected ':' after object key")
                        }
                        i = skipWhitespace(i + 1)
                        count += 1
                    }
                    i = try value(at: i, depth: depth + 1)
                    count += 1
                    i = skipWhitespace(i)
                    guard i < bytes.count else {
                        throw JSONError(offset: i, reason: isObject ? "unexpected end of input inside an object" : "unexpected end of input inside an array")
                    }
                    if bytes[i] == UInt8(ascii: ",") {
                        i = skipWhitespace(i + 1)
                    } else if bytes[i] == close {
                        i += 1
                        break
                    } else {
                        throw JSONError(offset: i, reason: isObject ? "expected ',' or '}' after an object member" : "expected ',' or ']' after an array element")
                    }
                }
            }
            nodes[index].end = Int32(i)
            nodes[index].count = count
            nodes[index].next = Int32(nodes.count)
            return i
        case UInt8(ascii: "\""):
            return try string(at: start)
        case UInt8(ascii: "t"): return try literal("true", .true, at: start)
        case UInt8(ascii: "f"): return try literal("false", .false, at: start)
        case UInt8(ascii: "n"): return try literal("null", .null, at: start)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            var i = start
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, isDigit(bytes[i]) else { throw JSONError(offset: i, reason: "expected a digit after '-'") }
            if bytes[i] == UInt8(ascii: "0") {
                i += 1
                if i < bytes.count, isDigit(bytes[i]) { throw JSONError(offset: i, reason: "leading zeros are not allowed") }
            } else {
                while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard i < bytes.count, isDigit(bytes[i]) else { throw JSONError(offset: i, reason: "expected a digit after '.'") }
                while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            }
            if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard i < bytes.count, isDigit(bytes[i]) else { throw JSONError(offset: i, reason: "expected a digit in the exponent") }
                while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            }
            nodes.append(Node(kind: .number, escaped: false, start: Int32(start), end: Int32(i), count: 0, next: Int32(nodes.count + 1)))
            return i
        default:
            throw JSONError(offset: start, reason: "unexpected \(describeByte(b)), expected a value")
        }
    }

    private mutating func string(at start: Int) throws(JSONError) -> Int {
        var i = start + 1
        var escaped = false
        var ascii = true
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                if !ascii, String(validating: UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<i]), as: UTF8.self) == nil {
                    throw JSONError(offset: start + 1, reason: "string is not valid UTF-8")
                }
                if escaped {
                    // Validate the escapes with the full parser (rare: escapes in a scoring request).
                    do {
                        _ = try JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[start...i]))
                    } catch {
                        throw JSONError(offset: start + error.offset, reason: error.reason)
                    }
                }
                nodes.append(Node(kind: .string, escaped: escaped, start: Int32(start + 1), end: Int32(i), count: 0, next: Int32(nodes.count + 1)))
                return i + 1
            }
            if b == UInt8(ascii: "\\") {
                escaped = true
                i += 2
                continue
            }
            if b < 0x20 { throw JSONError(offset: i, reason: "control character \(describeByte(b)) in a string") }
            if b >= 0x80 { ascii = false }
            i += 1
        }
        throw JSONError(offset: bytes.count, reason: "unterminated string")
    }

    private mutating func literal(_ text: StaticString, _ kind: Kind, at start: Int) throws(JSONError) -> Int {
        let count = text.utf8CodeUnitCount
        guard start + count <= bytes.count,
            UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]).elementsEqual(UnsafeRawBufferPointer(start: text.utf8Start, count: count))
        else { throw JSONError(offset: start, reason: "invalid literal, expected \(text)") }
        nodes.append(Node(kind: kind, escaped: false, start: Int32(start), end: Int32(start + count), count: 0, next: Int32(nodes.count + 1)))
        return start + count
    }

    private func skipWhitespace(_ start: Int) -> Int {
        var i = start
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return i
            }
        }
        return i
    }

    private func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }
}

extension JSONValue {
    /// The text of a string value.
    package var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}
