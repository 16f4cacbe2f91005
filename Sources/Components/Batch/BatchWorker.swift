import CSystem
import ControlProtocol
import Foundation
import Registry
import Scoring
import Synchronization
import Telemetry

/// `switchyard batch worker`: does the tasks of a job's runs cut into tasks (`batch --split`), on
/// any machine that reads the inputs and writes the output folder. It claims a task (the ledger
/// hands each to one worker), scores its byte range into part files, renews its lease while it
/// works, and records the task done with its counts. A worker that dies loses its lease and
/// another takes the task over; one whose lease was taken over stops and discards its part. While
/// the ledger's database is unreachable it retries with backoff and says so once.
package final class BatchWorker: Sendable {
    /// `HOST:PID:RANDOM`, as the ledger names the worker of a task.
    package let name: String
    let ledger: RunLedger
    let registry: any ModelSource
    package let job: String
    let threads: Int
    /// Seconds a claim lasts without a heartbeat; renewed every third of it.
    let lease: Double
    let events: EventLog
    private let stopping = Atomic<Bool>(false)
    /// The scorer of the model last used, by sha256 (a run's tasks share one).
    private let scorer = Mutex<(sha: String, scorer: Scorer)?>(nil)
    package let tasksDone = Atomic<Int>(0)
    package let rowsDone = Atomic<Int>(0)
    package let health: DependencyHealth

    package init(ledger: RunLedger, registry: any ModelSource, job: String, threads: Int, lease: Double, events: EventLog, name: String? = nil) {
        self.name = name ?? "\(ProcessInfo.processInfo.hostName):\(getpid()):\(KeyStore.randomHex(4))"
        self.ledger = ledger
        self.registry = registry
        self.job = job
        self.threads = max(1, threads)
        self.lease = lease
        self.events = events
        health = DependencyHealth(name: "run ledger", address: ledger.location.description, events: events)
    }

    /// Claims and does tasks until `stop()`. When there is none it waits to hear of new tasks
    /// (`RunLedger.taskListener`), asking again every second regardless.
    package func run() {
        // Each task allocates its chunk buffers anew: keep the last task's pages for the next.
        csystem_keep_freed_memory()
        var listener: StoreListener?
        while !stopping.load(ordering: .acquiring) {
            do {
                // Listening starts before the claim: a task added in between is heard.
                if listener == nil { listener = try ledger.taskListener() }
                if try step() {
                    health.succeeded()
                    continue
                }
                health.succeeded()
                _ = try listener?.next(timeout: stopping.load(ordering: .acquiring) ? 0 : 1)
            } catch {
                listener = nil
                nap(health.failed(error.message), unless: stopping)
            }
        }
    }

    /// Stops claiming; a task in hand is finished first (`run` returns after it).
    package func stop() { stopping.store(true, ordering: .releasing) }

    /// Claims one task and does it; false when there was none to claim.
    @discardableResult
    package func step() throws(RegistryError) -> Bool {
        guard let claim = try ledger.claim(job: job, worker: name, lease: lease) else { return false }
        let task = claim.task
        let input = URL(fileURLWithPath: task.planned.file)
        let label = "task \(task.seq) of run \(task.run) (\(input.lastPathComponent) bytes \(task.planned.start)–\(task.planned.end), attempt \(task.attempt))"
        events.append("run", "claimed \(label)")
        let loaded: Scorer
        while true {
            do {
                loaded = try load(claim.model, sha256: claim.modelSHA256)
                break
            } catch let error as RegistryError where error.status == 503 {
                // The model's database is away for now: the task is not at fault (failing it would
                // fail the run). Wait for it; if the lease runs out meanwhile, or this worker is
                // stopping, the task goes to another worker when its lease ends.
                if stopping.load(ordering: .acquiring) { throw error }
                nap(health.failed(error.message), unless: stopping)
            } catch {
                let message = (error as? RegistryError)?.message ?? "\(error)"
                _ = try ledger.fail(task, worker: name, error: "loading \(claim.model): \(message)")
                events.append("error", "\(label): loading \(claim.model): \(message)")
                return true
            }
        }
        let output = URL(fileURLWithPath: claim.spec.outputDirectory)
        let part = BatchParts.files(output: output, run: task.run, seq: task.seq, attempt: task.attempt)
        // The planner made the parts' folder before the first task; gone, the run is over (a part
        // cannot be written, and the task's end is refused).
        var runner = BatchRunner(scorer: loaded, model: claim.model, outputDirectory: output, idColumns: claim.spec.idColumns, workers: threads)
        runner.chunkBytes = claim.spec.chunkBytes
        runner.maxRecordBytes = claim.spec.maxRecordBytes
        runner.explainTop = claim.spec.explainTop
        runner.rowsPerSecond = claim.spec.rowsPerSecond

        // The heartbeat: renews the lease (with the rows so far) until the task ends; a lease
        // taken over stops the scoring.
        let progress = BatchProgress()
        let lost = Atomic<Bool>(false)
        let finished = DispatchSemaphore(value: 0)
        let beat = Thread { [ledger, name, lease] in
            while finished.wait(timeout: .now() + lease / 3) == .timedOut {
                do {
                    if try !ledger.renew(task, worker: name, lease: lease, rowsRead: progress.rowsRead.load(ordering: .relaxed)) {
                        lost.store(true, ordering: .releasing)
                        progress.cancelled.store(true, ordering: .relaxed)
                        return
                    }
                } catch {
                    // Unreachable now: keep scoring; the completion says whether the claim held.
                }
            }
        }
        beat.name = "batch-worker-lease"
        beat.start()
        let result = runner.score(input, part: BatchPart(start: task.planned.start, end: task.planned.end, firstLine: task.planned.firstLine,
                                                         output: part.output, rejects: part.rejects), progress: progress)
        finished.signal()
        if lost.load(ordering: .acquiring) {
            events.append("run", "\(label): its lease was taken over (this worker was too slow to renew it); another worker's part counts")
            try? FileManager.default.removeItem(at: part.output)
            try? FileManager.default.removeItem(at: part.rejects)
            return true
        }
        // Recording the end is retried until the ledger answers: the part is written, and a
        // completion lost now would make another worker do the task again.
        var backoff = Backoff(initial: 0.1, cap: 5)
        while true {
            do {
                let held: Bool
                if let error = result.error {
                    held = try ledger.fail(task, worker: name, error: error)
                    events.append("error", "\(label): \(error)")
                } else {
                    held = try ledger.complete(task, worker: name, rowsRead: result.rowsRead, rowsScored: result.rowsScored, rowsRejected: result.rowsRejected,
                                               outputBytes: result.outputBytes, rejectsBytes: result.rejectsBytes)
                    if held {
                        tasksDone.wrappingAdd(1, ordering: .relaxed)
                        rowsDone.wrappingAdd(result.rowsRead, ordering: .relaxed)
                        events.append("run", "done \(label): \(result.rowsRead) rows read, \(result.rowsScored) scored, \(result.rowsRejected) rejected")
                    }
                }
                if !held { events.append("run", "\(label): its lease ran out before it was recorded; another worker's part counts") }
                health.succeeded()
                return true
            } catch {
                let wait = health.failed(error.message)
                if stopping.load(ordering: .acquiring) && backoff.attempts > 20 { throw error }
                _ = backoff.next()
                Thread.sleep(forTimeInterval: wait)
            }
        }
    }

    /// The scorer for `reference` (`NAME@VERSION`), checked against the run's sha256.
    private func load(_ reference: String, sha256: String) throws -> Scorer {
        if let cached = scorer.withLock({ $0 }), cached.sha == sha256 { return cached.scorer }
        let version = try registry.resolve(reference)
        guard version.sha256 == sha256 else {
            throw RegistryError("\(reference) is \(version.sha256.prefix(12)) in the registry, but the run scores with \(sha256.prefix(12))", status: 409)
        }
        let document = try registry.document(version)
        let made: Scorer
        do { made = try Scorer(document) } catch { throw RegistryError("\(reference): \(error)", status: 422) }
        scorer.withLock { $0 = (sha256, made) }
        return made
    }
}
