import ControlProtocol
import Foundation
import JSON
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import Components
@testable import HTTP
import Registry
import Scoring
import Telemetry

/// One credit event as a JSON line with `id` and `event_time`.
private func eventLine(_ id: Int, seed: UInt64 = 1) -> String {
    var generator = CreditFixture(seed: seed &+ UInt64(id))
    var row = generator.next()
    row.id = id
    var out: [UInt8] = []
    CreditFixture.appendJSON(row, to: &out)
    out.removeLast(2)
    return String(decoding: out, as: UTF8.self) + #","event_time":\#(Date().timeIntervalSince1970)}"# + "\n"
}

func append(_ text: String, to url: URL) throws {
    if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
    let handle = try FileHandle(forWritingTo: url)
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(text.utf8))
    try handle.close()
}

/// Every JSON line of every part file in `folder`.
func lines(in folder: URL) throws -> [JSONValue] {
    let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix("part-") }.sorted()
    return try names.flatMap { name in
        try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
    }
}

/// A sink that holds each write for a while: a slow downstream.
private final class SlowSink: StreamSink, @unchecked Sendable {
    let written = Atomic<Int>(0)
    var description: String { "slow" }
    func write(predictions: SinkLines, deadLetters: SinkLines) throws {
        usleep(100_000)
        written.wrappingAdd(predictions.ranges.count + deadLetters.ranges.count, ordering: .relaxed)
    }
}

final class StreamFixture: @unchecked Sendable {
    let batch: BatchFixture
    let source: URL
    let sink: URL
    var stream: StreamComponent?
    var host: ComponentHost?
    var port = 0

    init() throws {
        batch = try BatchFixture()
        source = batch.root.appendingPathComponent("events")
        sink = batch.root.appendingPathComponent("scored")
        try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
    }

    @discardableResult
    func start(
        name: String = "test", sink custom: (any StreamSink)? = nil, options: StreamComponent.Options = .init(), http: Bool = false,
        log: PredictionLog? = nil, reference: String = "credit@production"
    ) throws -> StreamComponent {
        let authenticator = Authenticator(store: batch.keys, loops: 1)
        let events = EventLog()
        let component = try StreamComponent(
            registry: batch.registry, reference: reference, name: name,
            source: try FolderSource(directory: source, stream: name, checkpoints: try StreamCheckpoints(home: batch.home)),
            sink: try custom ?? FolderSink(directory: sink), options: options, events: events, authenticator: authenticator, predictionLog: log)
        if http {
            let host = ComponentHost(component: component, observer: nil, configuration: .init(port: 0, threads: 1),
                                     authenticator: authenticator, events: events, fleet: nil)
            port = try host.start()
            batch.port = port
            self.host = host
        }
        component.start()
        stream = component
        return component
    }

    func stopStream() {
        host?.stop()
        stream?.stop()
        host = nil
        stream = nil
    }

    func stop() {
        stopStream()
        batch.stop()
    }

    /// Waits until `count` events are out (written or dead), 10 s at most.
    func waitFor(_ count: Int) throws {
        let deadline = Date().addingTimeInterval(10)
        while let s = stream, s.written.load(ordering: .relaxed) + s.dead.load(ordering: .relaxed) < count {
            guard Date() < deadline else { throw HTTPError(500, "only \(s.written.load(ordering: .relaxed)) of \(count) events out after 10 s") }
            usleep(5_000)
        }
    }
}

@Suite struct StreamDriftTests {
    /// A stream counts what it scores into its version's baseline bins: 600 events with income
    /// tripled flag income and no other field (status and GET /v1/drift).
    @Test func aStreamReportsItsInputsDrift() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let scorer = try f.batch.scorer(1)
        try f.batch.registry.setBaseline(model: "credit", version: 1, baseline: DriftBaseline.make(
            scorer: scorer, rows: creditRecords(seed: 1, count: 5000).map { scorer.fieldValues(json: $0) }), who: "test")
        let events = creditRecords(seed: 5, count: 600, incomeScale: 3).enumerated().map { i, record -> String in
            guard case .object(var o) = record else { return "" }
            o.append("id", .number(Double(i)))
            return JSONValue.object(o).jsonText + "\n"
        }
        try f.start(http: true)
        f.stream!.tick()  // looks for the baseline now
        try append(events.joined(), to: f.source.appendingPathComponent("shifted.jsonl"))
        try f.waitFor(600)
        let drift = try #require(f.stream!.driftStatus().first)
        #expect(drift.problem == nil && drift.rows == 600)
        let psi = Dictionary(uniqueKeysWithValues: drift.fields.map { ($0.name, $0.psi ?? -1) })
        #expect(psi["income"]! >= DriftMonitor.alert && psi.filter { $0.key != "income" }.allSatisfy { $0.value >= 0 && $0.value < DriftMonitor.warn }, "\(psi)")
        let answer = try JSONValue.parse(try HTTPClient(port: f.port).request("GET", "/v1/drift", headers: [("Authorization", "Bearer \(f.batch.readKey)")]).body)
        #expect(answer["versions"]?[0]?["fields"] != nil, "\(answer)")
    }
}

@Suite struct StreamPredictionLogTests {
    /// The stream logs what it scored (issue 18 item 4), by event id and by a key field, once the
    /// sink has the predictions; the control API finds them (scope operate).
    @Test func scoredEventsAreLoggedAndFoundByEventIDAndKey() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        var options = PredictionLog.Options(folder: f.batch.home.url.appendingPathComponent("predictions"), prefix: "stream", policy: .all, key: "region")
        options.flushInterval = 0.01
        let log = try PredictionLog(options, loops: 1)
        defer { log.stop() }
        try append(eventLine(1) + eventLine(2) + #"{"id": 3, "amount": "lots"}"# + "\n", to: f.source.appendingPathComponent("a.jsonl"))
        try f.start(http: true, log: log)
        try f.waitFor(3)
        #expect(waitFor { log.counts.written == 2 }, "the two predictions, not the dead letter")
        let entries = PredictionLog.find(in: options.folder, requestID: "2")
        #expect(entries.count == 1)
        let expected = try f.batch.scorer(1).predict(json: try JSONValue.parse(eventLine(2)))
        #expect(entries.first?["model"] == .string("credit@1") && entries.first?["probabilities"]?["1"] == .number(expected.probabilities[1]))
        #expect(entries.first?["record"]?["id"] == .number(2))
        let region = entries.first?["key"]
        let page = try f.batch.api(f.batch.operateKey).call("GET", "/v1/predictions/1")
        #expect(page["predictions"].map { if case .array(let a) = $0 { a.count } else { 0 } } == 1)
        if case .string(let value)? = region {
            #expect(!PredictionLog.find(in: options.folder, key: value).isEmpty)
        } else {
            Issue.record("no key logged: \(String(describing: entries.first))")
        }
        #expect(throws: ComponentError.self) { try f.batch.api(f.batch.readKey).call("GET", "/v1/predictions/1") }
    }
}

@Suite struct FolderSourceTests {
    @Test func halfALineIsNotAnEventUntilItsLineFeedArrives() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("a.jsonl")
        let source = try FolderSource(directory: f.source, stream: "s", checkpoints: try StreamCheckpoints(home: f.batch.home))
        try append(eventLine(1) + String(eventLine(2).prefix(40)), to: file)
        let first = try #require(try source.read(max: 100, maxBytes: 1 << 20))
        #expect(first.count == 1)
        try source.commit(first)
        #expect(try source.read(max: 100, maxBytes: 1 << 20) == nil)
        try append(String(eventLine(2).dropFirst(40)), to: file)
        #expect(try source.read(max: 100, maxBytes: 1 << 20)?.sourceIDs == ["a.jsonl:2"])
    }
}

@Suite(.serialized) struct FolderStreamTests {
    @Test func aGrowingFileIsReadLineByLineAndBadEventsGoToDeadLetters() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("a.jsonl")
        try append(eventLine(1) + eventLine(2), to: file)
        let stream = try f.start(http: true)
        try f.waitFor(2)
        // Half a line: nothing is read until its line feed arrives (FolderSourceTests checks that
        // without threads; here the rest follows at once).
        let third = eventLine(3)
        try append(String(third.prefix(40)), to: file)
        try append(String(third.dropFirst(40)) + #"{"id": 4, "amount": "lots"}"# + "\nnot json\n", to: file)
        // A new file arriving later is read after the first.
        try append(eventLine(5), to: f.source.appendingPathComponent("b.jsonl"))
        try f.waitFor(6)
        let out = try lines(in: f.sink)
        #expect(out.compactMap { if case .number(let id)? = $0["id"] { Int(id) } else { nil } } == [1, 2, 3, 5])
        #expect(out.allSatisfy { $0["model_version"] == .string("credit@1") })
        let expected = try f.batch.scorer(1).predict(json: try JSONValue.parse(eventLine(1)))
        if case .number(let p)? = out[0]["probabilities"]?["1"] { #expect(abs(p - expected.probabilities[1]) < 1e-12) }
        let dead = try lines(in: f.sink.appendingPathComponent("dead-letters"))
        #expect(dead.count == 2)
        #expect(dead[0]["id"] == .string("4"))
        #expect(dead[0]["source"] == .string("a.jsonl:4"))
        #expect(dead[0]["reason"]?.stringValue?.contains(#"field "amount": expected a number"#) == true)
        #expect(dead[1]["reason"]?.stringValue?.hasPrefix("not valid JSON") == true)
        #expect(stream.dead.load(ordering: .relaxed) == 2)
        // The latest dead letters over the control API, newest first, for an operate key only
        // (they hold events' data).
        let page = try f.batch.api(f.batch.operateKey).deadLetters()
        #expect(page.total == 2 && page.kept == "dir:\(f.sink.path)")
        #expect(page.deadLetters.map(\.source) == ["a.jsonl:5", "a.jsonl:4"])
        #expect(page.deadLetters.last?.event == #"{"id": 4, "amount": "lots"}"#)
        #expect(page.deadLetters.last?.reason.contains(#"field "amount": expected a number"#) == true)
        #expect(throws: ComponentError.self) { try f.batch.api(f.batch.readKey).deadLetters() }
    }

    @Test func aLineLongerThanAMicroBatchBecomesADeadLetterNotAStall() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("a.jsonl")
        // Line 4 has no id of its own, so its prediction carries the source id: the line number shows.
        let noID = eventLine(4).replacingOccurrences(of: #""id":4,"#, with: "")
        try append(eventLine(1) + "{\"id\": 2, \"pad\": \"" + String(repeating: "x", count: 10_000) + "\"}\n" + eventLine(3) + noID, to: file)
        var options = StreamComponent.Options()
        options.maxBatchBytes = 4096
        _ = try f.start(options: options)
        // The long line is one dead letter (it used to be one per micro-batch it spanned, and every
        // later line number was off by as many); the stream goes on.
        try f.waitFor(4)
        #expect(try lines(in: f.sink).map { $0["id"] } == [.number(1), .number(3), .string("a.jsonl:4")])
        let dead = try lines(in: f.sink.appendingPathComponent("dead-letters"))
        #expect(dead.count == 1)
        #expect(dead.first?["source"] == .string("a.jsonl:2"))
        #expect(dead.first?["reason"] == .string("line 2 of a.jsonl is longer than 4096 bytes (the micro-batch limit); its first 256 bytes are kept here"))
        #expect(dead.first?["event"]?.stringValue?.count == 256)
        // And across a restart in the middle of that line's bytes: still the same line numbers.
        f.stopStream()
        try append(eventLine(5).replacingOccurrences(of: #""id":5,"#, with: ""), to: file)
        try f.start(options: options)
        try f.waitFor(1)
        #expect(try lines(in: f.sink).last?["id"] == .string("a.jsonl:5"))
    }

    @Test func csvFilesAreReadWithTheirHeaderAcrossARestart() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("c.csv")
        let sample = try String(contentsOf: fixtures.appendingPathComponent("credit-sample.csv"), encoding: .utf8).split(separator: "\n")
        try append(sample[0...3].joined(separator: "\n") + "\n", to: file)  // header + ids 1-3
        try f.start()
        try f.waitFor(3)
        f.stopStream()
        // Resumed past the header: it is read again; a short line is a dead letter with the reason.
        try append(sample[4] + "\n" + "99,100,36\n", to: file)
        try f.start()
        try f.waitFor(2)
        let out = try lines(in: f.sink)
        #expect(out.map { $0["id"] } == (1...4).map { .number(Double($0)) })
        let expected = try f.batch.scorer(1).predict(json: try JSONValue.parse(try String(contentsOf: fixtures.appendingPathComponent("credit-sample.jsonl"), encoding: .utf8).split(separator: "\n")[0].description))
        if case .number(let p)? = out[0]["probabilities"]?["1"] { #expect(abs(p - expected.probabilities[1]) < 1e-12) }
        let dead = try lines(in: f.sink.appendingPathComponent("dead-letters"))
        #expect(dead.first?["reason"] == .string("expected 17 CSV fields (as in the header), got 3"))
        #expect(dead.first?["source"] == .string("c.csv:6"))
    }

    @Test func checkpointsMeanARestartDoesNotRepeatCommittedEvents() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("a.jsonl")
        try append((1...500).map { eventLine($0) }.joined(), to: file)
        try f.start()
        try f.waitFor(500)
        f.stopStream()
        try append((501...600).map { eventLine($0) }.joined(), to: file)
        try f.start()
        try f.waitFor(100)
        let ids = try lines(in: f.sink).compactMap { if case .number(let id)? = $0["id"] { Int(id) } else { nil } }
        #expect(ids.sorted() == Array(1...600), "each event once across the restart")
        let checkpoint = try StreamCheckpoints(home: f.batch.home).files(stream: "test")
        #expect(checkpoint.map(\.name) == ["a.jsonl"])
        #expect(checkpoint.first?.line == 600)
    }

    @Test func aSlowSinkSlowsReadingAndMemoryStaysBounded() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        try append((1...3000).map { eventLine($0) }.joined(), to: f.source.appendingPathComponent("a.jsonl"))
        var options = StreamComponent.Options()
        options.maxBatchEvents = 100
        options.queueCapacity = 2
        let slow = SlowSink()
        let stream = try f.start(sink: slow, options: options)
        for _ in 0..<5 {
            usleep(150_000)
            let ahead = stream.read.load(ordering: .relaxed) - slow.written.load(ordering: .relaxed)
            // At most the queue, the batch being scored and the one the reader holds.
            #expect(ahead <= (options.queueCapacity + 2) * options.maxBatchEvents, "read \(ahead) events ahead of the sink")
        }
    }

    @Test func pauseResumeBacklogAndSwapsBetweenMicroBatches() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        let file = f.source.appendingPathComponent("a.jsonl")
        let stream = try f.start(http: true)
        #expect(try f.batch.request("POST", "/v1/pause", key: nil).status == 401)
        #expect(try f.batch.request("POST", "/v1/pause", key: f.batch.readKey).status == 403)
        #expect(try f.batch.request("POST", "/v1/pause", key: f.batch.operateKey).status == 200)
        // Once the reader has seen the pause, it reads nothing more: no time-based guess.
        #expect(waitFor { stream.readerPaused.load(ordering: .acquiring) })
        try append((1...200).map { eventLine($0) }.joined(), to: file)
        stream.updateBacklog()
        #expect(stream.read.load(ordering: .relaxed) == 0, "paused: nothing read")
        let status = try f.batch.api(f.batch.readKey).status()
        #expect(status.state == "paused" && status.kind == "stream")
        #expect((status.stream?.backlog.events ?? 0) >= 150 && (status.stream?.backlog.ageSeconds ?? -1) >= 0)
        // Swap to v2 while paused; everything after resuming is scored by v2.
        #expect(try f.batch.request("POST", "/v1/model", key: f.batch.adminKey, body: #"{"version": 2}"#).status == 200)
        #expect(try f.batch.request("POST", "/v1/resume", key: f.batch.operateKey).status == 200)
        try f.waitFor(200)
        #expect(try lines(in: f.sink).allSatisfy { $0["model_version"] == .string("credit@2") })
        stream.updateBacklog()
        #expect(componentStatus(stream).stream?.backlog.events == 0)
        let series = try f.batch.request("GET", "/v1/timeseries?window=5", key: f.batch.readKey).json
        #expect(series["fields"] == .array(["in", "out", "dead", "backlog", "backlog_age_s", "p50_ms", "p99_ms"].map(JSONValue.string)))
    }
}

/// A redis-server on a free loopback port for one test, stopped by its pid.
final class TestRedis {
    private var process = Process()
    let port: Int
    let folder: URL
    private let binary: String

    init() throws {
        guard let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw HTTPError(500, "redis-server is not installed (apt-get install redis-server); .ci/run installs it")
        }
        self.binary = binary
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let listener = HTTPServer(configuration: .init(port: 0, threads: 1)) { _, _ in .error(500, "") }
        port = try listener.start()
        listener.stop()
        try launch()
    }

    /// Starts redis-server on `port` and waits until it answers.
    func launch() throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<500 {
            if let client = try? RedisClient(host: "127.0.0.1", port: port), (try? client.command(["PING"])) != nil { return }
            usleep(10_000)
        }
        stop()
        throw HTTPError(500, "redis-server did not answer on port \(port)")
    }

    func client() throws -> RedisClient { try RedisClient(host: "127.0.0.1", port: port) }

    /// A stream component (not started) reading this server's `source` ("STREAM?group=…")
    /// into its `predictions` stream, with the fixture's registry.
    func stream(_ f: StreamFixture, source: String, events: EventLog = EventLog()) throws -> StreamComponent {
        try StreamComponent(
            registry: f.batch.registry, reference: "credit@production", name: "r",
            source: try RedisSource(address: try RedisAddress("redis://127.0.0.1:\(port)/\(source)")),
            sink: try RedisSink(address: try RedisAddress("redis://127.0.0.1:\(port)/predictions")),
            options: .init(), events: events, authenticator: Authenticator(store: nil, loops: 1))
    }

    /// SIGKILL, as a crash would: no persistence is configured, so the restarted server is empty.
    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func stop() {
        kill()
        try? FileManager.default.removeItem(at: folder)
    }
}

/// Polls `condition` until it holds or `deadline` seconds pass (a deadline that only fails a hung test).
func waitFor(_ deadline: Double = 30, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(deadline)
    while Date() < end {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}

@Suite(.serialized) struct RedisStreamTests {
    /// The issue-14 case: redis-server killed and started again under a running stream. The
    /// scorer used to log "Broken pipe" forever while saying it was running; now it says it is
    /// reconnecting (status, /readyz, events, metrics), reconnects with backoff, makes the consumer
    /// group again on the empty server, and scores what arrives after the restart.
    @Test func aRestartedRedisIsReconnectedAndScoringResumes() throws {
        let redis = try TestRedis()
        defer { redis.stop() }
        let f = try StreamFixture()
        defer { f.stop() }
        func produce(_ ids: ClosedRange<Int>) throws {
            let producer = try redis.client()
            _ = try producer.pipeline(ids.map { id in ["XADD", "events", "*", "data"].map { Array($0.utf8) } + [Array(eventLine(id).dropLast().utf8)] })
        }
        let events = EventLog()
        let stream = try redis.stream(f, source: "events?group=g&consumer=me", events: events)
        stream.start()
        defer { stream.stop() }
        try produce(1...100)
        #expect(waitFor { stream.written.load(ordering: .relaxed) == 100 })

        redis.kill()
        #expect(waitFor { !stream.sourceHealth.isUp })
        #expect(!stream.isReady)
        #expect(componentStatus(stream).state == "reconnecting")
        #expect(events.after(0).contains { $0.kind == "error" && $0.message.contains("unreachable") })

        try redis.launch()
        try produce(101...200)
        #expect(waitFor { stream.written.load(ordering: .relaxed) == 200 })
        #expect(try redis.client().command(["XLEN", "predictions"]) == .integer(100))
        #expect(waitFor { stream.isReady })
        #expect(stream.sourceHealth.outages == 1)
        #expect(events.after(0).contains { $0.kind == "recovered" && $0.message.hasPrefix("source ") })
        // What /metrics adds for every component's dependencies.
        var text = PrometheusText()
        DependencyHealth.describeMetrics(&text)
        for dependency in stream.dependencies { dependency.metrics(&text) }
        #expect(text.text.contains(#"switchyard_dependency_outages_total{dependency="source"} 1"#))
        #expect(text.text.contains(#"switchyard_dependency_up{dependency="source"} 1"#))
    }

    /// `XADD events * amount 12000 term 36 …`, the natural Redis Streams entry, is a record
    /// (it used to be a dead letter, "no data field"); a `data` field with JSON still works.
    @Test func entriesWrittenFieldByFieldAreRecords() throws {
        let redis = try TestRedis()
        defer { redis.stop() }
        let f = try StreamFixture()
        defer { f.stop() }
        guard case .object(let record) = try JSONValue.parse(creditRecord) else { return }
        var fields: [String] = []
        for (name, value) in zip(record.keys, record.values) {
            fields += [name, value.stringValue ?? JSONWriter.text(value)]
        }
        let producer = try redis.client()
        try producer.command(["XADD", "events", "*", "id", "7"] + fields)
        try producer.command(["XADD", "events", "*", "data", #"{"id": 8, "#.appending(creditRecord.dropFirst())])
        let stream = try redis.stream(f, source: "events?group=g")
        stream.start()
        defer { stream.stop() }
        #expect(waitFor { stream.written.load(ordering: .relaxed) + stream.dead.load(ordering: .relaxed) == 2 })
        #expect(stream.dead.load(ordering: .relaxed) == 0)
        let expected = try f.batch.scorer(1).predict(json: try JSONValue.parse(creditRecord))
        for entry in try producer.command(["XRANGE", "predictions", "-", "+"]).elements {
            let data = try JSONValue.parse(entry.elements[1].elements[3].text ?? "")
            guard case .number(let p)? = data["probabilities"]?["1"] else { Issue.record("no probability in \(data)"); continue }
            #expect(abs(p - expected.probabilities[1]) < 1e-9)  // written to 12 digits
        }
    }

    @Test func respEncodingAndReplies() throws {
        var out: [UInt8] = []
        RedisClient.encode([Array("SET".utf8), Array("k".utf8), Array("a\r\nb".utf8)], into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n")
        let redis = try TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        #expect(try client.command(["SET", "k", "a\r\nb"]) == .simple("OK"))
        #expect(try client.command(["GET", "k"]) == .bulk(Array("a\r\nb".utf8)))
        #expect(try client.command(["GET", "missing"]) == .bulk(nil))
        #expect(try client.command(["INCR", "n"]) == .integer(1))
        #expect(throws: RedisError.self) { try client.command(["NOSUCHCOMMAND"]) }
        #expect(try client.command(["PING"]) == .simple("PONG"), "the connection survives an error reply")
    }

    @Test func consumerGroupScoresAcknowledgesAndClaimsFromADeadConsumer() throws {
        let redis = try TestRedis()
        defer { redis.stop() }
        let f = try StreamFixture()
        defer { f.stop() }
        let producer = try redis.client()
        var commands: [[[UInt8]]] = []
        for id in 1...2000 { commands.append(["XADD", "events", "*", "data"].map { Array($0.utf8) } + [Array(eventLine(id).dropLast().utf8)]) }
        commands.append(["XADD", "events", "*", "data"].map { Array($0.utf8) } + [Array(#"{"id": 9999, "amount": "lots"}"#.utf8)])
        _ = try producer.pipeline(commands)
        // A consumer that took 5 entries and died without acknowledging them.
        try producer.command(["XGROUP", "CREATE", "events", "g", "0"])
        let ghost = try producer.command(["XREADGROUP", "GROUP", "g", "ghost", "COUNT", "5", "STREAMS", "events", ">"])
        #expect(ghost.elements.first?.elements.last?.elements.count == 5)
        usleep(150_000)

        let stream = try redis.stream(f, source: "events?group=g&consumer=me&claim_idle_ms=100")
        let source = stream.source
        stream.start()
        defer { stream.stop() }
        let deadline = Date().addingTimeInterval(15)
        while stream.written.load(ordering: .relaxed) + stream.dead.load(ordering: .relaxed) < 2001 && Date() < deadline { usleep(10_000) }
        #expect(stream.written.load(ordering: .relaxed) == 2000)
        #expect(stream.dead.load(ordering: .relaxed) == 1)
        #expect(try producer.command(["XLEN", "predictions"]) == .integer(2000))
        #expect(try producer.command(["XLEN", "predictions:dead-letters"]) == .integer(1))
        let pending = try producer.command(["XPENDING", "events", "g"]).elements
        #expect(pending.first == .integer(0), "everything acknowledged, the ghost's entries included")
        // Each prediction carries the event id and the version.
        let first = try producer.command(["XRANGE", "predictions", "-", "+", "COUNT", "1"]).elements[0].elements[1].elements
        #expect(first[0].text == "id")
        let data = try JSONValue.parse(first[3].text ?? "")
        #expect(data["model_version"] == .string("credit@1"))
        let backlog = try source.backlog()
        #expect(backlog.events == 0)
        #expect(backlog.ageSeconds == nil)
    }
}

/// The RESP reader on bytes alone: replies split anywhere, and every hostile length or count
/// a server could send is an error, never a trap or an allocation it chose.
@Suite struct RESPReaderTests {
    /// Reads one reply from `bytes`, handed over `piece` bytes at a time.
    func read(_ bytes: [UInt8], piece: Int = .max) throws -> RESP {
        var reader = RESPReader()
        var offset = 0
        return try reader.reply { buffer in
            guard offset < bytes.count else { throw RedisError("end of input") }
            let end = min(bytes.count, offset + piece)
            buffer.append(contentsOf: bytes[offset..<end])
            offset = end
        }
    }

    @Test func repliesSplitAnywhereReadTheSame() throws {
        let bytes = Array("*3\r\n$5\r\nhello\r\n:-42\r\n*2\r\n+OK\r\n$-1\r\n".utf8)
        let whole = try read(bytes)
        #expect(whole == .array([.bulk(Array("hello".utf8)), .integer(-42), .array([.simple("OK"), .bulk(nil)])]))
        for piece in 1...bytes.count { #expect(try read(bytes, piece: piece) == whole, "pieces of \(piece)") }
    }

    @Test(arguments: [
        ("$9223372036854775807\r\n", "a bad bulk length from Redis: 9223372036854775807"),
        ("$-2\r\n", "a bad bulk length from Redis: -2"),
        ("*99999999999\r\n", "a bad array length from Redis: 99999999999"),
        (":12x\r\n", "a bad integer from Redis: 12x"),
        ("$3\r\nabcde", "a bulk string from Redis not followed by CRLF"),
        ("?\r\n", "an unexpected reply from Redis starting with byte 63"),
        (String(repeating: "*1\r\n", count: 100) + ":1\r\n", "a reply from Redis nested deeper than 64"),
    ])
    func hostileRepliesAreErrors(text: String, message: String) {
        #expect { try read(Array(text.utf8)) } throws: { ($0 as? RedisError)?.description == message }
    }

    @Test func aLineWithoutEndIsBounded() {
        let endless = [UInt8]("+".utf8) + [UInt8](repeating: 0x61, count: RESPReader.maxLineBytes + 10)
        #expect { try read(endless, piece: 4096) } throws: { ($0 as? RedisError)?.description.contains("longer than") == true }
    }
}

/// What a component puts in its /v1/status.
private func componentStatus(_ component: any Component) -> ComponentStatus {
    var status = ComponentStatus(kind: component.kind)
    component.describe(&status)
    return status
}
