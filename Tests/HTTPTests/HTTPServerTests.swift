import Foundation
@testable import HTTP
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An echo server: the response body is "METHOD TARGET BODY".
func echoServer(_ configure: (inout HTTPServer.Configuration) -> Void = { _ in }) throws -> HTTPServer {
    var configuration = HTTPServer.Configuration(threads: 2)
    configure(&configuration)
    let server = HTTPServer(configuration: configuration) { request, _ in
        HTTPResponse(status: 200, contentType: "text/plain", body: "\(request.method) \(request.target) \(String(decoding: request.body, as: UTF8.self))")
    }
    try server.start()
    return server
}

func residentKiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ")[1]) ?? 0
    }
    return 0
}

/// Polls `condition` until it holds or `deadline` seconds pass (a deadline that only fails a hung test).
func waitUntil(deadline: Double = 20, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(deadline)
    while Date() < end {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// The scheduler state of one of this process's threads, from /proc: "S" asleep, "R" running or runnable.
func threadState(_ tid: Int32) -> String? {
    guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    return stat[close...].split(separator: " ").dropFirst().first.map(String.init)
}

@Suite(.serialized) struct HTTPServerTests {
    @Test func keepAliveAndPipelining() throws {
        let server = try echoServer()
        defer { server.stop() }
        let client = HTTPClient(port: server.port)
        for i in 0..<50 {
            let r = try client.request("POST", "/x?i=\(i)", body: Array("body\(i)".utf8))
            #expect(r.status == 200)
            #expect(r.text == "POST /x?i=\(i) body\(i)")
        }
        // Three requests in one write come back in order on one connection.
        let raw = HTTPClient(port: server.port)
        try raw.sendRaw(Array("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".utf8))
        #expect(try raw.readResponse().text == "GET /1 ")
        #expect(try raw.readResponse().text == "POST /2 abc")
        let last = try raw.readResponse()
        #expect(last.text == "GET /3 " && last.headers["Connection"] == "close")
    }

    /// A handler that answers later (a long poll) holds only its own connection: on a one-thread
    /// server another client is answered meanwhile, the requests pipelined behind the held one
    /// wait their turn and come back in order, and a promise fulfilled before the loop saw it works too.
    @Test func aResponseGivenLaterHoldsOnlyItsConnection() throws {
        let held = Mutex<[HTTPPromise]>([])
        let server = HTTPServer(configuration: .init(threads: 1)) { request, _ in
            switch request.path {
            case "/hold":
                let promise = HTTPPromise()
                held.withLock { $0.append(promise) }
                var response = HTTPResponse.later(promise)
                response.headers.add("x-request-id", "r1")
                return response
            case "/ready":
                let promise = HTTPPromise()
                promise.fulfil(HTTPResponse(status: 200, contentType: "text/plain", body: "at once"))
                return .later(promise)
            default:
                return HTTPResponse(status: 200, contentType: "text/plain", body: "\(request.path)")
            }
        }
        try server.start()
        defer { server.stop() }
        let raw = HTTPClient(port: server.port)
        try raw.sendRaw(Array("GET /hold HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\nGET /ready HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(waitUntil { held.withLock { $0.count } == 1 })
        // The loop is free: another connection is answered while /hold waits.
        #expect(try HTTPClient(port: server.port).request("GET", "/other").text == "/other")
        held.withLock { $0[0] }.fulfil(HTTPResponse(status: 201, contentType: "text/plain", body: "late"))
        let first = try raw.readResponse()
        #expect(first.status == 201 && first.text == "late" && first.headers["x-request-id"] == "r1")
        #expect(try raw.readResponse().text == "/after")
        #expect(try raw.readResponse().text == "at once")
        // A promise fulfilled after its client left is dropped, and the server carries on.
        let gone = HTTPClient(port: server.port)
        try gone.sendRaw(Array("GET /hold HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(waitUntil { held.withLock { $0.count } == 2 })
        gone.close()
        held.withLock { $0[1] }.fulfil(HTTPResponse(status: 200))
        #expect(try HTTPClient(port: server.port).request("GET", "/still").text == "/still")
    }

    /// Drain (SIGTERM on a serve): new connections are refused, an idle keep-alive connection is
    /// closed, a request in flight still gets its answer, with `Connection: close`, and drain
    /// returns once it has, with nothing cut off.
    @Test func drainFinishesWhatIsInFlightAndRefusesNewConnections() throws {
        let held = Mutex<[HTTPPromise]>([])
        let server = HTTPServer(configuration: .init(threads: 2)) { request, _ in
            if request.path == "/hold" {
                let promise = HTTPPromise()
                held.withLock { $0.append(promise) }
                return .later(promise)
            }
            return HTTPResponse(status: 200, contentType: "text/plain", body: "\(request.path)")
        }
        let port = try server.start()
        let idle = HTTPClient(port: port, timeout: 20)
        #expect(try idle.request("GET", "/a").text == "/a")  // kept alive, now idle
        let busy = HTTPClient(port: port, timeout: 20)
        try busy.sendRaw(Array("GET /hold HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(waitUntil { held.withLock { $0.count } == 1 })

        let left = Mutex<Int?>(nil)
        Thread { let n = server.drain(timeout: 60); left.withLock { $0 = n } }.start()
        #expect(idle.readUntilClosed().isEmpty, "the idle connection is closed without a word")
        #expect(waitUntil { (try? connectTCP(host: "127.0.0.1", port: port, timeout: 5)).map { close($0); return false } ?? true },
                "new connections are refused")
        #expect(left.withLock { $0 } == nil, "drain waits for the request in flight")
        held.withLock { $0[0] }.fulfil(HTTPResponse(status: 200, contentType: "text/plain", body: "late"))
        let answer = try busy.readResponse()
        #expect(answer.text == "late" && answer.headers["Connection"] == "close")
        #expect(busy.readUntilClosed().isEmpty)
        #expect(waitUntil { left.withLock { $0 } != nil })
        #expect(left.withLock { $0 } == 0, "nothing was cut off")
    }

    /// A request that does not finish within the drain timeout is cut off, and drain says so.
    @Test func drainCutsOffWhatOutlastsItsTimeout() throws {
        let held = Mutex<[HTTPPromise]>([])
        let server = HTTPServer(configuration: .init(threads: 1)) { _, _ in
            let promise = HTTPPromise()
            held.withLock { $0.append(promise) }
            return .later(promise)
        }
        let port = try server.start()
        let busy = HTTPClient(port: port, timeout: 20)
        try busy.sendRaw(Array("GET /never HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(waitUntil { held.withLock { $0.count } == 1 })
        #expect(server.drain(timeout: 0.2) == 1)
        #expect(busy.readUntilClosed().isEmpty)
    }

    @Test func malformedRequestsGet400AndTheConnectionCloses() throws {
        let server = try echoServer()
        defer { server.stop() }
        let raw = HTTPClient(port: server.port)
        try raw.sendRaw(Array("GARBAGE\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        let text = String(decoding: raw.readUntilClosed(), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(text.contains(#"{"error":"malformed request line"}"#))
        #expect(!text.contains("HTTP/1.1 200"))  // nothing after the error is served
    }

    @Test func limitsAnswer431And413() throws {
        let server = try echoServer { $0.headBytes = 1024; $0.bodyBytes = 2048 }
        defer { server.stop() }
        let big = HTTPClient(port: server.port)
        #expect(try big.request("GET", "/", headers: [("X-Big", String(repeating: "a", count: 2000))]).status == 431)
        let body = HTTPClient(port: server.port)
        #expect(try body.request("POST", "/", body: [UInt8](repeating: 65, count: 4096)).status == 413)
        #expect(try HTTPClient(port: server.port).request("POST", "/", body: [UInt8](repeating: 65, count: 2048)).status == 200)
    }

    @Test func slowClientsGet408AndIdleOnesAreClosed() throws {
        let server = try echoServer { $0.headerTimeout = 0.5; $0.bodyTimeout = 0.5; $0.idleTimeout = 0.5 }
        defer { server.stop() }
        // Slowloris: a byte at a time, never finishing the head.
        let slow = HTTPClient(port: server.port, timeout: 5)
        try slow.sendRaw(Array("GET / HTTP/1.1\r\nHost: h\r\n".utf8))
        for _ in 0..<3 {
            usleep(200_000)
            try? slow.sendRaw(Array("X".utf8))
        }
        let text = String(decoding: slow.readUntilClosed(), as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 408"))
        // Blank lines before a request line start the head's clock too (they used to hold a slot forever).
        let blank = HTTPClient(port: server.port, timeout: 5)
        try blank.sendRaw(Array("\r\n".utf8))
        #expect(String(decoding: blank.readUntilClosed(), as: UTF8.self).hasPrefix("HTTP/1.1 408"))
        // A body that stops arriving.
        let stalled = HTTPClient(port: server.port, timeout: 5)
        try stalled.sendRaw(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc".utf8))
        #expect(String(decoding: stalled.readUntilClosed(), as: UTF8.self).hasPrefix("HTTP/1.1 408"))
        // An idle keep-alive connection is closed without a response.
        let idle = HTTPClient(port: server.port, timeout: 5)
        #expect(try idle.request("GET", "/").status == 200)
        #expect(idle.readUntilClosed().isEmpty)
    }

    /// The issue-14 attack: a 1-byte chunk, then a chunk size of Int.max. The sum used to
    /// overflow and trap, killing the process; now it is 413 and the server goes on.
    @Test func aHugeChunkSizeIs413AndTheServerLives() throws {
        let server = try echoServer()
        defer { server.stop() }
        let raw = HTTPClient(port: server.port, timeout: 5)
        try raw.sendRaw(Array("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n7fffffffffffffff\r\n".utf8))
        #expect(String(decoding: raw.readUntilClosed(), as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        #expect(try HTTPClient(port: server.port).request("GET", "/").status == 200)
    }

    @Test func connectionsBeyondTheLimitGet503() throws {
        let server = try echoServer { $0.maxConnections = 4; $0.threads = 1 }
        defer { server.stop() }
        var held: [HTTPClient] = []
        for _ in 0..<4 {
            let c = HTTPClient(port: server.port)
            #expect(try c.request("GET", "/").status == 200)
            held.append(c)
        }
        let extra = HTTPClient(port: server.port)
        #expect(try extra.request("GET", "/").status == 503)
        held[0].close()
        // The slot frees when the loop sees the close: wait for it rather than for a fixed time.
        #expect(waitUntil { server.connections < 4 })
        #expect(try HTTPClient(port: server.port).request("GET", "/").status == 200)
    }

    /// Connections a client opens at once are spread over the loops: the loop that accepts them
    /// gives each to the loop with the fewest, a connection stays on its loop, and a closed one
    /// frees its place. (Loops accepting at the same moment may both pick the same one, so the
    /// spread is checked within a margin, not exactly even.)
    @Test func connectionsOpenedTogetherAreSpreadOverTheLoops() throws {
        let server = HTTPServer(configuration: .init(threads: 3)) { _, context in
            HTTPResponse(status: 200, contentType: "text/plain", body: "\(context.loop)")
        }
        try server.start()
        defer { server.stop() }
        func loop(_ client: HTTPClient) throws -> Int { Int(try client.request("GET", "/").text)! }
        func counts(_ loops: [Int]) -> [Int] { (0..<3).map { l in loops.count { $0 == l } } }
        // All 12 are connected (in the listener's backlog) before the first request is sent.
        let clients = (0..<12).map { _ in HTTPClient(port: server.port) }
        for c in clients { try c.connect() }
        let placed = try clients.map(loop)
        #expect(counts(placed).allSatisfy { (2...6).contains($0) }, "\(counts(placed))")
        #expect(try clients.map(loop) == placed)
        // Up to 4 on the busiest loop close; as many new ones keep the spread.
        let busiest = counts(placed).indices.max { counts(placed)[$0] < counts(placed)[$1] }!
        let closing = clients.indices.filter { placed[$0] == busiest }.prefix(4)
        for i in closing { clients[i].close() }
        #expect(waitUntil { server.connections == 12 - closing.count })
        let more = (0..<closing.count).map { _ in HTTPClient(port: server.port) }
        for c in more { try c.connect() }
        let after = try clients.indices.filter { !closing.contains($0) }.map { placed[$0] } + more.map(loop)
        #expect(counts(after).allSatisfy { (2...6).contains($0) }, "\(counts(after))")
    }

    /// Busy polling (`Configuration.busyPoll`): answering a batch opens a window in which the loop
    /// looks for events without sleeping, measured from the answer; a sleep that finds nothing
    /// closes it. Times are injected (ns).
    @Test func aBusyPollWindowOpensOnWorkAndClosesWhenTheLoopSleepsIdle() {
        var off = EventLoop.Waiting(busyPoll: 0)
        off.handled(now: 1_000)
        #expect(off.timeout(now: 1_001) == 100)

        var waiting = EventLoop.Waiting(busyPoll: 50e-6)
        #expect(waiting.timeout(now: 0) == 100)  // no work yet: sleep
        waiting.handled(now: 1_000)
        #expect(waiting.timeout(now: 1_000) == 0)
        #expect(waiting.timeout(now: 50_999) == 0)
        #expect(waiting.timeout(now: 51_000) == 100)  // it has ended: sleep
        waiting.handled(now: 40_000)  // more work extends it
        #expect(waiting.timeout(now: 89_999) == 0)
        #expect(waiting.timeout(now: 90_000) == 100)
        waiting.sleptIdle()  // a sleep that found nothing closes it
        #expect(waiting.timeout(now: 40_001) == 100)

        #expect(EventLoop.Waiting(busyPoll: 5).window == 10_000_000)  // at most maxBusyPoll
        #expect(EventLoop.Waiting(busyPoll: -1).window == 0)
        #expect(EventLoop.Waiting(busyPoll: .nan).window == 0)
    }

    /// A busy-polling server answers as any other (keep-alive, pipelining, connections from
    /// several threads at once), and once the traffic stops each loop's thread goes back to sleep
    /// in epoll_wait: it does not spin while idle.
    @Test func aBusyPollingServerAnswersAndSleepsOnceIdle() throws {
        let server = try echoServer { $0.busyPoll = 0.0002 }
        defer { server.stop() }
        let client = HTTPClient(port: server.port)
        for i in 0..<200 {
            let r = try client.request("POST", "/p?i=\(i)", body: Array("b\(i)".utf8))
            #expect(r.status == 200 && r.text == "POST /p?i=\(i) b\(i)")
        }
        let raw = HTTPClient(port: server.port)
        try raw.sendRaw(Array("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(try raw.readResponse().text == "GET /1 ")
        #expect(try raw.readResponse().text == "GET /2 ")
        let wrong = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 6) { k in
            let client = HTTPClient(port: server.port)
            for i in 0..<50 {
                let r = try? client.request("POST", "/c\(k)", body: Array("\(i)".utf8))
                if r?.text != "POST /c\(k) \(i)" { wrong.add(1, ordering: .relaxed) }
            }
        }
        #expect(wrong.load(ordering: .relaxed) == 0)

        let threads = server.loopThreadIDs
        #expect(threads.count == 2 && threads.allSatisfy { $0 > 0 })
        #expect(waitUntil { threads.allSatisfy { threadState($0) == "S" } }, "an idle loop is still running: \(threads.map { threadState($0) ?? "?" })")
    }

    @Test func survivesFuzzingAndKeepsServingWithoutGrowing() throws {
        let server = try echoServer()
        defer { server.stop() }
        let valid = Array("POST /v2/models/credit/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"inputs\": 1}".utf8)
        var random = SystemRandomNumberGenerator()
        func round(_ count: Int) throws {
            for i in 0..<count {
                var bytes: [UInt8]
                if i % 5 == 0 {
                    bytes = (0..<Int.random(in: 1...512, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                } else {
                    bytes = mutated(valid, edits: 1...8, &random)
                }
                let c = HTTPClient(port: server.port, timeout: 0.3)
                try? c.sendRaw(bytes)
                c.close()  // hang up mid-request, as fuzzers and crashed clients do
            }
        }
        try round(1500)
        #expect(waitUntil { server.connections == 0 })
        let before = residentKiB()
        try round(1500)
        #expect(waitUntil { server.connections == 0 })
        let after = residentKiB()
        // Valid requests still work, on every loop.
        for _ in 0..<20 { #expect(try HTTPClient(port: server.port).request("POST", "/ok", body: [65]).text == "POST /ok A") }
        #expect(after - before < 8 * 1024, "RSS grew from \(before) KiB to \(after) KiB")
        #expect(waitUntil { server.connections == 0 })
    }
}

@Suite struct HTTPServerBindingTests {
    @Test func aSecondServerOnTheSamePortFailsInsteadOfSharingIt() throws {
        let first = try echoServer()
        defer { first.stop() }
        let second = HTTPServer(configuration: .init(port: first.port, threads: 2)) { _, _ in HTTPResponse(status: 500) }
        #expect { try second.start() } throws: { ($0 as? IOError)?.errno == EADDRINUSE }
        // Both loops of the first server accept: many connections all get answers.
        for _ in 0..<40 { #expect(try HTTPClient(port: first.port).request("GET", "/").status == 200) }
    }
}
