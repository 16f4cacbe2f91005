import Synchronization

/// A complete HTTP/1.x request: head and body.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The request target as sent: path and query.
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// Whether the connection stays open after the response.
    public var keepAlive: Bool

    public init(method: String, target: String, minorVersion: Int = 1, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], keepAlive: Bool = true) {
        self.method = method
        self.target = target
        if let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) { path = target[..<q] } else { path = target[...] }
        self.minorVersion = minorVersion
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
    }

    /// The path without the query.
    public let path: Substring

    /// Query parameters (percent-decoding `%XX` and `+`).
    public var query: [String: String] {
        guard let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return [:] }
        var out: [String: String] = [:]
        for pair in target[target.utf8.index(after: q)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            out[percentDecode(parts[0])] = parts.count > 1 ? percentDecode(parts[1]) : ""
        }
        return out
    }
}

/// Header fields in arrival order; names compare case-insensitively.
///
/// They are kept in their wire form, `Name: value\r\n` per field, in one byte
/// array: adding a field appends to it, a lookup scans it, and writing a
/// response copies it whole, so no field costs an allocation of its own.
/// The names a server looks up on every request (`Common`) are the exception:
/// adding a field notes where the first value of each is, so finding one scans nothing.
public struct HTTPHeaders: Sendable, Sequence {
    /// `Name: value\r\n` for each field. Names hold no `:`, CR or LF and values no CR or LF.
    package private(set) var wire: [UInt8] = []
    /// Where in `wire` the first value of each `Common` name starts and ends (by its raw value); -1 without one.
    private var commonStarts = SIMD8<Int32>(repeating: -1), commonEnds = SIMD8<Int32>(repeating: -1)
    /// A `Common` field lay beyond what an Int32 offset reaches (more than 2 GiB of fields): lookups scan.
    private var unnoted = false

    /// Names looked up on every request: the key, the body's type, the request id, the binary
    /// tensor extension's header and the routing key.
    public enum Common: Int, Sendable, CaseIterable {
        case authorization, contentType, requestID, inferenceHeaderContentLength, routingKey

        /// Which of them `name` is, ignoring ASCII case.
        @inline(__always)
        static func of(_ name: UnsafeBufferPointer<UInt8>) -> Common? {
            func named(_ a: Common, else b: Common? = nil) -> Common? {
                equalsLowercase(name, a.lowercaseName) ? a : b.flatMap { equalsLowercase(name, $0.lowercaseName) ? $0 : nil }
            }
            switch name.count {  // one or two comparisons, by length
            case 12: return named(.contentType, else: .requestID)
            case 13: return named(.authorization, else: .routingKey)
            case 31: return named(.inferenceHeaderContentLength)
            default: return nil
            }
        }

        static func of(_ name: String) -> Common? {
            var name = name
            return name.withUTF8 { of($0) }
        }

        var lowercaseName: StaticString {
            switch self {
            case .authorization: "authorization"
            case .contentType: "content-type"
            case .requestID: "x-request-id"
            case .inferenceHeaderContentLength: "inference-header-content-length"
            case .routingKey: "x-routing-key"
            }
        }
    }

    public init() {}

    public init(_ fields: [(String, String)]) {
        for (name, value) in fields { add(name, value) }
    }

    /// Adds a field. CR and LF are dropped from both parts and `:` from the
    /// name, so a value taken from elsewhere cannot start a header of its own.
    public mutating func add(_ name: String, _ value: String) {
        if wire.capacity == 0 { wire.reserveCapacity(192) }
        var name = name, value = value
        let nameStart = wire.count
        name.withUTF8 { append($0, dropping: 0x3A) }
        let colon = wire.count
        wire.append(0x3A)
        wire.append(0x20)
        value.withUTF8 { append($0, dropping: 0x0A) }
        note(name: nameStart..<colon, value: (colon + 2)..<wire.count)
        wire.append(0x0D)
        wire.append(0x0A)
    }

    /// Notes where a field just added is, when its name is a `Common` one seen for the first time.
    @inline(__always)
    private mutating func note(name: Range<Int>, value: Range<Int>) {
        let common = wire.withUnsafeBufferPointer { Common.of(UnsafeBufferPointer(rebasing: $0[name])) }
        guard let common, commonStarts[common.rawValue] < 0 else { return }
        guard let start = Int32(exactly: value.lowerBound), let end = Int32(exactly: value.upperBound) else {
            unnoted = true
            return
        }
        commonStarts[common.rawValue] = start
        commonEnds[common.rawValue] = end
    }

    /// Appends `bytes` without CR, LF and `also`.
    private mutating func append(_ bytes: UnsafeBufferPointer<UInt8>, dropping also: UInt8) {
        if !bytes.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == also }) {
            wire.append(contentsOf: bytes)
        } else {
            for b in bytes where b != 0x0D && b != 0x0A && b != also { wire.append(b) }
        }
    }

    /// Adds a field whose bytes the request parser has already checked (a token name; a value without CR or LF).
    package mutating func addChecked(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        let nameStart = wire.count
        wire.append(contentsOf: name)
        wire.append(0x3A)
        wire.append(0x20)
        wire.append(contentsOf: value)
        note(name: nameStart..<(nameStart + name.count), value: (nameStart + name.count + 2)..<wire.count)
        wire.append(0x0D)
        wire.append(0x0A)
    }

    package mutating func reserveCapacity(_ bytes: Int) { wire.reserveCapacity(bytes) }

    /// Replaces every field named `name` with one.
    public mutating func set(_ name: String, _ value: String) {
        var kept = HTTPHeaders()
        for field in fields where !equalsIgnoringASCIICase(field.name, name) { kept.add(field.name, field.value) }
        kept.add(name, value)
        self = kept
    }

    /// The first value of `name`.
    public subscript(name: String) -> String? { text(valueRange(name)) }

    /// The first value of a `Common` name.
    public subscript(name: Common) -> String? { text(valueRange(name)) }

    /// Calls `body` with the bytes of the first value of a `Common` name, without making a String; nil when there is none.
    @inline(__always)
    package func withValue<R>(_ name: Common, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R? {
        guard let range = valueRange(name) else { return nil }
        return wire.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[range])) }
    }

    private func text(_ range: Range<Int>?) -> String? {
        guard let range else { return nil }
        return wire.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[range]), as: UTF8.self) }
    }

    public func values(_ name: String) -> [String] {
        fields.filter { equalsIgnoringASCIICase($0.name, name) }.map(\.value)
    }

    /// Whether the first value of `name` starts with `prefix` (given in lowercase), ignoring ASCII case; no String is made.
    package func value(_ name: Common, hasPrefix prefix: StaticString) -> Bool {
        guard let range = valueRange(name), range.count >= prefix.utf8CodeUnitCount else { return false }
        return wire.withUnsafeBufferPointer { w in
            let p = prefix.utf8Start
            for k in 0..<prefix.utf8CodeUnitCount where lowercaseASCII(w[range.lowerBound + k]) != p[k] { return false }
            return true
        }
    }

    /// Where the first value of a `Common` name is in `wire`: noted as it was added.
    @inline(__always)
    private func valueRange(_ name: Common) -> Range<Int>? {
        let start = commonStarts[name.rawValue]
        guard start >= 0 else {
            guard unnoted else { return nil }
            let lowercase = name.lowercaseName
            return scan(UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount))
        }
        return Int(start)..<Int(commonEnds[name.rawValue])
    }

    /// Where the first value of `name` is in `wire`.
    private func valueRange(_ name: String) -> Range<Int>? {
        if let common = Common.of(name) { return valueRange(common) }
        var name = name
        return name.withUTF8 { scan($0) }
    }

    /// Where the first value of the field named `name` (ASCII case ignored) is in `wire`, field by field.
    private func scan(_ name: UnsafeBufferPointer<UInt8>) -> Range<Int>? {
        var found: Range<Int>?
        forEachField { w, fieldName, value in
            guard fieldName.count == name.count,
                (0..<name.count).allSatisfy({ lowercaseASCII(w[fieldName.lowerBound + $0]) == lowercaseASCII(name[$0]) })
            else { return true }
            found = value
            return false
        }
        return found
    }

    /// Every field, in order.
    public var fields: [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        forEachField { w, name, value in
            out.append((String(decoding: UnsafeBufferPointer(rebasing: w[name]), as: UTF8.self),
                        String(decoding: UnsafeBufferPointer(rebasing: w[value]), as: UTF8.self)))
            return true
        }
        return out
    }

    /// Calls `body` with `wire` and where each field's name and value are in it, in order, while it returns true.
    @inline(__always)
    private func forEachField(_ body: (_ wire: UnsafeBufferPointer<UInt8>, _ name: Range<Int>, _ value: Range<Int>) -> Bool) {
        wire.withUnsafeBufferPointer { w in
            var i = 0
            while i < w.count {
                var colon = i
                while w[colon] != 0x3A { colon += 1 }
                var end = colon + 2
                while w[end] != 0x0D { end += 1 }
                guard body(w, i..<colon, (colon + 2)..<end) else { return }
                i = end + 2
            }
        }
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

/// Whether `bytes` equal `lowercase` (given in lowercase), ignoring ASCII case.
@inline(__always)
func equalsLowercase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
    guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
    let p = lowercase.utf8Start
    for k in 0..<bytes.count where lowercaseASCII(bytes[k]) != p[k] { return false }
    return true
}

@inline(__always)
func lowercaseASCII(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

/// A response a handler gives later (`HTTPResponse.later`). Thread-safe; the first `fulfil` wins.
/// If the client has gone by then, the response is dropped.
public final class HTTPPromise: Sendable {
    private enum State {
        case waiting
        case delivering(@Sendable (HTTPResponse) -> Void)
        case fulfilled(HTTPResponse)
        case done
    }

    private let state = Mutex<State>(.waiting)

    public init() {}

    /// Gives the response; later calls do nothing.
    public func fulfil(_ response: HTTPResponse) {
        let deliver: (@Sendable (HTTPResponse) -> Void)? = state.withLock { state in
            switch state {
            case .waiting:
                state = .fulfilled(response)
                return nil
            case .delivering(let deliver):
                state = .done
                return deliver
            case .fulfilled, .done:
                return nil
            }
        }
        deliver?(response)
    }

    /// Whether nobody has fulfilled it yet.
    public var isPending: Bool {
        state.withLock { if case .fulfilled = $0 { false } else if case .done = $0 { false } else { true } }
    }

    /// The server's side: the response if it is already there, else `deliver` gets it later.
    func deliver(to deliver: @escaping @Sendable (HTTPResponse) -> Void) -> HTTPResponse? {
        state.withLock { state in
            if case .fulfilled(let response) = state {
                state = .done
                return response
            }
            state = .delivering(deliver)
            return nil
        }
    }
}

/// A response to write.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// Close the connection after writing this response.
    public var close: Bool
    /// Whether the server's observer counts it: false for a component's own control API (the
    /// console's polls are not traffic).
    public var observed = true
    /// Set by `later(_:)`: the response comes from this promise, from any thread.
    public internal(set) var promise: HTTPPromise?

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], close: Bool = false) {
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close
    }

    /// A response with a text body and its content type.
    public init(status: Int, contentType: String, body: String, close: Bool = false) {
        var headers = HTTPHeaders()
        headers.add("Content-Type", contentType)
        self.init(status: status, headers: headers, body: Array(body.utf8), close: close)
    }

    /// The answer comes later: the handler keeps `promise` and fulfils it, from any thread, once
    /// and within its own deadline (a long poll). Headers added to this placeholder (a request id)
    /// go out with the eventual response; the connection answers nothing else meanwhile.
    public static func later(_ promise: HTTPPromise) -> HTTPResponse {
        var response = HTTPResponse(status: 200)
        response.promise = promise
        return response
    }

    /// `{"error": "..."}` with `status`.
    public static func error(_ status: Int, _ message: String, close: Bool = false) -> HTTPResponse {
        var escaped = ""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case _ where scalar.value < 0x20: escaped += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return HTTPResponse(status: status, contentType: "application/json", body: "{\"error\":\"\(escaped)\"}", close: close)
    }

    /// Appends the status line, headers (with Content-Length) and body to `out`.
    public func serialize(into out: inout [UInt8], keepAlive: Bool) {
        out.reserveCapacity(out.count + 64 + headers.wire.count + body.count)
        appendASCII("HTTP/1.1 ", &out)
        appendDecimal(status, &out)
        out.append(0x20)
        appendASCII(HTTPStatus.reason(status), &out)
        appendASCII("\r\n", &out)
        out.append(contentsOf: headers.wire)
        appendASCII("Content-Length: ", &out)
        appendDecimal(body.count, &out)
        appendASCII("\r\n", &out)
        if !keepAlive || close { appendASCII("Connection: close\r\n", &out) }
        appendASCII("\r\n", &out)
        out.append(contentsOf: body)
    }
}

@inline(__always)
private func appendASCII(_ text: StaticString, _ out: inout [UInt8]) {
    out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
}

/// Reason phrases.
public enum HTTPStatus {
    public static func reason(_ status: Int) -> StaticString {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 422: "Unprocessable Content"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Status"
        }
    }
}

private func percentDecode(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var i = text.utf8.startIndex
    let utf8 = text.utf8
    while i != utf8.endIndex {
        let b = utf8[i]
        if b == UInt8(ascii: "+") {
            bytes.append(0x20)
        } else if b == UInt8(ascii: "%"), let h1 = utf8.index(i, offsetBy: 1, limitedBy: utf8.endIndex), h1 != utf8.endIndex,
            let h2 = utf8.index(h1, offsetBy: 1, limitedBy: utf8.endIndex), h2 != utf8.endIndex,
            let v = UInt8(String(decoding: [utf8[h1], utf8[h2]], as: UTF8.self), radix: 16)
        {
            bytes.append(v)
            i = h2
        } else {
            bytes.append(b)
        }
        i = utf8.index(after: i)
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// ASCII case-insensitive equality, without making lowercased copies.
@inline(__always)
public func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
    var a = a.utf8.makeIterator(), b = b.utf8.makeIterator()
    while true {
        switch (a.next(), b.next()) {
        case (nil, nil): return true
        case (let x?, let y?):
            if x == y { continue }
            let lx = x >= 0x41 && x <= 0x5A ? x | 0x20 : x
            let ly = y >= 0x41 && y <= 0x5A ? y | 0x20 : y
            if lx != ly { return false }
        default: return false
        }
    }
}

/// Appends the decimal digits of a non-negative number.
@inline(__always)
func appendDecimal(_ value: Int, _ out: inout [UInt8]) {
    if value < 10 {
        out.append(UInt8(truncatingIfNeeded: value) &+ 0x30)
        return
    }
    var divisor = 1
    while divisor <= value / 10 { divisor *= 10 }
    var rest = value
    while divisor > 0 {
        out.append(UInt8(truncatingIfNeeded: rest / divisor) &+ 0x30)
        rest %= divisor
        divisor /= 10
    }
}
