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

let benchScoreCommand = Command(
    words: ["bench", "score"],
    summary: "Measure the embedded scorer: single-record latency and batch rows/s on one core",
    options: [
        Option(name: "model", value: "REF", help: "a registered model (default: a logistic regression trained in memory, then a tree ensemble)"),
        Option(name: "trees", value: "N", help: "trees in the default tree ensemble", defaultValue: "100"),
        Option(name: "depth", value: "D", help: "depth of its trees", defaultValue: "6"),
        Option(name: "records", value: "N", help: "single-record predictions timed, one by one", defaultValue: "200000"),
        Option(name: "rows", value: "N", help: "rows in the batch", defaultValue: "1000000"),
        Option(name: "repeat", value: "N", help: "batch runs; the median is reported", defaultValue: "5"),
    ],
    details: """
        Single record: each call is timed on its own (CLOCK_MONOTONIC, ~20 ns resolution
        and overhead included), for three inputs: a typed record in schema order, a
        parsed JSON object, and JSON text (parse + score). Batch: an already-parsed
        column batch of credit rows scored into a reused output, on one thread.
        The default tree ensemble is synthetic: complete trees with random splits over
        the credit fields at thresholds drawn from fixture rows, XGBoost's rules
        (x < t in float32) — the shape of an imported 100-tree, depth-6 model.
        """,
    run: { args in
        let records = try args.integer("records", range: 1000...100_000_000) ?? 200_000
        let rows = try args.integer("rows", range: 1000...100_000_000) ?? 1_000_000
        let repeats = try args.integer("repeat", range: 1...100) ?? 5
        if let reference = args.string("model") {
            let (version, scorer) = try loadScorer(try openRegistry(), reference)
            try benchScorer(scorer, label: version.reference, records: records, rows: rows, repeats: repeats)
        } else {
            let trees = try args.integer("trees", range: 1...10_000) ?? 100
            let depth = try args.integer("depth", range: 1...16) ?? 6
            try benchScorer(try trainBenchModel(), label: "credit logistic regression (trained in memory on 20,000 fixture rows)",
                records: records, rows: rows, repeats: repeats)
            print("")
            let ensemble: Scorer
            do { ensemble = try Scorer(benchTreeDocument(trees: trees, depth: depth)) } catch {
                throw CommandError("could not compile the benchmark trees: \(error)")
            }
            try benchScorer(ensemble, label: "credit tree ensemble (\(trees) trees of depth \(depth), synthetic)",
                records: records, rows: rows, repeats: repeats)
        }
        return Exit.ok
    })

/// Times single records and a batch for one scorer, printing as it goes.
private func benchScorer(_ scorer: Scorer, label: String, records: Int, rows: Int, repeats: Int) throws {
        let fieldCount = scorer.fieldNames.count
        print("model: \(label); \(fieldCount) inputs, \(scorer.classes.count) classes")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; one thread used\n")

        // Inputs from the credit fixture (fields the model lacks are left out).
        var generator = CreditFixture(seed: 99)
        let sample = 4096
        var jsonLines: [[UInt8]] = []
        var typed: [[FieldValue]] = []
        var objects: [JSONValue] = []
        for _ in 0..<sample {
            var line: [UInt8] = []
            CreditFixture.appendJSON(generator.next(), to: &line)
            line.removeLast()
            guard let value = try? JSONValue.parse(line) else { continue }
            jsonLines.append(line)
            objects.append(value)
            typed.append(scorer.fieldNames.map { name in
                switch value[name] {
                case .number(let x)?: .number(x)
                case .string(let s)?: .text(s)
                default: .missing
                }
            })
        }
        guard (try? scorer.predict(json: objects[0])) != nil else {
            throw CommandError("the model cannot score credit fixture records; bench score needs a credit-shaped model")
        }

        func timeEach(_ name: String, _ body: (Int) throws -> Void) rethrows {
            var samples = [UInt64](repeating: 0, count: records)
            for i in 0..<min(records, 10_000) { try body(i % sample) }  // warm up
            for i in 0..<records {
                let start = csystem_monotonic_ns()
                try body(i % sample)
                samples[i] = csystem_monotonic_ns() - start
            }
            samples.sort()
            let p50 = samples[records / 2], p99 = samples[records * 99 / 100], max = samples[records - 1]
            print("  " + name.padding(toLength: 28, withPad: " ", startingAt: 0)
                + "p50 \(p50) ns   p99 \(p99) ns   max \(max) ns")
        }
        print("single record (\(records) calls each):")
        var sink = 0.0
        try timeEach("typed record") { sink += try scorer.predict(typed[$0]).probabilities[0] }
        try timeEach("parsed JSON object") { sink += try scorer.predict(json: objects[$0]).probabilities[0] }
        try timeEach("JSON text → prediction") { sink += try scorer.predict(json: try JSONValue.parse(jsonLines[$0])).probabilities[0] }

        // Batch: build once, score repeatedly.
        var batch = ColumnBatch(for: scorer, capacity: rows)
        for r in 0..<rows {
            batch.appendRow()
            let record = typed[r % typed.count]
            for f in 0..<fieldCount {
                switch record[f] {
                case .number(let x): batch.setNumber(field: f, x)
                case .text(var s): s.withUTF8 { batch.setText(field: f, UnsafeRawBufferPointer($0)) }
                case .missing: break
                }
            }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)  // warm up, and size the output
        var rates: [Double] = []
        for _ in 0..<repeats {
            let start = csystem_monotonic_ns()
            scorer.score(batch, into: &output)
            let seconds = Double(csystem_monotonic_ns() - start) / 1e9
            rates.append(Double(rows) / seconds)
            sink += output.probabilities[0]
        }
        guard output.scored == rows else { throw CommandError("batch rejected \(rows - output.scored) rows: \(output.errors.first!)") }
        let sorted = rates.sorted()
        print("\nbatch (\(rows) rows, column-major, \(repeats) runs):")
        print("  median \(Int(sorted[sorted.count / 2])) rows/s   min \(Int(sorted.first!))   max \(Int(sorted.last!))"
            + "   (\(String(format: "%.1f", 1e9 / sorted[sorted.count / 2])) ns/row)")
        if sink.isNaN { print("") }  // keeps the work observable to the optimizer
}

/// Complete trees of `depth` with random splits over the credit fields, at
/// thresholds taken from fixture rows, and random leaves: an XGBoost-shaped
/// binary model of known size for `bench score`.
func benchTreeDocument(trees count: Int, depth: Int) throws -> ModelDocument {
    var generator = CreditFixture(seed: 5)
    var sample: [[Double]] = []
    var fields: [ModelDocument.Field] = []
    var steps: [ModelDocument.PreprocessingStep] = []
    let numbers = Array(CreditFixture.columns.dropFirst().prefix(12))
    for name in numbers {
        fields.append(.init(name: name, type: .number, missing: .passThrough))
        steps.append(.init(field: name, transform: .identity))
    }
    let categories = [("region", CreditFixture.regions), ("product", CreditFixture.products), ("channel", CreditFixture.channels)]
    for (name, values) in categories {
        fields.append(.init(name: name, type: .category, values: values, missing: .passThrough, unknown: .asMissing))
        steps.append(.init(field: name, transform: .categoryCode))
    }
    for _ in 0..<512 {
        var line: [UInt8] = []
        CreditFixture.appendJSON(generator.next(), to: &line)
        guard let value = try? JSONValue.parse(line.dropLast()) else { continue }
        sample.append(numbers.map { if case .number(let x)? = value[$0] { x } else { 0 } }
            + categories.map { name, values in
                if case .string(let s)? = value[name] { Double(values.firstIndex(of: s) ?? 0) } else { 0 } })
    }
    var random = SplitMix64(seed: 17)
    var trees: [ModelDocument.Tree] = []
    for _ in 0..<count {
        var tree = ModelDocument.Tree(margin: 0)
        let splits = (1 << depth) - 1
        for i in 0..<(2 * splits + 1) {
            if i < splits {
                let f = Int(random.next() % UInt64(fields.count))
                tree.feature.append(f)
                tree.threshold.append(sample[Int(random.next() % UInt64(sample.count))][f])
                tree.left.append(2 * i + 1)
                tree.right.append(2 * i + 2)
                tree.defaultLeft.append(random.next() & 1 == 0)
                tree.value.append(0)
            } else {
                tree.feature.append(-1)
                tree.threshold.append(0)
                tree.left.append(-1)
                tree.right.append(-1)
                tree.defaultLeft.append(false)
                tree.value.append(Double(Float(random.uniform() * 0.2 - 0.1)))
            }
        }
        trees.append(tree)
    }
    return ModelDocument(
        metadata: .init(name: "bench-trees", created: isoTimestamp(Date())),
        schema: .init(fields: fields), preprocessing: steps,
        estimator: .init(trees: .init(split: .lessThan, precision: .float32, average: false, trees: trees), intercepts: [0], link: .logistic),
        outputs: .init(classes: ["0", "1"]))
}

/// A credit model trained in memory, so the benchmarks run on a fresh machine.
private func trainBenchModel() throws -> Scorer {
    do { return try Scorer(try trainBenchDocument()) } catch { throw CommandError("could not compile the benchmark model: \(error)") }
}

func trainBenchDocument() throws -> ModelDocument {
    var generator = CreditFixture(seed: 7)
    var csv = Array(CreditFixture.csvHeader.utf8)
    for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
    do {
        return try Trainer.train(csv: csv, .init(name: "credit", label: "label", created: isoTimestamp(Date()))).document
    } catch {
        throw CommandError("could not train the benchmark model: \(error)")
    }
}

let benchServeCommand = Command(
    words: ["bench", "serve"],
    summary: "Measure the web service: requests/s and p50/p99 at 1, 16 and 64 connections, and swaps under load",
    options: [
        Option(name: "duration", value: "SECONDS", help: "length of each run", defaultValue: "5"),
        Option(name: "connections", value: "LIST", help: "connection counts to run", defaultValue: "1,16,64"),
        Option(name: "threads", value: "N", help: "server event loops", defaultValue: "one per core"),
        Option(name: "swaps", value: "N", help: "model swaps during the final 64-connection run", defaultValue: "20"),
        Option(name: "rounds", value: "N", help: "runs per connection count; medians are reported", defaultValue: "1"),
        Option(name: "nginx", help: "also run nginx answering a fixed 200 to the same POST, interleaved, and report the ratio"),
    ],
    details: """
        Starts a serve component in this process on a free loopback port (a credit model
        trained in memory, in a temporary SWITCHYARD_HOME) and drives it with the built-in
        closed-loop load generator: one thread, keep-alive connections, each sending a
        single-record Open Inference Protocol request as soon as the last one is answered.
        The generator shares the machine's cores with the server, as wrk would.
        With wrk on PATH, wrk (one thread) is the load instead.

        First it feeds the same request through the server's parse, route, score and
        serialize path on one thread, without sockets: the server's own CPU per request.

        --nginx starts nginx (from PATH or /usr/sbin) with a temporary configuration
        that answers every request with a fixed 200, one worker per core, on another
        free loopback port, and runs the same load against it after each switchyard
        run. With --rounds N, each figure is the median of N such interleaved runs,
        and the ratio line compares the medians. nginx is stopped at the end.
        """,
    run: { args in
        let duration = try args.double("duration") ?? 5
        guard duration > 0, duration <= 120 else { throw UsageError("--duration must be between 0 and 120 seconds") }
        let counts = try (args.string("connections") ?? "1,16,64").split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 1, n <= 1024 else { throw UsageError("--connections takes numbers from 1 to 1024, got \"\(text)\"") }
            return n
        }
        let threadsText = args.string("threads")
        let threads = threadsText == nil || threadsText == "one per core"
            ? ProcessInfo.processInfo.activeProcessorCount : try args.integer("threads", range: 1...64)!
        let swaps = try args.integer("swaps", range: 0...1000) ?? 20
        let rounds = try args.integer("rounds", range: 1...50) ?? 1

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-bench-\(getpid())")
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = Home(folder)
        var document = try trainBenchDocument()
        let (registry, keys, adminKey) = try registryCall { () throws(RegistryError) in
            let registry = try ModelRegistry(home: home)
            try registry.register(document, who: "bench")
            document.estimator.intercepts[0] += 0.25
            try registry.register(document, who: "bench")
            try registry.promote(model: "credit", version: 1, alias: "production", who: "bench")
            let keys = try KeyStore(home: home)
            return (registry, keys, try keys.create(scope: .admin, name: "bench", who: "bench").1)
        }
        let authenticator = Authenticator(store: keys, loops: threads)
        let events = EventLog()
        let serve: ServeComponent
        do {
            serve = try ServeComponent(registry: registry, reference: "credit@production", loops: threads, open: true, events: events, authenticator: authenticator)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let host = ComponentHost(
            component: serve, observer: { serve.observe(loop: $0, status: $1, nanoseconds: $2) },
            configuration: .init(port: 0, threads: threads), authenticator: authenticator, events: events, fleet: nil)
        let body = #"{"inputs":[{"name":"input","shape":[1,15],"datatype":"BYTES","data":[12042.41,36,18.19,14703.84,55,19.3,1.0,2,0,8,0.531,724,"east","student","branch"]}]}"#
        let request = Array("POST /v2/models/credit/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        print("request: single-record POST /v2/models/credit/infer (\(request.count) bytes)")
        // Before the loops start, so this thread is loop 0's only user.
        let inProcess = try inProcessCost(host.server, request: request)
        print("in-process, no sockets (parse, route, score, serialize on one thread): \(inProcess)\n")

        let port = try host.start()
        defer { host.stop() }
        print("server: \(threads) event loops on 127.0.0.1:\(port); load: 1 generator thread, \(ProcessInfo.processInfo.activeProcessorCount) cores in all")
        let nginx = args.flag("nginx") ? try NginxReference.start(workers: ProcessInfo.processInfo.activeProcessorCount) : nil
        defer { nginx?.stop() }
        if let nginx { print("reference: nginx (\(nginx.workers) workers) answering a fixed 200 to the same POST on 127.0.0.1:\(nginx.port)") }
        _ = LoadGenerator.run(port: port, request: request, connections: 4, duration: 0.5)  // warm up
        let wrk = findExecutable("wrk")
        func load(_ port: Int, _ connections: Int) throws -> LoadSummary {
            if let wrk { return try runWrk(wrk, port: port, body: body, connections: connections, duration: duration) }
            return LoadSummary(LoadGenerator.run(port: port, request: request, connections: connections, duration: duration))
        }
        func us(_ ns: Double) -> String { String(format: "%.0f µs", ns / 1000).padding(toLength: 11, withPad: " ", startingAt: 0) }
        let header = "connections  requests/s" + (rounds > 1 ? " (median, range)           " : "   ") + "p50        p99        non-2xx  broken"
        /// One line: medians of the runs (with the rate's range when there are several), failures summed.
        func report(_ c: Int, _ runs: [LoadSummary]) {
            let rates = runs.map(\.rate)
            let rate = runs.count > 1
                ? "\(Int(LoadSummary.median(rates))) (\(Int(rates.min()!))–\(Int(rates.max()!)))".padding(toLength: 39, withPad: " ", startingAt: 0)
                : String(Int(rates[0])).padding(toLength: 13, withPad: " ", startingAt: 0)
            print(String(c).padding(toLength: 13, withPad: " ", startingAt: 0) + rate
                + us(LoadSummary.median(runs.map(\.p50))) + us(LoadSummary.median(runs.map(\.p99)))
                + String(runs.map(\.failed).reduce(0, +)).padding(toLength: 9, withPad: " ", startingAt: 0) + "\(runs.map(\.broken).reduce(0, +))")
        }
        var ours: [Int: [LoadSummary]] = [:], theirs: [Int: [LoadSummary]] = [:]
        for round in 1...rounds {
            if rounds > 1 { print("round \(round) of \(rounds)…") }
            for c in counts {
                ours[c, default: []].append(try load(port, c))
                if let nginx { theirs[c, default: []].append(try load(nginx.port, c)) }
            }
        }
        print("\n" + (nginx == nil ? "" : "switchyard\n") + header)
        for c in counts { report(c, ours[c]!) }
        if let nginx {
            print("\nnginx, fixed 200 (\(nginx.workers) workers)\n" + header)
            for c in counts { report(c, theirs[c]!) }
            print("")
            for c in counts {
                let ratio = LoadSummary.median(ours[c]!.map(\.rate)) / LoadSummary.median(theirs[c]!.map(\.rate))
                let pairs = zip(ours[c]!, theirs[c]!).map { $0.rate / $1.rate }
                let p99 = "p99 \(us(LoadSummary.median(ours[c]!.map(\.p99))).trimmingCharacters(in: .whitespaces)) vs \(us(LoadSummary.median(theirs[c]!.map(\.p99))).trimmingCharacters(in: .whitespaces))"
                print("\(c) connections: switchyard/nginx \(String(format: "%.2f", ratio))×"
                    + (rounds > 1 ? " (round by round \(String(format: "%.2f", pairs.min()!))–\(String(format: "%.2f", pairs.max()!)))" : "") + "; " + p99)
            }
        }
        if wrk != nil { print("(load: wrk -t1 with --latency; wrk's percentiles are its own)") }

        if swaps > 0 {
            // The same load without swaps first, in this invocation: what the swaps cost is the difference.
            let quiet = LoadGenerator.run(port: port, request: request, connections: 64, duration: duration)
            let outcome = Mutex<LoadGenerator.Result?>(nil)
            let load = Thread {
                outcome.withLock { $0 = LoadGenerator.run(port: port, request: request, connections: 64, duration: duration) }
            }
            load.start()
            let client = HTTPClient(port: port)
            var swapFailures = 0
            let pause = UInt32(duration * 0.8 / Double(swaps) * 1e6)
            for i in 0..<swaps {
                usleep(pause)
                let r = try? client.request("POST", "/v1/model", headers: [("Content-Type", "application/json"), ("Authorization", "Bearer \(adminKey)")],
                                            body: Array(#"{"version": \#(i % 2 == 0 ? 2 : 1)}"#.utf8))
                if r?.status != 200 { swapFailures += 1 }
            }
            while !load.isFinished { usleep(10_000) }
            let r = outcome.withLock { $0 }!
            print("\n\(swaps) swaps (v1 ⇄ v2) during a 64-connection run (built-in generator): \(r.requests) requests, \(r.failed) failed, \(r.broken) broken connections, \(swapFailures) failed swaps")
            print(header)
            report(64, [LoadSummary(r)])
            print("the same run without swaps, just before:")
            report(64, [LoadSummary(quiet)])
            let (swapping, steady) = (LoadSummary(r).p99, LoadSummary(quiet).p99)
            print(String(format: "p99 with swaps %.0f µs, without %.0f µs: %.2f× (goal ≤ 1.5×; a swap loads off the event loops)",
                         swapping / 1000, steady / 1000, swapping / max(steady, 1)))
        }
        return Exit.ok
    })

/// The server's own CPU per request without the kernel: `request` fed through
/// the same `process` path the event loops use, 5 rounds of 100,000 on this
/// thread as loop 0. Returns "median ns (min–max)".
private func inProcessCost(_ server: HTTPServer, request: [UInt8]) throws -> String {
    var parser = HTTPRequestParser(limits: server.parserLimits)
    var events: [HTTPRequestParser.Event] = []
    var output: [UInt8] = []
    var rounds: [Double] = []
    let count = 100_000
    try request.withUnsafeBytes { bytes in
        for round in 0...5 {
            let start = monotonicNanoseconds()
            for _ in 0..<count {
                _ = server.process(bytes, parser: &parser, events: &events, output: &output, loop: 0)
                guard output.starts(with: "HTTP/1.1 200 ".utf8) else {
                    throw CommandError("the benchmark request did not get 200: \(String(decoding: output.prefix(300), as: UTF8.self))")
                }
                output.removeAll(keepingCapacity: true)
            }
            if round > 0 { rounds.append(Double(monotonicNanoseconds() - start) / Double(count)) }  // round 0 warms up
        }
    }
    rounds.sort()
    return String(format: "%.0f ns per request (%.0f–%.0f over 5 rounds of %d)", rounds[2], rounds[0], rounds[4], count)
}

/// The path of `name` on PATH, if any.
func findExecutable(_ name: String) -> String? {
    for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
        let path = "\(folder)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Runs wrk (one thread, `connections` connections) with a POST script; parses rate, p50, p99 and non-2xx.
private func runWrk(_ wrk: String, port: Int, body: String, connections: Int, duration: Double) throws -> LoadSummary {
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-wrk-\(getpid()).lua")
    defer { try? FileManager.default.removeItem(at: script) }
    let escaped = body.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
    try "wrk.method = 'POST'\nwrk.body = '\(escaped)'\nwrk.headers['Content-Type'] = 'application/json'\n".write(to: script, atomically: true, encoding: .utf8)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: wrk)
    process.arguments = ["-t1", "-c\(connections)", "-d\(max(1, Int(duration)))s", "--latency", "-s", script.path, "http://127.0.0.1:\(port)/v2/models/credit/infer"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    func microseconds(_ text: Substring) -> Double {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("us") { return (Double(t.dropLast(2)) ?? 0) * 1000 }
        if t.hasSuffix("ms") { return (Double(t.dropLast(2)) ?? 0) * 1e6 }
        if t.hasSuffix("s") { return (Double(t.dropLast(1)) ?? 0) * 1e9 }
        return 0
    }
    var result = LoadSummary()
    for line in output.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if line.contains("Requests/sec:"), let v = fields.last.flatMap({ Double($0) }) { result.rate = v }
        if fields.first == "50%", fields.count > 1 { result.p50 = microseconds(fields[1]) }
        if fields.first == "99%", fields.count > 1 { result.p99 = microseconds(fields[1]) }
        if line.contains("Non-2xx"), let v = fields.last.flatMap({ Int($0) }) { result.failed = v }
        if line.contains("Socket errors") { result.broken = line.split(separator: ",").compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }.reduce(0, +) }
    }
    guard result.rate > 0 else { throw CommandError("wrk gave no result:\n\(output)") }
    return result
}

/// One load run: rate, latency percentiles (ns), failures.
struct LoadSummary {
    var rate = 0.0
    var p50 = 0.0
    var p99 = 0.0
    var failed = 0
    var broken = 0

    init() {}

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    init(_ r: LoadGenerator.Result) {
        rate = r.rate
        p50 = r.quantile(0.5)
        p99 = r.quantile(0.99)
        failed = r.failed
        broken = r.broken
    }
}

/// nginx answering every request with a fixed 200, the yardstick of `bench serve --nginx`:
/// a temporary prefix and configuration, its own free loopback port, stopped by its pid.
final class NginxReference {
    let port: Int
    let workers: Int
    private let pid: pid_t
    private let folder: URL

    private init(port: Int, workers: Int, pid: pid_t, folder: URL) {
        self.port = port
        self.workers = workers
        self.pid = pid
        self.folder = folder
    }

    static func start(workers: Int) throws -> NginxReference {
        let candidates = [findExecutable("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"].compactMap { $0 }
        guard let nginx = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CommandError("--nginx needs nginx (Debian: apt-get install nginx-light)")
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-bench-nginx-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let port = try freeLoopbackPort()
        let configuration = """
            daemon off;
            worker_processes \(workers);
            pid \(folder.path)/nginx.pid;
            error_log \(folder.path)/error.log;
            events { worker_connections 4096; }
            http {
              access_log off;
              client_body_temp_path \(folder.path);
              server { listen 127.0.0.1:\(port); location / { return 200 '{"ok":true}'; } }
            }
            """
        try configuration.write(to: folder.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
        let log = folder.appendingPathComponent("output.log").path
        let pid = try spawnLogged(nginx, ["-p", folder.path, "-e", "\(folder.path)/error.log", "-c", "\(folder.path)/nginx.conf"],
                                  environment: ProcessInfo.processInfo.environment, log: log, append: false)
        let reference = NginxReference(port: port, workers: workers, pid: pid, folder: folder)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let fd = try? connectTCP(host: "127.0.0.1", port: port, timeout: 1) {
                close(fd)
                return reference
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let output = [log, "\(folder.path)/error.log"].compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.joined()
                try? FileManager.default.removeItem(at: folder)
                throw CommandError("nginx did not start: \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            usleep(50_000)
        }
        reference.stop()
        throw CommandError("nginx did not accept connections on 127.0.0.1:\(port) within 5 s")
    }

    /// Stops the master (which stops its workers) and removes the temporary prefix.
    func stop() {
        var status: Int32 = 0
        kill(pid, SIGQUIT)
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) == pid {
                try? FileManager.default.removeItem(at: folder)
                return
            }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        try? FileManager.default.removeItem(at: folder)
    }
}

/// A loopback port nothing listens on now (bound, read back, closed), for a server this process starts.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CommandError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard bound == 0 else { throw CommandError("bind: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}
