import CPostgres
import ControlProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One connection to PostgreSQL through libpq, the ground the PostgreSQL registry store stands on
/// (issue 21): parameterized queries with the same `Database.Value`s as the SQLite store (text
/// parameters, `$1`… placeholders; results typed by column type), transactions, and LISTEN/NOTIFY
/// with a bounded wait. A lost server is an error that says so, and `reconnect()` brings the
/// connection back once the server is up again (the caller decides when: with backoff).
///
/// Safety: libpq connections are not thread-safe; every entry point holds `lock`.
package final class PostgresConnection: @unchecked Sendable {
    private var handle: OpaquePointer?
    private let lock = NSRecursiveLock()
    /// `postgres://user@host:port/db` (or a libpq key=value string), as given.
    package let url: String

    /// Connects to `url`; `timeout` bounds the connection attempt (libpq's connect_timeout, ≥ 2 s).
    package init(url: String, timeout: Int = 5) throws(RegistryError) {
        self.url = url
        try connect(timeout: timeout)
    }

    deinit { if let handle { PQfinish(handle) } }

    private func connect(timeout: Int) throws(RegistryError) {
        if let handle { PQfinish(handle) }
        handle = nil
        // The URL's own parameters, then a bounded connect timeout (a later keyword wins in libpq).
        let separator = url.contains("?") ? "&" : "?"
        let info = StoreLocation.isPostgres(url)
            ? url + separator + "connect_timeout=\(max(2, timeout))" : url + " connect_timeout=\(max(2, timeout))"
        guard let connection = PQconnectdb(info) else { throw RegistryError("PostgreSQL: out of memory connecting to \(redacted)") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.message(connection)
            PQfinish(connection)
            throw RegistryError("cannot connect to PostgreSQL at \(redacted): \(message)")
        }
        // Server notices (a WARNING as the server shuts down, say) are not the caller's errors;
        // libpq would print them on stderr.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        handle = connection
    }

    /// The URL without a password, for messages.
    package var redacted: String { Self.redact(url) }

    /// `url` without its password.
    package static func redact(_ url: String) -> String {
        guard let at = url.range(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at.lowerBound else { return url }
        let user = url[scheme.upperBound..<at.lowerBound].split(separator: ":", maxSplits: 1).first ?? ""
        return String(url[..<scheme.upperBound]) + user + String(url[at.lowerBound...])
    }

    private static func message(_ connection: OpaquePointer?) -> String {
        guard let connection, let text = PQerrorMessage(connection) else { return "unknown error" }
        return String(cString: text).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the server connection is up, as libpq last saw it.
    package var isConnected: Bool {
        lock.lock()
        defer { lock.unlock() }
        return handle.map { PQstatus($0) == CONNECTION_OK } ?? false
    }

    /// Connects again (after the server went away and came back).
    package func reconnect(timeout: Int = 5) throws(RegistryError) {
        lock.lock()
        defer { lock.unlock() }
        try connect(timeout: timeout)
    }

    /// Runs SQL with no parameters and no results (several statements allowed).
    package func execute(_ sql: String) throws(RegistryError) {
        lock.lock()
        defer { lock.unlock() }
        guard let handle else { throw RegistryError("PostgreSQL at \(redacted): not connected") }
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result, sql)
    }

    /// Runs one statement with `$1`… parameters, returning every row (integers, floats, text, null
    /// by the column's type).
    @discardableResult
    package func query(_ sql: String, _ arguments: [Database.Value] = []) throws(RegistryError) -> [[Database.Value]] {
        lock.lock()
        defer { lock.unlock() }
        guard let handle else { throw RegistryError("PostgreSQL at \(redacted): not connected") }
        // Every parameter goes as text (its type inferred by the server), null as a null pointer.
        let texts: [String?] = arguments.map {
            switch $0 {
            case .null: nil
            case .integer(let v): String(v)
            case .real(let v): v.isFinite ? "\(v)" : (v.isNaN ? "NaN" : (v > 0 ? "Infinity" : "-Infinity"))
            case .text(let v): v
            }
        }
        let result = Self.withCStrings(texts) { values in
            PQexecParams(handle, sql, Int32(values.count), nil, values.baseAddress, nil, nil, 0)
        }
        defer { PQclear(result) }
        try check(result, sql)
        guard let result, PQresultStatus(result) == PGRES_TUPLES_OK else { return [] }
        let rows = Int(PQntuples(result)), columns = Int(PQnfields(result))
        var out: [[Database.Value]] = []
        out.reserveCapacity(rows)
        for r in 0..<rows {
            var row: [Database.Value] = []
            row.reserveCapacity(columns)
            for c in 0..<columns {
                if PQgetisnull(result, Int32(r), Int32(c)) != 0 {
                    row.append(.null)
                    continue
                }
                let text = String(cString: PQgetvalue(result, Int32(r), Int32(c)))
                switch PQftype(result, Int32(c)) {
                case 20, 21, 23, 26: row.append(Int64(text).map(Database.Value.integer) ?? .text(text))  // int8, int2, int4, oid
                case 700, 701, 1700: row.append(Double(text).map(Database.Value.real) ?? .text(text))  // float4, float8, numeric
                case 16: row.append(.integer(text == "t" ? 1 : 0))  // bool
                default: row.append(.text(text))
                }
            }
            out.append(row)
        }
        return out
    }

    // MARK: - LISTEN / NOTIFY

    /// Subscribes this connection to `channel` (an identifier: letters, digits, underscores).
    package func listen(_ channel: String) throws(RegistryError) {
        try execute("LISTEN \(try Self.identifier(channel))")
    }

    /// The next notification, waiting up to `timeout` seconds for one; nil when none came.
    package func nextNotification(timeout: Double) throws(RegistryError) -> (channel: String, payload: String)? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            lock.lock()
            guard let handle else {
                lock.unlock()
                throw RegistryError("PostgreSQL at \(redacted): not connected")
            }
            guard PQconsumeInput(handle) != 0 else {
                let message = Self.message(handle)
                lock.unlock()
                throw RegistryError("PostgreSQL at \(redacted): \(message)")
            }
            if let notice = PQnotifies(handle) {
                let channel = String(cString: notice.pointee.relname), payload = String(cString: notice.pointee.extra)
                PQfreemem(notice)
                lock.unlock()
                return (channel, payload)
            }
            let socket = PQsocket(handle)
            lock.unlock()
            let left = deadline.timeIntervalSinceNow
            guard left > 0, socket >= 0 else { return nil }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, Int32(min(left, 3600) * 1000) + 1)
        }
    }

    private static func identifier(_ name: String) throws(RegistryError) -> String {
        guard !name.isEmpty, name.count <= 63, name.utf8.allSatisfy({ $0 == 0x5F || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) }),
            !(name.first!.isNumber)
        else { throw RegistryError("\"\(name.prefix(40))\" is not a channel name (letters, digits and _, at most 63)") }
        return name
    }

    // MARK: - Errors

    private func check(_ result: OpaquePointer?, _ sql: String) throws(RegistryError) {
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            let lost = handle.map { PQstatus($0) != CONNECTION_OK } ?? true
            let message = result.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
                ?? Self.message(handle)
            let statement = sql.count > 80 ? String(sql.prefix(80)) + "…" : sql
            throw RegistryError(
                lost ? "lost the PostgreSQL server at \(redacted): \(message.trimmingCharacters(in: .whitespacesAndNewlines))"
                    : "PostgreSQL: \(message.trimmingCharacters(in: .whitespacesAndNewlines)) in \(statement)")
        }
    }

    /// C strings for `values` (nil stays a null pointer) for the duration of `body`.
    private static func withCStrings<R>(_ values: [String?], _ body: (UnsafeBufferPointer<UnsafePointer<CChar>?>) -> R) -> R {
        let copies: [UnsafeMutablePointer<CChar>?] = values.map { $0.map { strdup($0) } }
        defer { for copy in copies { free(copy) } }
        let pointers = copies.map { $0.map { UnsafePointer($0) } }
        return pointers.withUnsafeBufferPointer(body)
    }
}
