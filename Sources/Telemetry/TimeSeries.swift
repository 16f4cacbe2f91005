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
        let id = state.withLock { state in
            let id = state.next
            state.next += 1
            state.events.append(Event(id: id, at: at, kind: kind, message: message))
            if state.events.count > capacity { state.events.removeFirst(state.events.count - capacity) }
            return id
        }
        LogBook.process.write("\(kind): \(message)", echo: false)
        return id
    }

    /// Events with an id above `id`, oldest first.
    public func after(_ id: Int, limit: Int = 1000) -> [Event] {
        state.withLock { Array($0.events.filter { $0.id > id }.prefix(limit)) }
    }
}

/// The process's log: what a component prints (its address, what it serves, that it stops) and
/// every event it records, each line numbered from 1 with its Unix time, the latest 2,000 kept
/// for `GET /v1/logs`. Printed lines go to standard output as they always did.
public final class LogBook: Sendable {
    public struct Line: Sendable, Equatable {
        public var seq: Int
        /// Unix seconds.
        public var at: Double
        public var text: String
    }

    /// The one log of this process.
    public static let process = LogBook()

    public static let capacity = 2000
    /// A longer line is kept to this many characters (standard output gets it whole).
    public static let longestLine = 4000
    private let state = Mutex<(next: Int, lines: [Line])>((1, []))

    public init() {}

    /// Keeps `text` (a line per line of it); `echo` prints it to standard output too.
    public func write(_ text: String, echo: Bool = true) {
        if echo {
            fflush(nil)  // what print() holds goes out first, so the order is kept
            FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
        }
        let now = Date().timeIntervalSince1970
        state.withLock { state in
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
                state.lines.append(Line(seq: state.next, at: now, text: String(line.prefix(Self.longestLine))))
                state.next += 1
            }
            if state.lines.count > Self.capacity { state.lines.removeFirst(state.lines.count - Self.capacity) }
        }
    }

    /// Lines after `seq`, oldest first, at most `limit`.
    public func after(_ seq: Int, limit: Int) -> [Line] {
        state.withLock { Array($0.lines.filter { $0.seq > seq }.prefix(limit)) }
    }

    /// The newest line's number (0 before the first).
    public var newest: Int { state.withLock { $0.next - 1 } }

    /// The last `count` lines, oldest first.
    public func tail(_ count: Int) -> [Line] {
        state.withLock { Array($0.lines.suffix(max(0, count))) }
    }
}
