import CSystem
import Components
import ControlProtocol
import Foundation
import HTTP
import Registry
import Scoring
import Synchronization
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

/// Options both batch commands take.
private let batchOptions: [Option] = [
    Option(name: "input", value: "DIR[/GLOB]", help: "folder of inputs (.csv with a header, .jsonl); a glob like 'in/*.csv' picks some", required: true),
    Option(name: "output", value: "DIR", help: "folder for outputs (same names) and rejects files (NAME.rejects.csv|jsonl)", required: true),
    Option(name: "model", value: "NAME@ALIAS", help: "the model; an alias is resolved at the start of each run, a version is pinned", required: true),
    Option(name: "job", value: "NAME", help: "the job's name in the run ledger", defaultValue: "the output folder's path"),
    Option(name: "id", value: "COLUMNS", help: "comma-separated columns copied to each output row", defaultValue: "id, when present; else the line number"),
    Option(name: "threads", value: "N", help: "threads parsing and scoring", defaultValue: "one per core"),
    Option(name: "explain", value: "top=K", help: "add each row's K largest contributions to the label's margin (field and value) as columns"),
    Option(name: "max-rows-per-second", value: "N", help: "slow runs down to about N rows/s (to share a busy machine)"),
    Option(name: "settle", value: "SECONDS", help: "files modified more recently than this may still be being written: they wait for the next run", defaultValue: "5"),
    Option(name: "split", value: "MB", help: "cut each run into tasks of about MB megabytes for 'switchyard batch worker' processes (on any machine) to do; this process plans, watches and publishes"),
] + registryOptions

/// The pieces a batch component is built from, read from the arguments.
private func makeBatchComponent(
    _ args: Arguments, events: EventLog, authenticator: Authenticator, schedule: Schedule?, models: any ModelSource
) throws -> BatchComponent {
    let inputText = try args.require("input")
    var input = URL(fileURLWithPath: inputText)
    var pattern: String?
    if input.lastPathComponent.contains(where: { "*?[".contains($0) }) {
        pattern = input.lastPathComponent
        input = input.deletingLastPathComponent()
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: input.path, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw CommandError("--input \(input.path) is not a folder; give the folder the input files land in")
    }
    let output = URL(fileURLWithPath: try args.require("output")).standardizedFileURL
    guard output.path != input.standardizedFileURL.path else {
        throw CommandError("--output must differ from --input: outputs have the same names as their inputs")
    }
    var options = BatchComponent.Options()
    if let threads = args.string("threads"), threads != "one per core" {
        options.workers = try args.integer("threads", range: 1...256)!
    }
    if let ids = args.string("id"), !ids.hasPrefix("id, when") {
        options.idColumns = ids.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }
    if let text = args.string("explain") {
        guard text.hasPrefix("top="), let k = Int(text.dropFirst(4)), k >= 1, k <= 1000 else {
            throw UsageError("--explain takes top=K, a whole number from 1 to 1000, got \"\(text)\"")
        }
        options.explainTop = k
    }
    if let rate = try args.double("max-rows-per-second") {
        guard rate > 0 else { throw UsageError("--max-rows-per-second must be above 0") }
        options.rowsPerSecond = rate
    }
    if let settle = try args.double("settle") {
        guard settle >= 0, settle <= 86_400 else { throw UsageError("--settle must be between 0 and 86400 seconds, got \(settle)") }
        options.settleSeconds = settle
    }
    if let megabytes = try args.double("split") {
        guard megabytes >= 0.01, megabytes <= 1_000_000 else { throw UsageError("--split takes megabytes per task, from 0.01 to 1000000, got \(megabytes)") }
        options.taskBytes = Int(megabytes * 1_048_576)
    }
    let jobText = args.string("job")
    let job = jobText == nil || jobText == "the output folder's path" ? output.path : jobText!
    let ledger = try openLedger(args)
    do {
        return try BatchComponent(
            registry: models, ledger: ledger, reference: try args.require("model"), job: job, input: input, pattern: pattern,
            output: output, schedule: schedule, options: options, events: events, authenticator: authenticator)
    } catch let error as HTTPError {
        throw CommandError(error.message)
    }
}

let batchCommand = Command(
    words: ["batch"],
    summary: "Run the batch scorer: scheduled and on-demand runs over a folder, with a run ledger and control API",
    options: batchOptions + [
        Option(name: "schedule", value: "\"every 15m\"", help: "run at a fixed interval (slots are multiples of it since the epoch)"),
        Option(name: "cron", value: "\"0 2 * * *\"", help: "run on a 5-field cron schedule, local time"),
        Option(name: "port", value: "PORT", help: "control API port (0 picks a free one)", defaultValue: "8081"),
        Option(name: "host", value: "ADDRESS", help: "address to bind; anything but loopback needs API keys", defaultValue: "127.0.0.1"),
    ],
    details: """
        A run scores every input file present when it starts and writes, per input, an output
        with the same name (id columns, probability_<class>, label, model_version) and a rejects
        file (line, reason, record). Both appear atomically. Rows read = scored + rejected.
        Runs go one at a time; more triggers queue (the backlog). Missed schedule slots while
        stopped: one catch-up run at start. A run that was running when the process died is
        marked interrupted at the next start; rerun it.

        Control API: /v1/status /v1/timeseries /v1/events /metrics, GET /v1/runs[?before=ID&limit=N],
        GET /v1/runs/ID (scope read); POST /v1/runs {"idempotency_key": "..."} (or an
        Idempotency-Key header), POST /v1/runs/ID/rerun, POST /v1/runs/ID/cancel (scope operate);
        POST /v1/model {"version": N} | {"alias": "A"} (scope admin; from the next run).

        Examples:
          switchyard batch --input in --output out --model credit@production --schedule "every 15m"
          curl -X POST -H "Authorization: Bearer $KEY" localhost:8081/v1/runs
        """,
    run: { args in
        var schedule: Schedule?
        do {
            if let every = args.string("schedule") { schedule = try Schedule.interval(every) }
            if let cron = args.string("cron") {
                guard schedule == nil else { throw UsageError("give --schedule or --cron, not both") }
                schedule = .cron(try CronExpression(cron))
            }
        } catch let error as ScheduleError {
            throw UsageError(error.description)
        }
        let port = try args.integer("port", range: 0...65535) ?? 8081
        let host = args.string("host") ?? "127.0.0.1"
        let events = EventLog()
        let access = try registryAccess(args, events: events)
        try access.checkComponentKey()
        let authenticator = Authenticator(store: access.keys, loops: 1)
        do {
            try ComponentHost.checkExposure(host: host, open: false, authenticator: authenticator)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let batch = try makeBatchComponent(args, events: events, authenticator: authenticator, schedule: schedule, models: access.models)
        try batch.start()
        let host_ = ComponentHost(
            component: batch, observer: nil, configuration: HTTPServer.Configuration(host: host, port: port, threads: 1),
            authenticator: authenticator, events: events, fleet: access.fleet, dependencies: access.dependencies)
        let termination = Termination()
        let bound: Int
        do {
            bound = try startListening(host_, host: host, port: port)
        } catch {
            batch.stop()
            throw error
        }
        access.follow(host_)
        logLine("batch job \(batch.job): \(batch.inputDirectory.path) → \(batch.outputDirectory.path); control API on http://\(host):\(bound)")
        if let schedule { logLine("  schedule: \(schedule)") } else { logLine("  no schedule: trigger runs with POST /v1/runs (scope operate)") }
        fflush(nil)
        termination.wait()
        logLine("stopping (a running run is cancelled and marked interrupted)")
        host_.stop()
        batch.stop()
        return Exit.ok
    })

let batchRunCommand = Command(
    words: ["batch", "run"],
    summary: "Score a folder once, now, for cron or CI; the exit status is the run's outcome",
    options: batchOptions + [
        Option(name: "once", help: "run once and exit (the only mode; accepted for clarity in scripts)"),
        Option(name: "idempotency-key", value: "KEY", help: "a key the job never runs twice for (e.g. the date)"),
        Option(name: "wait", help: "when another run of the job is running, wait for it instead of refusing"),
    ],
    details: """
        The run is recorded in the ledger like any other (trigger manual, who cli:USER).
        One run of a job runs at a time, across processes: while another holds the job
        (a batch component's run, another run --once), this refuses and names that run,
        or with --wait waits for it.
        Exit status: 0 succeeded (rejected rows are counted, not a failure), 1 failed or
        cancelled, 64 usage, 75 the job was busy. On a terminal a progress bar shows rows,
        rate and ETA.

        Example:
          switchyard batch run --once --input in --output out --model credit@production
        """,
    run: runBatchOnce)

/// `batch run --once`: one run, now, in this process.
private func runBatchOnce(_ args: Arguments) throws -> Int32 {
    let events = EventLog()
    let access = try registryAccess(args, events: events)
    let batch = try makeBatchComponent(args, events: events, authenticator: Authenticator(store: nil, loops: 1), schedule: nil, models: access.models)
    let ledger = batch.ledger
    var lock = try registryCall { () throws(RegistryError) in try JobLock.acquire(ledger, job: batch.job) }
    if lock == nil {
        guard args.flag("wait") else {
            throw CommandError("\(batch.busyMessage()); try again when it finishes, or add --wait", code: Exit.busy)
        }
        writeError("\(batch.busyMessage()); waiting for it to finish")
        lock = try registryCall { () throws(RegistryError) in try JobLock.acquire(ledger, job: batch.job, wait: true) }
    }
    guard let lock else { throw CommandError("could not lock job \(batch.job)") }
    defer { lock.release() }
    try registryCall { () throws(RegistryError) in try batch.recoverInterrupted() }
    // No later run will take a file that is still being written, so wait (a little) for it to settle.
    for _ in 0..<3 {
        guard let settling = try? batch.inputFiles().settling, !settling.isEmpty else { break }
        writeError("waiting \(batch.options.settleSeconds) s for \(settling.joined(separator: ", ")) to stop changing (--settle)")
        usleep(UInt32(min(batch.options.settleSeconds, 60) * 1e6))
    }
    let queued = try registryCall { () throws(RegistryError) in
        try batch.trigger(.manual, who: cliActor(), idempotencyKey: args.string("idempotency-key"))
    }
    if queued.existed {
        let r = queued.run
        logLine("run \(r.id) already exists for idempotency key \"\(r.idempotencyKey ?? "")\": \(r.status.rawValue); nothing run")
        return r.status == .succeeded || !r.status.isFinished ? Exit.ok : Exit.failure
    }
    let terminal = isatty(2) == 1
    let progress = BatchProgress()
    onTermination(signals: [SIGINT]) { progress.cancelled.store(true, ordering: .relaxed) }
    let started = csystem_monotonic_ns()
    var report: (@Sendable (BatchProgress) -> Void)?
    if terminal { report = { @Sendable p in drawProgress(p, started: started) } }
    // What the run says on the way that whoever waits for it needs: a split run waiting for
    // workers, an outage of the ledger and its end, a file's error.
    let id = queued.run.id
    let stopSaying = followEvents(events) { event in
        guard event.kind != "run" || event.message.contains("waits for workers") else { return }
        // The run's end is the last line printed anyway.
        if ["failed", "cancelled", "interrupted"].contains(where: { event.message.hasPrefix("run \(id) \($0)") }) { return }
        writeError((terminal ? "\r\u{1B}[K" : "") + event.message)
    }
    let finished = batch.execute(queued.run, lock: lock, progress: progress, report: report)
    stopSaying()
    if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    let recorded: RunLedger.Run? = try? ledger.run(queued.run.id)
    guard let run = finished ?? recorded else { throw CommandError("run \(queued.run.id) vanished from the ledger") }
    let seconds = Double(csystem_monotonic_ns() - started) / 1e9
    logLine("run \(run.id) \(run.status.rawValue): \(run.inputs.count) input\(run.inputs.count == 1 ? "" : "s"), \(run.rowsRead) rows read, \(run.rowsScored) scored, \(run.rowsRejected) rejected in \(String(format: "%.2f", seconds)) s with \(run.model ?? "no model")")
    if run.rowsRejected > 0 { logLine("  rejected rows, with line numbers and reasons: \(batch.outputDirectory.path)/*.rejects.*") }
    if let error = run.error { logLine("  \(error)") }
    if let note = run.note { logLine("  \(note)") }
    return run.status == .succeeded ? Exit.ok : Exit.failure
}

/// One line on stderr: a bar, rows, rate and ETA.
private func drawProgress(_ p: BatchProgress, started: UInt64) {
    let total = max(p.bytesTotal.load(ordering: .relaxed), 1)
    let done = p.bytesDone.load(ordering: .relaxed)
    let fraction = min(1, Double(done) / Double(total))
    let elapsed = Double(csystem_monotonic_ns() - started) / 1e9
    let rows = p.rowsRead.load(ordering: .relaxed)
    let rate = elapsed > 0 ? Double(rows) / elapsed : 0
    let eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0
    let width = 30
    let filled = Int(fraction * Double(width))
    let bar = String(repeating: "=", count: filled) + (filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : "")
    let line = String(format: "\r[%@] %3.0f%%  %@ rows  %@ rows/s  ETA %.0fs  %@   ",
                      bar, fraction * 100, formatCount(Double(rows)), formatCount(rate), eta, p.file.withLock { $0 })
    FileHandle.standardError.write(Data(line.utf8))
}

/// 1234567 → "1.23M".
func formatCount(_ x: Double) -> String {
    switch x {
    case 1e9...: String(format: "%.2fG", x / 1e9)
    case 1e6...: String(format: "%.2fM", x / 1e6)
    case 1e4...: String(format: "%.1fk", x / 1e3)
    default: String(format: "%.0f", x)
    }
}

/// The run ledger a batch command works on (`ledgerLocation`), with job locks in SWITCHYARD_HOME.
private func openLedger(_ args: Arguments) throws -> RunLedger {
    let location = ledgerLocation(args)
    return try registryCall { () throws(RegistryError) in try RunLedger(location: location, home: Home.fromEnvironment()) }
}

let batchWorkerCommand = Command(
    words: ["batch", "worker"],
    summary: "Do the tasks of a job's runs cut into tasks (batch --split), on this machine or any other",
    options: [
        Option(name: "job", value: "NAME", help: "the job whose tasks to do (its --job, or its output folder's path)", required: true),
        Option(name: "threads", value: "N", help: "threads parsing and scoring", defaultValue: "one per core"),
        Option(name: "lease", value: "SECONDS", help: "how long a claimed task stays this worker's without a heartbeat (renewed every third of it); a dead worker's task is taken over after it", defaultValue: "30"),
    ] + registryOptions,
    details: """
        Claims a task (whole records in a byte range of one input file), scores it into a part
        in the job's output folder, and records it done; then the next. The batch component
        (or 'batch run --once --split') that planned the run publishes every output once all
        its tasks are done, byte for byte what one process would have written.

        Inputs and outputs must be paths every worker reads and writes (a shared mount, or an
        object-storage mount). Workers on other machines share the run ledger through the
        registry's PostgreSQL: give every process the same --registry postgres://…; without
        --registry, workers on this machine share SWITCHYARD_HOME's. Stop with SIGTERM or
        Ctrl-C: the task in hand is finished first.

        Example (two machines, /data shared):
          switchyard batch --input /data/in --output /data/out --model credit@production --job nightly --split 16 --registry postgres://sy@db:5432/switchyard
          switchyard batch worker --job nightly --registry postgres://sy@db:5432/switchyard     # on each machine
        """,
    run: { args in
        let job = try args.require("job")
        var threads = ProcessInfo.processInfo.activeProcessorCount
        if let text = args.string("threads"), text != "one per core" { threads = try args.integer("threads", range: 1...256)! }
        let lease = try args.double("lease") ?? 30
        guard lease >= 0.5, lease <= 86_400 else { throw UsageError("--lease must be between 0.5 and 86400 seconds, got \(lease)") }
        if case .home = ledgerLocation(args), let url = registryURL(args) {
            throw CommandError("a batch worker claims tasks from the run ledger itself: give --registry postgres://… (the database the registry service uses), or run it without --registry on the batch component's machine")
        }
        let events = EventLog()
        // Models from the same database as the ledger (one connection; a worker needs no keys or
        // fleet), or from this machine's registry.
        let location = ledgerLocation(args)
        let models: any ModelSource = try registryCall { () throws(RegistryError) in try ModelRegistry(location: location) }
        let worker = BatchWorker(ledger: try openLedger(args), registry: models, job: job, threads: threads, lease: lease, events: events)
        let stopPrinting = followEvents(events) { event in
            logLine(event.kind == "error" ? "error: \(event.message)" : event.message)
            fflush(nil)
        }
        onTermination(signals: [SIGINT, SIGTERM]) { worker.stop() }
        logLine("batch worker \(worker.name) for job \(job): \(ledgerLocation(args)), \(threads) thread\(threads == 1 ? "" : "s"), lease \(BatchComponent.seconds(lease)) s")
        fflush(nil)
        worker.run()
        stopPrinting()
        logLine("stopped: \(worker.tasksDone.load(ordering: .relaxed)) tasks, \(worker.rowsDone.load(ordering: .relaxed)) rows")
        return Exit.ok
    })
