import ControlProtocol
import Foundation
import JSON
import Synchronization
import Testing

@testable import Components
import HTTP
import Registry
import Scoring
import Telemetry

/// Credit records from the generator, as JSON objects in the model's field names; `incomeScale`
/// shifts the income distribution.
func creditRecords(seed: UInt64, count: Int, incomeScale: Double = 1) -> [JSONValue] {
    var generator = CreditFixture(seed: seed)
    return (0..<count).map { _ in
        let row = generator.next()
        var o = JSONObject()
        o.append("amount", .number(row.amount))
        o.append("term", .number(Double(row.term)))
        o.append("rate", .number(row.rate))
        o.append("income", .number((row.income * incomeScale * 100).rounded() / 100))
        o.append("age", .number(Double(row.age)))
        o.append("tenure", .number(row.tenure))
        o.append("utilization", .number(row.utilization))
        o.append("inquiries", .number(Double(row.inquiries)))
        o.append("delinquencies", .number(Double(row.delinquencies)))
        o.append("open_accounts", .number(Double(row.openAccounts)))
        o.append("debt_ratio", .number(row.debtRatio))
        o.append("credit_score", .number(Double(row.creditScore)))
        o.append("region", .string(CreditFixture.regions[row.region]))
        o.append("product", .string(CreditFixture.products[row.product]))
        o.append("channel", .string(CreditFixture.channels[row.channel]))
        return .object(o)
    }
}

@Suite(.serialized) struct DriftTests {
    /// A batch run counts drift from the columns it parsed for scoring: the same counts, field by
    /// field, as binning each record's cells by the baseline's own rules — with empty cells, text in
    /// a number field, a category outside the model's values, and a duplicated column.
    @Test func batchDriftFromColumnsEqualsBinningEachRecord() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let scorer = try f.scorer(1)
        let baseline = DriftBaseline.make(scorer: scorer, rows: creditRecords(seed: 1, count: 2000).map { scorer.fieldValues(json: $0) })
        let names = scorer.fieldNames
        var csv = (names + ["amount"]).joined(separator: ",") + "\n"
        var reference: [[FieldValue]] = []
        for (i, record) in creditRecords(seed: 8, count: 700, incomeScale: 2).enumerated() {
            var cells: [String] = names.map { name in
                switch record[name] { case .number(let x)?: JSONWriter.numberText(x); case .string(let t)?: t; default: "" }
            }
            if i % 7 == 0 { cells[names.firstIndex(of: "income")!] = "" }
            if i % 11 == 0 { cells[names.firstIndex(of: "age")!] = "n/a" }
            if i % 13 == 0 { cells[names.firstIndex(of: "region")!] = "atlantis" }
            if i % 17 == 0 { cells[names.firstIndex(of: "channel")!] = "" }
            csv += (cells + ["999"]).joined(separator: ",") + "\n"
            reference.append(zip(names, cells).map { name, cell in
                guard !cell.isEmpty else { return .missing }
                if baseline.fields[names.firstIndex(of: name)!].kind == .number {
                    return Array(cell.utf8).withUnsafeBytes { DecimalParser.parse($0) }.map(FieldValue.number) ?? .missing
                }
                return .text(cell)
            })
        }
        try f.write("d.csv", Array(csv.utf8))
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let version = try f.registry.resolve("credit@1")
        var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: f.output, workers: 2)
        runner.chunkBytes = 4096
        let columns = DriftMonitor(baseline: baseline, version: version, loops: runner.driftSlots, window: 0)
        runner.drift = columns
        let result = runner.score(f.input.appendingPathComponent("d.csv"), progress: BatchProgress())
        #expect(result.error == nil && result.rowsRead == 700 && result.rowsRejected > 0)
        let records = DriftMonitor(baseline: baseline, version: version, loops: 1, window: 0)
        for values in reference { records.observe(loop: 0, values, probability: nil) }
        let a = columns.report(), b = records.report()
        #expect(a.fields.count == names.count && a.fields.map(\.name) == b.fields.map(\.name))
        for (x, y) in zip(a.fields, b.fields) { #expect(x.psi == y.psi, "\(x.name): \(x.psi ?? -1) against \(y.psi ?? -1)") }
        #expect(a.fields.first { $0.name == "income" }?.psi ?? 0 >= DriftMonitor.alert)
    }

    /// A baseline from 5,000 generated rows; live rows from another seed stay under the warning
    /// level on every field; the same rows with income tripled, scored through serve's protocols,
    /// flag income (PSI ≥ 0.25) and no other field — in /v1/drift, status and /metrics.
    @Test func aShiftedIncomeFlagsIncomeAndNothingElse() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        let scorer = try Scorer(f.documents[1]!)
        let baseline = DriftBaseline.make(scorer: scorer, rows: creditRecords(seed: 1, count: 5000).map { scorer.fieldValues(json: $0) })
        #expect(baseline.rows == 5000 && baseline.fields.count == 15)
        #expect(try DriftBaseline(json: try JSONValue.parse(baseline.json.jsonText)) == baseline, "its JSON reads back")
        // A field reads only what its kind uses (the fuzz target found a category keeping stray edges,
        // which its JSON does not write back).
        let mixed = try DriftBaseline(json: try JSONValue.parse(
            #"{"fields": [{"name": "region", "kind": "category", "edges": [1, 2], "values": ["east"], "expected": [0.5, 0.5, 0]}],"#
                + #" "prediction": {"name": "prediction", "kind": "number", "edges": [0.5], "values": ["x"], "expected": [0.5, 0.5, 0]}}"#))
        #expect(mixed.fields[0].edges.isEmpty && mixed.prediction.values.isEmpty)
        #expect(try DriftBaseline(json: try JSONValue.parse(mixed.json.jsonText)) == mixed)

        // The same population, another sample: nothing drifts.
        let control = DriftMonitor(baseline: baseline, version: f.serve.model.current!.version, loops: 1)
        for record in creditRecords(seed: 2, count: 2000) {
            control.observe(loop: 0, scorer.fieldValues(json: record), probability: try scorer.predict(json: record).probabilities.last)
        }
        let calm = control.report()
        #expect(calm.rows == 2000 && calm.fields.allSatisfy { ($0.psi ?? 1) < DriftMonitor.warn }, "\(calm.fields)")

        // Without a baseline serve says how to make one.
        f.serve.tick()
        #expect(f.serve.driftStatus().first?.problem?.contains("switchyard models baseline credit@1 --data FILE.csv") == true)
        try f.registry.setBaseline(model: "credit", version: 1, baseline: baseline, who: "test")
        #expect(try f.registry.audit(model: "credit").last?.action == "baseline")
        // Looked for again within 10 s of the last look; the test moves the clock back instead of waiting.
        f.serve.model.current!.main.baseline.again()
        f.serve.tick()
        #expect(f.serve.model.current?.main.drift.current != nil)

        let shifted = creditRecords(seed: 3, count: 2000, incomeScale: 3)
        let client = f.client()
        for (i, start) in stride(from: 0, to: shifted.count, by: 100).enumerated() {
            let batch = JSONValue.array(Array(shifted[start..<(start + 100)])).jsonText
            let (path, body) = i % 2 == 0 ? ("/score", #"{"data": \#(batch)}"#) : ("/invocations", #"{"dataframe_records": \#(batch)}"#)
            #expect(try client.request("POST", path, headers: [("Content-Type", "application/json")], body: Array(body.utf8)).status == 200)
        }
        // One OIP request too: its rows count the same way.
        let oip = #"{"inputs": [{"name": "input", "shape": [1, 15], "datatype": "BYTES", "data": \#(creditArray)}]}"#
        #expect(try client.request("POST", "/v2/models/credit/infer", headers: [("Content-Type", "application/json")], body: Array(oip.utf8)).status == 200)

        let answer = try JSONValue.parse(f.get("/v1/drift", key: f.readKey).body)
        let drift = try #require(answer["versions"]?[0].flatMap(DriftStatus.init(json:)))
        #expect(drift.rows == 2001)
        let psi = Dictionary(uniqueKeysWithValues: drift.fields.map { ($0.name, $0.psi ?? -1) })
        #expect(psi["income"]! >= DriftMonitor.alert, "\(psi)")
        #expect(psi.filter { $0.key != "income" }.allSatisfy { $0.value >= 0 && $0.value < DriftMonitor.warn }, "\(psi)")
        #expect(drift.worst?.name == "income")
        let status = try #require(ComponentStatus(json: try JSONValue.parse(f.get("/v1/status", key: f.readKey).body)))
        #expect(status.drift.first?.worst?.name == "income")
        let metrics = String(decoding: try f.get("/metrics", key: f.readKey).body, as: UTF8.self)
        #expect(metrics.contains(#"switchyard_drift_psi{model="credit",model_version="1",field="income"}"#))
    }

    /// Through the registry service: a baseline stored with an operate key is read back by a
    /// component's client (and kept in its cache for when the registry is down).
    @Test func aBaselineTravelsThroughTheRegistryService() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        let scorer = try Scorer(try f.registry.document(try f.registry.resolve("credit@1")))
        let baseline = DriftBaseline.make(scorer: scorer, rows: creditRecords(seed: 4, count: 500).map { scorer.fieldValues(json: $0) })
        let client = try f.client(key: f.operateKey, home: Home(f.home.url.appendingPathComponent("component")))
        #expect(try client.baseline(model: "credit", version: 1) == nil)
        try client.setBaseline(model: "credit", version: 1, baseline: baseline)
        #expect(try client.baseline(model: "credit", version: 1) == baseline)
        f.stopService()
        #expect(try client.baseline(model: "credit", version: 1) == baseline, "from the cache while the registry is down")
        #expect(throws: RegistryError.self) { _ = try client.setBaseline(model: "credit", version: 2, baseline: baseline) }
        // A baseline of other inputs is refused, naming both lists.
        var other = baseline
        other.fields.swapAt(0, 1)
        do {
            try f.registry.setBaseline(model: "credit", version: 1, baseline: other, who: "test")
            Issue.record("a baseline of other fields was stored")
        } catch {
            #expect(error.status == 400 && error.message.hasPrefix("the baseline's fields (term, amount,"), "\(error)")
        }
    }
}
