import Foundation
import Glibc
import HTTP
import Scoring
import Testing

/// The registry as a service, with components and the command line as separate processes that
/// each have their own SWITCHYARD_HOME: nothing shared but the URL and a key.
@Suite struct RegistryProcessTests {
    @Test func componentsAndTheCommandLineWorkThroughTheService() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let registryHome = root.appendingPathComponent("registry"), serveHome = root.appendingPathComponent("serve")
        let cliHome = root.appendingPathComponent("cli")
        let sample = fixtures.appendingPathComponent("credit-sample.csv").path
        #expect(try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--promote", "production"], home: registryHome).status == 0)
        let admin = try switchyard(["keys", "create", "--scope", "admin", "--name", "ops"], home: registryHome).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let registry = try RunningSwitchyard(["registry", "--port", "0"], home: registryHome)
        defer { registry.kill(SIGTERM) }
        let url = "http://127.0.0.1:\(try registry.port())"
        let remote = ["--registry", url, "--key", admin]

        // The command line on another machine: train there, register here; a key for the component.
        let trained = try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--C", "0.1"] + remote, home: cliHome)
        #expect(trained.status == 0, "\(trained.stderr)")
        #expect(trained.stdout.contains("registered credit@2"), "\(trained.stdout)")
        let operate = try switchyard(["keys", "create", "--scope", "operate", "--name", "serve-a"] + remote, home: cliHome)
        #expect(operate.status == 0, "\(operate.stderr)")
        let serveKey = operate.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let list = try switchyard(["models", "list"] + remote, home: cliHome)
        #expect(list.stdout.contains("credit") && list.stdout.contains("production"), "\(list.stdout)")
        #expect(!FileManager.default.fileExists(atPath: cliHome.appendingPathComponent("registry.sqlite").path), "no local registry was made")

        // A serve process with its own home follows the alias moved through the service.
        let serve = try RunningSwitchyard(["serve", "--model", "credit@production", "--port", "0", "--open", "--threads", "1",
                                           "--registry", url, "--key", serveKey], home: serveHome)
        defer { serve.kill(SIGTERM) }
        let servePort = try serve.servePort()
        func servedVersion() -> String? { scoredVersion(port: servePort) }
        #expect(servedVersion() == "1")
        let promoted = try switchyard(["models", "promote", "credit@2"] + remote, home: cliHome)
        #expect(promoted.stdout.contains("credit@production: v1 → v2"), "\(promoted.stdout) \(promoted.stderr)")
        var version: String?
        for _ in 0..<1000 where version != "2" {
            version = servedVersion()
            usleep(20_000)
        }
        #expect(version == "2")
        // A canary: 20% to v1 by routing key, through the service; the serve process splits.
        let routed = try switchyard(["models", "route", "credit", "production", "2=80", "1=20"] + remote, home: cliHome)
        #expect(routed.stdout.contains("credit@production: v2 80% · v1 20% (main version v2)"), "\(routed.stdout) \(routed.stderr)")
        func versions() -> Set<String> {
            Set((0..<40).compactMap { i in
                try? HTTPClient(port: servePort).request("POST", "/score", headers: [("Content-Type", "application/json"), ("x-routing-key", "c\(i)")],
                                                         body: Array(#"{"data": [\#(creditRecord)]}"#.utf8)).headers["x-model-version"]
            })
        }
        var seen = Set<String>()
        for _ in 0..<1000 where seen != ["1", "2"] {
            seen = versions()
            usleep(20_000)
        }
        #expect(seen == ["1", "2"])
        #expect(try switchyard(["models", "show", "credit@2"] + remote, home: cliHome).stdout.contains("production splits: v2 80% · v1 20%"))
        let wrong = try switchyard(["models", "route", "credit", "production", "2=80", "1=30"] + remote, home: cliHome)
        #expect(wrong.status != 0 && wrong.stderr.contains("the weights add up to 110, not 100 (2=80 1=30)"), "\(wrong.stderr)")
        let audit = try switchyard(["models", "audit", "credit"] + remote, home: cliHome)
        #expect(audit.stdout.contains("(ops)") && audit.stdout.contains("promote"), "\(audit.stdout)")
        #expect(audit.stdout.contains("route") && audit.stdout.contains("v2 80% · v1 20%"), "\(audit.stdout)")
        // A component started with a key that cannot read the key table is told so at once.
        let reader = try switchyard(["keys", "create", "--scope", "read"] + remote, home: cliHome).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let weak = try switchyard(["serve", "--model", "credit@production", "--port", "0", "--registry", url, "--key", reader], home: root.appendingPathComponent("weak"))
        #expect(weak.status != 0)
        #expect(weak.stderr.contains("has scope read; a component needs operate"), "\(weak.stderr)")
        // A component's key may not move aliases.
        let refused = try switchyard(["models", "rollback", "credit", "--registry", url, "--key", serveKey], home: cliHome)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("has scope 'operate'; this needs 'admin'"), "\(refused.stderr)")
    }
}
