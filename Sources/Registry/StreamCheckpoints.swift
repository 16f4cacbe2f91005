import ControlProtocol
import Foundation

/// Where a folder-fed stream is: for each file it has seen, in arrival order,
/// the byte offset and line count of what the sink already holds. A commit of
/// several files is one transaction, made after the sink write.
public final class StreamCheckpoints: Sendable {
    private let database: Database

    public struct File: Sendable, Equatable {
        public var name: String
        /// Arrival order (1, 2, …).
        public var seq: Int
        public var offset: Int64
        public var line: Int
    }

    public init(home: Home) throws(RegistryError) {
        database = try Database.open(home)
    }

    /// The files of `stream`, in arrival order.
    public func files(stream: String) throws(RegistryError) -> [File] {
        try database.query("SELECT file, seq, offset, line FROM stream_files WHERE stream = ? ORDER BY seq", [.text(stream)]).map {
            File(name: $0[0].text ?? "", seq: Int($0[1].integer ?? 0), offset: $0[2].integer ?? 0, line: Int($0[3].integer ?? 0))
        }
    }

    /// Records newly seen files, in the order given, after those already known.
    public func add(stream: String, files names: [String]) throws(RegistryError) -> [File] {
        try database.transaction { () throws(RegistryError) in
            var seq = Int(try database.query("SELECT coalesce(max(seq), 0) FROM stream_files WHERE stream = ?", [.text(stream)]).first?.first?.integer ?? 0)
            var added: [File] = []
            for name in names {
                seq += 1
                try database.query(
                    "INSERT INTO stream_files (stream, file, seq, offset, line, updated_at) VALUES (?, ?, ?, 0, 0, ?) ON CONFLICT DO NOTHING",
                    [.text(stream), .text(name), .integer(Int64(seq)), .text(isoTimestamp(Date()))])
                added.append(File(name: name, seq: seq, offset: 0, line: 0))
            }
            return added
        }
    }

    /// Moves files forward to the given offsets and line counts, in one transaction.
    public func commit(stream: String, _ positions: [(file: String, offset: Int64, line: Int)]) throws(RegistryError) {
        guard !positions.isEmpty else { return }
        try database.transaction { () throws(RegistryError) in
            let now = isoTimestamp(Date())
            for p in positions {
                try database.query(
                    "UPDATE stream_files SET offset = ?, line = ?, updated_at = ? WHERE stream = ? AND file = ? AND offset <= ?",
                    [.integer(p.offset), .integer(Int64(p.line)), .text(now), .text(stream), .text(p.file), .integer(p.offset)])
            }
        }
    }

    /// Forgets files that are gone from the folder.
    public func remove(stream: String, files names: [String]) throws(RegistryError) {
        try database.transaction { () throws(RegistryError) in
            for name in names {
                try database.query("DELETE FROM stream_files WHERE stream = ? AND file = ?", [.text(stream), .text(name)])
            }
        }
    }
}
