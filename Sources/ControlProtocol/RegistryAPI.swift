import Foundation
import HTTP
import JSON
import Scoring

/// The registry service's one client: every route of `switchyard registry`, typed. Used by
/// components (through `RegistryClient`, which adds the artifact cache and the health record),
/// by the command line and by the console. Stateless: one short connection per call, so it can
/// be shared between threads.
///
/// Every failure is a `RegistryError`: the service's own error and status, `unreachable` with
/// 503 when no answer came, 502 when the answer is not what the route promises.
public final class RegistryAPI: Sendable {
    /// `http://HOST:PORT`, as normalised from what was given.
    public let url: String
    public let host: String
    public let port: Int
    private let key: String?
    private let timeout: Double

    /// `url` is `http://HOST[:PORT]` (port 8079 when left out).
    public init(url: String, key: String?, timeout: Double = 5) throws(RegistryError) {
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host, !host.isEmpty else {
            throw RegistryError("--registry expects http://HOST:PORT, got \"\(url)\"", status: 400)
        }
        port = components.port ?? 8079
        self.host = host
        self.url = "http://\(host):\(port)"
        self.key = key
        self.timeout = timeout
    }

    // MARK: - Requests

    /// One request. `timeout` overrides the client's (a long poll waits longer).
    public func call(_ method: String, _ path: String, body: [UInt8] = [], headers: [(String, String)] = [], timeout: Double? = nil) throws(RegistryError) -> HTTPClient.Response {
        var all = headers + [("Content-Type", "application/json")]
        if let key { all.append(("Authorization", "Bearer \(key)")) }
        let client = HTTPClient(host: host, port: port, timeout: timeout ?? self.timeout)
        defer { client.close() }
        let response: HTTPClient.Response
        do {
            response = try client.request(method, path, headers: all, body: body)
        } catch {
            throw RegistryError("registry \(url) unreachable: \(error)", status: 503, unreachable: true)
        }
        guard response.status < 400 else {
            let message = (try? JSONValue.parse(response.body))?["error"]?.stringValue ?? response.text
            throw RegistryError(message, status: response.status)
        }
        return response
    }

    public func callJSON(_ method: String, _ path: String, body: [UInt8] = [], timeout: Double? = nil) throws(RegistryError) -> JSONValue {
        let response = try call(method, path, body: body, timeout: timeout)
        do { return try JSONValue.parse(response.body) } catch { throw malformed(path, "something that is not JSON") }
    }

    private func malformed(_ path: String, _ what: String) -> RegistryError {
        RegistryError("registry \(url) answered \(path) with \(what)", status: 502)
    }

    public static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~@"))) ?? text
    }

    private static func body(_ value: JSONValue) -> [UInt8] { Array(JSONWriter.text(value).utf8) }

    // MARK: - Models

    /// Every version (of `model`, or of all models), oldest first per model.
    public func versions(model: String? = nil) throws(RegistryError) -> [ModelVersion] {
        let value = try callJSON("GET", model.map { "/v1/models/\(Self.escape($0))" } ?? "/v1/models")
        guard case .array(let items)? = value["versions"] else { return [] }
        return items.compactMap(ModelVersion.init(json:))
    }

    public func aliases(model: String) throws(RegistryError) -> [(alias: String, version: Int)] {
        let value = try callJSON("GET", "/v1/models/\(Self.escape(model))")
        guard case .object(let o)? = value["aliases"] else { return [] }
        return zip(o.keys, o.values).compactMap { name, v in wholeNumber(v, from: 1).map { (name, $0) } }.sorted { $0.0 < $1.0 }
    }

    /// The version a reference (`NAME`, `NAME@VERSION`, `NAME@ALIAS`) points at, the alias's
    /// traffic split when it has one, and the alias revision it was read at.
    public func resolve(_ reference: String) throws(RegistryError) -> (version: ModelVersion, route: AliasRoute?, revision: Int) {
        let path = "/v1/resolve?ref=\(Self.escape(reference))"
        let value = try callJSON("GET", path)
        guard let version = ModelVersion(json: value) else { throw malformed(path, "a version it could not describe") }
        var route: AliasRoute?
        if let r = value["route"], r != .null {
            do { route = try AliasRoute(json: r) } catch { throw malformed(path, "a route it could not read (\(error))") }
        }
        return (version, route, wholeNumber(value["revision"], from: 0) ?? -1)
    }

    /// An artifact's bytes, checked against the sha256 that names it.
    public func artifact(_ sha256: String) throws(RegistryError) -> [UInt8] {
        let response = try call("GET", "/v1/artifacts/\(sha256)")
        guard SHA256.hex(response.body) == sha256 else {
            throw RegistryError("the artifact \(sha256) from \(url) does not match its sha256", status: 502)
        }
        return response.body
    }

    /// Uploads a model document's bytes as the next version of its model (the service checks
    /// the sha256 sent with it); `existed` when the same bytes were registered before.
    public func register(_ document: [UInt8]) throws(RegistryError) -> (version: ModelVersion, existed: Bool) {
        let response = try call("POST", "/v1/models", body: document, headers: [("x-content-sha256", SHA256.hex(document))])
        guard let value = try? JSONValue.parse(response.body), let version = value["version"].flatMap(ModelVersion.init(json:)) else {
            throw malformed("/v1/models", "a registration it could not describe")
        }
        return (version, value["existed"] == .bool(true))
    }

    // MARK: - Aliases

    /// What `GET /v1/aliases` answers.
    public struct AliasListing: Sendable {
        public var revision: Int
        /// False when the revision is still the one asked `after` (and `aliases` is empty).
        public var changed: Bool
        public var aliases: [(model: String, alias: String, version: Int)]
    }

    /// Every alias and the revision. With `after`, only whether the revision moved past it; with
    /// `wait` too, the service holds the request up to `wait` seconds for a move (a long poll).
    public func aliases(after: Int? = nil, wait: Int = 0) throws(RegistryError) -> AliasListing {
        var path = "/v1/aliases"
        if let after { path += "?after=\(after)" + (wait > 0 ? "&wait=\(wait)" : "") }
        let value = try callJSON("GET", path, timeout: Double(wait) + timeout)
        guard let revision = wholeNumber(value["revision"], from: 0) else { throw malformed(path, "no revision") }
        var aliases: [(model: String, alias: String, version: Int)] = []
        if case .array(let items)? = value["aliases"] {
            for item in items {
                guard let model = item["model"]?.stringValue, let alias = item["alias"]?.stringValue, let version = wholeNumber(item["version"], from: 1) else { continue }
                aliases.append((model, alias, version))
            }
        }
        return AliasListing(revision: revision, changed: value["changed"] != .bool(false), aliases: aliases)
    }

    /// Moves `alias`; with `expected`, only if it points there now (409 otherwise). The service
    /// audits the move under this client's key. Returns where the alias pointed before.
    public func promote(model: String, version: Int, alias: String, expected: AliasExpectation?) throws(RegistryError) -> Int? {
        var o = JSONObject()
        o.append("version", .number(Double(version)))
        switch expected {
        case nil: break
        case .absent?: o.append("expected", .null)
        case .version(let v)?: o.append("expected", .number(Double(v)))
        }
        let value = try callJSON("POST", "/v1/aliases/\(Self.escape(model))/\(Self.escape(alias))", body: Self.body(.object(o)))
        return wholeNumber(value["from"], from: 1)
    }

    /// Splits `alias` over the route's versions (a route of one version ends a split). The service
    /// audits it under this client's key. Returns where the alias pointed before.
    public func setRoute(model: String, alias: String, route: AliasRoute) throws(RegistryError) -> Int? {
        let value = try callJSON("POST", "/v1/aliases/\(Self.escape(model))/\(Self.escape(alias))/route", body: Self.body(route.json))
        return wholeNumber(value["from"], from: 1)
    }

    /// A version's drift baseline as JSON; nil when it has none (404).
    public func baseline(model: String, version: Int) throws(RegistryError) -> JSONValue? {
        do {
            return try callJSON("GET", "/v1/models/\(Self.escape(model))/versions/\(version)/baseline")
        } catch where error.status == 404 && !error.unreachable && error.message.contains("no drift baseline") {
            return nil
        }
    }

    /// Stores a version's drift baseline (its JSON form).
    public func setBaseline(model: String, version: Int, baseline: JSONValue) throws(RegistryError) {
        _ = try callJSON("POST", "/v1/models/\(Self.escape(model))/versions/\(version)/baseline", body: Self.body(baseline))
    }

    /// Points `alias` back where it was before its last move.
    public func rollback(model: String, alias: String) throws(RegistryError) -> (from: Int, to: Int) {
        let path = "/v1/aliases/\(Self.escape(model))/\(Self.escape(alias))/rollback"
        let value = try callJSON("POST", path)
        guard let from = wholeNumber(value["from"], from: 1), let to = wholeNumber(value["to"], from: 1) else {
            throw malformed(path, "a rollback without from and to")
        }
        return (from, to)
    }

    /// Audit entries (of `model`), oldest first, after the entry id `after`.
    public func audit(model: String? = nil, after: Int? = nil, limit: Int = 100) throws(RegistryError) -> [AuditEntry] {
        var query = ["limit=\(min(max(limit, 1), 1000))"]
        if let model { query.append("model=\(Self.escape(model))") }
        if let after { query.append("after=\(after)") }
        let value = try callJSON("GET", "/v1/audit?" + query.joined(separator: "&"))
        guard case .array(let items)? = value["entries"] else { return [] }
        return items.compactMap(AuditEntry.init(json:))
    }

    // MARK: - Keys

    /// The key's id, name and scope, as the service sees it.
    public func whoami() throws(RegistryError) -> KeyIdentity {
        let value = try callJSON("GET", "/v1/whoami")
        return KeyIdentity(id: value["id"]?.stringValue, name: value["name"]?.stringValue,
                           scope: value["scope"]?.stringValue.flatMap(Scope.init(rawValue:)))
    }

    /// The hashed key table (scope operate), for components that check keys themselves.
    public func activeKeys() throws(RegistryError) -> KeyTable {
        decodeKeyTable(try callJSON("GET", "/v1/keys/active")["keys"])
    }

    /// A new key (scope admin); the secret is in the answer only.
    public func createKey(scope: Scope, name: String?) throws(RegistryError) -> (key: APIKey, secret: String) {
        var o = JSONObject()
        o.append("scope", .string(scope.rawValue))
        if let name { o.append("name", .string(name)) }
        let value = try callJSON("POST", "/v1/keys", body: Self.body(.object(o)))
        guard let id = value["id"]?.stringValue, let secret = value["key"]?.stringValue else { throw malformed("/v1/keys", "a new key without its id and key") }
        return (APIKey(id: id, scope: scope, name: name, createdAt: isoTimestamp(Date()), createdBy: "", revoked: false), secret)
    }

    public func keys() throws(RegistryError) -> [APIKey] {
        let value = try callJSON("GET", "/v1/keys")
        guard case .array(let items)? = value["keys"] else { return [] }
        return items.compactMap(APIKey.init(json:))
    }

    public func revokeKey(id: String) throws(RegistryError) {
        _ = try call("POST", "/v1/keys/\(Self.escape(id))/revoke")
    }

    // MARK: - Fleet

    /// Every member the service knows, live and gone.
    public func fleet() throws(RegistryError) -> [FleetMember] {
        let value = try callJSON("GET", "/v1/fleet")
        guard case .array(let items)? = value["members"] else { return [] }
        return items.compactMap(FleetMember.init(json:))
    }

    public func heartbeat(_ member: FleetMember) throws(RegistryError) {
        _ = try call("POST", "/v1/fleet", body: Self.body(member.json(now: member.heartbeat)))
    }

    public func removeMember(id: String) throws(RegistryError) {
        _ = try call("DELETE", "/v1/fleet/\(Self.escape(id))")
    }
}
