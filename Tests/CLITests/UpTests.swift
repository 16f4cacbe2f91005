import Foundation
import Glibc
import HTTP
import Testing

/// `switchyard up --no-console`: everything starts, answers, and stops on Ctrl-C;
/// what cannot start is named. (The console path is .ci/up-check, in tmux.)
@Suite(.serialized) struct UpTests {
    func pids(in logs: URL) -> [pid_t] {
        // Children are found by their environment: SWITCHYARD_HOME is this test's home.
        let home = logs.deletingLastPathComponent().path
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environ.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "SWITCHYARD_HOME=\(home)" }
        }
    }

    /// `up --no-console ARGS`, once it says everything started (60 s only fail a hung start).
    func startUp(_ arguments: [String], home: URL) throws -> RunningSwitchyard {
        let up = try RunningSwitchyard(["up", "--no-console"] + arguments, home: home)
        var ready = false
        for _ in 0..<1200 where !ready {
            ready = up.text.contains("press Ctrl-C")
            usleep(50_000)
        }
        #expect(ready, "\(up.text)")
        return up
    }

    @Test func upStartsEverythingAndCtrlCStopsIt() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        let up = try startUp(["--batch-every", "2s", "--requests", "50"], home: home)
        #expect(up.text.contains("credit@1 (C=1.0"), "two versions are trained")
        #expect(up.text.contains("credit@2 (C=0.1"))
        let children = pids(in: home.appendingPathComponent("logs")).filter { $0 != up.process.processIdentifier }
        #expect(children.count == 4, "serve, batch, stream and the producer")

        // Serve answers, batch writes outputs, stream writes scored events.
        guard let r = up.text.range(of: "serve   http://127.0.0.1:") else { throw CLITestError("no serve address: \(up.text)") }
        let port = Int(up.text[r.upperBound...].prefix { $0.isNumber }) ?? 0
        let key = try String(contentsOf: home.appendingPathComponent("up.key"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var scored = false
        var outputs = false
        for _ in 0..<200 where !(scored && outputs) {
            let client = HTTPClient(port: port)
            let status = (try? client.request("GET", "/v1/status", headers: [("Authorization", "Bearer \(key)")]))?.text
            client.close()
            scored = scored || (status?.contains(#""requests":"#) == true && status?.contains(#""requests":0"#) == false)
            let out = (try? FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("demo/outbox").path)) ?? []
            outputs = out.contains { $0.hasSuffix(".csv") && !$0.contains("rejects") }
            usleep(100_000)
        }
        #expect(scored, "serve counted requests")
        // up's own traffic is well-formed: serve answers it 200, never 400.
        let client = HTTPClient(port: port)
        let status = try client.request("GET", "/v1/status", headers: [("Authorization", "Bearer \(key)")]).text
        client.close()
        #expect(status.contains(#""200":"#) && !status.contains(#""400":"#), "\(status)")
        #expect(outputs, "a batch run wrote an output")
        #expect(FileManager.default.fileExists(atPath: home.appendingPathComponent("logs/serve.log").path))

        up.kill(SIGINT)
        #expect(up.process.terminationStatus == 0, "\(up.text)")
        #expect(up.text.contains("stopped everything switchyard up started"))
        let left = children.filter { Glibc.kill($0, 0) == 0 }
        #expect(left.isEmpty, "processes left behind: \(left)")
    }

    /// SIGKILL gives up no chance to stop its children: they see their lifeline pipe close and stop
    /// themselves (they used to run on, orphaned, serve still answering).
    @Test func childrenStopWhenUpIsKilled() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        let up = try startUp(["--batch-every", "60s", "--rate", "10"], home: home)
        let children = pids(in: home.appendingPathComponent("logs")).filter { $0 != up.process.processIdentifier }
        #expect(children.count == 4, "serve, batch, stream and the producer")
        up.kill(SIGKILL)
        func alive(_ pid: pid_t) -> Bool {
            // A zombie (state Z) has ended; whoever adopted it may not have reaped it yet.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.range(of: ") ", options: .backwards) else { return false }
            return stat[close.upperBound...].first != "Z"
        }
        var left = children
        for _ in 0..<600 where !left.isEmpty {
            left = left.filter(alive)
            usleep(50_000)
        }
        #expect(left.isEmpty, "processes left behind after up was killed: \(left)")
        let log = (try? String(contentsOf: home.appendingPathComponent("logs/serve.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("the parent process is gone; stopping"), "\(log)")
    }

    /// A child that dies is reported with how it died and restarted on the same port (with
    /// backoff while it keeps failing); up and the other children go on.
    @Test func aChildThatDiesIsRestartedOnItsPort() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        let up = try startUp(["--no-traffic", "--batch-every", "60s"], home: home)
        defer { up.kill(SIGINT) }
        guard let r = up.text.range(of: "serve   http://127.0.0.1:") else { throw CLITestError("no serve address: \(up.text)") }
        let port = Int(up.text[r.upperBound...].prefix { $0.isNumber }) ?? 0
        func servePID() -> pid_t? {
            pids(in: home.appendingPathComponent("logs")).first { pid in
                let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
                return command.split(separator: "\0").dropFirst().first == "serve"
            }
        }
        let first = try #require(servePID())
        Glibc.kill(first, SIGKILL)
        var restarted = false
        for _ in 0..<600 where !restarted {
            restarted = up.text.contains("restarted serve")
            usleep(50_000)
        }
        #expect(up.text.contains("serve (pid \(first)) was killed by signal 9; restarting it in 1 s"), "\(up.text)")
        #expect(restarted, "\(up.text)")
        var answered = false
        for _ in 0..<600 where !answered {
            answered = (try? HTTPClient(port: port).request("GET", "/healthz").status) == 200
            if !answered { usleep(50_000) }
        }
        #expect(answered, "the new serve answers on the same port \(port)")
        #expect(servePID() != first)
        let log = (try? String(contentsOf: home.appendingPathComponent("logs/up.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("restarted serve"), "\(log)")
    }

    @Test func whatCannotStartIsNamed() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // A port that is taken: serve cannot start, up says so and stops what it started.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = listen(listener, 1)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let taken = Int(UInt16(bigEndian: address.sin_port))
        let home = folder.appendingPathComponent("home")
        let outcome = try switchyard(["up", "--no-console", "--no-traffic", "--serve-port", "\(taken)"], home: home)
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("serve could not start"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("port \(taken)"), "\(outcome.stderr)")
        #expect(pids(in: home.appendingPathComponent("logs")).isEmpty, "nothing is left running")

        // A home that cannot be written.
        let locked = folder.appendingPathComponent("locked")
        try FileManager.default.createDirectory(at: locked, withIntermediateDirectories: true)
        try Data().write(to: locked.appendingPathComponent("home"))  // a file where the home folder should be
        let refused = try switchyard(["up", "--no-console"], home: locked.appendingPathComponent("home"))
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("is not writable"), "\(refused.stderr)")
    }
}
