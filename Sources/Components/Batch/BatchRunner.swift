import CSystem
import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring
import Synchronization

/// Input and output formats, by file extension.
package enum BatchFormat: Sendable {
    case csv, jsonLines

    package init?(fileName: String) {
        switch (fileName as NSString).pathExtension.lowercased() {
        case "csv": self = .csv
        case "jsonl", "ndjson": self = .jsonLines
        default: return nil
        }
    }

    var rejectsExtension: String { self == .csv ? "rejects.csv" : "rejects.jsonl" }
}

/// A run's progress, written by the run and read by the control API.
package final class BatchProgress: Sendable {
    package let rowsRead = Atomic<Int>(0)
    package let rowsScored = Atomic<Int>(0)
    package let rowsRejected = Atomic<Int>(0)
    package let bytesDone = Atomic<Int64>(0)
    package let bytesTotal = Atomic<Int64>(0)
    package let cancelled = Atomic<Bool>(false)
    package let file = Mutex<String>("")

    package init() {}
}

/// What scoring one input file gave.
package struct BatchFileResult: Sendable {
    package var input: RunLedger.Input
    package var rowsRead = 0
    package var rowsScored = 0
    package var rowsRejected = 0
    /// Why the file could not be scored at all (unreadable, a header the model cannot use); nil when it was.
    package var error: String?
    /// The sizes of what was written (a task's parts are checked against them when published).
    package var outputBytes: Int64 = 0
    package var rejectsBytes: Int64 = 0
}

/// Scores files: one output per input (id columns, a probability per class,
/// label, model version) and a rejects file beside it (line, reason, record).
///
/// A file is read in chunks that end on a record boundary; chunks are parsed
/// and scored on every core and written in order, so memory is bounded by
/// the chunks in flight, not the file. Outputs are `AtomicFile`s: they appear
/// complete or not at all. Every row read is either scored or rejected.
package struct BatchRunner: Sendable {
    package let scorer: Scorer
    /// `NAME@VERSION`, written on every output row.
    package let model: String
    package let outputDirectory: URL
    /// Columns copied to the output; nil means `id` when the input has it. Without
    /// any, the output carries the input line number instead.
    package var idColumns: [String]?
    package var workers: Int
    package var chunkBytes = 1 << 20
    /// Slows the run to about this many rows a second (nil: as fast as it goes).
    package var rowsPerSecond: Double?
    /// The longest record; a quoted field left open longer than this is rejected.
    package var maxRecordBytes = 8 << 20
    /// Each row's K largest contributions to its label's margin, as columns (nil: none).
    package var explainTop: Int?
    /// Counts every row's inputs (and every scored row's prediction) against the version's
    /// baseline; made with `driftSlots` slots.
    package var drift: DriftMonitor?
    /// The counter slots a run needs: one per chunk in flight.
    package var driftSlots: Int { workers + 2 }

    package init(scorer: Scorer, model: String, outputDirectory: URL, idColumns: [String]? = nil, workers: Int) {
        self.scorer = scorer
        self.model = model
        self.outputDirectory = outputDirectory
        self.idColumns = idColumns
        self.workers = max(1, workers)
    }

    package func outputURL(for input: URL) -> URL { outputDirectory.appendingPathComponent(input.lastPathComponent) }

    package func rejectsURL(for input: URL) -> URL {
        let format = BatchFormat(fileName: input.lastPathComponent) ?? .csv
        let base = (input.lastPathComponent as NSString).deletingPathExtension
        return outputDirectory.appendingPathComponent("\(base).\(format.rejectsExtension)")
    }

    /// Scores one file, or with `part` one task's byte range of it. Progress counts go to
    /// `progress` as chunks are written.
    package func score(_ input: URL, part: BatchPart? = nil, progress: BatchProgress) -> BatchFileResult {
        var result = BatchFileResult(input: .init(name: input.lastPathComponent, size: 0, sha256: ""))
        guard let format = BatchFormat(fileName: input.lastPathComponent) else {
            result.error = "\(input.lastPathComponent): unknown format; inputs are .csv (with a header) or .jsonl"
            return result
        }
        do {
            try FileScoring(runner: self, input: input, format: format, part: part, progress: progress).run(&result)
        } catch {
            result.error = "\(input.lastPathComponent): \(error.message)"
        }
        return result
    }

    /// Cuts `input` into tasks of about `taskBytes` for a run split across workers, reading it
    /// once as a one-process run would (hashing it, finding record ends the same way): each cut
    /// is where one of that run's chunks ends, with the line its next record starts on, so the
    /// tasks' parts put together are that run's output byte for byte.
    package func plan(_ input: URL, taskBytes: Int, onTask: (BatchPart) -> Void = { _ in }) -> BatchFilePlan {
        var plan = BatchFilePlan(input: .init(name: input.lastPathComponent, size: 0, sha256: ""))
        guard let format = BatchFormat(fileName: input.lastPathComponent) else {
            plan.error = "\(input.lastPathComponent): unknown format; inputs are .csv (with a header) or .jsonl"
            return plan
        }
        let fd = open(input.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            plan.error = "\(input.lastPathComponent): cannot open: \(String(cString: strerror(errno)))"
            return plan
        }
        defer { close(fd) }
        do throws(RegistryError) {
            var source = ChunkSource(fd: fd, chunkBytes: chunkBytes, maxRecordBytes: maxRecordBytes, csv: format == .csv)
            var line = 1
            if format == .csv { line += try source.readHeader().newlines }
            var cuts: [(offset: Int64, line: Int)] = [(0, 1)]
            var newlines = 0
            var status = stat()
            let expected = fstat(fd, &status) == 0 ? Int64(status.st_size) : 0
            loop: while true {
                switch try source.next({ newlines = newlineCount($0) }) {
                case .records: line += newlines
                case .oversized: line += 1
                case .end: break loop
                }
                // A file's first tasks are smaller (a quarter, a half, three quarters of
                // `taskBytes`), so workers start sooner; so are its last (half of what is left,
                // down to a quarter), so workers finish together rather than one of them
                // scoring a whole task while the others wait.
                let last = cuts[cuts.count - 1]
                let quarter = Int64(max(1, taskBytes / 4))
                let ramp = quarter * Int64(min(cuts.count, 4))
                let left = expected - last.offset
                if Int64(source.consumed) - last.offset >= min(ramp, max(quarter, left / 2)) {
                    // A task is known as soon as its end is: workers can start on it now.
                    let task = BatchPart(start: last.offset, end: Int64(source.consumed), firstLine: last.line)
                    plan.tasks.append(task)
                    onTask(task)
                    cuts.append((Int64(source.consumed), line))
                }
            }
            let size = Int64(source.consumed)
            if let last = cuts.last, last.offset < size || plan.tasks.isEmpty {
                let task = BatchPart(start: last.offset, end: size, firstLine: last.line)
                plan.tasks.append(task)
                onTask(task)
            }
            plan.input.size = size
            plan.input.sha256 = source.digest()
        } catch {
            plan.error = "\(input.lastPathComponent): \(error.message)"
        }
        return plan
    }
}

/// One task's part of an input file: the records in `start..<end` (a record boundary each), the
/// first on line `firstLine`. Scored into `output` and `rejects` (part files), with the header
/// rows only when it is the file's first part.
package struct BatchPart: Sendable, Equatable {
    package var start: Int64
    package var end: Int64
    package var firstLine: Int
    package var output: URL?
    package var rejects: URL?

    package init(start: Int64, end: Int64, firstLine: Int, output: URL? = nil, rejects: URL? = nil) {
        self.start = start
        self.end = end
        self.firstLine = firstLine
        self.output = output
        self.rejects = rejects
    }
}

/// An input file as planned for a run cut into tasks.
package struct BatchFilePlan: Sendable {
    package var input: RunLedger.Input
    package var tasks: [BatchPart] = []
    /// Why it cannot be scored (unreadable, unknown format); nil when it can.
    package var error: String?
}

// MARK: - One file

/// The state of scoring one file: the reader side runs on the calling thread,
/// chunks are scored on the global concurrent queue, and results are written
/// back on the calling thread in chunk order.
private struct FileScoring {
    let runner: BatchRunner
    let input: URL
    let format: BatchFormat
    /// A task's range, scored into part files; nil: the whole file into its outputs.
    let part: BatchPart?
    let progress: BatchProgress

    func run(_ result: inout BatchFileResult) throws(RegistryError) {
        let fd = open(input.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RegistryError("cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        result.input.size = Int64(info.st_size)

        // A whole file is hashed as it is read; a part was hashed when the run was planned.
        var source = ChunkSource(fd: fd, chunkBytes: runner.chunkBytes, maxRecordBytes: runner.maxRecordBytes, csv: format == .csv,
                                 limit: part.map { $0.end - $0.start }, hashing: part == nil)
        let layout: OutputLayout
        let first = (part?.start ?? 0) == 0
        var nextLine = part?.firstLine ?? 1
        switch format {
        case .csv:
            if first {
                let header = try source.readHeader()
                nextLine += header.newlines
                layout = try OutputLayout(csvHeader: header.fields, runner: runner)
            } else {
                // A later part: the columns from the file's header, then its own records.
                var head = ChunkSource(fd: fd, chunkBytes: 1 << 16, maxRecordBytes: runner.maxRecordBytes, csv: true, limit: part!.start, hashing: false)
                layout = try OutputLayout(csvHeader: try head.readHeader().fields, runner: runner)
            }
        case .jsonLines:
            layout = OutputLayout(jsonIDs: runner.idColumns ?? ["id"], runner: runner)
        }
        if let part, !first, lseek(fd, off_t(part.start), SEEK_SET) != off_t(part.start) {
            throw RegistryError("cannot seek to byte \(part.start): \(String(cString: strerror(errno)))")
        }
        progress.bytesDone.wrappingAdd(Int64(source.consumed), ordering: .relaxed)

        // A task's parts are not fsynced: the run's owner checks their sizes, and fsyncs the output.
        let output = try AtomicFile(part?.output ?? runner.outputURL(for: input), durable: part == nil)
        let rejects = try AtomicFile(part?.rejects ?? runner.rejectsURL(for: input), durable: part == nil)
        if first {
            try output.write(layout.outputHeader)
            try rejects.write(layout.rejectsHeader)
        }

        let window = runner.driftSlots
        // Each chunk counts drift in its own slot: a chunk is scored by one thread at a time.
        var free = (0..<window).map { Chunk(layout: layout, capacity: runner.chunkBytes, slot: $0) }
        var inFlight: [Chunk] = []
        let started = csystem_monotonic_ns()
        var rows = 0

        func complete(_ chunk: Chunk) throws(RegistryError) {
            chunk.done.wait()
            try output.write(chunk.output)
            if !chunk.rejects.isEmpty { try rejects.write(chunk.rejects) }
            result.rowsRead += chunk.rowsRead
            result.rowsScored += chunk.rowsScored
            result.rowsRejected += chunk.rowsRejected
            progress.rowsRead.wrappingAdd(chunk.rowsRead, ordering: .relaxed)
            progress.rowsScored.wrappingAdd(chunk.rowsScored, ordering: .relaxed)
            progress.rowsRejected.wrappingAdd(chunk.rowsRejected, ordering: .relaxed)
            progress.bytesDone.wrappingAdd(Int64(chunk.input.count), ordering: .relaxed)
            rows += chunk.rowsRead
            if let limit = runner.rowsPerSecond, limit > 0 {
                let due = Double(rows) / limit
                let elapsed = Double(csystem_monotonic_ns() - started) / 1e9
                if due > elapsed { usleep(UInt32(min(due - elapsed, 10) * 1e6)) }
            }
            free.append(chunk)
        }

        while true {
            if progress.cancelled.load(ordering: .relaxed) {
                for chunk in inFlight { chunk.done.wait() }
                output.abandon()
                rejects.abandon()
                throw RegistryError("cancelled")
            }
            if free.isEmpty { try complete(inFlight.removeFirst()) }
            let chunk = free.removeLast()
            let next = try source.next(into: &chunk.input)
            if case .oversized(let length, let prefix) = next {
                // One record too long to hold: a reject with its line and length, in line order
                // (the chunks before it are written first); the file goes on.
                free.append(chunk)
                while !inFlight.isEmpty { try complete(inFlight.removeFirst()) }
                var row: [UInt8] = []
                layout.appendReject(
                    line: nextLine, reason: "the line is \(length) bytes, longer than the \(runner.maxRecordBytes)-byte limit for one record; its first \(prefix.count) bytes are shown",
                    record: prefix, to: &row)
                try rejects.write(row)
                result.rowsRead += 1
                result.rowsRejected += 1
                progress.rowsRead.wrappingAdd(1, ordering: .relaxed)
                progress.rowsRejected.wrappingAdd(1, ordering: .relaxed)
                nextLine += 1
                continue
            }
            guard case .records = next else {
                free.append(chunk)
                break
            }
            chunk.firstLine = nextLine
            nextLine += newlineCount(chunk.input)
            inFlight.append(chunk)
            DispatchQueue.global(qos: .userInitiated).async {
                chunk.process()
                chunk.done.signal()
            }
        }
        while !inFlight.isEmpty { try complete(inFlight.removeFirst()) }
        if part == nil { result.input.sha256 = source.digest() }
        try output.commit()
        try rejects.commit()
        result.outputBytes = output.count
        result.rejectsBytes = rejects.count
    }
}

/// The line feeds in `bytes` (memchr from one to the next: the C library's vector search).
private func newlineCount(_ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes(newlineCount)
}

private func newlineCount(_ raw: UnsafeRawBufferPointer) -> Int {
    guard var p = raw.baseAddress else { return 0 }
    let end = p + raw.count
    var n = 0
    while p < end, let found = memchr(p, 0x0A, end - p) {
        n += 1
        p = UnsafeRawPointer(found) + 1
    }
    return n
}

// MARK: - Reading chunks

/// Reads a file in chunks that end where a record ends, hashing every byte (with `hashing`), up
/// to `limit` bytes from where the descriptor is (nil: to the end).
private struct ChunkSource {
    let fd: Int32
    let chunkBytes: Int
    let maxRecordBytes: Int
    let csv: Bool
    /// Bytes read but not yet handed out (the start of an unfinished record).
    private var carry: [UInt8] = []
    private var eof = false
    private var hasher = SHA256()
    private let hashing: Bool
    /// Bytes left to read (nil: no limit).
    private var left: Int64?
    /// Bytes handed out so far.
    private(set) var consumed = 0

    init(fd: Int32, chunkBytes: Int, maxRecordBytes: Int, csv: Bool, limit: Int64? = nil, hashing: Bool = true) {
        self.fd = fd
        self.chunkBytes = chunkBytes
        self.maxRecordBytes = maxRecordBytes
        self.csv = csv
        self.hashing = hashing
        left = limit
    }

    mutating func digest() -> String { SHA256.hexString(hasher.finalize()) }

    /// Reads until `carry` holds at least `want` bytes or the file ends.
    private mutating func fill(_ want: Int) throws(RegistryError) {
        while carry.count < want && !eof {
            let old = carry.count
            // At least 64 KiB a read (fewer system calls), or a chunk when chunks are smaller (tests
            // and fuzzing cut files into many small chunks that way).
            var room = max(want - old, min(1 << 16, chunkBytes))
            if let left {
                guard left > 0 else {
                    eof = true
                    break
                }
                room = Int(min(Int64(room), left))
            }
            carry.reserveCapacity(old + room)
            carry.append(contentsOf: repeatElement(0, count: room))
            let got = carry.withUnsafeMutableBytes { buffer -> Int in
                var r: Int
                repeat { r = read(fd, buffer.baseAddress! + old, room) } while r < 0 && errno == EINTR
                return r
            }
            guard got >= 0 else {
                carry.removeLast(room)
                throw RegistryError("read failed: \(String(cString: strerror(errno)))")
            }
            carry.removeLast(room - got)
            if got == 0 { eof = true }
            if let remaining = left { left = remaining - Int64(got) }
            if hashing { carry.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[old..<(old + got)])) } }
        }
    }

    /// The header record's fields and how many line ends it spans.
    mutating func readHeader() throws(RegistryError) -> (fields: [String], newlines: Int) {
        var want = 1 << 16
        while true {
            try fill(want)
            var reader = CSVReader()
            var fields: [String]?
            let used: Int
            do {
                used = try carry.withUnsafeBytes { bytes throws(CSVError) -> Int in
                    try reader.read(bytes, final: eof) { r, _ throws(CSVError) in
                        fields = (0..<r.fieldCount).map { r.string($0) }
                        return false
                    }
                }
            } catch {
                throw RegistryError("the header is not valid CSV: \(error)")
            }
            if let fields {
                let newlines = carry[..<used].reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
                carry.removeFirst(used)
                consumed += used
                return (fields.map { $0.hasPrefix("\u{FEFF}") ? String($0.dropFirst()) : $0 }, newlines)
            }
            if eof { throw RegistryError("the file is empty; a CSV input starts with a header line naming its columns") }
            guard want < maxRecordBytes else { throw RegistryError("the header line is longer than \(maxRecordBytes) bytes") }
            want *= 4
        }
    }

    enum Next {
        /// `chunk` holds whole records.
        case records
        /// One line longer than `maxRecordBytes` was passed over: its length (without the line
        /// feed) and its first bytes. It spans one line.
        case oversized(length: Int, prefix: [UInt8])
        case end
    }

    /// Puts the next chunk (whole records) into `chunk`, or passes over a line too long to hold.
    ///
    /// A line of `maxRecordBytes` or more (without its line feed) is always passed over as one
    /// reject, however the reads happened to fall: a chunk ends before it, and it is passed over
    /// when it comes first. (A read can hold a whole long line; without this, whether it was
    /// parsed would depend on where the reading started, and a task's part would differ from the
    /// same records read in one pass.)
    ///
    /// The records are not copied: `chunk` takes the buffer they were read into, and the bytes
    /// after them (the start of the next record) move to `chunk`'s old buffer, which reads on.
    mutating func next(into chunk: inout [UInt8]) throws(RegistryError) -> Next {
        let next = try nextCut()
        guard case .records(let cut) = next else { return next.outcome }
        chunk.removeAll(keepingCapacity: true)
        chunk.append(contentsOf: carry[cut...])
        swap(&chunk, &carry)
        chunk.removeLast(chunk.count - cut)
        consumed += cut
        return .records
    }

    /// `next`, handing the chunk's records to `take` in place (the planner of a split run only
    /// counts their lines).
    mutating func next(_ take: (UnsafeRawBufferPointer) -> Void) throws(RegistryError) -> Next {
        let next = try nextCut()
        guard case .records(let cut) = next else { return next.outcome }
        carry.withUnsafeBytes { take(UnsafeRawBufferPointer(rebasing: $0[..<cut])) }
        carry.removeFirst(cut)
        consumed += cut
        return .records
    }

    /// What `next` finds: the records are `carry[..<cut]`, not yet taken.
    private enum Cut {
        case records(Int)
        case other(Next)

        var outcome: Next {
            switch self {
            case .records: .records
            case .other(let next): next
            }
        }
    }

    private mutating func nextCut() throws(RegistryError) -> Cut {
        var want = chunkBytes
        while true {
            try fill(min(want, maxRecordBytes))
            if carry.isEmpty { return .other(.end) }
            var end = recordBoundary()
            if (end ?? 0) == 0 {
                if eof {
                    end = carry.count  // the last record, without a line end
                } else if carry.count >= maxRecordBytes {
                    // No record ends within the limit and no line end either (`recordBoundary`
                    // cuts an over-long quoted record at a line end): the first line is too long.
                    return .other(try passOverLongLine())
                }
            }
            if let boundary = end, boundary > 0 {
                let cut = carry.count >= maxRecordBytes ? firstLongLine(before: boundary) ?? boundary : boundary
                if cut == 0 { return .other(try passOverLongLine()) }
                return .records(cut)
            }
            want = carry.count * 2
        }
    }

    /// Where the first line of `maxRecordBytes` or more bytes in `carry[..<limit]` starts; nil when
    /// there is none. (Only a window of at least that many bytes can hold one.)
    private func firstLongLine(before limit: Int) -> Int? {
        carry.withUnsafeBytes { bytes -> Int? in
            guard let base = bytes.baseAddress else { return nil }
            var start = 0
            while start < limit {
                guard let found = memchr(base + start, 0x0A, limit - start) else {
                    return limit - start >= maxRecordBytes ? start : nil
                }
                let newline = UnsafeRawPointer(found) - base
                if newline - start >= maxRecordBytes { return start }
                start = newline + 1
            }
            return nil
        }
    }

    /// Reads past the line `carry` starts (no line feed in it yet), keeping only its first bytes.
    private mutating func passOverLongLine() throws(RegistryError) -> Next {
        let prefix = Array(carry.prefix(256))
        var length = 0
        while true {
            if let end = carry.firstIndex(of: 0x0A) {
                length += end
                carry.removeFirst(end + 1)
                consumed += end + 1
                return .oversized(length: length, prefix: prefix)
            }
            length += carry.count
            consumed += carry.count
            carry.removeAll(keepingCapacity: true)
            if eof { return .oversized(length: length, prefix: prefix) }
            try fill(1 << 16)
        }
    }

    /// The offset after the last complete record in `carry`, or nil.
    ///
    /// A quoted field that stays open for `maxRecordBytes` from its record's start is broken: the
    /// chunk ends at the record's last line end within that limit (the parser rejects the record
    /// there), so the file is never held in memory for it. The cut depends only on where the record
    /// starts, never on how much was read, so a split run's task cuts every record where one pass
    /// would.
    private func recordBoundary() -> Int? {
        carry.withUnsafeBytes { bytes -> Int? in
            let n = bytes.count
            guard n > 0 else { return nil }
            let base = bytes.baseAddress!
            if !csv || memchr(base, Int32(UInt8(ascii: "\"")), n) == nil {
                var i = n - 1
                while i >= 0 && bytes[i] != 0x0A { i -= 1 }
                return i >= 0 ? i + 1 : nil
            }
            // Quotes present: follow the CSV grammar (a quote opens a field only at
            // its start; a broken record is skipped to its line end, as the parser does).
            var state = 0  // 0 field start, 1 unquoted, 2 quoted, 3 quote in quoted, 4 skipping
            var boundary: Int?
            var recordStart = 0
            var lineEnd: Int?  // after the last line feed inside the current record
            var i = 0
            while i < n {
                let b = bytes[i]
                var ended = false
                switch state {
                case 0:
                    if b == 0x22 { state = 2 } else if b == 0x0A { ended = true } else if b != 0x2C { state = 1 }
                case 1:
                    if b == 0x2C { state = 0 } else if b == 0x0A { ended = true; state = 0 } else if b == 0x22 { state = 4 }
                case 2:
                    if b == 0x22 { state = 3 } else if b == 0x0A { lineEnd = i + 1 }
                case 3:
                    if b == 0x22 { state = 2 } else if b == 0x2C { state = 0 } else if b == 0x0A { ended = true; state = 0 } else { state = 4 }
                default:
                    if b == 0x0A { ended = true; state = 0 }
                }
                if ended {
                    boundary = i + 1
                    recordStart = i + 1
                    lineEnd = nil
                } else if i + 1 - recordStart >= maxRecordBytes {
                    // Open for the whole limit: the chunk ends at its last line end, so the parser
                    // meets the cut too (it rejects the broken record there, whatever was read after
                    // it); with none, its first line is too long (the caller passes it over).
                    return lineEnd ?? boundary
                }
                i += 1
            }
            return boundary
        }
    }
}

// MARK: - Output layout

/// How output rows are written: the header, id columns, and the fixed text
/// after the probabilities (label and model version) per class.
private struct OutputLayout: Sendable {
    let format: BatchFormat
    let scorer: Scorer
    /// CSV: input column → schema field (-1: not a model field).
    let columnFields: [Int]
    let columnCount: Int
    /// CSV: input columns copied to the output; JSON Lines: member names.
    let idColumns: [Int]
    let idNames: [String]
    let outputHeader: [UInt8]
    let rejectsHeader: [UInt8]
    /// Per class: `,label,model\n` (CSV) or `},"label":"…","model_version":"…"}\n` (JSON Lines);
    /// a regression's one: `,model\n` or `,"model_version":"…"}\n`.
    let tails: [[UInt8]]
    /// The longest of `tails`.
    var longestTail: Int { tails.map(\.count).max() ?? 0 }
    /// JSON Lines: `"probabilities":{"c0":` then `,"c1":` …; a regression's `"value":`.
    let probabilityKeys: [[UInt8]]
    /// `--explain top=K`: K; the tails then leave the row open for the explanation and its end.
    let explainTop: Int?
    /// The run's drift counters, and for CSV, each category field's model codes → drift bins.
    let drift: DriftMonitor?
    let driftCodeBins: [[Int]]

    init(csvHeader: [String], runner: BatchRunner) throws(RegistryError) {
        format = .csv
        scorer = runner.scorer
        columnCount = csvHeader.count
        var index: [String: Int] = [:]
        for (i, name) in csvHeader.enumerated() where index[name] == nil { index[name] = i }
        var fields = [Int](repeating: -1, count: csvHeader.count)
        var absent: [String] = []
        for (f, name) in scorer.fieldNames.enumerated() {
            if let column = index[name] { fields[column] = f } else if !scorer.canBeMissing(field: f) { absent.append(name) }
        }
        guard absent.isEmpty else {
            throw RegistryError(
                "the header lacks \(absent.map { "\"\($0)\"" }.joined(separator: ", ")), which \(runner.model) needs; the header has: \(csvHeader.joined(separator: ","))")
        }
        columnFields = fields
        drift = runner.drift
        driftCodeBins = runner.drift?.categoryCodeBins(runner.scorer) ?? []
        let ids = runner.idColumns ?? (index["id"] != nil ? ["id"] : [])
        var idColumns: [Int] = []
        for name in ids {
            guard let column = index[name] else {
                throw RegistryError("--id names column \"\(name)\", which the header lacks; the header has: \(csvHeader.joined(separator: ","))")
            }
            idColumns.append(column)
        }
        self.idColumns = idColumns
        idNames = ids
        var header = (ids.isEmpty ? ["line"] : ids).map(csvField)
        header += scorer.isRegression ? ["value"] : scorer.classes.map { csvField("probability_\($0)") } + ["label"]
        header += ["model_version"]
        explainTop = runner.explainTop
        for k in 1...max(1, runner.explainTop ?? 0) where runner.explainTop != nil { header += ["explain_\(k)_field", "explain_\(k)_contribution"] }
        outputHeader = Array((header.joined(separator: ",") + "\n").utf8)
        rejectsHeader = Array("line,reason,record\n".utf8)
        let end = runner.explainTop == nil ? "\n" : ""
        tails = scorer.isRegression
            ? [Array(",\(csvField(runner.model))\(end)".utf8)]
            : scorer.classes.map { Array(",\(csvField($0)),\(csvField(runner.model))\(end)".utf8) }
        probabilityKeys = []
    }

    init(jsonIDs: [String], runner: BatchRunner) {
        format = .jsonLines
        scorer = runner.scorer
        columnFields = []
        drift = runner.drift
        driftCodeBins = []
        columnCount = 0
        idColumns = []
        idNames = jsonIDs
        outputHeader = []
        rejectsHeader = []
        explainTop = runner.explainTop
        let end: [UInt8] = runner.explainTop == nil ? [0x7D, 0x0A] : []
        let version = #""model_version":\#(JSONWriter.text(.string(runner.model)))"#
        if scorer.isRegression {
            tails = [Array(("," + version).utf8) + end]
            probabilityKeys = [Array(#""value":"#.utf8)]
        } else {
            tails = scorer.classes.map { Array(#"},"label":\#(JSONWriter.text(.string($0))),"#.utf8) + Array(version.utf8) + end }
            probabilityKeys = scorer.classes.enumerated().map { k, c in
                Array(((k == 0 ? #""probabilities":{"# : ",") + JSONWriter.text(.string(c)) + ":").utf8)
            }
        }
    }
}

extension OutputLayout {
    /// `--explain top=K`: the K largest contributions to the row's label margin (a binary model's one
    /// margin), as CSV columns (field, contribution; empty when the model has fewer fields) or a
    /// JSON `"explanation"` member, then the row's end.
    func appendExplanation(_ explanation: Explanation?, label: Int, to output: inout [UInt8]) {
        guard let top = explainTop else { return }
        var largest: [(field: String, value: Double)] = []
        if let explanation {
            let margin = explanation.base.count == 1 ? 0 : label
            let values = explanation.contributions[margin]
            let order = values.indices.sorted { abs(values[$0]) > abs(values[$1]) }
            for f in order.prefix(top) { largest.append((scorer.fieldNames[f], values[f])) }
        }
        switch format {
        case .csv:
            for i in 0..<top {
                output.append(0x2C)
                if i < largest.count {
                    output.append(contentsOf: csvField(largest[i].field).utf8)
                    output.append(0x2C)
                    output.append(contentsOf: JSONWriter.numberText(largest[i].value).utf8)
                } else {
                    output.append(0x2C)
                }
            }
            output.append(0x0A)
        case .jsonLines:
            output.append(contentsOf: #","explanation":["#.utf8)
            for (i, item) in largest.enumerated() {
                if i > 0 { output.append(0x2C) }
                output.append(contentsOf: #"{"field":"#.utf8)
                output.append(contentsOf: JSONWriter.text(.string(item.field)).utf8)
                output.append(contentsOf: #","contribution":"#.utf8)
                output.append(contentsOf: JSONWriter.numberText(item.value).utf8)
                output.append(0x7D)
            }
            output.append(contentsOf: "]}\n".utf8)
        }
    }

    /// One row of the rejects file: the line, the reason, and the record as it was.
    func appendReject(line: Int, reason: String, record: some Collection<UInt8>, to rejects: inout [UInt8]) {
        switch format {
        case .csv:
            rejects.appendDecimal(line)
            rejects.append(0x2C)
            rejects.append(contentsOf: csvField(reason).utf8)
            rejects.append(0x2C)
            Array(record).withUnsafeBytes { appendCSVField($0, to: &rejects) }
            rejects.append(0x0A)
        case .jsonLines:
            var o = JSONObject()
            o.append("line", .number(Double(line)))
            o.append("reason", .string(reason))
            o.append("record", .string(String(decoding: record, as: UTF8.self)))
            rejects.append(contentsOf: JSONWriter.text(.object(o)).utf8)
            rejects.append(0x0A)
        }
    }
}

private func csvField(_ text: String) -> String {
    guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
    return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

private func appendCSVField(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
    var needsQuotes = false
    for b in bytes where b == 0x2C || b == 0x22 || b == 0x0A || b == 0x0D {
        needsQuotes = true
        break
    }
    guard needsQuotes else {
        out.append(contentsOf: bytes)
        return
    }
    out.append(0x22)
    for b in bytes {
        if b == 0x22 { out.append(0x22) }
        out.append(b)
    }
    out.append(0x22)
}

/// A record's outcome number (`writeOutcome`), appended.
@inline(__always)
func appendOutcome(_ v: Double, regression: Bool, to out: inout [UInt8]) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
        let count = writeOutcome(v, regression: regression, to: buffer.baseAddress!)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<count]))
    }
}

/// Writes a record's outcome number at `cursor` and says how many bytes it took (at most 32): a
/// regression's value in full; a probability of at least 1e-4 (8 or more significant digits)
/// with 12 decimals, trailing zeros dropped; a smaller one in full.
@inline(__always)
func writeOutcome(_ v: Double, regression: Bool, to cursor: UnsafeMutablePointer<UInt8>) -> Int {
    guard !regression, v >= 1e-4, v <= 1 else {
        if !regression && v == 0 {
            cursor.pointee = 0x30
            return 1
        }
        var text = JSONWriter.numberText(v)  // 24 characters at most ("-2.2250738585072014e-308")
        return text.withUTF8 { utf8 in
            let count = min(utf8.count, 32)
            cursor.update(from: utf8.baseAddress!, count: count)
            return count
        }
    }
    // Rounded half away from zero, as `rounded()` (a call into libm) would: for v·1e12 between
    // 1e8 and 1e12 adding 0.5 is exact, and the conversion truncates.
    let scaled = UInt64(v * 1e12 + 0.5)
    if scaled >= 1_000_000_000_000 {
        cursor.pointee = 0x31
        return 1
    }
    cursor[0] = 0x30
    cursor[1] = 0x2E
    // The 12 decimals, zero-padded, as two halves of six (two short chains of divisions the
    // processor runs side by side, rather than one of twelve); then trailing zeros dropped (one
    // digit at least is not zero: the value is 1e-4 or more).
    var high = UInt32(truncatingIfNeeded: scaled / 1_000_000), low = UInt32(truncatingIfNeeded: scaled % 1_000_000)
    for i in stride(from: 7, through: 2, by: -1) {
        cursor[i] = UInt8(truncatingIfNeeded: 0x30 &+ high % 10)
        cursor[i + 6] = UInt8(truncatingIfNeeded: 0x30 &+ low % 10)
        high /= 10
        low /= 10
    }
    var count = 14
    while cursor[count - 1] == 0x30 { count -= 1 }
    return count
}

/// Writes bytes through a pointer, into room the caller made (no checks).
private struct RowWriter {
    private(set) var cursor: UnsafeMutablePointer<UInt8>

    init(_ start: UnsafeMutablePointer<UInt8>) { cursor = start }

    @inline(__always)
    mutating func byte(_ b: UInt8) {
        cursor.pointee = b
        cursor += 1
    }

    @inline(__always)
    mutating func bytes(_ source: UnsafeRawBufferPointer) {
        guard let base = source.baseAddress, source.count > 0 else { return }
        UnsafeMutableRawPointer(cursor).copyMemory(from: base, byteCount: source.count)
        cursor += source.count
    }

    /// A non-negative decimal (a line number).
    @inline(__always)
    mutating func decimal(_ value: Int) {
        var digits = 1, v = value
        while v >= 10 {
            v /= 10
            digits += 1
        }
        v = value
        for i in stride(from: digits - 1, through: 0, by: -1) {
            cursor[i] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
            v /= 10
        }
        cursor += digits
    }

    /// `writeOutcome`'s text.
    @inline(__always)
    mutating func outcome(_ v: Double, regression: Bool) {
        cursor += writeOutcome(v, regression: regression, to: cursor)
    }
}

// MARK: - A chunk

/// One chunk's input and its scoring state and output. Touched by one thread
/// at a time: the reader fills it, a worker processes it, then the writer
/// drains it (`done` orders the hand-offs).
private final class Chunk: @unchecked Sendable {
    var input: [UInt8] = []
    var firstLine = 0
    let done = DispatchSemaphore(value: 0)
    /// Taken out while a worker runs, so the hot loops work on local storage
    /// (no exclusivity checks or uniqueness tests on class properties).
    private var work: ChunkWork?

    init(layout: OutputLayout, capacity: Int, slot: Int) {
        input.reserveCapacity(capacity)
        work = ChunkWork(layout: layout, capacity: capacity, slot: slot)
    }

    func process() {
        var w = work.take()!
        input.withUnsafeBytes { w.process($0, firstLine: firstLine) }
        work = w
    }

    var output: [UInt8] { work!.output }
    var rejects: [UInt8] { work!.rejects }
    var rowsRead: Int { work!.rowsRead }
    var rowsScored: Int { work!.rowsScored }
    var rowsRejected: Int { work!.rowsRejected }
}

/// The buffers a chunk is scored with, reused from chunk to chunk.
private struct ChunkWork {
    let layout: OutputLayout
    var output: [UInt8] = []
    var rejects: [UInt8] = []
    var rowsRead = 0
    var rowsScored = 0
    var rowsRejected = 0

    private var batch: ColumnBatch
    private var scored = BatchOutput()
    private var reader = CSVReader()
    private var rowLines: [Int] = []
    private var rowRanges: [(Int, Int)] = []
    /// The id fields of each row, CSV-escaped and comma-separated, end to end.
    private var ids: [UInt8] = []
    private var idEnds: [Int] = []
    private var pending: [(line: Int, reason: String, record: UnsafeRawBufferPointer)] = []
    private var records = JSONRecordScorer()
    /// `--explain`: each CSV row's typed values, to explain the rows that scored.
    private var rowValues: [[FieldValue]] = []
    /// This chunk's drift counter slot.
    private let slot: Int

    init(layout: OutputLayout, capacity: Int, slot: Int) {
        self.layout = layout
        self.slot = slot
        output.reserveCapacity(capacity)
        batch = ColumnBatch(for: layout.scorer, capacity: capacity / 64)
    }

    mutating func process(_ bytes: UnsafeRawBufferPointer, firstLine: Int) {
        output.removeAll(keepingCapacity: true)
        rejects.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        rowsRead = 0
        rowsScored = 0
        rowsRejected = 0
        switch layout.format {
        case .csv: processCSV(bytes, firstLine: firstLine)
        case .jsonLines: processJSONLines(bytes, firstLine: firstLine)
        }
        writeRejects()
    }

    // MARK: CSV

    private mutating func processCSV(_ bytes: UnsafeRawBufferPointer, firstLine: Int) {
        batch.removeAll(firstRow: 0)
        rowLines.removeAll(keepingCapacity: true)
        rowRanges.removeAll(keepingCapacity: true)
        ids.removeAll(keepingCapacity: true)
        idEnds.removeAll(keepingCapacity: true)
        rowValues.removeAll(keepingCapacity: true)
        let explaining = layout.explainTop != nil
        reader.reset(line: firstLine)
        var position = 0
        let columnFields = layout.columnFields
        let columnCount = layout.columnCount
        let idColumns = layout.idColumns
        // The reader is moved out of `self` while it calls back into `self`.
        var reader = self.reader
        while position < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[position...])
            do {
                let used = try reader.read(rest, final: true) { r, line throws(CSVError) in
                    rowsRead += 1
                    let range = (position + r.recordStart, position + r.recordEnd)
                    guard r.fieldCount == columnCount else {
                        pending.append((line, "expected \(columnCount) fields (as in the header), got \(r.fieldCount)", record(bytes, range)))
                        return true
                    }
                    batch.appendRow()
                    columnFields.withUnsafeBufferPointer { batch.setCSVRecord(r, fields: $0) }
                    if explaining {
                        var values = [FieldValue](repeating: .missing, count: layout.scorer.fieldNames.count)
                        for column in 0..<columnCount where columnFields[column] >= 0 {
                            let cell = r.field(column)
                            if cell.isEmpty { continue }
                            let field = columnFields[column]
                            if let x = DecimalParser.parse(cell), layout.scorer.document.schema.fields[field].type == .number {
                                values[field] = .number(x)
                            } else {
                                values[field] = .text(String(decoding: cell, as: UTF8.self))
                            }
                        }
                        rowValues.append(values)
                    }
                    for (n, column) in idColumns.enumerated() {
                        if n > 0 { ids.append(0x2C) }
                        appendCSVField(r.field(column), to: &ids)
                    }
                    idEnds.append(ids.count)
                    rowLines.append(line)
                    rowRanges.append(range)
                    return true
                }
                position += used
                break
            } catch {
                // A record that is not valid CSV: reject it and go on after its line end.
                rowsRead += 1
                let start = position + reader.recordStart
                var resume = min(position + reader.errorOffset, bytes.count)
                while resume < bytes.count && bytes[resume] != 0x0A { resume += 1 }
                resume = min(resume + 1, bytes.count)
                let startLine = reader.line  // still the failing record's first line
                pending.append((startLine, "not valid CSV: \(error.message)", record(bytes, (start, resume))))
                var newlines = 0
                for i in start..<resume where bytes[i] == 0x0A { newlines += 1 }
                reader.reset(line: startLine + newlines)
                position = resume
            }
        }
        self.reader = reader
        layout.drift?.observe(loop: slot, batch: batch, codeBins: layout.driftCodeBins)
        layout.scorer.score(batch, into: &scored)
        writeCSVRows(bytes)
    }

    /// The scored rows' output lines: written through a pointer into room made for the chunk's
    /// largest possible output (no capacity or uniqueness check per byte), and the rows that
    /// failed scoring put with the rejects. With `--explain`, each scored row's explanation is
    /// written out first, to know its length.
    private mutating func writeCSVRows(_ bytes: UnsafeRawBufferPointer) {
        let classes = layout.scorer.outputCount
        let regression = layout.scorer.isRegression
        let idColumns = layout.idColumns
        var explanations: [UInt8] = [], explanationEnds: [Int] = []
        if layout.explainTop != nil {
            for i in 0..<batch.count {
                let label = Int(scored.labels[i])
                if label >= 0 { layout.appendExplanation(try? layout.scorer.explain(rowValues[i]), label: label, to: &explanations) }
                explanationEnds.append(explanations.count)
            }
        }
        // Per row at most: its ids (or a line number), a comma and a number of at most 32
        // characters per class, its tail; then the explanations.
        let bound = (idColumns.isEmpty ? 20 * batch.count : ids.count) + batch.count * (classes * 33 + layout.longestTail) + explanations.count
        let written = Array<UInt8>(unsafeUninitializedCapacity: bound) { buffer, count in
            var w = RowWriter(buffer.baseAddress!)
            var errorIndex = 0
            var idStart = 0, explanationStart = 0
            ids.withUnsafeBytes { ids in
                for i in 0..<batch.count {
                    defer { idStart = idEnds[i] }
                    let label = Int(scored.labels[i])
                    layout.drift?.observePrediction(loop: slot, label >= 0 ? scored.probabilities[i * classes + classes - 1] : nil)
                    guard label >= 0 else {
                        let e = scored.errors[errorIndex]
                        errorIndex += 1
                        pending.append((rowLines[i], e.reason, record(bytes, rowRanges[i])))
                        continue
                    }
                    rowsScored += 1
                    if idColumns.isEmpty {
                        w.decimal(rowLines[i])
                    } else {
                        w.bytes(UnsafeRawBufferPointer(rebasing: ids[idStart..<idEnds[i]]))
                    }
                    for k in 0..<classes {
                        w.byte(0x2C)
                        w.outcome(scored.probabilities[i * classes + k], regression: regression)
                    }
                    layout.tails[label].withUnsafeBytes { w.bytes($0) }
                    if !explanationEnds.isEmpty {
                        explanations.withUnsafeBytes { w.bytes(UnsafeRawBufferPointer(rebasing: $0[explanationStart..<explanationEnds[i]])) }
                        explanationStart = explanationEnds[i]
                    }
                }
            }
            count = w.cursor - buffer.baseAddress!
            precondition(count <= bound, "the output bound")
        }
        output = written
    }

    // MARK: JSON Lines

    private mutating func processJSONLines(_ bytes: UnsafeRawBufferPointer, firstLine: Int) {
        var line = firstLine
        var start = 0
        let scorer = layout.scorer
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            defer {
                start = end + 1
                line += 1
            }
            var stop = end
            if stop > start && bytes[stop - 1] == 0x0D { stop -= 1 }
            let text = UnsafeRawBufferPointer(rebasing: bytes[start..<stop])
            if text.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }  // a blank line is no record
            rowsRead += 1
            let label: Int
            switch records.score(text, with: scorer) {
            case .success(let l): label = l
            case .failure(let failure):
                pending.append((line, failure.reason, text))
                continue
            }
            if let drift = layout.drift { records.observe(drift, loop: slot, probability: records.probabilities[scorer.outputCount - 1]) }
            let tape = records.tape
            rowsScored += 1
            output.append(0x7B)
            var wroteID = false
            for name in layout.idNames {
                var node: Int?
                tape.forEachMember(tape.root) { key, value in
                    if tape.string(key) == name { node = value }
                }
                guard let node else { continue }
                output.append(contentsOf: JSONWriter.text(.string(name)).utf8)
                output.append(0x3A)
                switch tape.kind(node) {
                case .string:
                    output.append(0x22)
                    output.append(contentsOf: tape.rawBytes(node))
                    output.append(0x22)
                case .object, .array, .number:
                    output.append(contentsOf: tape.rawBytes(node))
                default:
                    output.append(contentsOf: JSONWriter.text(tape.value(node)).utf8)
                }
                output.append(0x2C)
                wroteID = true
            }
            if !wroteID {
                output.append(contentsOf: #""line":"#.utf8)
                output.appendDecimal(line)
                output.append(0x2C)
            }
            for k in 0..<scorer.outputCount {
                output.append(contentsOf: layout.probabilityKeys[k])
                appendOutcome(records.probabilities[k], regression: scorer.isRegression, to: &output)
            }
            output.append(contentsOf: layout.tails[label])
            if layout.explainTop != nil { layout.appendExplanation(try? scorer.explain(json: tape.value(tape.root)), label: label, to: &output) }
        }
    }

    // MARK: Rejects

    private func record(_ bytes: UnsafeRawBufferPointer, _ range: (Int, Int)) -> UnsafeRawBufferPointer {
        var end = range.1
        while end > range.0 && (bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D) { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[range.0..<end])
    }

    /// Writes the rejects in line order; the record bytes point into the chunk's input.
    private mutating func writeRejects() {
        rowsRejected = pending.count
        if pending.count > 1 { pending.sort { $0.line < $1.line } }
        for reject in pending { layout.appendReject(line: reject.line, reason: reject.reason, record: reject.record, to: &rejects) }
        pending.removeAll(keepingCapacity: true)
    }
}

extension [UInt8] {
    /// A non-negative decimal (a line number), as `RowWriter.decimal` writes it.
    @inline(__always)
    mutating func appendDecimal(_ value: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
            var w = RowWriter(buffer.baseAddress!)
            w.decimal(value)
            append(contentsOf: UnsafeBufferPointer(start: buffer.baseAddress!, count: w.cursor - buffer.baseAddress!))
        }
    }
}
