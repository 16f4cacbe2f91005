import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// Exponential backoff with jitter between attempts to reach a dependency:
/// `initial` doubling up to `cap`, each delay drawn from 80–100% of the step
/// so that many clients do not retry in step.
package struct Backoff: Sendable {
    package var initial: Double
    package var cap: Double
    package private(set) var attempts = 0

    package init(initial: Double = 0.1, cap: Double = 5) {
        self.initial = initial
        self.cap = cap
    }

    /// The delay before the next attempt.
    package mutating func next() -> Double {
        let step = min(cap, initial * Double(1 << min(attempts, 30)))
        attempts += 1
        return step * Double.random(in: 0.8...1)
    }

    package mutating func reset() { attempts = 0 }
}

/// Whether a dependency (a stream's source or sink, the registry, a peer) is
/// reachable, as a component reports it: the outage's start, the last error,
/// how many outages there were. The first failure and the recovery are events;
/// the attempts in between are not (one line per outage, not one per retry).
package final class DependencyHealth: Sendable {
    package let name: String
    package let address: String
    private let events: EventLog
    private let state = Mutex<State>(State())

    private struct State {
        var since: Date?
        var error: String?
        var outages = 0
        var backoff = Backoff()
    }

    package init(name: String, address: String, events: EventLog) {
        self.name = name
        self.address = address
        self.events = events
    }

    package var isUp: Bool { state.withLock { $0.since == nil } }
    package var outages: Int { state.withLock { $0.outages } }
    package var downSince: Date? { state.withLock { $0.since } }

    /// Records a failed attempt; returns how long to wait before the next one.
    @discardableResult
    package func failed(_ error: String) -> Double {
        // The event is in the log before the outage shows in status: whoever sees one sees the other.
        state.withLock { s -> Double in
            if s.since == nil {
                events.append("error", "\(name) \(address) unreachable: \(error); retrying with backoff")
                s.since = Date()
                s.outages += 1
            }
            s.error = error
            return s.backoff.next()
        }
    }

    /// Records a working attempt; the end of an outage is an event.
    package func succeeded() {
        state.withLock { s in
            guard let since = s.since else { return }
            let seconds = (Date().timeIntervalSince(since) * 10).rounded() / 10
            events.append("recovered", "\(name) \(address) reachable again after \(seconds) s (\(s.backoff.attempts) attempts)")
            s.since = nil
            s.error = nil
            s.backoff.reset()
        }
    }

    /// How it stands, for /v1/status.
    package func status() -> DependencyStatus {
        let s = state.withLock { $0 }
        return DependencyStatus(name: name, address: address, up: s.since == nil, since: s.since.map(isoTimestamp), error: s.error, outages: s.outages)
    }

    /// `switchyard_dependency_up` and `switchyard_dependency_outages_total` samples (described by `describeMetrics`).
    package func metrics(_ text: inout PrometheusText) {
        let s = state.withLock { $0 }
        text.sample("switchyard_dependency_up", [("dependency", name)], s.since == nil ? 1 : 0)
        text.sample("switchyard_dependency_outages_total", [("dependency", name)], Double(s.outages))
    }

    package static func describeMetrics(_ text: inout PrometheusText) {
        text.describe("switchyard_dependency_up", "gauge", "1 while a dependency (source, sink, registry) answers, 0 during an outage.")
        text.describe("switchyard_dependency_outages_total", "counter", "Outages of a dependency since the start.")
    }
}

/// Sleeps `seconds` in naps of at most 20 ms, returning early once `stopping` is set.
package func nap(_ seconds: Double, unless stopping: borrowing Atomic<Bool>) {
    let end = Date().addingTimeInterval(seconds)
    while !stopping.load(ordering: .acquiring) {
        let left = end.timeIntervalSinceNow
        guard left > 0 else { return }
        usleep(UInt32(max(1000, min(20_000, left * 1e6))))
    }
}
