import CSQLite
import ControlProtocol
import Foundation

/// Where the registry keeps its state: the SQLite file in a SWITCHYARD_HOME (one machine), or a
/// PostgreSQL database that several registry processes, on several machines, share.
public enum StoreLocation: Sendable, CustomStringConvertible {
    case home(Home)
    /// `postgres://USER@HOST:PORT/DB` (or `postgresql://…`).
    case postgres(url: String)

    /// Whether `url` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
    public static func isPostgres(_ url: String) -> Bool { url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") }

    /// `--store`: a PostgreSQL URL, or nothing for the SQLite file in `home`.
    public static func parse(_ store: String?, home: Home) throws(RegistryError) -> StoreLocation {
        guard let store, !store.isEmpty else { return .home(home) }
        guard isPostgres(store) else {
            throw RegistryError("--store takes postgres://USER@HOST:PORT/DB (leave it out for the SQLite file in SWITCHYARD_HOME), not \"\(store.prefix(80))\"", status: 400)
        }
        return .postgres(url: store)
    }

    public var description: String {
        switch self {
        case .home(let home): home.databasePath
        case .postgres(let url): PostgresConnection.redact(url)
        }
    }
}

/// One connection to the registry's database, SQLite or PostgreSQL, with one SQL dialect for the
/// stores above it: `?` placeholders (numbered for PostgreSQL here), `INSERT … ON CONFLICT`,
/// `RETURNING`. Where the engines differ (schema steps, row locks) a store asks `dialect`.
///
/// SQLite: WAL mode, a busy timeout, foreign keys on, and transactions that take the write lock up
/// front (`BEGIN IMMEDIATE`) so two writers queue instead of failing halfway. PostgreSQL: the same
/// one-writer-at-a-time transactions through a transaction-scoped advisory lock, so the audit
/// log's ids follow commit order as they do in SQLite; a lost server is a 503 that names it, and
/// the connection comes back by itself (at most one attempt per backoff step) once the server does.
///
/// Safety: neither SQLite's "multi-thread" mode nor libpq allows a connection on two threads at
/// once; every entry point holds `lock` (recursive, so a transaction's body can run queries), so
/// callers share a `Database` freely.
package final class Database: @unchecked Sendable {
    package enum Dialect: Sendable { case sqlite, postgres }

    package let dialect: Dialect
    private let sqlite: OpaquePointer?
    /// The SQLite file's path.
    private let sqlitePath: String?
    private let postgres: PostgresConnection?
    private let lock = NSRecursiveLock()
    private var transactionDepth = 0
    /// SQLite: the channels this transaction announces when it commits.
    private var announcements: [String] = []
    private var reconnect = (at: 0.0, delay: 0.0)

    /// How long a writer waits for another process's transaction before giving up.
    package static let busyTimeoutMilliseconds: Int32 = 15_000
    /// The advisory lock every PostgreSQL write transaction holds (any constant; ours).
    private static let writeLock = 0x5357_5944  // "SWYD"

    /// Opens (creating it) the SQLite file at `path`.
    package init(path: String) throws(RegistryError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw RegistryError("cannot open the registry database \(path): \(message)")
        }
        dialect = .sqlite
        sqlite = db
        sqlitePath = path
        postgres = nil
        sqlite3_busy_timeout(db, Self.busyTimeoutMilliseconds)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
    }

    /// Connects to the PostgreSQL database at `url`.
    package init(postgres url: String) throws(RegistryError) {
        dialect = .postgres
        sqlite = nil
        sqlitePath = nil
        do {
            postgres = try PostgresConnection(url: url)
        } catch {
            throw RegistryError(error.message, status: 503)
        }
        try execute("SET client_min_messages = warning")
    }

    deinit { if let sqlite { sqlite3_close_v2(sqlite) } }

    /// Runs SQL with no parameters and no results (several statements allowed).
    package func execute(_ sql: String) throws(RegistryError) {
        lock.lock()
        defer { lock.unlock() }
        if let postgres {
            try connected(postgres)
            try retryingOnce(postgres) { () throws(RegistryError) in try postgres.execute(sql) }
            return
        }
        var error: UnsafeMutablePointer<CChar>?
        var rc = sqlite3_exec(sqlite, sql, nil, nil, &error)
        // Some lock waits skip the busy handler (another process opening a new database and
        // switching it to WAL, or recovering one): outside a transaction the statement is tried
        // again, for as long as the busy timeout.
        var waited: Int32 = 0
        while rc & 0xFF == SQLITE_BUSY || rc & 0xFF == SQLITE_LOCKED, transactionDepth == 0, waited < Self.busyTimeoutMilliseconds {
            sqlite3_free(error)
            error = nil
            usleep(20_000)
            waited += 20
            rc = sqlite3_exec(sqlite, sql, nil, nil, &error)
        }
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(sqlite))
            sqlite3_free(error)
            throw RegistryError("database: \(message)")
        }
    }

    /// Runs one statement with `?` parameters, returning every row as an array of column values.
    @discardableResult
    package func query(_ sql: String, _ arguments: [Value] = []) throws(RegistryError) -> [[Value]] {
        lock.lock()
        defer { lock.unlock() }
        if let postgres {
            try connected(postgres)
            let numbered = Self.numberPlaceholders(sql)
            return try retryingOnce(postgres) { () throws(RegistryError) in try postgres.query(numbered, arguments) }
        }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(sqlite, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw RegistryError("database: \(String(cString: sqlite3_errmsg(sqlite))) in \(sql)")
        }
        defer { sqlite3_finalize(statement) }
        for (i, argument) in arguments.enumerated() {
            let index = Int32(i + 1)
            switch argument {
            case .null: sqlite3_bind_null(statement, index)
            case .integer(let v): sqlite3_bind_int64(statement, index, v)
            case .real(let v): sqlite3_bind_double(statement, index, v)
            case .text(let v): sqlite3_bind_text(statement, index, v, -1, sqliteTransient)
            }
        }
        var rows: [[Value]] = []
        var waited: Int32 = 0
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            // As in `execute`: a lock wait that skipped the busy handler, before any row, outside
            // a transaction, is waited out (nothing was done yet).
            if rc & 0xFF == SQLITE_BUSY || rc & 0xFF == SQLITE_LOCKED, rows.isEmpty, transactionDepth == 0, waited < Self.busyTimeoutMilliseconds {
                sqlite3_reset(statement)
                usleep(20_000)
                waited += 20
                continue
            }
            guard rc == SQLITE_ROW else {
                throw RegistryError("database: \(String(cString: sqlite3_errmsg(sqlite)))")
            }
            var row: [Value] = []
            for c in 0..<sqlite3_column_count(statement) {
                switch sqlite3_column_type(statement, c) {
                case SQLITE_INTEGER: row.append(.integer(sqlite3_column_int64(statement, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(statement, c)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(statement, c))))
                default: row.append(.null)
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// Runs `body` in one write transaction (one writer at a time, across processes); any error
    /// rolls it back.
    package func transaction<T>(_ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        lock.lock()
        defer { lock.unlock() }
        switch dialect {
        case .sqlite: try execute("BEGIN IMMEDIATE")
        case .postgres: try execute("BEGIN; SELECT pg_advisory_xact_lock(\(Self.writeLock))")
        }
        transactionDepth += 1
        defer { transactionDepth -= 1 }
        do {
            let result = try body()
            try execute("COMMIT")
            if let sqlitePath {
                for channel in announcements { StoreListener.announce(channel, database: sqlitePath) }
                announcements = []
            }
            return result
        } catch {
            try? execute("ROLLBACK")
            announcements = []
            throw error
        }
    }

    /// Runs several reads with no other thread's statements in between.
    package func exclusive<T>(_ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Brings the schema up to the dialect's step count, each step once, recorded in SQLite's
    /// `user_version` or PostgreSQL's `schema_version` table. Both lists have a step per schema
    /// version, so a version number means the same tables in either engine.
    package func migrate(sqlite: [String], postgres: [String]) throws(RegistryError) {
        precondition(sqlite.count == postgres.count, "a schema step for each engine")
        let steps = dialect == .sqlite ? sqlite : postgres
        try transaction { () throws(RegistryError) in
            let current: Int64
            switch dialect {
            case .sqlite:
                current = try query("PRAGMA user_version").first?.first?.integer ?? 0
            case .postgres:
                try execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                if let found = try query("SELECT version FROM schema_version").first?.first?.integer {
                    current = found
                } else {
                    try query("INSERT INTO schema_version (version) VALUES (0)")
                    current = 0
                }
            }
            guard current <= Int64(steps.count) else {
                throw RegistryError(
                    "the registry was written by a newer switchyard (schema \(current), this one knows \(steps.count)); upgrade switchyard")
            }
            for step in Int(current)..<steps.count {
                try execute(steps[step])
            }
            switch dialect {
            case .sqlite: try execute("PRAGMA user_version = \(steps.count)")
            case .postgres: try query("UPDATE schema_version SET version = ?", [.integer(Int64(steps.count))])
            }
        }
    }

    /// Hears what other processes announce on `channel` (`notify`): on PostgreSQL a connection of
    /// its own that LISTENs; on SQLite (one machine) a watch on the channel's file.
    package func listen(_ channel: String) throws(RegistryError) -> StoreListener {
        guard let postgres else { return try StoreListener(channel: channel, database: sqlitePath!) }
        let connection = try PostgresConnection(url: postgres.url, timeout: 2)
        try connection.listen(channel)
        return StoreListener(connection: connection)
    }

    /// Tells every process listening on `channel` of `payload` when this transaction commits (at
    /// once outside one). PostgreSQL's NOTIFY; on SQLite a write to the channel's file beside the
    /// database after the commit (listeners hear the channel, not the payload), so whoever wakes
    /// reads what was committed.
    package func notify(_ channel: String, payload: String) throws(RegistryError) {
        guard let sqlitePath else {
            try query("SELECT pg_notify(?, ?)", [.text(channel), .text(payload)])
            return
        }
        lock.lock()
        defer { lock.unlock() }
        if transactionDepth > 0 {
            if !announcements.contains(channel) { announcements.append(channel) }
        } else {
            StoreListener.announce(channel, database: sqlitePath)
        }
    }

    // MARK: - PostgreSQL's connection

    /// Reconnects a lost connection, at most once per backoff step (0.25 s doubling to 5 s); a
    /// 503 naming the server otherwise.
    private func connected(_ connection: PostgresConnection) throws(RegistryError) {
        guard !connection.isConnected else { return }
        guard transactionDepth == 0 else {
            throw RegistryError("lost the PostgreSQL server at \(connection.redacted) in a transaction; nothing was changed", status: 503)
        }
        let now = Date().timeIntervalSince1970
        guard now >= reconnect.at else {
            throw RegistryError(
                "PostgreSQL at \(connection.redacted) is unreachable; trying again in \(String(format: "%.1f", reconnect.at - now)) s",
                status: 503)
        }
        do {
            try connection.reconnect(timeout: 2)
            reconnect = (0, 0)
        } catch {
            reconnect.delay = min(5, max(0.25, reconnect.delay * 2))
            reconnect.at = now + reconnect.delay
            throw RegistryError(error.message, status: 503)
        }
    }

    /// Runs `statement`; when it finds the connection gone (the server restarted while this one
    /// was idle) outside a transaction, connects again and runs it once more.
    private func retryingOnce<T>(_ connection: PostgresConnection, _ statement: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        do {
            return try statement()
        } catch {
            guard !connection.isConnected else { throw error }
            guard transactionDepth == 0 else { throw RegistryError(error.message, status: 503) }
            try connected(connection)
            do { return try statement() } catch { throw connection.isConnected ? error : RegistryError(error.message, status: 503) }
        }
    }

    /// `?` placeholders as PostgreSQL's `$1`, `$2`…; a `?` in a quoted literal or identifier stays.
    package static func numberPlaceholders(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 8)
        var n = 0
        var quote: Character?
        for c in sql {
            if let q = quote {
                if c == q { quote = nil }
                out.append(c)
            } else if c == "'" || c == "\"" {
                quote = c
                out.append(c)
            } else if c == "?" {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// A column value.
    package enum Value: Sendable, Equatable {
        case null
        case integer(Int64)
        case real(Double)
        case text(String)

        package var integer: Int64? {
            if case .integer(let v) = self { return v }
            return nil
        }

        package var text: String? {
            if case .text(let v) = self { return v }
            return nil
        }

        /// A number of either kind as a Double.
        package var real: Double? {
            switch self {
            case .real(let v): v
            case .integer(let v): Double(v)
            default: nil
            }
        }
    }
}

/// What other processes on the same database announce at their commits on one channel
/// (`Database.notify`): on PostgreSQL heard on a connection of its own; on SQLite through the
/// channel's file in the `notify` folder beside the database, which an announcement writes after
/// its commit (inotify), so a listener woken by it reads what was committed.
public final class StoreListener: Sendable {
    private enum Source {
        case postgres(PostgresConnection)
        /// An inotify descriptor watching the notify folder, and the channel's file name.
        case file(fd: Int32, channel: String)
    }

    private let source: Source

    init(connection: PostgresConnection) { source = .postgres(connection) }

    init(channel: String, database: String) throws(RegistryError) {
        let folder = Self.folder(database)
        mkdir(folder, 0o755)
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0, inotify_add_watch(fd, folder, UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO)) >= 0 else {
            let reason = String(cString: strerror(errno))
            if fd >= 0 { close(fd) }
            throw RegistryError("cannot watch \(folder) for announcements: \(reason)")
        }
        source = .file(fd: fd, channel: channel)
    }

    deinit {
        if case .file(let fd, _) = source { close(fd) }
    }

    private static func folder(_ database: String) -> String {
        URL(fileURLWithPath: database).deletingLastPathComponent().appendingPathComponent("notify").path
    }

    /// SQLite: wakes `channel`'s listeners (a byte written to its file; best effort, as they
    /// read again on their own at least every second).
    static func announce(_ channel: String, database: String) {
        let folder = folder(database)
        var fd = open(folder + "/" + channel, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 {
            mkdir(folder, 0o755)
            fd = open(folder + "/" + channel, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { return }
        _ = pwrite(fd, "!", 1, 0)
        close(fd)
    }

    /// The next announcement's payload, waiting up to `timeout` seconds; nil when none came.
    /// (On SQLite the payload is empty, and announcements made before the call since the last
    /// one are heard as one.)
    public func next(timeout: Double) throws(RegistryError) -> String? {
        switch source {
        case .postgres(let connection):
            return try connection.nextNotification(timeout: timeout)?.payload
        case .file(let fd, let channel):
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                if Self.drain(fd, channel: channel) { return "" }
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { return nil }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&descriptor, 1, Int32(min(left, 3600) * 1000) + 1)
            }
        }
    }

    /// Reads every queued event; true when one was about `channel`'s file.
    private static func drain(_ fd: Int32, channel: String) -> Bool {
        var heard = false
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 8) { buffer in
            while true {
                let n = read(fd, buffer.baseAddress!, buffer.count)
                guard n > 0 else { return }
                var offset = 0
                while offset + MemoryLayout<inotify_event>.size <= n {
                    let event = (buffer.baseAddress! + offset).loadUnaligned(as: inotify_event.self)
                    let nameStart = offset + MemoryLayout<inotify_event>.size
                    let nameBytes = UnsafeRawBufferPointer(start: buffer.baseAddress! + nameStart, count: max(0, min(Int(event.len), n - nameStart)))
                    if String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self) == channel { heard = true }
                    offset = nameStart + Int(event.len)
                }
            }
        }
        return heard
    }
}

// SQLITE_TRANSIENT is a macro (a cast of -1) that Swift cannot import.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
