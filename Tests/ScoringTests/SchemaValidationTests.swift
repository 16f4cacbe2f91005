import Foundation
import JSON
import Scoring
import Testing

@Suite struct SchemaValidationTests {
    let scorer = try! Scorer(handModel())

    func record(_ json: String) throws -> JSONValue { try JSONValue.parse(json) }

    func error(_ json: String, row: Int? = 17) -> ScoringError? {
        do {
            _ = try scorer.predict(json: try record(json), row: row)
            return nil
        } catch let e as ScoringError {
            return e
        } catch {
            Issue.record("unexpected \(error)")
            return nil
        }
    }

    @Test func scoresAValidRecordAsTheLongWayDoes() throws {
        let p = try scorer.predict(json: try record(#"{"income": 61000, "age": 40, "city": "北京"}"#))
        let expected = handProbability(income: 61_000, age: 40, cityCode: 1)
        #expect(close(p.probabilities[1], expected, relative: 1e-12))
        #expect(close(p.probabilities[0], 1 - expected, relative: 1e-12))
        #expect(p.label == (expected > 0.5 ? "bad" : "good"))
    }

    @Test func acceptsAnArrayInSchemaOrderAndATypedRecord() throws {
        let a = try scorer.predict(json: try record(#"[61000, 40, "Zürich"]"#))
        let b = try scorer.predict([.number(61_000), .number(40), .text("Zürich")])
        let c = try scorer.predict(json: try record(#"{"city": "Zürich", "age": 40, "income": 61000, "extra": [1]}"#))
        #expect(a == b)
        #expect(a == c)
        #expect(close(a.probabilities[1], handProbability(income: 61_000, age: 40, cityCode: 0), relative: 1e-12))
    }

    @Test func namesRowFieldAndWhatWasExpected() {
        #expect(error(#"{"income": "abc", "age": 40, "city": "é"}"#)?.description
            == #"row 17, field "income": expected a number, got "abc""#)
        #expect(error(#"{"income": true, "age": 40, "city": "é"}"#)?.description
            == #"row 17, field "income": expected a number, got true"#)
        #expect(error(#"{"income": 1, "age": [40], "city": "é"}"#)?.description
            == #"row 17, field "age": expected a number, got an array of 1"#)
        #expect(error(#"{"income": 1, "age": 40, "city": {"a": 1}}"#)?.description
            == #"row 17, field "city": expected a category (a string), got an object of 1 fields"#)
        #expect(error(#"[1, 2]"#)?.message.contains("expected an array of 3 values in schema order (income, age, city), got 2") == true)
        #expect(error(#""just a string""#)?.message.contains("expected a record") == true)
    }

    @Test func rejectsMissingFieldsAndPointsAtAMisspelling() {
        #expect(error(#"{"incme": 1, "age": 40, "city": "é"}"#)?.description
            == #"row 17, field "income": missing (the record has an unknown field "incme" — a misspelling?)"#)
        #expect(error(#"{"age": 40, "city": "é"}"#)?.description == #"row 17, field "income": missing, and the model requires a value"#)
        #expect(error(#"{"income": null, "age": 40, "city": "é"}"#)?.description
            == #"row 17, field "income": missing, and the model requires a value"#)
        #expect(error(#"{"income": 1, "age": 40, "CITY": "é"}"#)?.message.contains(#""CITY""#) == true)
    }

    @Test func extraFieldsAreIgnored() throws {
        let a = try scorer.predict(json: try record(#"{"income": 1, "age": 2, "city": "é", "id": 7, "label": 1}"#))
        let b = try scorer.predict(json: try record(#"{"income": 1, "age": 2, "city": "é"}"#))
        #expect(a == b)
    }

    @Test func nonFiniteNumbersAreRejectedAndHugeFiniteOnesScore() throws {
        #expect(error(#"{"income": 1e400, "age": 40, "city": "é"}"#)?.description
            == #"row 17, field "income": expected a finite number, got inf"#)
        #expect(throws: ScoringError.self) { try scorer.predict([.number(.nan), .number(1), .text("é")]) }
        #expect(throws: ScoringError.self) { try scorer.predict([.number(-.infinity), .number(1), .text("é")]) }
        let huge = try scorer.predict(json: try record(#"{"income": 1e308, "age": 40, "city": "é"}"#))
        #expect(huge.probabilities == [0, 1])
        let tiny = try scorer.predict(json: try record(#"{"income": -1e308, "age": 40, "city": "é"}"#))
        #expect(tiny.probabilities == [1, 0])
    }

    @Test func opposingOverflowsAreAnErrorNotNaN() throws {
        var document = handModel()
        document.estimator.coefficients = [[1e10, 10, 0, 0, 0, 0]]
        let big = try Scorer(document)
        // One overflow alone saturates the probability.
        let one = try big.predict(json: try JSONValue.parse(#"{"income": 1e308, "age": 0, "city": "é"}"#))
        #expect(one.probabilities == [0, 1])
        // income → +∞ and age → −∞: the margin would be ∞ − ∞ = NaN.
        let both = #"{"income": 1e308, "age": -1e308, "city": "é"}"#
        #expect {
            try big.predict(json: try JSONValue.parse(both), row: 3)
        } throws: { error in
            (error as? ScoringError)?.description == "row 3: the inputs overflow the model's arithmetic (a value is too large in magnitude)"
        }
        var batch = ColumnBatch(for: big, firstRow: 3)
        batch.appendRow()
        let value = try JSONValue.parse(both)
        for (i, name) in big.fieldNames.enumerated() { batch.setJSON(field: i, value[name]!) }
        var output = BatchOutput()
        big.score(batch, into: &output)
        #expect(output.scored == 0)
        #expect(output.labels == [-1])
        #expect(output.errors.first?.message.contains("overflow") == true)
    }

    @Test func emptyStringsAndUnicodeCategoriesMatchByteForByte() throws {
        // "é" precomposed and "e" + combining accent are different categories, as in scikit-learn.
        let composed = try scorer.predict(json: try record(#"{"income": 1, "age": 2, "city": "\u00e9"}"#))
        let decomposed = try scorer.predict(json: try record(#"{"income": 1, "age": 2, "city": "e\u0301"}"#))
        #expect(close(composed.probabilities[1], handProbability(income: 1, age: 2, cityCode: 3), relative: 1e-12))
        #expect(close(decomposed.probabilities[1], handProbability(income: 1, age: 2, cityCode: 2), relative: 1e-12))
        #expect(error(#"{"income": 1, "age": 2, "city": ""}"#)?.description
            == #"row 17, field "city": unknown category ""; expected one of Zürich, 北京, é, é"#)
        #expect(error(#"{"income": 1, "age": 2, "city": "zürich"}"#)?.message.hasPrefix("unknown category \"zürich\"") == true)
        #expect(error(#"{"income": "", "age": 2, "city": "é"}"#)?.description == #"row 17, field "income": expected a number, got """#)
    }

    @Test func declaredPoliciesImputeAndZeroInsteadOfFailing() throws {
        let lenient = try Scorer(handModel(numberMissing: .impute, categoryMissing: .allZeros, unknown: .allZeros))
        let p = try lenient.predict(json: try JSONValue.parse(#"{"age": 30, "city": "atlantis"}"#))
        #expect(close(p.probabilities[1], handProbability(income: 40_000, age: 30, cityCode: nil), relative: 1e-12))
        let q = try lenient.predict([.missing, .number(30), .missing])
        #expect(p == q)
    }

    @Test func theBatchPathGivesTheSameAnswersAndTheSameErrors() throws {
        let lines = [
            #"{"income": 61000, "age": 40, "city": "北京"}"#,
            #"{"income": "abc", "age": 40, "city": "é"}"#,
            #"{"income": 1, "age": 40, "city": "atlantis"}"#,
            #"{"income": null, "age": 40, "city": "é"}"#,
            #"{"income": 1, "age": 40}"#,
            #"{"income": 20000, "age": 18, "city": "Zürich"}"#,
        ]
        var batch = ColumnBatch(for: scorer, firstRow: 10)
        for line in lines {
            batch.appendRow()
            let value = try JSONValue.parse(line)
            for (i, name) in scorer.fieldNames.enumerated() { batch.setJSON(field: i, value[name] ?? .null) }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        #expect(output.scored == 2)
        #expect(output.errors.count == 4)
        #expect(output.labels.count == lines.count)
        for (r, line) in lines.enumerated() {
            let single = Result { try scorer.predict(json: try JSONValue.parse(line), row: 10 + r) }
            switch single {
            case .success(let p):
                #expect(Array(output.probabilities[(r * 2)..<(r * 2 + 2)]) == p.probabilities)
                #expect(output.labels[r] == Int32(p.labelIndex))
            case .failure(let e):
                #expect(output.labels[r] == -1)
                #expect(output.errors.contains(e as! ScoringError), "row \(10 + r): \(e)")
            }
        }
    }

    @Test func csvCellsParseIntoTheBatchWithEmptyMeaningMissing() throws {
        let lenient = try Scorer(handModel(numberMissing: .impute))
        var batch = ColumnBatch(for: lenient)
        for cells in [["61000", "40", "北京"], ["", "30", "é"], ["1e5x", "30", "é"]] {
            batch.appendRow()
            for (i, cell) in cells.enumerated() {
                var cell = cell
                cell.withUTF8 { batch.setText(field: i, UnsafeRawBufferPointer($0)) }
            }
        }
        var output = BatchOutput()
        lenient.score(batch, into: &output)
        #expect(close(output.probabilities[1], handProbability(income: 61_000, age: 40, cityCode: 1), relative: 1e-12))
        #expect(close(output.probabilities[3], handProbability(income: 40_000, age: 30, cityCode: 3), relative: 1e-12))
        #expect(output.errors.map(\.description) == [#"row 3, field "income": expected a number, got "1e5x""#])
    }
}
