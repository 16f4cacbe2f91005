import CSystem
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One epoll loop on one thread. It shares the server's listening socket
/// (EPOLLEXCLUSIVE) and owns the connections it was given; other threads only call `requestStop()`, which
/// writes the loop's eventfd.
///
/// The loop that accepts a connection gives it to the loop with the fewest (itself on a tie):
/// EPOLLEXCLUSIVE wakes one loop, which takes the whole burst a client opens at once, so without
/// this one loop could serve every connection while the others idle.
///
/// Safety: every mutable field is touched only by the loop's own thread; the
/// only cross-thread operations are the atomic stop flag and connection count, the mailbox of
/// responses handlers give later (`HTTPResponse.later`) and of connections other loops accepted,
/// and the eventfd write that wakes the loop for either.
final class EventLoop: @unchecked Sendable {
    let index: Int
    private let epfd: Int32
    private let listener: Int32
    private let wakeFD: Int32
    private unowned let server: HTTPServer
    private let stopping = Atomic<Bool>(false)
    /// The loop's connections by file descriptor: descriptors are small and reused, so a lookup is one load.
    private var connections: [Connection?] = []
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    /// The parser's output for one read, reused.
    private var parsed: [HTTPRequestParser.Event] = []
    private let limits: HTTPRequestParser.Limits
    /// Out of descriptors (EMFILE, ENFILE): the listener is off this loop's epoll set until a
    /// connection closes or the next sweep, so a full table is not a busy loop of failing accepts.
    private var acceptPaused = false
    /// Numbers connections, so a late response finds its connection and not a later one on the same descriptor.
    private var serial: UInt64 = 0
    /// Responses given later, from other threads: the connection's descriptor and serial, and the
    /// response. `closed` once the loop has ended (its eventfd is gone).
    private let mailbox = Mutex<Mailbox>(Mailbox())
    private struct Mailbox {
        var closed = false
        var items: [(fd: Int32, serial: UInt64, response: HTTPResponse)] = []
        /// Connections another loop accepted for this one.
        var adopted: [Int32] = []
    }
    /// The connections this loop owns, and those on their way to it: what the accepting loop balances.
    let load = Atomic<Int>(0)
    /// Every loop of the server, this one included; set before the loops start, emptied when this one ends.
    var peers: [EventLoop] = []
    /// The loop's thread (its /proc/self/task entry) once it runs; 0 before.
    let threadID = Atomic<Int32>(0)

    /// Output beyond this stops reading from the connection until the client reads.
    private static let outputHighWater = 1 << 20

    init(index: Int, listener: Int32, server: HTTPServer) throws(IOError) {
        self.index = index
        self.listener = listener
        self.server = server
        limits = server.parserLimits
        epfd = try Epoll.create()
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw IOError(errno: errno, function: "eventfd") }
        try Epoll.control(epfd, Epoll.add, listener, events: Epoll.readable | UInt32(EPOLLEXCLUSIVE.rawValue))
        try Epoll.control(epfd, Epoll.add, wakeFD, events: Epoll.readable)
    }

    func requestStop() {
        stopping.store(true, ordering: .releasing)
        wake()
    }

    /// Wakes the loop: to stop, to deliver late responses, or to begin draining.
    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// The loop has let go of the listener: the server is draining.
    private var detached = false
    /// Connections read in this batch of events, whose responses go out once the batch is handled.
    private var answered: [Connection] = []

    /// Sends the responses of this batch of events, one connection after another. Sending each as
    /// soon as it was written woke its client at once, and a client sharing the core (a load
    /// generator, a sidecar) preempted the loop at that send. Sent together once the batch is
    /// handled, the loop runs its own code and the kernel's send path each in one stretch and is
    /// preempted about half as often (7,600 → 4,000 times a second per loop at 64 keep-alive
    /// connections here); a response waits at most for the rest of its batch.
    private func flushAnswered() {
        for connection in answered where self.connection(connection.fd) === connection { flush(connection) }
        answered.removeAll(keepingCapacity: true)
    }

    /// How a loop waits: asleep until an event (or the next timeout sweep), or, within a busy-poll
    /// window (`Configuration.busyPoll`) after it answered a batch of events, looking without sleeping.
    struct Waiting {
        /// The window's length, ns; 0 when busy polling is off.
        let window: UInt64
        /// The monotonic time the current window ends; 0 outside one.
        private(set) var until: UInt64 = 0

        init(busyPoll seconds: Double) {
            window = UInt64(max(0, min(seconds, HTTPServer.Configuration.maxBusyPoll)) * 1e9)
        }

        /// epoll_wait's timeout at `now`: 0 (look and return) inside a window, else 100 ms.
        func timeout(now: @autoclosure () -> UInt64) -> Int32 {
            until != 0 && now() < until ? 0 : 100
        }

        /// A batch of events was handled at `now`: look for the next without sleeping until `now + window`.
        mutating func handled(now: @autoclosure () -> UInt64) {
            if window > 0 { until = now() + window }
        }

        /// A sleep found nothing: the loop is idle, and sleeps until work opens a window again.
        mutating func sleptIdle() { until = 0 }
    }

    func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var lastSweep = csystem_coarse_ns()
        var waiting = Waiting(busyPoll: server.configuration.busyPoll)
        threadID.store(csystem_thread_id(), ordering: .relaxed)
        while !stopping.load(ordering: .acquiring) {
            let timeout = waiting.timeout(now: csystem_monotonic_ns())
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, 256, timeout) }
            if n < 0 && errno != EINTR { break }
            if n <= 0 {
                if timeout == 0 {
                    sched_yield()  // a look found nothing yet: whatever else is runnable on this core (a client) goes first
                    continue
                }
                waiting.sleptIdle()
            }
            for i in 0..<max(0, Int(n)) {
                let fd = events[i].data.fd
                let flags = events[i].events
                if fd == listener {
                    if !detached { acceptAll() }
                } else if fd == wakeFD {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    if !detached && server.isDraining { beginDraining() }
                    deliverLater()
                } else if let connection = connection(fd) {
                    if flags & Epoll.readable != 0 || flags & Epoll.hangup != 0 { readFrom(connection) }
                    if flags & Epoll.writable != 0, self.connection(fd) === connection { flush(connection) }
                }
            }
            flushAnswered()
            if n > 0 { waiting.handled(now: csystem_monotonic_ns()) }
            let now = csystem_coarse_ns()
            if now - lastSweep >= 100_000_000 {
                sweepTimeouts(now)
                lastSweep = now
            }
        }
        closeAll()
    }

    func closeAll() {
        for case let connection? in connections { closeConnection(connection.fd) }
        let adopted = mailbox.withLock { box in
            defer { box = Mailbox(closed: true) }
            return box.adopted
        }
        for fd in adopted {  // given by another loop after this one's last look
            close(fd)
            load.wrappingSubtract(1, ordering: .relaxed)
            server.connectionCount.wrappingSubtract(1, ordering: .relaxed)
        }
        peers = []
        close(wakeFD)
        close(epfd)
    }

    private func connection(_ fd: Int32) -> Connection? {
        Int(fd) < connections.count ? connections[Int(fd)] : nil
    }

    // MARK: - Accept

    private func acceptAll() {
        while true {
            let fd = csystem_accept_nonblocking(listener)
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED, EPROTO:
                    continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // The connection waits in the backlog. The listener stays readable, and epoll is
                    // level-triggered, so leaving it armed would spin: take it off until a descriptor frees.
                    pauseAccepting()
                    return
                default:
                    return  // EAGAIN: drained (another loop may have taken it)
                }
            }
            let open = server.connectionCount.wrappingAdd(1, ordering: .relaxed).newValue
            if open > server.maxConnections {
                var out: [UInt8] = []
                HTTPResponse.error(503, "too many connections (limit \(server.maxConnections)); retry later", close: true)
                    .serialize(into: &out, keepAlive: false)
                _ = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(fd)
                server.connectionCount.wrappingSubtract(1, ordering: .relaxed)
                server.observer?(index, 503, 0)
                continue
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let target = leastLoaded()
            target.load.wrappingAdd(1, ordering: .relaxed)
            if target === self {
                own(fd)
            } else if !target.adopt(fd) {  // that loop has ended: the server is stopping
                target.load.wrappingSubtract(1, ordering: .relaxed)
                close(fd)
                server.connectionCount.wrappingSubtract(1, ordering: .relaxed)
            }
        }
    }

    /// The loop with the fewest connections; this one when it has no more than that.
    private func leastLoaded() -> EventLoop {
        var best = self
        var fewest = load.load(ordering: .relaxed)
        for peer in peers where peer !== self {
            let count = peer.load.load(ordering: .relaxed)
            if count < fewest { (best, fewest) = (peer, count) }
        }
        return best
    }

    /// From the accepting loop's thread: hands this loop a connection; false when the loop has ended.
    private func adopt(_ fd: Int32) -> Bool {
        mailbox.withLock { box in
            guard !box.closed else { return false }
            box.adopted.append(fd)
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
            return true
        }
    }

    /// Takes a connection (its `load` already counted) into this loop's epoll set. One handed over
    /// after this loop began draining is treated as draining treats an idle one: a request already
    /// sent on it is answered with `Connection: close`, else it closes.
    private func own(_ fd: Int32) {
        serial &+= 1
        let connection = Connection(fd: fd, serial: serial, limits: limits, now: csystem_coarse_ns())
        if Int(fd) >= connections.count { connections.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - connections.count)) }
        connections[Int(fd)] = connection
        do {
            try Epoll.control(epfd, Epoll.add, fd, events: Epoll.readable | UInt32(EPOLLRDHUP.rawValue))
        } catch {
            closeConnection(fd)
            return
        }
        if detached { readFrom(connection) }
    }

    private func pauseAccepting() {
        guard !acceptPaused, !detached else { return }
        acceptPaused = true
        server.acceptPauses.wrappingAdd(1, ordering: .relaxed)
        try? Epoll.control(epfd, Epoll.delete, listener, events: 0)
    }

    private func resumeAccepting() {
        guard acceptPaused, !detached else { return }
        acceptPaused = false
        try? Epoll.control(epfd, Epoll.add, listener, events: Epoll.readable | UInt32(EPOLLEXCLUSIVE.rawValue))
    }

    // MARK: - Draining

    /// Lets go of the listener (the server closes it once every loop has) and closes the idle
    /// connections; a request already sent on one is read first and answered with `Connection: close`.
    private func beginDraining() {
        detached = true
        if !acceptPaused { try? Epoll.control(epfd, Epoll.delete, listener, events: 0) }
        server.drainDetached.leave()
        for case let connection? in connections where connection.isIdle { readFrom(connection) }  // flush closes it when still idle
    }

    // MARK: - Reading and handling

    private func readFrom(_ connection: Connection) {
        let fd = connection.fd
        var received = 0
        while received < 4 * readBuffer.count {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 {
                connection.peerClosed = true
                break
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                closeConnection(fd)
                return
            }
            received += n
            let now = csystem_coarse_ns()
            connection.lastActivity = now
            if !connection.closing {
                let outcome = readBuffer.withUnsafeBytes {
                    server.process(UnsafeRawBufferPointer(rebasing: $0[0..<n]), parser: &connection.parser, events: &parsed, output: &connection.output, loop: index)
                }
                switch outcome {
                case .open: break
                case .close: connection.closing = true
                case .later(let deferred):
                    swap(&connection.waiting, &parsed)  // the pipelined requests after it wait their turn
                    parsed.removeAll(keepingCapacity: true)
                    wait(for: deferred, on: connection)
                }
            }
            if connection.parser.phase == .idle {
                connection.requestStarted = nil
            } else if connection.requestStarted == nil {
                connection.requestStarted = now
            }
            if connection.awaiting != nil || connection.output.count - connection.outputOffset > Self.outputHighWater { break }
            // A short read emptied the socket: skip the recv that would only say EAGAIN. The
            // epoll interest is level-triggered, so bytes that arrive later wake the loop again.
            if n < readBuffer.count { break }
        }
        if connection.peerClosed {
            connection.closing = true
        }
        answered.append(connection)
    }

    // MARK: - Responses given later

    /// Reading stops until the response arrives (flush leaves the connection's read interest off).
    private func wait(for deferred: HTTPServer.Deferred, on connection: Connection) {
        connection.awaiting = deferred
        let (fd, serial) = (connection.fd, connection.serial)
        if let ready = deferred.promise.deliver(to: { [self] response in post(fd, serial, response) }) {
            resume(connection, with: ready)
        }
    }

    /// From any thread: queues a late response for the loop and wakes it.
    private func post(_ fd: Int32, _ serial: UInt64, _ response: HTTPResponse) {
        mailbox.withLock { box in
            guard !box.closed else { return }
            box.items.append((fd, serial, response))
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    private func deliverLater() {
        let (items, adopted) = mailbox.withLock { box in
            defer { (box.items, box.adopted) = ([], []) }
            return (box.items, box.adopted)
        }
        for fd in adopted { own(fd) }
        for item in items {
            guard let connection = connection(item.fd), connection.serial == item.serial, connection.awaiting != nil else { continue }  // the client has gone
            resume(connection, with: item.response)
            flush(connection)
        }
    }

    /// Writes the late response, then answers the requests that waited behind it.
    private func resume(_ connection: Connection, with response: HTTPResponse) {
        guard let deferred = connection.awaiting else { return }
        connection.awaiting = nil
        connection.lastActivity = csystem_coarse_ns()
        guard server.complete(deferred, with: response, into: &connection.output, loop: index) else {
            connection.closing = true
            connection.waiting.removeAll()
            return
        }
        switch server.respond(to: &connection.waiting, output: &connection.output, loop: index) {
        case .open: break
        case .close:
            connection.closing = true
            connection.waiting.removeAll()
        case .later(let next):
            wait(for: next, on: connection)
        }
    }

    // MARK: - Writing

    private func flush(_ connection: Connection) {
        let fd = connection.fd
        while connection.outputOffset < connection.output.count {
            let n = connection.output.withUnsafeBytes {
                send(fd, $0.baseAddress! + connection.outputOffset, $0.count - connection.outputOffset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                closeConnection(fd)
                return
            }
            connection.outputOffset += n
            connection.lastWrite = csystem_coarse_ns()
        }
        if connection.outputOffset == connection.output.count {
            connection.output.removeAll(keepingCapacity: connection.output.capacity <= 1 << 16)
            connection.outputOffset = 0
            if connection.closing || (detached && connection.isIdle) {
                closeConnection(fd)
                return
            }
        }
        let pending = connection.output.count > connection.outputOffset
        let wantRead = !connection.closing && connection.awaiting == nil && connection.output.count - connection.outputOffset <= Self.outputHighWater
        let interest = (wantRead ? Epoll.readable | UInt32(EPOLLRDHUP.rawValue) : 0) | (pending ? Epoll.writable : 0)
        if interest != connection.interest {
            connection.interest = interest
            try? Epoll.control(epfd, Epoll.modify, fd, events: interest)
        }
        if pending && connection.writeStalledSince == nil { connection.writeStalledSince = csystem_coarse_ns() }
        if !pending { connection.writeStalledSince = nil }
    }

    private func closeConnection(_ fd: Int32) {
        guard connection(fd) != nil else { return }
        connections[Int(fd)] = nil
        _ = try? Epoll.control(epfd, Epoll.delete, fd, events: 0)
        close(fd)
        load.wrappingSubtract(1, ordering: .relaxed)
        server.connectionCount.wrappingSubtract(1, ordering: .relaxed)
        resumeAccepting()
    }

    // MARK: - Timeouts

    private func sweepTimeouts(_ now: UInt64) {
        let c = server.configuration
        // Another loop or process may have freed a descriptor: one accept attempt per sweep.
        resumeAccepting()
        for case let connection? in connections {
            let fd = connection.fd
            if let stalled = connection.writeStalledSince, Double(now - max(stalled, connection.lastWrite)) / 1e9 > c.writeTimeout {
                closeConnection(fd)
                continue
            }
            if connection.awaiting != nil { continue }  // the handler answers within its own deadline
            if let started = connection.requestStarted, !connection.closing {
                let limit = connection.parser.phase == .body ? c.bodyTimeout : c.headerTimeout
                if Double(now - started) / 1e9 > limit {
                    let what = connection.parser.phase == .body ? "body" : "head"
                    let seconds = limit < 1e6 ? "\(Int(limit))" : "\(limit)"
                    HTTPResponse.error(408, "the request \(what) did not arrive within \(seconds) s", close: true)
                        .serialize(into: &connection.output, keepAlive: false)
                    server.observer?(index, 408, 0)
                    connection.closing = true
                    flush(connection)
                    continue
                }
            } else if connection.output.isEmpty, Double(now - connection.lastActivity) / 1e9 > c.idleTimeout {
                closeConnection(fd)
            }
        }
    }
}

/// A connection's state, owned by its loop. Its times are from the coarse
/// monotonic clock (`csystem_coarse_ns`), which is enough for timeouts.
final class Connection {
    let fd: Int32
    let serial: UInt64
    var parser: HTTPRequestParser
    var output: [UInt8] = []
    var outputOffset = 0
    var lastActivity: UInt64
    var lastWrite: UInt64 = 0
    var requestStarted: UInt64?
    var writeStalledSince: UInt64?
    var closing = false
    var peerClosed = false
    /// The request whose response a handler gives later, and the parsed requests behind it.
    var awaiting: HTTPServer.Deferred?
    var waiting: [HTTPRequestParser.Event] = []
    var interest: UInt32 = Epoll.readable | UInt32(EPOLLRDHUP.rawValue)

    /// Nothing in flight: no request begun, nothing to write, no response awaited.
    var isIdle: Bool { parser.phase == .idle && awaiting == nil && waiting.isEmpty && outputOffset == output.count }

    init(fd: Int32, serial: UInt64, limits: HTTPRequestParser.Limits, now: UInt64) {
        self.fd = fd
        self.serial = serial
        parser = HTTPRequestParser(limits: limits)
        lastActivity = now
        output.reserveCapacity(4096)
    }
}
