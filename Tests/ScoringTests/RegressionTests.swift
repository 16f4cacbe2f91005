import Foundation
import JSON
import Scoring
import Testing

/// Regression models: the format, imports against the libraries' own predictions (committed
/// outputs of fixtures/regression_reference.py: 300 held-out records each, with missing values
/// and unseen categories), and the ridge trainer against scikit-learn's Ridge.
@Suite struct RegressionTests {
    func importFixture(_ model: String, format: ModelImport.Format, schema: String? = nil) throws -> ModelDocument {
        let schema = try schema.map { try ImportSchema.decode(try fixtureData($0)) }
        return try ModelImport.convert(
            try fixtureData(model), format: format, file: model, schema: schema, name: "rate", created: "2026-11-30T00:00:00Z")
    }

    /// Every record within `tolerance` of the library's value (relative to the value's size, at
    /// least 1), one record at a time and in a column batch; the worst difference.
    @discardableResult
    func checkParity(_ document: ModelDocument, _ expected: String, tolerance: Double = 1e-6) throws -> Double {
        let decoded = try ModelDocument.decode(document.encoded())
        #expect(decoded == document)
        #expect(decoded.isRegression)
        let scorer = try Scorer(decoded)
        #expect(scorer.outputCount == 1 && scorer.classes.isEmpty)
        let lines = String(decoding: try fixtureData(expected), as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 300)
        var batch = ColumnBatch(for: scorer)
        var singles: [Double] = []
        var worst = 0.0
        for (i, line) in lines.enumerated() {
            let entry = try JSONValue.parse(String(line))
            guard let record = entry["record"], case .number(let want)? = entry["value"] else {
                throw ModelFormatError("bad expected line \(i + 1)")
            }
            let got = try scorer.predict(json: record, row: i + 1)
            let value = try #require(got.value)
            #expect(got.probabilities == [value] && got.label == JSONWriter.numberText(value))
            singles.append(value)
            let error = abs(value - want) / max(1, abs(want))
            worst = max(worst, error)
            #expect(error <= tolerance, "\(expected) row \(i + 1): \(value) vs \(want)")
            batch.appendRow()
            for (f, name) in scorer.fieldNames.enumerated() { batch.setJSON(field: f, record[name] ?? .null) }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        #expect(output.scored == lines.count)
        #expect(output.probabilities == singles, "the column batch scores as one record at a time")
        print("\(expected): \(lines.count) rows, worst relative difference \(worst)")
        return worst
    }

    @Test(arguments: ["squarederror", "pseudohubererror", "absoluteerror"])
    func xgboostRegressionMatchesTheLibrary(objective: String) throws {
        let document = try importFixture(
            "xgboost-rate-\(objective).json", format: .xgboostJSON, schema: "xgboost-rate-\(objective)-schema.json")
        #expect(document.metadata.imported?.objective == "reg:\(objective)")
        #expect(document.outputs.target == "rate" && document.estimator.link == .identity)
        try checkParity(document, "xgboost-rate-\(objective)-expected.jsonl")
    }

    @Test(arguments: ["l2", "l1", "huber"])
    func lightgbmRegressionMatchesTheLibrary(objective: String) throws {
        let document = try importFixture(
            "lightgbm-rate-\(objective).txt", format: .lightgbmText, schema: "lightgbm-rate-\(objective)-schema.json")
        #expect(document.outputs.target == "rate")
        try checkParity(document, "lightgbm-rate-\(objective)-expected.jsonl")
    }

    @Test(arguments: ["ridge", "linear"])
    func sklearnLinearRegressionExportsMatchTheLibrary(model: String) throws {
        let document = try importFixture("sklearn-rate-\(model)-model.json", format: .sklearnJSON)
        #expect(document.estimator.type == .linearRegression)
        try checkParity(document, "sklearn-rate-\(model)-expected.jsonl", tolerance: 1e-9)
    }

    @Test func aRegressionWithoutASchemaPredictsAValueNamedPrediction() throws {
        let document = try importFixture("lightgbm-rate-l2.txt", format: .lightgbmText)
        #expect(document.outputs.target == "prediction" && document.outputs.classes.isEmpty)
    }

    @Test func classifierFilesKeepTheirBytesAndSha256() throws {
        // The sha256 of these files as registered before regression outputs existed (switchyard at
        // b799f53 `models register`): a classifier's document encodes exactly as it did.
        for (file, sha) in [
            ("sklearn-credit-model.json", "1f85ee9f54dc6cbe00cbb3f98dd5e9021b06de6907950725bef9bb274786befb"),
            ("sklearn-digits-model.json", "93b4d0b249ac8638793ab86aa3ac83ed1e8c41eeec9f659a55262ec04a4b2145"),
        ] {
            let encoded = try ModelDocument.decode(try fixtureData(file)).encoded()
            #expect(SHA256.hex(Array(encoded)) == sha, "\(file)")
            #expect(!String(decoding: encoded, as: UTF8.self).contains("\"target\""))
        }
        // A classifier's training metadata keeps its C and gains no alpha.
        var document = handModel()
        document.metadata.training = .init(
            dataSHA256: "x", dataRows: 1, label: "y", holdout: 0.2, seed: 1, algorithm: "lbfgs", c: 1, iterations: 3, metrics: [:])
        let text = String(decoding: document.encoded(), as: UTF8.self)
        #expect(text.contains("\"C\" : 1") && !text.contains("alpha"))
    }

    @Test func theFormatRefusesMixedOutputsNamingWhatIsWrong() throws {
        func message(_ change: (inout ModelDocument) -> Void) -> String {
            var document = try! importFixture("sklearn-rate-ridge-model.json", format: .sklearnJSON)
            change(&document)
            do {
                try document.validate()
                return ""
            } catch { return error.message }
        }
        #expect(message { _ in } == "")
        #expect(message { $0.outputs.classes = ["a", "b"] }.contains("lists no classes"))
        #expect(message { $0.estimator.link = .logistic }.contains("link \"identity\""))
        #expect(message { $0.estimator.type = .logisticRegression }.contains("logistic_regression takes link"))
        #expect(message { $0.outputs = .init(classes: ["a", "b"]) }.contains("link \"identity\" is a regression's"))
        #expect(message { $0.outputs.target = "" }.contains("non-empty"))
        // A file with neither classes nor a target says what it needs.
        var json = String(decoding: try fixtureData("sklearn-rate-ridge-model.json"), as: UTF8.self)
        json = json.replacingOccurrences(of: "\"target\": \"rate\"", with: "\"note\": 1")
        #expect(throws: ModelFormatError.self) { try ModelDocument.decode(Data(json.utf8)) }
    }

    @Test func importsRefuseTransformedRegressionsNamingTheObjective() throws {
        func message(_ data: Data, _ format: ModelImport.Format, schema: ImportSchema? = nil) -> String {
            do {
                _ = try ModelImport.convert(data, format: format, file: "m", schema: schema, name: "m", created: "t")
                return ""
            } catch { return error.message }
        }
        let xgboost = String(decoding: try fixtureData("xgboost-rate-squarederror.json"), as: UTF8.self)
        for objective in ["count:poisson", "reg:gamma", "reg:tweedie", "reg:logistic"] {
            let data = Data(xgboost.replacingOccurrences(of: "\"reg:squarederror\"", with: "\"\(objective)\"").utf8)
            #expect(message(data, .xgboostJSON).contains("objective \"\(objective)\" is not supported"))
        }
        let lightgbm = String(decoding: try fixtureData("lightgbm-rate-l2.txt"), as: UTF8.self)
        let poisson = Data(lightgbm.replacingOccurrences(of: "objective=regression\n", with: "objective=poisson\n").utf8)
        #expect(message(poisson, .lightgbmText).contains("objective \"poisson\" is not supported"))
        let sqrt = Data(lightgbm.replacingOccurrences(of: "objective=regression\n", with: "objective=regression sqrt\n").utf8)
        #expect(message(sqrt, .lightgbmText).contains("reg_sqrt"))
        // A schema naming classes for a regression (or a target for a classifier) is refused.
        #expect(message(Data(xgboost.utf8), .xgboostJSON, schema: .init(fields: [], classes: ["a", "b"])).contains("is a regression"))
        let classifier = try fixtureData("xgboost-credit.json")
        #expect(message(classifier, .xgboostJSON, schema: .init(fields: [], target: "rate")).contains("is a classifier"))
    }

    @Test func ridgeTrainerIsWithinHalfAPointOfScikitLearnsR2OnTheSameSplit() throws {
        struct Reference: Decodable {
            var rows: Int, data_seed: UInt64, split_seed: UInt64, holdout: Double, data_sha256: String
            var train_rows: Int, r2: Double, rmse: Double, alpha: Double
        }
        let reference = try JSONDecoder().decode(Reference.self, from: try fixtureData("regression-ridge-reference.json"))
        var generator = CreditFixture(seed: reference.data_seed)
        var csv = Array(CreditFixture.csvHeader.utf8)
        for _ in 0..<reference.rows { CreditFixture.appendCSV(generator.next(), to: &csv) }
        #expect(SHA256.hex(csv) == reference.data_sha256, "the bytes scikit-learn was fitted on")

        let report = try Trainer.train(
            csv: csv,
            .init(name: "pricing", label: "rate", task: .regression, holdout: reference.holdout, seed: reference.split_seed,
                  alpha: reference.alpha, ignore: ["id", "label"], created: "t"))
        let document = report.document
        #expect(report.trainRows == reference.train_rows)
        #expect(document.estimator.type == .linearRegression && document.outputs.target == "rate")
        #expect(document.schema.fields.count == 14)
        let training = try #require(document.metadata.training)
        #expect(training.algorithm == "ridge" && training.alpha == reference.alpha && training.c == nil)
        let r2 = try #require(training.metrics["r2"]), rmse = try #require(training.metrics["rmse"])
        print("ridge: R² \(r2) (scikit-learn \(reference.r2)), RMSE \(rmse) (scikit-learn \(reference.rmse))")
        #expect(abs(r2 - reference.r2) <= 0.005, "switchyard \(r2) vs scikit-learn \(reference.r2)")
        #expect(abs(rmse - reference.rmse) <= 0.01 * reference.rmse)
        // The same estimator in closed form: the fitted coefficients equal scikit-learn's export.
        let exported = try ModelDocument.decode(try fixtureData("sklearn-rate-ridge-model.json"))
        let ours = try #require(document.estimator.coefficients?.first)
        let theirs = try #require(exported.estimator.coefficients?.first)
        #expect(ours.count == theirs.count)
        for (a, b) in zip(ours, theirs) { #expect(abs(a - b) <= 1e-6 * max(1, abs(b)), "\(a) vs \(b)") }
    }

    @Test func regressionRefusesALabelThatIsNotANumber() throws {
        let csv = Array("x,color\n1,red\n2,blue\n3,red\n4,blue\n5,red\n".utf8)
        #expect(throws: TrainingError.self) {
            try Trainer.train(csv: csv, .init(name: "m", label: "color", task: .regression, created: "t"))
        }
        do {
            _ = try Trainer.train(csv: csv, .init(name: "m", label: "color", task: .regression, created: "t"))
        } catch { #expect(error.message.contains("is not a number column")) }
        // A classifier over a label with very many values suggests regression.
        var many = "x,y\n"
        for i in 0..<300 { many += "\(i),\(Double(i) * 1.5)\n" }
        do {
            _ = try Trainer.train(csv: Array(many.utf8), .init(name: "m", label: "y", created: "t"))
            Issue.record("a 300-class classification trained")
        } catch { #expect(error.message.contains("--task regression")) }
    }

    @Test func explanationsOfARegressionAddUpToItsValue() throws {
        for (model, format, schema) in [
            ("sklearn-rate-ridge-model.json", ModelImport.Format.sklearnJSON, nil as String?),
            ("xgboost-rate-squarederror.json", .xgboostJSON, "xgboost-rate-squarederror-schema.json"),
            ("lightgbm-rate-l2.txt", .lightgbmText, "lightgbm-rate-l2-schema.json"),
        ] {
            let scorer = try Scorer(try importFixture(model, format: format, schema: schema))
            let record = try JSONValue.parse(String(String(decoding: try fixtureData("credit-sample.jsonl"), as: UTF8.self).split(separator: "\n")[0]))
            let e = try scorer.explain(json: record)
            let value = try #require(e.prediction.value)
            #expect(e.base.count == 1 && scorer.marginName(0) == "rate" && scorer.marginDescription(0) == "rate")
            let sum = e.base[0] + e.contributions[0].reduce(0, +)
            #expect(abs(sum - value) <= 1e-4 * max(1, abs(value)), "\(model): \(sum) vs \(value)")
            guard case .array(let margins) = e.json(scorer), case .string("rate")? = margins.first?["class"] else {
                Issue.record("\(model): the explanation names its margin rate")
                continue
            }
        }
    }
}
