import Foundation
import JSON
import Scoring
import Testing

/// Models trained by XGBoost and LightGBM, imported and scored by Switchyard,
/// against the libraries' own predictions (committed outputs of
/// fixtures/trees_reference.py: 1,200 held-out rows with missing values,
/// unseen categories and exact zeros).
@Suite struct ImportTests {
    func importFixture(_ model: String, format: ModelImport.Format, schema: String? = nil) throws -> ModelDocument {
        let schema = try schema.map { try ImportSchema.decode(try fixtureData($0)) }
        return try ModelImport.convert(
            try fixtureData(model), format: format, file: model, schema: schema, name: "imported", created: "2026-11-25T00:00:00Z")
    }

    /// Every row within 1e-6 of the library, one record at a time and in a column batch.
    func checkParity(_ document: ModelDocument, _ expected: String) throws {
        // The document survives its own encoding unchanged.
        let decoded = try ModelDocument.decode(document.encoded())
        #expect(decoded == document)
        let scorer = try Scorer(decoded)
        let lines = String(decoding: try fixtureData(expected), as: UTF8.self).split(separator: "\n")
        #expect(lines.count >= 1000)
        var batch = ColumnBatch(for: scorer)
        var singles: [[Double]] = []
        var worst = 0.0
        var missing = 0
        var unseen = 0
        for (i, line) in lines.enumerated() {
            let value = try JSONValue.parse(String(line))
            guard let record = value["record"], case .array(let p)? = value["probabilities"], case .string(let label)? = value["label"],
                case .object(let object) = record
            else { throw ModelFormatError("bad expected line \(i + 1)") }
            missing += scorer.fieldNames.count - object.values.filter { $0 != .null }.count
            unseen += object.values.filter { if case .string(let s) = $0 { s.hasPrefix("unseen-") } else { false } }.count
            let expectedP = p.map { if case .number(let x) = $0 { x } else { Double.nan } }
            let got = try scorer.predict(json: record, row: i + 1)
            singles.append(got.probabilities)
            for k in expectedP.indices {
                let error = abs(got.probabilities[k] - expectedP[k])
                worst = max(worst, error)
                #expect(error <= 1e-6, "\(expected) row \(i + 1), class \(k): \(got.probabilities[k]) vs \(expectedP[k])")
            }
            // A near tie may round either way; the label follows the probabilities.
            if (expectedP.max() ?? 0) - (expectedP.sorted().dropLast().last ?? 0) > 1e-6 {
                #expect(got.label == label, "\(expected) row \(i + 1)")
            }
            batch.appendRow()
            for (f, name) in scorer.fieldNames.enumerated() { batch.setJSON(field: f, record[name] ?? .null) }
        }
        #expect(missing > 500, "the sample has missing values")
        #expect(unseen > 100, "the sample has unseen categories")
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        #expect(output.scored == lines.count)
        let c = scorer.classes.count
        for i in singles.indices {
            #expect(Array(output.probabilities[(i * c)..<((i + 1) * c)]) == singles[i], "batch row \(i + 1)")
        }
        print("\(expected): \(lines.count) rows, worst absolute difference \(worst)")
    }

    @Test func xgboostBinaryWithCategoricalSplits() throws {
        let document = try importFixture("xgboost-credit.json", format: .xgboostJSON, schema: "xgboost-credit-schema.json")
        let trees = try #require(document.estimator.trees)
        #expect(trees.trees.count == 40)
        #expect(trees.trees.contains { !($0.categorical ?? []).isEmpty }, "the fixture has categorical splits")
        #expect(document.estimator.link == .logistic)
        #expect(document.metadata.imported?.library == "XGBoost 3.2.0")
        try checkParity(document, "xgboost-credit-expected.jsonl")
    }

    @Test func xgboostCategoryNamesComeFromTheModelWithoutASchema() throws {
        let document = try importFixture("xgboost-credit.json", format: .xgboostJSON)
        let region = try #require(document.schema.fields.first { $0.name == "region" })
        #expect(region.values == ["north", "south", "east", "west", "central", "northeast", "southwest", "islands"])
        try checkParity(document, "xgboost-credit-expected.jsonl")
    }

    @Test func xgboostMulticlassWithOneHotGroups() throws {
        let document = try importFixture("xgboost-credit-grade.json", format: .xgboostJSON, schema: "xgboost-credit-grade-schema.json")
        #expect(document.outputs.classes == ["low", "mid", "high"])
        #expect(document.estimator.link == .softmax)
        #expect(document.preprocessing.filter { $0.transform == .oneHot }.count == 3)
        try checkParity(document, "xgboost-credit-grade-expected.jsonl")
    }

    @Test func lightgbmBinaryWithCategoriesAndSigmoid() throws {
        let document = try importFixture("lightgbm-credit.txt", format: .lightgbmText, schema: "lightgbm-credit-schema.json")
        #expect(document.estimator.trees?.trees.contains { !($0.categorical ?? []).isEmpty } == true)
        try checkParity(document, "lightgbm-credit-expected.jsonl")
    }

    @Test func lightgbmMulticlassInterleavesTreesByClass() throws {
        let document = try importFixture("lightgbm-credit-grade.txt", format: .lightgbmText, schema: "lightgbm-credit-grade-schema.json")
        let margins = try #require(document.estimator.trees).trees.prefix(6).map(\.margin)
        #expect(margins == [0, 1, 2, 0, 1, 2])
        try checkParity(document, "lightgbm-credit-grade-expected.jsonl")
    }

    @Test func lightgbmRandomForestAveragesAndTreatsZeroAsMissing() throws {
        let document = try importFixture("lightgbm-credit-rf.txt", format: .lightgbmText, schema: "lightgbm-credit-rf-schema.json")
        let trees = try #require(document.estimator.trees)
        #expect(trees.average)
        #expect(trees.trees.contains { !($0.zeroIsMissing ?? []).isEmpty })
        try checkParity(document, "lightgbm-credit-rf-expected.jsonl")
    }

    @Test func sklearnExportImportsAsItIs() throws {
        let document = try importFixture("sklearn-credit-model.json", format: .sklearnJSON)
        #expect(document.estimator.type == .logisticRegression)
        #expect(document.metadata.imported?.format == "sklearn-json")
    }

    // MARK: - The traps, one at a time, on hand-written XGBoost models

    /// One split on feature 0 at `threshold`, leaves -1 (left) and +1 (right).
    func stump(threshold: String, defaultLeft: Int = 0, baseScore: String = "[5E-1]", extraNodes: String = "") -> Data {
        Data("""
            {"learner": {"feature_names": ["x"], "feature_types": ["float"],
              "gradient_booster": {"name": "gbtree", "model": {"tree_info": [0], "trees": [{
                "left_children": [1, -1, -1\(extraNodes.isEmpty ? "" : ", -1")], "right_children": [2, -1, -1\(extraNodes.isEmpty ? "" : ", -1")],
                "split_conditions": [\(threshold), -1.0, 1.0\(extraNodes)], "split_indices": [0, 0, 0\(extraNodes.isEmpty ? "" : ", 4294967295")],
                "default_left": [\(defaultLeft), 0, 0\(extraNodes.isEmpty ? "" : ", 0")], "split_type": [0, 0, 0\(extraNodes.isEmpty ? "" : ", 0")],
                "categories": [], "categories_nodes": [], "categories_segments": [], "categories_sizes": []}]}},
              "learner_model_param": {"base_score": "\(baseScore)", "num_class": "0", "num_feature": "1", "num_target": "1"},
              "objective": {"name": "binary:logistic"}}, "version": [3, 2, 0]}
            """.utf8)
    }

    func margin(_ document: ModelDocument, _ x: JSONValue) throws -> Double {
        let p = try Scorer(document).predict(json: .object(JSONObject(["x": x]))).probabilities[1]
        return log(p / (1 - p))
    }

    @Test func xgboostComparesInFloat32WithLessThan() throws {
        // 0.1 as float32 is 0.100000001490116…; the double 0.1 rounds to it, so it is not less: right.
        let document = try ModelImport.convert(stump(threshold: "0.1"), format: .xgboostJSON, file: "m.json", schema: nil, name: "m", created: "")
        #expect(abs(try margin(document, .number(0.1)) - 1) < 1e-6)
        // Just below the float32 value, but a double that rounds up to it: still right.
        #expect(abs(try margin(document, .number(0.100000001)) - 1) < 1e-6)
        #expect(abs(try margin(document, .number(0.0999999)) + 1) < 1e-6)
    }

    @Test func xgboostMissingFollowsDefaultLeftAndBaseScoreIsAProbability() throws {
        let right = try ModelImport.convert(stump(threshold: "0.5", defaultLeft: 0, baseScore: "[2E-1]"), format: .xgboostJSON, file: "m", schema: nil, name: "m", created: "")
        let left = try ModelImport.convert(stump(threshold: "0.5", defaultLeft: 1, baseScore: "2E-1"), format: .xgboostJSON, file: "m", schema: nil, name: "m", created: "")
        let base = log(Double(Float(0.2)) / (1 - Double(Float(0.2))))
        #expect(abs(try margin(right, .null) - (base + 1)) < 1e-5)
        #expect(abs(try margin(left, .null) - (base - 1)) < 1e-5)
    }

    @Test func xgboostDeletedNodesAreDropped() throws {
        // A fourth node no split points at (pruned), with a feature index that does not exist.
        let document = try ModelImport.convert(
            stump(threshold: "0.5", extraNodes: ", 7.0"), format: .xgboostJSON, file: "m", schema: nil, name: "m", created: "")
        #expect(document.estimator.trees?.trees[0].feature.count == 3)
        #expect(abs(try margin(document, .number(0.7)) - 1) < 1e-6)
    }

    @Test func errorsNameWhatIsWrong() throws {
        func message(_ data: Data, _ format: ModelImport.Format, schema: ImportSchema? = nil) -> String {
            do {
                _ = try ModelImport.convert(data, format: format, file: "m", schema: schema, name: "m", created: "")
                return "no error"
            } catch {
                return error.message
            }
        }
        #expect(message(Data("{}".utf8), .xgboostJSON).contains("no \"learner\""))
        let poisson = String(decoding: stump(threshold: "0.5"), as: UTF8.self).replacingOccurrences(of: "binary:logistic", with: "count:poisson")
        #expect(message(Data(poisson.utf8), .xgboostJSON).contains("objective \"count:poisson\" is not supported"))
        #expect(message(Data("tree\nversion=v4\n".utf8), .lightgbmText).contains("max_feature_idx"))
        let cut = String(decoding: try fixtureData("lightgbm-credit.txt"), as: UTF8.self).components(separatedBy: "end of trees")[0]
        #expect(message(Data(cut.utf8), .lightgbmText).contains("end of trees"))
        let misspelt = ImportSchema(fields: [ImportSchema.Field(name: "x", type: .number), ImportSchema.Field(name: "y", type: .number)])
        #expect(message(stump(threshold: "0.5"), .xgboostJSON, schema: misspelt).contains("feature \"y\""))
        let lacking = ImportSchema(fields: [])
        #expect(message(stump(threshold: "0.5"), .xgboostJSON, schema: lacking).contains("feature \"x\" is in no schema field"))
    }

    /// Hostile numbers in a model file are errors, never traps or allocations they chose: each of
    /// these used to crash the process (the first was found by the importers' fuzz target).
    @Test func hostileNumbersInAModelFileAreErrors() throws {
        func message(_ data: Data, _ format: ModelImport.Format) -> String {
            do {
                _ = try ModelImport.convert(data, format: format, file: "m", schema: nil, name: "m", created: "")
                return "no error"
            } catch {
                return error.message
            }
        }
        let crash = try fixtureData("fuzz/importers/crash-negative-max-feature-idx").dropFirst()
        #expect(message(Data(crash), .lightgbmText) == "max_feature_idx -14 is not a feature index (0 to 999999)")
        let lightgbm = String(decoding: try fixtureData("fuzz/importers/lightgbm-one-tree").dropFirst(), as: UTF8.self)
        #expect(message(Data(lightgbm.utf8), .lightgbmText) == "no error", "the seed itself imports")
        func lightgbmWith(_ from: String, _ to: String) -> Data {
            #expect(lightgbm.contains(from), "\(from)")
            return Data(lightgbm.replacingOccurrences(of: from, with: to).utf8)
        }
        #expect(message(lightgbmWith("max_feature_idx=14", "max_feature_idx=9223372036854775807"), .lightgbmText).hasPrefix("max_feature_idx 9223372036854775807 is not a feature index"))
        #expect(message(lightgbmWith("num_tree_per_iteration=1", "num_tree_per_iteration=99999999999"), .lightgbmText).hasPrefix("num_tree_per_iteration 99999999999 is not a class count"))
        #expect(message(lightgbmWith("left_child=2 ", "left_child=-9223372036854775808 "), .lightgbmText).contains("is neither a split"))
        #expect(message(lightgbmWith("decision_type=8 ", "decision_type=9 "), .lightgbmText).contains("names category set"))

        let xgboost = String(decoding: stump(threshold: "0.5"), as: UTF8.self)
        func xgboostWith(_ from: String, _ to: String) -> Data {
            #expect(xgboost.contains(from), "\(from)")
            return Data(xgboost.replacingOccurrences(of: from, with: to).utf8)
        }
        #expect(message(xgboostWith(#""version": [3, 2, 0]"#, #""version": [1e300, -1e300, 0.5]"#), .xgboostJSON) == "no error")
        #expect(message(xgboostWith(#""left_children": [1, -1, -1]"#, #""left_children": [1e300, -1, -1]"#), .xgboostJSON).contains("does not exist"))
        #expect(message(xgboostWith(#""split_indices": [0, 0, 0]"#, #""split_indices": [-1e19, 0, 0]"#), .xgboostJSON).contains("does not exist"))
        #expect(message(xgboostWith(#""num_feature": "1""#, #""num_feature": "999999999999""#), .xgboostJSON).hasPrefix("num_feature 999999999999 is not a feature count"))
        let softmax = xgboostWith(#""objective": {"name": "binary:logistic"}"#, #""objective": {"name": "multi:softprob"}"#)
        let bigClasses = String(decoding: softmax, as: UTF8.self).replacingOccurrences(of: #""num_class": "0""#, with: #""num_class": "99999999999""#)
        #expect(message(Data(bigClasses.utf8), .xgboostJSON).hasPrefix("num_class 99999999999 is not a class count"))
        let categorical = xgboost.replacingOccurrences(of: #""categories": [], "categories_nodes": [], "categories_segments": [], "categories_sizes": []"#,
                                                       with: #""categories": [1], "categories_nodes": [0], "categories_segments": [1e300], "categories_sizes": [9.2e18]"#)
        #expect(message(Data(categorical.utf8), .xgboostJSON).contains("categorical split 0 is out of range"))
    }
}
