import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Testing

@testable import Components

/// The XGBoost reg:squarederror fixture (predicting the credit table's `rate`), imported.
func pricingDocument() throws -> ModelDocument {
    let schema = try ImportSchema.decode(try Data(contentsOf: fixtures.appendingPathComponent("xgboost-rate-squarederror-schema.json")))
    return try ModelImport.convert(
        try Data(contentsOf: fixtures.appendingPathComponent("xgboost-rate-squarederror.json")), format: .xgboostJSON,
        file: "xgboost-rate-squarederror.json", schema: schema, name: "pricing", created: "2026-11-30T00:00:00Z")
}

/// Registers the pricing model as pricing@1 (production).
func registerPricing(_ registry: ModelRegistry) throws {
    try registry.register(try pricingDocument(), who: "test")
    try registry.promote(model: "pricing", version: 1, alias: "production", who: "test")
}

/// The first `count` records of fixtures/credit-sample.jsonl (their `rate` is not an input of the
/// pricing model, so it is ignored like any other extra member).
func sampleRecords(_ count: Int) throws -> [String] {
    let text = try String(contentsOf: fixtures.appendingPathComponent("credit-sample.jsonl"), encoding: .utf8)
    return Array(text.split(separator: "\n").prefix(count).map(String.init))
}

/// A regression model answers a value on every protocol (issue 20 item 1), the same value the
/// embedded scorer gives, and batch, stream and the prediction log write it.
@Suite(.serialized) struct RegressionServingTests {
    @Test func everyProtocolAnswersTheValue() throws {
        let f = try ServeFixture(open: true, reference: "pricing@production", log: .all, prepare: registerPricing)
        defer { f.stop() }
        let scorer = try Scorer(try pricingDocument())
        let records = try sampleRecords(3)
        let values = try records.map { try #require(try scorer.predict(json: try JSONValue.parse($0)).value) }
        #expect(Set(values).count == 3)

        // Azure ML: one {"value": x} per record, and with ?explain the value's contributions.
        let score = try f.post("/score", #"{"data": [\#(records.joined(separator: ","))]}"#, headers: [("x-request-id", "aml-1")])
        #expect(score.status == 200)
        guard case .array(let answers) = try body(score) else { Issue.record("not a list"); return }
        #expect(answers.map { $0["value"] } == values.map { .number($0) })
        #expect(answers.allSatisfy { $0["label"] == nil && $0["probabilities"] == nil })
        let explained = try body(try f.post("/score?explain=true", #"{"data": [\#(records[0])]}"#))
        #expect(explained[0]?["value"] == .number(values[0]))
        #expect(explained[0]?["explanation"]?[0]?["class"] == .string("rate"))

        // MLflow: plain numbers, from records and from CSV.
        let mlflow = try body(try f.post("/invocations", #"{"dataframe_records": [\#(records.joined(separator: ","))]}"#))
        #expect(numbers(mlflow["predictions"]) == values)
        let header = scorer.fieldNames.joined(separator: ",")
        let row = try scorer.fieldNames.map { name -> String in
            switch try JSONValue.parse(records[0])[name] {
            case .number(let x)?: JSONWriter.numberText(x)
            case .string(let s)?: s
            default: ""
            }
        }.joined(separator: ",")
        #expect(numbers(try body(try f.post("/invocations", header + "\n" + row + "\n", type: "text/csv"))["predictions"]) == [values[0]])

        // Open Inference Protocol: the metadata's one output, and `predict` FP64 [N].
        let metadata = try body(try f.get("/v2/models/pricing"))
        #expect(metadata["outputs"]?[0]?["name"] == .string("predict") && metadata["outputs"]?[1] == nil)
        let inputs = try records.map { try JSONValue.parse($0) }
        func column(_ name: String) -> String {
            inputs.map { $0[name]?.jsonText ?? "null" }.joined(separator: ",")
        }
        let tensors = scorer.document.schema.fields.map { field in
            #"{"name":"\#(field.name)","shape":[\#(inputs.count)],"datatype":"\#(field.type == .number ? "FP64" : "BYTES")","data":[\#(column(field.name))]}"#
        }
        let infer = #"{"id":"r","inputs":[\#(tensors.joined(separator: ","))]}"#
        let oip = try body(try f.post("/v2/models/pricing/infer", infer))
        #expect(oip["outputs"]?[0]?["name"] == .string("predict") && oip["outputs"]?[0]?["datatype"] == .string("FP64"))
        #expect(numbers(oip["outputs"]?[0]?["shape"]) == [3] && numbers(oip["outputs"]?[0]?["data"]) == values)
        #expect(oip["outputs"]?[1] == nil, "no label")
        let label = try f.post("/v2/models/pricing/infer", #"{"inputs":[\#(tensors.joined(separator: ","))],"outputs":[{"name":"label"}]}"#)
        #expect(label.status == 400 && String(decoding: label.body, as: UTF8.self).contains("output is predict"))
        // The binary extension: the values as 3 little-endian FP64 after the JSON header.
        let binary = try f.post("/v2/models/pricing/infer", #"{"inputs":[\#(tensors.joined(separator: ","))],"parameters":{"binary_data_output":true}}"#)
        let headerLength = Int(binary.headers["Inference-Header-Content-Length"] ?? "") ?? -1
        #expect(headerLength > 0 && binary.body.count == headerLength + 24)
        if headerLength > 0, binary.body.count == headerLength + 24 {
            let tail = Array(binary.body[headerLength...])
            let decoded = (0..<3).map { i in
                Double(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(tail[i * 8 + $1]) << (8 * UInt64($1)) })
            }
            #expect(decoded == values)
        }

        // The prediction log keeps the value, and the swagger document describes it.
        let folder = f.home.url.appendingPathComponent("predictions")
        #expect(waitFor { PredictionLog.find(in: folder, requestID: "aml-1").count == 3 })
        let logged = PredictionLog.find(in: folder, requestID: "aml-1").first { $0["row"] == .number(1) }
        #expect(logged?["value"] == .number(values[0]) && logged?["label"] == nil, "\(String(describing: logged))")
        let swagger = try body(try f.get("/swagger.json"))
        let items = swagger["paths"]?["/score"]?["post"]?["responses"]?["200"]?["content"]?["application/json"]?["schema"]?["items"]
        #expect(items?["properties"]?["value"]?["type"] == .string("number"))

        // The typed client and the console's parity check read the value.
        let typed = try ComponentAPI(url: "http://127.0.0.1:\(f.port)", key: nil).score(try JSONValue.parse(records[1]))
        #expect(typed.probabilities["value"] == values[1] && typed.label == JSONWriter.numberText(values[1]))
    }

    @Test(arguments: ["csv", "jsonl"])
    func batchWritesTheValue(format: String) throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try registerPricing(f.registry)
        let scorer = try Scorer(try f.registry.document(try f.registry.resolve("pricing@1")))
        let name = "sample.\(format)"
        let input = try Data(contentsOf: fixtures.appendingPathComponent("credit-sample.\(format)"))
        try f.write(name, Array(input) + Array((format == "csv" ? "999,lots,36\n" : "{\"id\": 999, \"amount\": \"lots\"}\n").utf8))
        let runner = BatchRunner(scorer: scorer, model: "pricing@1", outputDirectory: f.output, workers: 2)
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let result = runner.score(f.input.appendingPathComponent(name), progress: BatchProgress())
        #expect(result.error == nil && result.rowsRejected == 1 && result.rowsScored == result.rowsRead - 1)
        let out = try String(contentsOf: f.output.appendingPathComponent(name), encoding: .utf8).split(separator: "\n")
        let records: [JSONValue]
        if format == "csv" {
            let table = try CSVTable(Array(input))
            records = table.rows.indices.map { table.json($0, fields: scorer.fieldNames) }
        } else {
            records = String(decoding: input, as: UTF8.self).split(separator: "\n").map { try! JSONValue.parse(String($0)) }
        }
        if format == "csv" {
            #expect(out[0] == "id,value,model_version")
            #expect(out.count == records.count + 1)
            for (i, line) in out.dropFirst().enumerated() {
                let cells = line.split(separator: ",")
                let want = try #require(try scorer.predict(json: records[i]).value)
                #expect(cells.count == 3 && Double(cells[1]) == want && cells[2] == "pricing@1", "\(line)")
            }
        } else {
            #expect(out.count == records.count)
            for (i, line) in out.enumerated() {
                let row = try JSONValue.parse(String(line))
                #expect(row["value"] == .number(try #require(try scorer.predict(json: records[i]).value)))
                #expect(row["model_version"] == .string("pricing@1") && row["label"] == nil)
            }
        }
    }

    @Test func aStreamWritesTheValue() throws {
        let f = try StreamFixture()
        defer { f.stop() }
        try registerPricing(f.batch.registry)
        let scorer = try Scorer(try pricingDocument())
        let records = try sampleRecords(5)
        try append(records.joined(separator: "\n") + "\n", to: f.source.appendingPathComponent("a.jsonl"))
        try f.start(reference: "pricing@production")
        try f.waitFor(5)
        let scored = try lines(in: f.sink)
        #expect(scored.count == 5)
        for (record, line) in zip(records, scored) {
            let input = try JSONValue.parse(record)
            #expect(line["id"] == input["id"])
            #expect(line["value"] == .number(try #require(try scorer.predict(json: input).value)), "\(line)")
            #expect(line["model_version"] == .string("pricing@1") && line["probabilities"] == nil)
        }
    }
}
