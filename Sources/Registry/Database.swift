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
    private let postgres: PostgresConnection?
    private let lock = NSRecursiveLock()
    private var transactionDepth = 0
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
            return result
        } catch {
            try? execute("ROLLBACK")
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

    /// A connection of its own to the same PostgreSQL database that hears `channel` (nil for
    /// SQLite: one machine, whose readers look at the tables instead).
    package func listen(_ channel: String) throws(RegistryError) -> StoreListener? {
        guard let postgres else { return nil }
        let connection = try PostgresConnection(url: postgres.url, timeout: 2)
        try connection.listen(channel)
        return StoreListener(connection: connection)
    }

    /// Tells every process listening on `channel` of `payload` when this transaction commits (at
    /// once outside one); nothing on SQLite.
    package func notify(_ channel: String, payload: String) throws(RegistryError) {
        guard dialect == .postgres else { return }
        try query("SELECT pg_notify(?, ?)", [.text(channel), .text(payload)])
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

/// What other processes on the same PostgreSQL database announce at their commits on one channel
/// (`Database.notify`), heard on a connection of its own.
public final class StoreListener: Sendable {
    let connection: PostgresConnection
    init(connection: PostgresConnection) { self.connection = connection }

    /// The next announcement's payload, waiting up to `timeout` seconds; nil when none came.
    public func next(timeout: Double) throws(RegistryError) -> String? {
        try connection.nextNotification(timeout: timeout)?.payload
    }
}

// SQLITE_TRANSIENT is a macro (a cast of -1) that Swift cannot import.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
