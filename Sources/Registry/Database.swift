import CSQLite
import ControlProtocol
import Foundation

/// One SQLite connection: WAL mode, a busy timeout, foreign keys on, and
/// transactions that take the write lock up front (`BEGIN IMMEDIATE`) so two
/// writers queue instead of failing halfway.
///
/// Safety: SQLite's "multi-thread" mode needs a connection used by one thread
/// at a time; every entry point holds `lock` (recursive, so a transaction's
/// body can run queries), so callers share a `Database` freely.
package final class Database: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = NSRecursiveLock()

    /// How long a writer waits for another process's transaction before giving up.
    package static let busyTimeoutMilliseconds: Int32 = 15_000

    package init(path: String) throws(RegistryError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw RegistryError("cannot open the registry database \(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, Self.busyTimeoutMilliseconds)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
    }

    deinit { sqlite3_close_v2(handle) }

    /// Runs SQL with no results (several statements allowed).
    package func execute(_ sql: String) throws(RegistryError) {
        lock.lock()
        defer { lock.unlock() }
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(error)
            throw RegistryError("database: \(message)")
        }
    }

    /// Runs a query, returning every row as an array of column values.
    @discardableResult
    package func query(_ sql: String, _ arguments: [Value] = []) throws(RegistryError) -> [[Value]] {
        lock.lock()
        defer { lock.unlock() }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw RegistryError("database: \(String(cString: sqlite3_errmsg(handle))) in \(sql)")
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
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else {
                throw RegistryError("database: \(String(cString: sqlite3_errmsg(handle)))")
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

    /// Runs `body` in one write transaction; any error rolls it back.
    package func transaction<T>(_ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        lock.lock()
        defer { lock.unlock() }
        try execute("BEGIN IMMEDIATE")
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

    /// Brings the schema up to `migrations.count`, each step once, recorded in `user_version`.
    package func migrate(_ migrations: [String]) throws(RegistryError) {
        try transaction { () throws(RegistryError) in
            let current = try query("PRAGMA user_version").first?.first?.integer ?? 0
            guard current <= Int64(migrations.count) else {
                throw RegistryError(
                    "the registry was written by a newer switchyard (schema \(current), this one knows \(migrations.count)); upgrade switchyard")
            }
            for step in Int(current)..<migrations.count {
                try execute(migrations[step])
            }
            try execute("PRAGMA user_version = \(migrations.count)")
        }
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
    }
}

// SQLITE_TRANSIENT is a macro (a cast of -1) that Swift cannot import.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

