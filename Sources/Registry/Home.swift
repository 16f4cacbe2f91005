import CSystem
import ControlProtocol
import Foundation

/// SWITCHYARD_HOME: the registry database, model artifacts and component logs.
public struct Home: Sendable {
    public let url: URL

    /// `$SWITCHYARD_HOME`, or `./.switchyard`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Home {
        if let path = environment["SWITCHYARD_HOME"], !path.isEmpty {
            return Home(URL(fileURLWithPath: path))
        }
        return Home(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".switchyard"))
    }

    public init(_ url: URL) { self.url = url.standardizedFileURL }

    public var databasePath: String { url.appendingPathComponent("registry.sqlite").path }
    public var artifacts: URL { url.appendingPathComponent("artifacts") }
    /// Drift baselines of versions, named by their sha256.
    public var baselines: URL { url.appendingPathComponent("baselines") }
    public var logs: URL { url.appendingPathComponent("logs") }

    /// Creates the folders, naming what could not be made.
    public func prepare() throws(RegistryError) {
        for folder in [url, artifacts, logs] {
            do {
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            } catch {
                throw RegistryError("cannot create \(folder.path): \(error.localizedDescription); set SWITCHYARD_HOME to a writable folder")
            }
        }
    }
}

/// A file that appears whole or not at all: bytes go to a temporary file in
/// the same folder; `commit()` fsyncs it, renames it over the final name and
/// fsyncs the folder. Dropped without a commit, the temporary file is removed,
/// so a reader never sees a partial file under the final name.
///
/// Not `durable`, the commit only renames (no fsyncs): for intermediate files (a batch task's
/// part) whose reader checks their size against what the writer recorded.
public final class AtomicFile {
    public let url: URL
    private let temporary: URL
    private var fd: Int32
    private var buffer: [UInt8] = []
    private var done = false
    private let durable: Bool
    /// Bytes written so far (buffered ones included).
    public private(set) var count: Int64 = 0
    /// Bytes written to the file, and how far its writeback was started.
    private var written: Int64 = 0
    private var writebackStarted: Int64 = 0
    /// A durable file's bytes are sent to the disk every this many bytes as it is written, so
    /// the fsync at commit waits for the tail only.
    private static let writebackStep: Int64 = 8 << 20

    public init(_ url: URL, durable: Bool = true) throws(RegistryError) {
        self.url = url
        self.durable = durable
        temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(1 << 20)
    }

    deinit { abandon() }

    /// Buffers `bytes`, writing out every megabyte; a piece of 256 KiB or more is written as it
    /// is (after what is buffered), not copied.
    public func write(_ bytes: [UInt8]) throws(RegistryError) {
        count += Int64(bytes.count)
        if bytes.count >= 1 << 18 {
            try flush()
            guard bytes.withUnsafeBytes(writeOut) else { throw writeError() }
            return
        }
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Appends the whole file at `path`, which must hold `expected` bytes (copied by the kernel,
    /// `copy_file_range`, where it can).
    public func append(contentsOf path: String, expected: Int64) throws(RegistryError) {
        try flush()
        let source = open(path, O_RDONLY | O_CLOEXEC)
        guard source >= 0 else { throw RegistryError("cannot read \(path): \(String(cString: strerror(errno)))", status: 500) }
        defer { close(source) }
        var info = stat()
        guard fstat(source, &info) == 0, Int64(info.st_size) == expected else {
            throw RegistryError("\(path) holds \(info.st_size) bytes, not the \(expected) its writer recorded; it was lost or cut short", status: 500)
        }
        var left = expected
        while left > 0 {
            let n = csystem_copy_file_range(source, fd, UInt(min(left, 1 << 30)))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                // No kernel copy here (another filesystem, an old kernel): read and write.
                guard lseek(source, off_t(expected - left), SEEK_SET) >= 0 else {
                    throw RegistryError("cannot read \(path): \(String(cString: strerror(errno)))", status: 500)
                }
                var chunk = [UInt8](repeating: 0, count: 1 << 20)
                while left > 0 {
                    let r = chunk.withUnsafeMutableBytes { read(source, $0.baseAddress!, $0.count) }
                    if r < 0 && errno == EINTR { continue }
                    guard r > 0 else { throw RegistryError("cannot read \(path): \(r == 0 ? "it ended early" : String(cString: strerror(errno)))", status: 500) }
                    buffer.append(contentsOf: chunk[..<r])
                    try flush()
                    left -= Int64(r)
                }
                break
            }
            left -= Int64(n)
            written += Int64(n)
        }
        count += expected
    }

    public func write(_ data: Data) throws(RegistryError) {
        try write([UInt8](data))
    }

    private func flush() throws(RegistryError) {
        guard buffer.withUnsafeBytes(writeOut) else { throw writeError() }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeError() -> RegistryError {
        RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))")
    }

    /// Writes `bytes` to the file (past what is buffered: flush first); false when the system
    /// refuses (errno says why).
    private func writeOut(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        written += Int64(bytes.count)
        if durable && written - writebackStarted >= Self.writebackStep {
            _ = csystem_start_writeback(fd, writebackStarted, written - writebackStarted)
            writebackStarted = written
        }
        return true
    }

    /// Makes the file visible under its final name, complete and durable.
    public func commit() throws(RegistryError) {
        try seal()
        try publish()
    }

    /// Finishes writing (flushed, fsynced when durable, closed) without showing it yet: for a
    /// file written long before it may appear (a split run's output, published with the run's
    /// other outputs once every task is done).
    public func seal() throws(RegistryError) {
        guard fd >= 0 else {
            if done { throw RegistryError("cannot write \(url.path): it was abandoned") }
            return  // sealed already
        }
        try flush()
        guard !durable || fsync(fd) == 0 else { throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        close(fd)
        fd = -1
    }

    /// Shows a sealed file under its final name.
    public func publish() throws(RegistryError) {
        guard fd < 0, !done else { throw RegistryError("cannot show \(url.path): it is not sealed, or was shown or abandoned already") }
        guard rename(temporary.path, url.path) == 0 else {
            throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))")
        }
        done = true
        let dir = durable ? open(url.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY) : -1
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }

    /// Writes `data` to `url` whole or not at all.
    public static func write(_ data: Data, to url: URL) throws(RegistryError) {
        let file = try AtomicFile(url)
        try file.write(data)
        try file.commit()
    }

    /// Drops what was written; the final name is untouched.
    public func abandon() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !done {
            unlink(temporary.path)
            done = true
        }
    }
}

/// Writes `data` to `url` atomically (see `AtomicFile`).
public func writeAtomically(_ data: Data, to url: URL) throws(RegistryError) {
    let file = try AtomicFile(url)
    try file.write(data)
    try file.commit()
}
