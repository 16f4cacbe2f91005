import ControlProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One batch run at a time per job, across processes: for a ledger in SWITCHYARD_HOME (one
/// machine), an exclusive `flock` on `SWITCHYARD_HOME/locks/batch-JOB.lock`; for a ledger in
/// PostgreSQL (many machines), a session advisory lock on a connection of the lock's own. Either
/// is held for the whole run and dropped when its holder dies (SIGKILL included: the kernel
/// closes the file or the connection), so a lock that can be taken means every run still marked
/// `running` in the ledger lost its process. The flock's holder writes `pid run` into the file so
/// others can say who holds the job.
///
/// Safety: the descriptor and connection are only used or closed by the owner of the value.
public final class JobLock: @unchecked Sendable {
    public let job: String
    private var fd: Int32
    private var session: PostgresConnection?

    /// Who holds a job's lock, as its holder wrote it.
    public struct Holder: Sendable, Equatable {
        public var pid: Int32
        public var run: Int?
    }

    private init(job: String, fd: Int32, session: PostgresConnection? = nil) {
        self.job = job
        self.fd = fd
        self.session = session
    }

    /// Takes the lock of `job` for the ledger's database (see the type), or nil when another
    /// process holds it; with `wait`, waits until it is free.
    public static func acquire(_ ledger: RunLedger, job: String, wait: Bool = false) throws(RegistryError) -> JobLock? {
        guard case .postgres(let url) = ledger.location else { return try acquire(ledger.home, job: job, wait: wait) }
        let session: PostgresConnection
        do { session = try PostgresConnection(url: url) } catch { throw RegistryError(error.message, status: 503) }
        let key: Database.Value = .text("switchyard batch job " + job)
        while true {
            let got = try session.query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", [key]).first?.first == .integer(1)
            if got { return JobLock(job: job, fd: -1, session: session) }
            guard wait else { return nil }
            usleep(200_000)
        }
    }

    /// Who holds the job's lock, as far as one machine can tell (nil for a PostgreSQL ledger:
    /// the running run in the ledger names it instead).
    public static func holder(_ ledger: RunLedger, job: String) -> Holder? {
        guard case .home = ledger.location else { return nil }
        return holder(ledger.home, job: job)
    }

    deinit { release() }

    private static func path(_ home: Home, _ job: String) throws(RegistryError) -> String {
        let folder = home.url.appendingPathComponent("locks")
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw RegistryError("cannot make \(folder.path): \(error.localizedDescription)")
        }
        // Job names become file names: anything but [A-Za-z0-9._-] is escaped.
        let safe = job.unicodeScalars.map { c -> String in
            (c.properties.isAlphabetic && c.isASCII) || ("0"..."9").contains(c) || c == "." || c == "_" || c == "-"
                ? String(c) : String(format: "%%%02X", c.value)
        }.joined()
        return folder.appendingPathComponent("batch-\(safe).lock").path
    }

    /// Takes the lock, or returns nil at once when another process holds it; with `wait`,
    /// blocks until it is free.
    public static func acquire(_ home: Home, job: String, wait: Bool = false) throws(RegistryError) -> JobLock? {
        let path = try path(home, job)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RegistryError("cannot open \(path): \(String(cString: strerror(errno)))") }
        while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            if errno == EINTR { continue }
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { return nil }
            throw RegistryError("cannot lock \(path): \(String(cString: strerror(e)))")
        }
        let lock = JobLock(job: job, fd: fd)
        lock.record(run: nil)
        return lock
    }

    /// Notes the run this holder is running, for `holder`.
    public func record(run: Int?) {
        guard fd >= 0 else { return }
        let text = Array("\(getpid()) \(run.map(String.init) ?? "-")\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Who holds the job's lock now, as far as its file says (nil when nobody wrote it).
    public static func holder(_ home: Home, job: String) -> Holder? {
        guard let path = try? path(home, job), let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, let pid = Int32(parts[0]) else { return nil }
        return Holder(pid: pid, run: Int(parts[1]))
    }

    public func release() {
        session = nil  // closing the connection ends the session and its lock
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        close(fd)  // closing the last descriptor drops the flock
        fd = -1
    }
}
