import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// The registry service (`switchyard registry`) seen from a component or the command line on
/// another machine: `RegistryAPI` (the one client of the service's routes) plus what a component
/// needs around it, so it can stand in for the local store (`RegistryStore` and friends).
///
/// What a component runs is cached under its own SWITCHYARD_HOME (`cache/registry/HOST-PORT/`):
/// every artifact it loaded (checked against its sha256), the versions its references resolved to,
/// and the key table. So a component keeps serving — and can restart — while the registry is
/// down; it says so through `health` ("registry … unreachable since …"), and picks changes up
/// again by itself when the registry is back (with backoff between attempts).
package final class RegistryClient: RegistryStore, KeySource, KeyAdministration, FleetStore, Sendable {
    package let api: RegistryAPI
    package var url: String { api.url }
    private let cache: URL
    package let health: DependencyHealth
    private let state = Mutex<State>(State())
    /// How often an alias is re-checked when nobody follows the revision.
    private let recheck: Double
    /// How long the registry holds a follower's alias request when nothing changes.
    private let longPoll: Double
    private let following = Atomic<Bool>(false)

    private struct State {
        /// Reference → the version it resolved to last, and the alias revision it was read at.
        var resolved: [String: ModelVersion] = [:]
        /// Reference → the alias's traffic split, when it had one.
        var routes: [String: AliasRoute] = [:]
        var resolvedAt: [String: Int] = [:]
        /// The latest alias revision seen.
        var revision = -1
        var checkedAt = 0.0
        var keys: KeyTable = [:]
        /// No request before this time while the registry is down (backoff).
        var retryAt = 0.0
    }

    /// `url` is `http://HOST:PORT`; `home` holds the cache.
    package init(url: String, key: String?, home: Home, events: EventLog, recheck: Double = 0.25, longPoll: Double = 25) throws(RegistryError) {
        api = try RegistryAPI(url: url, key: key)
        self.recheck = recheck
        self.longPoll = longPoll
        let safeHost = api.host.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "_" }
        cache = home.url.appendingPathComponent("cache/registry/\(String(safeHost))-\(api.port)")
        health = DependencyHealth(name: "registry", address: api.url, events: events)
        do {
            try FileManager.default.createDirectory(at: cache.appendingPathComponent("artifacts"), withIntermediateDirectories: true)
        } catch {
            throw RegistryError("cannot make the registry cache \(cache.path): \(error.localizedDescription)", status: 500)
        }
        loadState()
    }

    // MARK: - Health

    /// Runs one call of the API: no answer marks the registry unreachable (and sets the backoff;
    /// calls before it ends fail at once), an answer marks it reachable.
    private func through<T>(_ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        if !health.isUp, Date().timeIntervalSince1970 < state.withLock({ $0.retryAt }) {
            throw RegistryError("registry \(url) unreachable since \(health.downSince.map(isoTimestamp) ?? "now"); retrying", status: 503, unreachable: true)
        }
        do {
            let value = try body()
            health.succeeded()
            return value
        } catch {
            if error.unreachable {
                let delay = health.failed(error.message)
                state.withLock { $0.retryAt = Date().timeIntervalSince1970 + delay }
            } else {
                health.succeeded()
            }
            throw error
        }
    }

    // MARK: - ModelSource

    package func resolve(_ reference: String) throws(RegistryError) -> ModelVersion {
        try resolveRoute(reference).version
    }

    package func resolveRoute(_ reference: String) throws(RegistryError) -> (version: ModelVersion, route: AliasRoute?) {
        let now = Date().timeIntervalSince1970
        let parts = reference.split(separator: "@", maxSplits: 1)
        let pinned = parts.count == 2 && Int(parts[1]) != nil
        // While `follow` holds a long poll the revision is current without asking.
        let watched = following.load(ordering: .acquiring) && health.isUp
        let (known, route, current, fresh) = state.withLock { s in
            (s.resolved[reference], s.routes[reference], s.resolvedAt[reference] == s.revision && s.revision >= 0, watched || now - s.checkedAt < recheck)
        }
        // A version number never changes; an alias is read again only once the alias revision moved.
        if let known, pinned || (current && fresh) { return (known, route) }
        do throws(RegistryError) {
            if let known, current {
                let check = try through { () throws(RegistryError) in try api.aliases(after: state.withLock { $0.revision }) }
                if !check.changed {
                    state.withLock { $0.checkedAt = now }
                    return (known, route)
                }
            }
            let answer = try through { () throws(RegistryError) in try api.resolve(reference) }
            state.withLock {
                $0.resolved[reference] = answer.version
                $0.routes[reference] = answer.route
                $0.resolvedAt[reference] = answer.revision
                $0.revision = max($0.revision, answer.revision)
                $0.checkedAt = now
            }
            saveState()
            return (answer.version, answer.route)
        } catch where error.unreachable {
            // Unreachable: what this component last resolved stands until the registry answers again.
            if let known { return (known, route) }
            throw error
        }
    }

    package func document(_ version: ModelVersion) throws(RegistryError) -> ModelDocument {
        let file = cache.appendingPathComponent("artifacts/\(version.sha256).json")
        var data = FileManager.default.contents(atPath: file.path)
        if let bytes = data, SHA256.hex([UInt8](bytes)) != version.sha256 { data = nil }  // a damaged cache entry is fetched again
        if data == nil {
            let bytes = try through { () throws(RegistryError) in try api.artifact(version.sha256) }
            try writeAtomically(Data(bytes), to: file)
            data = Data(bytes)
        }
        do { return try ModelDocument.decode(data!) } catch { throw RegistryError("\(version.reference): \(error)", status: 422) }
    }

    /// A version's drift baseline from the service (nil when it has none), kept in the cache once
    /// fetched: a component restarted while the registry is down still has it.
    package func baseline(model: String, version: Int) throws(RegistryError) -> DriftBaseline? {
        let file = cache.appendingPathComponent("baselines/\(model.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })-\(version).json")
        do {
            guard let value = try through({ () throws(RegistryError) in try api.baseline(model: model, version: version) }) else { return nil }
            let baseline = try DriftBaseline(json: value)
            try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try? writeAtomically(Data(value.jsonText.utf8), to: file)
            return baseline
        } catch let error as RegistryError where error.unreachable {
            guard let data = FileManager.default.contents(atPath: file.path), let value = try? JSONValue.parse([UInt8](data)) else { throw error }
            return try? DriftBaseline(json: value)
        } catch let error as RegistryError {
            throw error
        } catch {
            throw RegistryError("the baseline of \(model)@\(version) from \(url): \(error)", status: 502)
        }
    }

    package func setBaseline(model: String, version: Int, baseline: DriftBaseline, who: String = "") throws(RegistryError) {
        try through { () throws(RegistryError) in try api.setBaseline(model: model, version: version, baseline: baseline.json) }
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
                let wait = seen >= 0 ? Int(longPoll) : 0
                if let answer = try? through({ () throws(RegistryError) in try api.aliases(after: seen, wait: wait) }) {
                    // Every alias reference is read again at its next resolve; versions stay cached.
                    state.withLock {
                        $0.revision = max($0.revision, answer.revision)
                        $0.checkedAt = Date().timeIntervalSince1970
                    }
                    if answer.changed, seen >= 0 { changed() }
                    if answer.changed || Date().timeIntervalSince(asked) >= 1 { continue }
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

    package func activeKeys() throws(RegistryError) -> KeyTable {
        do throws(RegistryError) {
            let keys = try through { () throws(RegistryError) in try api.activeKeys() }
            let changed = state.withLock { s -> Bool in
                defer { s.keys = keys }
                return s.keys.count != keys.count || s.keys.contains { keys[$0.key]?.id != $0.value.id || keys[$0.key]?.scope != $0.value.scope }
            }
            if changed { saveState() }
            return keys
        } catch where error.unreachable {
            return state.withLock { $0.keys }
        }
    }

    // MARK: - FleetRecorder

    package func heartbeat(_ member: FleetMember) throws(RegistryError) {
        try through { () throws(RegistryError) in try api.heartbeat(member) }
    }

    package func remove(id: String) throws(RegistryError) {
        try through { () throws(RegistryError) in try api.removeMember(id: id) }
    }

    /// The registry expires its own records.
    package func expire(retention: Double) throws(RegistryError) -> Int { 0 }

    /// The service's fleet: members heard from within `maxAge` seconds.
    package func members(maxAge: Double) throws(RegistryError) -> [FleetMember] {
        let now = Date().timeIntervalSince1970
        return try through { () throws(RegistryError) in try api.fleet() }.filter { now - $0.heartbeat <= maxAge }
    }

    // MARK: - RegistryStore: operators' calls (the command line). The service audits every
    // change under this client's key, so `who` is not sent.

    package func versions(model: String?) throws(RegistryError) -> [ModelVersion] {
        try through { () throws(RegistryError) in try api.versions(model: model) }
    }

    package func aliases(model: String) throws(RegistryError) -> [(alias: String, version: Int)] {
        try through { () throws(RegistryError) in try api.aliases(model: model) }
    }

    package func promote(model: String, version: Int, alias: String, who: String = "", expected: AliasExpectation?) throws(RegistryError) -> Int? {
        try through { () throws(RegistryError) in try api.promote(model: model, version: version, alias: alias, expected: expected) }
    }

    package func setRoute(model: String, alias: String, route: AliasRoute, who: String = "") throws(RegistryError) -> Int? {
        try through { () throws(RegistryError) in try api.setRoute(model: model, alias: alias, route: route) }
    }

    package func rollback(model: String, alias: String, who: String = "") throws(RegistryError) -> (from: Int, to: Int) {
        try through { () throws(RegistryError) in try api.rollback(model: model, alias: alias) }
    }

    /// Uploads a model document (its sha256 is checked on arrival).
    package func register(_ document: ModelDocument, who: String = "") throws(RegistryError) -> ModelRegistry.Registration {
        let answer = try through { () throws(RegistryError) in try api.register([UInt8](document.encoded())) }
        return ModelRegistry.Registration(version: answer.version, existed: answer.existed)
    }

    package func audit(model: String?, after: Int?, limit: Int) throws(RegistryError) -> [AuditEntry] {
        try through { () throws(RegistryError) in try api.audit(model: model, after: after, limit: limit) }
    }

    package func allAliases() throws(RegistryError) -> (revision: Int, aliases: [(model: String, alias: String, version: Int)]) {
        let listing = try through { () throws(RegistryError) in try api.aliases() }
        return (listing.revision, listing.aliases)
    }

    package func revision() throws(RegistryError) -> Int {
        try allAliases().revision
    }

    /// The artifact from the service, checked against its sha256 (the service checks it too).
    package func artifact(sha256: String) throws(RegistryError) -> [UInt8] {
        let bytes = try through { () throws(RegistryError) in try api.artifact(sha256) }
        guard SHA256.hex(bytes) == sha256 else { throw RegistryError("the artifact \(sha256) from \(api.url) does not match its sha256", status: 502) }
        return bytes
    }

    /// The key's id, name and scope, as the service sees it.
    package func whoami() throws(RegistryError) -> KeyIdentity {
        try through { () throws(RegistryError) in try api.whoami() }
    }

    // MARK: - KeyAdministration (scope admin)

    package func create(scope: Scope, name: String?, who: String = "") throws(RegistryError) -> (APIKey, String) {
        let made = try through { () throws(RegistryError) in try api.createKey(scope: scope, name: name) }
        return (made.key, made.secret)
    }

    package func list() throws(RegistryError) -> [APIKey] {
        try through { () throws(RegistryError) in try api.keys() }
    }

    package func revoke(id: String) throws(RegistryError) {
        try through { () throws(RegistryError) in try api.revokeKey(id: id) }
    }

    // MARK: - The cache's state file

    private var stateFile: URL { cache.appendingPathComponent("state.json") }

    private func saveState() {
        let s = state.withLock { $0 }
        var o = JSONObject()
        o.append("resolved", .object(s.resolved.sorted { $0.key < $1.key }.reduce(into: JSONObject()) { $0.append($1.key, $1.value.json) }))
        o.append("routes", .object(s.routes.sorted { $0.key < $1.key }.reduce(into: JSONObject()) { $0.append($1.key, $1.value.json) }))
        o.append("keys", keyTableJSON(s.keys))
        try? writeAtomically(Data(JSONWriter.text(.object(o)).utf8), to: stateFile)
    }

    private func loadState() {
        guard let data = FileManager.default.contents(atPath: stateFile.path), let value = try? JSONValue.parse([UInt8](data)) else { return }
        state.withLock { s in
            if case .object(let resolved)? = value["resolved"] {
                for (reference, item) in zip(resolved.keys, resolved.values) { s.resolved[reference] = ModelVersion(json: item) }
            }
            if case .object(let routes)? = value["routes"] {
                for (reference, item) in zip(routes.keys, routes.values) { s.routes[reference] = try? AliasRoute(json: item) }
            }
            s.keys = decodeKeyTable(value["keys"])
        }
    }
}
