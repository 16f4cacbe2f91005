import CSystem
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/1.1 server on epoll: one event loop per thread, all waiting on one
/// listening socket with EPOLLEXCLUSIVE (one loop is woken per connection, and gives it to the
/// loop with the fewest; no SO_REUSEPORT, so a second server on the same port fails), keep-alive,
/// pipelining, Content-Length and chunked bodies, and limits on every size and
/// time a client controls. The handler runs on the loop thread that read the
/// request, so it must be quick (scoring is microseconds) and thread-safe.
public final class HTTPServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        /// 0 picks a free port; `start()` returns the one bound.
        public var port: Int
        public var threads: Int
        public var headBytes: Int
        public var bodyBytes: Int
        /// From a request's first byte to the end of its head (408 and close).
        public var headerTimeout: Double
        /// From a request's first byte to the end of its body (408 and close).
        public var bodyTimeout: Double
        /// A keep-alive connection with nothing in flight is closed after this.
        public var idleTimeout: Double
        /// A response the client does not read for this long closes the connection.
        public var writeTimeout: Double
        /// Connections beyond this get 503 and are closed.
        public var maxConnections: Int
        /// After answering a batch of events, a loop keeps looking for more this long (seconds, at
        /// most `maxBusyPoll`) before it sleeps, giving its core to anything else runnable between looks.
        /// A request arriving meanwhile is read at once: its core never went idle, so it skips the
        /// wake-up of an idle core (tens of µs in a VM) and finds its caches warm. It costs CPU while
        /// requests come in with gaps shorter than this; an idle server sleeps. 0 (the default): off.
        public var busyPoll: Double
        public static let maxBusyPoll = 0.01

        public init(
            host: String = "127.0.0.1", port: Int = 0, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
            headBytes: Int = 16 * 1024, bodyBytes: Int = 1024 * 1024, headerTimeout: Double = 10, bodyTimeout: Double = 30,
            idleTimeout: Double = 75, writeTimeout: Double = 30, maxConnections: Int = 4096, busyPoll: Double = 0
        ) {
            self.busyPoll = busyPoll
            self.host = host
            self.port = port
            self.threads = max(1, threads)
            self.headBytes = headBytes
            self.bodyBytes = bodyBytes
            self.headerTimeout = headerTimeout
            self.bodyTimeout = bodyTimeout
            self.idleTimeout = idleTimeout
            self.writeTimeout = writeTimeout
            self.maxConnections = maxConnections
        }
    }

    /// The request parser's limits under `configuration`.
    package var parserLimits: HTTPRequestParser.Limits {
        var limits = HTTPRequestParser.Limits()
        limits.headBytes = configuration.headBytes
        limits.bodyBytes = configuration.bodyBytes
        return limits
    }

    /// What a handler knows besides the request.
    public struct Context: Sendable {
        /// The event loop (thread) index, for per-thread telemetry.
        public var loop: Int
        /// When the request was complete (monotonic ns).
        public var receivedNanoseconds: UInt64

        package init(loop: Int, receivedNanoseconds: UInt64) {
            self.loop = loop
            self.receivedNanoseconds = receivedNanoseconds
        }
    }

    public typealias Handler = @Sendable (HTTPRequest, Context) -> HTTPResponse
    /// Called after every response, including the server's own 4xx/5xx: loop, status, ns since the request was complete.
    public typealias Observer = @Sendable (_ loop: Int, _ status: Int, _ nanoseconds: UInt64) -> Void

    public let configuration: Configuration
    let handler: Handler
    let observer: Observer?
    let connectionCount = Atomic<Int>(0)
    /// How often a loop stopped accepting because the process was out of descriptors.
    let acceptPauses = Atomic<Int>(0)
    /// `configuration.maxConnections`, clamped by `start()` to what the descriptor limit allows.
    private let connectionLimit = Atomic<Int>(0)
    /// Set by `drain`: responses say `Connection: close`, idle connections close, the loops stop accepting.
    let drainingFlag = Atomic<Bool>(false)
    /// Loops that have let go of the listener since `drain` began.
    let drainDetached = DispatchGroup()
    private let state = Mutex<(loops: [EventLoop], port: Int, listener: Int32)>(([], 0, -1))
    private let finished = DispatchGroup()

    public init(configuration: Configuration = .init(), observer: Observer? = nil, handler: @escaping Handler) {
        self.configuration = configuration
        self.handler = handler
        self.observer = observer
    }

    /// Binds and starts the loops; returns the port.
    @discardableResult
    public func start() throws -> Int {
        let descriptors = Self.raiseDescriptorLimit()
        connectionLimit.store(max(1, min(configuration.maxConnections, descriptors - Self.reservedDescriptors(descriptors))), ordering: .relaxed)
        let listener = try Socket.listen(host: configuration.host, port: configuration.port)
        var loops: [EventLoop] = []
        let port: Int
        do {
            port = try Socket.localPort(listener)
            for index in 0..<configuration.threads {
                loops.append(try EventLoop(index: index, listener: listener, server: self))
            }
        } catch {
            for loop in loops { loop.closeAll() }
            close(listener)
            throw error
        }
        for loop in loops { loop.peers = loops }
        var threads: [Thread] = []
        for loop in loops {
            finished.enter()
            let thread = Thread { [finished] in
                loop.run()
                finished.leave()
            }
            thread.name = "http-loop-\(loop.index)"
            threads.append(thread)
        }
        state.withLock { $0 = (loops, port, listener) }
        for thread in threads { thread.start() }
        return port
    }

    public var port: Int { state.withLock { $0.port } }

    /// The event loops' threads (0 for one not yet running), for tests that look at them in /proc.
    package var loopThreadIDs: [Int32] { state.withLock { $0.loops.map { $0.threadID.load(ordering: .relaxed) } } }

    /// Stops accepting, closes every connection and waits for the loops to end.
    public func stop() {
        let (loops, listener) = state.withLock { ($0.loops, $0.listener) }
        for loop in loops { loop.requestStop() }
        finished.wait()
        if listener >= 0 { close(listener) }
        state.withLock { $0 = ([], 0, -1) }
    }

    /// Drains, then stops: the loops stop accepting and the listener closes (new connections are
    /// refused, so a proxy tries its next upstream), idle keep-alive connections close, and the
    /// requests in flight finish, each answered with `Connection: close`. Returns the connections
    /// still open when `timeout` passed or `giveUp` said yes (they are then cut off); 0 when all finished.
    @discardableResult
    public func drain(timeout: Double, giveUp: () -> Bool = { false }) -> Int {
        let (loops, listener) = state.withLock { ($0.loops, $0.listener) }
        guard !loops.isEmpty, !drainingFlag.exchange(true, ordering: .acquiringAndReleasing) else { return 0 }
        for _ in loops { drainDetached.enter() }
        for loop in loops { loop.wake() }
        let deadline = DispatchTime.now() + .nanoseconds(Int(max(0, min(timeout, 1e6)) * 1e9))
        // A loop lets go of the listener at its next wakeup (a handler holding it delays that).
        if drainDetached.wait(timeout: deadline) == .success, listener >= 0 {
            close(listener)
            state.withLock { $0.listener = -1 }
        }
        while connections > 0 && DispatchTime.now() < deadline && !giveUp() { usleep(5_000) }
        let left = connections
        stop()
        return left
    }

    /// Whether `drain` has begun.
    public var isDraining: Bool { drainingFlag.load(ordering: .relaxed) }

    /// Open connections now.
    public var connections: Int { connectionCount.load(ordering: .relaxed) }

    /// The connection limit in force: the configured one, or less when the descriptor limit is lower.
    public var maxConnections: Int {
        let limit = connectionLimit.load(ordering: .relaxed)
        return limit > 0 ? limit : configuration.maxConnections
    }

    /// Times a loop paused accepting because the process ran out of descriptors.
    public var acceptPauseCount: Int { acceptPauses.load(ordering: .relaxed) }

    /// Descriptors kept for everything but connections (the registry, logs, epoll, eventfds,
    /// models): 64, or a quarter of a small limit.
    static func reservedDescriptors(_ limit: Int) -> Int { min(64, max(8, limit / 4)) }

    /// Raises the soft RLIMIT_NOFILE to the hard limit (as servers do at start) and returns the soft limit now.
    static func raiseDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Int(Int32.max) }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur >= rlim_t(Int32.max) ? Int(Int32.max) : Int(limit.rlim_cur)
    }
}

extension HTTPServer {
    /// What answering a connection's requests left to do.
    package enum Outcome {
        /// Keep the connection open.
        case open
        /// Close it once its output is written.
        case close
        /// A handler answers later; the requests after it wait (see `respond`).
        case later(Deferred)
    }

    /// A request whose response a handler gives later (`HTTPResponse.later`).
    package struct Deferred {
        package var promise: HTTPPromise
        /// Headers the placeholder carried, added to the eventual response.
        var headers: HTTPHeaders
        var keepAlive: Bool
        var head: Bool
        var received: UInt64
    }

    /// Feeds bytes read from a connection to its parser and answers the requests they complete
    /// (`respond`). `events` is scratch space the caller keeps between calls; it is empty
    /// afterwards unless a handler answers later, when it holds the requests still to answer.
    @discardableResult
    package func process(
        _ bytes: UnsafeRawBufferPointer, parser: inout HTTPRequestParser, events: inout [HTTPRequestParser.Event],
        output: inout [UInt8], loop: Int
    ) -> Outcome {
        parser.feed(bytes, into: &events)
        events.reverse()  // taken from the end, in arrival order, moved out rather than copied
        let outcome = respond(to: &events, output: &output, loop: loop)
        if case .later = outcome {} else { events.removeAll(keepingCapacity: true) }
        return outcome
    }

    /// Runs the handler for each parsed event (stored newest first), pipelined ones in order, and
    /// appends the responses to `output`, until one must close the connection or a handler
    /// answers later; then the events after it stay in `events`.
    package func respond(to events: inout [HTTPRequestParser.Event], output: inout [UInt8], loop: Int) -> Outcome {
        while let event = events.popLast() {
            switch event {
            case .request(let wrapped):
                let request = wrapped.request
                let received = monotonicNanoseconds()
                let response = handler(request, Context(loop: loop, receivedNanoseconds: received))
                if let promise = response.promise {
                    return .later(Deferred(promise: promise, headers: response.headers, keepAlive: request.keepAlive, head: request.method == "HEAD", received: received))
                }
                if !write(response, keepAlive: request.keepAlive, head: request.method == "HEAD", received: received, into: &output, loop: loop) {
                    return .close
                }
            case .continueNeeded:
                output.append(contentsOf: "HTTP/1.1 100 Continue\r\n\r\n".utf8)
            case .error(let status, let reason):
                HTTPResponse.error(status, reason, close: true).serialize(into: &output, keepAlive: false)
                observer?(loop, status, 0)
                return .close
            }
        }
        return .open
    }

    /// Writes the response a handler gave later; false when the connection must close after it.
    package func complete(_ deferred: Deferred, with response: HTTPResponse, into output: inout [UInt8], loop: Int) -> Bool {
        var response = response
        var headers = deferred.headers
        for (name, value) in response.headers { headers.add(name, value) }
        response.headers = headers
        return write(response, keepAlive: deferred.keepAlive, head: deferred.head, received: deferred.received, into: &output, loop: loop)
    }

    private func write(_ response: HTTPResponse, keepAlive: Bool, head: Bool, received: UInt64, into output: inout [UInt8], loop: Int) -> Bool {
        var response = response
        if head { response.body = [] }
        let keepAlive = keepAlive && !response.close && !drainingFlag.load(ordering: .relaxed)
        response.serialize(into: &output, keepAlive: keepAlive)
        if response.observed { observer?(loop, response.status, monotonicNanoseconds() - received) }
        return keepAlive
    }
}

/// Sockets, wrapped.
enum Socket {
    static func listen(host: String, port: Int) throws(IOError) -> Int32 {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let isV6: Bool
        if inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &v4.sin_addr) == 1 {
            isV6 = false
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
        } else if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            isV6 = true
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
        } else {
            throw IOError(errno: EINVAL, function: "inet_pton(\(host)): not an IP address")
        }
        let fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError(errno: errno, function: "socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc: Int32 = isV6
            ? withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            : withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw IOError(errno: e, function: "bind(\(host):\(port))")
        }
        guard Glibc.listen(fd, 1024) == 0 else {
            let e = errno
            close(fd)
            throw IOError(errno: e, function: "listen")
        }
        return fd
    }

    static func localPort(_ fd: Int32) throws(IOError) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw IOError(errno: errno, function: "getsockname") }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { pointer in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }
}
