import Foundation
import HTTP
import JSON
import Synchronization
import Testing

/// The built `switchyard` executable: beside the test bundle in the build folder.
let switchyardBinary: URL = {
    if let path = ProcessInfo.processInfo.environment["SWITCHYARD_BIN"] { return URL(fileURLWithPath: path) }
    var folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = folder.appendingPathComponent("switchyard")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        folder = folder.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: ".build/debug/switchyard")
}()

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures")

struct Outcome {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs switchyard with `arguments` in `home`, feeding `input`; killed after 120 s.
func switchyard(_ arguments: [String], home: URL, input: String? = nil, in directory: URL? = nil) throws -> Outcome {
    let process = Process()
    process.executableURL = switchyardBinary
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["SWITCHYARD_HOME"] = home.path
    process.environment = environment
    let directory = directory ?? home.deletingLastPathComponent()
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    process.currentDirectoryURL = directory
    let out = Pipe(), err = Pipe(), inp = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = inp
    try process.run()
    let timer = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: timer)
    DispatchQueue.global().async {
        if let input { inp.fileHandleForWriting.write(Data(input.utf8)) }
        try? inp.fileHandleForWriting.close()
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    timer.cancel()
    return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

/// Trains the credit fixture into `home` as credit@1, promoted to production.
/// The version a serve process on loopback `port` scores a credit record with (its
/// `x-model-version`); nil when it does not answer.
func scoredVersion(port: Int) -> String? {
    try? HTTPClient(port: port).request("POST", "/score", headers: [("Content-Type", "application/json")],
                                        body: Array(#"{"data": [\#(creditRecord)]}"#.utf8)).headers["x-model-version"]
}

/// The first record of the JSON Lines credit sample.
let creditRecord: String = {
    guard let text = try? String(contentsOf: fixtures.appendingPathComponent("credit-sample.jsonl"), encoding: .utf8) else { return "{}" }
    return String(text.split(separator: "\n")[0])
}()

func trainCredit(_ home: URL) throws {
    let trained = try switchyard(["train", "--data", fixtures.appendingPathComponent("credit-sample.csv").path, "--label", "label",
                                  "--name", "credit", "--promote", "production"], home: home)
    guard trained.status == 0 else { throw CLITestError("train failed: \(trained.stderr)") }
}

func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite struct CLIUsageTests {
    let home = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-cli-usage/home")

    @Test func helpListsEveryCommandAndExitsZero() throws {
        let help = try switchyard(["--help"], home: home)
        #expect(help.status == 0)
        for command in ["train", "fixtures credit", "predict", "models list", "models promote", "models rollback", "models audit", "bench score"] {
            #expect(help.stdout.contains("  \(command) "), "\(command)")
        }
        let train = try switchyard(["train", "--help"], home: home)
        #expect(train.status == 0)
        #expect(train.stdout.contains("Usage: switchyard train --data FILE.csv --label COL [options]"))
        #expect(train.stdout.contains("--holdout SHARE"))
    }

    @Test(arguments: [
        ([], "Usage: switchyard COMMAND"),
        (["trian"], #"unknown command "trian" (did you mean "train"?)"#),
        (["train", "--data", "x.csv"], "switchyard train: missing --label COL (see 'switchyard train --help')"),
        (["train", "--data", "x.csv", "--label", "y", "--holdot", "0.3"], "unknown option --holdot (did you mean --holdout?)"),
        (["train", "--data", "x.csv", "--label", "y", "--holdout", "2"], "--holdout must be between 0 and 1, got 2.0"),
        (["fixtures", "credit", "--rows", "many", "--out", "x"], #"--rows expects a whole number, got "many""#),
        (["fixtures", "credit", "--rows", "5", "--out", "x", "--format", "xml"], "--format must be one of csv, jsonl"),
        (["models"], "switchyard models: needs a subcommand; one of: list, show, register, import, promote, rollback, route, baseline, audit"),
        (["models", "promote", "credit"], #"expected NAME@VERSION with a version number, got "credit""#),
        (["predict"], "missing NAME[@VERSION|@ALIAS]"),
        (["models", "show", "a", "b"], #"unexpected argument "b""#),
    ])
    func usageErrorsExit64WithOneLine(arguments: [String], message: String) throws {
        let outcome = try switchyard(arguments, home: home)
        #expect(outcome.status == 64)
        let text = arguments.isEmpty ? outcome.stdout : outcome.stderr
        #expect(text.contains(message), "\(text)")
        if !arguments.isEmpty {
            #expect(outcome.stderr.split(separator: "\n").count == 1, "\(outcome.stderr)")
        }
    }
}

@Suite struct CLIWorkflowTests {
    /// Regression from the command line (issue 20 item 1): train a ridge regression, predict and
    /// explain a value, import an XGBoost regression, and show both.
    @Test func aRegressionIsTrainedPredictedExplainedAndImported() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        let csv = folder.appendingPathComponent("credit.csv").path
        #expect(try switchyard(["fixtures", "credit", "--rows", "3000", "--seed", "7", "--out", csv], home: home).status == 0)
        let train = try switchyard(
            ["train", "--data", csv, "--label", "rate", "--task", "regression", "--ignore", "id", "--ignore", "label", "--name", "pricing",
             "--promote", "production"], home: home)
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stdout.contains("target: rate (a number)") && train.stdout.contains("fitted ridge regression (alpha 1.0)"), "\(train.stdout)")
        #expect(train.stdout.contains("held out: R² 0.5"), "\(train.stdout)")
        let record = #"{"amount":12042.41,"term":36,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let one = try switchyard(["predict", "pricing", "--json", record], home: home)
        #expect(one.status == 0 && one.stdout.hasPrefix(#"{"value":"#) && one.stdout.contains(#""model":"pricing@1""#), "\(one.stdout)\(one.stderr)")
        let explain = try switchyard(["explain", "pricing", "--json", record], home: home)
        #expect(explain.status == 0 && explain.stdout.hasPrefix("pricing@1: rate = ") && explain.stdout.contains("\nrate: base "), "\(explain.stdout)")
        let show = try switchyard(["models", "show", "pricing"], home: home)
        #expect(show.stdout.contains("linear_regression, link identity, predicts rate (a number)") && show.stdout.contains("ridge, alpha=1.0"), "\(show.stdout)")
        #expect(try switchyard(["train", "--data", csv, "--label", "region", "--task", "regression"], home: home).stderr
            .contains("the label \"region\" is not a number column"))
        #expect(try switchyard(["train", "--data", csv, "--label", "rate", "--task", "regresion"], home: home).stderr
            .contains("--task is classification or regression"))

        let imported = try switchyard(
            ["models", "import", fixtures.appendingPathComponent("xgboost-rate-squarederror.json").path, "--format", "xgboost-json",
             "--schema", fixtures.appendingPathComponent("xgboost-rate-squarederror-schema.json").path, "--name", "pricing"], home: home)
        #expect(imported.status == 0 && imported.stdout.contains("predicts rate (a number)") && imported.stdout.contains("registered pricing@2"), "\(imported.stdout)\(imported.stderr)")
        let two = try switchyard(["predict", "pricing@2", "--json", record], home: home)
        #expect(two.status == 0 && two.stdout.hasPrefix(#"{"value":"#), "\(two.stdout)")
        // ONNX (item 2): a [N, 11] input becomes fields input_0…; a record is then an array.
        let onnx = try switchyard(["models", "import", fixtures.appendingPathComponent("onnx-linear-regressor.onnx").path, "--format", "onnx",
                                   "--name", "pricing"], home: home)
        #expect(onnx.status == 0 && onnx.stdout.contains("11 input fields, predicts prediction (a number)") && onnx.stdout.contains("registered pricing@3"),
                "\(onnx.stdout)\(onnx.stderr)")
        let three = try switchyard(["predict", "pricing@3", "--json", "[12042.41,36,14703.84,55,19.3,1.0,2,0,8,0.531,724]"], home: home)
        #expect(three.status == 0 && three.stdout.hasPrefix(#"{"value":1"#), "\(three.stdout)\(three.stderr)")
        // bench train (item 3) runs without Python, saying what it left out.
        let bench = try switchyard(["bench", "train", "--credit-rows", "3000", "--rounds", "1", "--python", "/nonexistent/python"], home: home)
        #expect(bench.status == 0 && bench.stdout.contains("credit 3k rows") && bench.stdout.contains("scikit-learn comparison left out"),
                "\(bench.stdout)\(bench.stderr)")
        let refused = try switchyard(["models", "import", fixtures.appendingPathComponent("credit-sample.csv").path, "--format", "onnx"], home: home)
        #expect(refused.status == 65 && refused.stderr.contains("cannot import: not an ONNX model"), "\(refused.stderr)")
    }

    @Test func fixturesTrainPromotePredictAuditRollback() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")

        // An empty registry says what to do.
        let empty = try switchyard(["predict", "credit", "--json", "{}"], home: home)
        #expect(empty.status == 1)
        #expect(empty.stderr.contains("the registry is empty; train or register a model first"))

        let csv = folder.appendingPathComponent("credit.csv").path
        #expect(try switchyard(["fixtures", "credit", "--rows", "3000", "--seed", "7", "--out", csv], home: home).status == 0)
        let again = folder.appendingPathComponent("again.csv").path
        #expect(try switchyard(["fixtures", "credit", "--rows", "3000", "--seed", "7", "--out", again], home: home).status == 0)
        #expect(FileManager.default.contents(atPath: csv) == FileManager.default.contents(atPath: again))

        let train = try switchyard(["train", "--data", csv, "--label", "label", "--name", "credit", "--promote", "production"], home: home)
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stdout.contains("registered credit@1"))
        #expect(train.stdout.contains("held out: AUC 0.7") || train.stdout.contains("held out: AUC 0.8"))
        #expect(train.stdout.contains("credit@production: none → v1"))

        let record = #"{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let one = try switchyard(["predict", "credit@production", "--json", record], home: home)
        #expect(one.status == 0, "\(one.stderr)")
        #expect(one.stdout.hasPrefix(#"{"label":""#) && one.stdout.contains(#""model":"credit@1""#))

        let bad = try switchyard(["predict", "credit", "--json", #"{"amount": "abc"}"#], home: home)
        #expect(bad.status == 65)
        #expect(bad.stderr.contains(#"field "amount": expected a number, got "abc""#))

        // JSON Lines: one line out per line in, errors in place, exit 65.
        let lines = try switchyard(["predict", "credit"], home: home, input: record + "\n\nnot json\n" + record + "\n")
        #expect(lines.status == 65)
        let out = lines.stdout.split(separator: "\n")
        #expect(out.count == 3)
        #expect(out[0].contains(#""row":1"#) && out[0].contains("probabilities"))
        #expect(out[1].contains(#""row":2,"error":"row 2: invalid JSON at byte 0"#))
        #expect(out[2].contains(#""row":3"#) && out[2].contains("probabilities"))

        // A second version from a file, promoted, then rolled back.
        let register = try switchyard(["models", "register", fixtures.appendingPathComponent("sklearn-credit-model.json").path, "--name", "credit"], home: home)
        #expect(register.status == 0, "\(register.stderr)")
        #expect(register.stdout.contains("registered credit@2"))
        #expect(try switchyard(["models", "promote", "credit@2"], home: home).stdout.contains("credit@production: v1 → v2"))
        #expect(try switchyard(["predict", "credit", "--json", record], home: home).stdout.contains(#""model":"credit@2""#))
        #expect(try switchyard(["models", "rollback", "credit"], home: home).stdout.contains("credit@production: v2 → v1"))

        let list = try switchyard(["models", "list", "--json"], home: home)
        #expect(list.stdout.split(separator: "\n").count == 2)
        #expect(list.stdout.contains(#""aliases":["production"]"#))
        let audit = try switchyard(["models", "audit", "credit", "--json"], home: home)
        let actions = audit.stdout.split(separator: "\n").map { line in
            ["register", "baseline", "promote", "rollback"].first { line.contains(#""action":"\#($0)""#) } ?? "?"
        }
        // train stores the training data's drift baseline with the version, before promoting it.
        #expect(actions == ["register", "baseline", "promote", "register", "promote", "rollback"])
        // An imported or registered version gets one from data like its training data.
        let baseline = try switchyard(["models", "baseline", "credit@2", "--data", fixtures.appendingPathComponent("credit-sample.csv").path], home: home)
        #expect(baseline.status == 0 && baseline.stdout.contains("drift baseline of credit@2: 200 rows of credit-sample.csv, 15 fields"), "\(baseline.stdout) \(baseline.stderr)")
        let noInputs = try switchyard(["models", "baseline", "credit@2", "--data", fixtures.appendingPathComponent("sklearn-credit-model.json").path], home: home)
        #expect(noInputs.status == 65 && noInputs.stderr.contains("the header names none of the model's inputs"), "\(noInputs.stderr)")
        let show = try switchyard(["models", "show", "credit@1"], home: home)
        #expect(show.status == 0)
        #expect(show.stdout.contains("aliases: production→v1"))
        #expect(show.stdout.contains("region         category"))

        // A broken model file is refused with the reason.
        let broken = folder.appendingPathComponent("broken.json")
        try Data(#"{"format": "switchyard.model", "format_version": 9}"#.utf8).write(to: broken)
        let refused = try switchyard(["models", "register", broken.path], home: home)
        #expect(refused.status == 65)
        #expect(refused.stderr.contains("invalid model file"))
    }

    @Test func concurrentProcessesRegisterAndPromoteWithoutLoss() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        _ = try switchyard(["models", "list"], home: home)  // creates the registry
        let base = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("sklearn-credit-model.json"))) as! [String: Any]
        let processes = 4, each = 5
        var paths: [[String]] = []
        for p in 0..<processes {
            var mine: [String] = []
            for i in 0..<each {
                var document = base
                var estimator = document["estimator"] as! [String: Any]
                estimator["intercepts"] = [Double(p * 100 + i) / 1000]
                document["estimator"] = estimator
                let url = folder.appendingPathComponent("m\(p)-\(i).json")
                try JSONSerialization.data(withJSONObject: document).write(to: url)
                mine.append(url.path)
            }
            paths.append(mine)
        }
        // Each worker is a shell loop of register + promote commands, all four at once.
        let results = Mutex([Int32](repeating: -2, count: processes))
        let files = paths
        DispatchQueue.concurrentPerform(iterations: processes) { p in
            var status: Int32 = 0
            for file in files[p] {
                guard let r = try? switchyard(["models", "register", file, "--name", "shared", "--promote", "production"], home: home) else {
                    status = -1
                    break
                }
                if r.status != 0 { status = r.status }
            }
            results.withLock { $0[p] = status }
        }
        #expect(results.withLock { $0 } == Array(repeating: 0, count: processes))
        let list = try switchyard(["models", "list", "--json"], home: home)
        let versions = list.stdout.split(separator: "\n")
        #expect(versions.count == processes * each)
        for v in 1...(processes * each) { #expect(versions.contains { $0.contains(#""version":\#(v),"#) }) }
        let audit = try switchyard(["models", "audit", "shared", "--json", "--limit", "1000"], home: home)
        #expect(audit.stdout.split(separator: "\n").filter { $0.contains(#""action":"register""#) }.count == processes * each)
        #expect(audit.stdout.split(separator: "\n").filter { $0.contains(#""action":"promote""#) }.count == processes * each)
    }
}

/// `models import`, then the imported model through the batch component:
/// a CSV with empty cells and unseen categories scores as LightGBM did.
@Suite struct ImportCommandTests {
    @Test func importedLightGBMModelScoresABatchLikeLightGBM() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let home = folder.appendingPathComponent("home")
        let imported = try switchyard(
            ["models", "import", fixtures.appendingPathComponent("lightgbm-credit.txt").path, "--format", "lightgbm-text",
             "--schema", fixtures.appendingPathComponent("lightgbm-credit-schema.json").path, "--name", "gbm", "--promote", "production"],
            home: home)
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("registered gbm@1"))
        #expect(imported.stdout.contains("40 trees"))

        // 300 expected rows as CSV: a missing value is an empty cell.
        let lines = try String(contentsOf: fixtures.appendingPathComponent("lightgbm-credit-expected.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(300)
        let fields = ["amount", "term", "rate", "income", "age", "tenure", "utilization", "inquiries", "delinquencies",
                      "open_accounts", "debt_ratio", "credit_score", "region", "product", "channel"]
        var csv = "id," + fields.joined(separator: ",") + "\n"
        var expected: [Double] = []
        for (i, line) in lines.enumerated() {
            let value = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let record = value["record"] as! [String: Any]
            csv += "\(i + 1)," + fields.map { name -> String in
                switch record[name] {
                case let x as NSNumber: "\(x.doubleValue)"
                case let s as String: s
                default: ""
                }
            }.joined(separator: ",") + "\n"
            expected.append((value["probabilities"] as! [Double])[1])
        }
        let input = folder.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try Data(csv.utf8).write(to: input.appendingPathComponent("sample.csv"))
        let output = folder.appendingPathComponent("out")
        let run = try switchyard(
            ["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "gbm@production", "--id", "id", "--settle", "0"], home: home)
        #expect(run.status == 0, "\(run.stderr)")
        let rows = try String(contentsOf: output.appendingPathComponent("sample.csv"), encoding: .utf8).split(separator: "\n")
        #expect(rows.first == "id,probability_0,probability_1,label,model_version")
        #expect(rows.count == 301)
        for (i, row) in rows.dropFirst().enumerated() {
            let cells = row.split(separator: ",", omittingEmptySubsequences: false)
            let p1 = Double(cells[2]) ?? .nan
            #expect(abs(p1 - expected[i]) <= 1e-6, "row \(i + 1): \(p1) vs LightGBM \(expected[i])")
        }
    }
}
