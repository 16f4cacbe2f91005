import CSystem
import ControlProtocol
import Foundation
import HTTP
import Registry
import Scoring
import Synchronization
import Components
import Console

let upCommand = Command(
    words: ["up"],
    summary: "The whole system on this machine: a model, serve, batch, stream, traffic and the console",
    options: [
        Option(name: "no-console", help: "print the endpoints and wait for Ctrl-C instead of opening the console"),
        Option(name: "no-traffic", help: "no request load on serve, no events for stream, no files for batch"),
        Option(name: "serve-port", value: "PORT", help: "serve's port (0 picks a free one)", defaultValue: "0"),
        Option(name: "rate", value: "N", help: "stream events per second from the built-in producer", defaultValue: "200"),
        Option(name: "requests", value: "N", help: "requests per second sent to serve", defaultValue: "20"),
        Option(name: "batch-every", value: "INTERVAL", help: "batch schedule; a new input file arrives as often", defaultValue: "30s"),
    ],
    details: """
        In SWITCHYARD_HOME (default ./.switchyard): makes the credit fixture, trains two model
        versions (credit@1 is production, credit@2 candidate), then starts serve, batch (on a
        short schedule, with an input folder that keeps receiving files) and stream (a folder
        fed by the built-in producer) as child processes on free loopback ports, sends a light
        request load to serve, and opens the console with an admin key (kept in
        SWITCHYARD_HOME/up.key). Quitting the console, or Ctrl-C, stops everything it started.

        Logs: SWITCHYARD_HOME/logs/{serve,batch,stream,producer}.log. Files: SWITCHYARD_HOME/demo/.
        """,
    run: { args in
        let servePort = try args.integer("serve-port", range: 0...65535) ?? 0
        let rate = try args.integer("rate", range: 1...1_000_000) ?? 200
        let requestRate = try args.integer("requests", range: 1...10_000) ?? 20
        let every = args.string("batch-every") ?? "30s"
        let interval: Int
        switch try? Schedule.interval(every) {
        case .every(let seconds)?: interval = seconds
        default: throw UsageError("--batch-every takes an interval like 30s or 2m, got \"\(every)\"")
        }
        let traffic = !args.flag("no-traffic")
        let withConsole = !args.flag("no-console")
        if withConsole { guard isatty(1) == 1 else { throw CommandError("the console needs a terminal; run in one, or add --no-console") } }

        let home = Home.fromEnvironment()
        let demo = home.url.appendingPathComponent("demo")
        let logs = home.url.appendingPathComponent("logs")
        do {
            for folder in [demo, logs, demo.appendingPathComponent("inbox"), demo.appendingPathComponent("events")] {
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            }
            try AtomicFile.write(Data("probe".utf8), to: home.url.appendingPathComponent(".write-probe"))
            try? FileManager.default.removeItem(at: home.url.appendingPathComponent(".write-probe"))
        } catch {
            throw CommandError("SWITCHYARD_HOME \(home.url.path) is not writable (\(error.localizedDescription)); set SWITCHYARD_HOME to a folder you can write")
        }
        say("home: \(home.url.path)")

        // Two model versions, so a swap has somewhere to go.
        let registry = try openRegistry()
        let key = try upKey(home)
        if (try? registry.resolve("credit@production")) == nil {
            say("training two credit models on 20,000 fixture rows…")
            var generator = CreditFixture(seed: 7)
            var csv = Array(CreditFixture.csvHeader.utf8)
            for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
            try AtomicFile.write(Data(csv), to: demo.appendingPathComponent("credit.csv"))
            for (c, alias) in [(1.0, "production"), (0.1, "candidate")] {
                let report: Trainer.Report
                do {
                    report = try Trainer.train(csv: csv, .init(name: "credit", label: "label", c: c, created: isoTimestamp(Date())))
                } catch {
                    throw CommandError("training failed: \(error)")
                }
                let registration = try registryCall { () throws(RegistryError) in try registry.register(report.document, who: cliActor()) }
                _ = try registryCall { () throws(RegistryError) in
                    try registry.promote(model: "credit", version: registration.version.version, alias: alias, who: cliActor())
                }
                say("  \(registration.version.reference) (C=\(c), held-out AUC \(String(format: "%.4f", report.document.metadata.training?.metrics["auc"] ?? 0))) → \(alias)")
            }
        } else {
            say("model: credit@production is registered already")
        }

        let children = try Children(logs: logs, home: home)
        let feeders = StopFlag()
        func stopAll() {
            feeders.stop()
            children.stopAll()
        }
        do {
            let serve = try children.start("serve", ["serve", "--model", "credit@production", "--port", "\(servePort)", "--open", "--threads", "1"])
            let batch = try children.start("batch", [
                "batch", "--input", demo.appendingPathComponent("inbox").path, "--output", demo.appendingPathComponent("outbox").path,
                "--model", "credit@production", "--schedule", "every \(interval)s", "--job", "demo", "--port", "0",
            ])
            let stream = try children.start("stream", [
                "stream", "--source", "dir:" + demo.appendingPathComponent("events").path, "--sink", "dir:" + demo.appendingPathComponent("scored").path,
                "--model", "credit@production", "--name", "demo", "--port", "0",
            ])
            say("serve   http://127.0.0.1:\(serve)   (log: \(logs.path)/serve.log)")
            say("batch   http://127.0.0.1:\(batch)   every \(interval)s over \(demo.path)/inbox")
            say("stream  http://127.0.0.1:\(stream)   \(demo.path)/events → scored")
            if traffic {
                _ = try children.start("producer", ["stream", "produce", "--to", "dir:" + demo.appendingPathComponent("events").path, "--rate", "\(rate)"], waitForPort: false)
                startThread("up-traffic") { sendTraffic(port: serve, rate: requestRate, stop: feeders) }
                startThread("up-files") { feedFiles(to: demo.appendingPathComponent("inbox"), every: interval, stop: feeders) }
                say("traffic: \(requestRate) requests/s to serve, \(rate) events/s to stream, a file to batch every \(interval)s")
            }
        } catch {
            stopAll()
            throw error
        }

        let stop = StopFlag()
        onTermination { stop.stop() }
        // A child that dies is restarted with backoff; what happened goes to up.log, and to the
        // console's events (or this terminal without a console).
        let console = Mutex<Collector?>(nil)
        let upLog = logs.appendingPathComponent("up.log")
        startThread("up-supervise") {
            while !stop.stopped {
                for line in children.supervise() {
                    if let handle = FileHandle(forWritingAtPath: upLog.path) ?? (FileManager.default.createFile(atPath: upLog.path, contents: nil) ? FileHandle(forWritingAtPath: upLog.path) : nil) {
                        handle.seekToEndOfFile()
                        handle.write(Data("\(isoTimestamp(Date())) \(line)\n".utf8))
                        try? handle.close()
                    }
                    if let collector = console.withLock({ $0 }) {
                        collector.note(source: "up", kind: line.hasPrefix("restarted") ? "recovered" : "error", message: line)
                    } else if !withConsole {
                        say(line)
                    }
                }
                usleep(200_000)
            }
        }
        if withConsole {
            try runConsole(home: home, key: key, endpoints: [], theme: "default", readOnly: false, refresh: 1, stop: stop,
                           quitQuestion: "Stop serve, batch, stream and the producer that switchyard up started, and quit?",
                           collecting: { collector in console.withLock { $0 = collector } })
        } else {
            say("admin key: \(key)\npress Ctrl-C to stop everything")
            while !stop.stopped { usleep(100_000) }
        }
        stopAll()
        say("stopped everything switchyard up started")
        return Exit.ok
    })

private func say(_ text: String) {
    print(text)
    fflush(nil)
}

private func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}

/// The admin key `up` gives the console: kept in SWITCHYARD_HOME/up.key (mode 0600), made again when revoked.
private func upKey(_ home: Home) throws -> String {
    let file = home.url.appendingPathComponent("up.key")
    let keys = try registryCall { () throws(RegistryError) in try KeyStore(home: home) }
    if let saved = try? String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
       let known = try? keys.activeKeys(), known[KeyStore.hash(saved)]?.scope == .admin {
        return saved
    }
    let (_, secret) = try registryCall { () throws(RegistryError) in try keys.create(scope: .admin, name: "switchyard up", who: cliActor()) }
    try AtomicFile.write(Data((secret + "\n").utf8), to: file)
    chmod(file.path, 0o600)
    return secret
}

/// A light, steady load on serve: one record at a time, `rate` a second.
private func sendTraffic(port: Int, rate: Int, stop: StopFlag) {
    var generator = CreditFixture(seed: 31)
    let client = HTTPClient(port: port)
    defer { client.close() }
    let pause = useconds_t(1_000_000 / rate)
    while !stop.stopped {
        // Azure ML's /score takes {"data": [record, ...]}.
        var body = Array(#"{"data":["#.utf8)
        CreditFixture.appendJSON(generator.next(), to: &body)
        body.removeLast()  // the line feed
        body.append(contentsOf: "]}".utf8)
        _ = try? client.request("POST", "/score", headers: [("Content-Type", "application/json")], body: body)
        usleep(pause)
    }
}

/// A new input file for batch every `interval` seconds; files older than five intervals go.
private func feedFiles(to inbox: URL, every interval: Int, stop: StopFlag) {
    var generator = CreditFixture(seed: 77)
    var last = 0.0
    while !stop.stopped {
        let now = Date().timeIntervalSince1970
        if now - last >= Double(interval) {
            last = now
            var csv = Array(CreditFixture.csvHeader.utf8)
            for _ in 0..<2_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
            let name = "credit-\(Int(now)).csv"
            try? AtomicFile.write(Data(csv), to: inbox.appendingPathComponent(name))
            let old = (try? FileManager.default.contentsOfDirectory(at: inbox, includingPropertiesForKeys: [.contentModificationDateKey])) ?? []
            for file in old where file.pathExtension == "csv" {
                let modified = (try? file.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate)?.timeIntervalSince1970 ?? now
                if now - modified > Double(5 * interval) { try? FileManager.default.removeItem(at: file) }
            }
        }
        usleep(200_000)
    }
}

/// The processes `up` started, each logging to its own file; stopped by pid, TERM then KILL.
/// A child that exits by itself is restarted on the same port, after 1 s doubling to 30 s while
/// it keeps failing (a minute up resets that); `supervise()` says what happened.
final class Children: @unchecked Sendable {
    // Safety: `running` and `stopping` are only touched under `lock`.
    private struct Child {
        var name: String
        var arguments: [String]
        var port: Int
        var pid: pid_t
        var startedAt: Date
        var failures = 0
        /// Set while it is down: when to start it again.
        var restartAt: Date?
    }
    private var running: [Child] = []
    private var stopping = false
    private let lock = NSLock()
    private let logs: URL
    private let home: Home
    /// Children stop by themselves when this process dies, even by SIGKILL.
    private let lifeline: Lifeline

    init(logs: URL, home: Home) throws {
        self.logs = logs
        self.home = home
        lifeline = try Lifeline()
    }

    private func spawn(_ name: String, _ arguments: [String]) throws -> (pid: pid_t, log: URL, start: Int) {
        let log = logs.appendingPathComponent("\(name).log")
        let header = "\n--- \(isoTimestamp(Date())) switchyard \(arguments.joined(separator: " "))\n"
        if let handle = FileHandle(forWritingAtPath: log.path) {
            handle.seekToEndOfFile()
            handle.write(Data(header.utf8))
            try? handle.close()
        } else {
            try Data(header.utf8).write(to: log)
        }
        let start = (try? Data(contentsOf: log).count) ?? 0
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_HOME"] = home.url.path
        let pid = try spawnLogged(selfExecutable(), arguments, environment: environment, log: log.path, append: true, lifeline: lifeline)
        return (pid, log, start)
    }

    /// Starts `switchyard ARGS` with output to logs/NAME.log; returns its control API port
    /// (read from its log), or 0 when `waitForPort` is false.
    func start(_ name: String, _ arguments: [String], waitForPort: Bool = true) throws -> Int {
        let (pid, log, start) = try spawn(name, arguments)
        lock.withLock { running.append(Child(name: name, arguments: arguments, port: 0, pid: pid, startedAt: Date())) }
        guard waitForPort else { return 0 }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let text = String(decoding: ((try? Data(contentsOf: log)) ?? Data()).dropFirst(start), as: UTF8.self)
            if let range = text.range(of: "on http://127.0.0.1:"), let port = Int(text[range.upperBound...].prefix { $0.isNumber }) {
                lock.withLock { if let i = running.firstIndex(where: { $0.pid == pid }) { running[i].port = port } }
                return port
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                lock.withLock { running.removeAll { $0.pid == pid } }
                let tail = text.split(separator: "\n").suffix(3).joined(separator: "\n  ")
                throw CommandError("\(name) could not start:\n  \(tail)\n(full log: \(log.path))")
            }
            usleep(50_000)
        }
        throw CommandError("\(name) did not report its address within 30 s; see \(log.path)")
    }

    /// Seconds before a restart after `failures` failures in a row: 1, doubling to 30.
    private static func restartDelay(_ failures: Int) -> Double { min(30, Double(1 << min(failures, 5))) }

    /// Reaps children that exited and restarts those whose backoff is over; returns what happened,
    /// one line each, for the console's events and up's log.
    func supervise(now: Date = Date()) -> [String] {
        lock.withLock {
            guard !stopping else { return [] }
            var said: [String] = []
            for i in running.indices {
                var child = running[i]
                if child.restartAt == nil {
                    var status: Int32 = 0
                    guard waitpid(child.pid, &status, WNOHANG) == child.pid else { continue }
                    let how = (status & 0x7F) == 0 ? "exited with status \((status >> 8) & 0xFF)" : "was killed by signal \(status & 0x7F)"
                    if now.timeIntervalSince(child.startedAt) > 60 { child.failures = 0 }
                    let delay = Self.restartDelay(child.failures)
                    child.failures += 1
                    child.restartAt = now.addingTimeInterval(delay)
                    said.append("\(child.name) (pid \(child.pid)) \(how); restarting it in \(Int(delay)) s (see \(logs.path)/\(child.name).log)")
                } else if let due = child.restartAt, now >= due {
                    var arguments = child.arguments
                    if child.port > 0, let p = arguments.firstIndex(of: "--port"), p + 1 < arguments.count { arguments[p + 1] = "\(child.port)" }
                    do {
                        child.pid = try spawn(child.name, arguments).pid
                        child.startedAt = now
                        child.restartAt = nil
                        said.append("restarted \(child.name) (pid \(child.pid)\(child.port > 0 ? ", port \(child.port)" : ""))")
                    } catch {
                        child.restartAt = now.addingTimeInterval(Self.restartDelay(child.failures))
                        said.append("could not restart \(child.name): \(error)")
                    }
                }
                running[i] = child
            }
            return said
        }
    }

    /// SIGTERM to each, up to 10 s for them to finish, then SIGKILL. No restarts from here on.
    func stopAll() {
        var children = lock.withLock { () -> [Child] in
            stopping = true
            return running.filter { $0.restartAt == nil }
        }
        for child in children { kill(child.pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(10)
        while !children.isEmpty && Date() < deadline {
            children.removeAll { child in
                var status: Int32 = 0
                return waitpid(child.pid, &status, WNOHANG) == child.pid
            }
            if !children.isEmpty { usleep(50_000) }
        }
        for child in children {
            kill(child.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(child.pid, &status, 0)
        }
        lock.withLock { running.removeAll() }
    }
}

/// This program's own path, for starting its children.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
