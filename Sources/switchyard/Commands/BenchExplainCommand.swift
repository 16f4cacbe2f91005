import CSystem
import ControlProtocol
import Foundation
import JSON
import Scoring

let benchExplainCommand = Command(
    words: ["bench", "explain"],
    summary: "Measure explanations: a logistic regression's terms and TreeSHAP, against XGBoost's pred_contribs",
    options: [
        Option(name: "records", value: "N", help: "explanations timed one by one, per model", defaultValue: "100000"),
        Option(name: "rows", value: "N", help: "rows explained by both Switchyard and XGBoost", defaultValue: "2000"),
    ],
    details: """
        Times single-record explanations (each call on its own, typed record in schema order) for
        a logistic regression trained in memory and for the synthetic 100-tree, depth-6 ensemble
        of 'bench score' (covers from fixture rows). Then, when python3 with xgboost and pandas is
        present, trains a 100-tree, depth-6 XGBoost model on credit fixture rows, imports it, and
        explains the same rows with Switchyard (one thread, one record at a time) and with
        XGBoost's own pred_contribs (nthread=1, all rows in one call); reports both per row,
        medians of 5 runs.
        """,
    run: { args in
        let records = try args.integer("records", range: 1000...10_000_000) ?? 100_000
        let rows = try args.integer("rows", range: 100...1_000_000) ?? 2000
        var generator = CreditFixture(seed: 99)
        var objects: [JSONValue] = []
        for _ in 0..<4096 {
            var line: [UInt8] = []
            CreditFixture.appendJSON(generator.next(), to: &line)
            if let value = try? JSONValue.parse(line.dropLast()) { objects.append(value) }
        }
        func typed(_ scorer: Scorer) -> [[FieldValue]] {
            objects.map(scorer.fieldValues(json:))
        }
        func timeEach(_ name: String, _ scorer: Scorer) throws {
            let inputs = typed(scorer)
            var samples = [UInt64](repeating: 0, count: records)
            var sink = 0.0
            for i in 0..<min(records, 10_000) { sink += try scorer.explain(inputs[i % inputs.count]).base[0] }
            for i in 0..<records {
                let start = csystem_monotonic_ns()
                sink += try scorer.explain(inputs[i % inputs.count]).contributions[0][0]
                samples[i] = csystem_monotonic_ns() - start
            }
            samples.sort()
            print("  " + name.padding(toLength: 44, withPad: " ", startingAt: 0)
                + String(format: "p50 %.2f µs   p99 %.2f µs", Double(samples[records / 2]) / 1000, Double(samples[records * 99 / 100]) / 1000)
                + (sink.isNaN ? " (NaN)" : ""))
        }
        print("single-record explanations (\(records) calls each, one thread):")
        let logistic: Scorer
        do { logistic = try Scorer(try trainBenchDocument()) } catch { throw CommandError("could not train the benchmark model: \(error)") }
        try timeEach("logistic regression, 15 fields", logistic)
        let trees: Scorer
        do { trees = try Scorer(try benchTreeDocument(trees: 100, depth: 6)) } catch { throw CommandError("could not build the benchmark trees: \(error)") }
        try timeEach("TreeSHAP, 100 trees of depth 6 (synthetic)", trees)

        try compareWithXGBoost(rows: rows)
        return Exit.ok
    })

/// The same rows explained by an XGBoost model (trained by Python here) through XGBoost and through Switchyard.
private func compareWithXGBoost(rows: Int) throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-bench-explain-\(getpid())")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    var generator = CreditFixture(seed: 21)
    var csv = Array(CreditFixture.csvHeader.utf8)
    for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
    let data = folder.appendingPathComponent("credit.csv")
    try Data(csv).write(to: data)
    let script = """
        import json, sys, time
        import pandas as pd, xgboost as xgb
        data, model, out, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        df = pd.read_csv(data, dtype={c: str for c in ["region", "product", "channel"]})
        for c in ["region", "product", "channel"]:
            df[c] = df[c].astype("category")
        x, y = df.drop(columns=["id", "label"]), df["label"]
        booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "tree_method": "hist",
                             "max_cat_to_onehot": 1, "nthread": 1, "seed": 1},
                            xgb.DMatrix(x, label=y, enable_categorical=True), num_boost_round=100)
        booster.save_model(model)
        test = x.iloc[-rows:]
        matrix = xgb.DMatrix(test, enable_categorical=True, nthread=1)
        booster.set_param({"nthread": 1})
        times = []
        for _ in range(5):
            start = time.perf_counter()
            booster.predict(matrix, pred_contribs=True)
            times.append(time.perf_counter() - start)
        test.astype(object).where(test.notna(), None).to_json(out, orient="records", lines=True)
        print(json.dumps({"seconds": sorted(times), "xgboost": xgb.__version__}))
        """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    let model = folder.appendingPathComponent("model.json"), out = folder.appendingPathComponent("rows.jsonl")
    process.arguments = ["python3", "-c", script, data.path, model.path, out.path, String(rows)]
    let stdout = Pipe(), stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    print("\nagainst XGBoost (a 100-tree, depth-6 binary:logistic model with native categorical splits, trained here on 20,000 fixture rows):")
    guard (try? process.run()) != nil else {
        print("  skipped: python3 is not installed")
        return
    }
    let printed = stdout.fileHandleForReading.readDataToEndOfFile()
    let problem = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0, case .array(let times)? = (try? JSONValue.parse([UInt8](printed)))?["seconds"] else {
        print("  skipped: python3 with xgboost and pandas is needed (pip install xgboost pandas)" + (problem.contains("ModuleNotFoundError") ? "" : ": \(problem.suffix(300))"))
        return
    }
    let theirs = times.compactMap { if case .number(let t) = $0 { t / Double(rows) * 1e6 } else { nil } }
    let document = try ModelImport.convert(
        try Data(contentsOf: model), format: .xgboostJSON, file: "model.json", schema: nil, name: "bench-xgboost", created: isoTimestamp(Date()))
    let scorer = try Scorer(document)
    let records = try String(contentsOf: out, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(String($0)) }
    var ours: [Double] = []
    var sink = 0.0
    for _ in 0..<5 {
        let start = csystem_monotonic_ns()
        for record in records { sink += try scorer.explain(json: record).contributions[0][0] }
        ours.append(Double(csystem_monotonic_ns() - start) / 1000 / Double(records.count))
    }
    ours.sort()
    print(String(format: "  Switchyard TreeSHAP, one record at a time:  %.2f µs per row (%.2f–%.2f over 5 runs of %d rows)", ours[2], ours[0], ours[4], records.count))
    print(String(format: "  XGBoost %@ pred_contribs, nthread=1:     %.2f µs per row (%.2f–%.2f)", "\((try? JSONValue.parse([UInt8](printed)))?["xgboost"]?.stringValue ?? "")", theirs[2], theirs[0], theirs[4]))
    print(String(format: "  ratio (Switchyard / XGBoost): %.2f×%@", ours[2] / theirs[2], sink.isNaN ? " (NaN)" : ""))
}
