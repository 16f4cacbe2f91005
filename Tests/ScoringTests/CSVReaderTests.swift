import Scoring
import Testing

@Suite struct CSVReaderTests {
    /// Reads `text` split at `split` (the first part not final), returning the records and their lines.
    func records(_ text: String, splitAt split: Int? = nil) throws -> [(Int, [String])] {
        let bytes = Array(text.utf8)
        var out: [(Int, [String])] = []
        var reader = CSVReader()
        var carry: [UInt8] = []
        let parts: [[UInt8]] = split.map { [Array(bytes[..<$0]), Array(bytes[$0...])] } ?? [bytes]
        for (p, part) in parts.enumerated() {
            carry += part
            let final = p == parts.count - 1
            let used = try carry.withUnsafeBytes { buffer throws(CSVError) in
                try reader.read(buffer, final: final) { (record, line) throws(CSVError) in
                    out.append((line, (0..<record.fieldCount).map { record.string($0) }))
                    return true
                }
            }
            carry.removeFirst(used)
        }
        #expect(carry.isEmpty)
        return out
    }

    static let sample = "a,b,c\r\n1,\"x, \"\"quoted\"\"\",\n\n\"multi\nline\",,3\nlast,row,\"\"\n"

    @Test func readsQuotesCRLFBlankLinesAndNewlinesInFields() throws {
        let rows = try records(Self.sample)
        #expect(rows.map(\.1) == [["a", "b", "c"], ["1", "x, \"quoted\"", ""], ["multi\nline", "", "3"], ["last", "row", ""]])
        #expect(rows.map(\.0) == [1, 2, 4, 6])
    }

    @Test func givesTheSameRecordsWhateverTheChunkBoundary() throws {
        let whole = try records(Self.sample).map(\.1)
        for split in 0...Self.sample.utf8.count {
            #expect(try records(Self.sample, splitAt: split).map(\.1) == whole, "split at \(split)")
        }
    }

    @Test func readsALastLineWithoutLineEnd() throws {
        #expect(try records("a,b\n1,2").map(\.1) == [["a", "b"], ["1", "2"]])
        #expect(try records("a,b\r\n1,\"2\"").map(\.1) == [["a", "b"], ["1", "2"]])
    }

    @Test func namesTheLineOfAnError() {
        #expect { try records("a,b\n1,\"open\n2,3\n") } throws: { ($0 as? CSVError)?.line == 2 }
        #expect { try records("a,b\n1,2\n3,\"x\"y\n") } throws: { ($0 as? CSVError)?.line == 3 }
        #expect { try records("a,b\n1,x\"y\n") } throws: { ($0 as? CSVError)?.line == 2 }
    }
}
