import Foundation
import JSON
import Scoring
import Testing

/// ONNX graphs from skl2onnx and onnxmltools, imported and scored by Switchyard, against
/// onnxruntime's own outputs (committed by fixtures/onnx_reference.py: 300 held-out records each).
@Suite struct ONNXImportTests {
    func importONNX(_ name: String, schema: ImportSchema? = nil) throws -> ModelDocument {
        try ModelImport.convert(
            try fixtureData("\(name).onnx"), format: .onnx, file: "\(name).onnx", schema: schema, name: name, created: "2026-11-30T00:00:00Z")
    }

    /// Every record within `tolerance` of onnxruntime (absolute for probabilities, relative for a
    /// value), one record at a time and in a column batch; the worst difference.
    @discardableResult
    func checkParity(_ document: ModelDocument, _ name: String, tolerance: Double = 1e-5) throws -> Double {
        let decoded = try ModelDocument.decode(document.encoded())
        #expect(decoded == document)
        let scorer = try Scorer(decoded)
        let lines = String(decoding: try fixtureData("\(name)-expected.jsonl"), as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 300)
        var batch = ColumnBatch(for: scorer)
        var singles: [[Double]] = []
        var worst = 0.0
        for (i, line) in lines.enumerated() {
            let entry = try JSONValue.parse(String(line))
            let record = try #require(entry["record"])
            let want: [Double] = if case .number(let v)? = entry["value"] { [v] } else { numbersOf(entry["probabilities"]) }
            let got = try scorer.predict(json: record, row: i + 1)
            #expect(got.probabilities.count == want.count, "\(name) row \(i + 1)")
            for (g, w) in zip(got.probabilities, want) {
                let error = abs(g - w) / (scorer.isRegression ? max(1, abs(w)) : 1)
                worst = max(worst, error)
                #expect(error <= tolerance, "\(name) row \(i + 1): \(g) vs \(w)")
            }
            singles.append(got.probabilities)
            batch.appendRow()
            if case .array(let values) = record {
                for (f, v) in values.enumerated() { batch.setJSON(field: f, v) }
            } else {
                for (f, field) in scorer.fieldNames.enumerated() { batch.setJSON(field: f, record[field] ?? .null) }
            }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        #expect(output.scored == lines.count)
        #expect(output.probabilities == singles.flatMap { $0 }, "the column batch scores as one record at a time")
        print("\(name): \(lines.count) rows, worst difference \(worst)")
        return worst
    }

    func numbersOf(_ value: JSONValue?) -> [Double] {
        guard case .array(let a)? = value else { return [] }
        return a.compactMap { if case .number(let x) = $0 { x } else { nil } }
    }

    @Test func aScikitLearnPipelineFoldsIntoPerFieldPreprocessing() throws {
        let document = try importONNX("onnx-sklearn-pipeline")
        #expect(document.estimator.type == .logisticRegression && document.estimator.link == .logistic)
        #expect(document.outputs.classes == ["0", "1"])
        // Inputs become fields: the imputed numbers impute, the one-hot categories list their values.
        let fields = Dictionary(uniqueKeysWithValues: document.schema.fields.map { ($0.name, $0) })
        #expect(document.schema.fields.count == 14)
        #expect(fields["income"]?.missing == .impute && fields["region"]?.values?.count == 8 && fields["region"]?.unknown == .allZeros)
        #expect(document.preprocessing.first { $0.field == "amount" }?.transform == .standardize)
        #expect(document.metadata.imported?.format == "onnx" && document.metadata.imported?.library?.contains("skl2onnx") == true)
        try checkParity(document, "onnx-sklearn-pipeline")
    }

    @Test func anXGBoostClassifierFromOnnxmltools() throws {
        let document = try importONNX("onnx-xgboost")
        #expect(document.estimator.link == .logistic && document.estimator.trees?.split == .lessThan)
        #expect(document.schema.fields.first?.name == "input_0")
        try checkParity(document, "onnx-xgboost")
    }

    @Test func aLightGBMMulticlassFromOnnxmltools() throws {
        let document = try importONNX("onnx-lightgbm")
        #expect(document.estimator.link == .softmax && document.outputs.classes == ["0", "1", "2"])
        #expect(document.estimator.trees?.split == .lessOrEqual)
        try checkParity(document, "onnx-lightgbm")
    }

    @Test func regressionsFromScikitLearn() throws {
        let trees = try importONNX("onnx-trees-regressor", schema: .init(fields: [], target: "rate"))
        #expect(trees.outputs.target == "rate" && trees.estimator.type == .treeEnsemble)
        try checkParity(trees, "onnx-trees-regressor")
        let linear = try importONNX("onnx-linear-regressor")
        #expect(linear.outputs.target == "prediction" && linear.estimator.type == .linearRegression)
        try checkParity(linear, "onnx-linear-regressor")
    }

    /// The ai.onnx.ml 3 attribute form: thresholds, weights and base values as double tensors,
    /// over a double input (compared and summed in double).
    @Test func theTensorAttributeFormOfAiOnnxMl3() throws {
        let document = try importONNX("onnx-trees-tensor", schema: .init(fields: [], target: "rate"))
        #expect(document.estimator.trees?.precision == .float64 && document.estimator.intercepts[0] > 10)
        try checkParity(document, "onnx-trees-tensor")
    }

    /// OrdinalEncoder's LabelEncoder (keys_strings → values_int64s) becomes a category_code column
    /// the trees read; an unknown category, which onnxruntime codes -1, is refused, not scored apart.
    @Test func labelEncodedCategoriesForTrees() throws {
        let document = try importONNX("onnx-ordinal-trees")
        let region = try #require(document.schema.fields.first { $0.name == "region" })
        #expect(region.values == ["central", "east", "islands", "north", "northeast", "south", "southwest", "west"])
        #expect(region.unknown == .error && document.preprocessing.first { $0.field == "region" }?.transform == .categoryCode)
        try checkParity(document, "onnx-ordinal-trees")
        let scorer = try Scorer(document)
        var record = JSONObject()
        for field in document.schema.fields { record.append(field.name, field.type == .number ? .number(1) : .string(field.values![0])) }
        _ = try scorer.predict(json: .object(record))
        record["region"] = .string("atlantis")
        #expect(throws: ScoringError.self) { try scorer.predict(json: .object(record)) }
    }

    /// skl2onnx's multinomial logistic regression: SOFTMAX, then a Cast, an L1 Normalizer (exact:
    /// the probabilities already sum to 1) and a ZipMap behind the estimator.
    @Test func aMultinomialWithItsNormalizerAndZipMap() throws {
        let document = try importONNX("onnx-multinomial")
        #expect(document.estimator.link == .softmax && document.estimator.coefficients?.count == 3)
        #expect(document.preprocessing.allSatisfy { $0.transform == .standardize })
        try checkParity(document, "onnx-multinomial")
    }

    @Test func aSchemaNamesAVectorInputsColumns() throws {
        let names = ["amount", "term", "income", "age", "tenure", "utilization", "inquiries", "delinquencies", "open_accounts",
                     "debt_ratio", "credit_score"]
        let document = try importONNX("onnx-lightgbm", schema: .init(fields: names.map { .init(name: $0, type: .number) }, classes: ["low", "mid", "high"]))
        #expect(document.schema.fields.map(\.name) == names && document.outputs.classes == ["low", "mid", "high"])
        #expect(throws: ModelFormatError.self) { try importONNX("onnx-lightgbm", schema: .init(fields: [.init(name: "x", type: .number)])) }
    }

    /// What is refused names the operator, the node and the opset.
    @Test func unsupportedGraphsAreRefusedNamingTheNode() throws {
        func message(_ bytes: [UInt8]) -> String {
            do {
                _ = try ModelImport.convert(Data(bytes), format: .onnx, file: "m.onnx", schema: nil, name: "m", created: "t")
                return ""
            } catch { return error.message }
        }
        // Rewrite every occurrence of a string in place (same length), so the file stays valid protobuf.
        func replacing(_ name: String, _ from: String, _ to: String) throws -> [UInt8] {
            precondition(from.utf8.count == to.utf8.count)
            var bytes = Array(try fixtureData("\(name).onnx"))
            let needle = Array(from.utf8)
            var found = false
            for at in 0...(bytes.count - needle.count) where Array(bytes[at..<(at + needle.count)]) == needle {
                bytes.replaceSubrange(at..<(at + needle.count), with: Array(to.utf8))
                found = true
            }
            guard found else { throw ModelFormatError("no \(from) in \(name)") }
            return bytes
        }
        let scaler = message(try replacing("onnx-linear-regressor", "Scaler", "Binarz"))
        #expect(scaler.contains("(Binarz, ai.onnx.ml opset 1) is not supported"), "\(scaler)")
        let post = message(try replacing("onnx-xgboost", "LOGISTIC", "PROBIT\0\0"))
        #expect(post.contains("TreeEnsembleClassifier") && post.contains("is not imported"), "\(post)")
        #expect(message(Array("not onnx at all".utf8)).contains("not an ONNX model"))
        #expect(message([]).contains("no graph"))
        #expect(message([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).contains("a length of"))
        // Any cut of a real file is an error, never a crash.
        let whole = Array(try fixtureData("onnx-sklearn-pipeline.onnx"))
        for cut in stride(from: 0, to: whole.count, by: 7) { _ = message(Array(whole[0..<cut])) }
    }
}
