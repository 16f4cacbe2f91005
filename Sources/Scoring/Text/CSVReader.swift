import JSON
/// An RFC 4180 CSV reader over byte buffers: quoted fields, doubled quotes,
/// CRLF or LF line ends, newlines inside quotes. It yields complete records
/// from a buffer and reports how many bytes it used, so a caller can stream a
/// file chunk by chunk and carry the unfinished tail into the next chunk.
/// Field storage is reused from record to record: nothing is allocated per row.
/// A reader is used by one thread at a time; its copies share the field storage.
package struct CSVReader {
    /// Fields of the current record: byte ranges into `buffer` or, for a quoted
    /// field with doubled quotes, into `scratch`. Written in place (no array append per field).
    private let spans = SpanStorage()
    private var spanCount = 0
    private var scratch: [UInt8] = []
    private var buffer = UnsafeRawBufferPointer(start: nil, count: 0)
    /// 1-based line number where the next record starts.
    package private(set) var line = 1
    /// Byte offsets (into the buffer given to `read`) of the current record,
    /// line end included; after a `CSVError`, where the failing record starts.
    package private(set) var recordStart = 0
    package private(set) var recordEnd = 0
    /// After a `CSVError`, the offset of the byte that broke the record's syntax.
    package private(set) var errorOffset = 0

    package init() {}

    /// Continues counting lines from `line` (after the caller skipped a broken record).
    package mutating func reset(line: Int) { self.line = line }

    /// The current record's field count.
    package var fieldCount: Int { spanCount }

    /// The bytes of field `i` of the current record, valid until the next record.
    package func field(_ i: Int) -> UnsafeRawBufferPointer {
        precondition(i >= 0 && i < spanCount, "field \(i) of a record of \(spanCount)")
        let span = spans.base[i]
        if span.inScratch {
            return scratch.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[span.start..<span.end]) }
        }
        return UnsafeRawBufferPointer(rebasing: buffer[span.start..<span.end])
    }

    /// Calls `body` with an accessor of the current record's fields: the same bytes as `field(_:)`,
    /// with the field storage borrowed once for the record rather than once per field.
    @inline(__always)
    package func withFields<R>(_ body: ((Int) -> UnsafeRawBufferPointer) -> R) -> R {
        let buffer = buffer
        let spans = UnsafeBufferPointer(start: spans.base, count: spanCount)
        return scratch.withUnsafeBytes { scratch in
            body { i in
                let span = spans[i]
                return UnsafeRawBufferPointer(rebasing: (span.inScratch ? scratch : buffer)[span.start..<span.end])
            }
        }
    }

    /// Field `i` as a String.
    package func string(_ i: Int) -> String { String(decoding: field(i), as: UTF8.self) }

    /// Reads the records of `bytes`, calling `body(line)` for each with the record
    /// current. With `final` false, a last record without a line end is left
    /// unread; the result is the number of bytes consumed. `body` returns false to stop.
    package mutating func read(
        _ bytes: UnsafeRawBufferPointer, final: Bool, _ body: (inout CSVReader, Int) throws(CSVError) -> Bool
    ) throws(CSVError) -> Int {
        buffer = bytes
        var position = 0
        let n = bytes.count
        while position < n {
            spanCount = 0
            if !scratch.isEmpty { scratch.removeAll(keepingCapacity: true) }
            let recordLine = line
            recordStart = position
            var newlines = 0
            var i = position
            var complete = false
            fieldLoop: while true {
                if i < n, bytes[i] == UInt8(ascii: "\"") {
                    // Quoted field.
                    i += 1
                    let start = i
                    var doubled = false
                    var closed = false
                    while i < n {
                        let b = bytes[i]
                        if b == UInt8(ascii: "\"") {
                            if i + 1 < n, bytes[i + 1] == UInt8(ascii: "\"") {
                                doubled = true
                                i += 2
                                continue
                            }
                            if i + 1 == n && !final { break }  // the next chunk may hold a doubled quote
                            closed = true
                            break
                        }
                        if b == 0x0A { newlines += 1 }
                        i += 1
                    }
                    guard closed else {
                        errorOffset = n
                        if final { throw CSVError(line: recordLine, message: "a quoted field is never closed") }
                        break fieldLoop
                    }
                    if doubled {
                        let from = scratch.count
                        var j = start
                        while j < i {
                            scratch.append(bytes[j])
                            j += bytes[j] == UInt8(ascii: "\"") ? 2 : 1
                        }
                        append(Span(start: from, end: scratch.count, inScratch: true))
                    } else {
                        append(Span(start: start, end: i, inScratch: false))
                    }
                    i += 1  // closing quote
                    guard i < n else {
                        if final { complete = true }
                        break fieldLoop
                    }
                    switch bytes[i] {
                    case UInt8(ascii: ","): i += 1; continue fieldLoop
                    case 0x0A: i += 1; newlines += 1; complete = true; break fieldLoop
                    case 0x0D where i + 1 < n && bytes[i + 1] == 0x0A: i += 2; newlines += 1; complete = true; break fieldLoop
                    case 0x0D where i + 1 == n && !final: break fieldLoop
                    default:
                        errorOffset = i
                        throw CSVError(line: recordLine + newlines, message: "unexpected \(describeByte(bytes[i])) after a closing quote; expected ',' or a line end")
                    }
                } else {
                    let start = i
                    while i < n {
                        let b = bytes[i]
                        if b == UInt8(ascii: ",") || b == 0x0A { break }
                        if b == UInt8(ascii: "\"") {
                            errorOffset = i
                            throw CSVError(line: recordLine + newlines, message: "a quote inside an unquoted field; quote the whole field and double the quote")
                        }
                        i += 1
                    }
                    var end = i
                    if i == n {
                        guard final else { break fieldLoop }
                        if end > start, bytes[end - 1] == 0x0D { end -= 1 }
                        append(Span(start: start, end: end, inScratch: false))
                        complete = true
                        break fieldLoop
                    }
                    if bytes[i] == 0x0A, end > start, bytes[end - 1] == 0x0D { end -= 1 }
                    append(Span(start: start, end: end, inScratch: false))
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        continue fieldLoop
                    }
                    i += 1
                    newlines += 1
                    complete = true
                    break fieldLoop
                }
            }
            guard complete else { break }
            position = i
            recordEnd = i
            line = recordLine + newlines
            // A blank line is no record.
            if spanCount == 1, spans.base[0].end == spans.base[0].start, !spans.base[0].inScratch { continue }
            if try !body(&self, recordLine) { return position }
        }
        return position
    }

    @inline(__always)
    private mutating func append(_ span: Span) {
        if spanCount == spans.capacity { spans.grow() }
        spans.base[spanCount] = span
        spanCount += 1
    }
}

private struct Span {
    var start: Int
    var end: Int
    var inScratch: Bool
}

/// The field spans of a reader's current record, grown by doubling.
private final class SpanStorage: @unchecked Sendable {
    private(set) var base: UnsafeMutablePointer<Span>
    private(set) var capacity = 64

    init() { base = .allocate(capacity: capacity) }

    func grow() {
        let bigger = UnsafeMutablePointer<Span>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: base, count: capacity)
        base.deallocate()
        base = bigger
        capacity *= 2
    }

    deinit { base.deallocate() }
}

/// A CSV syntax error with its line number.
package struct CSVError: Error, Sendable, Equatable, CustomStringConvertible {
    package var line: Int
    package var message: String
    package init(line: Int, message: String) {
        self.line = line
        self.message = message
    }
    package var description: String { "line \(line): \(message)" }
}
