import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// The registry as a service (`switchyard registry`): models, versions and their artifacts,
/// aliases (read; moved with compare-and-set; rolled back), the audit log, API keys and the
/// fleet, over the control API's HTTP, so components on other machines share nothing with it
/// but its URL and a key. Its store is the SQLite registry in its own SWITCHYARD_HOME, or a
/// PostgreSQL database that other registry processes share (`--store`).
///
/// Scopes: reading is `read`; registering a version, heartbeats and reading the key table
/// (hashes, for components that check keys) are `operate`; moving aliases and managing keys are
/// `admin`. Every change is in the audit log under the key's id and name.
package final class RegistryComponent: Component {
    package let kind = "registry"
    let registry: any RegistryStore
    let keys: any KeySource & KeyAdministration
    let fleet: any FleetStore
    let events: EventLog
    let authenticator: Authenticator
    private let served = Atomic<Int>(0)
    private let sampling = Mutex<Int>(0)
    /// Held long polls on the alias revision.
    private let watch: AliasWatch
    /// Who acts with an embedded service's session key, for the audit log ("console:USER").
    private let localActor: String?

    /// `storeHealth`: a PostgreSQL store's reachability, which this service follows on a LISTEN
    /// connection of its own (`followChanges`).
    package init(registry: any RegistryStore, keys: any KeySource & KeyAdministration, fleet: any FleetStore, events: EventLog, authenticator: Authenticator,
                 localActor: String? = nil, storeHealth: DependencyHealth? = nil) {
        self.localActor = localActor
        self.registry = registry
        self.keys = keys
        self.fleet = fleet
        self.events = events
        self.authenticator = authenticator
        watch = AliasWatch(revision: { try? registry.revision() }, listing: { after in
            do { return try RegistryComponent.aliasListing(registry, after: after).response } catch let error as HTTPError {
                return error.response
            } catch {
                return .error(500, "\(error)")
            }
        })
        if let registry = registry as? ModelRegistry, case .postgres = registry.location, let storeHealth {
            Self.followChanges(registry, health: storeHealth, watch: watch)
        }
    }

    /// Wakes the held alias long polls whenever any registry process on the same PostgreSQL
    /// database writes an audit entry (NOTIFY at its commit), so a move through another process
    /// reaches this one's watchers at once. The LISTEN connection doubles as the store's health:
    /// lost, it is an outage in status (reconnected with backoff); back, the watchers re-read the
    /// revision in case they missed a move meanwhile. The thread ends with the service.
    private static func followChanges(_ registry: ModelRegistry, health: DependencyHealth, watch: AliasWatch) {
        let thread = Thread { [weak watch] in
            var listener: StoreListener?
            while let current = watch {
                do throws(RegistryError) {
                    if listener == nil {
                        listener = try registry.changeListener()
                        health.succeeded()
                        current.moved()
                    }
                    if try listener?.next(timeout: 1) != nil { current.moved() }
                } catch {
                    listener = nil
                    Thread.sleep(forTimeInterval: health.failed(error.message))
                }
            }
        }
        thread.name = "registry-store-changes"
        thread.start()
    }

    // MARK: - Component

    package var isReady: Bool { (try? registry.revision()) != nil }

    package func describe(_ status: inout ComponentStatus) {
        let versions = (try? registry.versions(model: nil)) ?? []
        let members = (try? fleet.members(maxAge: .infinity)) ?? []
        let now = Date().timeIntervalSince1970
        status.state = isReady ? "serving" : "store unavailable"
        status.counters = NamedNumbers([
            NamedNumber("models", Double(Set(versions.map(\.model)).count)),
            NamedNumber("versions", Double(versions.count)),
            NamedNumber("revision", Double((try? registry.revision()) ?? 0)),
            NamedNumber("fleet_live", Double(members.filter { now - $0.heartbeat <= FleetMember.goneAfter }.count)),
            NamedNumber("fleet_gone", Double(members.filter { now - $0.heartbeat > FleetMember.goneAfter }.count)),
            NamedNumber("requests", Double(served.load(ordering: .relaxed))),
        ])
    }

    package let sampleFields = ["requests"]

    package func sample(interval: Double) -> [String: Double] {
        let now = served.load(ordering: .relaxed)
        let before = sampling.withLock { last in
            defer { last = now }
            return last
        }
        return ["requests": Double(now - before) / max(interval, 0.001)]
    }

    package func metrics(_ text: inout PrometheusText) {
        text.describe("switchyard_registry_requests_total", "counter", "Registry API requests answered.")
        text.sample("switchyard_registry_requests_total", [], Double(served.load(ordering: .relaxed)))
        text.describe("switchyard_registry_revision", "gauge", "The alias revision (the latest audit entry).")
        text.sample("switchyard_registry_revision", [], Double((try? registry.revision()) ?? 0))
    }

    package func swapModel(_ request: SwapRequest, by principal: Principal) -> HTTPResponse {
        .error(400, "the registry serves no model of its own; move an alias with POST /v1/aliases/MODEL/ALIAS")
    }

    package func tick() {}

    // MARK: - Routes

    package func route(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse? {
        let path = String(request.path)
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)  // ["v1", ...]
        guard parts.count >= 2, parts[0] == "v1",
              ["models", "resolve", "artifacts", "aliases", "audit", "whoami", "keys", "fleet"].contains(parts[1])
        else { return nil }
        served.wrappingAdd(1, ordering: .relaxed)
        let resource = Array(parts.dropFirst())
        do {
            return try answer(request, resource, context)
        } catch let error as HTTPError {
            return error.response
        } catch {
            return .error(500, "\(error)")
        }
    }

    /// The principal when the request's key has `scope`, else the 401/403 to answer.
    private func authorize(_ request: HTTPRequest, _ context: RequestContext, _ scope: Scope) throws -> Principal {
        switch authenticator.authorize(request, loop: context.loop, needed: scope) {
        case .success(let principal): return principal
        case .failure(let error): throw error
        }
    }

    /// "key:ID (NAME)" for the audit log (the local actor for an embedded service's session key).
    private func who(_ principal: Principal) -> String {
        guard let id = principal.keyID else { return principal.name }
        if id == EmbeddedRegistry.sessionID, let localActor { return localActor }
        let name = (try? keys.list())?.first { $0.id == id }?.name
        return "key:\(id)" + (name.map { " (\($0))" } ?? "")
    }

    private func answer(_ request: HTTPRequest, _ r: [String], _ context: RequestContext) throws -> HTTPResponse {
        switch (request.method, r.count, r[0]) {
        case ("GET", 1, "models"):
            _ = try authorize(request, context, .read)
            let versions = try registryCall { () throws(RegistryError) in try registry.versions(model: nil) }
            return json(200, .object(JSONObject(["versions": .array(versions.map(\.json))])))
        case ("GET", 2, "models"):
            _ = try authorize(request, context, .read)
            let name = r[1]
            let versions = try registryCall { () throws(RegistryError) in try registry.versions(model: name) }
            guard !versions.isEmpty else { throw HTTPError(404, "no model named \"\(name)\"") }
            let aliases = try registryCall { () throws(RegistryError) in try registry.aliases(model: name) }
            var o = JSONObject()
            o.append("name", .string(name))
            o.append("versions", .array(versions.map(\.json)))
            o.append("aliases", .object(aliases.reduce(into: JSONObject()) { $0.append($1.alias, .number(Double($1.version))) }))
            return json(200, .object(o))
        case ("POST", 1, "models"):
            let principal = try authorize(request, context, .operate)
            if let wrongType = requireJSON(request) { return wrongType }
            // The uploaded artifact is checked against the digest the client computed, when it sends one.
            if let claimed = request.headers["x-content-sha256"], claimed.lowercased() != SHA256.hex(request.body) {
                throw HTTPError(400, "the uploaded model's sha256 is \(SHA256.hex(request.body)), not \(claimed) as the x-content-sha256 header says; the upload was damaged")
            }
            let document: ModelDocument
            do { document = try ModelDocument.decode(Data(request.body)) } catch { throw HTTPError(422, "\(error)") }
            let actor = who(principal)
            let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: actor) }
            if !registration.existed { events.append("registry", "registered \(registration.version.reference) by \(actor)") }
            var o = JSONObject()
            o.append("version", registration.version.json)
            o.append("existed", .bool(registration.existed))
            return json(registration.existed ? 200 : 201, .object(o))
        case ("GET", 5, "models") where r[2] == "versions" && r[4] == "baseline":
            _ = try authorize(request, context, .read)
            guard let version = Int(r[3]), version >= 1 else { throw HTTPError(400, "a version is a whole number from 1") }
            guard let baseline = try registryCall({ () throws(RegistryError) in try registry.baseline(model: r[1], version: version) }) else {
                throw HTTPError(404, "\(r[1])@\(version) has no drift baseline; make one with 'switchyard models baseline \(r[1])@\(version) --data FILE.csv'")
            }
            return json(200, baseline.json)
        case ("POST", 5, "models") where r[2] == "versions" && r[4] == "baseline":
            let principal = try authorize(request, context, .operate)
            if let wrongType = requireJSON(request) { return wrongType }
            guard let version = Int(r[3]), version >= 1 else { throw HTTPError(400, "a version is a whole number from 1") }
            let baseline: DriftBaseline
            do { baseline = try DriftBaseline(json: try JSONValue.parse(request.body)) } catch { throw HTTPError(400, "\(error)") }
            let actor = who(principal)
            try registryCall { () throws(RegistryError) in try registry.setBaseline(model: r[1], version: version, baseline: baseline, who: actor) }
            events.append("registry", "drift baseline of \(r[1])@\(version) stored by \(actor) (\(baseline.rows) rows)")
            return json(200, .object(JSONObject(["model": .string(r[1]), "version": .number(Double(version)), "rows": .number(Double(baseline.rows))])))
        case ("GET", 1, "resolve"):
            _ = try authorize(request, context, .read)
            guard let reference = request.query["ref"], !reference.isEmpty else { throw HTTPError(400, "give ?ref=NAME, NAME@VERSION or NAME@ALIAS") }
            let (version, route) = try registryCall { () throws(RegistryError) in try registry.resolveRoute(reference) }
            guard case .object(var o) = version.json else { return .error(500, "") }
            if let route { o.append("route", route.json) }
            o.append("revision", .number(Double((try? registry.revision()) ?? 0)))  // so a follower knows what it has seen
            return json(200, .object(o))
        case ("GET", 2, "artifacts"):
            _ = try authorize(request, context, .read)
            let sha = r[1].lowercased()
            guard sha.count == 64, sha.allSatisfy(\.isHexDigit) else { throw HTTPError(400, "an artifact is named by its sha256 (64 hex digits)") }
            var headers = HTTPHeaders()
            headers.add("ETag", "\"\(sha)\"")
            headers.add("Cache-Control", "public, max-age=31536000, immutable")
            if request.headers["if-none-match"]?.contains(sha) == true { return HTTPResponse(status: 304, headers: headers, body: []) }
            let data: [UInt8]
            do { data = try registry.artifact(sha256: sha) } catch {
                throw HTTPError(error.status, error.status == 404 ? "no artifact \(sha)" : error.message)  // not the store's paths to a stranger
            }
            headers.add("Content-Type", "application/json")
            return HTTPResponse(status: 200, headers: headers, body: data)
        case ("GET", 1, "aliases"):
            _ = try authorize(request, context, .read)
            var after: Int?
            if let text = request.query["after"] {
                guard let n = Int(text), n >= -1 else { throw HTTPError(400, "after: expected the alias revision last seen (a whole number; -1 for none)") }
                after = n
            }
            var wait = 0.0
            if let text = request.query["wait"] {
                guard let s = Double(text), s.isFinite, s >= 0, s <= AliasWatch.longestWait else {
                    throw HTTPError(400, "wait: expected seconds from 0 to \(Int(AliasWatch.longestWait))")
                }
                wait = s
            }
            let listing = try Self.aliasListing(registry, after: after)
            if let after, wait > 0, !listing.changed, let held = watch.hold(after: after, seconds: wait) { return held }
            return listing.response
        case ("POST", 3, "aliases"):
            let principal = try authorize(request, context, .admin)
            if let wrongType = requireJSON(request) { return wrongType }
            let (model, alias) = (r[1], r[2])
            guard let body = try? JSONValue.parse(request.body), case .object = body else {
                throw HTTPError(400, #"expected {"version": N, "expected": M} ("expected": null when the alias must not exist yet; leave it out to move unconditionally)"#)
            }
            guard case .number(let n)? = body["version"], let version = SwapRequest.versionNumber(n) else {
                throw HTTPError(400, #"field "version": expected a whole number from 1"#)
            }
            var expected: AliasExpectation?
            switch body["expected"] {
            case nil: expected = nil
            case .null?: expected = .absent
            case .number(let e)? where SwapRequest.versionNumber(e) != nil: expected = .version(Int(e))
            default: throw HTTPError(400, #"field "expected": a version number, or null for an alias that does not exist yet"#)
            }
            let actor = who(principal)
            let previous = try registryCall { () throws(RegistryError) in
                try registry.promote(model: model, version: version, alias: alias, who: actor, expected: expected)
            }
            watch.moved()
            events.append("registry", "\(model)@\(alias): \(previous.map { "v\($0)" } ?? "none") → v\(version) by \(actor)")
            return json(200, .object(JSONObject([
                "model": .string(model), "alias": .string(alias), "from": previous.map { .number(Double($0)) } ?? .null,
                "to": .number(Double(version)), "revision": .number(Double((try? registry.revision()) ?? 0)),
            ])))
        case ("POST", 4, "aliases") where r[3] == "route":
            let principal = try authorize(request, context, .admin)
            if let wrongType = requireJSON(request) { return wrongType }
            let (model, alias) = (r[1], r[2])
            guard let body = try? JSONValue.parse(request.body), case .object = body else {
                throw HTTPError(400, #"expected {"split": [{"version": N, "weight": PERCENT}, …], "key": "FIELD" or null}"#)
            }
            let route = try registryCall { () throws(RegistryError) in try AliasRoute(json: body) }
            let actor = who(principal)
            let previous = try registryCall { () throws(RegistryError) in
                try registry.setRoute(model: model, alias: alias, route: route, who: actor)
            }
            watch.moved()
            events.append("registry", "\(model)@\(alias) routed: \(route.description) by \(actor)")
            return json(200, .object(JSONObject([
                "model": .string(model), "alias": .string(alias), "from": previous.map { .number(Double($0)) } ?? .null,
                "to": .number(Double(route.main)), "route": route.json, "revision": .number(Double((try? registry.revision()) ?? 0)),
            ])))
        case ("POST", 4, "aliases") where r[3] == "rollback":
            let principal = try authorize(request, context, .admin)
            let (model, alias) = (r[1], r[2])
            let actor = who(principal)
            let moved = try registryCall { () throws(RegistryError) in try registry.rollback(model: model, alias: alias, who: actor) }
            watch.moved()
            events.append("registry", "\(model)@\(alias) rolled back: v\(moved.from) → v\(moved.to) by \(actor)")
            return json(200, .object(JSONObject([
                "model": .string(model), "alias": .string(alias), "from": .number(Double(moved.from)), "to": .number(Double(moved.to)),
                "revision": .number(Double((try? registry.revision()) ?? 0)),
            ])))
        case ("GET", 1, "audit"):
            _ = try authorize(request, context, .read)
            let limit = min(max(Int(request.query["limit"] ?? "100") ?? 100, 1), 1000)
            let entries = try registryCall { () throws(RegistryError) in
                try registry.audit(model: request.query["model"], after: request.query["after"].flatMap { Int($0) }, limit: limit)
            }
            var o = JSONObject()
            o.append("entries", .array(entries.map(\.json)))
            o.append("next_after", entries.last.map { .number(Double($0.id)) } ?? .null)
            return json(200, .object(o))
        case ("GET", 1, "whoami"):
            let principal = try authorize(request, context, .read)
            let key = (try? keys.list())?.first { $0.id == principal.keyID }
            return json(200, .object(JSONObject([
                "id": principal.keyID.map(JSONValue.string) ?? .null, "name": key?.name.map(JSONValue.string) ?? .null,
                "scope": principal.scope.map { .string($0.rawValue) } ?? .null,
            ])))
        case ("GET", 1, "keys"):
            _ = try authorize(request, context, .admin)
            let list = try registryCall { () throws(RegistryError) in try keys.list() }
            return json(200, .object(JSONObject(["keys": .array(list.map {
                .object(JSONObject([
                    "id": .string($0.id), "scope": .string($0.scope.rawValue), "name": $0.name.map(JSONValue.string) ?? .null,
                    "created_at": .string($0.createdAt), "created_by": .string($0.createdBy), "revoked": .bool($0.revoked),
                ]))
            })])))
        case ("GET", 2, "keys") where r[1] == "active":
            // The hashed key table, for components that check keys themselves.
            _ = try authorize(request, context, .operate)
            let active = try registryCall { () throws(RegistryError) in try keys.activeKeys() }
            return json(200, .object(JSONObject(["keys": keyTableJSON(active)])))
        case ("POST", 1, "keys"):
            let principal = try authorize(request, context, .admin)
            let body = (try? JSONValue.parse(request.body)) ?? .null
            guard case .string(let scopeText)? = body["scope"], let scope = Scope(rawValue: scopeText) else {
                throw HTTPError(400, #"expected {"scope": "read"|"predict"|"operate"|"admin", "name": "…"}"#)
            }
            let name = body["name"]?.stringValue
            if let name, name.utf8.count > 200 { throw HTTPError(400, #"field "name": at most 200 bytes"#) }
            let actor = who(principal)
            let (key, secret) = try registryCall { () throws(RegistryError) in try keys.create(scope: scope, name: name, who: actor) }
            authenticator.refresh()
            events.append("registry", "key \(key.id) (\(scope.rawValue)) created by \(actor)")
            return json(201, .object(JSONObject(["id": .string(key.id), "scope": .string(scope.rawValue), "key": .string(secret)])))
        case ("POST", 3, "keys") where r[2] == "revoke":
            let principal = try authorize(request, context, .admin)
            try registryCall { () throws(RegistryError) in try keys.revoke(id: r[1]) }
            authenticator.refresh()
            events.append("registry", "key \(r[1]) revoked by \(who(principal))")
            return json(200, .object(JSONObject(["id": .string(r[1]), "revoked": .bool(true)])))
        case ("GET", 1, "fleet"):
            _ = try authorize(request, context, .read)
            let now = Date().timeIntervalSince1970
            let members = try registryCall { () throws(RegistryError) in try fleet.members(maxAge: .infinity) }
            return json(200, .object(JSONObject(["members": .array(members.map { $0.json(now: now) })])))
        case ("POST", 1, "fleet"):
            _ = try authorize(request, context, .operate)
            let member = try decodeMember(request.body)
            try registryCall { () throws(RegistryError) in try fleet.heartbeat(member) }
            return json(200, .object(JSONObject(["id": .string(member.id)])))
        case ("DELETE", 2, "fleet"):
            _ = try authorize(request, context, .operate)
            try registryCall { () throws(RegistryError) in try fleet.remove(id: r[1]) }
            return json(200, .object(JSONObject(["id": .string(r[1]), "removed": .bool(true)])))
        default:
            return .error(405, "\(request.method) is not allowed on \(request.path)")
        }
    }

    /// Every alias and the revision, or only `{"revision", "changed": false}` when the revision is still `after`.
    static func aliasListing(_ registry: any RegistryStore, after: Int?) throws -> (changed: Bool, response: HTTPResponse) {
        let current = try registryCall { () throws(RegistryError) in try registry.revision() }
        if let after, after == current {
            return (false, json(200, .object(JSONObject(["revision": .number(Double(current)), "changed": .bool(false)]))))
        }
        let all = try registryCall { () throws(RegistryError) in try registry.allAliases() }
        var o = JSONObject()
        o.append("revision", .number(Double(all.revision)))
        o.append("changed", .bool(true))
        o.append("aliases", .array(all.aliases.map {
            .object(JSONObject(["model": .string($0.model), "alias": .string($0.alias), "version": .number(Double($0.version))]))
        }))
        return (true, json(200, .object(o)))
    }

    private func decodeMember(_ body: [UInt8]) throws -> FleetDirectory.Member {
        guard let value = try? JSONValue.parse(body) else { throw HTTPError(400, "a fleet heartbeat is a JSON object") }
        func text(_ field: String, max: Int = 500) throws -> String {
            guard case .string(let s)? = value[field], !s.isEmpty, s.utf8.count <= max else {
                throw HTTPError(400, "field \"\(field)\": expected a string of 1 to \(max) bytes")
            }
            return s
        }
        let pid: Int
        if case .number(let n)? = value["pid"], n.isFinite, n >= 0, n < 1e9 { pid = Int(n) } else { throw HTTPError(400, #"field "pid": expected a process id"#) }
        return FleetDirectory.Member(
            id: try text("id", max: 200), kind: try text("kind", max: 40), url: try text("url"), pid: pid, host: try text("host", max: 255),
            model: value["model"]?.stringValue, startedAt: try text("started_at", max: 40), heartbeat: Date().timeIntervalSince1970)
    }
}

/// This machine's registry (SWITCHYARD_HOME) served on a loopback port to this process only: how
/// the console, a pure HTTP client, reads the local registry when no `--registry` is given. It
/// accepts the machine's keys and a session key made for this process (admin: whoever can run
/// the console on this home can write its SQLite file anyway), whose changes are audited under
/// `actor`. It is not in the fleet.
package final class EmbeddedRegistry: Sendable {
    static let sessionID = "local-session"
    package let host: ComponentHost
    /// The session key; never stored.
    package let sessionKey: String
    package var url: String { host.control.baseURL }

    package init(home: Home, actor: String) throws {
        sessionKey = "sy_session_" + KeyStore.randomHex(40)
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(home: home) }
        let keys = try registryCall { () throws(RegistryError) in try KeyStore(home: home) }
        let fleet = try registryCall { () throws(RegistryError) in try FleetDirectory(home: home) }
        let authenticator = Authenticator(store: SessionKeys(base: keys, session: KeyStore.hash(sessionKey)), loops: 1)
        let events = EventLog()
        let component = RegistryComponent(registry: registry, keys: keys, fleet: fleet, events: events, authenticator: authenticator, localActor: actor)
        host = ComponentHost(component: component, observer: nil, configuration: .init(host: "127.0.0.1", port: 0, threads: 1),
                             authenticator: authenticator, events: events, fleet: nil)
        try host.start()
    }

    package func stop() { host.stop() }

    /// The machine's keys and the session key.
    private struct SessionKeys: KeySource {
        let base: KeyStore
        let session: String

        func activeKeys() throws(RegistryError) -> KeyTable {
            var keys = try base.activeKeys()
            keys[session] = (EmbeddedRegistry.sessionID, .admin)
            return keys
        }
    }
}

/// Held `GET /v1/aliases?after=REV&wait=S` requests (a long poll): each is answered as soon as the
/// alias revision moves past REV, or with `"changed": false` after S seconds. One thread, running
/// only while someone waits, answers them: a move through this service wakes it at once, and it
/// reads the store's revision every 0.2 s, so a move made by another process on the same store
/// (`switchyard models promote` on the registry's machine) is seen too. The event loops never wait.
final class AliasWatch: Sendable {
    static let longestWait = 60.0
    /// More held requests than this are answered at once (the client asks again).
    static let mostWaiting = 10_000
    private struct Waiter {
        let after: Int
        let deadline: Double
        let promise: HTTPPromise
    }

    private let state = Mutex<(waiters: [Waiter], running: Bool)>(([], false))
    private let wake = DispatchSemaphore(value: 0)
    private let revision: @Sendable () -> Int?
    private let listing: @Sendable (_ after: Int) -> HTTPResponse

    init(revision: @escaping @Sendable () -> Int?, listing: @escaping @Sendable (_ after: Int) -> HTTPResponse) {
        self.revision = revision
        self.listing = listing
    }

    /// The response to give for a request that waits for a revision other than `after`; nil when too many wait.
    func hold(after: Int, seconds: Double) -> HTTPResponse? {
        let promise = HTTPPromise()
        let start = state.withLock { state -> Bool? in
            guard state.waiters.count < Self.mostWaiting else { return nil }
            state.waiters.append(Waiter(after: after, deadline: Date().timeIntervalSince1970 + seconds, promise: promise))
            defer { state.running = true }
            return !state.running
        }
        guard let start else { return nil }
        if start {
            let thread = Thread { [self] in run() }
            thread.name = "registry-alias-watch"
            thread.start()
        }
        return .later(promise)
    }

    /// An alias moved through this service: answer the waiters now.
    func moved() { wake.signal() }

    private func run() {
        while true {
            let waiters = state.withLock { state -> [Waiter]? in
                state.waiters.removeAll { !$0.promise.isPending }
                if state.waiters.isEmpty { state.running = false; return nil }
                return state.waiters
            }
            guard let waiters else { return }
            let now = Date().timeIntervalSince1970
            let current = revision()
            var answers: [Int: HTTPResponse] = [:]  // one listing per revision a waiter saw
            for waiter in waiters where (current != nil && current != waiter.after) || now >= waiter.deadline {
                if answers[waiter.after] == nil { answers[waiter.after] = listing(waiter.after) }
                waiter.promise.fulfil(answers[waiter.after]!)
            }
            _ = wake.wait(timeout: .now() + 0.2)
        }
    }
}
