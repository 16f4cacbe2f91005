import ControlProtocol
import Foundation
import Glibc
import HTTP
import JSON
import Scoring
import Testing

/// Test hosts: network namespaces on one bridge, each with its own address on 10.213.77.0/24
/// (the bridge itself is .1, so this test process reaches them all). Made and removed by the
/// test; nothing leaves the machine.
final class TestHosts {
    let names: [String]
    private let bridge: String
    private let tag = String(getpid() % 100_000)

    /// Why test hosts cannot be made here, or nil when they can.
    static var unavailable: String? {
        if getuid() != 0 { return "network namespaces need root (CI runs as root)" }
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") { return "ip (iproute2) is not installed" }
        return nil
    }

    init(_ count: Int) throws {
        bridge = "syb\(tag)"
        names = (0..<count).map { "sy\(getpid() % 100_000)h\($0)" }
        try Self.ip(["link", "add", bridge, "type", "bridge"])
        try Self.ip(["addr", "add", "10.213.77.1/24", "dev", bridge])
        try Self.ip(["link", "set", bridge, "up"])
        for (i, name) in names.enumerated() {
            try Self.ip(["netns", "add", name])
            try Self.ip(["link", "add", "syv\(tag)h\(i)", "type", "veth", "peer", "name", "eth0", "netns", name])
            try Self.ip(["link", "set", "syv\(tag)h\(i)", "master", bridge])
            try Self.ip(["link", "set", "syv\(tag)h\(i)", "up"])
            try Self.ip(["netns", "exec", name, "ip", "addr", "add", "\(address(i))/24", "dev", "eth0"])
            try Self.ip(["netns", "exec", name, "ip", "link", "set", "eth0", "up"])
            try Self.ip(["netns", "exec", name, "ip", "link", "set", "lo", "up"])
        }
    }

    func address(_ host: Int) -> String { "10.213.77.\(10 + host)" }

    func remove() {
        for name in names { _ = try? Self.ip(["netns", "del", name]) }  // their veth ends go with them
        _ = try? Self.ip(["link", "del", bridge])
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLITestError("ip \(arguments.joined(separator: " ")): \(output)") }
        return output
    }
}

@Suite(.serialized) struct AcrossHostsTests {
    /// The registry on one host, serve on a second, batch and stream on a third, the console (in
    /// tmux) on a fourth, each with its own SWITCHYARD_HOME and no shared folder. A promotion
    /// reaches every component; the console lists them all and rolls back with b; the registry
    /// killed, the components keep serving and say so; restarted, they recover by themselves.
    @Test(.enabled(if: TestHosts.unavailable == nil, Comment(rawValue: TestHosts.unavailable ?? "")))
    func oneFleetOnFourHosts() throws {
        let hosts = try TestHosts(4)
        defer { hosts.remove() }
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let homes = (0..<4).map { root.appendingPathComponent("host\($0)") }
        let sample = fixtures.appendingPathComponent("credit-sample.csv").path
        #expect(try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--promote", "production"], home: homes[0]).status == 0)
        #expect(try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--C", "0.1"], home: homes[0]).status == 0)
        let admin = try switchyard(["keys", "create", "--scope", "admin", "--name", "ops"], home: homes[0]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let operate = try switchyard(["keys", "create", "--scope", "operate", "--name", "components"], home: homes[0]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let url = "http://\(hosts.address(0)):8079"
        let remote = ["--registry", url, "--key", operate]

        var registry = try RunningSwitchyard(["registry", "--host", hosts.address(0), "--port", "8079"], home: homes[0], namespace: hosts.names[0])
        defer { registry.kill(SIGTERM) }
        _ = try registry.port(host: hosts.address(0))
        let serve = try RunningSwitchyard(["serve", "--host", hosts.address(1), "--port", "8080", "--threads", "1", "--model", "credit@production"] + remote,
                                          home: homes[1], namespace: hosts.names[1])
        defer { serve.kill(SIGTERM) }
        let folder = homes[2].appendingPathComponent("data")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("in"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("events"), withIntermediateDirectories: true)
        let batch = try RunningSwitchyard(["batch", "--host", hosts.address(2), "--port", "8081", "--input", folder.appendingPathComponent("in").path,
                                           "--output", folder.appendingPathComponent("out").path, "--model", "credit@production"] + remote,
                                          home: homes[2], namespace: hosts.names[2])
        defer { batch.kill(SIGTERM) }
        let stream = try RunningSwitchyard(["stream", "--host", hosts.address(2), "--port", "8082", "--source", "dir:" + folder.appendingPathComponent("events").path,
                                            "--sink", "dir:" + folder.appendingPathComponent("scored").path, "--model", "credit@production"] + remote,
                                           home: homes[2], namespace: hosts.names[2])
        defer { stream.kill(SIGTERM) }
        _ = try batch.port(host: hosts.address(2))
        _ = try stream.port(host: hosts.address(2))

        func status(_ host: Int, _ port: Int) -> ComponentStatus? {
            try? ComponentAPI(url: "http://\(hosts.address(host)):\(port)", key: operate, timeout: 2).status()
        }
        func models() -> [String?] {
            [status(1, 8080), status(2, 8081), status(2, 8082)].map { $0?.model?.reference }
        }
        func waitUntil(_ what: String, _ condition: () -> Bool) {
            for _ in 0..<600 where !condition() { usleep(50_000) }
            #expect(condition(), "waited 30 s for \(what): serve, batch, stream on \(models())")
        }
        waitUntil("every component on credit@1") { models() == ["credit@1", "credit@1", "credit@1"] }

        // Promoted through the registry (from this host): every component follows.
        let promoted = try switchyard(["models", "promote", "credit@2", "--registry", url, "--key", admin], home: root.appendingPathComponent("cli"))
        #expect(promoted.status == 0, "\(promoted.stderr)")
        waitUntil("every component on credit@2") { models() == ["credit@2", "credit@2", "credit@2"] }

        // The console on the fourth host finds all of them through the registry and rolls back with b.
        let tmux = Tmux()
        let command = "SWITCHYARD_HOME='\(homes[3].path)' ip netns exec \(hosts.names[3]) '\(switchyardBinary.path)' console --registry \(url) --key \(admin)"
        try tmux.run(["new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "40", command])
        defer { _ = try? tmux.run(["kill-server"]) }
        _ = try tmux.wait("the registry, serve, batch and stream") {
            $0.contains("4 components") && $0.contains("serve serve-") && $0.contains("batch batch-") && $0.contains("stream stream-")
        }
        try tmux.keys("4")  // Models: production is on v2; b rolls it back, after a confirmation
        _ = try tmux.wait("the models view") { $0.contains("Models in the registry") }
        try tmux.keys("b")
        _ = try tmux.wait("the rollback dialog") { $0.contains("Roll credit@production back: v2") && $0.contains("→ v1") }
        try tmux.keys("y")
        _ = try tmux.wait("the rollback done") { $0.contains("credit@production: v2 → v1") }
        waitUntil("every component back on credit@1") { models() == ["credit@1", "credit@1", "credit@1"] }
        try tmux.keys("q")  // the console leaves its host before the host is removed

        // The registry dies: components keep serving and say so; it comes back: they recover.
        registry.kill(SIGKILL)
        func registryUp(_ s: ComponentStatus?) -> Bool? { s?.dependencies.first { $0.name == "registry" }?.up }
        waitUntil("serve to see the registry down") { registryUp(status(1, 8080)) == false }
        let record = try String(contentsOf: fixtures.appendingPathComponent("credit-sample.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        let scored = try ComponentAPI(url: "http://\(hosts.address(1)):8080", key: operate).score(try JSONValue.parse(Array(record.utf8)))
        #expect(scored.modelVersion == "1", "serve keeps serving while the registry is down")
        registry = try RunningSwitchyard(["registry", "--host", hosts.address(0), "--port", "8079"], home: homes[0], namespace: hosts.names[0])
        waitUntil("serve, batch and stream to see the registry back") {
            [status(1, 8080), status(2, 8081), status(2, 8082)].allSatisfy { registryUp($0) == true }
        }
    }
}
