import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// Runs a component: its HTTP server (the control API plus the component's
/// routes), a ticker that takes the per-second sample, follows aliases and
/// refreshes keys, and its record in the fleet directory.
package final class ComponentHost: Sendable {
    package let control: ControlAPI
    package let server: HTTPServer
    private let fleet: (any FleetRecorder)?
    private let stopping = Atomic<Bool>(false)
    private let tickerStarted = Atomic<Bool>(false)
    private let tickerDone = DispatchSemaphore(value: 0)
    /// Set by `nudge()`: the ticker runs the component's tick at once rather than at the next second.
    private let nudged = Atomic<Bool>(false)
    /// Wakes the ticker at once (a nudge, or stop); otherwise it sleeps to the next second.
    private let wake = DispatchSemaphore(value: 0)

    /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
    package static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Checks the security rules before anything binds: a non-loopback address
    /// needs API keys to exist, and `open` (no key for scoring) is loopback only.
    package static func checkExposure(host: String, open: Bool, authenticator: Authenticator) throws {
        if !isLoopback(host) {
            if open {
                throw HTTPError(400, "--open serves predictions without a key, so it is only allowed on a loopback address, not \(host)")
            }
            if !authenticator.hasKeys {
                throw HTTPError(400, "refusing to listen on \(host) with no API keys: anyone could reach it. Create one with 'switchyard keys create --scope admin', or bind 127.0.0.1")
            }
        }
    }

    package init(
        component: any Component, observer: HTTPServer.Observer?, configuration: HTTPServer.Configuration,
        authenticator: Authenticator, events: EventLog, fleet: (any FleetRecorder)?, dependencies: [DependencyHealth] = []
    ) {
        let id = "\(component.kind)-\(ProcessInfo.processInfo.hostName.split(separator: ".").first ?? "host")-\(getpid())"
        let control = ControlAPI(component: component, id: id, authenticator: authenticator, events: events, dependencies: dependencies)
        self.control = control
        self.fleet = fleet
        server = HTTPServer(configuration: configuration, observer: observer) { request, context in
            control.handle(request, context)
        }
    }

    /// Binds, starts the loops and the ticker; returns the bound port.
    @discardableResult
    package func start() throws -> Int {
        let port = try server.start()
        control.record(server)
        let host = server.configuration.host
        let shownHost = host.contains(":") ? "[\(host)]" : host
        control.setURL("http://\(shownHost):\(port)")
        control.events.append("start", "\(control.component.kind) listening on \(control.baseURL)")
        heartbeat()
        let thread = Thread { [self] in
            runTicker()
            tickerDone.signal()
        }
        thread.name = "component-ticker"
        tickerStarted.store(true, ordering: .releasing)
        thread.start()
        return port
    }

    /// Runs the component's tick (alias following) at once, off the caller's thread: the
    /// registry client calls it when an alias moved.
    package func nudge() {
        nudged.store(true, ordering: .releasing)
        wake.signal()
    }

    package var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// Stops the ticker and the server and removes the fleet record.
    package func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake.signal()
        if tickerStarted.load(ordering: .acquiring) { tickerDone.wait() }
        try? fleet?.remove(id: control.id)
        server.stop()
    }

    /// Drains, then stops (a serve on SIGTERM): readiness answers 503 at once; after `delay` (time
    /// for a load balancer to notice) the listener closes, idle keep-alive connections close, and the
    /// requests in flight finish with `Connection: close`, for at most `timeout`. Returns the
    /// connections cut off then (0: every request finished).
    package func drain(delay: Double, timeout: Double, giveUp: () -> Bool = { false }) -> Int {
        let listening = delay > 0 ? "the listener closes in \(JSONWriter.numberText(delay)) s, then " : "the listener closes; "
        control.beginDrain("draining: readiness answers 503; \(listening)requests in flight get up to \(JSONWriter.numberText(timeout)) s")
        let until = DispatchTime.now() + .nanoseconds(Int(max(0, min(delay, 1e6)) * 1e9))
        while DispatchTime.now() < until && !giveUp() { usleep(10_000) }
        let left = server.drain(timeout: timeout, giveUp: giveUp)
        stop()
        return left
    }

    private func runTicker() {
        var last = Date()
        var ticks = 0
        while !stopping.load(ordering: .acquiring) {
            // Sleep to the next second; a nudge or stop() wakes it early (one wakeup a second when idle).
            let next = last.addingTimeInterval(1)
            while !stopping.load(ordering: .acquiring) {
                if nudged.exchange(false, ordering: .acquiringAndReleasing) { control.component.tick() }
                let left = next.timeIntervalSinceNow
                if left <= 0 { break }
                _ = wake.wait(timeout: .now() + .nanoseconds(Int(left * 1e9)))
            }
            if stopping.load(ordering: .acquiring) { break }
            let now = Date()
            if let serve = control.component as? ServeComponent { serve.connections.store(server.connections, ordering: .relaxed) }
            control.record(server)
            control.takeSample(interval: now.timeIntervalSince(last))
            last = now
            control.component.tick()
            ticks += 1
            if ticks % 2 == 0 {
                control.authenticator.refresh()
                heartbeat()
            }
            if ticks % 300 == 1 { _ = try? fleet?.expire(retention: FleetDirectory.retention) }  // records of processes that died without removing theirs
        }
    }

    private func heartbeat() {
        guard let fleet else { return }
        let model = control.component.runningModel
        try? fleet.heartbeat(.init(
            id: control.id, kind: control.component.kind, url: control.baseURL, pid: Int(getpid()),
            host: ProcessInfo.processInfo.hostName, model: model, startedAt: control.startedAt,
            heartbeat: Date().timeIntervalSince1970))
    }
}
