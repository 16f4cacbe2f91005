import JSON
/// Records held column by column, ready for `Scorer.score(_:into:)`: one
/// `Double` column per number field (NaN marks a missing value) and one code
/// column per category field. Cells are parsed as they are set, so a bad cell
/// is recorded against its row at once; the row is then rejected, never dropped.
public struct ColumnBatch: Sendable {
    /// Codes below 0 in a category column.
    public static let unknownCode: Int32 = -1
    public static let missingCode: Int32 = -2

    /// The row number of the first record, for error messages (1 by default).
    public var firstRow: Int
    public private(set) var count = 0
    /// Column storage, one column after another, `stride` rows of room each:
    /// number slot `s`, row `r` is `numbers[s * stride + r]`. One flat array per
    /// kind keeps a cell write to one bounds check and one uniqueness check.
    private(set) var numbers: [Double] = []
    private(set) var codes: [Int32] = []
    private(set) var stride = 0
    private let numberSlots: Int
    private let codeSlots: Int
    /// The text of each unknown category, kept for the error message: (row index, slot, text).
    var unknownTexts: [(Int, Int, String)] = []
    /// Errors found while setting cells, by row index.
    var cellErrors: [ScoringError] = []
    var rejected: [Bool] = []
    let scorer: Scorer

    /// An empty batch for `scorer`'s schema.
    public init(for scorer: Scorer, capacity: Int = 0, firstRow: Int = 1) {
        self.scorer = scorer
        self.firstRow = firstRow
        numberSlots = scorer.numberFields.count
        codeSlots = scorer.categoryFields.count
        reserveCapacity(capacity)
    }

    public mutating func reserveCapacity(_ capacity: Int) {
        if capacity > stride { grow(to: capacity) }
        rejected.reserveCapacity(capacity)
    }

    /// Moves the columns into storage with `rows` rows of room each.
    private mutating func grow(to rows: Int) {
        var newNumbers = [Double](repeating: .nan, count: numberSlots * rows)
        var newCodes = [Int32](repeating: Self.missingCode, count: codeSlots * rows)
        for s in 0..<numberSlots {
            for r in 0..<count { newNumbers[s * rows + r] = numbers[s * stride + r] }
        }
        for s in 0..<codeSlots {
            for r in 0..<count { newCodes[s * rows + r] = codes[s * stride + r] }
        }
        numbers = newNumbers
        codes = newCodes
        stride = rows
    }

    /// Number column `slot` of the rows so far.
    func withNumbers<R>(slot: Int, _ body: (UnsafeBufferPointer<Double>) -> R) -> R {
        numbers.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[(slot * stride)..<(slot * stride + count)])) }
    }

    /// Category code column `slot` of the rows so far.
    func withCodes<R>(slot: Int, _ body: (UnsafeBufferPointer<Int32>) -> R) -> R {
        codes.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[(slot * stride)..<(slot * stride + count)])) }
    }

    /// The rows so far, column by column, for counting them (drift): each number field's values
    /// (NaN: missing, or not a number) and each category field's codes into the model's values
    /// (`missingCode`; `unknownCode` for a value outside them, whose text is in
    /// `unknownCategories`).
    package func forEachColumn(
        numbers: (_ field: Int, UnsafeBufferPointer<Double>) -> Void, categories: (_ field: Int, UnsafeBufferPointer<Int32>) -> Void
    ) {
        for (slot, field) in scorer.numberFields.enumerated() { withNumbers(slot: slot) { numbers(field, $0) } }
        for (slot, field) in scorer.categoryFields.enumerated() { withCodes(slot: slot) { categories(field, $0) } }
    }

    /// The category values outside their field's values, by row and field.
    package var unknownCategories: [(row: Int, field: Int, text: String)] {
        unknownTexts.map { ($0.0, scorer.categoryFields[$0.1], $0.2) }
    }

    /// Empties the batch, keeping its storage, and sets the next first row.
    public mutating func removeAll(firstRow: Int) {
        self.firstRow = firstRow
        count = 0
        rejected.removeAll(keepingCapacity: true)
        unknownTexts.removeAll()
        cellErrors.removeAll()
    }

    /// Starts a new record with every field missing; set its cells next.

    public mutating func appendRow() {
        if count == stride { grow(to: max(64, stride * 2)) }
        let r = count, stride = stride, numberSlots = numberSlots, codeSlots = codeSlots
        numbers.withUnsafeMutableBufferPointer { p in
            for s in 0..<numberSlots { p[s * stride + r] = .nan }
        }
        codes.withUnsafeMutableBufferPointer { p in
            for s in 0..<codeSlots { p[s * stride + r] = Self.missingCode }
        }
        rejected.append(false)
        count += 1
    }

    /// Sets the last row's fields from CSV record `record`: column `c` goes to field `fields[c]`
    /// (-1: not a model field); an empty cell is missing. The same as `setText` per cell, with the
    /// column storage borrowed once for the row rather than once per cell.
    package mutating func setCSVRecord(_ record: borrowing CSVReader, fields: UnsafeBufferPointer<Int>) {
        let row = count - 1, stride = stride
        var refused: [Int] = []  // columns whose cell `place` refused
        let plans = scorer.cells.plans, tables = scorer.cells.views
        numbers.withUnsafeMutableBufferPointer { numbers in
            codes.withUnsafeMutableBufferPointer { codes in
                record.withFields { cell in
                    for column in fields.indices where fields[column] >= 0 {
                        let bytes = cell(column)
                        if !bytes.isEmpty, !Self.place(bytes, plans[fields[column]], tables, numbers, codes, row: row, stride: stride) {
                            refused.append(column)
                        }
                    }
                }
            }
        }
        for column in refused { noteRefused(field: fields[column], record.field(column), row: row) }
    }

    /// Sets field `field` of the last row from a text cell (CSV). An empty cell is missing.
    public mutating func setText(field: Int, _ bytes: UnsafeRawBufferPointer) {
        let row = count - 1, stride = stride
        if bytes.isEmpty { return }
        let plan = scorer.plans[field]
        let tables = scorer.cells.views
        let placed = numbers.withUnsafeMutableBufferPointer { numbers in
            codes.withUnsafeMutableBufferPointer { codes in Self.place(bytes, plan, tables, numbers, codes, row: row, stride: stride) }
        }
        if !placed { noteRefused(field: field, bytes, row: row) }
    }

    /// Puts a non-empty text cell's value into `row` of its column: a number parsed, a category's
    /// code. False when the cell is not a number a number field needs, or a category outside the
    /// field's values (its code, -1, is stored all the same); `noteRefused` then says why.
    @inline(__always)
    private static func place(
        _ bytes: UnsafeRawBufferPointer, _ plan: Scorer.Plan, _ tables: UnsafeBufferPointer<CategoryTable.View>,
        _ numbers: UnsafeMutableBufferPointer<Double>, _ codes: UnsafeMutableBufferPointer<Int32>, row: Int, stride: Int
    ) -> Bool {
        switch plan {
        case .number(let slot):
            guard let x = DecimalParser.parse(bytes) else { return false }
            numbers[slot * stride + row] = x
            return true
        case .category(let slot):
            let code = tables[slot].code(of: bytes)
            codes[slot * stride + row] = code
            return code >= 0
        }
    }

    /// Records a cell `place` refused: a bad number rejects the row, naming the field; an unknown
    /// category is kept for its field's policy, applied when the batch is scored.
    private mutating func noteRefused(field: Int, _ bytes: UnsafeRawBufferPointer, row: Int) {
        switch scorer.plans[field] {
        case .number: reject(row, field: field, "expected a number, got \"\(String(decoding: bytes.prefix(40), as: UTF8.self))\"")
        case .category(let slot): unknownTexts.append((row, slot, String(decoding: bytes, as: UTF8.self)))
        }
    }

    /// Sets field `field` of the last row from a number (NaN is missing).

    public mutating func setNumber(field: Int, _ x: Double) {
        let r = count - 1
        switch scorer.plans[field] {
        case .number(let slot):
            numbers[slot * stride + r] = x
        case .category:
            var text = JSONWriter.numberText(x)
            text.withUTF8 { setText(field: field, UnsafeRawBufferPointer($0)) }
        }
    }

    /// Sets field `field` of the last row from a JSON value; `null` is missing.
    public mutating func setJSON(field: Int, _ value: JSONValue) {
        switch value {
        case .null: return
        case .number(let x): setNumber(field: field, x)
        case .string(var text):
            if case .number = scorer.plans[field] {
                reject(count - 1, field: field, "expected a number, got \(value.excerpt)")
            } else if text.isEmpty {
                // JSON "" is a category text, not a missing value (only CSV's empty cell is).
                if case .category(let slot) = scorer.plans[field] {
                    codes[slot * stride + count - 1] = scorer.categoryTables[slot].code(of: "")
                    if codes[slot * stride + count - 1] < 0 { unknownTexts.append((count - 1, slot, "")) }
                }
            } else {
                text.withUTF8 { setText(field: field, UnsafeRawBufferPointer($0)) }
            }
        default:
            let expected = if case .number = scorer.plans[field] { "a number" } else { "a category (a string)" }
            reject(count - 1, field: field, "expected \(expected), got \(value.excerpt)")
        }
    }

    /// Rejects the last row with a message about the whole record.
    public mutating func rejectRow(_ message: String) {
        reject(count - 1, field: nil, message)
    }


    mutating func reject(_ r: Int, field: Int?, _ message: String) {
        guard !rejected[r] else { return }
        rejected[r] = true
        cellErrors.append(ScoringError(row: firstRow + r, field: field.map { scorer.fieldNames[$0] }, message: message))
    }
}

/// What `Scorer.score(_:into:)` gives for a batch.
public struct BatchOutput: Sendable {
    /// Row-major, `outputCount` per row (a probability per class, or a regression's value); NaN for a rejected row.
    public var probabilities: [Double] = []
    /// The label's class index per row; -1 for a rejected row.
    public var labels: [Int32] = []
    /// One error per rejected row, in row order.
    public var errors: [ScoringError] = []
    /// Rows scored; `labels.count == scored + errors.count` always holds.
    public var scored = 0

    public init() {}
}
