#if canImport(Glibc)
import Glibc
#endif

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
    private var line: [UInt8] = []
    private var trailerBytes = 0
    /// CR and LF bytes before the current request line.
    private var leadingBlankBytes = 0
    private static let maxLeadingBlankBytes = 8
    private var current: HTTPRequestHeadAndBody?

    package init(limits: Limits = Limits()) {
        self.limits = limits
        head.reserveCapacity(1024)
    }

    package var phase: Phase {
        switch state {
        case .head: head.isEmpty && leadingBlankBytes == 0 ? .idle : .head
        case .failed: .idle
        default: .body
        }
    }

    /// Consumes `bytes`, returning what they completed. After an `.error` the
    /// parser takes no more input.
    package mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [Event] {
        var events: [Event] = []
        feed(bytes, into: &events)
        return events
    }

    /// `feed`, appending to `events` (a buffer the caller reuses).
    package mutating func feed(_ bytes: UnsafeRawBufferPointer, into events: inout [Event]) {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .failed:
                return
            case .head:
                // Skip empty lines before a request line (RFC 9112 §2.2), a few only: they start
                // the head's clock, so a client cannot hold a connection by sending blank lines.
                if head.isEmpty && (bytes[i] == 0x0D || bytes[i] == 0x0A) {
                    leadingBlankBytes += 1
                    if leadingBlankBytes > Self.maxLeadingBlankBytes {
                        fail(&events, 400, "more than \(Self.maxLeadingBlankBytes) bytes of empty lines before the request line")
                        return
                    }
                    i += 1
                    continue
                }
                if head.isEmpty {
                    // The common case: the whole head is in this read. Parse it where it is.
                    let window = min(n, i + limits.headBytes)
                    if let end = Self.headEnd(bytes, from: i, start: i, limit: window) {
                        let parsed = Self.parseHead(
                            UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + i, count: end + 1 - i),
                            limits: limits)
                        i = end + 1
                        guard begin(parsed, &events) else { return }
                        continue
                    }
                }
                // Append what is here (up to the limit), then look for the empty line that ends the head.
                let before = head.count
                let take = min(n - i, limits.headBytes + 1 - before)
                head.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                let end = head.withUnsafeBytes { Self.headEnd($0, from: max(0, before - 3), start: 0, limit: $0.count) }
                if let end {
                    i += end + 1 - before
                    head.removeSubrange((end + 1)...)
                } else {
                    i += take
                }
                if head.count > limits.headBytes {
                    fail(&events, 431, "the request line and headers exceed \(limits.headBytes) bytes")
                    return
                }
                if end != nil {
                    let limits = limits
                    let parsed = head.withUnsafeBufferPointer { Self.parseHead($0, limits: limits) }
                    head.removeAll(keepingCapacity: true)
                    guard begin(parsed, &events) else { return }
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
                        fail(&events, 400, "invalid chunk size")
                        return
                    }
                    // Compared as a subtraction: a client's size near Int.max would overflow a sum.
                    if size > limits.bodyBytes - current!.request.body.count {
                        fail(&events, 413, "the request body exceeds \(limits.bodyBytes) bytes")
                        return
                    }
                    state = size == 0 ? .trailers : .chunkData(remaining: size)
                } else {
                    line.append(b)
                    if line.count > 1024 {
                        fail(&events, 400, "chunk size line too long")
                        return
                    }
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
                    fail(&events, 400, "chunk data not followed by CRLF")
                    return
                }
            case .trailers:
                // Trailer fields are read and dropped; an empty line ends the message.
                let b = bytes[i]
                i += 1
                trailerBytes += 1
                if trailerBytes > limits.headBytes {
                    fail(&events, 431, "trailers exceed \(limits.headBytes) bytes")
                    return
                }
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
    }

    // MARK: - Head

    /// The index of the LF that ends a head ("\n\n" or "\r\n\r\n") in `h[start..<limit]`,
    /// searching from `from`.
    private static func headEnd(_ h: UnsafeRawBufferPointer, from: Int, start: Int, limit: Int) -> Int? {
        var i = from
        while true {
            i = firstLineFeed(h, from: i, to: limit)
            guard i < limit else { return nil }
            if i - 1 >= start && h[i - 1] == 0x0A { return i }
            if i - 2 >= start && h[i - 1] == 0x0D && h[i - 2] == 0x0A { return i }
            i += 1
        }
    }

    /// The index of the first LF in `h[from..<to]` (memchr: a head is searched for line ends twice), or `to`.
    @inline(__always)
    private static func firstLineFeed(_ h: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
        guard from < to, let base = h.baseAddress, let found = memchr(base + from, 0x0A, to - from) else { return max(from, to) }
        return base.distance(to: UnsafeRawPointer(found))
    }

    /// Starts the request a parsed head describes (or fails); false once failed.
    private mutating func begin(_ parsed: Result<ParsedHead, HeadFailure>, _ events: inout [Event]) -> Bool {
        let request: ParsedHead
        switch parsed {
        case .success(let p): request = p
        case .failure(let failure):
            fail(&events, failure.status, failure.reason)
            return false
        }
        current = request.request
        leadingBlankBytes = 0
        if request.expectContinue && request.bodyState != nil { events.append(.continueNeeded) }
        switch request.bodyState {
        case nil, .fixedBody(0)?:
            finish(&events)
        case .fixedBody(let length)?:
            state = .fixedBody(remaining: length)
        case .chunked?:
            state = .chunkSize
        }
        return true
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

    private struct HeadFailure: Error {
        var status: Int
        var reason: String
        init(_ status: Int, _ reason: String) {
            self.status = status
            self.reason = reason
        }
    }

    /// One pass over the head's bytes: the request line, then each field,
    /// copied once into the request's headers; the fields that frame the
    /// message are read on the way.
    private static func parseHead(_ h: UnsafeBufferPointer<UInt8>, limits: Limits) -> Result<ParsedHead, HeadFailure> {
        let n = h.count
        func lineEnd(from i: Int) -> (content: Int, next: Int) {
            let j = firstLineFeed(UnsafeRawBufferPointer(h), from: i, to: n)
            let content = j > i && h[j - 1] == 0x0D ? j - 1 : j
            return (content, min(j + 1, n))
        }
        // Request line: METHOD SP request-target SP HTTP-version
        let (lineStop, afterLine) = lineEnd(from: 0)
        guard lineStop > 0 else { return .failure(HeadFailure(400, "empty request")) }
        var sp1 = 0
        while sp1 < lineStop && h[sp1] != 0x20 { sp1 += 1 }
        var sp2 = sp1 + 1
        while sp2 < lineStop && h[sp2] != 0x20 { sp2 += 1 }
        guard sp1 > 0, sp1 < lineStop, sp2 < lineStop, !h[sp2 + 1..<lineStop].contains(0x20), (0..<sp1).allSatisfy({ isTokenByte(h[$0]) })
        else {
            return .failure(HeadFailure(400, "malformed request line"))
        }
        guard sp2 > sp1 + 1, (sp1 + 1..<sp2).allSatisfy({ h[$0] > 0x20 && h[$0] < 0x7F }) else {
            return .failure(HeadFailure(400, "malformed request target"))
        }
        let minor: Int
        let versionLength = lineStop - (sp2 + 1)
        let isHTTP = versionLength == 8 && h[sp2 + 1] == UInt8(ascii: "H") && h[sp2 + 2] == UInt8(ascii: "T") && h[sp2 + 3] == UInt8(ascii: "T")
            && h[sp2 + 4] == UInt8(ascii: "P") && h[sp2 + 5] == UInt8(ascii: "/")
        if isHTTP && h[sp2 + 6] == UInt8(ascii: "1") && h[sp2 + 7] == UInt8(ascii: ".") && (h[sp2 + 8] == UInt8(ascii: "1") || h[sp2 + 8] == UInt8(ascii: "0")) {
            minor = h[sp2 + 8] == UInt8(ascii: "1") ? 1 : 0
        } else if isHTTP {
            return .failure(HeadFailure(505, "only HTTP/1.0 and HTTP/1.1 are served"))
        } else {
            return .failure(HeadFailure(400, "malformed HTTP version"))
        }

        var headers = HTTPHeaders()
        headers.reserveCapacity(n - afterLine + 16)
        var connectionClose = false, connectionKeepAlive = false
        var chunked = false, otherCoding = false, sawTransferEncoding = false
        var contentLength: Int?, badLength = false
        var expectContinue = false
        var hostFields = 0
        var i = afterLine
        while i < n {
            let (stop, next) = lineEnd(from: i)
            defer { i = next }
            if stop == i { continue }  // the empty line that ends the head
            guard h[i] != 0x20, h[i] != 0x09 else {
                return .failure(HeadFailure(400, "obsolete header line folding is not accepted"))
            }
            var colon = i
            while colon < stop && h[colon] != UInt8(ascii: ":") { colon += 1 }
            guard colon < stop else { return .failure(HeadFailure(400, "header line without ':'")) }
            guard colon > i, (i..<colon).allSatisfy({ isTokenByte(h[$0]) }) else {
                return .failure(HeadFailure(400, "invalid header name"))
            }
            var valueStart = colon + 1, valueEnd = stop
            while valueStart < valueEnd && (h[valueStart] == 0x20 || h[valueStart] == 0x09) { valueStart += 1 }
            while valueEnd > valueStart && (h[valueEnd - 1] == 0x20 || h[valueEnd - 1] == 0x09) { valueEnd -= 1 }
            guard (valueStart..<valueEnd).allSatisfy({ h[$0] >= 0x20 && h[$0] != 0x7F || h[$0] == 0x09 }) else {
                return .failure(HeadFailure(400, "control character in a header value"))
            }
            let name = UnsafeBufferPointer(rebasing: h[i..<colon])
            let value = UnsafeBufferPointer(rebasing: h[valueStart..<valueEnd])
            headers.addChecked(name: name, value: value)
            if equalsLowercase(name, "content-length") {
                // A list of equal lengths counts as one (RFC 9110 §8.6); anything else is refused.
                forEachListItem(value) { item in
                    guard item.count <= 18, item.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                        badLength = true
                        return
                    }
                    let length = item.reduce(0) { $0 * 10 + Int($1 - 0x30) }
                    if let earlier = contentLength, earlier != length { badLength = true }
                    contentLength = length
                }
                if contentLength == nil { badLength = true }
            } else if equalsLowercase(name, "transfer-encoding") {
                sawTransferEncoding = true
                forEachListItem(value) { item in
                    if equalsLowercase(item, "chunked") && !chunked { chunked = true } else { otherCoding = true }
                }
            } else if equalsLowercase(name, "connection") {
                forEachListItem(value) { item in
                    if equalsLowercase(item, "close") { connectionClose = true }
                    if equalsLowercase(item, "keep-alive") { connectionKeepAlive = true }
                }
            } else if equalsLowercase(name, "expect") {
                expectContinue = expectContinue || equalsLowercase(value, "100-continue")
            } else if equalsLowercase(name, "host") {
                hostFields += 1
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with more than one, gets 400.
        if minor == 1 && hostFields != 1 {
            return .failure(HeadFailure(400, hostFields == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header"))
        }
        if hostFields > 1 { return .failure(HeadFailure(400, "more than one Host header")) }

        let method = String(decoding: UnsafeBufferPointer(rebasing: h[0..<sp1]), as: UTF8.self)
        let target = String(decoding: UnsafeBufferPointer(rebasing: h[(sp1 + 1)..<sp2]), as: UTF8.self)
        let keepAlive = minor == 1 ? !connectionClose : connectionKeepAlive
        var request = HTTPRequestHeadAndBody(
            request: HTTPRequest(
                method: method, target: target, minorVersion: minor,
                headers: headers, body: [], keepAlive: keepAlive))

        var framing: BodyFraming?
        if sawTransferEncoding {
            guard contentLength == nil, !badLength else {
                return .failure(HeadFailure(400, "both Transfer-Encoding and Content-Length"))
            }
            guard chunked, !otherCoding else {
                return .failure(HeadFailure(501, "only the chunked transfer coding is supported"))
            }
            framing = .chunked
        } else if badLength {
            return .failure(HeadFailure(400, "invalid Content-Length"))
        } else if let length = contentLength {
            guard length <= limits.bodyBytes else {
                return .failure(HeadFailure(413, "the request body (\(length) bytes) exceeds \(limits.bodyBytes) bytes"))
            }
            framing = .fixedBody(length)
            request.request.body.reserveCapacity(length)
        }
        return .success(ParsedHead(request: request, bodyState: framing, expectContinue: expectContinue))
    }

    private mutating func finish(_ events: inout [Event]) {
        if let request = current.take() { events.append(.request(request)) }
    }

    private mutating func fail(_ events: inout [Event], _ status: Int, _ reason: String) {
        state = .failed
        events.append(.error(status: status, reason: reason))
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

/// Calls `body` with each item of a comma-separated list, without the blanks
/// around it; empty items are skipped (RFC 9110 §5.6.1).
@inline(__always)
private func forEachListItem(_ value: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    var start = 0
    while start <= value.count {
        var end = start
        while end < value.count && value[end] != UInt8(ascii: ",") { end += 1 }
        var a = start, b = end
        while a < b && (value[a] == 0x20 || value[a] == 0x09) { a += 1 }
        while b > a && (value[b - 1] == 0x20 || value[b - 1] == 0x09) { b -= 1 }
        if a < b { body(UnsafeBufferPointer(rebasing: value[a..<b])) }
        start = end + 1
    }
}
