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
            typed.append(scorer.fieldValues(json: value))
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
        // Covers, as a library records them: how many of the sample rows reach each node (plus
        // one per leaf, so no split is empty), for explanations.
        var cover = [Double](repeating: 0, count: tree.feature.count)
        for row in sample {
            var i = 0
            while tree.feature[i] != -1 {
                let x = Float(row[tree.feature[i]])
                i = x < Float(tree.threshold[i]) ? tree.left[i] : tree.right[i]
            }
            cover[i] += 1
        }
        for i in cover.indices.reversed() {
            cover[i] = tree.feature[i] == -1 ? cover[i] + 1 : cover[tree.left[i]] + cover[tree.right[i]]
        }
        tree.cover = cover
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

/// The benchmarks' credit model, trained on 20,000 generated rows (also written to `writing`, if given).
func trainBenchDocument(writing path: String? = nil) throws -> ModelDocument {
    var generator = CreditFixture(seed: 7)
    var csv = Array(CreditFixture.csvHeader.utf8)
    for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
    if let path { try Data(csv).write(to: URL(fileURLWithPath: path)) }
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
        Option(name: "routes", value: "LIST", help: "oip (POST /v2/models/credit/infer) and/or score (POST /score)", defaultValue: "oip,score"),
        Option(name: "auth", value: "LIST", help: "open (no key), key (a secured serve, Authorization: Bearer with a predict key), log (open, logging every prediction), shadow (open, a shadow version scoring a copy), drift (open, every row counted for drift), open2 (a second open serve, the same as open: how far two identical serves differ in one run, the noise of every comparison with open)", defaultValue: "open,key"),
        Option(name: "log-policy", value: "all|sample=SHARE", help: "what the open+log serve (--auth log) logs", defaultValue: "all"),
        Option(name: "shadow-sample", value: "PERCENT", help: "the rows the open+shadow serve (--auth shadow) copies to its shadow", defaultValue: "100"),
        Option(name: "wrk-threads", value: "LIST", help: "wrk load threads (-t) to run with", defaultValue: "1,2"),
        Option(name: "busy-poll", value: "MICROSECONDS", help: "the serves' --busy-poll (see 'switchyard serve --help'): CPU traded for latency at low concurrency", defaultValue: "0"),
    ],
    details: """
        Starts a serve component in this process on a free loopback port (a credit model
        trained in memory, in a temporary SWITCHYARD_HOME) and drives it with the built-in
        closed-loop load generator: one thread, keep-alive connections, each sending a
        single-record Open Inference Protocol request as soon as the last one is answered.
        The generator shares the machine's cores with the server, as wrk would.
        With wrk on PATH, wrk is the load instead, with each of --wrk-threads; every run
        reports the generator's CPU, and says so when it was the bottleneck (at 90% or more
        of its threads: the server could have answered more).

        Each route (--routes) runs open and with a key (--auth): the keyed runs go to a
        second serve that requires a predict key, as a secured service runs.

        First it feeds each route's request (open, and keyed with --auth key) through the
        server's parse, route, score and serialize path on one thread, without sockets: the
        server's own CPU per request. Every run then reports the server's CPU per request
        answered (user and kernel, from its rusage; nginx's workers' from /proc).

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
        func list(_ name: String, _ fallback: String, _ allowed: [String]) throws -> [String] {
            let values = (args.string(name) ?? fallback).split(separator: ",").map(String.init)
            for v in values where !allowed.contains(v) { throw UsageError("--\(name) takes \(allowed.joined(separator: ", ")), got \"\(v)\"") }
            return values
        }
        let routes = try list("routes", "oip,score", ["oip", "score"])
        let auths = try list("auth", "open,key", ["open", "key", "log", "shadow", "drift", "open2"])
        let wrkThreads = try list("wrk-threads", "1,2", ["1", "2", "3", "4"]).map { Int($0)! }
        let busyPoll = try args.busyPoll()

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-bench-\(getpid())")
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = Home(folder)
        var document = try trainBenchDocument()
        let (registry, keys, adminKey, predictKey) = try registryCall { () throws(RegistryError) in
            let registry = try ModelRegistry(home: home)
            try registry.register(document, who: "bench")
            document.estimator.intercepts[0] += 0.25
            try registry.register(document, who: "bench")
            try registry.promote(model: "credit", version: 1, alias: "production", who: "bench")
            let keys = try KeyStore(home: home)
            return (registry, keys, try keys.create(scope: .admin, name: "bench", who: "bench").1,
                    try keys.create(scope: .predict, name: "bench-load", who: "bench").1)
        }
        let authenticator = Authenticator(store: keys, loops: threads)
        let events = EventLog()
        func makeHost(open: Bool, log: PredictionLog? = nil) throws -> ComponentHost {
            try benchServeHost(registry, open: open, threads: threads, busyPoll: busyPoll, events: events, authenticator: authenticator, log: log).host
        }
        let host = try makeHost(open: true)
        // --auth key: the same model behind a serve that requires a predict key (a secured service);
        // --auth log: an open one logging predictions (what the log costs at full load).
        let secured = auths.contains("key") ? try makeHost(open: false) : nil
        // --auth open2: a second open serve, the control for every comparison with open.
        let control = auths.contains("open2") ? try makeHost(open: true) : nil
        guard let logPolicy = PredictionLog.Policy(args.string("log-policy") ?? "all"), logPolicy != .off else {
            throw UsageError("--log-policy is all or sample=SHARE")
        }
        let log = auths.contains("log")
            ? try PredictionLog(.init(folder: folder.appendingPathComponent("predictions"), prefix: "bench", policy: logPolicy, key: nil), loops: threads)
            : nil
        defer { log?.stop() }
        let logging = try log.map { try makeHost(open: true, log: $0) }
        // --auth shadow: an open serve of an alias that runs v1 with v2 as a shadow (--shadow-sample of its rows).
        let shadowSample = try args.double("shadow-sample") ?? 100
        // --auth drift: an open serve of a version (v3, alias "drifting") that has a drift baseline,
        // so every row is also counted into its bins.
        var drifting: (host: ComponentHost, serve: ServeComponent)?
        if auths.contains("drift") {
            var third = try registryCall { () throws(RegistryError) in try registry.document(try registry.resolve("credit@1")) }
            third.estimator.intercepts[0] += 1e-6
            let scorer = try Scorer(third)
            var generator = CreditFixture(seed: 9)
            var csv = Array(CreditFixture.csvHeader.utf8)
            for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
            let baseline = DriftBaseline.make(scorer: scorer, rows: try DriftBaseline.rows(csv: csv, name: "the credit fixture", scorer: scorer))
            _ = try registryCall { () throws(RegistryError) in
                let v = try registry.register(third, who: "bench").version
                try registry.setBaseline(model: "credit", version: v.version, baseline: baseline, who: "bench")
                try registry.promote(model: "credit", version: v.version, alias: "drifting", who: "bench")
            }
            drifting = try benchServeHost(registry, reference: "credit@drifting", open: true, threads: threads, busyPoll: busyPoll, events: events, authenticator: authenticator, log: nil)
            drifting?.serve.tick()  // finds the baseline now
        }
        var shadowed: (host: ComponentHost, serve: ServeComponent)?
        if auths.contains("shadow") {
            let route = try registryCall { () throws(RegistryError) in try AliasRoute(words: ["1=100"], key: nil, shadow: .init(version: 2, sample: shadowSample)) }
            _ = try registryCall { () throws(RegistryError) in try registry.setRoute(model: "credit", alias: "shadowed", route: route, who: "bench") }
            shadowed = try benchServeHost(registry, reference: "credit@shadowed", open: true, threads: threads, busyPoll: busyPoll, events: events, authenticator: authenticator, log: nil)
        }
        let body = #"{"inputs":[{"name":"input","shape":[1,15],"datatype":"BYTES","data":[12042.41,36,18.19,14703.84,55,19.3,1.0,2,0,8,0.531,724,"east","student","branch"]}]}"#
        let scoreBody = #"{"data":[{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}]}"#
        /// The request of a route, with the key's header for a keyed run.
        func requestBytes(_ route: String, keyed: Bool) -> (path: String, body: String, headers: [(String, String)], bytes: [UInt8]) {
            let (path, text) = route == "oip" ? ("/v2/models/credit/infer", body) : ("/score", scoreBody)
            let headers = [("Content-Type", "application/json")] + (keyed ? [("Authorization", "Bearer \(predictKey)")] : [])
            let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined()
            return (path, text, headers, Array((head + "Content-Length: \(text.utf8.count)\r\n\r\n\(text)").utf8))
        }
        let request = requestBytes("oip", keyed: false).bytes
        print("requests: single-record POST /v2/models/credit/infer (\(request.count) bytes), POST /score (\(requestBytes("score", keyed: false).bytes.count) bytes)")
        // Before the loops start, so this thread is loop 0's only user.
        print("in-process, no sockets (parse, route, score, serialize on one thread):")
        for route in routes {
            for auth in auths where auth == "open" || auth == "key" {
                let server = auth == "key" ? secured!.server : host.server
                let cost = try inProcessCost(server, request: requestBytes(route, keyed: auth == "key").bytes)
                print("  \(route == "oip" ? "OIP" : "/score") \(auth): \(cost)")
            }
        }
        print("")

        let port = try host.start()
        defer { host.stop() }
        let securedPort = try secured?.start() ?? 0
        defer { secured?.stop() }
        let loggingPort = try logging?.start() ?? 0
        defer { logging?.stop() }
        let shadowPort = try shadowed?.host.start() ?? 0
        defer { shadowed?.host.stop() }
        let driftPort = try drifting?.host.start() ?? 0
        defer { drifting?.host.stop() }
        let controlPort = try control?.start() ?? 0
        defer { control?.stop() }
        print("server: \(threads) event loop\(threads == 1 ? "" : "s") on 127.0.0.1:\(port) (open)" + (secured == nil ? "" : ", :\(securedPort) (a predict key required)")
            + (logging == nil ? "" : ", :\(loggingPort) (open, logging \(logPolicy.text))")
            + (shadowed == nil ? "" : ", :\(shadowPort) (open, v2 shadowing \(JSONWriter.numberText(shadowSample))% of rows)")
            + (control == nil ? "" : ", :\(controlPort) (open, a second one)") + "; \(ProcessInfo.processInfo.activeProcessorCount) cores in all"
            + (busyPoll > 0 ? "; busy-poll \(Int((busyPoll * 1e6).rounded())) µs" : ""))
        let nginx = args.flag("nginx") ? try NginxReference.start(workers: ProcessInfo.processInfo.activeProcessorCount) : nil
        defer { nginx?.stop() }
        if let nginx { print("reference: nginx (\(nginx.workers) workers) answering a fixed 200 to the same POST on 127.0.0.1:\(nginx.port)") }
        _ = LoadGenerator.run(port: port, request: request, connections: 4, duration: 0.5)  // warm up
        let wrk = findExecutable("wrk")
        let generators = wrk == nil ? [1] : wrkThreads
        print("load: " + (wrk == nil ? "the built-in generator (1 thread; install wrk for more)" : "wrk -t\(generators.map(String.init).joined(separator: "/-t")) --latency") + "\n")
        func us(_ ns: Double) -> String { ns >= 10_000_000 ? String(format: "%.0f ms", ns / 1e6) : String(format: "%.0f µs", ns / 1000) }
        struct Variant: Hashable { var route: String; var auth: String; var generators: Int; var connections: Int; var keyed: Bool { auth == "key" } }
        var ours: [Variant: [LoadSummary]] = [:], theirs: [Variant: [LoadSummary]] = [:]
        var variants: [Variant] = []
        for route in routes { for auth in auths { for g in generators { for c in counts {
            // wrk needs a connection per thread: -t2 at 1 connection runs 2, and says so.
            let variant = Variant(route: route, auth: auth, generators: g, connections: max(c, g))
            if !variants.contains(variant) { variants.append(variant) }
        } } } }
        for round in 1...rounds {
            if rounds > 1 { print("round \(round) of \(rounds)…") }
            for v in variants {
                let r = requestBytes(v.route, keyed: v.keyed)
                /// One run against `port`; `serverCPU` reads the server's CPU seconds so far.
                func load(_ port: Int, serverCPU: () -> Double) throws -> LoadSummary {
                    let before = serverCPU()
                    var summary = try wrk.map {
                        try runWrk($0, port: port, path: r.path, body: r.body, headers: r.headers, threads: v.generators, connections: v.connections, duration: duration)
                    } ?? LoadSummary(LoadGenerator.run(port: port, request: r.bytes, connections: v.connections, duration: duration))
                    summary.serverCPU = serverCPU() - before
                    return summary
                }
                let target: Int = ["key": securedPort, "log": loggingPort, "shadow": shadowPort, "drift": driftPort, "open2": controlPort][v.auth] ?? port
                // This process's CPU: the serves (the idle ones' share is nil) and, without wrk, the built-in generator too.
                ours[v, default: []].append(try load(target, serverCPU: { processCPU(RUSAGE_SELF) }))
                if let nginx { theirs[v, default: []].append(try load(nginx.port, serverCPU: { nginx.workersCPU() })) }
            }
        }
        func rate(_ runs: [LoadSummary]) -> String {
            let rates = runs.map(\.rate)
            return runs.count > 1 ? "\(Int(LoadSummary.median(rates))) (\(Int(rates.min()!))–\(Int(rates.max()!)))" : "\(Int(rates[0]))"
        }
        func cpu(_ runs: [LoadSummary], _ v: Variant) -> String {
            guard wrk != nil else { return "" }
            let share = LoadSummary.median(runs.map(\.generatorCPU)) / Double(v.generators)
            return String(format: "%3.0f%%", share * 100) + (share >= 0.9 ? " ←bound" : "")
        }
        /// The server's CPU per request (user and kernel), median over the rounds.
        func perRequest(_ runs: [LoadSummary]) -> String {
            String(format: "%.1f µs", LoadSummary.median(runs.map { $0.serverCPU / max($0.rate * $0.seconds, 1) * 1e6 }))
        }
        var table: [[String]] = [["route", "serve", "load", "conns", "switchyard req/s", "p50", "p99", "CPU/req", "wrk CPU"]
            + (nginx == nil ? [] : ["nginx req/s", "p50", "p99", "CPU/req", "wrk CPU", "ratio"]) + ["non-2xx", "broken"]]
        for v in variants {
            let mine = ours[v]!
            let serveLabel: String = ["key": "key", "log": "open+log", "shadow": "open+shadow", "drift": "open+drift", "open2": "open #2"][v.auth] ?? "open"
            var row: [String] = [v.route == "oip" ? "OIP" : "/score", serveLabel, wrk == nil ? "built-in" : "wrk -t\(v.generators)", "\(v.connections)",
                       rate(mine), us(LoadSummary.median(mine.map(\.p50))), us(LoadSummary.median(mine.map(\.p99))), perRequest(mine), cpu(mine, v)]
            if nginx != nil {
                let ref = theirs[v]!
                let ratio = LoadSummary.median(mine.map(\.rate)) / LoadSummary.median(ref.map(\.rate))
                let pairs = zip(mine, ref).map { $0.rate / $1.rate }
                row += [rate(ref), us(LoadSummary.median(ref.map(\.p50))), us(LoadSummary.median(ref.map(\.p99))), perRequest(ref), cpu(ref, v),
                        String(format: "%.2f×", ratio) + (rounds > 1 ? String(format: " (%.2f–%.2f)", pairs.min()!, pairs.max()!) : "")]
            }
            row += ["\(mine.map(\.failed).reduce(0, +))", "\(mine.map(\.broken).reduce(0, +))"]
            table.append(row)
        }
        print(benchTable(table))
        if wrk != nil {
            print("wrk CPU: the load generator's CPU over the run as a share of its threads (←bound: at 90% or more it, not the server, set the rate).")
            print("Latency percentiles are wrk's own (--latency).")
        }
        print("CPU/req: the server's CPU (user and kernel, from its rusage" + (nginx == nil ? "" : "; nginx's workers' from /proc") + ") over the run, per request answered"
            + (wrk == nil ? "; the built-in generator runs in this process, so its CPU is counted too." : "."))
        if nginx != nil { print("ratio: switchyard's median requests/s over nginx's in the same configuration" + (rounds > 1 ? " (round by round in brackets)" : "") + ".") }
        func medianRate(_ runs: [LoadSummary]) -> Double { LoadSummary.median(runs.map(\.rate)) }
        func medianP99(_ runs: [LoadSummary]) -> Double { LoadSummary.median(runs.map(\.p99)) }
        /// `other`'s median p99 and requests/s over `open`'s: "p99 1.04×, requests/s 0.98×".
        func versus(_ open: [LoadSummary], _ other: [LoadSummary]) -> String {
            String(format: "p99 %.2f×, requests/s %.2f×", medianP99(other) / max(medianP99(open), 1), medianRate(other) / medianRate(open))
        }
        /// One line per configuration: `auth`'s runs beside the open serve's, and with --auth open2
        /// the second open serve's beside them too (how far the same serve differs: the noise).
        func againstOpen(_ auth: String, _ line: (_ route: String, _ threads: Int, _ connections: Int, _ open: [LoadSummary], _ other: [LoadSummary]) -> String) {
            for route in routes {
                for g in generators {
                    for c in counts {
                        guard let open = ours[Variant(route: route, auth: "open", generators: g, connections: max(c, g))],
                              let other = ours[Variant(route: route, auth: auth, generators: g, connections: max(c, g))] else { continue }
                        var text = line(route == "oip" ? "OIP" : "/score", g, max(c, g), open, other)
                        if auth != "open2", let second = ours[Variant(route: route, auth: "open2", generators: g, connections: max(c, g))] {
                            text += " [noise: a second open serve gave \(versus(open, second))]"
                        }
                        print(text)
                    }
                }
            }
        }
        if let log {
            print("serve: open, key (a predict key required) or open+log (predictions logged, \(logPolicy.text): \(log.counts.written) lines written, \(log.counts.dropped) dropped).")
            againstOpen("log") { route, g, c, open, logged in
                String(format: "  the log's cost, %@ wrk -t%d %d connections: %.1f%% of requests/s (goal ≤ 5%%)", route, g, c, (1 - medianRate(logged) / medianRate(open)) * 100)
            }
        }
        if let shadowed, let comparison = shadowed.serve.shadows.current {
            let tally = comparison.counts
            print("serve open+shadow: v1 answers, v2 scores a copy of \(JSONWriter.numberText(shadowSample))% of rows off the event loops (\(tally.compared) compared, \(tally.dropped) dropped by the full queue).")
            againstOpen("shadow") { route, g, c, open, shadow in
                "  p99 with the shadow, \(route) wrk -t\(g) \(c) connections: \(us(medianP99(shadow))) vs \(us(medianP99(open))) without: "
                    + String(format: "%.2f× (goal ≤ 1.1×); requests/s %.2f×", medianP99(shadow) / max(medianP99(open), 1), medianRate(shadow) / medianRate(open))
            }
        }
        if control != nil {
            print("serve open #2: a second open serve, the same as open, run in the same rounds: how far two identical serves differ here.")
            againstOpen("open2") { route, g, c, open, second in
                "  open #2 against open, \(route) wrk -t\(g) \(c) connections: \(versus(open, second)) (1.00× were the runs free of noise)"
            }
        }
        if let drifting {
            print("serve open+drift: every row counted into its version's baseline bins (\(drifting.serve.driftStatus().first?.rows ?? 0) rows in the drift window at the end).")
            againstOpen("drift") { route, g, c, open, drift in
                "  drift's cost, \(route) wrk -t\(g) \(c) connections: "
                    + String(format: "requests/s %.2f×, p99 %.2f×", medianRate(drift) / medianRate(open), medianP99(drift) / max(medianP99(open), 1))
            }
        }

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
            func line(_ what: String, _ run: LoadSummary) -> [String] {
                [what, "\(Int(run.rate))", us(run.p50), us(run.p99), "\(run.failed)", "\(run.broken)"]
            }
            print(benchTable([["64 connections", "requests/s", "p50", "p99", "non-2xx", "broken"],
                              line("with swaps", LoadSummary(r)), line("without, just before", LoadSummary(quiet))]))
            let (swapping, steady) = (LoadSummary(r).p99, LoadSummary(quiet).p99)
            print(String(format: "p99 with swaps %.0f µs, without %.0f µs: %.2f× (goal ≤ 1.5×; a swap loads off the event loops)",
                         swapping / 1000, steady / 1000, swapping / max(steady, 1)))
        }
        return Exit.ok
    })

/// A serve of credit@production on a free port for `bench serve`: open or requiring a predict key, logging or not.
private func benchServeHost(
    _ registry: ModelRegistry, reference: String = "credit@production", open: Bool, threads: Int, busyPoll: Double, events: EventLog, authenticator: Authenticator,
    log: PredictionLog?
) throws -> (host: ComponentHost, serve: ServeComponent) {
    let serve: ServeComponent
    do {
        serve = try ServeComponent(
            registry: registry, reference: reference, loops: threads, open: open, events: events, authenticator: authenticator,
            predictionLog: log)
    } catch let error as HTTPError {
        throw CommandError(error.message)
    }
    return (ComponentHost(
        component: serve, observer: { serve.observe(loop: $0, status: $1, nanoseconds: $2) },
        configuration: .init(port: 0, threads: threads, busyPoll: busyPoll), authenticator: authenticator, events: events, fleet: nil), serve)
}

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

/// Runs wrk (`threads` threads, `connections` connections) with a POST script; parses rate, p50,
/// p99, non-2xx and socket errors, and measures wrk's own CPU (its rusage as a reaped child).
private func runWrk(
    _ wrk: String, port: Int, path: String, body: String, headers: [(String, String)], threads: Int, connections: Int, duration: Double
) throws -> LoadSummary {
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-wrk-\(getpid()).lua")
    defer { try? FileManager.default.removeItem(at: script) }
    func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'" }
    try ("wrk.method = 'POST'\nwrk.body = \(quoted(body))\n" + headers.map { "wrk.headers[\(quoted($0.0))] = \(quoted($0.1))\n" }.joined())
        .write(to: script, atomically: true, encoding: .utf8)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: wrk)
    let seconds = max(1, Int(duration))
    process.arguments = ["-t\(threads)", "-c\(max(connections, threads))", "-d\(seconds)s", "--latency", "-s", script.path, "http://127.0.0.1:\(port)\(path)"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    let cpuBefore = processCPU(RUSAGE_CHILDREN)
    let started = monotonicNanoseconds()
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let wall = Double(monotonicNanoseconds() - started) / 1e9
    func microseconds(_ text: Substring) -> Double {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("us") { return (Double(t.dropLast(2)) ?? 0) * 1000 }
        if t.hasSuffix("ms") { return (Double(t.dropLast(2)) ?? 0) * 1e6 }
        if t.hasSuffix("s") { return (Double(t.dropLast(1)) ?? 0) * 1e9 }
        return 0
    }
    var result = LoadSummary()
    result.seconds = Double(seconds)
    for line in output.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if line.contains("Requests/sec:"), let v = fields.last.flatMap({ Double($0) }) { result.rate = v }
        if fields.first == "50%", fields.count > 1 { result.p50 = microseconds(fields[1]) }
        if fields.first == "99%", fields.count > 1 { result.p99 = microseconds(fields[1]) }
        if line.contains("Non-2xx"), let v = fields.last.flatMap({ Int($0) }) { result.failed = v }
        if line.contains("Socket errors") { result.broken = line.split(separator: ",").compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }.reduce(0, +) }
    }
    guard result.rate > 0 else { throw CommandError("wrk gave no result:\n\(output)") }
    result.generatorCPU = (processCPU(RUSAGE_CHILDREN) - cpuBefore) / max(wall, 1e-3)
    return result
}

/// User and system CPU seconds of this process (`RUSAGE_SELF`) or of its reaped children (`RUSAGE_CHILDREN`).
private func processCPU(_ who: __rusage_who) -> Double {
    var usage = rusage()
    getrusage(who.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Left-aligned columns, two spaces apart, the first row a header.
func benchTable(_ rows: [[String]]) -> String {
    var widths = [Int](repeating: 0, count: rows.map(\.count).max() ?? 0)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    return rows.map { row in
        row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }.joined(separator: "\n")
}

/// One load run: rate, latency percentiles (ns), failures.
struct LoadSummary {
    var rate = 0.0
    var p50 = 0.0
    var p99 = 0.0
    var failed = 0
    var broken = 0
    /// The load generator's CPU over the run, in cores (wrk only).
    var generatorCPU = 0.0
    /// The server's CPU seconds over the run.
    var serverCPU = 0.0
    /// How long the load ran (wrk's whole seconds; the built-in generator's measured time).
    var seconds = 0.0

    init() {}

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    init(_ r: LoadGenerator.Result) {
        rate = r.rate
        seconds = r.seconds
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

    /// The CPU seconds (user and system) nginx's workers have used: the processes whose parent is
    /// the master, from /proc (clock ticks, 10 ms each, so a few seconds' run reads within 1%).
    func workersCPU() -> Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.allSatisfy(\.isNumber) {
            guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // After the command's closing parenthesis: state, ppid, …; utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 13, Int32(fields[1]) == pid, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            total += (user + system) / ticks
        }
        return total
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
