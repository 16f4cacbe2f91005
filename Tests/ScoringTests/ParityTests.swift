import Foundation
import JSON
import Scoring
import Testing

/// The embedded scorer against scikit-learn's own predict_proba, from the
/// committed outputs of fixtures/sklearn_reference.py.
@Suite struct ParityTests {
    struct Expected {
        var record: JSONValue
        var probabilities: [Double]
        var label: String
    }

    func load(_ model: String, _ expected: String) throws -> (Scorer, [Expected]) {
        let scorer = try Scorer(try ModelDocument.decode(try fixtureData(model)))
        let lines = String(decoding: try fixtureData(expected), as: UTF8.self).split(separator: "\n")
        let rows = try lines.map { line -> Expected in
            let value = try JSONValue.parse(String(line))
            guard case .array(let p)? = value["probabilities"], case .string(let label)? = value["label"], let record = value["record"]
            else { throw ModelFormatError("bad expected line") }
            return Expected(record: record, probabilities: p.map { if case .number(let x) = $0 { x } else { .nan } }, label: label)
        }
        return (scorer, rows)
    }

    func check(_ model: String, _ expected: String, minimumRows: Int) throws {
        let (scorer, rows) = try load(model, expected)
        #expect(rows.count >= minimumRows)
        var worst = 0.0
        for (i, row) in rows.enumerated() {
            let p = try scorer.predict(json: row.record, row: i + 1)
            #expect(p.label == row.label, "row \(i + 1)")
            for k in row.probabilities.indices {
                let error = abs(p.probabilities[k] - row.probabilities[k]) / max(abs(row.probabilities[k]), 1e-300)
                worst = max(worst, error)
                #expect(error <= 1e-9, "row \(i + 1), class \(k): \(p.probabilities[k]) vs scikit-learn \(row.probabilities[k])")
            }
        }
        // The batch path gives the single-record answers exactly.
        var batch = ColumnBatch(for: scorer)
        for row in rows {
            batch.appendRow()
            switch row.record {
            case .array(let values): for (f, v) in values.enumerated() { batch.setJSON(field: f, v) }
            default: for (f, name) in scorer.fieldNames.enumerated() { batch.setJSON(field: f, row.record[name] ?? .null) }
            }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        #expect(output.scored == rows.count)
        let c = scorer.classes.count
        for (i, row) in rows.enumerated() {
            let single = try scorer.predict(json: row.record)
            #expect(Array(output.probabilities[(i * c)..<((i + 1) * c)]) == single.probabilities, "row \(i + 1)")
        }
        print("\(model): \(rows.count) rows, worst relative difference from scikit-learn \(worst)")
    }

    @Test func binaryCreditPipelineMatchesScikitLearn() throws {
        try check("sklearn-credit-model.json", "sklearn-credit-expected.jsonl", minimumRows: 1000)
    }

    @Test func multinomialDigitsMatchScikitLearn() throws {
        let (scorer, _) = try load("sklearn-digits-model.json", "sklearn-digits-expected.jsonl")
        #expect(scorer.classes.count == 10)
        #expect(scorer.fieldNames.count == 64)
        try check("sklearn-digits-model.json", "sklearn-digits-expected.jsonl", minimumRows: 300)
    }
}
