import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// The registry service (`switchyard registry`) seen from a component or the command line on
/// another machine: models, artifacts, keys and the fleet over HTTP with a key, nothing shared
/// but the URL.
///
/// What a component runs is cached under its own SWITCHYARD_HOME (`cache/registry/HOST-PORT/`):
/// every artifact it loaded (checked against its sha256), the versions its references resolved to,
/// and the key table. So a component keeps serving — and can restart — while the registry is
/// down; it says so through `health` ("registry … unreachable since …"), and picks changes up
/// again by itself when the registry is back (with backoff between attempts).
package final class RegistryClient: RegistryStore, KeySource, KeyAdministration, FleetRecorder, FleetListing, Sendable {
    package let url: String
    private let host: String
    private let port: Int
    private let key: String?
    private let cache: URL
    package let health: DependencyHealth
    private let state = Mutex<State>(State())
    /// How often an alias is re-checked (one small request answers "nothing changed").
    private let recheck: Double
    /// How long the registry holds a follower's alias request when nothing changes.
    private let longPoll: Double
    private let following = Atomic<Bool>(false)

    private struct State {
        /// Reference → the version it resolved to last, and the alias revision it was read at.
        var resolved: [String: ModelRegistry.Version] = [:]
        var resolvedAt: [String: Int] = [:]
        /// The latest alias revision seen.
        var revision = -1
        var checkedAt = 0.0
        var keys: [String: (id: String, scope: Scope)] = [:]
        /// No request before this time while the registry is down (backoff).
        var retryAt = 0.0
    }

    /// `url` is `http://HOST:PORT`; `home` holds the cache.
    package init(url: String, key: String?, home: Home, events: EventLog, recheck: Double = 0.25, longPoll: Double = 25) throws(RegistryError) {
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host, !host.isEmpty else {
            throw RegistryError("--registry expects http://HOST:PORT, got \"\(url)\"", status: 400)
        }
        self.url = "http://\(host):\(components.port ?? 8079)"
        self.host = host
        port = components.port ?? 8079
        self.key = key
        self.recheck = recheck
        self.longPoll = longPoll
        let safeHost = host.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "_" }
        cache = home.url.appendingPathComponent("cache/registry/\(String(safeHost))-\(port)")
        health = DependencyHealth(name: "registry", address: self.url, events: events)
        do {
            try FileManager.default.createDirectory(at: cache.appendingPathComponent("artifacts"), withIntermediateDirectories: true)
        } catch {
            throw RegistryError("cannot make the registry cache \(cache.path): \(error.localizedDescription)", status: 500)
        }
        loadState()
    }

    // MARK: - HTTP

    /// One request; a transport failure marks the registry unreachable (503-style error), an
    /// answer marks it reachable, and an error answer becomes a `RegistryError` with its status.
    private func call(_ method: String, _ path: String, body: [UInt8] = [], headers: [(String, String)] = [], timeout: Double = 5) throws(RegistryError) -> HTTPClient.Response {
        let now = Date().timeIntervalSince1970
        if !health.isUp, now < state.withLock({ $0.retryAt }) {
            throw RegistryError("registry \(url) unreachable since \(health.downSince.map(isoTimestamp) ?? "now"); retrying", status: 503)
        }
        var all = headers + [("Content-Type", "application/json")]
        if let key { all.append(("Authorization", "Bearer \(key)")) }
        let client = HTTPClient(host: host, port: port, timeout: timeout)
        defer { client.close() }
        let response: HTTPClient.Response
        do {
            response = try client.request(method, path, headers: all, body: body)
        } catch {
            let delay = health.failed("\(error)")
            state.withLock { $0.retryAt = Date().timeIntervalSince1970 + delay }
            throw RegistryError("registry \(url) unreachable: \(error)", status: 503)
        }
        health.succeeded()
        guard response.status < 400 else {
            let message = (try? JSONValue.parse(response.body))?["error"]?.stringValue ?? response.text
            throw RegistryError(message, status: response.status)
        }
        return response
    }

    private func callJSON(_ method: String, _ path: String, body: [UInt8] = [], timeout: Double = 5) throws(RegistryError) -> JSONValue {
        let response = try call(method, path, body: body, timeout: timeout)
        do { return try JSONValue.parse(response.body) } catch { throw RegistryError("registry \(url) answered \(path) with something that is not JSON", status: 502) }
    }

    private static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~@"))) ?? text
    }

    // MARK: - ModelSource

    package func resolve(_ reference: String) throws(RegistryError) -> ModelRegistry.Version {
        let now = Date().timeIntervalSince1970
        let parts = reference.split(separator: "@", maxSplits: 1)
        let pinned = parts.count == 2 && Int(parts[1]) != nil
        // While `follow` holds a long poll the revision is current without asking.
        let watched = following.load(ordering: .acquiring) && health.isUp
        let (known, current, fresh) = state.withLock { s in
            (s.resolved[reference], s.resolvedAt[reference] == s.revision && s.revision >= 0, watched || now - s.checkedAt < recheck)
        }
        // A version number never changes; an alias is read again only once the alias revision moved.
        if let known, pinned || (current && fresh) { return known }
        do throws(RegistryError) {
            if let known, current {
                let check = try callJSON("GET", "/v1/aliases?after=\(state.withLock { $0.revision })")
                if check["changed"] == .bool(false) {
                    state.withLock { $0.checkedAt = now }
                    return known
                }
            }
            let value = try callJSON("GET", "/v1/resolve?ref=\(Self.escape(reference))")
            guard let version = decodeVersion(value) else { throw RegistryError("registry \(url) answered a version it could not describe", status: 502) }
            let revision = value["revision"].flatMap { if case .number(let n) = $0 { Int(n) } else { nil } } ?? -1
            state.withLock {
                $0.resolved[reference] = version
                $0.resolvedAt[reference] = revision
                $0.revision = max($0.revision, revision)
                $0.checkedAt = now
            }
            saveState()
            return version
        } catch where error.status == 503 {
            // Unreachable: what this component last resolved stands until the registry answers again.
            if let known { return known }
            throw error
        }
    }

    package func document(_ version: ModelRegistry.Version) throws(RegistryError) -> ModelDocument {
        let file = cache.appendingPathComponent("artifacts/\(version.sha256).json")
        var data = FileManager.default.contents(atPath: file.path)
        if let bytes = data, SHA256.hex([UInt8](bytes)) != version.sha256 { data = nil }  // a damaged cache entry is fetched again
        if data == nil {
            let response = try call("GET", "/v1/artifacts/\(version.sha256)")
            guard SHA256.hex(response.body) == version.sha256 else {
                throw RegistryError("the artifact of \(version.reference) from \(url) does not match its sha256", status: 502)
            }
            try writeAtomically(Data(response.body), to: file)
            data = Data(response.body)
        }
        do { return try ModelDocument.decode(data!) } catch { throw RegistryError("\(version.reference): \(error)", status: 422) }
    }

    /// Watches the alias revision from a thread of its own with a long poll
    /// (`GET /v1/aliases?after=REV&wait=S`: the registry answers when an alias moves, or after S
    /// seconds with a few bytes saying nothing changed) and calls `changed` when an alias moved, so a
    /// component swaps well within a second without polling. Backs off while the registry is down;
    /// a registry that answers at once anyway is asked again every `recheck` seconds. Runs until
    /// `stop` returns true (at most `longPoll` seconds later).
    package func follow(_ changed: @escaping @Sendable () -> Void, until stop: @escaping @Sendable () -> Bool) {
        guard !following.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            defer { following.store(false, ordering: .releasing) }
            while !stop() {
                let seen = state.withLock { $0.revision }
                let asked = Date()
                let wait = seen >= 0 ? longPoll : 0
                let answer = try? callJSON("GET", "/v1/aliases?after=\(seen)&wait=\(Int(wait))", timeout: wait + 10)
                if let answer, case .number(let revision)? = answer["revision"] {
                    // Every alias reference is read again at its next resolve; versions stay cached.
                    state.withLock {
                        $0.revision = max($0.revision, Int(revision))
                        $0.checkedAt = Date().timeIntervalSince1970
                    }
                    if answer["changed"] == .bool(true), seen >= 0 { changed() }
                    if answer["changed"] == .bool(true) || Date().timeIntervalSince(asked) >= 1 { continue }
                }
                let pause = health.isUp ? recheck : max(recheck, state.withLock { $0.retryAt } - Date().timeIntervalSince1970)
                let end = Date().addingTimeInterval(pause)
                while Date() < end && !stop() { usleep(20_000) }
            }
        }
        thread.name = "registry-follow"
        thread.start()
    }

    // MARK: - KeySource

    package func activeKeys() throws(RegistryError) -> [String: (id: String, scope: Scope)] {
        do throws(RegistryError) {
            let keys = decodeKeyTable(try callJSON("GET", "/v1/keys/active")["keys"])
            let changed = state.withLock { s -> Bool in
                defer { s.keys = keys }
                return s.keys.count != keys.count || s.keys.contains { keys[$0.key]?.id != $0.value.id || keys[$0.key]?.scope != $0.value.scope }
            }
            if changed { saveState() }
            return keys
        } catch where error.status == 503 {
            return state.withLock { $0.keys }
        }
    }

    // MARK: - FleetRecorder

    package func heartbeat(_ member: FleetDirectory.Member) throws(RegistryError) {
        _ = try call("POST", "/v1/fleet", body: Array(JSONWriter.text(memberJSON(member, now: member.heartbeat)).utf8))
    }

    package func remove(id: String) throws(RegistryError) {
        _ = try call("DELETE", "/v1/fleet/\(Self.escape(id))")
    }

    package func members(maxAge: Double) throws(RegistryError) -> [FleetDirectory.Member] {
        let value = try callJSON("GET", "/v1/fleet")
        guard case .array(let items)? = value["members"] else { return [] }
        let parser = ISO8601DateFormatter()
        parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let cutoff = Date().timeIntervalSince1970 - maxAge
        return items.compactMap { item -> FleetDirectory.Member? in
            guard let id = item["id"]?.stringValue, let url = item["url"]?.stringValue,
                  let seen = item["last_seen"]?.stringValue.flatMap({ parser.date(from: $0) })?.timeIntervalSince1970, seen >= cutoff
            else { return nil }
            let pid: Int = if case .number(let n)? = item["pid"], n.isFinite, n >= 0, n < 1e9 { Int(n) } else { 0 }
            return FleetDirectory.Member(id: id, kind: item["kind"]?.stringValue ?? "", url: url, pid: pid, host: item["host"]?.stringValue ?? "",
                                         model: item["model"]?.stringValue, startedAt: item["started_at"]?.stringValue ?? "", heartbeat: seen)
        }
    }

    /// The registry expires its own records.
    package func expire(retention: Double) throws(RegistryError) -> Int { 0 }

    // MARK: - RegistryStore: operators' calls (the command line, the console)

    package func versions(model: String?) throws(RegistryError) -> [ModelRegistry.Version] {
        let value = try callJSON("GET", model.map { "/v1/models/\(Self.escape($0))" } ?? "/v1/models")
        guard case .array(let items)? = value["versions"] else { return [] }
        return items.compactMap(decodeVersion)
    }

    package func aliases(model: String) throws(RegistryError) -> [(alias: String, version: Int)] {
        let value = try callJSON("GET", "/v1/models/\(Self.escape(model))")
        guard case .object(let o)? = value["aliases"] else { return [] }
        return zip(o.keys, o.values).compactMap { name, v in if case .number(let n) = v { (name, Int(n)) } else { nil } }
            .sorted { $0.0 < $1.0 }
    }

    /// Moves `alias`; with `expected`, only if it points there now (409 otherwise). The service
    /// audits the move under this client's key, so `who` is not sent.
    package func promote(model: String, version: Int, alias: String, who: String = "", expected: ModelRegistry.Expected?) throws(RegistryError) -> Int? {
        var o = JSONObject()
        o.append("version", .number(Double(version)))
        switch expected {
        case nil: break
        case .absent?: o.append("expected", .null)
        case .version(let v)?: o.append("expected", .number(Double(v)))
        }
        let value = try callJSON("POST", "/v1/aliases/\(Self.escape(model))/\(Self.escape(alias))", body: Array(JSONWriter.text(.object(o)).utf8))
        if case .number(let from)? = value["from"] { return Int(from) }
        return nil
    }

    package func rollback(model: String, alias: String, who: String = "") throws(RegistryError) -> (from: Int, to: Int) {
        let value = try callJSON("POST", "/v1/aliases/\(Self.escape(model))/\(Self.escape(alias))/rollback")
        guard case .number(let from)? = value["from"], case .number(let to)? = value["to"] else {
            throw RegistryError("registry \(url) answered a rollback without from and to", status: 502)
        }
        return (Int(from), Int(to))
    }

    /// Uploads a model document (its sha256 is checked on arrival).
    package func register(_ document: ModelDocument, who: String = "") throws(RegistryError) -> ModelRegistry.Registration {
        let bytes = [UInt8](document.encoded())
        let response = try call("POST", "/v1/models", body: bytes, headers: [("x-content-sha256", SHA256.hex(bytes))])
        guard let value = try? JSONValue.parse(response.body), let version = value["version"].flatMap(decodeVersion) else {
            throw RegistryError("registry \(url) answered a registration it could not describe", status: 502)
        }
        return ModelRegistry.Registration(version: version, existed: value["existed"] == .bool(true))
    }

    package func audit(model: String?, after: Int?, limit: Int) throws(RegistryError) -> [ModelRegistry.AuditEntry] {
        var query = ["limit=\(min(max(limit, 1), 1000))"]
        if let model { query.append("model=\(Self.escape(model))") }
        if let after { query.append("after=\(after)") }
        let value = try callJSON("GET", "/v1/audit?" + query.joined(separator: "&"))
        guard case .array(let items)? = value["entries"] else { return [] }
        return items.compactMap(decodeAuditEntry)
    }

    /// The key's id, name and scope, as the service sees it.
    package func whoami() throws(RegistryError) -> (id: String?, name: String?, scope: Scope?) {
        let value = try callJSON("GET", "/v1/whoami")
        return (value["id"]?.stringValue, value["name"]?.stringValue, value["scope"]?.stringValue.flatMap(Scope.init(rawValue:)))
    }

    // MARK: - KeyAdministration (scope admin)

    package func create(scope: Scope, name: String?, who: String = "") throws(RegistryError) -> (KeyStore.Key, String) {
        var o = JSONObject()
        o.append("scope", .string(scope.rawValue))
        if let name { o.append("name", .string(name)) }
        let value = try callJSON("POST", "/v1/keys", body: Array(JSONWriter.text(.object(o)).utf8))
        guard let id = value["id"]?.stringValue, let secret = value["key"]?.stringValue else {
            throw RegistryError("registry \(url) answered a new key without its id and key", status: 502)
        }
        return (KeyStore.Key(id: id, scope: scope, name: name, createdAt: isoTimestamp(Date()), createdBy: "", revoked: false), secret)
    }

    package func list() throws(RegistryError) -> [KeyStore.Key] {
        let value = try callJSON("GET", "/v1/keys")
        guard case .array(let items)? = value["keys"] else { return [] }
        return items.compactMap { item in
            guard let id = item["id"]?.stringValue, let scope = item["scope"]?.stringValue.flatMap(Scope.init(rawValue:)) else { return nil }
            return KeyStore.Key(id: id, scope: scope, name: item["name"]?.stringValue, createdAt: item["created_at"]?.stringValue ?? "",
                                createdBy: item["created_by"]?.stringValue ?? "", revoked: item["revoked"] == .bool(true))
        }
    }

    package func revoke(id: String) throws(RegistryError) {
        _ = try call("POST", "/v1/keys/\(Self.escape(id))/revoke")
    }

    // MARK: - The cache's state file

    private var stateFile: URL { cache.appendingPathComponent("state.json") }

    private func saveState() {
        let s = state.withLock { $0 }
        var o = JSONObject()
        o.append("resolved", .object(s.resolved.sorted { $0.key < $1.key }.reduce(into: JSONObject()) { $0.append($1.key, versionJSON($1.value)) }))
        o.append("keys", keyTableJSON(s.keys))
        try? writeAtomically(Data(JSONWriter.text(.object(o)).utf8), to: stateFile)
    }

    private func loadState() {
        guard let data = FileManager.default.contents(atPath: stateFile.path), let value = try? JSONValue.parse([UInt8](data)) else { return }
        state.withLock { s in
            if case .object(let resolved)? = value["resolved"] {
                for (reference, item) in zip(resolved.keys, resolved.values) { s.resolved[reference] = decodeVersion(item) }
            }
            s.keys = decodeKeyTable(value["keys"])
        }
    }
}
