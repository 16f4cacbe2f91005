import Foundation
import JSON

/// What a model's inputs and predictions looked like when it was made: per input field, the bins
/// of its values (ten quantile bins for a number, the schema's values plus "other" for a
/// category) with the share of rows in each, and the share of missing values; the same for the
/// predicted probability of the last class. Live traffic binned the same way gives, per field,
/// the population stability index (`psi`) — the standard measure of a shifted input.
public struct DriftBaseline: Sendable, Equatable {
    public enum Kind: String, Sendable { case number, category }

    public struct Field: Sendable, Equatable {
        public var name: String
        public var kind: Kind
        /// A number's cut points: bin i takes values ≤ edges[i] (and above edges[i-1]); the last bin the rest.
        public var edges: [Double]
        /// A category's values; the bin after them is "any other value".
        public var values: [String]
        /// The share of rows in each bin, then the share missing (sums to 1).
        public var expected: [Double]

        /// Bins, the missing one included.
        public var binCount: Int { (kind == .number ? edges.count + 1 : values.count + 1) + 1 }

        /// The bin `value` falls in (the last one for missing).
        @inline(__always)
        public func bin(_ value: FieldValue) -> Int {
            switch (kind, value) {
            case (.number, .number(let x)) where x.isFinite:
                var low = 0, high = edges.count  // the first edge ≥ x
                while low < high {
                    let mid = (low + high) / 2
                    if edges[mid] < x { low = mid + 1 } else { high = mid }
                }
                return low
            case (.category, .text(let t)): return values.firstIndex(of: t) ?? values.count
            case (.category, .number(let x)): return values.firstIndex(of: JSONWriter.numberText(x)) ?? values.count
            default: return binCount - 1
            }
        }
    }

    public var fields: [Field]
    /// The predicted probability of the last class (the positive one of two).
    public var prediction: Field
    /// The rows it was made from.
    public var rows: Int

    public init(fields: [Field], prediction: Field, rows: Int) {
        self.fields = fields
        self.prediction = prediction
        self.rows = rows
    }

    /// Ten bins at the deciles of `values` (fewer where values repeat), with their shares.
    static func numberField(_ name: String, _ values: [Double], missing: Int) -> Field {
        let sorted = values.filter(\.isFinite).sorted()
        var edges: [Double] = []
        if !sorted.isEmpty {
            for i in 1..<10 {
                let edge = sorted[min(sorted.count - 1, sorted.count * i / 10)]
                if edges.last != edge && edge < sorted.last! { edges.append(edge) }
            }
        }
        var field = Field(name: name, kind: .number, edges: edges, values: [], expected: [])
        var counts = [Int](repeating: 0, count: field.binCount)
        for x in sorted { counts[field.bin(.number(x))] += 1 }
        counts[counts.count - 1] += missing + (values.count - sorted.count)
        field.expected = shares(counts)
        return field
    }

    static func shares(_ counts: [Int]) -> [Double] {
        let total = counts.reduce(0, +)
        return counts.map { total == 0 ? 0 : Double($0) / Double(total) }
    }

    /// The baseline of `rows` (field values in the scorer's schema order), scored by `scorer` for
    /// the prediction's bins. Rows it cannot score count as missing predictions.
    public static func make(scorer: Scorer, rows: [[FieldValue]]) -> DriftBaseline {
        let schema = scorer.document.schema.fields
        var fields: [Field] = []
        for (f, spec) in schema.enumerated() {
            switch spec.type {
            case .number:
                var values: [Double] = [], missing = 0
                values.reserveCapacity(rows.count)
                for row in rows { if case .number(let x) = row[f] { values.append(x) } else { missing += 1 } }
                fields.append(numberField(spec.name, values, missing: missing))
            case .category:
                var field = Field(name: spec.name, kind: .category, edges: [], values: spec.values ?? [], expected: [])
                var counts = [Int](repeating: 0, count: field.binCount)
                for row in rows { counts[field.bin(row[f])] += 1 }
                field.expected = shares(counts)
                fields.append(field)
            }
        }
        var probabilities: [Double] = [], failed = 0
        for row in rows {
            if let p = try? scorer.predict(row).probabilities.last { probabilities.append(p) } else { failed += 1 }
        }
        return DriftBaseline(fields: fields, prediction: numberField("prediction", probabilities, missing: failed), rows: rows.count)
    }

    /// Up to `limit` rows of CSV bytes with a header (`name` names them in errors), as field values in the scorer's schema
    /// order (an empty cell, or a number field's cell that is not a number, is missing; columns
    /// that are not inputs are ignored). Throws naming the line of a malformed record, or when
    /// the header names none of the model's inputs.
    public static func rows(csv data: some ContiguousBytes, name: String, scorer: Scorer, limit: Int = 1_000_000) throws -> [[FieldValue]] {
        let types = scorer.document.schema.fields.map(\.type)
        var reader = CSVReader()
        var header: [Int?] = []
        var rows: [[FieldValue]] = []
        do {
            _ = try data.withUnsafeBytes { bytes throws(CSVError) in
                try reader.read(bytes, final: true) { record, line throws(CSVError) in
                    if header.isEmpty {
                        header = (0..<record.fieldCount).map { scorer.fieldIndex(record.string($0)) }
                        guard header.contains(where: { $0 != nil }) else {
                            throw CSVError(line: line, message: "the header names none of the model's inputs (\(scorer.fieldNames.joined(separator: ", ")))")
                        }
                        return true
                    }
                    var row = [FieldValue](repeating: .missing, count: types.count)
                    for (column, field) in header.enumerated() {
                        guard let field, column < record.fieldCount else { continue }
                        let text = record.string(column)
                        guard !text.isEmpty else { continue }
                        row[field] = types[field] == .number ? (Double(text).map(FieldValue.number) ?? .missing) : .text(text)
                    }
                    rows.append(row)
                    return rows.count < limit
                }
            }
        } catch {
            throw ScoringError(row: nil, field: nil, message: "\(name) \(error)")
        }
        return rows
    }

    /// The population stability index of `counts` (binned as `field` bins) against its expected
    /// shares: Σ (actual − expected) · ln(actual / expected), shares below 0.0001 taken as 0.0001.
    /// Nil without rows.
    public static func psi(_ field: Field, _ counts: some Collection<UInt64>) -> Double? {
        let total = counts.reduce(0, +)
        guard total > 0 else { return nil }
        var sum = 0.0
        for (expected, count) in zip(field.expected, counts) {
            let e = max(expected, 1e-4), a = max(Double(count) / Double(total), 1e-4)
            sum += (a - e) * log(a / e)
        }
        return sum
    }

    // MARK: - JSON

    public var json: JSONValue {
        func field(_ f: Field) -> JSONValue {
            var o = JSONObject()
            o.append("name", .string(f.name))
            o.append("kind", .string(f.kind.rawValue))
            if f.kind == .number { o.append("edges", .array(f.edges.map(JSONValue.number))) } else { o.append("values", .array(f.values.map(JSONValue.string))) }
            o.append("expected", .array(f.expected.map(JSONValue.number)))
            return .object(o)
        }
        return .object(JSONObject([
            "format": .string("switchyard-drift-baseline/1"), "rows": .number(Double(rows)),
            "fields": .array(fields.map(field)), "prediction": field(prediction),
        ]))
    }

    /// Reads `json`'s form; the error says which field is malformed.
    public init(json value: JSONValue) throws(ScoringError) {
        func field(_ v: JSONValue?, _ at: String) throws(ScoringError) -> Field {
            guard let v, let name = v["name"]?.stringValue, let kind = v["kind"]?.stringValue.flatMap(Kind.init(rawValue:)),
                  case .array(let expected)? = v["expected"] else {
                throw ScoringError(row: nil, field: nil, message: "drift baseline: \(at) needs name, kind and expected")
            }
            func numbers(_ items: [JSONValue]) -> [Double] { items.compactMap { if case .number(let x) = $0 { x } else { nil } } }
            var f = Field(name: name, kind: kind, edges: [], values: [], expected: numbers(expected))
            // Only what the kind uses: a number's edges, a category's values (the other is not written back).
            if kind == .number, case .array(let edges)? = v["edges"] { f.edges = numbers(edges) }
            if kind == .category, case .array(let values)? = v["values"] { f.values = values.compactMap(\.stringValue) }
            guard f.expected.count == f.binCount, f.edges == f.edges.sorted(), f.expected.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
                throw ScoringError(row: nil, field: name, message: "drift baseline: \(at) has \(f.expected.count) shares for \(f.binCount) bins, or unsorted edges")
            }
            return f
        }
        guard case .array(let items)? = value["fields"], items.count <= 100_000 else {
            throw ScoringError(row: nil, field: nil, message: "drift baseline: expected \"fields\", a list")
        }
        var fields: [Field] = []
        for (i, item) in items.enumerated() { fields.append(try field(item, "fields[\(i)]")) }
        self.init(fields: fields, prediction: try field(value["prediction"], "prediction"), rows: (value["rows"].flatMap { if case .number(let x) = $0 { Int(exactly: x) } else { nil } }) ?? 0)
    }
}
