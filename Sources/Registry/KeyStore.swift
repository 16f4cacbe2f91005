import ControlProtocol
import Foundation
import Scoring

/// API keys, stored as sha256 hashes: a key is shown once, when it is created.
/// A key reads `sy_<id>_<secret>`; the id names it in logs and audit records.
public final class KeyStore: Sendable {
    private let database: Database

    public typealias Key = APIKey

    public convenience init(home: Home) throws(RegistryError) {
        try self.init(location: .home(home))
    }

    public init(location: StoreLocation) throws(RegistryError) {
        database = try Database.open(location)
    }

    /// Creates a key; returns its record and the key itself (never stored).
    public func create(scope: Scope, name: String?, who: String) throws(RegistryError) -> (Key, String) {
        let id = Self.randomHex(8)
        let secret = Self.randomHex(40)
        let key = "sy_\(id)_\(secret)"
        let at = isoTimestamp(Date())
        try database.query(
            "INSERT INTO api_keys (id, hash, scope, name, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
            [.text(id), .text(Self.hash(key)), .text(scope.rawValue), name.map(Database.Value.text) ?? .null, .text(at), .text(who)])
        return (Key(id: id, scope: scope, name: name, createdAt: at, createdBy: who, revoked: false), key)
    }

    public func list() throws(RegistryError) -> [Key] {
        try database.exclusive { () throws(RegistryError) in
            try database.query("SELECT id, scope, name, created_at, created_by, revoked_at FROM api_keys ORDER BY created_at").map {
                Key(id: $0[0].text ?? "", scope: Scope(rawValue: $0[1].text ?? "") ?? .read, name: $0[2].text,
                    createdAt: $0[3].text ?? "", createdBy: $0[4].text ?? "", revoked: $0[5] != .null)
            }
        }
    }

    public func revoke(id: String) throws(RegistryError) {
        try database.exclusive { () throws(RegistryError) in
            let found = try database.query("SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL", [.text(id)])
            guard !found.isEmpty else { throw RegistryError("no active key with id \(id); see 'switchyard keys list'") }
            try database.query("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [.text(isoTimestamp(Date())), .text(id)])
        }
    }

    /// Active keys by hash, for a component's in-memory check.
    public func activeKeys() throws(RegistryError) -> [String: (id: String, scope: Scope)] {
        try database.exclusive { () throws(RegistryError) in
            var out: [String: (id: String, scope: Scope)] = [:]
            for row in try database.query("SELECT hash, id, scope FROM api_keys WHERE revoked_at IS NULL") {
                if let hash = row[0].text, let id = row[1].text, let scope = Scope(rawValue: row[2].text ?? "") {
                    out[hash] = (id, scope)
                }
            }
            return out
        }
    }

    /// `count` random hex digits from the system's generator, for key ids and secrets.
    package static func randomHex(_ count: Int) -> String {
        var random = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in "0123456789abcdef".randomElement(using: &random)! })
    }

    public static func hash(_ key: String) -> String { SHA256.hex(Array(key.utf8)) }

}

/// The fleet directory: running components record themselves (kind, id, URL,
/// pid, heartbeat) so the console can find them; a record goes when its
/// component stops, and one whose heartbeat is stale is ignored.
public final class FleetDirectory: Sendable {
    private let database: Database

    public typealias Member = FleetMember

    private let now: @Sendable () -> Date
    /// Records of members silent this long are deleted (a dead process never removes its own).
    public static let retention: Double = 24 * 3600

    public convenience init(home: Home, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        try self.init(location: .home(home), now: now)
    }

    public init(location: StoreLocation, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        database = try Database.open(location)
        self.now = now
    }

    /// Deletes the records of members silent for `retention` seconds; returns how many went.
    @discardableResult
    public func expire(retention: Double = FleetDirectory.retention) throws(RegistryError) -> Int {
        let before = Int(try database.query("SELECT count(*) FROM fleet").first?.first?.integer ?? 0)
        try database.query("DELETE FROM fleet WHERE heartbeat_at < ?", [.real(now().timeIntervalSince1970 - retention)])
        return before - Int(try database.query("SELECT count(*) FROM fleet").first?.first?.integer ?? 0)
    }

    /// Records or refreshes a member.
    public func heartbeat(_ member: Member) throws(RegistryError) {
        try database.query(
            """
            INSERT INTO fleet (id, kind, url, pid, host, model, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET url = excluded.url, pid = excluded.pid, model = excluded.model,
                heartbeat_at = excluded.heartbeat_at
            """,
            [.text(member.id), .text(member.kind), .text(member.url), .integer(Int64(member.pid)), .text(member.host),
             member.model.map(Database.Value.text) ?? .null, .text(member.startedAt), .real(member.heartbeat)])
    }

    public func remove(id: String) throws(RegistryError) {
        try database.query("DELETE FROM fleet WHERE id = ?", [.text(id)])
    }

    /// Members whose heartbeat is at most `maxAge` seconds old.
    public func members(maxAge: Double = 15) throws(RegistryError) -> [Member] {
        let cutoff = now().timeIntervalSince1970 - maxAge
        return try database.query(
            "SELECT id, kind, url, pid, host, model, started_at, heartbeat_at FROM fleet WHERE heartbeat_at >= ? ORDER BY kind, id",
            [.real(cutoff)]
        ).map {
            let heartbeat = $0[7].real ?? 0
            return Member(id: $0[0].text ?? "", kind: $0[1].text ?? "", url: $0[2].text ?? "", pid: Int($0[3].integer ?? 0),
                          host: $0[4].text ?? "", model: $0[5].text, startedAt: $0[6].text ?? "", heartbeat: heartbeat)
        }
    }
}
