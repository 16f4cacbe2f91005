import CSystem
import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// A bounded hand-off between the reading thread and the scoring thread: a
/// full queue blocks the reader, so a slow sink slows reading and memory stays
/// at `capacity` micro-batches.
final class BoundedQueue<Element: Sendable>: @unchecked Sendable {
    private var items: [Element] = []
    private let condition = NSCondition()
    private let capacity: Int
    private var closed = false

    init(capacity: Int) { self.capacity = capacity }

    /// Waits for room; false once closed.
    func put(_ item: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while items.count >= capacity && !closed { condition.wait() }
        guard !closed else { return false }
        items.append(item)
        condition.broadcast()
        return true
    }

    /// Waits up to `timeout` seconds for an item.
    func take(timeout: Double) -> Element? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while items.isEmpty && !closed {
            if !condition.wait(until: deadline) { break }
        }
        guard !items.isEmpty else { return nil }
        condition.broadcast()
        return items.removeFirst()
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return items.count
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// The stream scorer: micro-batches from a source, scored with the current
/// model, predictions and dead letters to the sink, then committed at the
/// source — at least once; a crash repeats at most the micro-batch that was
/// written but not yet committed. Model swaps happen between micro-batches.
package final class StreamComponent: Component {
    package let kind = "stream"
    package let name: String
    package let source: any StreamSource
    package let sink: any StreamSink
    let events: EventLog
    let authenticator: Authenticator
    package let options: Options

    package struct Options: Sendable {
        package var maxBatchEvents = 20_000
        package var maxBatchBytes = 8 << 20
        package var queueCapacity = 2
        package init() {}
    }

    /// What it scores with and follows; a swap lands between two micro-batches.
    private let binding: ModelBinding<Scorer>
    /// Where versions and their drift baselines come from, and the running version's drift.
    private let registry: any ModelSource
    private let baseline = BaselineSearch()
    private let queue: BoundedQueue<MicroBatch>
    package let paused = Atomic<Bool>(false)
    /// Set by the reading thread once it has seen `paused` and reads nothing more.
    package let readerPaused = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let threadsDone = DispatchSemaphore(value: 0)
    private let started = Atomic<Int>(0)
    /// Counters: read, written (predictions), dead letters, micro-batches, source and sink errors.
    package let read = Atomic<Int>(0)
    package let written = Atomic<Int>(0)
    package let dead = Atomic<Int>(0)
    /// The latest dead letters written, oldest first (at most `recentDeadLetters`).
    private let recentDead = Mutex<[DeadLetter]>([])
    package let batches = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)
    /// End-to-end latency (event time to prediction written); written by the scoring thread only.
    package let latency = LatencyHistogram()
    private let sampling = Mutex<(read: Int, written: Int, dead: Int, latency: HistogramSnapshot)>((0, 0, 0, HistogramSnapshot()))
    private let backlogState = Mutex(BacklogState())
    private let lastError = Mutex<String?>(nil)
    /// The source and the sink as dependencies: an outage is retried with backoff and reported.
    package let sourceHealth: DependencyHealth
    package let sinkHealth: DependencyHealth

    struct BacklogState {
        var current = Backlog(events: 0, bytes: nil, ageSeconds: nil, arrived: nil)
        /// (time, backlog events, events written so far, arrived) over the last window.
        var window: [(t: Double, events: Double, written: Int, arrived: Double?)] = []
        var status = "OK"
    }

    /// What it scored, for support staff (`--log-predictions`); nil when off. One scoring thread: loop 0.
    package let predictionLog: PredictionLog?

    package init(
        registry: any ModelSource, reference: String, name: String, source: any StreamSource, sink: any StreamSink,
        options: Options, events: EventLog, authenticator: Authenticator, predictionLog: PredictionLog? = nil
    ) throws {
        self.name = name
        self.predictionLog = predictionLog
        self.source = source
        self.sink = sink
        self.options = options
        self.events = events
        self.registry = registry
        self.authenticator = authenticator
        sourceHealth = DependencyHealth(name: "source", address: source.description, events: events)
        sinkHealth = DependencyHealth(name: "sink", address: sink.description, events: events)
        queue = BoundedQueue(capacity: options.queueCapacity)
        binding = try ModelBinding(
            registry: registry, reference: reference, events: events, wording: .init(running: "scoring with", effect: "from the next micro-batch"),
            make: { version, document in
                do { return try Scorer(document) } catch { throw HTTPError(422, "\(version.reference): \(error)") }
            })
    }

    // MARK: - Running

    /// Starts the reading and scoring threads.
    package func start() {
        let reader = Thread { [self] in
            readLoop()
            threadsDone.signal()
        }
        reader.name = "stream-read"
        let scorer = Thread { [self] in
            scoreLoop()
            threadsDone.signal()
        }
        scorer.name = "stream-score"
        started.store(2, ordering: .releasing)
        reader.start()
        scorer.start()
    }

    /// Stops reading, finishes the micro-batches already read, and returns.
    package func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for _ in 0..<started.load(ordering: .acquiring) { threadsDone.wait() }
    }

    private func readLoop() {
        while !stopping.load(ordering: .acquiring) {
            if paused.load(ordering: .relaxed) {
                readerPaused.store(true, ordering: .releasing)
                usleep(20_000)
                continue
            }
            readerPaused.store(false, ordering: .releasing)
            do {
                let next = try source.read(max: options.maxBatchEvents, maxBytes: options.maxBatchBytes)
                sourceHealth.succeeded()
                guard let batch = next else {
                    usleep(2_000)
                    continue
                }
                read.wrappingAdd(batch.count, ordering: .relaxed)
                if !queue.put(batch) { break }
            } catch {
                report("reading \(source.description): \(error)")
                nap(sourceHealth.failed("\(error)"), unless: stopping)
            }
        }
        queue.close()
    }

    private func scoreLoop() {
        var work = ScoringWork()
        while true {
            guard let batch = queue.take(timeout: 0.2) else {
                if stopping.load(ordering: .acquiring) && queue.count == 0 { break }
                continue
            }
            // One model per micro-batch: a swap lands between two of them.
            guard let current = binding.current else { continue }
            work.score(batch, scorer: current.loaded, model: current.version.reference, log: predictionLog, version: current.version,
                       drift: baseline.monitor(for: current.version))
            // Write, then commit; retried until it works (or the process stops), so nothing is skipped.
            guard retry(sinkHealth, "writing to \(sink.description)", { try sink.write(predictions: work.predictions, deadLetters: work.deadLetters) })
            else { return }
            // Only predictions the sink has are logged as answered.
            for line in work.logLines { predictionLog?.append(line) }
            let written = Date().timeIntervalSince1970
            guard retry(sourceHealth, "committing at \(source.description)", { try source.commit(batch) }) else { return }
            for t in work.eventTimes where t.isFinite && t <= written {
                latency.record(UInt64((written - t) * 1e9))
            }
            self.written.wrappingAdd(work.predictions.ranges.count, ordering: .relaxed)
            dead.wrappingAdd(work.deadLetters.ranges.count, ordering: .relaxed)
            if !work.deadLetters.ranges.isEmpty { keepRecent(work.deadLetters) }
            batches.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// Keeps the latest dead letters (already written to the sink) for `GET /v1/dead-letters`.
    private func keepRecent(_ lines: SinkLines) {
        let letters = lines.ranges.suffix(Self.recentDeadLetters).compactMap { range in
            (try? JSONValue.parse(Array(lines.bytes[range]))).flatMap(DeadLetter.init(json:))
        }
        recentDead.withLock { kept in
            kept.append(contentsOf: letters)
            if kept.count > Self.recentDeadLetters { kept.removeFirst(kept.count - Self.recentDeadLetters) }
        }
    }

    static let recentDeadLetters = 100

    /// Runs `attempt` until it works, backing off while `dependency` is down; false when the
    /// component stops first (the micro-batch is then neither written nor committed, so it is read again).
    private func retry(_ dependency: DependencyHealth, _ what: String, _ attempt: () throws -> Void) -> Bool {
        while true {
            do {
                try attempt()
                dependency.succeeded()
                return true
            } catch {
                report("\(what): \(error); retrying")
                if stopping.load(ordering: .acquiring) { return false }
                nap(dependency.failed("\(error)"), unless: stopping)
                if stopping.load(ordering: .acquiring) { return false }
            }
        }
    }

    private func report(_ message: String) {
        failures.wrappingAdd(1, ordering: .relaxed)
        let repeated = lastError.withLock { last in
            defer { last = message }
            return last == message
        }
        if !repeated { events.append("error", message) }
    }

    // MARK: - Model

    package func swapModel(_ request: SwapRequest, by principal: Principal) -> HTTPResponse {
        binding.swap(request, by: principal)
    }

    package var dependencies: [DependencyHealth] { [sourceHealth, sinkHealth] + (predictionLog.map { [$0.health] } ?? []) }

    /// Ready while a model is loaded and the source and sink answer.
    package var isReady: Bool { binding.current != nil && sourceHealth.isUp && sinkHealth.isUp }

    // MARK: - Ticks: alias following and the backlog

    package func tick() {
        binding.follow()
        if let version = binding.version { baseline.refresh(version, registry: registry, loops: 1, events: events) }
        updateBacklog()
    }

    /// The running version's drift, or why there is none.
    package func driftStatus() -> [DriftStatus] {
        guard let version = binding.version else { return [] }
        return [baseline.monitor(for: version)?.report() ?? DriftMonitor.missing(version)]
    }

    /// Samples the source's backlog and classifies it over the last 10 s, in the
    /// manner of Burrow: STALLED (events wait and none were written), FALLING_BEHIND
    /// (the backlog grew across the window), else OK.
    func updateBacklog() {
        let now = Date().timeIntervalSince1970
        let backlog: Backlog
        do {
            backlog = try source.backlog()
        } catch {
            report("measuring the backlog of \(source.description): \(error)")
            return
        }
        let writtenNow = written.load(ordering: .relaxed) + dead.load(ordering: .relaxed)
        let previous = backlogState.withLock { $0.status }
        let status = backlogState.withLock { state -> String in
            state.current = backlog
            state.window.append((now, backlog.events, writtenNow, backlog.arrived))
            state.window.removeAll { now - $0.t > 10.5 }
            if paused.load(ordering: .relaxed) {
                state.status = "PAUSED"
                return state.status
            }
            guard let first = state.window.first, state.window.count >= 5 else { return state.status }
            let progress = writtenNow - first.written
            if backlog.events > 0 && progress == 0 {
                state.status = "STALLED"
            } else if backlog.events > first.events * 1.05 + 100 {
                state.status = "FALLING_BEHIND"
            } else {
                state.status = "OK"
            }
            return state.status
        }
        if status != previous { events.append(status == "OK" || status == "PAUSED" ? "stream" : "error", "backlog status \(previous) → \(status) (\(Int(backlog.events)) events waiting)") }
    }

    /// Events per second arriving and being written, over the backlog window.
    private func rates() -> (input: Double?, processing: Double) {
        backlogState.withLock { state in
            guard let first = state.window.first, let last = state.window.last, last.t > first.t else { return (nil, 0) }
            let span = last.t - first.t
            let processing = Double(last.written - first.written) / span
            var input: Double?
            if let a = first.arrived, let b = last.arrived { input = (b - a) / span }
            return (input, processing)
        }
    }

    // MARK: - Status and telemetry

    package let sampleFields = ["in", "out", "dead", "backlog", "backlog_age_s", "p50_ms", "p99_ms"]

    package func sample(interval: Double) -> [String: Double] {
        let r = read.load(ordering: .relaxed), w = written.load(ordering: .relaxed), d = dead.load(ordering: .relaxed)
        let histogram = latency.snapshot()
        let previous = sampling.withLock { state in
            defer { state = (r, w, d, histogram) }
            return state
        }
        let delta = histogram - previous.latency
        func ms(_ q: Double) -> Double { delta.quantile(q).map { Double($0) / 1e6 } ?? 0 }
        let backlog = backlogState.withLock { $0.current }
        if let version = binding.version { baseline.monitor(for: version)?.sample() }
        return [
            "in": Double(r - previous.read) / interval,
            "out": Double(w - previous.written) / interval,
            "dead": Double(d - previous.dead) / interval,
            "backlog": backlog.events,
            "backlog_age_s": backlog.ageSeconds ?? 0,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99),
        ]
    }

    package var runningModel: String? { binding.version?.reference }

    package func describe(_ status: inout ComponentStatus) {
        let (backlog, backlogStatus) = backlogState.withLock { ($0.current, $0.status) }
        let (input, processing) = rates()
        let all = latency.snapshot()
        binding.describe(&status)
        status.drift = driftStatus()
        status.state = paused.load(ordering: .relaxed) ? "paused" : sourceHealth.isUp && sinkHealth.isUp ? "running" : "reconnecting"
        status.counters = NamedNumbers([
            NamedNumber("read", Double(read.load(ordering: .relaxed))),
            NamedNumber("written", Double(written.load(ordering: .relaxed))),
            NamedNumber("dead_letters", Double(dead.load(ordering: .relaxed))),
            NamedNumber("micro_batches", Double(batches.load(ordering: .relaxed))),
            NamedNumber("errors", Double(failures.load(ordering: .relaxed))),
            NamedNumber("e2e_p50_ms", all.quantile(0.5).map { Double($0) / 1e6 }),
            NamedNumber("e2e_p99_ms", all.quantile(0.99).map { Double($0) / 1e6 }),
        ])
        status.stream = StreamStatus(name: name, source: source.description, sink: sink.description, backlog: StreamStatus.Backlog(
            status: backlogStatus, events: backlog.events, bytes: backlog.bytes, ageSeconds: backlog.ageSeconds.map { ($0 * 1000).rounded() / 1000 },
            inputPerSecond: input.map { $0.rounded() }, processingPerSecond: processing.rounded()))
    }

    package func metrics(_ text: inout PrometheusText) {
        DriftMonitor.metrics(&text, model: binding.version?.model ?? "", driftStatus())
        text.describe("switchyard_stream_events_total", "counter", "Events by outcome: read, written (predictions), dead (dead letters).")
        text.sample("switchyard_stream_events_total", [("outcome", "read")], Double(read.load(ordering: .relaxed)))
        text.sample("switchyard_stream_events_total", [("outcome", "written")], Double(written.load(ordering: .relaxed)))
        text.sample("switchyard_stream_events_total", [("outcome", "dead")], Double(dead.load(ordering: .relaxed)))
        let backlog = backlogState.withLock { $0.current }
        text.describe("switchyard_stream_backlog_events", "gauge", "Events waiting at the source.")
        text.sample("switchyard_stream_backlog_events", [], backlog.events)
        text.describe("switchyard_stream_backlog_age_seconds", "gauge", "Age of the oldest waiting event.")
        text.sample("switchyard_stream_backlog_age_seconds", [], backlog.ageSeconds ?? 0)
        text.histogram(
            "switchyard_stream_e2e_latency_seconds", help: "Event time to prediction written.", latency.snapshot(),
            bounds: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
    }

    // MARK: - Routes

    package func route(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse? {
        if request.path.utf8.starts(with: "/v1/predictions".utf8) {
            return PredictionLog.lookup(predictionLog, request, context, authenticator: authenticator)
        }
        let path = String(request.path)
        if path == "/v1/drift" { return DriftMonitor.respond(request, context, authenticator: authenticator, driftStatus()) }
        if path == "/v1/dead-letters" {
            guard request.method == "GET" else { return .error(405, "\(request.method) is not allowed on \(path); use GET") }
            switch authenticator.authorize(request, loop: context.loop, needed: .operate) {  // events' data: not for a read key
            case .success: break
            case .failure(let error): return error.response
            }
            let limit = min(max(Int(request.query["limit"] ?? "100") ?? 100, 1), Self.recentDeadLetters)
            let latest = recentDead.withLock { Array($0.suffix(limit).reversed()) }
            return json(200, DeadLetterPage(deadLetters: latest, total: dead.load(ordering: .relaxed), kept: sink.description).json)
        }
        guard path == "/v1/pause" || path == "/v1/resume" else { return nil }
        guard request.method == "POST" else { return .error(405, "\(request.method) is not allowed on \(path); use POST") }
        let principal: Principal
        switch authenticator.authorize(request, loop: context.loop, needed: .operate) {
        case .success(let p): principal = p
        case .failure(let error): return error.response
        }
        let pause = path == "/v1/pause"
        let was = paused.exchange(pause, ordering: .acquiringAndReleasing)
        if was != pause { events.append("stream", "\(pause ? "paused" : "resumed") by \(principal.name)") }
        return json(200, PauseResult(state: pause ? "paused" : "running", changed: was != pause).json)
    }
}

/// The scoring thread's reusable buffers.
private struct ScoringWork {
    var predictions = SinkLines()
    var deadLetters = SinkLines()
    var eventTimes: [Double] = []
    /// Prediction-log lines of the sampled events, appended once the sink has their predictions.
    var logLines: [[UInt8]] = []
    private var records = JSONRecordScorer()
    private var cachedModel = ""
    private var tails: [[UInt8]] = []
    private var keys: [[UInt8]] = []
    private var identity: [UInt8] = []

    /// Scores every event of `batch`: a prediction line, or a dead letter with the reason.
    mutating func score(_ batch: MicroBatch, scorer: Scorer, model: String, log: PredictionLog? = nil, version: ModelVersion? = nil, drift: DriftMonitor? = nil) {
        predictions.removeAll()
        deadLetters.removeAll()
        eventTimes.removeAll(keepingCapacity: true)
        logLines.removeAll(keepingCapacity: true)
        if cachedModel != model {
            cachedModel = model
            identity = version.map(PredictionLog.identity) ?? []
            let version = #""model_version":\#(JSONWriter.text(.string(model))),"event_time":"#
            if scorer.isRegression {
                // {"id":…,"value":x,"model_version":…,"event_time":…}
                keys = [Array(#""value":"#.utf8)]
                tails = [Array(("," + version).utf8)]
            } else {
                tails = scorer.classes.map { Array(#"},"label":\#(JSONWriter.text(.string($0))),"#.utf8) + Array(version.utf8) }
                keys = scorer.classes.enumerated().map { k, c in Array(((k == 0 ? #""probabilities":{"# : ",") + JSONWriter.text(.string(c)) + ":").utf8) }
            }
        }
        batch.bytes.withUnsafeBytes { all in
            for (i, range) in batch.events.enumerated() {
                let text = UnsafeRawBufferPointer(rebasing: all[range])
                if let reason = batch.sourceErrors[i] {
                    dead(batch.sourceIDs[i], reason, text, source: batch.sourceIDs[i])
                    continue
                }
                let label: Int
                switch records.score(text, with: scorer) {
                case .success(let l): label = l
                case .failure(let failure):
                    // A record that parsed keeps its own id in the dead letter.
                    let id = failure.isObject ? eventID(records.tape).map { String(decoding: $0, as: UTF8.self) } : nil
                    dead(id ?? batch.sourceIDs[i], failure.reason, text, source: batch.sourceIDs[i])
                    continue
                }
                if let drift { records.observe(drift, probability: records.probabilities[scorer.outputCount - 1]) }
                let tape = records.tape
                let time = eventTime(tape) ?? batch.sourceTimes[i]
                eventTimes.append(time)
                let start = predictions.bytes.count
                predictions.bytes.append(contentsOf: #"{"id":"#.utf8)
                if let raw = eventID(tape), let node = tape.member(tape.root, "id") {
                    let quoted = tape.kind(node) == .string
                    if quoted { predictions.bytes.append(0x22) }
                    predictions.bytes.append(contentsOf: raw)
                    if quoted { predictions.bytes.append(0x22) }
                    predictions.ids.append(String(decoding: raw, as: UTF8.self))
                } else {
                    predictions.bytes.append(contentsOf: JSONWriter.text(.string(batch.sourceIDs[i])).utf8)
                    predictions.ids.append(batch.sourceIDs[i])
                }
                predictions.bytes.append(0x2C)
                for k in 0..<scorer.outputCount {
                    predictions.bytes.append(contentsOf: keys[k])
                    appendOutcome(records.probabilities[k], regression: scorer.isRegression, to: &predictions.bytes)
                }
                predictions.bytes.append(contentsOf: tails[label])
                if time.isFinite {
                    predictions.bytes.append(contentsOf: JSONWriter.numberText((time * 1000).rounded() / 1000).utf8)
                } else {
                    predictions.bytes.append(contentsOf: "null".utf8)
                }
                predictions.bytes.append(0x7D)
                predictions.ranges.append(start..<predictions.bytes.count)
                predictions.bytes.append(0x0A)
                if let log, log.sample(loop: 0) {
                    let key = log.options.key.flatMap { PredictionLog.keyText(tape, tape.root, $0) }
                    let id = predictions.ids[predictions.ids.count - 1]
                    records.probabilities.withUnsafeBufferPointer { p in
                        logLines.append(log.line(
                            requestID: id, row: 1, loop: 0, identity: identity, key: key, record: { $0.raw(text) },
                            label: label, scorer: scorer, probabilities: p.baseAddress!))
                    }
                }
            }
        }
    }

    private mutating func dead(_ id: String, _ reason: String, _ text: UnsafeRawBufferPointer, source: String) {
        var o = JSONObject()
        o.append("id", .string(id))
        o.append("source", .string(source))
        o.append("reason", .string(reason))
        o.append("event", .string(String(decoding: text, as: UTF8.self)))
        o.append("at", .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000))
        let start = deadLetters.bytes.count
        deadLetters.bytes.append(contentsOf: JSONWriter.text(.object(o)).utf8)
        deadLetters.ranges.append(start..<deadLetters.bytes.count)
        deadLetters.bytes.append(0x0A)
        deadLetters.ids.append(id)
    }
}

/// The raw bytes of an event's `id` member when it is a number or a string.
private func eventID(_ tape: JSONTape) -> UnsafeRawBufferPointer? {
    guard let node = tape.member(tape.root, "id"), tape.kind(node) == .number || tape.kind(node) == .string else { return nil }
    return tape.rawBytes(node)
}
