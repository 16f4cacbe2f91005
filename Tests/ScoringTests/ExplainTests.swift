import Foundation
import JSON
import Scoring
import Testing

/// Explanations (issue 18 item 1): a logistic regression's terms, and exact path-dependent
/// TreeSHAP for tree ensembles, against the libraries' own contributions (committed outputs of
/// fixtures/contributions_reference.py for the tree fixtures).
@Suite struct ExplainTests {
    /// The link applied to an explanation's margins: what the prediction must be.
    func probabilities(_ e: Explanation, _ document: ModelDocument) -> [Double] {
        let m = e.margins
        if document.estimator.link == .logistic {
            let p1 = 1 / (1 + exp(-m[0]))
            return [1 - p1, p1]
        }
        let top = m.max()!
        let e = m.map { exp($0 - top) }
        return e.map { $0 / e.reduce(0, +) }
    }

    @Test func logisticContributionsAreEachFieldsTermWithStandardizationFoldedIn() throws {
        let document = try ModelDocument.decode(try fixtureData("sklearn-credit-model.json"))
        let scorer = try Scorer(document)
        let lines = String(decoding: try fixtureData("sklearn-credit-expected.jsonl"), as: UTF8.self).split(separator: "\n").prefix(200)
        let coefficients = document.estimator.coefficients![0]
        let (offset, _) = document.designColumns
        for (i, line) in lines.enumerated() {
            guard let record = try JSONValue.parse(String(line))["record"] else { continue }
            let e = try scorer.explain(json: record)
            let predicted = try scorer.predict(json: record)
            #expect(e.prediction == predicted)
            #expect(e.base == document.estimator.intercepts)
            for (k, p) in probabilities(e, document).enumerated() { #expect(abs(p - predicted.probabilities[k]) < 1e-12, "row \(i + 1)") }
            // Each field's term by hand: w·(x − mean)/scale for a standardized number, the weight of
            // the value's one-hot column for a category.
            for (f, field) in document.schema.fields.enumerated() {
                let step = document.preprocessing.first { $0.field == field.name }!
                let at = offset[field.name]!
                let expected: Double
                switch record[field.name] {
                case .number(let x)?:
                    expected = coefficients[at] * (x - (step.mean ?? 0)) / (step.scale ?? 1)
                case .string(let s)?:
                    expected = field.values!.firstIndex(of: s).map { coefficients[at + $0] } ?? 0
                default:
                    expected = step.impute.map { coefficients[at] * ($0 - (step.mean ?? 0)) / (step.scale ?? 1) } ?? 0
                }
                #expect(abs(e.contributions[0][f] - expected) < 1e-12, "row \(i + 1), \(field.name)")
            }
        }
    }

    @Test(arguments: [
        ("xgboost-credit", "xgboost-credit.json", ModelImport.Format.xgboostJSON, 1e-5),
        ("xgboost-credit-grade", "xgboost-credit-grade.json", .xgboostJSON, 1e-5),
        ("lightgbm-credit", "lightgbm-credit.txt", .lightgbmText, 1e-6),
        ("lightgbm-credit-grade", "lightgbm-credit-grade.txt", .lightgbmText, 1e-6),
        ("lightgbm-credit-rf", "lightgbm-credit-rf.txt", .lightgbmText, 1e-6),
    ])
    func treeSHAPMatchesTheLibraries(_ name: String, _ file: String, _ format: ModelImport.Format, _ tolerance: Double) throws {
        let schema = try ImportSchema.decode(try fixtureData("\(name)-schema.json"))
        let document = try ModelImport.convert(try fixtureData(file), format: format, file: file, schema: schema, name: name, created: "2026-11-30T00:00:00Z")
        let scorer = try Scorer(try ModelDocument.decode(document.encoded()))  // covers survive the file
        #expect(scorer.explainable)
        let records = String(decoding: try fixtureData("\(name)-expected.jsonl"), as: UTF8.self).split(separator: "\n")
        let references = String(decoding: try fixtureData("\(name)-contributions.jsonl"), as: UTF8.self).split(separator: "\n")
        #expect(references.count >= 100)
        var worst = 0.0
        for (i, line) in references.enumerated() {
            let reference = try JSONValue.parse(String(line))
            guard let record = try JSONValue.parse(String(records[i]))["record"],
                  case .array(let bases)? = reference["base"], case .array(let margins)? = reference["contributions"] else {
                Issue.record("\(name) line \(i + 1) is not a reference")
                continue
            }
            let e = try scorer.explain(json: record, row: i + 1)
            #expect(e.prediction == (try scorer.predict(json: record)))
            for (k, p) in probabilities(e, document).enumerated() {
                #expect(abs(p - e.prediction.probabilities[k]) < tolerance, "\(name) row \(i + 1): base + contributions give the margin")
            }
            for k in bases.indices {
                guard case .number(let base) = bases[k], case .array(let values) = margins[k] else { continue }
                worst = max(worst, abs(e.base[k] - base))
                #expect(abs(e.base[k] - base) < tolerance, "\(name) row \(i + 1) margin \(k): base \(e.base[k]) vs \(base)")
                for (f, value) in values.enumerated() {
                    guard case .number(let expected) = value else { continue }
                    worst = max(worst, abs(e.contributions[k][f] - expected))
                    #expect(abs(e.contributions[k][f] - expected) < tolerance,
                            "\(name) row \(i + 1) margin \(k) \(scorer.fieldNames[f]): \(e.contributions[k][f]) vs \(expected)")
                }
            }
        }
        print("\(name): worst difference from the library's contributions \(worst) over \(references.count) records")
    }

    @Test func aModelWithoutCoversSaysItCannotBeExplained() throws {
        var document = try ModelImport.convert(
            try fixtureData("xgboost-credit.json"), format: .xgboostJSON, file: "x", schema: try ImportSchema.decode(try fixtureData("xgboost-credit-schema.json")),
            name: "x", created: "2026-11-30T00:00:00Z")
        for t in document.estimator.trees!.trees.indices { document.estimator.trees!.trees[t].cover = nil }
        let scorer = try Scorer(document)
        #expect(!scorer.explainable)
        #expect(throws: ScoringError.self) { try scorer.explain(json: .array([])) }
        do {
            _ = try scorer.explain(json: try JSONValue.parse(#"{"amount": 1}"#))
        } catch {
            #expect("\(error)".contains("cannot be explained"))
        }
    }
}
