import JSON

/// A CSV table read for training: each column typed as numbers (every
/// non-empty cell parses) or categories, with missing cells marked.
package struct TrainingTable {
    package enum Column {
        /// NaN marks a missing cell.
        case numbers([Double])
        /// Codes into `values` (sorted by code point); -1 marks a missing cell.
        case categories(codes: [Int32], values: [String])
    }

    package var names: [String]
    package var columns: [Column]
    package var rowCount: Int

    /// More distinct texts than this in a column is an identifier or free text, not a category.
    package static let maximumCategories = 1000

    /// Reads a CSV with a header line. Errors name the line.
    package init(csv bytes: [UInt8]) throws(TrainingError) {
        var header: [String] = []
        var reader = CSVReader()
        var numeric: [Bool] = []
        var rows = 0
        // Pass 1: the header, the row count, and which columns are all numbers.
        do {
            _ = try bytes.withUnsafeBytes { buffer throws(CSVError) in
                try reader.read(buffer, final: true) { (record, line) throws(CSVError) in
                    if header.isEmpty {
                        header = (0..<record.fieldCount).map { record.string($0) }
                        numeric = Array(repeating: true, count: header.count)
                        return true
                    }
                    guard record.fieldCount == header.count else {
                        throw CSVError(line: line, message: "\(record.fieldCount) fields, but the header has \(header.count)")
                    }
                    rows += 1
                    for i in 0..<header.count where numeric[i] {
                        let cell = record.field(i)
                        if !cell.isEmpty && DecimalParser.parse(cell) == nil { numeric[i] = false }
                    }
                    return true
                }
            }
        } catch {
            throw TrainingError("training data, \(error)")
        }
        guard !header.isEmpty else { throw TrainingError("training data is empty; expected a CSV header line and rows") }
        guard rows > 0 else { throw TrainingError("training data has a header but no rows") }
        var seen: Set<String> = []
        for name in header where !seen.insert(name).inserted {
            throw TrainingError("training data: column \"\(name)\" appears twice in the header")
        }

        // Pass 2: typed storage.
        var numbers: [[Double]] = numeric.map { $0 ? [Double]() : [] }
        var texts: [[Int32]] = numeric.map { $0 ? [] : [Int32]() }
        var dictionaries: [[String: Int32]] = Array(repeating: [:], count: header.count)
        var valueLists: [[String]] = Array(repeating: [], count: header.count)
        for i in header.indices {
            if numeric[i] { numbers[i].reserveCapacity(rows) } else { texts[i].reserveCapacity(rows) }
        }
        var first = true
        reader = CSVReader()
        _ = try? bytes.withUnsafeBytes { buffer throws(CSVError) in
            try reader.read(buffer, final: true) { (record, _) throws(CSVError) in
                if first {
                    first = false
                    return true
                }
                for i in 0..<header.count {
                    let cell = record.field(i)
                    if numeric[i] {
                        numbers[i].append(cell.isEmpty ? .nan : DecimalParser.parse(cell) ?? .nan)
                    } else if cell.isEmpty {
                        texts[i].append(-1)
                    } else {
                        let text = String(decoding: cell, as: UTF8.self)
                        if let code = dictionaries[i][text] {
                            texts[i].append(code)
                        } else {
                            let code = Int32(valueLists[i].count)
                            dictionaries[i][text] = code
                            valueLists[i].append(text)
                            texts[i].append(code)
                        }
                    }
                }
                return true
            }
        }
        for i in header.indices where valueLists[i].count > Self.maximumCategories {
            throw TrainingError(
                "training data: column \"\(header[i])\" has \(valueLists[i].count) distinct texts, more than \(Self.maximumCategories) "
                    + "for a category; if it is an identifier or free text, leave it out with --ignore \(header[i])")
        }
        names = header
        rowCount = rows
        columns = []
        for i in header.indices {
            if numeric[i] {
                columns.append(.numbers(numbers[i]))
            } else {
                // Sort values by code point, as scikit-learn's encoders do, and renumber.
                let values = valueLists[i]
                let order = values.indices.sorted { values[$0].utf8.lexicographicallyPrecedes(values[$1].utf8) }
                var renumber = [Int32](repeating: 0, count: values.count)
                for (newCode, oldCode) in order.enumerated() { renumber[oldCode] = Int32(newCode) }
                let codes = texts[i].map { $0 < 0 ? $0 : renumber[Int($0)] }
                columns.append(.categories(codes: codes, values: order.map { values[$0] }))
            }
        }
    }

    package func index(of name: String) -> Int? { names.firstIndex(of: name) }
}

/// Why training failed, in words for the command line.
public struct TrainingError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
