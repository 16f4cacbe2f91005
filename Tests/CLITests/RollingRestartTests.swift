import Foundation
import Glibc
import HTTP
import JSON
import Testing

/// nginx (Debian's nginx-light) on a free loopback port in front of `upstreams`, run from a
/// folder of its own and stopped by its pid. Retries go to the next replica on a refused or
/// dropped connection, for POSTs too (`non_idempotent`: scoring changes nothing), and a replica
/// is never marked down (`max_fails=0`), so a restart costs no request.
final class TestNginx {
    let process = Process()
    let port: Int
    let folder: URL

    init(upstreams: [Int]) throws {
        guard let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CLITestError("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
        }
        folder = try temporaryFolder()
        port = try freePort()
        let servers = upstreams.map { "        server 127.0.0.1:\($0) max_fails=0;" }.joined(separator: "\n")
        let configuration = """
            daemon off;
            worker_processes 1;
            pid \(folder.path)/nginx.pid;
            error_log \(folder.path)/error.log warn;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(folder.path)/body;
                proxy_temp_path \(folder.path)/proxy;
                fastcgi_temp_path \(folder.path)/fastcgi;
                uwsgi_temp_path \(folder.path)/uwsgi;
                scgi_temp_path \(folder.path)/scgi;
                upstream replicas {
            \(servers)
                    keepalive 32;
                }
                server {
                    listen 127.0.0.1:\(port);
                    location / {
                        proxy_pass http://replicas;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_next_upstream error timeout non_idempotent;
                    }
                }
            }

            """
        let file = folder.appendingPathComponent("nginx.conf")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-e", folder.appendingPathComponent("error.log").path, "-p", folder.path, "-c", file.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<2000 {
            if (try? HTTPClient(port: port, timeout: 5).request("GET", "/healthz").status) != nil { return }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        let log = (try? String(contentsOf: folder.appendingPathComponent("error.log"), encoding: .utf8)) ?? ""
        stop()
        throw CLITestError("nginx did not answer on port \(port): \(log)")
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: folder)
    }
}

/// A loopback port nobody listens on now.
func freePort() throws -> Int {
    let probe = HTTPServer(configuration: .init(port: 0, threads: 1)) { _, _ in .error(500, "") }
    let port = try probe.start()
    probe.stop()
    return port
}

@Suite struct RollingRestartTests {
    /// Issue 16 item 6: nginx in front of two serve replicas, wrk loading it the whole time, and the
    /// replicas restarted one at a time (SIGTERM drains; a new process takes the port): wrk sees no
    /// failed request. Each restart waits for its event: the old process to finish draining, the
    /// new one to be ready and to have served traffic through nginx.
    @Test func restartingReplicasOneAtATimeBehindNginxFailsNoRequest() throws {
        guard let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CLITestError("wrk is not installed (apt-get install wrk); .ci/run installs it")
        }
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let key = try switchyard(["keys", "create", "--scope", "read"], home: home).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let ports = [try freePort(), try freePort()]
        func replica(_ port: Int) throws -> RunningSwitchyard {
            let serve = try RunningSwitchyard(["serve", "--model", "credit@production", "--port", "\(port)", "--open", "--threads", "1"], home: home)
            #expect(try serve.servePort() == port)
            return serve
        }
        /// Requests this replica has answered (its status counter).
        func served(_ port: Int) -> Double {
            guard let response = try? HTTPClient(port: port, timeout: 10).request("GET", "/v1/status", headers: [("Authorization", "Bearer \(key)")]),
                  case .number(let n)? = (try? JSONValue.parse(response.body))?["counters"]?["requests"] else { return 0 }
            return n
        }
        var replicas = try ports.map(replica)
        defer { for r in replicas where r.process.isRunning { r.kill(SIGKILL) } }
        let nginx = try TestNginx(upstreams: ports)
        defer { nginx.stop() }

        let script = root.appendingPathComponent("score.lua")
        let record = #"{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        try """
            wrk.method = "POST"
            wrk.body = '{"data": [\(record)]}'
            wrk.headers["Content-Type"] = "application/json"

            """.write(to: script, atomically: true, encoding: .utf8)
        // A duration far beyond the test's: it is stopped with SIGINT (wrk then prints its totals).
        let report = root.appendingPathComponent("wrk.txt")
        let load = try spawnWithSignals(wrk, ["-t1", "-c8", "-d600s", "-s", script.path, "http://127.0.0.1:\(nginx.port)/score"], output: report)
        var loadRunning = true
        defer { if loadRunning { kill(load, SIGKILL); _ = waitFor(load) } }
        #expect(waitUntil { ports.allSatisfy { served($0) > 0 } }, "load reaches both replicas")

        for (index, port) in ports.enumerated() {
            replicas[index].kill(SIGTERM)
            let said = replicas[index].finalText()
            #expect(replicas[index].process.terminationStatus == 0, "\(said)")
            #expect(said.contains("stopped: every request finished"), "\(said)")
            replicas[index] = try replica(port)
            #expect(waitUntil { served(port) > 0 }, "the new replica on \(port) takes traffic")
        }

        kill(load, SIGINT)
        #expect(waitFor(load) == 0)
        loadRunning = false
        let totals = try String(contentsOf: report, encoding: .utf8)
        let requests = totals.split(separator: "\n").first { $0.contains(" requests in ") }
            .flatMap { Int($0.trimmingCharacters(in: .whitespaces).prefix { $0.isNumber }) } ?? 0
        #expect(requests > 0, "\(totals)")
        #expect(!totals.contains("Non-2xx"), "failed requests: \(totals)")
        #expect(!totals.contains("Socket errors"), "\(totals)")
    }
}

/// Polls `condition` until it holds or `deadline` seconds pass (a deadline that only fails a hung test).
func waitUntil(deadline: Double = 30, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(deadline)
    while Date() < end {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Starts `path` with no signal blocked and SIGINT and SIGTERM at their defaults, its standard
/// output and error into `output`. Foundation's Process passes on the spawning thread's signal
/// mask, and a test thread's blocks SIGINT, so a wrk started that way never sees its Ctrl-C.
func spawnWithSignals(_ path: String, _ arguments: [String], environment: [String]? = nil, output: URL) throws -> pid_t {
    let fd = open(output.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw CLITestError("cannot create \(output.path)") }
    defer { close(fd) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGINT)
    sigaddset(&defaults, SIGTERM)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fd, 1)
    posix_spawn_file_actions_adddup2(&actions, fd, 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
    defer { for p in envp ?? [] { free(p) } }
    let rc = envp.map { posix_spawn(&pid, path, &actions, &attributes, argv, $0) } ?? posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    guard rc == 0 else { throw CLITestError("posix_spawn \(path): \(String(cString: strerror(rc)))") }
    return pid
}

/// Waits for a child started by `spawnWithSignals`; its exit status, or 128 + the signal.
func waitFor(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
}
