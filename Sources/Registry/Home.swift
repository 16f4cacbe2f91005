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
public final class AtomicFile {
    public let url: URL
    private let temporary: URL
    private var fd: Int32
    private var buffer: [UInt8] = []
    private var done = false

    public init(_ url: URL) throws(RegistryError) {
        self.url = url
        temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(1 << 20)
    }

    deinit { abandon() }

    /// Buffers `bytes`, writing out every megabyte.
    public func write(_ bytes: [UInt8]) throws(RegistryError) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { try flush() }
    }

    public func write(_ data: Data) throws(RegistryError) {
        try write([UInt8](data))
    }

    private func flush() throws(RegistryError) {
        let ok = buffer.withUnsafeBytes { bytes -> Bool in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
        guard ok else { throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Makes the file visible under its final name, complete and durable.
    public func commit() throws(RegistryError) {
        try flush()
        guard fsync(fd) == 0 else { throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))") }
        close(fd)
        fd = -1
        guard rename(temporary.path, url.path) == 0 else {
            throw RegistryError("cannot write \(url.path): \(String(cString: strerror(errno)))")
        }
        done = true
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
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
