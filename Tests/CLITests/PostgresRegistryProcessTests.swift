import Foundation
import Glibc
import HTTP
import JSON
import Synchronization
import TestSupport
import Testing

/// Two `switchyard registry --store postgres://…` processes on one PostgreSQL database (issue 21):
/// the same state through either, an alias moved through one reaching a component that watches
/// the other, and one of them SIGKILLed mid-traffic losing nothing while the other answers.
@Suite struct PostgresRegistryProcessTests {
    @Test func twoRegistriesOnOneDatabaseAndOneKilledMidTraffic() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let cliHome = root.appendingPathComponent("cli")
        let sample = fixtures.appendingPathComponent("credit-sample.csv").path
        // The operator's first steps go to the database itself: a model and an admin key.
        let direct = ["--registry", server.url]
        let trained = try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--promote", "production"] + direct, home: cliHome)
        #expect(trained.status == 0, "\(trained.stderr)")
        let admin = try switchyard(["keys", "create", "--scope", "admin", "--name", "ops"] + direct, home: cliHome).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let operate = try switchyard(["keys", "create", "--scope", "operate", "--name", "serve"] + direct, home: cliHome).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(admin.hasPrefix("sy_") && operate.hasPrefix("sy_"))
        #expect(!FileManager.default.fileExists(atPath: cliHome.appendingPathComponent("registry.sqlite").path), "nothing went to a local SQLite file")

        let a = try RunningSwitchyard(["registry", "--store", server.url, "--port", "0"], home: root.appendingPathComponent("a"))
        defer { a.kill(SIGKILL) }
        let b = try RunningSwitchyard(["registry", "--store", server.url, "--port", "0"], home: root.appendingPathComponent("b"))
        defer { b.kill(SIGTERM) }
        let urlA = "http://127.0.0.1:\(try a.port())", urlB = "http://127.0.0.1:\(try b.port())"
        #expect(a.text.contains("registry postgres://switchyard@127.0.0.1:\(server.port)/postgres"), "\(a.text)")

        // A second version registered through A is there through B, artifact and all.
        let second = try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--C", "0.1", "--registry", urlA, "--key", admin], home: cliHome)
        #expect(second.stdout.contains("registered credit@2"), "\(second.stdout) \(second.stderr)")
        let shown = try switchyard(["models", "show", "credit@2", "--registry", urlB, "--key", admin], home: cliHome)
        #expect(shown.status == 0 && shown.stdout.contains("credit@2"), "\(shown.stdout) \(shown.stderr)")

        // A serve process that follows B sees a move made through A.
        let serve = try RunningSwitchyard(["serve", "--model", "credit@production", "--port", "0", "--open", "--threads", "1",
                                           "--registry", urlB, "--key", operate], home: root.appendingPathComponent("serve"))
        defer { serve.kill(SIGTERM) }
        let servePort = try serve.servePort()
        func servedVersion() -> String? { scoredVersion(port: servePort) }
        #expect(servedVersion() == "1")
        let promoted = try switchyard(["models", "promote", "credit@2", "--registry", urlA, "--key", admin], home: cliHome)
        #expect(promoted.status == 0, "\(promoted.stderr)")
        var version: String?
        for _ in 0..<1500 where version != "2" {
            version = servedVersion()
            if version != "2" { usleep(20_000) }
        }
        #expect(version == "2")

        // Moves through A, one after another, each acknowledged or not; A is killed after the 10th.
        let portA = try a.port()
        let acknowledged = Mutex<[Int]>([])
        let mover = Thread {
            let client = HTTPClient(port: portA)
            for i in 0..<1000 {
                let target = i % 2 == 0 ? 1 : 2
                guard let response = try? client.request(
                    "POST", "/v1/aliases/credit/staging", headers: [("Authorization", "Bearer \(admin)"), ("Content-Type", "application/json")],
                    body: Array(#"{"version": \#(target)}"#.utf8)), response.status == 200 else { return }
                acknowledged.withLock { $0.append(target) }
            }
        }
        mover.start()
        for _ in 0..<3000 where acknowledged.withLock({ $0.count }) < 10 { usleep(5_000) }
        a.kill(SIGKILL)
        a.process.waitUntilExit()
        for _ in 0..<3000 where !mover.isFinished { usleep(5_000) }
        let moves = acknowledged.withLock { $0 }
        #expect(moves.count >= 10)

        // B answers, and every acknowledged move is in the audit log it serves.
        let audit = try HTTPClient(port: try b.port()).request("GET", "/v1/audit?model=credit", headers: [("Authorization", "Bearer \(admin)")])
        #expect(audit.status == 200)
        guard case .array(let entries)? = try JSONValue.parse(audit.body)["entries"] else {
            Issue.record("no audit entries: \(String(decoding: audit.body, as: UTF8.self))")
            return
        }
        let stagingMoves = entries.filter { $0["alias"] == .string("staging") && $0["action"] == .string("promote") }
        // An alternating move changes the alias every time; one in flight at the kill may have committed too.
        #expect(stagingMoves.count == moves.count || stagingMoves.count == moves.count + 1, "\(stagingMoves.count) audited, \(moves.count) acknowledged")
        #expect(stagingMoves.prefix(moves.count).compactMap { if case .number(let n)? = $0["to"] { Int(n) } else { nil } } == moves)
        // And B still moves aliases that the serve process, following B, picks up.
        let back = try switchyard(["models", "rollback", "credit", "--registry", urlB, "--key", admin], home: cliHome)
        #expect(back.status == 0, "\(back.stderr)")
        for _ in 0..<1500 where version != "1" {
            version = servedVersion()
            if version != "1" { usleep(20_000) }
        }
        #expect(version == "1")
    }
}
