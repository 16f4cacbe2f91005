import CSystem
import Foundation
import JSON
import Registry
import Scoring
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Events read together and committed together: their JSON end to end in
/// `bytes`, each one's range, the source's id for it, and what to commit.
package struct MicroBatch: Sendable {
    package var bytes: [UInt8] = []
    package var events: [Range<Int>] = []
    /// The source's name for each event ("file:line", or a Redis entry id).
    package var sourceIDs: [String] = []
    /// Event time per event from the source (Redis entry ids are milliseconds), or NaN.
    package var sourceTimes: [Double] = []
    /// Events the source could already tell are bad (a CSV line with the wrong field count), by index.
    package var sourceErrors: [Int: String] = [:]
    package var commit: Commit = .files([])

    package enum Commit: Sendable {
        case files([(file: String, offset: Int64, line: Int)])
        case redis([String])
    }

    package var count: Int { events.count }
}

/// How far behind a source is.
package struct Backlog: Sendable {
    /// Events waiting (Redis: group lag plus pending; folder: unread bytes / mean event size).
    package var events: Double
    /// Unread bytes, for a folder.
    package var bytes: Double?
    /// Now minus the event time of the oldest unprocessed event; nil when none is waiting.
    package var ageSeconds: Double?
    /// Events that ever arrived (for the input rate), when the source can tell.
    package var arrived: Double?
}

package protocol StreamSource: AnyObject, Sendable {
    var description: String { get }
    /// The next micro-batch (at most `max` events), or nil when none is waiting yet.
    func read(max: Int, maxBytes: Int) throws -> MicroBatch?
    /// Marks a micro-batch done; called after the sink holds its predictions.
    func commit(_ batch: MicroBatch) throws
    /// Called from the ticker, on its own connection or file handles.
    func backlog() throws -> Backlog
}

/// Lines of JSON (each ending in a line feed) written as a unit.
package struct SinkLines: Sendable {
    package var bytes: [UInt8] = []
    package var ranges: [Range<Int>] = []
    package var ids: [String] = []

    package mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        ranges.removeAll(keepingCapacity: true)
        ids.removeAll(keepingCapacity: true)
    }
}

package protocol StreamSink: AnyObject, Sendable {
    var description: String { get }
    /// Writes predictions and dead letters durably before returning.
    func write(predictions: SinkLines, deadLetters: SinkLines) throws
}

/// A source or sink from its command-line form: `dir:PATH` or `redis://HOST:PORT/STREAM?…`.
package enum Endpoint: Sendable, CustomStringConvertible {
    case folder(URL)
    case redis(RedisAddress)

    package init(_ text: String) throws {
        if text.hasPrefix("dir:") {
            self = .folder(URL(fileURLWithPath: String(text.dropFirst(4))).standardizedFileURL)
        } else if text.hasPrefix("redis://") {
            self = .redis(try RedisAddress(text))
        } else {
            throw RedisError("expected dir:PATH or redis://HOST:PORT/STREAM, got \"\(text)\"")
        }
    }

    package var description: String {
        switch self {
        case .folder(let url): "dir:\(url.path)"
        case .redis(let address): address.description
        }
    }
}

/// The `event_time` member of an event (Unix seconds), read without parsing the whole line.
func eventTime(_ tape: JSONTape) -> Double? {
    guard let node = tape.member(tape.root, "event_time") else { return nil }
    return tape.number(node)
}

// MARK: - Folder source

/// New JSON Lines files in a folder, in arrival order (first seen; then
/// modification time and name), read up to their last complete line and
/// followed as they grow — what Databricks Auto Loader does for cloud storage.
/// Offsets are committed in SQLite after the sink write.
package final class FolderSource: StreamSource, @unchecked Sendable {
    package let directory: URL
    package let stream: String
    private let checkpoints: StreamCheckpoints
    /// Per file: committed and read positions. Guarded by `lock`.
    private var files: [FileState] = []
    private let lock = NSLock()
    private var lastScan: UInt64 = 0
    /// Mean bytes per event, for the backlog estimate.
    private let meanEventBytes = Mutex<Double>(0)

    struct FileState {
        var name: String
        var committedOffset: Int64
        var committedLine: Int
        var readOffset: Int64
        var readLine: Int
    }

    package init(directory: URL, stream: String, checkpoints: StreamCheckpoints) throws {
        self.directory = directory
        self.stream = stream
        self.checkpoints = checkpoints
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw RedisError("the source folder \(directory.path) does not exist")
        }
        files = try checkpoints.files(stream: stream).map {
            FileState(name: $0.name, committedOffset: $0.offset, committedLine: $0.line, readOffset: $0.offset, readLine: $0.line)
        }
    }

    package var description: String { "dir:\(directory.path)" }

    /// Adds files not seen before, oldest modification first.
    private func scan() throws {
        let known = Set(files.map(\.name))
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
            !$0.hasPrefix(".") && !known.contains($0) && ($0.hasSuffix(".jsonl") || $0.hasSuffix(".ndjson") || $0.hasSuffix(".csv"))
        }
        guard !names.isEmpty else { return }
        let dated = names.map { name -> (String, Double) in
            var info = stat()
            stat(directory.appendingPathComponent(name).path, &info)
            return (name, Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
        }.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }
        for file in try checkpoints.add(stream: stream, files: dated.map(\.0)) {
            files.append(FileState(name: file.name, committedOffset: 0, committedLine: 0, readOffset: 0, readLine: 0))
        }
    }

    package func read(max: Int, maxBytes: Int) throws -> MicroBatch? {
        lock.lock()
        defer { lock.unlock() }
        let now = DispatchTime.now().uptimeNanoseconds
        if now - lastScan > 100_000_000 || files.isEmpty {
            try scan()
            lastScan = now
        }
        var batch = MicroBatch()
        var positions: [(file: String, offset: Int64, line: Int)] = []
        for index in files.indices {
            guard batch.count < max && batch.bytes.count < maxBytes else { break }
            let path = directory.appendingPathComponent(files[index].name).path
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }  // gone or unreadable: try again at the next scan
            defer { close(fd) }
            var info = stat()
            fstat(fd, &info)
            let size = Int64(info.st_size)
            var offset = files[index].readOffset
            guard size > offset else { continue }
            if offset > 0 && !Self.followsLineFeed(fd, offset) {
                // The rest of a line longer than a micro-batch (already a dead letter): skip to its
                // end without counting a line, so every later event keeps its line number.
                let resume = Self.offsetAfterLineFeed(fd, from: offset, size: size)
                files[index].readOffset = resume
                positions.append((files[index].name, resume, files[index].readLine))
                offset = resume
                guard size > offset, Self.followsLineFeed(fd, offset) else { continue }
            }
            // Read about what `max` events need (mean size known so far), not the whole
            // byte budget; read more when not even one whole line came in.
            let mean = meanEventBytes.withLock { $0 }
            let room = Int(min(size - offset, Int64(maxBytes - batch.bytes.count)))
            var want = min(room, Swift.max(64 << 10, Int(Double(max - batch.count) * (mean > 0 ? mean * 1.25 : 1024))))
            let base = batch.bytes.count
            var end = base
            var got = 0
            while true {
                batch.bytes.removeLast(batch.bytes.count - base)
                batch.bytes.append(contentsOf: repeatElement(0, count: want))
                got = batch.bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + base, want, off_t(offset)) }
                got = Swift.max(got, 0)
                batch.bytes.removeLast(want - got)
                // Only complete lines: a file still being written is read up to its last line feed.
                end = batch.bytes.count
                while end > base && batch.bytes[end - 1] != 0x0A { end -= 1 }
                if end > base || got < want || want >= room { break }
                want = min(room, want * 4)
            }
            guard got > 0 else {
                batch.bytes.removeLast(batch.bytes.count - base)
                continue
            }
            var line = files[index].readLine
            let csv = files[index].name.hasSuffix(".csv")
            var csvLines: [(line: Int, range: Range<Int>)] = []
            if end == base && base == 0 && got >= maxBytes {
                // One line longer than a whole micro-batch: one dead letter (with its first bytes)
                // rather than a stall; the rest of the line is skipped on the next read.
                line += 1
                let kept = Swift.min(got, 256)
                batch.bytes.removeLast(batch.bytes.count - kept)
                batch.sourceErrors[batch.events.count] = "line \(line) of \(files[index].name) is longer than \(maxBytes) bytes (the micro-batch limit); its first \(kept) bytes are kept here"
                batch.events.append(0..<kept)
                batch.bytes.append(0x0A)
                batch.sourceIDs.append("\(files[index].name):\(line)")
                batch.sourceTimes.append(.nan)
                offset += Int64(got)
                files[index].readOffset = offset
                files[index].readLine = line
                positions.append((files[index].name, offset, line))
                break
            }
            batch.bytes.removeLast(batch.bytes.count - end)
            var start = base
            var i = base
            while i < end && batch.count < max {
                if batch.bytes[i] == 0x0A {
                    line += 1
                    var stop = i
                    if stop > start && batch.bytes[stop - 1] == 0x0D { stop -= 1 }
                    if csv {
                        csvLines.append((line, start..<stop))
                    } else if stop > start && !batch.bytes[start..<stop].allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                        batch.events.append(start..<stop)
                        batch.sourceIDs.append("\(files[index].name):\(line)")
                        batch.sourceTimes.append(.nan)
                    }
                    start = i + 1
                }
                i += 1
            }
            batch.bytes.removeLast(batch.bytes.count - start)  // lines beyond `max` are read next time
            offset += Int64(min(start - base, got))  // a line feed added above is not in the file
            if csv { convertCSV(&batch, from: base, lines: csvLines, file: files[index].name, fd: fd) }
            if start > base {
                files[index].readOffset = offset
                files[index].readLine = line
                positions.append((files[index].name, offset, line))
            }
        }
        guard !positions.isEmpty else { return nil }
        batch.commit = .files(positions)
        if batch.count > 0 {
            meanEventBytes.withLock { $0 = $0 == 0 ? Double(batch.bytes.count) / Double(batch.count) : 0.9 * $0 + 0.1 * Double(batch.bytes.count) / Double(batch.count) }
        }
        return batch
    }

    /// Whether the byte before `offset` is a line feed (the offset starts a line).
    private static func followsLineFeed(_ fd: Int32, _ offset: Int64) -> Bool {
        guard offset > 0 else { return true }
        var byte: UInt8 = 0
        return pread(fd, &byte, 1, off_t(offset - 1)) == 1 && byte == 0x0A
    }

    /// The offset just past the first line feed at or after `from`, or `size` when none has arrived yet.
    private static func offsetAfterLineFeed(_ fd: Int32, from: Int64, size: Int64) -> Int64 {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var at = from
        while at < size {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(at)) }
            guard n > 0 else { break }
            if let i = buffer[..<n].firstIndex(of: 0x0A) { return at + Int64(i) + 1 }
            at += Int64(n)
        }
        return Swift.max(at, from)
    }

    /// CSV files: the header names the fields; each later line becomes a JSON object
    /// (numbers as numbers, empty cells left out) so scoring sees one format. One
    /// record per line: a quoted field may hold commas and quotes, not line feeds.
    private var headers: [String: [String]] = [:]

    private func convertCSV(_ batch: inout MicroBatch, from base: Int, lines: [(line: Int, range: Range<Int>)], file: String, fd: Int32) {
        let raw = Array(batch.bytes[base...])
        batch.bytes.removeLast(batch.bytes.count - base)
        if headers[file] == nil, lines.first?.line != 1 {
            // Resumed past the header: read it again from the file's first line.
            var first = [UInt8](repeating: 0, count: 64 << 10)
            let n = first.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
            if n > 0, let newline = first[..<n].firstIndex(of: 0x0A) { headers[file] = csvFields(Array(first[..<newline])) }
        }
        for (line, range) in lines {
            let text = Array(raw[(range.lowerBound - base)..<(range.upperBound - base)])
            if line == 1 {
                headers[file] = csvFields(text).map { $0.hasPrefix("\u{FEFF}") ? String($0.dropFirst()) : $0 }
                continue
            }
            if text.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let start = batch.bytes.count
            let header = headers[file] ?? []
            let cells = csvFields(text)
            if cells.count != header.count {
                batch.bytes.append(contentsOf: text)
                batch.sourceErrors[batch.events.count] = header.isEmpty
                    ? "no header line in \(file)" : "expected \(header.count) CSV fields (as in the header), got \(cells.count)"
            } else {
                batch.bytes.append(contentsOf: recordJSON(zip(header, cells)))
            }
            batch.events.append(start..<batch.bytes.count)
            batch.bytes.append(0x0A)
            batch.sourceIDs.append("\(file):\(line)")
            batch.sourceTimes.append(.nan)
        }
    }

    package func commit(_ batch: MicroBatch) throws {
        guard case .files(let positions) = batch.commit else { return }
        try checkpoints.commit(stream: stream, positions)
        lock.lock()
        defer { lock.unlock() }
        for p in positions {
            if let i = files.firstIndex(where: { $0.name == p.file }), files[i].committedOffset < p.offset {
                files[i].committedOffset = p.offset
                files[i].committedLine = p.line
            }
        }
    }

    package func backlog() throws -> Backlog {
        lock.lock()
        try? scan()  // files that arrived while paused count too
        let snapshot = files
        lock.unlock()
        var unread: Int64 = 0
        var oldest: (name: String, offset: Int64)?
        var arrived: Int64 = 0
        for file in snapshot {
            var info = stat()
            guard stat(directory.appendingPathComponent(file.name).path, &info) == 0 else { continue }
            let size = Int64(info.st_size)
            arrived += size
            if size > file.committedOffset {
                unread += size - file.committedOffset
                if oldest == nil { oldest = (file.name, file.committedOffset) }
            }
        }
        var mean = meanEventBytes.withLock { $0 }
        var age: Double?
        if let oldest, let handle = FileHandle(forReadingAtPath: directory.appendingPathComponent(oldest.name).path) {
            defer { try? handle.close() }
            try? handle.seek(toOffset: UInt64(oldest.offset))
            if let data = try? handle.read(upToCount: 64 << 10), let newline = data.firstIndex(of: 0x0A) {
                var tape = JSONTape()
                let line = [UInt8](data[data.startIndex..<newline])
                if mean == 0 { mean = Double(line.count + 1) }  // nothing scored yet: the first waiting line's size
                if (try? line.withUnsafeBytes { try tape.parse($0) }) != nil, let t = eventTime(tape) {
                    age = max(0, Date().timeIntervalSince1970 - t)
                }
            }
        }
        return Backlog(events: mean > 0 ? (Double(unread) / mean).rounded() : Double(unread > 0 ? 1 : 0), bytes: Double(unread),
                       ageSeconds: age, arrived: mean > 0 ? Double(arrived) / mean : nil)
    }
}

// MARK: - Folder sink

/// Rolling JSON Lines files: one per micro-batch, `part-NNNNNNNNNN.jsonl`, each
/// appearing atomically; dead letters the same way under `dead-letters/`.
package final class FolderSink: StreamSink, @unchecked Sendable {
    package let directory: URL
    package let deadLetters: URL
    private var seq: Int
    private let lock = NSLock()

    package init(directory: URL) throws {
        self.directory = directory
        deadLetters = directory.appendingPathComponent("dead-letters")
        try FileManager.default.createDirectory(at: deadLetters, withIntermediateDirectories: true)
        var highest = 0
        for folder in [directory, deadLetters] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasPrefix("part-") {
                highest = max(highest, Int(name.dropFirst(5).prefix { $0.isNumber }) ?? 0)
            }
            // Temporary files of a process that died mid-write.
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasPrefix(".part-") && name.hasSuffix(".tmp") {
                let parts = name.split(separator: ".")
                if parts.count >= 4, let pid = Int32(parts[parts.count - 3]), pid != getpid(), kill(pid, 0) != 0 {
                    unlink(folder.appendingPathComponent(name).path)
                }
            }
        }
        seq = highest
    }

    package var description: String { "dir:\(directory.path)" }

    package func write(predictions: SinkLines, deadLetters lines: SinkLines) throws {
        lock.lock()
        defer { lock.unlock() }
        seq += 1
        let name = String(format: "part-%010d.jsonl", seq)
        if !predictions.bytes.isEmpty {
            let file = try AtomicFile(directory.appendingPathComponent(name))
            try file.write(predictions.bytes)
            try file.commit()
        }
        if !lines.bytes.isEmpty {
            let file = try AtomicFile(deadLetters.appendingPathComponent(name))
            try file.write(lines.bytes)
            try file.commit()
        }
    }
}

// MARK: - Redis source

/// A Redis stream read through a consumer group (XREADGROUP with COUNT and
/// BLOCK), acknowledged with XACK after the sink write. At start the consumer
/// re-reads its own pending entries; every few seconds it takes over entries
/// left pending longer than `claimIdle` by a dead consumer (XAUTOCLAIM), so
/// several processes on several machines share one stream.
package final class RedisSource: StreamSource, @unchecked Sendable {
    package let address: RedisAddress
    package let group: String
    package let consumer: String
    private let client: RedisClient
    private let info: Mutex<RedisClient?>
    private let claimIdleMilliseconds: Int
    private var ownPendingDone = false
    private var lastClaim: UInt64 = 0
    /// The client's connection count when its own pending entries were last re-read.
    private var connection = 0
    /// Where a new consumer group starts: `start` in the address, by default "0" (the whole stream).
    private let start: String
    private let lock = NSLock()

    package init(address: RedisAddress) throws {
        self.address = address
        group = address.parameters["group"] ?? "switchyard"
        consumer = address.parameters["consumer"] ?? ProcessInfo.processInfo.hostName
        claimIdleMilliseconds = Int(address.parameters["claim_idle_ms"] ?? "") ?? 30_000
        start = address.parameters["start"] ?? "0"
        client = try RedisClient(host: address.host, port: address.port)
        info = Mutex(try RedisClient(host: address.host, port: address.port))
        try createGroup()
        connection = client.connections
    }

    /// Creates the consumer group (and the stream) unless it exists.
    private func createGroup() throws {
        do {
            try client.command(["XGROUP", "CREATE", address.stream, group, start, "MKSTREAM"])
        } catch let error as RedisError where error.description.contains("BUSYGROUP") {
            // The group exists: carry on from where it is.
        }
    }

    package var description: String { "\(address)?group=\(group)&consumer=\(consumer)" }

    package func read(max: Int, maxBytes: Int) throws -> MicroBatch? {
        lock.lock()
        defer { lock.unlock() }
        do {
            return try readEntries(max: max)
        } catch let error as RedisError where error.description.contains("NOGROUP") {
            // A Redis restarted without its data has no group (and perhaps no stream): make it
            // again from `start`, so events written since the restart are all read.
            try createGroup()
            ownPendingDone = false
            throw RedisError("consumer group \(group) of \(address.stream) was gone (Redis restarted without its data?); created it again from \(start)")
        }
    }

    private func readEntries(max: Int) throws -> MicroBatch? {
        if client.connections != connection {
            // A new connection may be a restarted server: re-read what this consumer holds pending.
            connection = client.connections
            ownPendingDone = false
        }
        var reply: RESP
        if !ownPendingDone {
            // Entries this consumer was given before a restart and never acknowledged.
            reply = try client.command(["XREADGROUP", "GROUP", group, consumer, "COUNT", "\(max)", "STREAMS", address.stream, "0"])
            let entries = reply.elements.first?.elements.dropFirst().first?.elements ?? []
            if entries.isEmpty { ownPendingDone = true } else { return batch(entries) }
        }
        let now = DispatchTime.now().uptimeNanoseconds
        if now - lastClaim > 5_000_000_000 {
            lastClaim = now
            reply = try client.command(["XAUTOCLAIM", address.stream, group, consumer, "\(claimIdleMilliseconds)", "0-0", "COUNT", "\(max)"])
            let claimed = reply.elements.dropFirst().first?.elements.filter { $0.elements.count == 2 } ?? []
            if !claimed.isEmpty { return batch(claimed) }
        }
        client.setReadTimeout(6)
        reply = try client.command(["XREADGROUP", "GROUP", group, consumer, "COUNT", "\(max)", "BLOCK", "100", "STREAMS", address.stream, ">"])
        let entries = reply.elements.first?.elements.dropFirst().first?.elements ?? []
        return entries.isEmpty ? nil : batch(entries)
    }

    /// Entries `[id, [field, value, …]]` → a micro-batch of records: a `data` field holding
    /// JSON, or else the entry's own fields (`XADD events * amount 12000 term 36 …`), numbers
    /// where a value reads as one, as CSV cells are.
    private func batch(_ entries: [RESP]) -> MicroBatch {
        var batch = MicroBatch()
        var ids: [String] = []
        for entry in entries {
            let parts = entry.elements
            guard parts.count == 2, let id = parts[0].text else { continue }
            ids.append(id)
            let data: [UInt8]
            let pairs = parts[1].elements
            if case .bulk(let value?)? = parts[1].fields["data"] {
                data = value
            } else {
                data = recordJSON(stride(from: 0, to: pairs.count - 1, by: 2).map { (pairs[$0].text ?? "", pairs[$0 + 1].text ?? "") })
            }
            let start = batch.bytes.count
            batch.bytes.append(contentsOf: data)
            batch.events.append(start..<batch.bytes.count)
            batch.sourceIDs.append(id)
            batch.sourceTimes.append((Double(id.prefix { $0 != "-" }) ?? .nan) / 1000)
        }
        batch.commit = .redis(ids)
        return batch
    }

    package func commit(_ batch: MicroBatch) throws {
        guard case .redis(let ids) = batch.commit, !ids.isEmpty else { return }
        lock.lock()
        defer { lock.unlock() }
        try client.command(["XACK", address.stream, group] + ids)
    }

    package func backlog() throws -> Backlog {
        try info.withLock { connection -> Backlog in
            if connection == nil { connection = try RedisClient(host: address.host, port: address.port) }
            guard let client = connection else { throw RedisError("no connection") }
            do {
                let groups = try client.command(["XINFO", "GROUPS", address.stream]).elements
                var lag = 0.0, pending = 0.0
                var lastDelivered = "0-0"
                for g in groups {
                    let values = g.fields
                    guard values["name"]?.text == group else { continue }
                    lag = Double(values["lag"]?.integer ?? 0)
                    pending = Double(values["pending"]?.integer ?? 0)
                    lastDelivered = values["last-delivered-id"]?.text ?? "0-0"
                }
                // The oldest waiting event: the oldest pending entry, or the first one not yet delivered.
                var oldest = Double.infinity
                let summary = try client.command(["XPENDING", address.stream, group]).elements
                if summary.count >= 2, let first = summary[1].text { oldest = min(oldest, Double(first.prefix { $0 != "-" }) ?? .infinity) }
                let next = try client.command(["XRANGE", address.stream, "(\(lastDelivered)", "+", "COUNT", "1"]).elements
                if let id = next.first?.elements.first?.text { oldest = min(oldest, Double(id.prefix { $0 != "-" }) ?? .infinity) }
                let added = try client.command(["XINFO", "STREAM", address.stream]).fields["entries-added"]?.integer.map(Double.init)
                return Backlog(events: lag + pending, bytes: nil,
                               ageSeconds: oldest.isFinite && lag + pending > 0 ? max(0, Date().timeIntervalSince1970 - oldest / 1000) : nil,
                               arrived: added)
            } catch {
                connection = nil
                throw error
            }
        }
    }
}

// MARK: - Redis sink

/// Predictions appended to a Redis stream with XADD (MAXLEN ~ N), pipelined per
/// micro-batch; dead letters to `STREAM:dead-letters`.
package final class RedisSink: StreamSink, @unchecked Sendable {
    package let address: RedisAddress
    private let client: RedisClient
    private let maxLength: String
    private let lock = NSLock()

    package init(address: RedisAddress) throws {
        self.address = address
        client = try RedisClient(host: address.host, port: address.port)
        maxLength = address.parameters["maxlen"] ?? "1000000"
    }

    package var description: String { address.description }

    package func write(predictions: SinkLines, deadLetters: SinkLines) throws {
        lock.lock()
        defer { lock.unlock() }
        var commands: [[[UInt8]]] = []
        let head = [Array("XADD".utf8), Array(address.stream.utf8), Array("MAXLEN".utf8), Array("~".utf8), Array(maxLength.utf8), Array("*".utf8)]
        let deadHead = [Array("XADD".utf8), Array("\(address.stream):dead-letters".utf8), Array("MAXLEN".utf8), Array("~".utf8), Array(maxLength.utf8), Array("*".utf8)]
        for (lines, prefix) in [(predictions, head), (deadLetters, deadHead)] {
            for (i, range) in lines.ranges.enumerated() {
                commands.append(prefix + [Array("id".utf8), Array(lines.ids[i].utf8), Array("data".utf8), Array(lines.bytes[range])])
            }
        }
        // Pipelines of at most 1,000 commands keep the reply buffer small.
        var start = 0
        while start < commands.count {
            let end = min(start + 1000, commands.count)
            for reply in try client.pipeline(Array(commands[start..<end])) {
                if case .failure(let error) = reply { throw error }
            }
            start = end
        }
    }
}

/// A JSON object from text fields (a CSV line, a Redis entry): numbers where a value reads
/// as one, text otherwise, empty values left out (missing).
func recordJSON(_ fields: some Sequence<(String, String)>) -> [UInt8] {
    var o = JSONObject()
    for (name, value) in fields where !value.isEmpty {
        o.append(name, DecimalParser.parse(value).map(JSONValue.number) ?? .string(value))
    }
    var writer = JSONWriter()
    writer.value(.object(o))
    return writer.bytes
}

/// The fields of one CSV line (RFC 4180 quoting); a broken line gives no fields.
func csvFields(_ line: [UInt8]) -> [String] {
    var reader = CSVReader()
    var fields: [String] = []
    _ = try? line.withUnsafeBytes { bytes throws(CSVError) in
        try reader.read(bytes, final: true) { r, _ throws(CSVError) in
            fields = (0..<r.fieldCount).map { r.string($0) }
            return false
        }
    }
    return fields
}
