import ControlProtocol
import Foundation
import JSON
import Scoring

/// The batch run ledger: every run of a batch job — what triggered it, who,
/// which model version, which inputs (name, size, sha256), the counts, the
/// times, how it ended. Queued runs are rows too, so the queue (the backlog)
/// survives a restart; a run still `running` when its process died is marked
/// `interrupted` by the next process to open the job.
public final class RunLedger: Sendable {
    let database: Database
    let now: @Sendable () -> Date
    /// This machine's SWITCHYARD_HOME: job locks live there (and the ledger too, unless it is in
    /// PostgreSQL).
    public let home: Home
    /// Where the ledger is.
    public let location: StoreLocation

    public enum Status: String, Sendable, CaseIterable {
        case queued, running, succeeded, failed, cancelled, interrupted

        public var isFinished: Bool { self != .queued && self != .running }
    }

    public enum Trigger: String, Sendable {
        case schedule, manual, rerun
    }

    /// One input file of a run.
    public struct Input: Sendable, Equatable {
        public var name: String
        public var size: Int64
        public var sha256: String
        public init(name: String, size: Int64, sha256: String) {
            self.name = name
            self.size = size
            self.sha256 = sha256
        }
    }

    public struct Run: Sendable, Equatable {
        public var id: Int
        public var job: String
        public var trigger: Trigger
        public var rerunOf: Int?
        public var who: String
        public var idempotencyKey: String?
        /// `NAME@VERSION` once the run has started (or, for a rerun, the version it repeats).
        public var model: String?
        public var modelSHA256: String?
        public var inputs: [Input]
        public var rowsRead: Int
        public var rowsScored: Int
        public var rowsRejected: Int
        public var bytesTotal: Int64
        public var bytesDone: Int64
        public var status: Status
        public var queuedAt: String
        public var startedAt: String?
        public var finishedAt: String?
        public var error: String?
        /// Unix time of the schedule slot a scheduled run stands for.
        public var scheduledFor: Double?
        public var note: String?
        /// Cut into tasks for batch workers (`RunLedger.tasks`).
        public var isSplit = false
    }

    public convenience init(home: Home, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        try self.init(location: .home(home), home: home, now: now)
    }

    /// The ledger at `location` (SQLite in a home, or the registry's PostgreSQL, where workers on
    /// other machines find a run's tasks); job locks in `home`.
    public init(location: StoreLocation, home: Home, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        self.location = location
        database = try Database.open(location)
        self.home = home
        self.now = now
    }

    private static let columns = """
        id, job, trigger, rerun_of, who, idempotency_key, model, model_sha256, inputs, rows_read, rows_scored,
        rows_rejected, bytes_total, bytes_done, status, queued_at, started_at, finished_at, error, scheduled_for, note,
        CASE WHEN spec IS NULL THEN 0 ELSE 1 END
        """

    /// Queues a run. With an idempotency key already used by this job, returns
    /// that run instead (`existed` true) and queues nothing.
    public func enqueue(
        job: String, trigger: Trigger, who: String, rerunOf: Int? = nil, idempotencyKey: String? = nil,
        model: String? = nil, scheduledFor: Double? = nil, note: String? = nil
    ) throws(RegistryError) -> (run: Run, existed: Bool) {
        try database.transaction { () throws(RegistryError) in
            if let idempotencyKey, let existing = try database.query(
                "SELECT \(Self.columns) FROM batch_runs WHERE job = ? AND idempotency_key = ?", [.text(job), .text(idempotencyKey)]
            ).first {
                return (Self.decode(existing), true)
            }
            let inserted = try database.query(
                """
                INSERT INTO batch_runs (job, trigger, rerun_of, who, idempotency_key, model, status, queued_at, scheduled_for, note)
                VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id
                """,
                [.text(job), .text(trigger.rawValue), rerunOf.map { .integer(Int64($0)) } ?? .null, .text(who),
                 idempotencyKey.map(Database.Value.text) ?? .null, model.map(Database.Value.text) ?? .null,
                 .text(isoTimestamp(now())), scheduledFor.map(Database.Value.real) ?? .null, note.map(Database.Value.text) ?? .null])
            let id = Int(inserted.first?.first?.integer ?? 0)
            guard let run = try run(id) else { throw RegistryError("run \(id) vanished after it was queued") }
            return (run, false)
        }
    }

    /// Adds a line to a run's note (what a run left for later, say).
    public func appendNote(_ id: Int, _ text: String) throws(RegistryError) {
        try database.query(
            "UPDATE batch_runs SET note = CASE WHEN note IS NULL OR note = '' THEN ? ELSE note || '; ' || ? END WHERE id = ?",
            [.text(text), .text(text), .integer(Int64(id))])
    }

    /// Marks this job's `running` runs `interrupted` (their process is gone); returns their ids.
    /// Call it only while holding the job's `JobLock`: then no live process runs the job.
    public func markInterrupted(job: String) throws(RegistryError) -> [Int] {
        try database.transaction { () throws(RegistryError) in
            let ids = try database.query("SELECT id FROM batch_runs WHERE job = ? AND status = 'running' ORDER BY id", [.text(job)])
                .compactMap { $0.first?.integer.map(Int.init) }
            try database.query(
                """
                UPDATE batch_runs SET status = 'interrupted', finished_at = ?,
                    error = 'the process running it stopped before it finished (killed or crashed); rerun it'
                WHERE job = ? AND status = 'running'
                """,
                [.text(isoTimestamp(now())), .text(job)])
            return ids
        }
    }

    /// The oldest queued run of `job`.
    public func nextQueued(job: String) throws(RegistryError) -> Run? {
        try database.query(
            "SELECT \(Self.columns) FROM batch_runs WHERE job = ? AND status = 'queued' ORDER BY id LIMIT 1", [.text(job)]
        ).first.map(Self.decode)
    }

    /// Moves a queued run to `running`; false if it is no longer queued (cancelled meanwhile).
    public func start(_ id: Int, model: String, modelSHA256: String, bytesTotal: Int64) throws(RegistryError) -> Bool {
        try database.transaction { () throws(RegistryError) in
            guard try database.query("SELECT status FROM batch_runs WHERE id = ?", [.integer(Int64(id))]).first?.first?.text == "queued" else {
                return false
            }
            try database.query(
                "UPDATE batch_runs SET status = 'running', started_at = ?, model = ?, model_sha256 = ?, bytes_total = ? WHERE id = ?",
                [.text(isoTimestamp(now())), .text(model), .text(modelSHA256), .integer(bytesTotal), .integer(Int64(id))])
            return true
        }
    }

    /// Records progress of a running run.
    public func progress(_ id: Int, rowsRead: Int, rowsScored: Int, rowsRejected: Int, bytesDone: Int64, inputs: [Input]) throws(RegistryError) {
        try database.query(
            "UPDATE batch_runs SET rows_read = ?, rows_scored = ?, rows_rejected = ?, bytes_done = ?, inputs = ? WHERE id = ? AND status = 'running'",
            [.integer(Int64(rowsRead)), .integer(Int64(rowsScored)), .integer(Int64(rowsRejected)), .integer(bytesDone),
             .text(Self.encode(inputs)), .integer(Int64(id))])
    }

    /// Ends a run with its final counts.
    public func finish(
        _ id: Int, status: Status, rowsRead: Int, rowsScored: Int, rowsRejected: Int, bytesDone: Int64, inputs: [Input], error: String?
    ) throws(RegistryError) {
        precondition(status.isFinished)
        try database.query(
            """
            UPDATE batch_runs SET status = ?, finished_at = ?, rows_read = ?, rows_scored = ?, rows_rejected = ?, bytes_done = ?,
                inputs = ?, error = ? WHERE id = ?
            """,
            [.text(status.rawValue), .text(isoTimestamp(now())), .integer(Int64(rowsRead)), .integer(Int64(rowsScored)),
             .integer(Int64(rowsRejected)), .integer(bytesDone), .text(Self.encode(inputs)), error.map(Database.Value.text) ?? .null,
             .integer(Int64(id))])
    }

    /// Cancels a queued run at once; returns false if it is not queued.
    public func cancelQueued(_ id: Int, who: String) throws(RegistryError) -> Bool {
        try database.transaction { () throws(RegistryError) in
            guard try database.query("SELECT status FROM batch_runs WHERE id = ?", [.integer(Int64(id))]).first?.first?.text == "queued" else {
                return false
            }
            try database.query(
                "UPDATE batch_runs SET status = 'cancelled', finished_at = ?, error = ? WHERE id = ?",
                [.text(isoTimestamp(now())), .text("cancelled by \(who) before it started"), .integer(Int64(id))])
            return true
        }
    }

    public func run(_ id: Int) throws(RegistryError) -> Run? {
        try database.query("SELECT \(Self.columns) FROM batch_runs WHERE id = ?", [.integer(Int64(id))]).first.map(Self.decode)
    }

    /// Runs of `job`, newest first, with ids below `before` (a page cursor).
    public func list(job: String, before: Int? = nil, limit: Int = 50) throws(RegistryError) -> [Run] {
        try database.query(
            "SELECT \(Self.columns) FROM batch_runs WHERE job = ? AND id < ? ORDER BY id DESC LIMIT ?",
            [.text(job), .integer(Int64(before ?? Int.max)), .integer(Int64(limit))]
        ).map(Self.decode)
    }

    public func count(job: String, status: Status) throws(RegistryError) -> Int {
        Int(try database.query("SELECT count(*) FROM batch_runs WHERE job = ? AND status = ?", [.text(job), .text(status.rawValue)])
            .first?.first?.integer ?? 0)
    }

    /// The latest schedule slot that has a run (queued or later), as Unix time.
    public func lastScheduledSlot(job: String) throws(RegistryError) -> Double? {
        try database.query("SELECT max(scheduled_for) FROM batch_runs WHERE job = ?", [.text(job)]).first?.first?.real
    }

    // MARK: - Encoding

    private static func encode(_ inputs: [Input]) -> String {
        JSONWriter.text(.array(inputs.map {
            .object(JSONObject(["name": .string($0.name), "size": .number(Double($0.size)), "sha256": .string($0.sha256)]))
        }))
    }

    private static func decode(_ row: [Database.Value]) -> Run {
        func int(_ i: Int) -> Int { Int(row[i].integer ?? 0) }
        var inputs: [Input] = []
        if let text = row[8].text, case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) {
            inputs = items.compactMap { item in
                guard case .string(let name)? = item["name"], case .number(let size)? = item["size"],
                      case .string(let sha)? = item["sha256"] else { return nil }
                return Input(name: name, size: Int64(size), sha256: sha)
            }
        }
        return Run(
            id: int(0), job: row[1].text ?? "", trigger: Trigger(rawValue: row[2].text ?? "") ?? .manual,
            rerunOf: row[3].integer.map(Int.init), who: row[4].text ?? "", idempotencyKey: row[5].text, model: row[6].text,
            modelSHA256: row[7].text, inputs: inputs, rowsRead: int(9), rowsScored: int(10), rowsRejected: int(11),
            bytesTotal: row[12].integer ?? 0, bytesDone: row[13].integer ?? 0, status: Status(rawValue: row[14].text ?? "") ?? .failed,
            queuedAt: row[15].text ?? "", startedAt: row[16].text, finishedAt: row[17].text, error: row[18].text,
            scheduledFor: row[19].real, note: row[20].text, isSplit: row[21].integer == 1)
    }
}
