import CSystem
import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// The batch scorer: runs over the files in an input folder, on a schedule or
/// on demand, one at a time, recorded in the run ledger; plus its control
/// API routes (/v1/runs …). A model swap takes effect at the next run.
package final class BatchComponent: Component {
    package let kind = "batch"
    package let job: String
    package let ledger: RunLedger
    let registry: any ModelSource
    let events: EventLog
    package let inputDirectory: URL
    /// fnmatch(3) pattern for input names; nil takes every .csv and .jsonl file.
    package let pattern: String?
    package let outputDirectory: URL
    package let schedule: Schedule?
    package let options: Options
    let authenticator: Authenticator

    package struct Options: Sendable {
        package var workers = ProcessInfo.processInfo.activeProcessorCount
        package var idColumns: [String]?
        /// Each row's K largest contributions as columns (`--explain top=K`); nil: none.
        package var explainTop: Int?
        package var rowsPerSecond: Double?
        package var chunkBytes = 1 << 20
        /// A file modified less than this long ago may still be being written: it waits for the
        /// next run (the ledger's note says so), so a cut-off last line is never scored as a record.
        package var settleSeconds: Double = 5
        /// Cut each run into tasks of about this many bytes for `switchyard batch worker`
        /// processes (`--split`); nil: this process scores every file itself.
        package var taskBytes: Int?
        package init() {}
    }

    /// What the next run scores with, and the alias it follows; a running run keeps its version.
    private let binding: ModelBinding<Scorer>
    /// The running run, and totals of finished runs, changed together so a sample never counts a run twice.
    private let state = Mutex<(active: ActiveRun?, totals: Totals)>((nil, Totals()))
    private let nextSlot = Mutex<Date?>(nil)
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let workerDone = DispatchSemaphore(value: 0)
    private let workerStarted = Atomic<Bool>(false)
    private let sampling = Mutex<(rows: Int, bytes: Int64, rejected: Int)>((0, 0, 0))
    /// Drift of the running run, else of the latest run (its rows against its version's baseline),
    /// or why there is none.
    private let drift = Mutex<(monitor: DriftMonitor?, last: DriftStatus?)>((nil, nil))

    struct ActiveRun {
        var id: Int
        var model: String
        var progress: BatchProgress
        var startedNanoseconds: UInt64
    }

    struct Totals {
        var runs: [RunLedger.Status: Int] = [:]
        var rows = 0
        var bytes: Int64 = 0
        var rejected = 0
    }

    package init(
        registry: any ModelSource, ledger: RunLedger, reference: String, job: String, input: URL, pattern: String?,
        output: URL, schedule: Schedule?, options: Options, events: EventLog, authenticator: Authenticator
    ) throws {
        self.authenticator = authenticator
        self.registry = registry
        self.ledger = ledger
        self.job = job
        self.events = events
        inputDirectory = input
        self.pattern = pattern
        outputDirectory = output
        self.schedule = schedule
        self.options = options
        binding = try ModelBinding(
            registry: registry, reference: reference, events: events, wording: .init(running: "running", effect: "for the next runs"),
            make: { version, document in try BatchComponent.compile(version, document) })
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        removeStaleTemporaryFiles()
    }

    // MARK: - Lifecycle

    /// Marks runs left `running` by a dead process, queues a catch-up run for
    /// missed schedule slots, and starts the run thread.
    package func start() throws {
        // Runs of a live process (a `batch run --once` now) hold the job's lock and are left alone.
        if let lock = try registryCall({ () throws(RegistryError) in try JobLock.acquire(ledger, job: job) }) {
            try registryCall { () throws(RegistryError) in try recoverInterrupted() }
            lock.release()
        }
        if let schedule {
            let now = Date()
            if let last = try registryCall({ () throws(RegistryError) in try ledger.lastScheduledSlot(job: job) }),
               let missed = schedule.missed(since: Date(timeIntervalSince1970: last), now: now) {
                let note = "catch-up: \(missed.count) slot\(missed.count == 1 ? "" : "s") of \(schedule) missed while stopped"
                let run = try registryCall { () throws(RegistryError) in
                    try ledger.enqueue(job: job, trigger: .schedule, who: "schedule", scheduledFor: missed.latest.timeIntervalSince1970, note: note).run
                }
                events.append("run", "queued run \(run.id): \(note)")
            }
            nextSlot.withLock { $0 = schedule.next(after: now) }
        }
        let thread = Thread { [self] in
            runLoop()
            workerDone.signal()
        }
        thread.name = "batch-runs"
        workerStarted.store(true, ordering: .releasing)
        thread.start()
    }

    /// Cancels the running run (its outputs are not written), and stops.
    package func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        state.withLock { $0.active?.progress.cancelled.store(true, ordering: .relaxed) }
        wake.signal()
        if workerStarted.load(ordering: .acquiring) { workerDone.wait() }
    }

    private func runLoop() {
        while !stopping.load(ordering: .acquiring) {
            let next: RunLedger.Run?
            do {
                next = try ledger.nextQueued(job: job)
            } catch {
                events.append("error", "reading the run ledger: \(error.message)")
                _ = wake.wait(timeout: .now() + 2)
                continue
            }
            guard let next else {
                _ = wake.wait(timeout: .now() + 1)
                continue
            }
            let lock: JobLock?
            do {
                lock = try JobLock.acquire(ledger, job: job)
            } catch {
                events.append("error", "run \(next.id): \(error.message)")
                _ = wake.wait(timeout: .now() + 2)
                continue
            }
            guard let lock else {
                // Another process (batch run --once) is running this job: the run waits its turn.
                let holder = busyMessage()
                if waitingNoted.withLock({ noted in defer { noted = next.id }; return noted != next.id }) {
                    events.append("run", "run \(next.id) waits: \(holder)")
                }
                _ = wake.wait(timeout: .now() + 1)
                continue
            }
            do {
                try recoverInterrupted()
            } catch {
                events.append("error", "reading the run ledger: \(error.message)")
            }
            execute(next, lock: lock)
            lock.release()
        }
    }

    /// The run that queued first while the job was busy, so "waits" is said once per run.
    private let waitingNoted = Mutex<Int?>(nil)

    /// Marks runs left `running` by dead processes `interrupted`. Only while holding the job's
    /// lock: then no live process is running the job, so every `running` row lost its owner.
    package func recoverInterrupted() throws(RegistryError) {
        for id in try ledger.markInterrupted(job: job) {
            events.append("run", "run \(id) was interrupted (its process stopped mid-run); rerun it with POST /v1/runs/\(id)/rerun")
        }
    }

    /// "run 7 (pid 4242, credit@1, started …) holds job demo": who is running the job now.
    package func busyMessage() -> String {
        let holder = JobLock.holder(ledger, job: job)
        let running = (try? ledger.list(job: job, limit: 20))?.first { $0.status == .running }
        var text = "job \(job) is busy: "
        if let running {
            text += "run \(running.id) (\(running.model ?? "no model")" + (running.startedAt.map { ", started \($0)" } ?? "")
                + (holder.map { ", pid \($0.pid)" } ?? "") + ") holds it"
        } else if let holder {
            text += "process \(holder.pid) holds it"
        } else {
            text += "another process holds it"
        }
        return text
    }

    // MARK: - Runs

    /// Queues a run and wakes the run thread.
    package func trigger(
        _ trigger: RunLedger.Trigger, who: String, rerunOf: Int? = nil, idempotencyKey: String? = nil, model: String? = nil,
        scheduledFor: Double? = nil, note: String? = nil
    ) throws(RegistryError) -> (run: RunLedger.Run, existed: Bool) {
        let result = try ledger.enqueue(
            job: job, trigger: trigger, who: who, rerunOf: rerunOf, idempotencyKey: idempotencyKey, model: model,
            scheduledFor: scheduledFor, note: note)
        if !result.existed {
            events.append("run", "queued run \(result.run.id) (\(trigger.rawValue)\(rerunOf.map { " of run \($0)" } ?? "") by \(who))")
            wake.signal()
        }
        return result
    }

    /// The files a run scores: for a rerun, the inputs of the run it repeats;
    /// otherwise every matching file in the input folder now, by name, but for those
    /// modified within the settle interval (`settling`), which wait for the next run.
    package func inputFiles(rerunOf: Int? = nil, now: Date = Date()) throws -> (files: [URL], settling: [String]) {
        if let original = rerunOf, let repeated = try registryCall({ () throws(RegistryError) in try ledger.run(original) }),
           !repeated.inputs.isEmpty {
            return (repeated.inputs.map { inputDirectory.appendingPathComponent($0.name) }, [])
        }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: inputDirectory.path) else {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: inputDirectory.path, isDirectory: &isDirectory)
            throw HTTPError(500, exists && isDirectory.boolValue
                ? "cannot list the input folder \(inputDirectory.path): permission denied or unreadable; check its permissions"
                : "the input folder \(inputDirectory.path) does not exist (any more); create it or point --input at the folder the files land in")
        }
        var files: [URL] = [], settling: [String] = []
        for name in names.sorted() {
            guard !name.hasPrefix("."), BatchFormat(fileName: name) != nil else { continue }
            if let pattern, fnmatch(pattern, name, 0) != 0 { continue }
            var info = stat()
            guard stat(inputDirectory.appendingPathComponent(name).path, &info) == 0 else { continue }  // gone meanwhile
            let modified = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
            if now.timeIntervalSince1970 - modified < options.settleSeconds {
                settling.append(name)
            } else {
                files.append(inputDirectory.appendingPathComponent(name))
            }
        }
        return (files, settling)
    }

    /// Runs `run` to its end and records it. Returns the final ledger record.
    @discardableResult
    /// The caller holds the job's `lock`.
    package func execute(
        _ run: RunLedger.Run, lock: JobLock, progress: BatchProgress = BatchProgress(), report: (@Sendable (BatchProgress) -> Void)? = nil
    ) -> RunLedger.Run? {
        lock.record(run: run.id)
        var inputs: [RunLedger.Input] = []
        var read = 0, scored = 0, rejected = 0
        var bytesDone: Int64 = 0
        func finish(_ status: RunLedger.Status, _ error: String?) -> RunLedger.Run? {
            // The end is recorded even if the ledger's database is away for a while (its outputs
            // are out).
            do throws(RegistryError) {
                try throughOutages("run \(run.id): recording its end") { () throws(RegistryError) in
                    try ledger.finish(run.id, status: status, rowsRead: read, rowsScored: scored, rowsRejected: rejected,
                                      bytesDone: bytesDone, inputs: inputs, error: error)
                }
            } catch {
                events.append("error", "run \(run.id): recording its end: \(error.message)")
            }
            state.withLock {
                $0.totals.runs[status, default: 0] += 1
                $0.totals.rows += read
                $0.totals.bytes += bytesDone
                $0.totals.rejected += rejected
                $0.active = nil
            }
            events.append(status == .succeeded ? "run" : "error",
                          "run \(run.id) \(status.rawValue): \(read) rows read, \(scored) scored, \(rejected) rejected" + (error.map { "; \($0)" } ?? ""))
            return try? ledger.run(run.id)
        }

        // The model: a rerun repeats its run's version; other runs take the current one.
        let model: (version: ModelVersion, loaded: Scorer)
        let files: [URL]
        do {
            model = try run.model.map { try load($0) } ?? currentModel()
            let found = try inputFiles(rerunOf: run.rerunOf)
            files = found.files
            if !found.settling.isEmpty {
                let note = "left for the next run: \(found.settling.count) file\(found.settling.count == 1 ? "" : "s") modified in the last \(Self.seconds(options.settleSeconds)) s, perhaps still being written (\(found.settling.prefix(5).joined(separator: ", "))\(found.settling.count > 5 ? ", …" : ""))"
                try? ledger.appendNote(run.id, note)
                events.append("run", "run \(run.id): \(note)")
            }
        } catch {
            if (try? ledger.start(run.id, model: run.model ?? "", modelSHA256: "", bytesTotal: 0)) == true {
                return finish(.failed, (error as? HTTPError)?.message ?? "\(error)")
            }
            return try? ledger.run(run.id)
        }
        var sizes: [Int64] = []
        for file in files {
            let size = (try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.int64Value ?? 0
            sizes.append(size)
            inputs.append(.init(name: file.lastPathComponent, size: size, sha256: ""))
        }
        let total = sizes.reduce(0, +)
        progress.bytesTotal.store(total, ordering: .relaxed)
        // Active before the ledger says running: a cancel that finds it no longer queued finds it
        // here (its progress is flagged, and the run stops at its first chunk).
        state.withLock { $0.active = ActiveRun(id: run.id, model: model.version.reference, progress: progress, startedNanoseconds: csystem_monotonic_ns()) }
        defer { state.withLock { $0.active = nil } }
        do {
            guard try ledger.start(run.id, model: model.version.reference, modelSHA256: model.version.sha256, bytesTotal: total) else {
                return try? ledger.run(run.id)  // cancelled before it started
            }
            try ledger.progress(run.id, rowsRead: 0, rowsScored: 0, rowsRejected: 0, bytesDone: 0, inputs: inputs)
        } catch {
            events.append("error", "run \(run.id): \(error.message)")
            return nil
        }
        events.append("run", "run \(run.id) started: \(files.count) input\(files.count == 1 ? "" : "s"), \(total) bytes, model \(model.version.reference)")

        var runner = BatchRunner(scorer: model.loaded, model: model.version.reference, outputDirectory: outputDirectory,
                                 idColumns: options.idColumns, workers: options.workers)
        // Drift is per run: its rows against the version's baseline, looked up once a run.
        if let baseline = try? registry.baseline(model: model.version.model, version: model.version.version) {
            let monitor = DriftMonitor(baseline: baseline, version: model.version, loops: runner.driftSlots, window: 0)
            runner.drift = monitor
            drift.withLock { $0.monitor = monitor }
        } else {
            drift.withLock { $0 = (nil, DriftMonitor.missing(model.version)) }
        }
        defer {
            drift.withLock { d in
                if let monitor = d.monitor { d = (nil, monitor.report()) }
            }
        }
        runner.rowsPerSecond = options.rowsPerSecond
        runner.chunkBytes = options.chunkBytes
        runner.explainTop = options.explainTop
        var failures: [String] = []
        let reporting = Atomic<Bool>(report != nil)
        let reporterDone = DispatchSemaphore(value: 0)
        if let report {
            Thread {
                while reporting.load(ordering: .acquiring) {
                    report(progress)
                    usleep(200_000)
                }
                reporterDone.signal()
            }.start()
        }
        var runError: String?
        if let taskBytes = options.taskBytes {
            let outcome = runSplit(run, files: files, runner: runner, taskBytes: taskBytes, progress: progress)
            inputs = outcome.inputs
            (read, scored, rejected, bytesDone) = (outcome.read, outcome.scored, outcome.rejected, outcome.bytesDone)
            failures = outcome.failures
            runError = outcome.runError
        } else {
            for (i, file) in files.enumerated() {
                if progress.cancelled.load(ordering: .relaxed) { break }
                progress.file.withLock { $0 = file.lastPathComponent }
                let before = progress.bytesDone.load(ordering: .relaxed)
                let result = runner.score(file, progress: progress)
                // Progress counts bytes as chunks finish; settle this file at its size.
                progress.bytesDone.store(before + sizes[i], ordering: .relaxed)
                inputs[i] = result.input.sha256.isEmpty ? inputs[i] : result.input
                read += result.rowsRead
                scored += result.rowsScored
                rejected += result.rowsRejected
                bytesDone += sizes[i]
                if let error = result.error, !progress.cancelled.load(ordering: .relaxed) { failures.append(error) }
                try? ledger.progress(run.id, rowsRead: read, rowsScored: scored, rowsRejected: rejected, bytesDone: bytesDone, inputs: inputs)
            }
        }
        reporting.store(false, ordering: .releasing)
        if let report {
            reporterDone.wait()  // its last report is drawn before the final one
            report(progress)
        }
        if progress.cancelled.load(ordering: .relaxed) {
            return finish(stopping.load(ordering: .relaxed) ? .interrupted : .cancelled,
                          stopping.load(ordering: .relaxed) ? "the component stopped during the run; rerun it" : "cancelled; outputs written before the cancel remain")
        }
        if let runError { return finish(.failed, runError) }
        if !failures.isEmpty {
            return finish(.failed, "\(failures.count) of \(files.count) inputs failed: " + failures.joined(separator: "; "))
        }
        if files.isEmpty {
            events.append("run", "run \(run.id) found no input files in \(inputDirectory.path)" + (pattern.map { " matching \($0)" } ?? ""))
        }
        return finish(.succeeded, nil)
    }

    /// Runs a ledger write, retrying it with backoff while the ledger's database is unreachable
    /// (503), for up to ten minutes; the outage and its end are each one event.
    func throughOutages<T>(_ what: String, _ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        var backoff = Backoff(initial: 0.1, cap: 5)
        while true {
            do {
                let result = try body()
                if backoff.attempts > 0 { events.append("recovered", "\(what): done after the ledger came back") }
                return result
            } catch {
                guard error.status == 503, backoff.attempts < 150 else { throw error }
                if backoff.attempts == 0 { events.append("error", "\(what): \(error.message); retrying with backoff") }
                Thread.sleep(forTimeInterval: backoff.next())
            }
        }
    }

    /// 5 → "5", 0.5 → "0.5".
    package static func seconds(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e9 ? "\(Int(x))" : "\(x)" }

    /// Cancels a queued or running run.
    func cancel(_ id: Int, by who: String) throws(RegistryError) -> HTTPResponse {
        if try ledger.cancelQueued(id, who: who) {
            events.append("run", "run \(id) cancelled before it started, by \(who)")
            return try runResponse(202, id)
        }
        let cancelledActive = state.withLock { state -> Bool in
            guard let run = state.active, run.id == id else { return false }
            run.progress.cancelled.store(true, ordering: .relaxed)
            return true
        }
        if cancelledActive {
            events.append("run", "run \(id) cancelling at the next chunk, by \(who)")
            return try runResponse(202, id)
        }
        guard let run = try ledger.run(id), run.job == job else { return .error(404, "no run \(id) in this job") }
        return .error(409, "run \(id) already \(run.status.rawValue); only a queued or running run can be cancelled")
    }

    // MARK: - Models

    /// What a new run scores with: what the followed alias points at now (what ran last while
    /// the registry is unreachable).
    func currentModel() throws -> (version: ModelVersion, loaded: Scorer) {
        binding.follow()
        guard let current = binding.current else { throw HTTPError(503, "no model loaded") }
        return current
    }

    /// A rerun's model: the version its run used.
    private func load(_ reference: String) throws -> (version: ModelVersion, loaded: Scorer) {
        let version = try registryCall { () throws(RegistryError) in try registry.resolve(reference) }
        if let current = binding.current, current.version.isSame(as: version) { return current }
        let document = try registryCall { () throws(RegistryError) in try registry.document(version) }
        return (version, try Self.compile(version, document))
    }

    private static func compile(_ version: ModelVersion, _ document: ModelDocument) throws -> Scorer {
        do { return try Scorer(document) } catch { throw HTTPError(422, "\(version.reference): \(error)") }
    }

    package func swapModel(_ request: SwapRequest, by principal: Principal) -> HTTPResponse {
        let running = state.withLock { $0.active.map { ($0.id, $0.model) } }
        return binding.swap(request, by: principal,
                            takesEffect: running.map { "at the next run; run \($0.0) continues on \($0.1)" } ?? "at the next run")
    }

    // MARK: - Ticks: the schedule and alias following

    package func tick() { tick(now: Date()) }

    func tick(now: Date) {
        binding.follow()  // status (and the console) shows the version the next run takes
        guard let schedule, let due = nextSlot.withLock({ $0 }), now >= due else { return }
        nextSlot.withLock { $0 = schedule.next(after: now) }
        do {
            let waiting = try ledger.list(job: job, limit: 20).contains { $0.trigger == .schedule && $0.status == .queued }
            if waiting {
                events.append("run", "skipped the \(isoTimestamp(due)) slot of \(schedule): a scheduled run is still queued")
                return
            }
            _ = try trigger(.schedule, who: "schedule", scheduledFor: due.timeIntervalSince1970)
        } catch {
            events.append("error", "schedule: \(error.message)")
        }
    }

    // MARK: - Status and telemetry

    package var isReady: Bool { binding.current != nil }

    package let sampleFields = ["rows", "bytes", "rejected", "progress", "queue", "running"]

    package func sample(interval: Double) -> [String: Double] {
        let (rows, bytes, rejected) = totalsNow()
        let previous = sampling.withLock { state in
            defer { state = (rows, bytes, rejected) }
            return state
        }
        let progress = state.withLock { $0.active.map { fraction($0.progress) } } ?? 0
        let queue = (try? ledger.count(job: job, status: .queued)) ?? 0
        return [
            "rows": Double(rows - previous.rows) / interval,
            "bytes": Double(bytes - previous.bytes) / interval,
            "rejected": Double(rejected - previous.rejected) / interval,
            "progress": progress,
            "queue": Double(queue),
            "running": state.withLock { $0.active == nil ? 0 : 1 },
        ]
    }

    /// Rows, bytes and rejects so far, the running run's included.
    private func totalsNow() -> (Int, Int64, Int) {
        state.withLock { state in
            let t = state.totals
            guard let p = state.active?.progress else { return (t.rows, t.bytes, t.rejected) }
            return (t.rows + p.rowsRead.load(ordering: .relaxed), t.bytes + p.bytesDone.load(ordering: .relaxed),
                    t.rejected + p.rowsRejected.load(ordering: .relaxed))
        }
    }

    private func fraction(_ progress: BatchProgress) -> Double {
        let total = progress.bytesTotal.load(ordering: .relaxed)
        return total > 0 ? min(1, Double(progress.bytesDone.load(ordering: .relaxed)) / Double(total)) : 0
    }

    package var runningModel: String? { binding.version?.reference }

    package func describe(_ status: inout ComponentStatus) {
        let (current, t) = state.withLock { ($0.active, $0.totals) }
        binding.describe(&status)
        status.state = current == nil ? "idle" : "running"
        status.drift = driftStatus()
        status.counters = NamedNumbers(RunLedger.Status.allCases.filter(\.isFinished).map { NamedNumber("runs_\($0.rawValue)", Double(t.runs[$0] ?? 0)) }
            + [NamedNumber("rows", Double(t.rows)), NamedNumber("rows_rejected", Double(t.rejected))])
        status.batch = BatchStatus(
            job: job, input: inputDirectory.path + (pattern.map { "/" + $0 } ?? ""), output: outputDirectory.path,
            schedule: schedule?.description, nextRunAt: schedule == nil ? nil : nextSlot.withLock { $0 }.map(isoTimestamp),
            queue: (try? ledger.count(job: job, status: .queued)) ?? 0, run: current.map(progress))
    }

    /// The running run's drift so far, else the latest run's; empty before the first run.
    package func driftStatus() -> [DriftStatus] {
        drift.withLock { d in (d.monitor?.report()).map { [$0] } ?? d.last.map { [$0] } ?? [] }
    }

    /// The running run's progress, with its rate and what is left.
    private func progress(_ run: ActiveRun) -> RunProgress {
        let p = run.progress
        let elapsed = Double(csystem_monotonic_ns() - run.startedNanoseconds) / 1e9
        let done = p.bytesDone.load(ordering: .relaxed), total = p.bytesTotal.load(ordering: .relaxed)
        let rows = p.rowsRead.load(ordering: .relaxed)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        return RunProgress(
            id: run.id, model: run.model, file: p.file.withLock { $0 }, rowsDone: rows, rowsRejected: p.rowsRejected.load(ordering: .relaxed),
            bytesDone: done, bytesTotal: total, fraction: fraction(p), rowsPerSecond: elapsed > 0 ? (Double(rows) / elapsed).rounded() : 0,
            etaSeconds: rate > 0 && done > 0 ? (Double(total - done) / rate * 10).rounded() / 10 : nil, elapsedSeconds: (elapsed * 10).rounded() / 10)
    }

    package func metrics(_ text: inout PrometheusText) {
        DriftMonitor.metrics(&text, model: binding.version?.model ?? "", driftStatus())
        let t = state.withLock { $0.totals }
        text.describe("switchyard_batch_runs_total", "counter", "Runs finished by this process, by status.")
        for status in RunLedger.Status.allCases where status.isFinished {
            text.sample("switchyard_batch_runs_total", [("status", status.rawValue)], Double(t.runs[status] ?? 0))
        }
        text.describe("switchyard_batch_rows_total", "counter", "Rows read by finished files.")
        text.sample("switchyard_batch_rows_total", [], Double(t.rows))
        text.describe("switchyard_batch_rows_rejected_total", "counter", "Rows rejected (see the rejects files).")
        text.sample("switchyard_batch_rows_rejected_total", [], Double(t.rejected))
        text.describe("switchyard_batch_queue", "gauge", "Runs waiting to start.")
        text.sample("switchyard_batch_queue", [], Double((try? ledger.count(job: job, status: .queued)) ?? 0))
        text.describe("switchyard_batch_run_progress", "gauge", "Fraction of the running run's bytes done (0 when idle).")
        text.sample("switchyard_batch_run_progress", [], state.withLock { $0.active.map { fraction($0.progress) } } ?? 0)
    }

    // MARK: - Routes

    package func route(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse? {
        let path = String(request.path)
        if path == "/v1/drift" { return DriftMonitor.respond(request, context, authenticator: authenticator, driftStatus()) }
        guard path == "/v1/runs" || path.hasPrefix("/v1/runs/") else { return nil }
        let parts = path.split(separator: "/").map(String.init)  // ["v1", "runs", id?, action?]
        let needed: Scope = request.method == "GET" ? .read : .operate
        var principal = context.principal
        switch authenticator.authorize(request, loop: context.loop, needed: needed) {
        case .success(let p): principal = p
        case .failure(let error): return error.response
        }
        do {
            switch (request.method, parts.count) {
            case ("GET", 2):
                let limit = min(max(Int(request.query["limit"] ?? "50") ?? 50, 1), 500)
                let before = request.query["before"].flatMap { Int($0) }
                let runs = try registryCall { () throws(RegistryError) in try ledger.list(job: job, before: before, limit: limit) }
                return json(200, RunPage(runs: runs.map { summary($0) }, nextBefore: runs.count == limit ? runs.last?.id : nil).json)
            case ("POST", 2):
                if let wrongType = requireJSON(request) { return wrongType }
                let body = request.body.isEmpty ? JSONValue.object(JSONObject()) : (try? JSONValue.parse(request.body))
                guard let body, case .object = body else { return .error(400, #"expected a JSON object like {"idempotency_key": "nightly-2026-11-24"} (or no body)"#) }
                let key = idempotencyKey(request, body)
                if let key, key.utf8.count > 200 { return .error(400, "the idempotency key is longer than 200 bytes") }
                let result = try registryCall { () throws(RegistryError) in try trigger(.manual, who: principal.name, idempotencyKey: key) }
                return json(result.existed ? 200 : 202, summary(result.run, existing: result.existed).json)
            case ("GET", 3):
                guard let id = Int(parts[2]) else { return .error(404, "no run \(parts[2])") }
                guard let run = try registryCall({ () throws(RegistryError) in try ledger.run(id) }), run.job == job else {
                    return .error(404, "no run \(id) in this job")
                }
                return json(200, summary(run).json)
            case ("POST", 4) where parts[3] == "rerun":
                guard let id = Int(parts[2]), let original = try registryCall({ () throws(RegistryError) in try ledger.run(id) }), original.job == job else {
                    return .error(404, "no run \(parts[2]) in this job")
                }
                guard original.status.isFinished else {
                    return .error(409, "run \(id) is \(original.status.rawValue); rerun a run once it has finished, or cancel it first")
                }
                let body = (try? JSONValue.parse(request.body)) ?? .object(JSONObject())
                let key = idempotencyKey(request, body)
                let result = try registryCall { () throws(RegistryError) in
                    try trigger(.rerun, who: principal.name, rerunOf: id, idempotencyKey: key, model: original.model)
                }
                return json(result.existed ? 200 : 202, summary(result.run, existing: result.existed).json)
            case ("POST", 4) where parts[3] == "cancel":
                guard let id = Int(parts[2]) else { return .error(404, "no run \(parts[2])") }
                return try registryCall { () throws(RegistryError) in try cancel(id, by: principal.name) }
            default:
                return .error(405, "\(request.method) is not allowed on \(path)")
            }
        } catch let error as HTTPError {
            return error.response
        } catch {
            return .error(500, "\(error)")
        }
    }

    private func idempotencyKey(_ request: HTTPRequest, _ body: JSONValue) -> String? {
        if let header = request.headers["Idempotency-Key"], !header.isEmpty { return header }
        if case .string(let key)? = body["idempotency_key"], !key.isEmpty { return key }
        return nil
    }

    private func runResponse(_ status: Int, _ id: Int) throws(RegistryError) -> HTTPResponse {
        guard let run = try ledger.run(id) else { return .error(404, "no run \(id)") }
        return json(status, summary(run).json)
    }

    /// A ledger record as the wire gives it, with live figures and progress when it is the running run.
    func summary(_ run: RunLedger.Run, existing: Bool = false) -> RunSummary {
        var summary = RunSummary(
            id: run.id, status: run.status.rawValue, trigger: run.trigger.rawValue, rerunOf: run.rerunOf, who: run.who,
            idempotencyKey: run.idempotencyKey, model: run.model, modelSHA256: run.modelSHA256,
            inputs: run.inputs.map { RunSummary.Input(name: $0.name, size: $0.size, sha256: $0.sha256) },
            rowsRead: run.rowsRead, rowsScored: run.rowsScored, rowsRejected: run.rowsRejected, bytesTotal: run.bytesTotal, bytesDone: run.bytesDone,
            queuedAt: run.queuedAt, startedAt: run.startedAt, finishedAt: run.finishedAt, error: run.error,
            scheduledFor: run.scheduledFor.map { isoTimestamp(Date(timeIntervalSince1970: $0)) }, note: run.note, output: outputDirectory.path,
            existing: existing, tasks: run.isSplit ? Self.tasks(try? ledger.tasks(run.id)) : nil)
        if let live = state.withLock({ $0.active }), live.id == run.id {
            summary.rowsRead = live.progress.rowsRead.load(ordering: .relaxed)
            summary.rowsScored = live.progress.rowsScored.load(ordering: .relaxed)
            summary.rowsRejected = live.progress.rowsRejected.load(ordering: .relaxed)
            summary.bytesDone = live.progress.bytesDone.load(ordering: .relaxed)
            summary.progress = progress(live)
        }
        return summary
    }

    // MARK: - Housekeeping

    /// A split run's tasks by worker, in the order the workers first took one; nil for a run
    /// done in one process.
    static func tasks(_ tasks: [RunLedger.Task]?) -> RunTasks? {
        guard let tasks, !tasks.isEmpty else { return nil }
        var workers: [RunTasks.Worker] = []
        for task in tasks.sorted(by: { ($0.startedAt ?? "~", $0.seq) < ($1.startedAt ?? "~", $1.seq) }) {
            guard let name = task.worker, task.status == .done || task.status == .running else { continue }
            let at = workers.firstIndex { $0.name == name } ?? { workers.append(.init(name: name, done: 0, running: 0, rows: 0)); return workers.count - 1 }()
            if task.status == .done { workers[at].done += 1 } else { workers[at].running += 1 }
            workers[at].rows += task.rowsRead
        }
        return RunTasks(total: tasks.count, done: tasks.count { $0.status == .done }, running: tasks.count { $0.status == .running },
                        failed: tasks.count { $0.status == .failed }, retried: tasks.count { $0.attempt > 1 }, workers: workers)
    }

    /// Removes temporary outputs left by a process that died mid-write
    /// (`.NAME.PID.RANDOM.tmp`, see `AtomicFile`) whose process is gone.
    private func removeStaleTemporaryFiles() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: outputDirectory.path) else { return }
        for name in names where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            let parts = name.split(separator: ".")
            guard parts.count >= 4, let pid = Int32(parts[parts.count - 3]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                unlink(outputDirectory.appendingPathComponent(name).path)
                events.append("cleanup", "removed \(name), a partial output of a process (pid \(pid)) that stopped mid-write")
            }
        }
    }
}

