import ControlProtocol
import Foundation
import JSON
import Synchronization
import Testing

@testable import Components
import HTTP
import Registry
import Scoring
import Telemetry

/// A registry service on a loopback port over its own SWITCHYARD_HOME, with credit@1
/// (production) and credit@2, an admin key "ops" and an operate key for components.
final class RegistryServiceFixture: @unchecked Sendable {
    let home: Home
    let registry: ModelRegistry
    let keys: KeyStore
    var host: ComponentHost?
    var port = 0
    var adminKey = "", operateKey = "", adminID = ""

    init() throws {
        home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-registry-\(UUID().uuidString)"))
        registry = try ModelRegistry(home: home)
        try registerCreditVersions(registry)
        keys = try KeyStore(home: home)
        let admin = try keys.create(scope: .admin, name: "ops", who: "test")
        adminID = admin.0.id
        adminKey = admin.1
        operateKey = try keys.create(scope: .operate, name: "serve-a", who: "test").1
        try start()
    }

    /// Starts the service (on the same port after a stop).
    func start() throws {
        let authenticator = Authenticator(store: keys, loops: 2)
        let events = EventLog()
        let fleet = try FleetDirectory(home: home)
        let component = RegistryComponent(registry: registry, keys: keys, fleet: fleet, events: events, authenticator: authenticator)
        let host = ComponentHost(component: component, observer: nil, configuration: .init(port: port, threads: 2),
                                 authenticator: authenticator, events: events, fleet: fleet)
        port = try host.start()
        self.host = host
    }

    func stopService() {
        host?.stop()
        host = nil
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// A client as a component on another machine has it: its own home, a key.
    func client(key: String, home other: Home) throws -> RegistryClient {
        try RegistryClient(url: url, key: key, home: other, events: EventLog())
    }

    func cleanUp() {
        stopService()
        try? FileManager.default.removeItem(at: home.url)
    }
}

@Suite(.serialized) struct RegistryServiceTests {
    /// A serve component that shares nothing with the registry but its URL and a key: it loads
    /// through the service, follows an alias moved there, keeps serving while the registry is
    /// down (and says so), starts again from its cache while it is still down, and recovers by
    /// itself when it is back.
    @Test func aComponentFollowsTheServiceAndOutlivesItsOutages() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        let elsewhere = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-elsewhere-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: elsewhere.url) }
        let client = try f.client(key: f.operateKey, home: elsewhere)
        let serve = try ServeComponent(registry: client, reference: "credit@production", loops: 1, open: true, events: EventLog(),
                                       authenticator: Authenticator(store: client, loops: 1))
        #expect(serve.model.current?.version.reference == "credit@1")
        #expect(FileManager.default.fileExists(atPath: elsewhere.url.appendingPathComponent("cache/registry/127.0.0.1-\(f.port)/artifacts/\(serve.model.current!.version.sha256).json").path))

        // Moved in the registry (compare-and-set, by an admin): followed at the next tick.
        let admin = try f.client(key: f.adminKey, home: elsewhere)
        #expect(throws: RegistryError.self) { _ = try admin.promote(model: "credit", version: 2, alias: "production", expected: .version(2)) }
        do {
            _ = try admin.promote(model: "credit", version: 2, alias: "production", expected: .version(2))
        } catch {
            #expect(error.status == 409)
            #expect(error.message == "credit@production points at v1, not v2 as expected; someone moved it meanwhile")
        }
        #expect(try admin.promote(model: "credit", version: 2, alias: "production", expected: .version(1)) == 1)
        #expect(try { () throws -> Bool in
            for _ in 0..<300 {
                serve.tick()
                if serve.model.current?.version.reference == "credit@2" { return true }
                usleep(20_000)
            }
            return false
        }())
        // The audit log names the key, by id and name.
        let last = try f.registry.audit(model: "credit").last
        #expect(last?.who == "key:\(f.adminID) (ops)")
        #expect(last?.action == "promote" && last?.fromVersion == 1 && last?.toVersion == 2)
        // An operate key may not move aliases.
        do {
            _ = try client.promote(model: "credit", version: 1, alias: "production", expected: nil)
            Issue.record("an operate key moved an alias")
        } catch {
            #expect(error.status == 403)
        }

        // The registry goes away: the component keeps its model and says the registry is unreachable.
        f.stopService()
        #expect(waitFor { serve.tick(); return !client.health.isUp })
        #expect(serve.model.current?.version.reference == "credit@2")
        // A restart while it is still down works from the cache.
        let restarted = try ServeComponent(registry: try f.client(key: f.operateKey, home: elsewhere), reference: "credit@production", loops: 1,
                                           open: true, events: EventLog(), authenticator: Authenticator(store: client, loops: 1))
        #expect(restarted.model.current?.version.reference == "credit@2")
        #expect(try client.activeKeys().count == 2, "the key table is cached too")

        // Back on the same port: recovered without help.
        try f.start()
        #expect(waitFor { serve.tick(); return client.health.isUp })
        #expect(client.health.outages == 1)
    }

    /// `GET /v1/aliases?after=REV&wait=S` is held until an alias moves (through the service, or by
    /// another process on the same store) and answered with the new listing; with nothing moving
    /// it answers `changed: false` once S passes. The service stays responsive meanwhile, and a
    /// follower told of a move by the long poll sees it at its next resolve without asking again.
    @Test func aliasRequestsWaitForAMove() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        let read = HTTPClient(port: f.port, timeout: 30)
        let auth = [("Authorization", "Bearer \(f.operateKey)")]
        let start = try JSONValue.parse(read.request("GET", "/v1/aliases", headers: auth).body)
        guard case .number(let revision)? = start["revision"] else { Issue.record("no revision in \(start)"); return }

        // Held: the answer comes when the admin moves production, not before.
        let answer = Mutex<JSONValue?>(nil)
        let waiter = Thread {
            let body = (try? HTTPClient(port: f.port, timeout: 30).request("GET", "/v1/aliases?after=\(Int(revision))&wait=20", headers: auth).body) ?? []
            answer.withLock { $0 = (try? JSONValue.parse(body)) ?? .null }
        }
        waiter.start()
        #expect(waitFor { f.host!.server.connections >= 2 })
        #expect(try read.request("GET", "/healthz").status == 200, "a held request does not hold the service")
        #expect(answer.withLock { $0 } == nil)
        let admin = try f.client(key: f.adminKey, home: f.home)
        #expect(try admin.promote(model: "credit", version: 2, alias: "production", expected: .version(1)) == 1)
        #expect(waitFor { answer.withLock { $0 } != nil })
        let moved = answer.withLock { $0 }
        #expect(moved?["changed"] == .bool(true))
        #expect(moved?["revision"] == .number(revision + 1))
        let production = moved?["aliases"].flatMap { if case .array(let a) = $0 { a.first { $0["alias"]?.stringValue == "production" } } else { nil } }
        #expect(production?["version"] == .number(2))

        // A move by another process on the same store (not through the service) is seen too.
        let second = Mutex<JSONValue?>(nil)
        Thread {
            let body = (try? HTTPClient(port: f.port, timeout: 30).request("GET", "/v1/aliases?after=\(Int(revision) + 1)&wait=20", headers: auth).body) ?? []
            second.withLock { $0 = (try? JSONValue.parse(body)) ?? .null }
        }.start()
        #expect(waitFor { f.host!.server.connections >= 2 })
        _ = try ModelRegistry(home: f.home).rollback(model: "credit", alias: "production", who: "local")
        #expect(waitFor { second.withLock { $0 } != nil })
        #expect(second.withLock { $0 }?["changed"] == .bool(true))

        // Nothing moves: unchanged once the wait is over.
        let quiet = try JSONValue.parse(read.request("GET", "/v1/aliases?after=\(Int(revision) + 2)&wait=1", headers: auth).body)
        #expect(quiet["changed"] == .bool(false) && quiet["revision"] == .number(revision + 2))
        #expect(try read.request("GET", "/v1/aliases?after=1&wait=61", headers: auth).status == 400)
        #expect(try read.request("GET", "/v1/aliases?after=x", headers: auth).status == 400)

        // A follower learns of a move from its long poll and resolves without another request.
        let elsewhere = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-elsewhere-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: elsewhere.url) }
        let client = try f.client(key: f.operateKey, home: elsewhere)
        #expect(try client.resolve("credit@production").version == 1)
        let moves = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        defer { stop.store(true, ordering: .relaxed) }
        client.follow({ moves.wrappingAdd(1, ordering: .relaxed) }, until: { stop.load(ordering: .relaxed) })
        #expect(waitFor { f.host!.server.connections >= 2 }, "the follower holds a long poll")
        #expect(try admin.promote(model: "credit", version: 2, alias: "production", expected: .version(1)) == 1)
        #expect(waitFor { moves.load(ordering: .relaxed) == 1 })
        #expect(try client.resolve("credit@production").version == 2)
    }

    @Test func artifactsAreImmutableAndUploadsAreChecked() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        let version = try f.registry.resolve("credit@1")
        let http = HTTPClient(port: f.port)
        let auth = [("Authorization", "Bearer \(f.operateKey)")]
        let artifact = try http.request("GET", "/v1/artifacts/\(version.sha256)", headers: auth)
        #expect(artifact.status == 200)
        #expect(SHA256.hex(artifact.body) == version.sha256)
        #expect(artifact.headers["ETag"] == "\"\(version.sha256)\"")
        #expect(try http.request("GET", "/v1/artifacts/\(version.sha256)", headers: auth + [("If-None-Match", "\"\(version.sha256)\"")]).status == 304)
        #expect(try http.request("GET", "/v1/artifacts/nothex", headers: auth).status == 400)
        #expect(try http.request("GET", "/v1/artifacts/\(version.sha256)").status == 401)

        // Register through the service: a damaged upload is refused, a good one is a new version.
        var document = try f.registry.document(version)
        document.estimator.intercepts[0] += 1
        let bytes = [UInt8](document.encoded())
        let damaged = try http.request("POST", "/v1/models", headers: auth + [("Content-Type", "application/json"), ("x-content-sha256", String(repeating: "0", count: 64))], body: bytes)
        #expect(damaged.status == 400)
        let client = try f.client(key: f.operateKey, home: f.home)
        let registered = try client.register(document)
        #expect(!registered.existed && registered.version.reference == "credit@3")
        #expect(try client.register(document).existed)

        // Aliases with a revision: nothing changed is a small answer.
        let aliases = try JSONValue.parse(try http.request("GET", "/v1/aliases", headers: auth).body)
        guard case .number(let revision)? = aliases["revision"] else { Issue.record("no revision"); return }
        let unchanged = try JSONValue.parse(try http.request("GET", "/v1/aliases?after=\(Int(revision))", headers: auth).body)
        #expect(unchanged["changed"] == .bool(false) && unchanged["aliases"] == nil)

        // The fleet keeps members that went quiet, as gone.
        let fleet = try FleetDirectory(home: f.home)
        try fleet.heartbeat(.init(id: "serve-x-1", kind: "serve", url: "http://127.0.0.1:1", pid: 1, host: "x", model: "credit@1",
                                  startedAt: "", heartbeat: Date().timeIntervalSince1970 - 60))
        let members = try JSONValue.parse(try http.request("GET", "/v1/fleet", headers: auth).body)
        guard case .array(let list)? = members["members"] else { Issue.record("no members"); return }
        #expect(list.first { $0["id"] == .string("serve-x-1") }?["state"] == .string("gone"))
        #expect(list.first { $0["kind"] == .string("registry") }?["state"] == .string("live"))
        let who = try JSONValue.parse(try http.request("GET", "/v1/whoami", headers: [("Authorization", "Bearer \(f.adminKey)")]).body)
        #expect(who["name"] == .string("ops") && who["scope"] == .string("admin"))
    }

    /// The service runs on any store behind the `RegistryStore`, `KeySource & KeyAdministration`
    /// and `FleetStore` protocols, not only the SQLite one: here a second service whose store is a
    /// client of the first (a relay). Reads, artifacts, alias moves and the fleet all pass through,
    /// and the first service audits the move under the relay's key.
    @Test func theServiceRunsOnAnyStoreBehindTheProtocols() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        let relayHome = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-relay-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: relayHome.url) }
        let store = try f.client(key: f.adminKey, home: relayHome)
        let authenticator = Authenticator(store: store, loops: 1)
        let events = EventLog()
        let relay = ComponentHost(component: RegistryComponent(registry: store, keys: store, fleet: store, events: events, authenticator: authenticator),
                                  observer: nil, configuration: .init(port: 0, threads: 1), authenticator: authenticator, events: events, fleet: nil)
        let port = try relay.start()
        defer { relay.stop() }
        // The first service's keys work on the relay: it checks them against the first's key table.
        let api = try RegistryAPI(url: "http://127.0.0.1:\(port)", key: f.adminKey)
        #expect(try api.versions(model: "credit").map(\.reference) == ["credit@1", "credit@2"])
        let production = try api.resolve("credit@production").version
        #expect(production.reference == "credit@1")
        #expect(SHA256.hex(try api.artifact(production.sha256)) == production.sha256)
        #expect(throws: RegistryError("no artifact \(String(repeating: "0", count: 64))", status: 404)) { try api.artifact(String(repeating: "0", count: 64)) }
        #expect(try api.promote(model: "credit", version: 2, alias: "production", expected: .version(1)) == 1)
        #expect(throws: RegistryError.self) { try api.promote(model: "credit", version: 1, alias: "production", expected: .version(1)) }
        #expect(try f.registry.resolve("credit@production").version == 2, "the move is in the first service's store")
        let entry = try #require(try f.registry.audit(model: "credit").last)
        #expect(entry.action == "promote" && entry.who.contains(f.adminID))
        #expect(try api.aliases().revision == (try f.registry.revision()))
        try api.heartbeat(FleetMember(id: "serve-relayed", kind: "serve", url: "http://127.0.0.1:1", pid: 1, host: "h", model: "credit@2",
                                      startedAt: isoTimestamp(Date()), heartbeat: Date().timeIntervalSince1970))
        #expect(try FleetDirectory(home: f.home).members(maxAge: .infinity).contains { $0.id == "serve-relayed" })
        #expect(try api.fleet().contains { $0.id == "serve-relayed" })
    }
}
