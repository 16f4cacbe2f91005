import ControlProtocol
import Foundation
import Registry
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL server of the test's own: `initdb` into a temporary folder, `postgres` on a free
/// loopback port with its socket in that folder, stopped (by its pid) at the end. As root (CI),
/// both run as the `postgres` user the Debian package creates, through `setpriv` (which execs,
/// so the pid is the server's). `.ci/run` installs the `postgresql` package.
final class TestPostgres: @unchecked Sendable {
    let folder: URL
    let port: Int
    private let bin: String
    private var pid: pid_t = 0
    private let asPostgres: [String]

    var url: String { "postgres://switchyard@127.0.0.1:\(port)/postgres" }
    private var data: String { folder.appendingPathComponent("data").path }

    init() throws {
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
    func start() throws {
        let arguments = asPostgres + ["\(bin)/postgres", "-D", data, "-p", "\(port)", "-k", folder.path,
                                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=20"]
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
    func kill() {
        guard pid > 0 else { return }
        Glibc.kill(pid, SIGQUIT)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    func stop() {
        if pid > 0 {
            Glibc.kill(pid, SIGINT)  // fast shutdown
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            pid = 0
        }
        try? FileManager.default.removeItem(at: folder)
    }

    static func freePort() throws -> Int {
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

    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
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

/// The libpq layer the PostgreSQL registry store will stand on (issue 21), against a real server.
@Suite(.serialized) struct PostgresConnectionTests {
    @Test func parameterizedQueriesTransactionsAndTypes() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let db = try PostgresConnection(url: server.url)
        try db.execute("CREATE TABLE versions (id BIGSERIAL PRIMARY KEY, model TEXT NOT NULL, score DOUBLE PRECISION, note TEXT)")
        // Quotes, Unicode and a null go as parameters, never into the SQL text.
        let note = "it's \"quoted\"; DROP TABLE versions; -- 北京 é"
        let inserted = try db.query("INSERT INTO versions (model, score, note) VALUES ($1, $2, $3) RETURNING id", [.text("credit"), .real(0.25), .text(note)])
        #expect(inserted == [[.integer(1)]])
        try db.query("INSERT INTO versions (model, score, note) VALUES ($1, $2, $3)", [.text("credit"), .null, .null])
        let rows = try db.query("SELECT id, model, score, note FROM versions ORDER BY id")
        #expect(rows == [[.integer(1), .text("credit"), .real(0.25), .text(note)], [.integer(2), .text("credit"), .null, .null]])

        // A failing transaction leaves nothing behind, and the error names what failed.
        #expect(throws: RegistryError.self) {
            try db.transaction { () throws(RegistryError) in
                try db.query("INSERT INTO versions (model) VALUES ($1)", [.text("fraud")])
                try db.query("INSERT INTO versions (model) VALUES ($1)", [.null])  // NOT NULL
            }
        }
        #expect(try db.query("SELECT count(*) FROM versions WHERE model = 'fraud'") == [[.integer(0)]])
        do throws(RegistryError) {
            try db.query("SELECT nothing FROM versions")
            Issue.record("a bad query succeeded")
        } catch { #expect(error.message.contains("column \"nothing\" does not exist"), "\(error.message)") }
    }

    @Test func notificationsReachAListenerAndAWaitIsBounded() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let listener = try PostgresConnection(url: server.url)
        let sender = try PostgresConnection(url: server.url)
        try listener.listen("aliases")
        // Nothing sent: the wait ends empty at its timeout.
        #expect(try listener.nextNotification(timeout: 0.05) == nil)
        try sender.notify("aliases", payload: #"{"model":"credit","alias":"production","version":2}"#)
        let notice = try #require(try listener.nextNotification(timeout: 30))
        #expect(notice.channel == "aliases" && notice.payload.contains(#""version":2"#))
        // Inside a transaction, the notification comes at commit.
        try sender.transaction { () throws(RegistryError) in try sender.notify("aliases", payload: "in a transaction") }
        #expect(try listener.nextNotification(timeout: 30)?.payload == "in a transaction")
        #expect(throws: RegistryError.self) { try listener.listen("bad channel; DROP") }
    }

    @Test func aLostServerIsAnErrorAndTheConnectionComesBack() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let db = try PostgresConnection(url: server.url)
        try db.execute("CREATE TABLE t (x INT)")
        server.kill()
        do throws(RegistryError) {
            try db.query("SELECT 1")
            Issue.record("a query on a killed server succeeded")
        } catch { #expect(error.message.contains("PostgreSQL"), "\(error.message)") }
        #expect(!db.isConnected)
        #expect(throws: RegistryError.self) { try db.reconnect(timeout: 2) }
        try server.start()
        try db.reconnect()
        #expect(try db.query("SELECT count(*) FROM t") == [[.integer(0)]])
        // A URL's password is not in messages.
        let nobody = try TestPostgres.freePort()
        do throws(RegistryError) {
            _ = try PostgresConnection(url: "postgres://switchyard:hunter2@127.0.0.1:\(nobody)/postgres", timeout: 2)
            Issue.record("connected to a port nothing listens on")
        } catch {
            #expect(!error.message.contains("hunter2") && error.message.contains("cannot connect to PostgreSQL at postgres://switchyard@127.0.0.1"), "\(error.message)")
        }
    }
}
