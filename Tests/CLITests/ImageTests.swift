import Foundation
import Glibc
import HTTP
import JSON
import Scoring
import Testing

/// Issue 16 item 5: `switchyard image build` writes an OCI image archive without a container
/// engine; skopeo accepts it, umoci unpacks it, and its entrypoint, run in its own namespaces in
/// the unpacked root as its non-root user, serves what the embedded scorer computes.
@Suite struct ImageTests {
    static var unavailable: String? {
        if getuid() != 0 { return "chroot, unshare and umoci's unpack need root (CI runs as root)" }
        for tool in ["/usr/bin/skopeo", "/usr/bin/umoci", "/usr/bin/unshare", "/usr/sbin/chroot"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing (apt-get install skopeo umoci); .ci/run installs them"
        }
        return nil
    }

    @Test(.enabled(if: ImageTests.unavailable == nil, Comment(rawValue: ImageTests.unavailable ?? "")))
    func anImageBuiltWithoutAnEngineServesTheEmbeddedScorersAnswer() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        // The debug build is shipped here (the release one is what users ship; the libraries are the same).
        func build(_ name: String) throws -> Outcome {
            try switchyard(["image", "build", "--model", "credit@production", "--out", root.appendingPathComponent(name).path,
                            "--binary", switchyardBinary.path, "--tag", "credit:test"], home: home)
        }
        let first = try build("a.tar")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try build("b.tar").status == 0)
        let archive = root.appendingPathComponent("a.tar")
        #expect(FileManager.default.contentsEqual(atPath: archive.path, andPath: root.appendingPathComponent("b.tar").path), "the same inputs give the same bytes")
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: root.path)).contains { $0.hasPrefix(".a.tar") }, "no temporary file is left")

        let inspected = try run("/usr/bin/skopeo", ["inspect", "oci-archive:\(archive.path)"])
        #expect(inspected.status == 0, "\(inspected.stderr)")
        let labels = try JSONValue.parse(Array(inspected.stdout.utf8))["Labels"]
        guard case .string(let sha256)? = labels?["io.switchyard.model.sha256"] else {
            Issue.record("no sha256 label: \(inspected.stdout)")
            return
        }
        #expect(labels?["io.switchyard.model.name"] == .string("credit") && labels?["io.switchyard.model.version"] == .string("1"))
        let artifact = home.appendingPathComponent("artifacts/\(sha256).json")
        #expect(first.stdout.contains("manifest sha256:") && first.stdout.contains(sha256))

        // Unpack with umoci, then run the image's own entrypoint in the root it unpacked.
        let layout = root.appendingPathComponent("layout"), bundle = root.appendingPathComponent("bundle")
        try FileManager.default.createDirectory(at: layout, withIntermediateDirectories: true)
        #expect(try run("/usr/bin/tar", ["-xf", archive.path, "-C", layout.path]).status == 0)
        let unpacked = try run("/usr/bin/umoci", ["unpack", "--image", "\(layout.path):credit:test", bundle.path])
        #expect(unpacked.status == 0, "\(unpacked.stderr)")
        let rootfs = bundle.appendingPathComponent("rootfs")
        let process = try JSONValue.parse(Array(try Data(contentsOf: bundle.appendingPathComponent("config.json"))))["process"]
        guard case .array(let argumentValues)? = process?["args"], case .array(let environmentValues)? = process?["env"],
              case .number(let uid)? = process?["user"]?["uid"] else {
            Issue.record("umoci's config.json has no process")
            return
        }
        let arguments = argumentValues.compactMap { if case .string(let s) = $0 { s } else { nil } }
        let environment = environmentValues.compactMap { if case .string(let s) = $0 { s } else { nil } }
        #expect(uid == 10001, "the image runs as its own user")
        #expect(Array(arguments.suffix(4)) == ["--host", "0.0.0.0", "--port", "8080"])
        let port = try freePort()
        let entrypoint = Array(arguments.dropLast(4)) + ["--host", "127.0.0.1", "--port", "\(port)", "--open"]
        let log = root.appendingPathComponent("serve.log")
        let unshare = try spawnWithSignals(
            "/usr/bin/unshare", ["--fork", "--pid", "--mount-proc=\(rootfs.path)/proc", "/usr/sbin/chroot", "--userspec=10001:10001", rootfs.path] + entrypoint,
            environment: environment, output: log)
        var running = true
        defer { if running { kill(unshare, SIGKILL); _ = waitFor(unshare) } }
        let ready = waitUntil { (try? HTTPClient(port: port, timeout: 5).request("GET", "/readyz").status) == 200 }
        #expect(ready, "\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")

        let record = #"{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let response = try HTTPClient(port: port, timeout: 10).request(
            "POST", "/score", headers: [("Content-Type", "application/json")], body: Array(#"{"data": [\#(record)]}"#.utf8))
        #expect(response.status == 200 && response.headers["x-model-version"] == "1", "\(response.text)")
        let expected = try Scorer(try ModelDocument.decode(try Data(contentsOf: artifact))).predict(json: try JSONValue.parse(Array(record.utf8)))
        guard case .array(let answers) = try JSONValue.parse(response.body), let answer = answers.first else {
            Issue.record("not an array of predictions: \(response.text)")
            return
        }
        #expect(answer["probabilities"]?["1"] == .number(expected.probabilities[1]))
        #expect(answer["label"] == .string(expected.label))

        // SIGTERM to the serve (pid 1 of its namespace) drains it; unshare ends with it.
        let children = (try? String(contentsOfFile: "/proc/\(unshare)/task/\(unshare)/children", encoding: .utf8)) ?? ""
        guard let serve = Int32(children.split(separator: " ").first ?? "") else {
            Issue.record("no child of unshare")
            return
        }
        kill(serve, SIGTERM)
        #expect(waitFor(unshare) == 0)
        running = false
        #expect(try String(contentsOf: log, encoding: .utf8).contains("stopped: every request finished"))
    }
}

@Suite struct ModelFileTests {
    /// What an image runs: a serve on a model file with keys from a file, no registry. The keys
    /// file is reread, so a replaced Secret takes effect; a wrong line stops the start and is named.
    @Test func serveAModelFileWithKeysFromAFile() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let artifacts = home.appendingPathComponent("artifacts")
        let model = artifacts.appendingPathComponent(try FileManager.default.contentsOfDirectory(atPath: artifacts.path).first { $0.hasSuffix(".json") } ?? "")
        let keys = root.appendingPathComponent("keys")
        try "# callers\npredict 0123456789abcdef-first app\n".write(to: keys, atomically: true, encoding: .utf8)
        let elsewhere = root.appendingPathComponent("empty-home")  // no registry, no models
        let serve = try RunningSwitchyard(["serve", "--model-file", model.path, "--model", "credit@7", "--keys-file", keys.path, "--port", "0"], home: elsewhere)
        defer { serve.kill(SIGTERM) }
        let port = try serve.servePort()
        func score(_ key: String?) -> HTTPClient.Response? {
            try? HTTPClient(port: port, timeout: 10).request(
                "POST", "/score", headers: [("Content-Type", "application/json")] + (key.map { [("Authorization", "Bearer \($0)")] } ?? []),
                body: Array(#"{"data": [[12042.41,36,18.19,14703.84,55,19.3,1.0,2,0,8,0.531,724,"east","student","branch"]]}"#.utf8))
        }
        #expect(score(nil)?.status == 401)
        let answered = score("0123456789abcdef-first")
        #expect(answered?.status == 200 && answered?.headers["x-model-version"] == "7", "\(answered?.text ?? "")")
        // The Secret changes: the old key stops working, the new one works.
        try "predict sha256:\(SHA256.hex(Array("0123456789abcdef-second".utf8)))\n".write(to: keys, atomically: true, encoding: .utf8)
        #expect(waitUntil { score("0123456789abcdef-first")?.status == 401 })
        #expect(score("0123456789abcdef-second")?.status == 200)

        try "admin short\n".write(to: keys, atomically: true, encoding: .utf8)
        let refused = try switchyard(["serve", "--model-file", model.path, "--keys-file", keys.path, "--port", "0"], home: elsewhere)
        #expect(refused.status != 0 && refused.stderr.contains("line 1: a key must be at least 16 characters"), "\(refused.stderr)")
        let notAModel = try switchyard(["serve", "--model-file", keys.path, "--port", "0", "--open"], home: elsewhere)
        #expect(notAModel.status != 0 && notAModel.stderr.contains("is not a switchyard model document"), "\(notAModel.stderr)")
    }

    /// `deploy k8s` wires the image to the probes and the drain, for a baked model and keys from a Secret.
    @Test func deployK8sPrintsADeploymentWiredToTheProbesAndTheDrain() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let printed = try switchyard(["deploy", "k8s", "--model", "credit@production", "--replicas", "3", "--drain-delay", "4"], home: home)
        #expect(printed.status == 0, "\(printed.stderr)")
        let yaml = printed.stdout
        for line in ["kind: Deployment", "kind: Service", "kind: PodDisruptionBudget", "  replicas: 3", "image: switchyard-credit:1",
                     "httpGet: {path: /readyz, port: http}", "httpGet: {path: /healthz, port: http}", "terminationGracePeriodSeconds: 19",
                     #""--drain-delay", "4", "--drain-timeout", "10", "--keys-file", "/etc/switchyard/keys""#, "secret: {secretName: switchyard-credit-keys}",
                     "rollingUpdate: {maxUnavailable: 0, maxSurge: 1}", "  maxUnavailable: 1", "runAsUser: 10001"] {
            #expect(yaml.contains(line), "\(line)")
        }
    }
}

/// Runs a tool to its end; its status and output.
func run(_ path: String, _ arguments: [String]) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

@Suite struct PredictionsCommandTests {
    @Test func predictionsShowFindsALoggedRecordByRequestIDOrKey() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        let folder = home.appendingPathComponent("predictions")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let lines = [#"{"request_id":"a-1","row":1,"key":"C-1","record":{"amount":1},"label":"1"}"#,
                     #"{"request_id":"a-2","row":1,"key":"C-2","record":{"amount":2},"label":"0"}"#]
        try (lines.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("serve-1-1-000001.jsonl"), atomically: true, encoding: .utf8)
        let byID = try switchyard(["predictions", "show", "a-2"], home: home)
        #expect(byID.status == 0 && byID.stdout.contains(#""key":"C-2""#) && !byID.stdout.contains("a-1"), "\(byID.stdout) \(byID.stderr)")
        let byKey = try switchyard(["predictions", "show", "--key", "C-1"], home: home)
        #expect(byKey.status == 0 && byKey.stdout.contains(#""request_id":"a-1""#))
        let none = try switchyard(["predictions", "show", "zzz"], home: home)
        #expect(none.status != 0 && none.stderr.contains("no logged prediction for request zzz"))
    }
}

@Suite struct ExplainCommandTests {
    /// `switchyard explain`: a table for one record, JSON Lines for many, errors by row.
    @Test func explainPrintsContributionsThatAddUpToTheMargin() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let record = #"{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let table = try switchyard(["explain", "credit", "--json", record], home: home)
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains("log-odds of 1: base") && table.stdout.contains("credit_score") && table.stdout.contains("\"student\""))

        let lines = try switchyard(["explain", "credit"], home: home, input: record + "\n\n{\"amount\": \"lots\"}\n")
        #expect(lines.status == 65)
        let outputs = lines.stdout.split(separator: "\n").map { try? JSONValue.parse(String($0)) }
        #expect(outputs.count == 2)
        guard case .array(let margins)? = outputs[0]?["explanation"], case .object(let contributions)? = margins.first?["contributions"],
              case .number(let base)? = margins.first?["base"], case .number(let margin)? = margins.first?["margin"],
              case .number(let p1)? = outputs[0]?["probabilities"]?["1"] else {
            Issue.record("no explanation: \(lines.stdout)")
            return
        }
        let sum = contributions.values.reduce(base) { if case .number(let x) = $1 { $0 + x } else { $0 } }
        #expect(abs(sum - margin) < 1e-9 && abs(1 / (1 + exp(-margin)) - p1) < 1e-12)
        #expect(outputs[1]?["row"] == .number(2) && "\(outputs[1]?["error"] ?? .null)".contains("amount"))
    }
}

@Suite struct BatchExplainTests {
    /// `batch run --explain top=K` (issue 18 item 2): each output row carries its K largest
    /// contributions, equal to the embedded scorer's explanation, for CSV and JSON Lines inputs.
    @Test func batchRowsCarryTheirLargestContributions() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let input = root.appendingPathComponent("in"), output = root.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        #expect(try switchyard(["fixtures", "credit", "--rows", "40", "--seed", "3", "--out", input.appendingPathComponent("a.csv").path], home: home).status == 0)
        #expect(try switchyard(["fixtures", "credit", "--rows", "10", "--seed", "4", "--format", "jsonl", "--out", input.appendingPathComponent("b.jsonl").path], home: home).status == 0)
        let run = try switchyard(["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "credit@production",
                                  "--settle", "0", "--explain", "top=3"], home: home)
        #expect(run.status == 0, "\(run.stdout) \(run.stderr)")
        let artifacts = home.appendingPathComponent("artifacts")
        let model = try #require(try FileManager.default.contentsOfDirectory(atPath: artifacts.path).first { $0.hasSuffix(".json") })
        let scorer = try Scorer(try ModelDocument.decode(try Data(contentsOf: artifacts.appendingPathComponent(model))))
        func top3(_ e: Explanation) -> [String] {
            let c = e.contributions[0]
            return c.indices.sorted { abs(c[$0]) > abs(c[$1]) }.prefix(3).map { scorer.fieldNames[$0] }
        }

        let csv = try String(contentsOf: output.appendingPathComponent("a.csv"), encoding: .utf8).split(separator: "\n")
        let header = csv[0].split(separator: ",").map(String.init)
        #expect(header.suffix(6) == ["explain_1_field", "explain_1_contribution", "explain_2_field", "explain_2_contribution", "explain_3_field", "explain_3_contribution"])
        let inputs = try String(contentsOf: input.appendingPathComponent("a.csv"), encoding: .utf8).split(separator: "\n")
        let names = inputs[0].split(separator: ",").map(String.init)
        #expect(csv.count == inputs.count, "every row scored, in order")
        for (row, line) in zip(inputs.dropFirst(), csv.dropFirst()) {
            let cells = row.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var record = JSONObject()
            for (name, cell) in zip(names, cells) where scorer.fieldIndex(name) != nil {
                if let x = Double(cell) { record.append(name, .number(x)) } else { record.append(name, .string(cell)) }
            }
            let expected = try scorer.explain(json: .object(record))
            let out = line.split(separator: ",").map(String.init)
            #expect([out[out.count - 6], out[out.count - 4], out[out.count - 2]] == top3(expected), "\(line)")
            let field = scorer.fieldIndex(out[out.count - 6])!
            #expect(abs((Double(out[out.count - 5]) ?? .nan) - expected.contributions[0][field]) < 1e-12)
        }

        let jsonl = try String(contentsOf: output.appendingPathComponent("b.jsonl"), encoding: .utf8).split(separator: "\n")
        let records = try String(contentsOf: input.appendingPathComponent("b.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(jsonl.count == records.count)
        for (record, line) in zip(records, jsonl) {
            let value = try JSONValue.parse(String(line))
            guard case .array(let items)? = value["explanation"] else {
                Issue.record("no explanation: \(line)")
                continue
            }
            let expected = try scorer.explain(json: try JSONValue.parse(String(record)))
            #expect(items.compactMap { $0["field"]?.stringValue } == top3(expected))
            #expect(value["label"] != nil && value["model_version"] == .string("credit@1"))
        }
    }
}
