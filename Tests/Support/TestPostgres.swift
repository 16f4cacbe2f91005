import ControlProtocol
import Foundation
import Registry

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL server of the test's own: `initdb` into a temporary folder, `postgres` on a free
/// loopback port with its socket in that folder, stopped (by its pid) at the end. As root (CI),
/// both run as the `postgres` user the Debian package creates, through `setpriv` (which execs,
/// so the pid is the server's). `.ci/run` installs the `postgresql` package.
package final class TestPostgres: @unchecked Sendable {
    package let folder: URL
    package let port: Int
    private let bin: String
    private var pid: pid_t = 0
    private let asPostgres: [String]

    package var url: String { "postgres://switchyard@127.0.0.1:\(port)/postgres" }
    private var data: String { folder.appendingPathComponent("data").path }

    package init() throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.sorted().last(where: { FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\($0)/bin/initdb") }) else {
            throw RegistryError("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
        }
        bin = "/usr/lib/postgresql/\(version)/bin"
        folder = URL(fileURLWithPath: "/tmp").appendingPathComponent("switchyard-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if getuid() == 0 {
            guard let user = getpwnam("postgres") else { throw RegistryError("no postgres user to run the server as") }
            chown(folder.path, user.pointee.pw_uid, user.pointee.pw_gid)
            asPostgres = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        } else {
            asPostgres = []
        }
        port = try Self.freePort()
        let initdb = try Self.run(asPostgres + ["\(bin)/initdb", "-D", data, "-U", "switchyard", "--auth=trust", "-E", "UTF8", "--no-sync"])
        guard initdb.status == 0 else { throw RegistryError("initdb failed: \(initdb.output.suffix(400))") }
        try start()
    }

    /// Starts the server and waits until it accepts a connection.
    package func start() throws {
        let arguments = asPostgres + ["\(bin)/postgres", "-D", data, "-p", "\(port)", "-k", folder.path,
                                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"]
        let log = folder.appendingPathComponent("server.log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        guard posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { throw RegistryError("cannot start postgres") }
        for _ in 0..<600 {
            if (try? PostgresConnection(url: url, timeout: 2)) != nil { return }
            usleep(50_000)
        }
        let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.suffix(400) ?? ""
        throw RegistryError("postgres did not accept connections on port \(port) within 30 s: \(tail)")
    }

    /// PostgreSQL's immediate shutdown (SIGQUIT): every backend ends at once, with no checkpoint,
    /// as in a crash; the next start recovers. (A SIGKILL would orphan the backends, which no one
    /// here could reap.)
    package func kill() {
        guard pid > 0 else { return }
        Glibc.kill(pid, SIGQUIT)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    package func stop() {
        if pid > 0 {
            Glibc.kill(pid, SIGINT)  // fast shutdown
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            pid = 0
        }
        try? FileManager.default.removeItem(at: folder)
    }

    package static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw RegistryError("no free port") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    package static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.currentDirectoryURL = URL(fileURLWithPath: "/tmp")
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
