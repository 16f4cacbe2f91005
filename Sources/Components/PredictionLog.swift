import CSystem
import ControlProtocol
import Foundation
import HTTP
import JSON
import Scoring
import Synchronization
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

/// What a component answered, kept so support staff can find it later by request id or by a
/// record field (`--log-key`): one JSON line per scored record, in size-bounded segments under
/// SWITCHYARD_HOME/predictions, the oldest deleted beyond a total size.
///
/// The request path only decides whether a record is sampled (a per-loop counter, no lock) and
/// appends its finished line to a pending buffer; a writer thread writes whole lines with one
/// `write` per batch. A reader skips a last line without its newline (a crash mid-write), so a
/// record is in the log whole or not at all. When the writer falls behind by more than
/// `pendingLimit` bytes, lines are dropped and counted, never queued without bound.
package final class PredictionLog: Sendable {
    package enum Policy: Sendable, Equatable {
        case off
        case all
        /// A share in (0, 1).
        case sample(Double)

        /// `all`, `off` or `sample=0.05`.
        package init?(_ text: String) {
            switch text {
            case "all": self = .all
            case "off": self = .off
            default:
                guard text.hasPrefix("sample="), let share = Double(text.dropFirst(7)), share > 0, share <= 1 else { return nil }
                self = share == 1 ? .all : .sample(share)
            }
        }

        package var text: String {
            switch self {
            case .off: "off"
            case .all: "all"
            case .sample(let share): "sample=\(share)"
            }
        }
    }

    package struct Options: Sendable {
        package var folder: URL
        /// Names this process's segments: `KIND-PID-START-SEQ.jsonl`.
        package var prefix: String
        package var policy: Policy
        /// A record field whose value is logged as `key`, for lookups by it (a customer id).
        package var key: String?
        package var segmentBytes = 64 << 20
        package var maxBytes = 1 << 30
        package var pendingLimit = 16 << 20
        /// How long the writer waits between batches.
        package var flushInterval = 0.2

        package init(folder: URL, prefix: String, policy: Policy, key: String?) {
            self.folder = folder
            self.prefix = prefix
            self.policy = policy
            self.key = key
        }
    }

    package let options: Options
    private let pending = Mutex<[UInt8]>([])
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let written = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    /// Whether lines reach the disk: a failed write is an outage (an event, a DOWN dependency in
    /// status and the console) until a write works again.
    package let health: DependencyHealth
    /// Per loop: the sampling accumulator (a record is logged each time it passes 1).
    private let samplers: LoopLocal<Double>
    /// Per loop: the current second's ISO 8601 text, made once a second rather than once a line.
    private let clocks: LoopLocal<(second: Int, text: [UInt8])>
    /// Lines queued and not yet written.
    private let queuedLines = Atomic<Int>(0)

    package init(_ options: Options, loops: Int, events: EventLog = EventLog()) throws {
        self.options = options
        health = DependencyHealth(name: "prediction log", address: options.folder.path, events: events)
        samplers = LoopLocal(loops: loops) { 1 }  // the first record of each loop is logged
        clocks = LoopLocal(loops: loops) { (-1, []) }
        try FileManager.default.createDirectory(at: options.folder, withIntermediateDirectories: true)
        let thread = Thread { [self] in
            runWriter()
            done.signal()
        }
        thread.name = "prediction-log"
        thread.start()
    }

    /// Whether the next record scored on `loop` is logged.
    @inline(__always)
    package func sample(loop: Int) -> Bool {
        switch options.policy {
        case .off: return false
        case .all: return true
        case .sample(let share):
            return samplers.with(loop: loop) { credit in
                credit += share
                guard credit >= 1 else { return false }
                credit -= 1
                return true
            }
        }
    }

    /// Calls `body` with the current time (UTC, ISO 8601, to the millisecond) from event loop `loop`.
    @inline(__always)
    package func timestamp(loop: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        clocks.with(loop: loop) { clock in
            if clock.second != now.tv_sec {
                clock.second = now.tv_sec
                clock.text = Array(isoTimestamp(Date(timeIntervalSince1970: Double(now.tv_sec))).utf8)
            }
            // The second's text ("….SSS.mmmZ") with this line's milliseconds written over ".mmm".
            let milliseconds = Int(now.tv_nsec / 1_000_000)
            let at = clock.text.count - 4
            if at > 0 {
                clock.text[at] = UInt8(48 + milliseconds / 100)
                clock.text[at + 1] = UInt8(48 + milliseconds / 10 % 10)
                clock.text[at + 2] = UInt8(48 + milliseconds % 10)
            }
            clock.text.withUnsafeBytes(body)
        }
    }

    /// `,"model":"NAME@N","sha256":"…"`: the same in every line of a version.
    package static func identity(_ version: ModelVersion) -> [UInt8] {
        var w = JSONWriter()
        w.raw(#","model":"#)
        w.string(version.reference)
        w.raw(#","sha256":"#)
        w.string(version.sha256)
        return w.bytes
    }

    /// One line: who asked (the request or event id), when, what ran (`identity`), the record as it
    /// was sent (`record` writes it), and what it was answered.
    package func line(
        requestID: String, row: Int, loop: Int, identity: [UInt8], key: String?, record: (inout JSONWriter) -> Void,
        label: Int, scorer: Scorer, probabilities: UnsafePointer<Double>
    ) -> [UInt8] {
        var w = JSONWriter()
        w.reserveCapacity(512)
        w.raw(#"{"request_id":"#)
        w.string(requestID)
        w.raw(#","row":"#)
        w.integer(row)
        w.raw(#","at":""#)
        timestamp(loop: loop) { w.raw($0) }
        w.raw("\"")
        identity.withUnsafeBytes { w.raw($0) }
        if let key {
            w.raw(#","key":"#)
            w.string(key)
        }
        w.raw(#","record":"#)
        record(&w)
        w.raw(",")
        writeOutcome(&w, label: label, scorer) { probabilities[$0] }
        w.raw("}")
        return w.bytes
    }

    /// The value of the member `name` of a record object, as the log's key: a string's own text,
    /// anything else as its JSON; nil when absent or null.
    package static func keyText(_ tape: JSONTape, _ object: Int, _ name: String) -> String? {
        guard tape.kind(object) == .object else { return nil }
        var found: String?
        tape.forEachMember(object) { key, value in
            if found == nil, tape.string(key) == name { found = text(tape, value) }
        }
        return found
    }

    /// A value as the log's key text (nil for null).
    package static func text(_ tape: JSONTape, _ node: Int) -> String? {
        switch tape.kind(node) {
        case .string: tape.string(node)
        case .null: nil
        default: String(decoding: tape.text(node), as: UTF8.self)
        }
    }

    /// Queues one finished line (no newline); dropped and counted when the writer is too far behind.
    package func append(_ line: [UInt8]) {
        let queued = pending.withLock { buffer -> Bool in
            guard buffer.count + line.count < options.pendingLimit else { return false }
            buffer.append(contentsOf: line)
            buffer.append(0x0A)
            return true
        }
        if queued { queuedLines.wrappingAdd(1, ordering: .relaxed) } else { dropped.wrappingAdd(1, ordering: .relaxed) }
    }

    /// Writes what is queued and stops the writer.
    package func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wake.signal()
        done.wait()
    }

    package var counts: (written: Int, dropped: Int) { (written.load(ordering: .relaxed), dropped.load(ordering: .relaxed)) }
    /// Why lines are not being written, while they are not.
    package var problem: String? { health.status().error }

    // MARK: - Lookups over HTTP

    /// `GET /v1/predictions/ID` (what request or event ID was answered) or `GET /v1/predictions?key=VALUE`
    /// (what records with that key were answered, newest first): scope operate, as records can hold
    /// personal data. The log is searched off the event loop.
    package static func lookup(_ log: PredictionLog?, _ request: HTTPRequest, _ context: RequestContext, authenticator: Authenticator) -> HTTPResponse {
        guard request.method == "GET" else { return .error(405, "\(request.method) is not allowed on \(request.path)") }
        if case .failure(let error) = authenticator.authorize(request, loop: context.loop, needed: .operate) { return error.response }
        guard let log else {
            return .error(404, "this component does not log predictions (start it with --log-predictions all or sample=SHARE)")
        }
        let rest = request.path.dropFirst("/v1/predictions".count)
        let id = rest.hasPrefix("/") ? String(rest.dropFirst()).removingPercentEncoding : nil
        let key = request.query["key"]
        guard (id.map { !$0.isEmpty && $0.utf8.count <= 200 } ?? false) || (key.map { !$0.isEmpty && $0.utf8.count <= 200 } ?? false) else {
            return .error(400, "ask for GET /v1/predictions/REQUEST-ID or GET /v1/predictions?key=VALUE (at most 200 bytes)")
        }
        let limit = min(max(Int(request.query["limit"] ?? "20") ?? 20, 1), 1000)
        let promise = HTTPPromise()
        let folder = log.options.folder
        DispatchQueue.global().async {
            let found = PredictionLog.find(in: folder, requestID: id, key: id == nil ? key : nil, limit: limit)
            var response = found.isEmpty
                ? HTTPError(404, id.map { "no logged prediction for request \($0) (the log keeps \(log.options.policy.text) of requests)" }
                    ?? "no logged prediction with key \(key ?? "")").response
                : json(200, .object(JSONObject(["predictions": .array(found)])))
            response.observed = false
            promise.fulfil(response)
        }
        return .later(promise)
    }

    // MARK: - The writer

    private func runWriter() {
        var segment = 0
        var fd: Int32 = -1
        var size = 0
        let started = Int(Date().timeIntervalSince1970)
        func open() {
            segment += 1
            let name = "\(options.prefix)-\(getpid())-\(started)-\(String(format: "%06d", segment)).jsonl"
            fd = Glibc.open(options.folder.appendingPathComponent(name).path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            size = 0
            if fd < 0 { health.failed("cannot write \(name): \(String(cString: strerror(errno)))") }
        }
        while true {
            let stop = stopping.load(ordering: .acquiring)
            if !stop { _ = wake.wait(timeout: .now() + .nanoseconds(Int(options.flushInterval * 1e9))) }
            let (batch, lines) = pending.withLock { buffer -> ([UInt8], Int) in
                defer { buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20) }
                return (buffer, queuedLines.exchange(0, ordering: .relaxed))
            }
            if !batch.isEmpty {
                if fd < 0 || size >= options.segmentBytes {
                    if fd >= 0 { close(fd) }
                    open()
                    enforceLimit()
                }
                // Lines that could not be written are counted as dropped, never lost unsaid.
                if fd >= 0, batch.withUnsafeBytes({ writeAll(fd, $0) }) {
                    size += batch.count
                    written.wrappingAdd(lines, ordering: .relaxed)
                    health.succeeded()
                } else {
                    if fd >= 0 { health.failed("writing failed: \(String(cString: strerror(errno)))") }
                    dropped.wrappingAdd(lines, ordering: .relaxed)
                }
            }
            if stop { break }
        }
        if fd >= 0 { close(fd) }
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Deletes the oldest segments (of any process) beyond `maxBytes` in all.
    private func enforceLimit() {
        let segments = Self.segments(in: options.folder)
        var total = segments.reduce(0) { $0 + $1.size }
        for segment in segments.reversed() where total > options.maxBytes {  // oldest last
            unlink(segment.url.path)
            total -= segment.size
        }
    }

    /// The folder's segments, newest first.
    package static func segments(in folder: URL) -> [(url: URL, size: Int, modified: Date)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".jsonl") }.compactMap { name -> (URL, Int, Date)? in
            let url = folder.appendingPathComponent(name)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path) else { return nil }
            return (url, (attributes[.size] as? Int) ?? 0, (attributes[.modificationDate] as? Date) ?? .distantPast)
        }.sorted { $0.2 != $1.2 ? $0.2 > $1.2 : $0.0.lastPathComponent > $1.0.lastPathComponent }
    }

    /// The logged records whose request id is `requestID` (or whose key is `key`), newest segment
    /// first, at most `limit`. Lines that do not parse (a crash's cut-off last line) are skipped.
    package static func find(in folder: URL, requestID: String? = nil, key: String? = nil, limit: Int = 100) -> [JSONValue] {
        var needles: [[UInt8]] = []
        if let requestID { needles.append(Array((#""request_id":"# + JSONWriter.text(.string(requestID))).utf8)) }
        if let key { needles.append(Array((#""key":"# + JSONWriter.text(.string(key))).utf8)) }
        guard !needles.isEmpty else { return [] }
        var found: [JSONValue] = []
        for segment in segments(in: folder) {
            guard let data = FileManager.default.contents(atPath: segment.url.path) else { continue }
            let bytes = [UInt8](data)
            var lines: [JSONValue] = []
            var start = 0
            while start < bytes.count, let end = bytes[start...].firstIndex(of: 0x0A) {
                let line = bytes[start..<end]
                if needles.allSatisfy({ contains(line, $0) }), let value = try? JSONValue.parse(Array(line)) {
                    lines.append(value)
                }
                start = end + 1
            }
            found.append(contentsOf: lines.reversed())  // newest first within a segment too
            if found.count >= limit { break }
        }
        return Array(found.prefix(limit))
    }

    private static func contains(_ haystack: ArraySlice<UInt8>, _ needle: [UInt8]) -> Bool {
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        var i = haystack.startIndex
        let last = haystack.endIndex - needle.count
        while i <= last {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }
}
