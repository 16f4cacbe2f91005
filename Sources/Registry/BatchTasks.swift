import ControlProtocol
import Foundation
import JSON

/// A run cut into tasks (issue 21): each task is the whole records in a byte range of one input
/// file, claimed by any `switchyard batch worker` of the job under a lease that its heartbeat
/// renews. A claim takes the first task that is pending, or running under a lease that ran out
/// (its worker died): `FOR UPDATE SKIP LOCKED` on PostgreSQL, so claimers on many machines never
/// wait for each other; SQLite's one writer gives the same on one machine. Leases are in the
/// database's clock, so machines' clocks need not agree. The worker and the attempt number are
/// the lease's token: a worker whose lease was taken over cannot complete the task.
extension RunLedger {
    public enum TaskStatus: String, Sendable {
        case pending, running, done, failed, cancelled
    }

    /// A task as planned: the records of `file` in `start..<end`, the first on line `firstLine`.
    public struct PlannedTask: Sendable, Equatable {
        public var file: String
        public var start: Int64
        public var end: Int64
        public var firstLine: Int
        public init(file: String, start: Int64, end: Int64, firstLine: Int) {
            self.file = file
            self.start = start
            self.end = end
            self.firstLine = firstLine
        }
    }

    public struct Task: Sendable, Equatable {
        public var run: Int
        public var seq: Int
        public var planned: PlannedTask
        public var status: TaskStatus
        public var worker: String?
        /// Claims so far; the current claim's number.
        public var attempt: Int
        public var rowsRead: Int
        public var rowsScored: Int
        public var rowsRejected: Int
        /// The sizes of its parts, as the worker wrote them.
        public var outputBytes: Int64
        public var rejectsBytes: Int64
        public var error: String?
        public var startedAt: String?
        public var finishedAt: String?
    }

    /// What a worker needs of a run besides its task: the job's output settings and the model.
    public struct RunSpec: Sendable, Equatable {
        public var outputDirectory: String
        public var idColumns: [String]?
        public var explainTop: Int?
        public var chunkBytes: Int
        public var maxRecordBytes: Int
        /// Each worker slows to about this many rows a second (`--max-rows-per-second`).
        public var rowsPerSecond: Double?
        public init(outputDirectory: String, idColumns: [String]?, explainTop: Int?, chunkBytes: Int, maxRecordBytes: Int, rowsPerSecond: Double? = nil) {
            self.outputDirectory = outputDirectory
            self.idColumns = idColumns
            self.explainTop = explainTop
            self.chunkBytes = chunkBytes
            self.maxRecordBytes = maxRecordBytes
            self.rowsPerSecond = rowsPerSecond
        }

        var json: JSONValue {
            var o = JSONObject()
            o.append("output", .string(outputDirectory))
            o.append("id_columns", idColumns.map { .array($0.map(JSONValue.string)) } ?? .null)
            o.append("explain_top", explainTop.map { .number(Double($0)) } ?? .null)
            o.append("chunk_bytes", .number(Double(chunkBytes)))
            o.append("max_record_bytes", .number(Double(maxRecordBytes)))
            o.append("rows_per_second", rowsPerSecond.map(JSONValue.number) ?? .null)
            return .object(o)
        }

        init(json text: String) throws(RegistryError) {
            guard let value = try? JSONValue.parse(Array(text.utf8)), case .string(let output)? = value["output"],
                  case .number(let chunk)? = value["chunk_bytes"], case .number(let record)? = value["max_record_bytes"],
                  chunk >= 1024, chunk <= 1_073_741_824, record >= 1024, record <= 1_073_741_824
            else { throw RegistryError("the run's task settings in the ledger are damaged: \(text.prefix(200))", status: 500) }
            var ids: [String]?
            if case .array(let items)? = value["id_columns"] { ids = items.compactMap { if case .string(let s) = $0 { s } else { nil } } }
            var explain: Int?
            if case .number(let k)? = value["explain_top"], k >= 1, k <= 1000 { explain = Int(k) }
            var rate: Double?
            if case .number(let r)? = value["rows_per_second"], r > 0, r.isFinite { rate = r }
            self.init(outputDirectory: output, idColumns: ids, explainTop: explain, chunkBytes: Int(chunk), maxRecordBytes: Int(record), rowsPerSecond: rate)
        }
    }

    /// A claimed task with what the worker needs to do it.
    public struct Claim: Sendable {
        public var task: Task
        public var spec: RunSpec
        /// `NAME@VERSION` and its sha256: what every task of the run scores with.
        public var model: String
        public var modelSHA256: String
    }

    /// Seconds since the epoch in the database's clock.
    private var databaseNow: String {
        switch database.dialect {
        case .sqlite: "((julianday('now') - 2440587.5) * 86400.0)"
        case .postgres: "extract(epoch from clock_timestamp())::float8"
        }
    }

    private static let taskColumns = """
        run_id, seq, file, start_offset, end_offset, first_line, status, worker, attempts, rows_read, rows_scored, rows_rejected,
        output_bytes, rejects_bytes, error, started_at, finished_at
        """

    private static func decodeTask(_ row: [Database.Value]) -> Task {
        func int(_ i: Int) -> Int { Int(row[i].integer ?? 0) }
        return Task(
            run: int(0), seq: int(1),
            planned: PlannedTask(file: row[2].text ?? "", start: row[3].integer ?? 0, end: row[4].integer ?? 0, firstLine: int(5)),
            status: TaskStatus(rawValue: row[6].text ?? "") ?? .failed, worker: row[7].text, attempt: int(8),
            rowsRead: int(9), rowsScored: int(10), rowsRejected: int(11), outputBytes: row[12].integer ?? 0, rejectsBytes: row[13].integer ?? 0,
            error: row[14].text, startedAt: row[15].text, finishedAt: row[16].text)
    }

    /// Records a running run's settings for its workers (by the process that runs it), before its tasks.
    public func plan(_ run: Int, spec: RunSpec) throws(RegistryError) {
        try database.transaction { () throws(RegistryError) in
            guard try database.query("SELECT status FROM batch_runs WHERE id = ?", [.integer(Int64(run))]).first?.first?.text == "running" else {
                throw RegistryError("run \(run) is not running; only a running run gets tasks", status: 409)
            }
            try database.query("UPDATE batch_runs SET spec = ? WHERE id = ?", [.text(spec.json.jsonText), .integer(Int64(run))])
        }
    }

    /// Adds tasks to a planned run, numbered from `firstSeq`: workers may take them while the
    /// rest of the run is still being planned. Idle workers hear of them at once (`taskListener`).
    public func addTasks(_ run: Int, firstSeq: Int, _ tasks: [PlannedTask]) throws(RegistryError) {
        try database.transaction { () throws(RegistryError) in
            for (i, task) in tasks.enumerated() {
                try database.query(
                    "INSERT INTO batch_tasks (run_id, seq, file, start_offset, end_offset, first_line) VALUES (?, ?, ?, ?, ?, ?)",
                    [.integer(Int64(run)), .integer(Int64(firstSeq + i)), .text(task.file), .integer(task.start), .integer(task.end),
                     .integer(Int64(task.firstLine))])
            }
            try database.notify(Self.taskChannel, payload: String(run))
        }
    }

    static let taskChannel = "switchyard_tasks"

    /// Hears of tasks added or ended (on PostgreSQL with the run's id), so an idle worker claims
    /// a new task, and a run's planner puts a finished part in place, without polling.
    public func taskListener() throws(RegistryError) -> StoreListener {
        try database.listen(Self.taskChannel)
    }

    /// Claims the next task of `job`'s running runs for `worker`, for `lease` seconds: one that is
    /// pending, or whose lease ran out. Nil when there is none.
    public func claim(job: String, worker: String, lease: Double) throws(RegistryError) -> Claim? {
        let lock = database.dialect == .postgres ? " FOR UPDATE OF t SKIP LOCKED" : ""
        let rows = try database.query(
            """
            UPDATE batch_tasks SET status = 'running', worker = ?, lease_until = \(databaseNow) + ?, attempts = attempts + 1,
                started_at = ?, error = NULL, rows_read = 0
            WHERE (run_id, seq) = (
                SELECT t.run_id, t.seq FROM batch_tasks t JOIN batch_runs r ON r.id = t.run_id
                WHERE r.job = ? AND r.status = 'running'
                    AND (t.status = 'pending' OR (t.status = 'running' AND t.lease_until < \(databaseNow)))
                ORDER BY t.run_id, t.seq LIMIT 1\(lock))
            RETURNING \(Self.taskColumns)
            """,
            [.text(worker), .real(lease), .text(isoTimestamp(now())), .text(job)])
        guard let row = rows.first else { return nil }
        let task = Self.decodeTask(row)
        guard let run = try database.query("SELECT spec, model, model_sha256 FROM batch_runs WHERE id = ?", [.integer(Int64(task.run))]).first,
              let spec = run[0].text, let model = run[1].text, let sha = run[2].text
        else { throw RegistryError("run \(task.run) has tasks but no task settings or model in the ledger", status: 500) }
        return Claim(task: task, spec: try RunSpec(json: spec), model: model, modelSHA256: sha)
    }

    /// Extends the lease of `worker`'s claim on a task, recording the rows read so far; false when
    /// the claim is no longer its (the lease ran out and another worker took it, or the run was
    /// cancelled).
    public func renew(_ task: Task, worker: String, lease: Double, rowsRead: Int) throws(RegistryError) -> Bool {
        !(try database.query(
            """
            UPDATE batch_tasks SET lease_until = \(databaseNow) + ?, rows_read = ?
            WHERE run_id = ? AND seq = ? AND worker = ? AND attempts = ? AND status = 'running' RETURNING seq
            """,
            [.real(lease), .integer(Int64(rowsRead)), .integer(Int64(task.run)), .integer(Int64(task.seq)), .text(worker),
             .integer(Int64(task.attempt))]).isEmpty)
    }

    /// Records `worker`'s task as done with its counts (its part is written); false when the claim
    /// was no longer its, and then another worker's part counts.
    public func complete(
        _ task: Task, worker: String, rowsRead: Int, rowsScored: Int, rowsRejected: Int, outputBytes: Int64, rejectsBytes: Int64
    ) throws(RegistryError) -> Bool {
        try ended(task, try database.query(
            """
            UPDATE batch_tasks SET status = 'done', lease_until = NULL, finished_at = ?, rows_read = ?, rows_scored = ?, rows_rejected = ?,
                output_bytes = ?, rejects_bytes = ?
            WHERE run_id = ? AND seq = ? AND worker = ? AND attempts = ? AND status = 'running' RETURNING seq
            """,
            [.text(isoTimestamp(now())), .integer(Int64(rowsRead)), .integer(Int64(rowsScored)), .integer(Int64(rowsRejected)),
             .integer(outputBytes), .integer(rejectsBytes),
             .integer(Int64(task.run)), .integer(Int64(task.seq)), .text(worker), .integer(Int64(task.attempt))]))
    }

    /// Records that `worker` could not do its task (the input cannot be read, its header does
    /// not fit the model): the run fails with `error`, as a one-process run would.
    public func fail(_ task: Task, worker: String, error: String) throws(RegistryError) -> Bool {
        try ended(task, try database.query(
            """
            UPDATE batch_tasks SET status = 'failed', lease_until = NULL, finished_at = ?, error = ?
            WHERE run_id = ? AND seq = ? AND worker = ? AND attempts = ? AND status = 'running' RETURNING seq
            """,
            [.text(isoTimestamp(now())), .text(error), .integer(Int64(task.run)), .integer(Int64(task.seq)), .text(worker),
             .integer(Int64(task.attempt))]))
    }

    /// Whether the update that ended `task` held (`rows` not empty); then the run's planner,
    /// listening, hears of it at once.
    private func ended(_ task: Task, _ rows: [[Database.Value]]) throws(RegistryError) -> Bool {
        guard !rows.isEmpty else { return false }
        try database.notify(Self.taskChannel, payload: String(task.run))
        return true
    }

    /// Fails a task whatever worker holds it (its run's owner gives up on it).
    public func giveUp(_ task: Task, error: String) throws(RegistryError) -> Bool {
        !(try database.query(
            "UPDATE batch_tasks SET status = 'failed', lease_until = NULL, finished_at = ?, error = ? WHERE run_id = ? AND seq = ? AND status = 'running' RETURNING seq",
            [.text(isoTimestamp(now())), .text(error), .integer(Int64(task.run)), .integer(Int64(task.seq))]).isEmpty)
    }

    /// Ends a run's unfinished tasks (the run was cancelled or failed): no worker claims them, and
    /// a worker on one loses its lease at its next heartbeat.
    public func cancelTasks(_ run: Int) throws(RegistryError) {
        try database.query("UPDATE batch_tasks SET status = 'cancelled', lease_until = NULL WHERE run_id = ? AND status IN ('pending', 'running')",
                           [.integer(Int64(run))])
    }

    /// A run's tasks, in order.
    public func tasks(_ run: Int) throws(RegistryError) -> [Task] {
        try database.query("SELECT \(Self.taskColumns) FROM batch_tasks WHERE run_id = ? ORDER BY seq", [.integer(Int64(run))]).map(Self.decodeTask)
    }

    /// Tasks whose lease ran out with no worker to take them over yet, by seq: what a run's
    /// owner reports as "waiting for a worker".
    public func expiredTasks(_ run: Int) throws(RegistryError) -> [Int] {
        try database.query(
            "SELECT seq FROM batch_tasks WHERE run_id = ? AND status = 'running' AND lease_until < \(databaseNow) ORDER BY seq",
            [.integer(Int64(run))]).compactMap { $0.first?.integer.map(Int.init) }
    }
}
