import ControlProtocol
import Foundation
import Registry
import Scoring
import Testing

func temporaryHome() -> Home {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-test-\(UUID().uuidString)")
    return Home(url)
}

/// A valid model whose content differs by `variant`.
func model(_ name: String, variant: Double = 0) -> ModelDocument {
    ModelDocument(
        metadata: .init(name: name, created: "2026-11-24T00:00:00Z"),
        schema: .init(fields: [.init(name: "x", type: .number)]),
        preprocessing: [.init(field: "x", transform: .identity)],
        estimator: .init(coefficients: [[1 + variant]], intercepts: [0], link: .logistic),
        outputs: .init(classes: ["0", "1"]))
}

@Suite struct ModelRegistryTests {
    /// On SQLite a change listener hears another connection's announcements once they are
    /// committed (without payload, no polling): what lets an idle batch worker on the same
    /// machine claim a new task at once. A rolled-back change announces nothing.
    @Test func aSQLiteListenerHearsAnotherConnectionsCommit() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let writer = try ModelRegistry(home: home)
        let listener = try ModelRegistry(home: home).changeListener()
        #expect(try listener.next(timeout: 0) == nil)  // nothing committed since it started
        try writer.register(model("m"), who: "t")
        #expect(try listener.next(timeout: 60) == "")
        #expect(try listener.next(timeout: 0) == nil)  // heard once, however many writes the commit took
        try writer.promote(model: "m", version: 1, alias: "production", who: "t")
        #expect(try listener.next(timeout: 60) == "")
        // A transaction announces at its commit, and not at all when it rolls back.
        let database = try Database(path: home.databasePath)
        #expect(throws: RegistryError.self) {
            try database.transaction { () throws(RegistryError) in
                try database.notify("switchyard_audit", payload: "1")
                throw RegistryError("changed its mind")
            }
        }
        #expect(try listener.next(timeout: 0) == nil)
        try database.transaction { () throws(RegistryError) in try database.notify("switchyard_audit", payload: "2") }
        #expect(try listener.next(timeout: 60) == "")
        // Another channel's announcement is not this listener's.
        try database.notify("switchyard_tasks", payload: "3")
        #expect(try listener.next(timeout: 0) == nil)
    }

    @Test func versionsAreContentAddressedAndImmutable() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        let first = try registry.register(model("credit"), who: "test")
        #expect(first.version.version == 1 && !first.existed)
        let again = try registry.register(model("credit"), who: "test")
        #expect(again.existed && again.version.version == 1)
        let second = try registry.register(model("credit", variant: 1), who: "test")
        #expect(second.version.version == 2)
        #expect(second.version.sha256 != first.version.sha256)
        // The artifact is the canonical bytes, named by their sha256.
        let artifact = home.artifacts.appendingPathComponent("\(first.version.sha256).json")
        let bytes = try Data(contentsOf: artifact)
        #expect(SHA256.hex([UInt8](bytes)) == first.version.sha256)
        #expect(try registry.document(first.version) == model("credit"))

        // A changed artifact is detected, not served.
        try Data("{}".utf8).write(to: artifact)
        #expect { try registry.document(first.version) } throws: { ($0 as? RegistryError)?.message.contains("corrupt") == true }

        // Versions cannot be rewritten, even with SQL.
        let database = try Database(path: home.databasePath)
        #expect(throws: RegistryError.self) { try database.execute("UPDATE versions SET sha256 = 'x' WHERE version = 1") }
    }

    @Test func aliasesPromoteRollBackAndResolve() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        for v in 0..<3 { try registry.register(model("m", variant: Double(v)), who: "alice") }
        #expect(try registry.resolve("m").version == 3)  // no production alias yet: the latest
        #expect(try registry.promote(model: "m", version: 1, alias: "production", who: "alice") == nil)
        #expect(try registry.promote(model: "m", version: 2, alias: "production", who: "bob") == 1)
        #expect(try registry.promote(model: "m", version: 3, alias: "candidate", who: "bob") == nil)
        #expect(try registry.resolve("m").version == 2)
        #expect(try registry.resolve("m@production").version == 2)
        #expect(try registry.resolve("m@candidate").version == 3)
        #expect(try registry.resolve("m@1").version == 1)
        #expect(try registry.resolve("m@2").aliases == ["production"])

        let back = try registry.rollback(model: "m", alias: "production", who: "carol")
        #expect(back.from == 2 && back.to == 1)
        #expect(try registry.resolve("m@production").version == 1)
        let undo = try registry.rollback(model: "m", alias: "production", who: "carol")
        #expect(undo.from == 1 && undo.to == 2)

        let audit = try registry.audit(model: "m")
        #expect(audit.map(\.action) == ["register", "register", "register", "promote", "promote", "promote", "rollback", "rollback"])
        #expect(audit[4].who == "bob" && audit[4].fromVersion == 1 && audit[4].toVersion == 2 && audit[4].alias == "production")
        #expect(audit[6].who == "carol" && audit[6].fromVersion == 2 && audit[6].toVersion == 1)
    }

    @Test func errorsSayWhatExists() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        #expect { try registry.resolve("nope") } throws: { ($0 as? RegistryError)?.message.contains("the registry is empty") == true }
        try registry.register(model("m"), who: "t")
        #expect { try registry.resolve("nope") } throws: { ($0 as? RegistryError)?.message.contains("models: m") == true }
        #expect { try registry.resolve("m@7") } throws: { ($0 as? RegistryError)?.message.contains("versions are 1 to 1") == true }
        #expect { try registry.resolve("m@prod") } throws: { ($0 as? RegistryError)?.message.contains("aliases: none") == true }
        #expect { try registry.promote(model: "m", version: 1, alias: "12", who: "t") } throws: { _ in true }
        #expect { try registry.promote(model: "m", version: 9, alias: "production", who: "t") } throws: { _ in true }
        #expect { try registry.rollback(model: "m", alias: "production", who: "t") } throws: {
            ($0 as? RegistryError)?.message.contains("no alias") == true
        }
        try registry.promote(model: "m", version: 1, alias: "production", who: "t")
        #expect { try registry.register(model("bad name!"), who: "t") } throws: { _ in true }
    }

    @Test func theAuditLogIsAppendOnly() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        try registry.register(model("m"), who: "t")
        let database = try Database(path: home.databasePath)
        #expect(throws: RegistryError.self) { try database.execute("UPDATE audit SET who = 'mallory'") }
        #expect(throws: RegistryError.self) { try database.execute("DELETE FROM audit") }
        #expect(try registry.audit().count == 1)
    }

    @Test func concurrentWritersOnSeparateConnectionsLoseNothing() async throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        _ = try ModelRegistry(home: home)
        let writers = 4, each = 10
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    let registry = try ModelRegistry(home: home)  // its own connection
                    for i in 0..<each {
                        let r = try registry.register(model("shared", variant: Double(w * 100 + i)), who: "writer\(w)")
                        try registry.promote(model: "shared", version: r.version.version, alias: "production", who: "writer\(w)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let registry = try ModelRegistry(home: home)
        let versions = try registry.versions(model: "shared")
        #expect(versions.map(\.version) == Array(1...(writers * each)))
        #expect(Set(versions.map(\.sha256)).count == writers * each)
        let audit = try registry.audit(model: "shared", limit: 10_000)
        #expect(audit.filter { $0.action == "register" }.count == writers * each)
        #expect(audit.filter { $0.action == "promote" }.count == writers * each)
        // Each promote's "from" is the version the alias held just before: the chain is unbroken.
        let promotes = audit.filter { $0.action == "promote" }
        for (a, b) in zip(promotes, promotes.dropFirst()) { #expect(b.fromVersion == a.toVersion) }
        #expect(try registry.resolve("shared@production").version == promotes.last?.toVersion)
    }
}

@Suite struct FleetDirectoryTests {
    /// A process that dies without removing its record stops being listed at once (the
    /// heartbeat is stale) and its record is deleted after the retention; they used to pile up.
    @Test func recordsOfDeadProcessesExpire() throws {
        let home = temporaryHome()
        defer { try? FileManager.default.removeItem(at: home.url) }
        let clock = Clock(Date(timeIntervalSince1970: 1_800_000_000))
        let fleet = try FleetDirectory(home: home, now: { clock.now })
        func member(_ id: String) -> FleetDirectory.Member {
            .init(id: id, kind: "serve", url: "http://127.0.0.1:1", pid: 1, host: "h", model: nil, startedAt: "", heartbeat: clock.now.timeIntervalSince1970)
        }
        try fleet.heartbeat(member("dead"))
        clock.now += 60
        try fleet.heartbeat(member("alive"))
        #expect(try fleet.members().map(\.id) == ["alive"], "a stale heartbeat is not listed")
        #expect(try fleet.expire() == 0, "kept for the retention")
        clock.now += FleetDirectory.retention - 30
        #expect(try fleet.expire() == 1)
        clock.now += 60
        #expect(try fleet.expire() == 1)
        #expect(try fleet.members(maxAge: .infinity).isEmpty)
    }
}

/// A clock a test moves by hand.
final class Clock: @unchecked Sendable {
    // Safety: tests move it from one thread.
    var now: Date
    init(_ now: Date) { self.now = now }
}

/// A file that appears whole or not at all, put together from parts (a split run's output).
@Suite struct AtomicFileTests {
    @Test func partsAreAppendedCheckedSealedAndShownOnce() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-atomic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let a = folder.appendingPathComponent("a.part"), b = folder.appendingPathComponent("b.part")
        try Data("header\n".utf8).write(to: a)
        let big = [UInt8](repeating: 0x41, count: 3 << 20)  // several megabytes: the kernel's copy, in pieces
        try Data(big).write(to: b)
        let target = folder.appendingPathComponent("out.csv")
        let file = try AtomicFile(target)
        try file.write(Array("first\n".utf8))
        try file.append(contentsOf: a.path, expected: 7)
        try file.append(contentsOf: b.path, expected: Int64(big.count))
        // A part whose size is not what its writer recorded is refused, naming it.
        do throws(RegistryError) {
            try file.append(contentsOf: a.path, expected: 8)
            Issue.record("a short part was appended")
        } catch { #expect(error.message.contains("a.part holds 7 bytes, not the 8 its writer recorded"), "\(error.message)") }
        #expect(file.count == 6 + 7 + Int64(big.count))
        try file.seal()
        #expect(!FileManager.default.fileExists(atPath: target.path), "sealed is not shown yet")
        try file.publish()
        #expect(try Data(contentsOf: target) == Data(Array("first\nheader\n".utf8) + big))
        #expect(throws: RegistryError.self) { try file.publish() }
        // Abandoned, it is never shown, and showing it is an error rather than a crash.
        let dropped = try AtomicFile(folder.appendingPathComponent("dropped.csv"))
        try dropped.write(Array("x".utf8))
        dropped.abandon()
        #expect(throws: RegistryError.self) { try dropped.commit() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["a.part", "b.part", "out.csv"])
    }
}
