import Foundation
import Synchronization

/// Per-second samples for sparklines: each a set of named numbers, oldest first,
/// the newest `capacity` kept.
public final class TimeSeries: Sendable {
    public struct Sample: Sendable {
        /// Unix seconds.
        public var time: Double
        public var values: [String: Double]

        public init(time: Double, values: [String: Double]) {
            self.time = time
            self.values = values
        }
    }

    public let fields: [String]
    private let capacity: Int
    private let samples: Mutex<[Sample]>

    public init(fields: [String], capacity: Int = 3600) {
        self.fields = fields
        self.capacity = capacity
        samples = Mutex([])
    }

    public func append(_ sample: Sample) {
        samples.withLock {
            $0.append(sample)
            if $0.count > capacity { $0.removeFirst($0.count - capacity) }
        }
    }

    /// The samples of the last `window` seconds.
    public func window(_ seconds: Int) -> [Sample] {
        samples.withLock { Array($0.suffix(max(1, seconds))) }
    }

    public var latest: Sample? { samples.withLock { $0.last } }
}

/// Recent events (swaps, runs, errors, operator actions), numbered from 1.
public final class EventLog: Sendable {
    public struct Event: Sendable {
        public var id: Int
        /// ISO 8601, UTC.
        public var at: String
        public var kind: String
        public var message: String
    }

    private let capacity: Int
    private let state = Mutex<(next: Int, events: [Event])>((1, []))

    public init(capacity: Int = 1000) { self.capacity = capacity }

    @discardableResult
    public func append(_ kind: String, _ message: String) -> Int {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let at = formatter.string(from: Date())
        return state.withLock { state in
            let id = state.next
            state.next += 1
            state.events.append(Event(id: id, at: at, kind: kind, message: message))
            if state.events.count > capacity { state.events.removeFirst(state.events.count - capacity) }
            return id
        }
    }

    /// Events with an id above `id`, oldest first.
    public func after(_ id: Int, limit: Int = 1000) -> [Event] {
        state.withLock { Array($0.events.filter { $0.id > id }.prefix(limit)) }
    }
}
