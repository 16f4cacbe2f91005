import Foundation
import JSON

// The registry service's wire types: what the service, its clients (components, the command
// line, the console) and the stores behind it exchange. Each has one JSON form, written by
// `json` and read back by `init?(json:)`.

/// What a key may do, from least to most; each scope includes those below it.
public enum Scope: String, Sendable, Comparable, CaseIterable {
    case read, predict, operate, admin

    public static func < (a: Scope, b: Scope) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// A registry failure, carrying the HTTP status it means at the service's edge: 404 for what
/// does not exist (the default), 409 for a compare-and-set that lost, 400 for bad input, 503 for
/// an unreachable registry.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var status: Int
    /// The registry could not be reached at all (as opposed to an answer that is an error).
    public var unreachable: Bool

    public init(_ message: String, status: Int = 404, unreachable: Bool = false) {
        self.message = message
        self.status = status
        self.unreachable = unreachable
    }

    public var description: String { message }
}

/// A registered version of a model.
public struct ModelVersion: Sendable, Equatable {
    public var model: String
    public var version: Int
    public var sha256: String
    public var createdAt: String
    public var createdBy: String
    /// Held-out training metrics, from the model's metadata.
    public var metrics: [String: Double]
    /// Aliases that point at this version now.
    public var aliases: [String]

    public var reference: String { "\(model)@\(version)" }

    /// The same artifact of the same version: what a component runs is the same. (`==` also
    /// compares the aliases and metrics, which change without changing what runs.)
    public func isSame(as other: ModelVersion) -> Bool {
        model == other.model && version == other.version && sha256 == other.sha256
    }

    public init(model: String, version: Int, sha256: String, createdAt: String, createdBy: String, metrics: [String: Double], aliases: [String]) {
        self.model = model
        self.version = version
        self.sha256 = sha256
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.metrics = metrics
        self.aliases = aliases
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("model", .string(model))
        o.append("version", .number(Double(version)))
        o.append("reference", .string(reference))
        o.append("sha256", .string(sha256))
        o.append("created_at", .string(createdAt))
        o.append("created_by", .string(createdBy))
        o.append("metrics", .object(metrics.sorted { $0.key < $1.key }.reduce(into: JSONObject()) { $0.append($1.key, .number($1.value)) }))
        o.append("aliases", .array(aliases.map(JSONValue.string)))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard case .string(let model)? = value["model"], let version = wholeNumber(value["version"], from: 1),
              case .string(let sha)? = value["sha256"] else { return nil }
        var metrics: [String: Double] = [:]
        if case .object(let o)? = value["metrics"] {
            for (k, v) in zip(o.keys, o.values) { if case .number(let x) = v { metrics[k] = x } }
        }
        let aliases: [String] = if case .array(let items)? = value["aliases"] { items.compactMap(\.stringValue) } else { [] }
        self.init(model: model, version: version, sha256: sha, createdAt: value["created_at"]?.stringValue ?? "",
                  createdBy: value["created_by"]?.stringValue ?? "", metrics: metrics, aliases: aliases)
    }
}

/// One entry of the audit log.
public struct AuditEntry: Sendable, Equatable {
    public var id: Int
    public var at: String
    /// The actor: `key:ID (NAME)` through the service, the OS user locally.
    public var who: String
    public var action: String
    public var model: String
    public var alias: String?
    public var fromVersion: Int?
    public var toVersion: Int?
    public var detail: String?

    public init(id: Int, at: String, who: String, action: String, model: String, alias: String?, fromVersion: Int?, toVersion: Int?, detail: String?) {
        self.id = id
        self.at = at
        self.who = who
        self.action = action
        self.model = model
        self.alias = alias
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.detail = detail
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("id", .number(Double(id)))
        o.append("at", .string(at))
        o.append("who", .string(who))
        o.append("action", .string(action))
        o.append("model", .string(model))
        o.append("alias", alias.map(JSONValue.string) ?? .null)
        o.append("from", fromVersion.map { .number(Double($0)) } ?? .null)
        o.append("to", toVersion.map { .number(Double($0)) } ?? .null)
        o.append("detail", detail.map(JSONValue.string) ?? .null)
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let id = wholeNumber(value["id"], from: 0), let model = value["model"]?.stringValue else { return nil }
        self.init(id: id, at: value["at"]?.stringValue ?? "", who: value["who"]?.stringValue ?? "", action: value["action"]?.stringValue ?? "",
                  model: model, alias: value["alias"]?.stringValue, fromVersion: wholeNumber(value["from"], from: 0),
                  toVersion: wholeNumber(value["to"], from: 0), detail: value["detail"]?.stringValue)
    }
}

/// What an alias must point at for a move to go ahead (compare-and-set).
public enum AliasExpectation: Sendable, Equatable {
    /// The alias does not exist yet.
    case absent
    case version(Int)
}

/// A component in the fleet directory.
public struct FleetMember: Sendable, Equatable {
    public var id: String
    public var kind: String
    public var url: String
    public var pid: Int
    public var host: String
    public var model: String?
    public var startedAt: String
    /// Unix seconds of the last heartbeat.
    public var heartbeat: Double

    public init(id: String, kind: String, url: String, pid: Int, host: String, model: String?, startedAt: String, heartbeat: Double) {
        self.id = id
        self.kind = kind
        self.url = url
        self.pid = pid
        self.host = host
        self.model = model
        self.startedAt = startedAt
        self.heartbeat = heartbeat
    }

    /// A member is `gone` once silent this long.
    public static let goneAfter: Double = 15

    /// `live` or `gone` (silent for `goneAfter` seconds) rather than vanishing. A heartbeat sends
    /// the same object; the service keeps its own time of arrival.
    public func json(now: Double) -> JSONValue {
        var o = JSONObject()
        o.append("id", .string(id))
        o.append("kind", .string(kind))
        o.append("url", .string(url))
        o.append("pid", .number(Double(pid)))
        o.append("host", .string(host))
        o.append("model", model.map(JSONValue.string) ?? .null)
        o.append("started_at", .string(startedAt))
        o.append("last_seen", .string(isoTimestamp(Date(timeIntervalSince1970: heartbeat))))
        o.append("state", .string(now - heartbeat > Self.goneAfter ? "gone" : "live"))
        return .object(o)
    }

    public init?(json item: JSONValue) {
        guard let id = item["id"]?.stringValue, let url = item["url"]?.stringValue,
              let seen = item["last_seen"]?.stringValue.flatMap(parseTimestamp) else { return nil }
        self.init(id: id, kind: item["kind"]?.stringValue ?? "", url: url, pid: wholeNumber(item["pid"], from: 0) ?? 0,
                  host: item["host"]?.stringValue ?? "", model: item["model"]?.stringValue, startedAt: item["started_at"]?.stringValue ?? "",
                  heartbeat: seen)
    }
}

/// An API key as listed (never its secret).
public struct APIKey: Sendable, Equatable {
    public var id: String
    public var scope: Scope
    public var name: String?
    public var createdAt: String
    public var createdBy: String
    public var revoked: Bool

    public init(id: String, scope: Scope, name: String?, createdAt: String, createdBy: String, revoked: Bool) {
        self.id = id
        self.scope = scope
        self.name = name
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.revoked = revoked
    }

    public var json: JSONValue {
        .object(JSONObject([
            "id": .string(id), "scope": .string(scope.rawValue), "name": name.map(JSONValue.string) ?? .null,
            "created_at": .string(createdAt), "created_by": .string(createdBy), "revoked": .bool(revoked),
        ]))
    }

    public init?(json item: JSONValue) {
        guard let id = item["id"]?.stringValue, let scope = item["scope"]?.stringValue.flatMap(Scope.init(rawValue:)) else { return nil }
        self.init(id: id, scope: scope, name: item["name"]?.stringValue, createdAt: item["created_at"]?.stringValue ?? "",
                  createdBy: item["created_by"]?.stringValue ?? "", revoked: item["revoked"] == .bool(true))
    }
}

/// Who a key is, as the service sees it (`GET /v1/whoami`); all nil for no key.
public struct KeyIdentity: Sendable, Equatable {
    public var id: String?
    public var name: String?
    public var scope: Scope?

    public init(id: String?, name: String?, scope: Scope?) {
        self.id = id
        self.name = name
        self.scope = scope
    }
}

/// The active keys by the sha256 of the key: what components check requests against.
public typealias KeyTable = [String: (id: String, scope: Scope)]

/// The key table as the service sends it and clients cache it.
public func keyTableJSON(_ keys: KeyTable) -> JSONValue {
    .array(keys.sorted { $0.key < $1.key }.map {
        .object(JSONObject(["sha256": .string($0.key), "id": .string($0.value.id), "scope": .string($0.value.scope.rawValue)]))
    })
}

/// The inverse of `keyTableJSON`; entries that do not decode are left out.
public func decodeKeyTable(_ value: JSONValue?) -> KeyTable {
    guard case .array(let items)? = value else { return [:] }
    var keys: KeyTable = [:]
    for item in items {
        guard let sha = item["sha256"]?.stringValue, let id = item["id"]?.stringValue,
              let scope = item["scope"]?.stringValue.flatMap(Scope.init(rawValue:)) else { continue }
        keys[sha] = (id, scope)
    }
    return keys
}

/// A whole number in `from ..< 10^15`, or nil.
func wholeNumber(_ value: JSONValue?, from low: Int) -> Int? {
    guard case .number(let n)? = value, n.isFinite, n == n.rounded(), n >= Double(low), n < 1e15 else { return nil }
    return Int(n)
}

/// RFC 3339 with milliseconds, UTC (`2026-11-29T22:10:49.123Z`): the one timestamp form of the
/// wire and the stores. Written by arithmetic, not a date formatter: the console and the registry
/// write and read thousands a second, and a formatter costs tens of microseconds to make.
public func isoTimestamp(_ date: Date) -> String {
    let milliseconds = (date.timeIntervalSince1970 * 1000).rounded()
    // Years 1 to 9999; anything else (and NaN) is written as the nearest end of that range.
    let total = Int64(min(max(milliseconds.isNaN ? 0 : milliseconds, -62_135_596_800_000), 253_402_300_799_999))
    let days = total >= 0 ? total / 86_400_000 : (total - 86_399_999) / 86_400_000
    let rest = total - days * 86_400_000
    let (year, month, day) = civil(days: days)
    func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
    let ms = rest % 1000
    return "\(String(repeating: "0", count: max(0, 4 - String(year).count)))\(year)-\(two(month))-\(two(day))T"
        + "\(two(rest / 3_600_000)):\(two(rest / 60_000 % 60)):\(two(rest / 1000 % 60))."
        + (ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)") + "Z"
}

/// The inverse of `isoTimestamp` (Unix seconds): `YYYY-MM-DDTHH:MM:SS`, an optional fraction,
/// then `Z` or `±HH:MM`. Nil for anything else, including a day the month does not have.
public func parseTimestamp(_ text: String) -> Double? {
    let b = Array(text.utf8)
    guard b.count >= 20, b.count <= 64 else { return nil }
    func digits(_ at: Int, _ count: Int) -> Int64? {
        var n: Int64 = 0
        for i in at..<(at + count) {
            guard i < b.count, b[i] >= 0x30, b[i] <= 0x39 else { return nil }
            n = n * 10 + Int64(b[i] - 0x30)
        }
        return n
    }
    guard let year = digits(0, 4), b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D, let day = digits(8, 2),
          b[10] == 0x54 || b[10] == 0x74, let hour = digits(11, 2), b[13] == 0x3A, let minute = digits(14, 2), b[16] == 0x3A,
          let second = digits(17, 2), year >= 1, (1...12).contains(month), hour < 24, minute < 60, second < 60 else { return nil }
    let monthDays: [Int64] = [31, year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    guard day >= 1, day <= monthDays[Int(month) - 1] else { return nil }
    var i = 19
    var fraction = 0.0
    if b[i] == 0x2E {
        i += 1
        var scale = 0.1
        let start = i
        while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
            fraction += Double(b[i] - 0x30) * scale
            scale /= 10
            i += 1
        }
        guard i > start else { return nil }
    }
    var offset: Int64 = 0
    if i == b.count - 1, b[i] == 0x5A || b[i] == 0x7A {
        offset = 0
    } else if i == b.count - 6, b[i] == 0x2B || b[i] == 0x2D, let h = digits(i + 1, 2), b[i + 3] == 0x3A, let m = digits(i + 4, 2), h < 24, m < 60 {
        offset = (h * 60 + m) * 60 * (b[i] == 0x2B ? 1 : -1)
    } else {
        return nil
    }
    let seconds = daysFromCivil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset
    return Double(seconds) + fraction
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's civil_from_days).
private func civil(days: Int64) -> (Int64, Int64, Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's days_from_civil).
private func daysFromCivil(_ year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
}
