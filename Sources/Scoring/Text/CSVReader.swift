/// An RFC 4180 CSV reader over byte buffers: quoted fields, doubled quotes,
/// CRLF or LF line ends, newlines inside quotes. It yields complete records
/// from a buffer and reports how many bytes it used, so a caller can stream a
/// file chunk by chunk and carry the unfinished tail into the next chunk.
/// Field storage is reused from record to record: nothing is allocated per row.
package struct CSVReader {
    /// Fields of the current record, as ranges into `buffer` or, for a quoted
    /// field with doubled quotes, into `unescaped`.
    private var starts: [Int] = []
    private var ends: [Int] = []
    private var inScratch: [Bool] = []
    private var scratch: [UInt8] = []
    private var buffer = UnsafeRawBufferPointer(start: nil, count: 0)
    /// 1-based line number where the next record starts.
    package private(set) var line = 1

    package init() {}

    /// The current record's field count.
    package var fieldCount: Int { starts.count }

    /// The bytes of field `i` of the current record, valid until the next record.
    package func field(_ i: Int) -> UnsafeRawBufferPointer {
        if inScratch[i] {
            return scratch.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[starts[i]..<ends[i]]) }
        }
        return UnsafeRawBufferPointer(rebasing: buffer[starts[i]..<ends[i]])
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
            starts.removeAll(keepingCapacity: true)
            ends.removeAll(keepingCapacity: true)
            inScratch.removeAll(keepingCapacity: true)
            scratch.removeAll(keepingCapacity: true)
            let recordLine = line
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
                        starts.append(from)
                        ends.append(scratch.count)
                        inScratch.append(true)
                    } else {
                        starts.append(start)
                        ends.append(i)
                        inScratch.append(false)
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
                        throw CSVError(line: recordLine + newlines, message: "unexpected \(describeByte(bytes[i])) after a closing quote; expected ',' or a line end")
                    }
                } else {
                    let start = i
                    while i < n {
                        let b = bytes[i]
                        if b == UInt8(ascii: ",") || b == 0x0A { break }
                        if b == UInt8(ascii: "\"") {
                            throw CSVError(line: recordLine + newlines, message: "a quote inside an unquoted field; quote the whole field and double the quote")
                        }
                        i += 1
                    }
                    var end = i
                    if i == n {
                        guard final else { break fieldLoop }
                        if end > start, bytes[end - 1] == 0x0D { end -= 1 }
                        starts.append(start)
                        ends.append(end)
                        inScratch.append(false)
                        complete = true
                        break fieldLoop
                    }
                    if bytes[i] == 0x0A, end > start, bytes[end - 1] == 0x0D { end -= 1 }
                    starts.append(start)
                    ends.append(end)
                    inScratch.append(false)
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
            line = recordLine + newlines
            // A blank line is no record.
            if starts.count == 1, ends[0] == starts[0], !inScratch[0] { continue }
            if try !body(&self, recordLine) { return position }
        }
        return position
    }
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
