@testable import HTTP
import Testing

/// Feeds `text` in two pieces split at `split`, collecting events.
func parse(_ bytes: [UInt8], splitAt split: Int? = nil, limits: HTTPRequestParser.Limits = .init()) -> [HTTPRequestParser.Event] {
    var parser = HTTPRequestParser(limits: limits)
    var events: [HTTPRequestParser.Event] = []
    let pieces = split.map { [Array(bytes[..<$0]), Array(bytes[$0...])] } ?? [bytes]
    for piece in pieces { events += piece.withUnsafeBytes { parser.feed($0) } }
    return events
}

/// `seed` with `edits` random byte replacements, deletions and insertions (fuzzing).
func mutated(_ seed: [UInt8], edits: ClosedRange<Int>, _ random: inout SystemRandomNumberGenerator) -> [UInt8] {
    var bytes = seed
    for _ in 0..<Int.random(in: edits, using: &random) {
        let i = Int.random(in: 0..<max(bytes.count, 1), using: &random)
        switch (Int.random(in: 0..<3, using: &random), bytes.isEmpty) {
        case (0, false): bytes[i] = UInt8.random(in: 0...255, using: &random)
        case (1, false): bytes.remove(at: i)
        default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: min(i, bytes.count))
        }
    }
    return bytes
}

/// Each name `HTTPHeaders` notes as fields are added, in lowercase.
let commonNames: [HTTPHeaders.Common: String] = [
    .authorization: "authorization", .contentType: "content-type", .requestID: "x-request-id",
    .inferenceHeaderContentLength: "inference-header-content-length", .routingKey: "x-routing-key",
]

func requests(_ events: [HTTPRequestParser.Event]) -> [HTTPRequest] {
    events.compactMap { if case .request(let r) = $0 { r.request } else { nil } }
}

func errorStatus(_ events: [HTTPRequestParser.Event]) -> Int? {
    for e in events { if case .error(let status, _) = e { return status } }
    return nil
}

@Suite struct HTTPRequestParserTests {
    static let pipelined = Array((
        "POST /v2/models/credit/infer?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}"
        + "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        + "POST /score HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
        + "GET /bye HTTP/1.0\r\n\r\n"
    ).utf8)

    @Test func parsesPipelinedRequestsWithEveryBodyFraming() {
        let rs = requests(parse(Self.pipelined))
        #expect(rs.map(\.method) == ["POST", "GET", "POST", "GET"])
        #expect(rs.map(\.target) == ["/v2/models/credit/infer?x=1", "/healthz", "/score", "/bye"])
        #expect(rs[0].body == Array(#"{"a": true}"#.utf8))
        #expect(rs[0].headers["content-type"] == "application/json")
        #expect(rs[0].path == "/v2/models/credit/infer" && rs[0].query == ["x": "1"])
        #expect(rs[2].body == Array("Wikipedia".utf8))
        #expect(rs.map(\.keepAlive) == [true, true, true, false])
    }

    @Test func givesTheSameRequestsWhereverTheBytesAreSplit() {
        let whole = parse(Self.pipelined)
        for split in 0...Self.pipelined.count {
            #expect(parse(Self.pipelined, splitAt: split) == whole, "split at \(split)")
        }
        // And one byte at a time.
        var parser = HTTPRequestParser()
        var events: [HTTPRequestParser.Event] = []
        for b in Self.pipelined { events += [b].withUnsafeBytes { parser.feed($0) } }
        #expect(events == whole)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("GET / HTTP/2.0\r\n\r\n", 505),
        ("GET / FTP/1.1\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nA: b\u{1}c\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX", 400),
        ("GET /a\u{7F} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ])
    func refusesMalformedRequests(text: String, status: Int) {
        #expect(errorStatus(parse(Array(text.utf8))) == status, "\(text.debugDescription)")
    }

    @Test func enforcesHeadAndBodyLimits() {
        var limits = HTTPRequestParser.Limits()
        limits.headBytes = 100
        limits.bodyBytes = 10
        let longHead = "GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 200) + "\r\n\r\n"
        #expect(errorStatus(parse(Array(longHead.utf8), limits: limits)) == 431)
        // A head that never ends is refused as soon as it passes the limit.
        #expect(errorStatus(parse(Array(("GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 200)).utf8), limits: limits)) == 431)
        #expect(errorStatus(parse(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n".utf8), limits: limits)) == 413)
        let chunked = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        #expect(errorStatus(parse(Array(chunked.utf8), limits: limits)) == 413)
        #expect(requests(parse(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789".utf8), limits: limits)).count == 1)
    }

    /// A head of exactly the limit is read, one byte more is 431, whether it arrives whole
    /// (parsed where it lies) or split anywhere (gathered first), and after a request on the same connection.
    @Test func theHeadLimitIsExactInEveryPath() {
        var limits = HTTPRequestParser.Limits()
        limits.headBytes = 64
        func head(_ length: Int) -> [UInt8] {
            let start = "GET / HTTP/1.1\r\nHost: h\r\nX: "
            return Array((start + String(repeating: "a", count: length - start.utf8.count - 4) + "\r\n\r\n").utf8)
        }
        let body = Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok".utf8)
        for (bytes, status) in [(head(64), nil), (head(65), 431), (body + head(64), nil), (body + head(65), 431)] as [([UInt8], Int?)] {
            for split in [nil] + Array(1..<bytes.count) {
                let events = parse(bytes, splitAt: split, limits: limits)
                #expect(errorStatus(events) == status, "length \(bytes.count), split \(split.map(String.init) ?? "none")")
                if status == nil { #expect(requests(events).last?.headers["X"]?.count == 64 - 32) }
            }
        }
    }

    /// Client-controlled numbers never overflow: a chunk size up to Int.max after a first chunk,
    /// the largest hex a size line can hold, and a Content-Length of 18 nines.
    @Test(arguments: ["7fffffffffffffff", "7FFFFFFFFFFFFFFF", "7ffffffffffffff0", "100001"])
    func hugeChunkSizesAre413(size: String) {
        let text = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n\(size)\r\n"
        #expect(errorStatus(parse(Array(text.utf8))) == 413)
        #expect(errorStatus(parse(Array("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".utf8))) == 400)
        #expect(errorStatus(parse(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999999\r\n\r\n".utf8))) == 413)
    }

    @Test func hostIsRequiredOnceInHTTP11() {
        #expect(errorStatus(parse(Array("GET / HTTP/1.1\r\n\r\n".utf8))) == 400)
        #expect(errorStatus(parse(Array("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n".utf8))) == 400)
        #expect(errorStatus(parse(Array("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".utf8))) == 400)
        #expect(requests(parse(Array("GET / HTTP/1.0\r\n\r\n".utf8))).count == 1)
        #expect(requests(parse(Array("GET / HTTP/1.1\r\nHOST: a\r\n\r\n".utf8))).count == 1)
    }

    /// Blank lines before a request are allowed (RFC 9112 §2.2) but few, and they start the head's clock.
    @Test func blankLinesBeforeARequestAreFewAndCountAsHead() {
        var parser = HTTPRequestParser()
        #expect(Array("\r\n".utf8).withUnsafeBytes { parser.feed($0) }.isEmpty)
        #expect(parser.phase == .head)
        #expect(requests(Array("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8).withUnsafeBytes { parser.feed($0) }).count == 1)
        #expect(parser.phase == .idle)
        #expect(errorStatus(parse(Array(String(repeating: "\r\n", count: 5).utf8))) == 400)
        #expect(errorStatus(parse(Array((String(repeating: "\r\n", count: 4) + "GET / HTTP/1.1\r\nHost: h\r\n\r\n").utf8))) == nil)
    }

    @Test func asksForContinueAndTracksItsPhase() {
        var parser = HTTPRequestParser()
        let head = Array("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".utf8)
        #expect(parser.phase == .idle)
        let partial = Array(head[0..<10])
        _ = partial.withUnsafeBytes { parser.feed($0) }
        #expect(parser.phase == .head)
        let events = Array(head[10...]).withUnsafeBytes { parser.feed($0) }
        #expect(events == [.continueNeeded])
        #expect(parser.phase == .body)
        let done = Array("abc".utf8).withUnsafeBytes { parser.feed($0) }
        #expect(requests(done).first?.body == Array("abc".utf8))
        #expect(parser.phase == .idle)
    }

    /// A request with every `HTTPHeaders.Common` name.
    static let keyed = Array((
        "POST /v2/models/credit/infer HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\nx-request-id: r1\r\nX-Routing-Key: c\r\n"
        + "Inference-Header-Content-Length: 2\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).utf8)

    @Test func survivesRandomMutations() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<20_000 {
            let bytes = mutated(round % 2 == 0 ? Self.pipelined : Self.keyed, edits: 1...6, &random)
            let split = Int.random(in: 0...bytes.count, using: &random)
            let events = parse(bytes, splitAt: split)
            // At most one error, and it is the last event.
            if let i = events.firstIndex(where: { if case .error = $0 { true } else { false } }) { #expect(i == events.count - 1) }
            // What parsing noted of the common names is what a scan of the fields finds.
            for request in requests(events) {
                for (common, name) in commonNames {
                    #expect(request.headers[common] == request.headers.fields.first { equalsIgnoringASCIICase($0.name, name) }?.value)
                }
            }
        }
    }

    /// Headers live in their wire form: lookups ignore case, a value cannot smuggle a
    /// line break (header injection), and `set` replaces every earlier field of that name.
    @Test func headersKeepTheirWireFormAndRefuseLineBreaks() {
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("X-Tag", "a")])
        headers.add("x-tag", "b\r\nInjected: yes")
        headers.add("Bad:Name", "v")
        #expect(String(decoding: headers.wire, as: UTF8.self)
            == "Content-Type: application/json\r\nX-Tag: a\r\nx-tag: bInjected: yes\r\nBadName: v\r\n")
        #expect(headers["content-type"] == "application/json")
        #expect(headers["X-TAG"] == "a")
        #expect(headers.values("x-tag") == ["a", "bInjected: yes"])
        #expect(headers["Injected"] == nil)
        #expect(headers.value(.contentType, hasPrefix: "application/json"))
        #expect(!headers.value(.contentType, hasPrefix: "text/csv"))
        headers.set("X-Tag", "c")
        #expect(headers.values("X-Tag") == ["c"])
        #expect(headers.fields.map(\.name) == ["Content-Type", "BadName", "X-Tag"])
        var empty = HTTPHeaders()
        empty.add("X-Empty", "")
        #expect(empty["x-empty"] == "")
        #expect(empty["missing"] == nil)
    }

    /// The names looked up on every request are found through what adding a field noted, not a
    /// scan: for random fields (those names in any case, repeated, look-alikes of the same length,
    /// values with line breaks dropped), parsed or added, each gives what a scan of the fields gives.
    @Test func commonNamesAreFoundAsAScanFindsThem() throws {
        let names = ["Authorization", "AUTHORIZATION", "content-type", "Content-Typf", "X-Request-Id", "x-request-ie", "x-routing-key",
                     "Inference-Header-Content-Length", "inference-header-content-lengtH", "X-Other", "x-routing-kez", "Host"]
        var random = SystemRandomNumberGenerator()
        for round in 0..<300 {
            let fields = (0..<Int.random(in: 0...9, using: &random)).map { k in
                (names.randomElement(using: &random)!, "v\(round)-\(k)", Bool.random(using: &random) ? "\r\n" : "")
            }
            let added = HTTPHeaders(fields.map { ($0.0, $0.1 + $0.2) })  // the line break is dropped
            var wire = "POST / HTTP/1.1\r\nHost: h\r\n"
            for (name, value, _) in fields where name != "Host" { wire += "\(name): \(value)\r\n" }
            let parsed = try #require(requests(parse(Array((wire + "\r\n").utf8))).first).headers
            for headers in [added, parsed] {
                for common in HTTPHeaders.Common.allCases {
                    let name = commonNames[common]!
                    let scanned = headers.fields.first { equalsIgnoringASCIICase($0.name, name) }?.value
                    #expect(headers[common] == scanned, "\(name) in \(fields.map { ($0.0, $0.1) })")
                    #expect(headers[name.uppercased()] == scanned)
                    #expect(headers.withValue(common) { String(decoding: $0, as: UTF8.self) } == scanned)
                }
            }
        }
        var replaced = HTTPHeaders([("Authorization", "Bearer a"), ("authorization", "Bearer b")])
        replaced.set("AUTHORIZATION", "Bearer c")
        #expect(replaced[.authorization] == "Bearer c" && replaced.values("authorization") == ["Bearer c"])
    }
}
