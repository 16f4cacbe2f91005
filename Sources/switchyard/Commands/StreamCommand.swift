import CSystem
import Components
import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

/// The source for `text` (`dir:PATH` or `redis://…?group=G`).
func makeStreamSource(_ text: String, name: String, home: Home) throws -> any StreamSource {
    do {
        switch try Endpoint(text) {
        case .folder(let url):
            let checkpoints = try registryCall { () throws(RegistryError) in try StreamCheckpoints(home: home) }
            return try FolderSource(directory: url, stream: name, checkpoints: checkpoints)
        case .redis(let address):
            return try RedisSource(address: address)
        }
    } catch let error as RedisError {
        throw CommandError(error.description)
    }
}

/// The sink for `text` (`dir:PATH` or `redis://HOST:PORT/STREAM?maxlen=N`).
func makeStreamSink(_ text: String) throws -> any StreamSink {
    do {
        switch try Endpoint(text) {
        case .folder(let url): return try FolderSink(directory: url)
        case .redis(let address): return try RedisSink(address: address)
        }
    } catch let error as RedisError {
        throw CommandError(error.description)
    }
}

let streamCommand = Command(
    words: ["stream"],
    summary: "Run the stream scorer: a watched folder or Redis stream in, predictions out, with checkpoints and backlog",
    options: [
        Option(name: "source", value: "dir:PATH|redis://HOST:PORT/STREAM?group=G", help: "where events come from", required: true),
        Option(name: "sink", value: "dir:PATH|redis://HOST:PORT/STREAM", help: "where predictions go (dead letters beside them)", required: true),
        Option(name: "model", value: "NAME@ALIAS", help: "the model; an alias is followed as it moves", required: true),
        Option(name: "name", value: "NAME", help: "the stream's name for its checkpoints", defaultValue: "SOURCE -> SINK"),
        Option(name: "max-batch", value: "N", help: "most events in one micro-batch", defaultValue: "20000"),
        Option(name: "port", value: "PORT", help: "control API port (0 picks a free one)", defaultValue: "8082"),
        Option(name: "host", value: "ADDRESS", help: "address to bind; anything but loopback needs API keys", defaultValue: "127.0.0.1"),
    ] + predictionLogOptions + registryOptions,
    details: """
        Events are JSON objects with the model's fields, an optional "id" (else the source's:
        FILE:LINE or the Redis entry id) and an optional "event_time" (Unix seconds; a Redis
        entry id's time otherwise). Each prediction carries the id, probabilities, label,
        model_version and event_time. An event that is not JSON or fails the schema goes to
        the dead letters (dir: SINK/dead-letters/, redis: STREAM:dead-letters) with the reason.

        Delivery is at least once: a folder's file offsets are committed in SQLite, Redis
        entries acknowledged (XACK), after the sink holds the predictions. Killed at any moment,
        a restart repeats at most the last micro-batch. Redis: a consumer group (default
        group "switchyard", consumer = host name; ?consumer=C to run several on one host) —
        entries a dead consumer left pending over 30 s (?claim_idle_ms=N) are claimed.

        Control API: /v1/status (backlog: events, age, OK | FALLING_BEHIND | STALLED),
        /v1/timeseries, /v1/events, /metrics; POST /v1/pause, /v1/resume (scope operate);
        POST /v1/model (scope admin; between micro-batches).

        Example:
          switchyard stream --source dir:incoming --sink dir:scored --model credit@production
        """,
    run: { args in
        let sourceText = try args.require("source"), sinkText = try args.require("sink")
        let nameText = args.string("name")
        let name = nameText == nil || nameText == "SOURCE -> SINK" ? "\(sourceText) -> \(sinkText)" : nameText!
        let port = try args.integer("port", range: 0...65535) ?? 8082
        let host = args.string("host") ?? "127.0.0.1"
        var options = StreamComponent.Options()
        options.maxBatchEvents = try args.integer("max-batch", range: 1...1_000_000) ?? options.maxBatchEvents
        let home = Home.fromEnvironment()
        let events = EventLog()
        let access = try registryAccess(args, events: events)
        try access.checkComponentKey()
        let authenticator = Authenticator(store: access.keys, loops: 1)
        do {
            try ComponentHost.checkExposure(host: host, open: false, authenticator: authenticator)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let source = try makeStreamSource(sourceText, name: name, home: home)
        let sink = try makeStreamSink(sinkText)
        let log = try predictionLog(args, prefix: "stream", loops: 1, events: events)
        defer { log?.stop() }
        let stream: StreamComponent
        do {
            stream = try StreamComponent(registry: access.models, reference: try args.require("model"), name: name, source: source,
                                         sink: sink, options: options, events: events, authenticator: authenticator, predictionLog: log)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let runner = ComponentHost(component: stream, observer: nil, configuration: HTTPServer.Configuration(host: host, port: port, threads: 1),
                                   authenticator: authenticator, events: events, fleet: access.fleet, dependencies: access.dependencies)
        let termination = Termination()
        let bound = try startListening(runner, host: host, port: port)
        stream.start()
        access.follow(runner)
        logLine("stream \(name): \(source.description) → \(sink.description); control API on http://\(host):\(bound)")
        fflush(nil)
        termination.wait()
        logLine("stopping: finishing the micro-batches already read")
        stream.stop()
        runner.stop()
        return Exit.ok
    })

let streamProduceCommand = Command(
    words: ["stream", "produce"],
    summary: "Write credit-fixture events at a steady rate to a folder or a Redis stream (demos, benchmarks)",
    options: [
        Option(name: "to", value: "dir:PATH|redis://HOST:PORT/STREAM", help: "where the events go", required: true),
        Option(name: "rate", value: "N", help: "events per second (0: as fast as possible)", defaultValue: "1000"),
        Option(name: "count", value: "N", help: "stop after N events", defaultValue: "until interrupted"),
        Option(name: "seed", value: "S", help: "fixture seed", defaultValue: "7"),
        Option(name: "first-id", value: "N", help: "id of the first event", defaultValue: "1"),
    ],
    details: """
        Each event is a credit-fixture JSON object with "id" and "event_time" (Unix seconds,
        when it was written). A folder gets one growing file, events-TIME-PID.jsonl, written in
        whole lines; a Redis stream gets XADD STREAM * data JSON, pipelined.
        """,
    run: { args in
        let to = try args.require("to")
        let rate = try args.double("rate") ?? 1000
        let countText = args.string("count")
        let count = countText == nil || countText == "until interrupted" ? Int.max : try args.integer("count", range: 1...Int.max)!
        guard let seed = UInt64(args.string("seed") ?? "7") else { throw UsageError("--seed expects a whole number") }
        let firstID = try args.integer("first-id", range: 0...Int.max) ?? 1
        let endpoint: Endpoint
        do { endpoint = try Endpoint(to) } catch { throw UsageError("\(error)") }
        let stop = StopFlag()
        onTermination { stop.stop() }
        let producer = try EventProducer(endpoint, seed: seed, firstID: firstID)
        let sent = try producer.run(rate: rate, count: count, stop: stop)
        writeError("wrote \(sent) events to \(to)")
        return Exit.ok
    })

/// Writes credit-fixture events with ids and event times to a folder or a Redis stream.
final class EventProducer {
    private var generator: CreditFixture
    private var nextID: Int
    private let file: Int32?
    private let redis: RedisClient?
    private let stream: [UInt8]
    let path: String

    init(_ endpoint: Endpoint, seed: UInt64, firstID: Int) throws {
        generator = CreditFixture(seed: seed)
        nextID = firstID
        switch endpoint {
        case .folder(let url):
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyyMMdd-HHmmss"
            let name = "events-\(formatter.string(from: Date()))-\(getpid())-\(firstID).jsonl"
            path = url.appendingPathComponent(name).path
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw CommandError("cannot write \(path): \(String(cString: strerror(errno)))") }
            file = fd
            redis = nil
            stream = []
        case .redis(let address):
            do { redis = try RedisClient(host: address.host, port: address.port) } catch { throw CommandError("\(error)") }
            file = nil
            stream = Array(address.stream.utf8)
            path = address.description
        }
    }

    deinit { if let file { close(file) } }

    /// Appends `n` events stamped `now` to `out` (JSON Lines), one per line.
    func events(_ n: Int, into out: inout [UInt8]) {
        let now = JSONWriter.numberText((Date().timeIntervalSince1970 * 1e6).rounded() / 1e6)
        for _ in 0..<n {
            var row = generator.next()
            row.id = nextID
            nextID += 1
            CreditFixture.appendJSON(row, to: &out)
            out.removeLast(2)  // "}\n"
            out.append(contentsOf: #","event_time":"#.utf8)
            out.append(contentsOf: now.utf8)
            out.append(contentsOf: [0x7D, 0x0A])
        }
    }

    /// Writes `n` events now.
    func send(_ n: Int) throws {
        var out: [UInt8] = []
        events(n, into: &out)
        try deliver(out)
    }

    /// Writes `out` (whole JSON lines) to the file or the stream.
    private func deliver(_ out: [UInt8]) throws {
        if let file {
            var offset = 0
            while offset < out.count {
                let w = out.withUnsafeBytes { write(file, $0.baseAddress! + offset, out.count - offset) }
                if w < 0 {
                    if errno == EINTR { continue }
                    throw CommandError("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += w
            }
        } else if let redis {
            var commands: [[[UInt8]]] = []
            var start = 0
            for (i, b) in out.enumerated() where b == 0x0A {
                commands.append([Array("XADD".utf8), stream, [0x2A], Array("data".utf8), Array(out[start..<i])])
                start = i + 1
            }
            for reply in try redis.pipeline(commands) {
                if case .failure(let error) = reply { throw CommandError("\(error)") }
            }
        }
    }

    /// Sends at `rate` events/s (0: flat out) until `count` or `stop`; returns how many.
    func run(rate: Double, count: Int, stop: StopFlag) throws -> Int {
        let start = csystem_monotonic_ns()
        var sent = 0
        while sent < count && !stop.stopped {
            let due: Int
            if rate > 0 {
                let elapsed = Double(csystem_monotonic_ns() - start) / 1e9
                due = min(count, Int(elapsed * rate)) - sent
            } else {
                due = min(count - sent, 10_000)
            }
            if due > 0 {
                let n = min(due, 50_000)
                var out: [UInt8] = []
                events(n, into: &out)
                // Redis may restart under a producer: the same events are sent again once it answers.
                var backoff = Backoff()
                var outage: Date?
                while true {
                    do {
                        try deliver(out)
                        break
                    } catch let error where redis != nil {
                        if stop.stopped { return sent }
                        if outage == nil {
                            outage = Date()
                            writeError("\(error); retrying with backoff")
                        }
                        let end = Date().addingTimeInterval(backoff.next())
                        while Date() < end && !stop.stopped { usleep(20_000) }
                    }
                }
                if let outage { writeError("\(path) reachable again after \(Int(Date().timeIntervalSince(outage))) s") }
                sent += n
            } else {
                usleep(2_000)
            }
        }
        return sent
    }
}
