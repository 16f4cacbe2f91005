/// An incremental HTTP/1.1 request parser (RFC 9112): a pure state machine fed
/// bytes in pieces of any size. It yields complete requests (pipelined ones one
/// after another) and stops at the first error, which carries the status to
/// answer with before closing: 400 malformed, 413 body too large, 431 head too
/// large, 501 unsupported transfer coding, 505 version.
///
/// Request smuggling defenses: Content-Length together with Transfer-Encoding,
/// conflicting Content-Lengths, and obsolete line folding are refused.
package struct HTTPRequestParser {
    package struct Limits: Sendable {
        /// Request line plus headers.
        package var headBytes = 16 * 1024
        package var bodyBytes = 1024 * 1024
        package init() {}
    }

    package enum Event: Equatable {
        case request(HTTPRequestHeadAndBody)
        /// The client sent `Expect: 100-continue` and waits for a 100 before the body.
        case continueNeeded
        case error(status: Int, reason: String)
    }

    /// Where the parser is, for read timeouts.
    package enum Phase: Equatable {
        case idle
        case head
        case body
    }

    private enum State {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case failed
    }

    package let limits: Limits
    private var state = State.head
    private var head: [UInt8] = []
    private var scanFrom = 0
    private var line: [UInt8] = []
    private var trailerBytes = 0
    private var current: HTTPRequestHeadAndBody?

    package init(limits: Limits = Limits()) {
        self.limits = limits
        head.reserveCapacity(1024)
    }

    package var phase: Phase {
        switch state {
        case .head: head.isEmpty ? .idle : .head
        case .failed: .idle
        default: .body
        }
    }

    /// Consumes `bytes`, returning what they completed. After an `.error` the
    /// parser takes no more input.
    package mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [Event] {
        var events: [Event] = []
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .failed:
                return events
            case .head:
                // Skip empty lines before a request line (RFC 9112 §2.2).
                if head.isEmpty && (bytes[i] == 0x0D || bytes[i] == 0x0A) {
                    i += 1
                    continue
                }
                // Append what is here (up to the limit), then look for the empty line that ends the head.
                let before = head.count
                let take = min(n - i, limits.headBytes + 1 - before)
                head.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                if let end = headEnd(from: max(0, before - 3)) {
                    i += end + 1 - before
                    head.removeSubrange((end + 1)...)
                    headDone = true
                } else {
                    i += take
                }
                if head.count > limits.headBytes {
                    return fail(&events, 431, "the request line and headers exceed \(limits.headBytes) bytes")
                }
                if case .head = state, headDone {
                    headDone = false
                    guard let request = parseHead(&events) else { return events }
                    head.removeAll(keepingCapacity: true)
                    scanFrom = 0
                    current = request.request
                    if request.expectContinue && request.bodyState != nil { events.append(.continueNeeded) }
                    switch request.bodyState {
                    case nil: finish(&events)
                    case .fixedBody(let length)?: state = length == 0 ? .head : .fixedBody(remaining: length); if length == 0 { finish(&events) }
                    default: state = .chunkSize
                    }
                }
            case .fixedBody(let remaining):
                let take = min(remaining, n - i)
                current!.request.body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                i += take
                if take == remaining {
                    state = .head
                    finish(&events)
                } else {
                    state = .fixedBody(remaining: remaining - take)
                }
            case .chunkSize:
                let b = bytes[i]
                i += 1
                if b == 0x0A {
                    var text = line
                    if text.last == 0x0D { text.removeLast() }
                    line.removeAll(keepingCapacity: true)
                    if let semicolon = text.firstIndex(of: UInt8(ascii: ";")) { text = Array(text[..<semicolon]) }
                    while text.last == 0x20 || text.last == 0x09 { text.removeLast() }
                    guard !text.isEmpty, text.count <= 16, let size = Int(String(decoding: text, as: UTF8.self), radix: 16), size >= 0 else {
                        return fail(&events, 400, "invalid chunk size")
                    }
                    if current!.request.body.count + size > limits.bodyBytes {
                        return fail(&events, 413, "the request body exceeds \(limits.bodyBytes) bytes")
                    }
                    state = size == 0 ? .trailers : .chunkData(remaining: size)
                } else {
                    line.append(b)
                    if line.count > 1024 { return fail(&events, 400, "chunk size line too long") }
                }
            case .chunkData(let remaining):
                let take = min(remaining, n - i)
                current!.request.body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                i += take
                state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            case .chunkDataEnd:
                let b = bytes[i]
                i += 1
                if b == 0x0D && line.isEmpty {
                    line.append(b)
                } else if b == 0x0A {
                    line.removeAll(keepingCapacity: true)
                    state = .chunkSize
                } else {
                    return fail(&events, 400, "chunk data not followed by CRLF")
                }
            case .trailers:
                // Trailer fields are read and dropped; an empty line ends the message.
                let b = bytes[i]
                i += 1
                trailerBytes += 1
                if trailerBytes > limits.headBytes { return fail(&events, 431, "trailers exceed \(limits.headBytes) bytes") }
                if b == 0x0A {
                    let empty = line.isEmpty || line == [0x0D]
                    line.removeAll(keepingCapacity: true)
                    if empty {
                        trailerBytes = 0
                        state = .head
                        finish(&events)
                    }
                } else {
                    line.append(b)
                }
            }
        }
        return events
    }

    // MARK: - Head

    private var headDone = false

    /// The index of the LF that ends the head ("\n\n" or "\r\n\r\n"), searching from `start`.
    private func headEnd(from start: Int) -> Int? {
        var i = start
        let count = head.count
        while i < count {
            if head[i] == 0x0A {
                if i >= 1 && head[i - 1] == 0x0A { return i }
                if i >= 2 && head[i - 1] == 0x0D && head[i - 2] == 0x0A { return i }
            }
            i += 1
        }
        return nil
    }

    private enum BodyFraming {
        case fixedBody(Int)
        case chunked
    }

    private struct ParsedHead {
        var request: HTTPRequestHeadAndBody
        var bodyState: BodyFraming?
        var expectContinue: Bool
    }

    private mutating func parseHead(_ events: inout [Event]) -> ParsedHead? {
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        for (i, b) in head.enumerated() where b == 0x0A {
            var end = i
            if end > start && head[end - 1] == 0x0D { end -= 1 }
            lines.append(head[start..<end])
            start = i + 1
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { fail(&events, 400, "empty request"); return nil }

        // METHOD SP request-target SP HTTP-version
        let parts = requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte) else {
            fail(&events, 400, "malformed request line")
            return nil
        }
        guard !parts[1].isEmpty, parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            fail(&events, 400, "malformed request target")
            return nil
        }
        let version = Array(parts[2])
        let minor: Int
        switch version {
        case Array("HTTP/1.1".utf8): minor = 1
        case Array("HTTP/1.0".utf8): minor = 0
        default:
            if version.starts(with: Array("HTTP/".utf8)) && version.count == 8 {
                fail(&events, 505, "only HTTP/1.0 and HTTP/1.1 are served")
            } else {
                fail(&events, 400, "malformed HTTP version")
            }
            return nil
        }

        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let first = line.first, first != 0x20, first != 0x09 else {
                fail(&events, 400, "obsolete header line folding is not accepted")
                return nil
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                fail(&events, 400, "header line without ':'")
                return nil
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
                fail(&events, 400, "invalid header name")
                return nil
            }
            var value = line[(colon + 1)...]
            while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
            while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
            guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }) else {
                fail(&events, 400, "control character in a header value")
                return nil
            }
            headers.add(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
        }

        let method = String(decoding: parts[0], as: UTF8.self)
        var keepAlive = minor == 1
        if headers["Connection"] != nil {
            let tokens = headers.values("Connection").flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: " \t").lowercased() }
            keepAlive = minor == 1 ? !tokens.contains("close") : tokens.contains("keep-alive")
        }
        var request = HTTPRequestHeadAndBody(
            request: HTTPRequest(
                method: method, target: String(decoding: parts[1], as: UTF8.self), minorVersion: minor,
                headers: headers, body: [], keepAlive: keepAlive))

        let transferEncodings = headers.values("Transfer-Encoding")
        let lengths = headers.values("Content-Length")
        var framing: BodyFraming?
        if !transferEncodings.isEmpty {
            guard lengths.isEmpty else {
                fail(&events, 400, "both Transfer-Encoding and Content-Length")
                return nil
            }
            let codings = transferEncodings.joined(separator: ",").split(separator: ",").map {
                $0.trimmingCharacters(in: " \t").lowercased()
            }
            guard codings == ["chunked"] else {
                fail(&events, 501, "only the chunked transfer coding is supported")
                return nil
            }
            framing = .chunked
        } else if !lengths.isEmpty {
            let values = Set(lengths.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: " \t") } })
            guard values.count == 1, let text = values.first, !text.isEmpty, text.count <= 18,
                text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let length = Int(text)
            else {
                fail(&events, 400, "invalid Content-Length")
                return nil
            }
            guard length <= limits.bodyBytes else {
                fail(&events, 413, "the request body (\(length) bytes) exceeds \(limits.bodyBytes) bytes")
                return nil
            }
            framing = .fixedBody(length)
            request.request.body.reserveCapacity(length)
        }
        let expect = headers["Expect"].map { equalsIgnoringASCIICase($0, "100-continue") } ?? false
        return ParsedHead(request: request, bodyState: framing, expectContinue: expect)
    }

    private mutating func finish(_ events: inout [Event]) {
        if let current { events.append(.request(current)) }
        current = nil
    }

    @discardableResult
    private mutating func fail(_ events: inout [Event], _ status: Int, _ reason: String) -> [Event] {
        state = .failed
        events.append(.error(status: status, reason: reason))
        return events
    }
}

/// A parsed request in transit (a wrapper so `Event` can be Equatable).
package struct HTTPRequestHeadAndBody: Equatable {
    package var request: HTTPRequest

    package static func == (a: Self, b: Self) -> Bool {
        a.request.method == b.request.method && a.request.target == b.request.target && a.request.body == b.request.body
            && a.request.headers.fields.map { "\($0.name):\($0.value)" } == b.request.headers.fields.map { "\($0.name):\($0.value)" }
            && a.request.keepAlive == b.request.keepAlive && a.request.minorVersion == b.request.minorVersion
    }
}

/// tchar (RFC 9110 §5.6.2).
@inline(__always)
private func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
        UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
        UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
