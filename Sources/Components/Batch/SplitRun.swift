import CSystem
import ControlProtocol
import Foundation
import Registry
import Scoring
import Synchronization
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

/// Where the parts of a run cut into tasks go: `OUTPUT/.switchyard-parts/run-ID/`, in the output
/// folder that every worker writes (a shared mount across machines). A part is named by its task
/// and attempt, so the attempt the ledger recorded as done is the one published.
package enum BatchParts {
    package static func folder(output: URL, run: Int) -> URL {
        output.appendingPathComponent(".switchyard-parts").appendingPathComponent("run-\(run)")
    }

    package static func files(output: URL, run: Int, seq: Int, attempt: Int) -> (output: URL, rejects: URL) {
        let base = folder(output: output, run: run).appendingPathComponent(String(format: "%06d-a%d", seq, attempt))
        return (base.appendingPathExtension("out"), base.appendingPathExtension("rejects"))
    }
}

/// The outcome of a run's scoring, however it was done.
struct ScoredFiles {
    var inputs: [RunLedger.Input]
    var read = 0, scored = 0, rejected = 0
    var bytesDone: Int64 = 0
    /// Per file, as "NAME: why".
    var failures: [String] = []
    /// Why the run as a whole could not go on (nothing published).
    var runError: String?
}

extension BatchComponent {
    /// A task whose lease ran out this many times fails its file (its records may kill workers).
    static let maxAttempts = 5

    /// A run cut into tasks for `switchyard batch worker` processes (`--split`): this process
    /// plans it (reads each input once, as a one-process run would, to hash it and find record
    /// ends about every `taskBytes`), records the tasks, watches the workers' progress, and when
    /// every task is done publishes each output and rejects file — its parts put together in
    /// order, through an `AtomicFile` — exactly once. A failed task fails its file, as a file that
    /// cannot be scored does in one process (the run fails; the other files are published); a
    /// cancel or stop ends the tasks (workers on them lose their lease at their next heartbeat).
    func runSplit(
        _ run: RunLedger.Run, files: [URL], runner: BatchRunner, taskBytes: Int, progress: BatchProgress
    ) -> ScoredFiles {
        var outcome = ScoredFiles(inputs: files.map { .init(name: $0.lastPathComponent, size: 0, sha256: "") })
        let parts = BatchParts.folder(output: outputDirectory, run: run.id)
        do {
            try FileManager.default.createDirectory(at: parts, withIntermediateDirectories: true)
        } catch {
            outcome.runError = "cannot create \(parts.path) for the tasks' parts: \(error.localizedDescription)"
            return outcome
        }
        defer {
            try? FileManager.default.removeItem(at: parts)
            rmdir(parts.deletingLastPathComponent().path)  // when no other run's parts are there
        }
        let spec = RunLedger.RunSpec(outputDirectory: outputDirectory.path, idColumns: options.idColumns, explainTop: options.explainTop,
                                     chunkBytes: runner.chunkBytes, maxRecordBytes: runner.maxRecordBytes, rowsPerSecond: options.rowsPerSecond)
        do throws(RegistryError) {
            try throughOutages("run \(run.id): recording its task settings") { () throws(RegistryError) in try ledger.plan(run.id, spec: spec) }
        } catch {
            outcome.runError = "recording the run's task settings: \(error.message)"
            return outcome
        }
        // Each task goes to the ledger as soon as it is cut, so workers start while the planning
        // reads on.
        var fileOfTask: [Int] = []
        var unplanned = Set<Int>()
        for (i, file) in files.enumerated() {
            if progress.cancelled.load(ordering: .relaxed) {
                try? ledger.cancelTasks(run.id)
                return outcome
            }
            progress.file.withLock { $0 = "planning \(file.lastPathComponent)" }
            var recordError: String?
            let plan = runner.plan(file, taskBytes: taskBytes) { part in
                guard recordError == nil else { return }
                do throws(RegistryError) {
                    let task = RunLedger.PlannedTask(file: file.path, start: part.start, end: part.end, firstLine: part.firstLine)
                    let seq = fileOfTask.count
                    try throughOutages("run \(run.id): recording task \(seq)") { () throws(RegistryError) in
                        try ledger.addTasks(run.id, firstSeq: seq, [task])
                    }
                    fileOfTask.append(i)
                } catch {
                    recordError = error.message
                }
            }
            outcome.inputs[i] = plan.input
            if let recordError {
                try? ledger.cancelTasks(run.id)
                outcome.runError = "recording the run's tasks: \(recordError)"
                return outcome
            }
            if let error = plan.error {
                outcome.failures.append(error)
                unplanned.insert(i)
            }
        }
        events.append("run", "run \(run.id): \(fileOfTask.count) task\(fileOfTask.count == 1 ? "" : "s") for workers (switchyard batch worker --job \(job))")

        // Watch until every task is done or failed, or the run is cancelled; meanwhile put the
        // done parts together.
        var assembly = Assembly(files: files, fileOfTask: fileOfTask, skipped: unplanned, runner: runner, parts: { task in
            BatchParts.files(output: self.outputDirectory, run: run.id, seq: task.seq, attempt: task.attempt)
        })
        var tasks: [RunLedger.Task] = []
        var lastRecorded = 0.0
        var waitingSaid = false
        var backoff = Backoff(initial: 0.05, cap: 2)
        var outage = false
        // Hears of each task's end (see the wait at the bottom).
        var listener = try? ledger.taskListener()
        while true {
            if progress.cancelled.load(ordering: .relaxed) {
                try? ledger.cancelTasks(run.id)
                return outcome
            }
            do {
                tasks = try ledger.tasks(run.id)
                if outage {
                    events.append("recovered", "run \(run.id): its tasks can be read again")
                    if listener == nil { listener = try? ledger.taskListener() }
                }
                outage = false
                backoff.reset()
            } catch {
                // The ledger's database is away: keep waiting (the run is not lost), say so once.
                if !outage { events.append("error", "run \(run.id): reading its tasks: \(error.message); retrying with backoff") }
                outage = true
                nap(backoff.next(), unless: progress.cancelled)
                continue
            }
            let done = tasks.filter { $0.status == .done }
            progress.rowsRead.store(done.reduce(0) { $0 + $1.rowsRead }, ordering: .relaxed)
            progress.rowsScored.store(done.reduce(0) { $0 + $1.rowsScored }, ordering: .relaxed)
            progress.rowsRejected.store(done.reduce(0) { $0 + $1.rowsRejected }, ordering: .relaxed)
            progress.bytesDone.store(done.reduce(0) { $0 + $1.planned.end - $1.planned.start }, ordering: .relaxed)
            assembly.advance(tasks)
            let workers = Set(tasks.compactMap { $0.status == .running ? $0.worker : nil })
            progress.file.withLock { $0 = "\(done.count)/\(tasks.count) tasks, \(workers.count) worker\(workers.count == 1 ? "" : "s")" }
            // A task that lost its worker too often is given up: its file fails, like a file that
            // cannot be read (the input may be what kills the workers).
            for task in tasks where task.attempt >= Self.maxAttempts && task.status == .running {
                if (try? ledger.expiredTasks(run.id))?.contains(task.seq) == true {
                    _ = try? ledger.giveUp(task, error: "\(URL(fileURLWithPath: task.planned.file).lastPathComponent): task \(task.seq) (bytes \(task.planned.start)–\(task.planned.end)) lost its worker \(Self.maxAttempts) times; the records there may crash workers")
                }
            }
            if tasks.allSatisfy({ $0.status == .done || $0.status == .failed || $0.status == .cancelled }) { break }
            if !waitingSaid, workers.isEmpty, done.isEmpty {
                waitingSaid = true
                events.append("run", "run \(run.id) waits for workers: start 'switchyard batch worker --job \(job)' with the same registry")
            }
            let now = Date().timeIntervalSince1970
            if now - lastRecorded >= 1 {
                lastRecorded = now
                try? ledger.progress(run.id, rowsRead: progress.rowsRead.load(ordering: .relaxed), rowsScored: progress.rowsScored.load(ordering: .relaxed),
                                     rowsRejected: progress.rowsRejected.load(ordering: .relaxed), bytesDone: progress.bytesDone.load(ordering: .relaxed),
                                     inputs: outcome.inputs)
            }
            // The tasks are read again when one ends (its worker announces it), so a part is put
            // together as soon as it is in, and at least every quarter second (a cancel, a lost
            // worker, the progress); at most every 200 ms for a run of many. Without a listener
            // (lost, or none could be made), every 5 ms.
            if tasks.count > 200 { nap(0.2, unless: progress.cancelled) }
            do {
                _ = try listener?.next(timeout: 0.25)
            } catch {
                listener = nil
            }
            if listener == nil { nap(0.005, unless: progress.cancelled) }
        }
        for task in tasks where task.status == .done {
            outcome.read += task.rowsRead
            outcome.scored += task.rowsScored
            outcome.rejected += task.rowsRejected
        }
        // A file with a failed task fails, as a file that cannot be scored does in one process
        // (its rows are not counted, its outputs not written); the other files are published.
        var failedFiles = unplanned
        for (index, task) in tasks.enumerated() where task.status != .done {
            let file = fileOfTask[index]
            guard failedFiles.insert(file).inserted else { continue }
            let name = files[file].lastPathComponent
            let error = task.error ?? "task \(task.seq) was \(task.status.rawValue)"
            outcome.failures.append(error.hasPrefix(name + ":") ? error : "\(name): \(error)")
        }
        for (index, task) in tasks.enumerated() where failedFiles.contains(fileOfTask[index]) && task.status == .done {
            outcome.read -= task.rowsRead
            outcome.scored -= task.rowsScored
            outcome.rejected -= task.rowsRejected
        }

        // Publish: every file whose parts are all in, under its final name, in order.
        progress.file.withLock { $0 = "publishing" }
        assembly.advance(tasks)
        for (i, file) in files.enumerated() where !failedFiles.contains(i) {
            do throws(RegistryError) {
                guard let sealed = try assembly.sealed(i) else { continue }
                try sealed.output.publish()
                try sealed.rejects.publish()
            } catch {
                outcome.failures.append("\(file.lastPathComponent): publishing: \(error.message)")
            }
            outcome.bytesDone += outcome.inputs[i].size
        }
        return outcome
    }
}

/// A split run's outputs put together as the tasks finish: each file's parts are appended, in
/// order, to its output and rejects (temporary files) as soon as the parts before them are in,
/// and the file is sealed (fsynced, closed, not yet shown) with its last part. So when the last
/// task ends, little is left to copy. Files are taken in order, one open at a time.
private struct Assembly {
    let files: [URL]
    let seqsOfFile: [[Int]]
    var skipped: Set<Int>
    let runner: BatchRunner
    let parts: (RunLedger.Task) -> (output: URL, rejects: URL)
    /// The file being put together: its index, its two files, and the next of its parts to append.
    private var open: (file: Int, output: AtomicFile, rejects: AtomicFile, next: Int)?
    private var done: [Int: (output: AtomicFile, rejects: AtomicFile)] = [:]
    private var errors: [Int: RegistryError] = [:]
    /// Files before this one are sealed, failed or skipped.
    private var current = 0

    init(files: [URL], fileOfTask: [Int], skipped: Set<Int>, runner: BatchRunner, parts: @escaping (RunLedger.Task) -> (output: URL, rejects: URL)) {
        self.files = files
        var seqs = [[Int]](repeating: [], count: files.count)
        for (seq, file) in fileOfTask.enumerated() { seqs[file].append(seq) }
        seqsOfFile = seqs
        self.skipped = skipped
        self.runner = runner
        self.parts = parts
    }

    /// Appends every part whose turn has come (`tasks` by seq).
    mutating func advance(_ tasks: [RunLedger.Task]) {
        while current < files.count {
            let i = current
            let seqs = seqsOfFile[i]
            if skipped.contains(i) || seqs.isEmpty || seqs.contains(where: { $0 >= tasks.count || tasks[$0].status == .failed || tasks[$0].status == .cancelled }) {
                if open?.file == i {
                    open?.output.abandon()
                    open?.rejects.abandon()
                    open = nil
                }
                // Wait for a file's tasks to be planned, unless it is given up on.
                if !skipped.contains(i), !seqs.isEmpty, seqs.contains(where: { $0 >= tasks.count }) { return }
                skipped.insert(i)
                current += 1
                continue
            }
            do throws(RegistryError) {
                var state: (file: Int, output: AtomicFile, rejects: AtomicFile, next: Int)
                if let open { state = open } else {
                    state = (i, try AtomicFile(runner.outputURL(for: files[i])), try AtomicFile(runner.rejectsURL(for: files[i])), 0)
                }
                while state.next < seqs.count, tasks[seqs[state.next]].status == .done {
                    let task = tasks[seqs[state.next]]
                    let part = parts(task)
                    try state.output.append(contentsOf: part.output.path, expected: task.outputBytes)
                    try state.rejects.append(contentsOf: part.rejects.path, expected: task.rejectsBytes)
                    state.next += 1
                }
                guard state.next == seqs.count else {
                    open = state
                    return
                }
                try state.output.seal()
                try state.rejects.seal()
                done[i] = (state.output, state.rejects)
                open = nil
            } catch {
                open?.output.abandon()
                open?.rejects.abandon()
                open = nil
                errors[i] = error
            }
            current += 1
        }
    }

    /// File `i`'s sealed output and rejects; nil when it has none (failed, or no tasks); the
    /// error that stopped putting it together.
    func sealed(_ i: Int) throws(RegistryError) -> (output: AtomicFile, rejects: AtomicFile)? {
        if let error = errors[i] { throw error }
        return done[i]
    }
}
