import ControlProtocol
import Foundation
import Registry
import Scoring
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The registry's store on PostgreSQL (issue 21): the same behavior as on SQLite, several
/// processes' connections on one database, notifications of every change, and a server that
/// goes away and comes back.
@Suite(.serialized) struct PostgresStoreTests {
    /// One scenario — register, re-register, promote with and without compare-and-set, roll back,
    /// split, baseline, errors, keys, fleet — gives the same transcript on both engines.
    @Test func theStoreBehavesTheSameOnSQLiteAndPostgreSQL() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let onSQLite = try transcript(.home(home))
        let onPostgres = try transcript(.postgres(url: server.url))
        #expect(onSQLite.count > 30)
        for (a, b) in zip(onSQLite, onPostgres) { #expect(a == b) }
        #expect(onSQLite.count == onPostgres.count)
        // What the scenario must have seen, so that agreeing is not agreeing on nothing.
        #expect(onPostgres.contains("rollback production: (from: 3, to: 2)"))
        #expect(onPostgres.contains { $0.hasPrefix("error 409:") && $0.contains("someone moved it meanwhile") })
        #expect(onPostgres.contains { $0.hasPrefix("audit 8 route m production 2→2 v2 90% · v3 10% 2027-01-15T08:00:00.000Z erin") })
        #expect(onPostgres.contains("absent artifact: 404") && onPostgres.contains("revoking twice: 404"))
        // Reopening runs no step twice; the schema is there once.
        let again = try ModelRegistry(location: .postgres(url: server.url), now: { Date(timeIntervalSince1970: 1_800_000_000) })
        #expect(try again.versions(model: "m").count == 3)
        let db = try PostgresConnection(url: server.url)
        #expect(try db.query("SELECT version FROM schema_version") == [[.integer(7)]])
        // Versions, artifacts and the audit log refuse rewriting there too.
        for sql in ["UPDATE versions SET sha256 = 'x'", "DELETE FROM audit", "UPDATE audit SET who = 'x'", "UPDATE artifacts SET body = '{}'"] {
            do throws(RegistryError) {
                try db.execute(sql)
                Issue.record("\(sql) went through")
            } catch { #expect(error.message.contains("immutable") || error.message.contains("append-only"), "\(error.message)") }
        }
    }

    private func transcript(_ location: StoreLocation) throws -> [String] {
        let clock = Date(timeIntervalSince1970: 1_800_000_000)
        let registry = try ModelRegistry(location: location, now: { clock })
        var lines: [String] = []
        func attempt(_ body: () throws -> String) {
            do { lines.append(try body()) } catch let error as RegistryError {
                lines.append("error \(error.status): \(error.message)")
            } catch { lines.append("error \(error)") }
        }
        for v in 0..<3 {
            let r = try registry.register(model("m", variant: Double(v)), who: "alice")
            lines.append("register v\(r.version.version) existed \(r.existed) \(r.version.sha256)")
        }
        attempt { "again: existed \(try registry.register(model("m", variant: 1), who: "bob").existed)" }
        attempt { "promote: \(String(describing: try registry.promote(model: "m", version: 1, alias: "production", who: "alice")))" }
        attempt { "promote: \(String(describing: try registry.promote(model: "m", version: 2, alias: "production", who: "bob", expected: .version(1))))" }
        attempt { "promote: \(String(describing: try registry.promote(model: "m", version: 3, alias: "production", who: "bob", expected: .version(1))))" }
        attempt { "promote: \(String(describing: try registry.promote(model: "m", version: 3, alias: "production", who: "carol")))" }
        attempt { "rollback production: \(try registry.rollback(model: "m", alias: "production", who: "dave"))" }
        attempt { "promote: \(String(describing: try registry.promote(model: "m", version: 9, alias: "production", who: "x")))" }
        attempt { "resolve: \(try registry.resolve("nothing").reference)" }
        attempt { "resolve: \(try registry.resolve("m@staging").reference)" }
        let route = try AliasRoute(arms: [.init(version: 2, weight: 90), .init(version: 3, weight: 10)])
        attempt { "route: \(String(describing: try registry.setRoute(model: "m", alias: "production", route: route, who: "erin")))" }
        attempt { "resolveRoute: \(try registry.resolveRoute("m@production").route?.description ?? "none")" }
        let scorer = try Scorer(model("m", variant: 1))
        let baseline = DriftBaseline.make(scorer: scorer, rows: (0..<50).map { [FieldValue.number(Double($0))] })
        attempt { try registry.setBaseline(model: "m", version: 2, baseline: baseline, who: "erin"); return "baseline set" }
        attempt { "baseline read back: \(try registry.baseline(model: "m", version: 2) == baseline)" }
        attempt { "no baseline: \(String(describing: try registry.baseline(model: "m", version: 1)))" }
        for version in try registry.versions(model: nil) {
            lines.append("version \(version.reference) \(version.sha256) \(version.aliases)")
            attempt { "document equal: \(try registry.document(version) == model("m", variant: Double(version.version - 1)))" }
        }
        do { _ = try registry.artifact(sha256: String(repeating: "0", count: 64)) } catch { lines.append("absent artifact: \(error.status)") }
        for (alias, version) in try registry.aliases(model: "m") { lines.append("alias \(alias) v\(version)") }
        let all = try registry.allAliases()
        lines.append("revision \(all.revision) = \(try registry.revision()), \(all.aliases.count) aliases")
        for entry in try registry.audit(model: "m", after: nil, limit: 100) {
            lines.append("audit \(entry.id) \(entry.action) \(entry.model) \(entry.alias ?? "-") \(entry.fromVersion.map(String.init) ?? "-")→\(entry.toVersion.map(String.init) ?? "-") \(entry.detail ?? "") \(entry.at) \(entry.who)")
        }
        lines.append("audit after 5: \(try registry.audit(model: nil, after: 5, limit: 2).map(\.id))")

        let keys = try KeyStore(location: location)
        let (reader, readKey) = try keys.create(scope: .read, name: "dash", who: "alice")
        let (_, adminKey) = try keys.create(scope: .admin, name: nil, who: "alice")
        try keys.revoke(id: reader.id)
        do { try keys.revoke(id: reader.id) } catch { lines.append("revoking twice: \(error.status)") }
        let active = try keys.activeKeys()
        lines.append("keys \(try keys.list().map { "\($0.scope.rawValue) \($0.name ?? "-") revoked \($0.revoked)" }.sorted())")
        lines.append("active: admin \(active[KeyStore.hash(adminKey)]?.scope.rawValue ?? "none"), read \(active[KeyStore.hash(readKey)]?.scope.rawValue ?? "none")")

        let now = Date(timeIntervalSince1970: 1_800_000_000.25)
        let fleet = try FleetDirectory(location: location, now: { now })
        try fleet.heartbeat(.init(id: "serve-1", kind: "serve", url: "http://127.0.0.1:1", pid: 10, host: "a", model: "m@2", startedAt: "t", heartbeat: now.timeIntervalSince1970))
        try fleet.heartbeat(.init(id: "batch-1", kind: "batch", url: "http://127.0.0.1:2", pid: 11, host: "b", model: nil, startedAt: "t", heartbeat: now.timeIntervalSince1970 - 100))
        try fleet.heartbeat(.init(id: "serve-1", kind: "serve", url: "http://127.0.0.1:3", pid: 12, host: "a", model: "m@3", startedAt: "t", heartbeat: now.timeIntervalSince1970))
        lines.append("fleet \(try fleet.members(maxAge: 15).map { "\($0.id) \($0.url) \($0.pid) \($0.model ?? "-") \($0.heartbeat)" })")
        lines.append("fleet all \(try fleet.members(maxAge: .infinity).map(\.id))")
        lines.append("expired \(try fleet.expire(retention: 50))")
        try fleet.remove(id: "serve-1")
        lines.append("fleet after remove \(try fleet.members(maxAge: .infinity).count)")
        return lines
    }

    /// Two stores on one database, as two registry processes have: writers from both interleave
    /// without losing or duplicating a version, and each change is announced to every listener.
    @Test func twoProcessesShareOneDatabaseAndHearEveryChange() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let a = try ModelRegistry(location: .postgres(url: server.url))
        let b = try ModelRegistry(location: .postgres(url: server.url))
        let listener = try b.changeListener()
        // 2 × 20 registrations of distinct content, concurrently through both.
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            let registry = side == 0 ? a : b
            for i in 0..<20 { _ = try? registry.register(model("m", variant: Double(side * 100 + i)), who: "side\(side)") }
        }
        let versions = try a.versions(model: "m")
        #expect(versions.map(\.version) == Array(1...40))
        #expect(Set(versions.map(\.sha256)).count == 40)
        #expect(try b.promote(model: "m", version: 7, alias: "production", who: "ops") == nil)
        #expect(try a.resolve("m@production").version == 7)
        // Every audit entry was announced, in order, with its id.
        var heard: [Int] = []
        while heard.count < 41, let id = try listener.next(timeout: 30).flatMap({ Int($0) }) { heard.append(id) }
        #expect(heard == (try a.audit(model: nil, after: nil, limit: 100)).map(\.id))
        #expect(heard.count == 41)
    }

    /// The server dies: a read is a 503 that names PostgreSQL (never a crash, never stale data
    /// passed off as current); once it is back, the same store object works again by itself.
    @Test func aLostServerIsA503AndTheStoreComesBackByItself() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let registry = try ModelRegistry(location: .postgres(url: server.url))
        try registry.register(model("m"), who: "t")
        server.kill()
        do throws(RegistryError) {
            _ = try registry.versions(model: "m")
            Issue.record("a read on a dead server succeeded")
        } catch {
            #expect(error.status == 503 && error.message.contains("PostgreSQL"), "\(error.status) \(error.message)")
        }
        try server.start()
        // Back: within a few backoff steps (at most 5 s apart) the store reconnects.
        var versions: [ModelRegistry.Version]?
        for _ in 0..<400 where versions == nil {
            versions = try? registry.versions(model: "m")
            if versions == nil { usleep(50_000) }
        }
        #expect(versions?.map(\.version) == [1])
        #expect(try registry.register(model("m", variant: 1), who: "t").version.version == 2)
        // A server that is not there at all is a 503 at open, with the address and no password.
        let nobody = try TestPostgres.freePort()
        do throws(RegistryError) {
            _ = try ModelRegistry(location: .postgres(url: "postgres://switchyard:secret@127.0.0.1:\(nobody)/postgres"))
            Issue.record("opened a store nothing serves")
        } catch {
            #expect(error.status == 503 && error.message.contains("127.0.0.1:\(nobody)") && !error.message.contains("secret"), "\(error.message)")
        }
    }

    /// A job's lock with the ledger in PostgreSQL holds across processes (here, two ledgers'
    /// connections) and machines, and goes with its holder.
    @Test func aJobLockOnPostgreSQLHoldsAcrossLedgers() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let a = try RunLedger(location: .postgres(url: server.url), home: home)
        let otherHome = temporaryHome()
        defer { try? FileManager.default.removeItem(at: otherHome.url) }
        let b = try RunLedger(location: .postgres(url: server.url), home: otherHome)
        let held = try #require(try JobLock.acquire(a, job: "nightly"))
        #expect(try JobLock.acquire(b, job: "nightly") == nil)
        #expect(try JobLock.acquire(b, job: "hourly") != nil)
        #expect(JobLock.holder(b, job: "nightly") == nil)
        held.release()
        let again = try #require(try JobLock.acquire(b, job: "nightly"))
        #expect(try JobLock.acquire(a, job: "nightly") == nil)
        // The holder's session ending (its process dying) frees the job.
        let db = try PostgresConnection(url: server.url)
        try db.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        #expect(try JobLock.acquire(a, job: "nightly") != nil)
        _ = again
    }

    @Test func placeholdersAreNumberedOutsideQuotes() {
        #expect(Database.numberPlaceholders("SELECT ? , '?' , \"a?\" , ?") == "SELECT $1 , '?' , \"a?\" , $2")
        #expect(Database.numberPlaceholders("UPDATE t SET note = CASE WHEN note = '' THEN ? ELSE note || '; ' || ? END WHERE id = ?")
            == "UPDATE t SET note = CASE WHEN note = '' THEN $1 ELSE note || '; ' || $2 END WHERE id = $3")
    }
}
