import ControlProtocol
import Foundation
import JSON
import Synchronization
import Testing

@testable import Components

extension Result {
    /// The error, for tests.
    var failure: Failure? { if case .failure(let e) = self { e } else { nil } }
}
@testable import HTTP
import Registry
import Scoring
import Telemetry

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures")

let creditRecord = #"{"amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
let creditArray = #"[12042.41,36,18.19,14703.84,55,19.3,1.0,2,0,8,0.531,724,"east","student","branch"]"#

/// Registers the scikit-learn credit model as credit@1 (production) and a shifted credit@2 (so
/// answers differ); returns their documents by version.
@discardableResult
func registerCreditVersions(_ registry: ModelRegistry) throws -> [Int: ModelDocument] {
    var document = try ModelDocument.decode(try Data(contentsOf: fixtures.appendingPathComponent("sklearn-credit-model.json")))
    document.metadata.name = "credit"
    try registry.register(document, who: "test")
    let first = document
    document.estimator.intercepts[0] += 0.5
    try registry.register(document, who: "test")
    try registry.promote(model: "credit", version: 1, alias: "production", who: "test")
    return [1: first, 2: document]
}

/// A serve component on a free loopback port over a fresh SWITCHYARD_HOME with
/// two versions of the scikit-learn credit model (v2 shifted so answers differ).
final class ServeFixture {
    let home: Home
    let registry: ModelRegistry
    let keys: KeyStore
    let serve: ServeComponent
    let host: ComponentHost
    let port: Int
    var documents: [Int: ModelDocument] = [:]
    var adminKey = "", predictKey = "", readKey = "", operateKey = ""

    /// `source` wraps the registry the component loads through (a test's gate); `prepare` registers
    /// more models before the component starts.
    init(
        open: Bool = false, reference: String = "credit@production", threads: Int = 2, source: (ModelRegistry) -> any ModelSource = { $0 },
        log: PredictionLog.Policy = .off, logKey: String? = nil, prepare: (ModelRegistry) throws -> Void = { _ in }
    ) throws {
        home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-serve-\(UUID().uuidString)"))
        registry = try ModelRegistry(home: home)
        documents = try registerCreditVersions(registry)
        try prepare(registry)
        keys = try KeyStore(home: home)
        adminKey = try keys.create(scope: .admin, name: nil, who: "test").1
        predictKey = try keys.create(scope: .predict, name: nil, who: "test").1
        readKey = try keys.create(scope: .read, name: nil, who: "test").1
        operateKey = try keys.create(scope: .operate, name: nil, who: "test").1
        let authenticator = Authenticator(store: keys, loops: threads)
        let events = EventLog()
        let predictionLog = log == .off ? nil : try PredictionLog(
            .init(folder: home.url.appendingPathComponent("predictions"), prefix: "serve", policy: log, key: logKey), loops: threads)
        let serve = try ServeComponent(
            registry: source(registry), reference: reference, loops: threads, open: open, events: events, authenticator: authenticator,
            predictionLog: predictionLog)
        self.serve = serve
        host = ComponentHost(
            component: serve, observer: { serve.observe(loop: $0, status: $1, nanoseconds: $2) },
            configuration: .init(port: 0, threads: threads), authenticator: authenticator, events: events,
            fleet: try FleetDirectory(home: home))
        port = try host.start()
    }

    func stop() {
        host.stop()
        serve.predictionLog?.stop()
        try? FileManager.default.removeItem(at: home.url)
    }

    func client() -> HTTPClient { HTTPClient(port: port) }

    func post(_ path: String, _ body: String, key: String? = nil, type: String = "application/json", headers: [(String, String)] = []) throws -> HTTPClient.Response {
        var h = [("Content-Type", type)] + headers
        if let key { h.append(("Authorization", "Bearer \(key)")) }
        return try client().request("POST", path, headers: h, body: Array(body.utf8))
    }

    func get(_ path: String, key: String? = nil) throws -> HTTPClient.Response {
        try client().request("GET", path, headers: key.map { [("Authorization", "Bearer \($0)")] } ?? [])
    }

    /// The embedded scorer's answer for `version`.
    func expected(_ version: Int, _ record: String = creditRecord) throws -> Prediction {
        try Scorer(documents[version]!).predict(json: try JSONValue.parse(record))
    }
}

func body(_ response: HTTPClient.Response) throws -> JSONValue { try JSONValue.parse(response.body) }

func numbers(_ value: JSONValue?) -> [Double] {
    guard case .array(let a)? = value else { return [] }
    return a.compactMap { if case .number(let x) = $0 { x } else { nil } }
}

@Suite(.serialized) struct ServeProtocolTests {
    @Test func openInferenceProtocolV2() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        let expected = try f.expected(1)
        #expect(try f.get("/v2/health/live").status == 200)
        #expect(try f.get("/v2/health/ready").status == 200)
        #expect(try body(try f.get("/v2"))["name"] == .string("switchyard"))
        let metadata = try body(try f.get("/v2/models/credit"))
        #expect(metadata["versions"] == .array([.string("1")]))
        if case .array(let inputs)? = metadata["inputs"] { #expect(inputs.count == 15) } else { Issue.record("no inputs") }
        #expect(try f.get("/v2/models/credit/versions/1/ready").status == 200)

        // One [N, F] tensor in schema order, the id echoed.
        let single = try f.post("/v2/models/credit/infer", #"{"id": "req-7", "inputs": [{"name": "input", "shape": [2, 15], "datatype": "BYTES", "data": [\#(creditArray), \#(creditArray)]}]}"#, key: f.predictKey)
        #expect(single.status == 200)
        #expect(single.headers["x-model-version"] == "1")
        let answer = try body(single)
        #expect(answer["id"] == .string("req-7"))
        #expect(answer["model_version"] == .string("1"))
        guard case .array(let outputs)? = answer["outputs"] else { Issue.record("no outputs"); return }
        #expect(outputs[0]["shape"] == .array([.number(2), .number(2)]))
        #expect(numbers(outputs[0]["data"]) == expected.probabilities + expected.probabilities)
        #expect(outputs[1]["data"] == .array([.string(expected.label), .string(expected.label)]))

        // One tensor per feature, with a version in the path and only the label asked for.
        let record = try JSONValue.parse(creditRecord)
        guard case .object(let fields) = record else { return }
        let tensors = zip(fields.keys, fields.values).map { name, value -> String in
            let type = if case .string = value { "BYTES" } else { "FP64" }
            return #"{"name": "\#(name)", "shape": [1], "datatype": "\#(type)", "data": [\#(value.jsonText)]}"#
        }
        let perFeature = try f.post("/v2/models/credit/versions/1/infer", #"{"inputs": [\#(tensors.joined(separator: ","))], "outputs": [{"name": "label"}]}"#, key: f.predictKey)
        #expect(perFeature.status == 200)
        guard case .array(let labelOnly)? = try body(perFeature)["outputs"] else { return }
        #expect(labelOnly.count == 1 && labelOnly[0]["name"] == .string("label"))

        // Errors: bad field value (row and field named), unknown model, unloaded version, wrong type.
        let bad = try f.post("/v2/models/credit/infer", #"{"inputs": [{"name": "input", "shape": [2, 15], "datatype": "BYTES", "data": [\#(creditArray), \#(creditArray.replacingOccurrences(of: "12042.41", with: "\"abc\""))]}]}"#, key: f.predictKey)
        #expect(bad.status == 400)
        #expect(try body(bad)["error"] == .string(#"row 2, field "amount": expected a number, got "abc""#))
        #expect(try f.post("/v2/models/other/infer", "{}", key: f.predictKey).status == 404)
        let unloaded = try f.post("/v2/models/credit/versions/2/infer", "{}", key: f.predictKey)
        #expect(unloaded.status == 404)
        #expect(try body(unloaded)["error"] == .string("version 2 of credit is not loaded; this server serves credit@1 (swap with POST /v1/model)"))
        #expect(try f.post("/v2/models/credit/infer", "x", key: f.predictKey, type: "text/plain").status == 415)
        #expect(try f.post("/v2/models/credit/infer", "{not json", key: f.predictKey).status == 400)
        #expect(try f.post("/v2/models/credit/infer", #"{"inputs": [{"name": "nope", "shape": [1], "datatype": "FP64", "data": [1]}]}"#, key: f.predictKey).status == 400)

        // Tensor errors name the input and what was expected; an absurd shape is an error, not an overflow.
        func error(_ inputs: String) throws -> String? {
            let response = try f.post("/v2/models/credit/infer", #"{"inputs": \#(inputs)}"#, key: f.predictKey)
            #expect(response.status == 400)
            guard case .string(let message)? = try body(response)["error"] else { return nil }
            return message
        }
        #expect(try error(#"[{"name": "input", "shape": [2, 15], "datatype": "BYTES", "data": [\#(creditArray)]}]"#)
            == #"input "input": shape [2, 15] holds 30 values, data has 15"#)
        #expect(try error(#"[{"name": "input", "shape": [9999, 999999999, 999999999], "datatype": "BYTES", "data": [1]}]"#)
            == #"input "input": shape [9999, 999999999, 999999999] holds more values, data has 1"#)
        #expect(try error(#"[{"name": "amount", "shape": [1], "datatype": "NOPE", "data": [1]}]"#)?.hasPrefix(#"input "amount": datatype "NOPE" is not one of BYTES, BF16, BOOL"#) == true)
        #expect(try error(#"[{"name": "region", "shape": [1], "datatype": "FP64", "data": [1]}]"#)
            == #"input "region": datatype FP64 does not fit a category field; send BYTES"#)
        #expect(try error(#"[{"name": "amount", "shape": [1], "datatype": "BYTES", "data": [1]}]"#)
            == #"input "amount": datatype BYTES does not fit a number field; send FP64"#)
        #expect(try error(#"[{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": \#(creditArray)}]"#)
            == #"input "input": a whole-record tensor mixes numbers and categories, so its datatype is BYTES, not FP32"#)
        #expect(try error(#"[{"name": "input", "shape": [1.5], "datatype": "BYTES", "data": [1]}]"#)
            == #"input "input": "shape" must be a list of non-negative integers"#)
        #expect(try error(#"[{"name": "amount", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]"#)
            == #"input "amount": shape must be [N] or [N, 1], got [1, 2]"#)
        #expect(try error(#"[{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1, 2]}, {"name": "term", "shape": [1], "datatype": "FP64", "data": [36]}]"#)
            == #"input "term" has 1 rows, other inputs have 2"#)
        #expect(try error(#"[{"shape": [1], "datatype": "FP64", "data": [1]}]"#) == #"inputs[0]: missing "name""#)
        #expect(try error("[]")?.hasPrefix(#"expected "inputs""#) == true)
        #expect(try f.post("/v2/models/credit/infer/extra", "{}", key: f.predictKey).status == 404)

        // The id is a string, never arbitrary JSON echoed back.
        for id in ["7", #"{"a": 1}"#, "[1]", "null", "\"" + String(repeating: "x", count: 300) + "\""] {
            let response = try f.post("/v2/models/credit/infer", #"{"id": \#(id), "inputs": [{"name": "input", "shape": [1, 15], "datatype": "BYTES", "data": \#(creditArray)}]}"#, key: f.predictKey)
            #expect(response.status == 400)
            #expect(try body(response)["error"] == .string(#"field "id": expected a string of at most 256 bytes"#))
        }
    }

    /// The issue-14 attack: an 80-byte body whose shape claims a billion rows with no data. It
    /// used to abort the process allocating 60 GB; now the row count is checked before anything
    /// is sized by it (413).
    @Test func aShapeIsCheckedBeforeAnythingIsAllocated() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        for shape in ["[999999999, 0]", "[10000000, 0]", "[10001, 15]"] {
            let response = try f.post("/v2/models/credit/infer", #"{"inputs": [{"name": "input", "shape": \#(shape), "datatype": "BYTES", "data": []}]}"#, key: f.predictKey)
            #expect(response.status == 413, "\(shape)")
            #expect(try body(response)["error"]?.stringValue?.hasSuffix("rows; a request scores at most 10000 (serve --max-rows)") == true)
        }
        #expect(try f.post("/v2/models/credit/infer", #"{"inputs": [{"name": "input", "shape": [1, 15], "datatype": "BYTES", "data": \#(creditArray)}]}"#, key: f.predictKey).status == 200)
        // The same limit for Azure ML's records.
        let records = "[" + Array(repeating: creditArray, count: 10_001).joined(separator: ",") + "]"
        #expect(try f.post("/score", #"{"data": \#(records)}"#, key: f.predictKey).status == 413)
    }

    @Test func azureMLAndMLflowEndpoints() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        let expected = try f.expected(1)
        let healthy = try f.get("/")
        #expect(healthy.status == 200 && healthy.text == "Healthy")
        let swagger = try body(try f.get("/swagger.json"))
        #expect(swagger["openapi"] == .string("3.0.3"))
        #expect(swagger["paths"]?["/score"]?["post"] != nil)

        for payload in [#"{"data": [\#(creditRecord)]}"#, #"{"data": [\#(creditArray)]}"#] {
            let r = try f.post("/score", payload, key: f.predictKey)
            #expect(r.status == 200)
            guard case .array(let predictions) = try body(r) else { Issue.record("not an array"); continue }
            #expect(predictions.first?["label"] == .string(expected.label))
            #expect(predictions.first?["probabilities"]?["1"] == .number(expected.probabilities[1]))
        }
        let azureBad = try f.post("/score", #"{"data": [{"amount": 1}]}"#, key: f.predictKey)
        #expect(azureBad.status == 400)
        #expect(try body(azureBad)["error"] == .string(#"row 1, field "term": missing, and the model requires a value"#))

        guard case .object(let fields) = try JSONValue.parse(creditRecord) else { return }
        let columns = fields.keys.map { "\"\($0)\"" }.joined(separator: ",")
        let values = fields.values.map(\.jsonText).joined(separator: ",")
        let formats = [
            #"{"dataframe_split": {"columns": [\#(columns)], "data": [[\#(values)]]}}"#,
            #"{"dataframe_records": [\#(creditRecord)]}"#,
            #"{"instances": [\#(creditRecord)]}"#,
            #"{"inputs": {\#(zip(fields.keys, fields.values).map { "\"\($0)\": [\($1.jsonText)]" }.joined(separator: ","))}}"#,
        ]
        for payload in formats {
            let r = try f.post("/invocations", payload, key: f.predictKey)
            #expect(r.status == 200, "\(payload): \(r.text)")
            guard case .array(let predictions)? = try body(r)["predictions"] else { Issue.record("no predictions"); continue }
            #expect(predictions.first?["probabilities"]?["1"] == .number(expected.probabilities[1]))
        }
        let csv = "id," + fields.keys.joined(separator: ",") + "\n7," + fields.values.map { if case .string(let s) = $0 { s } else { $0.jsonText } }.joined(separator: ",") + "\n"
        let csvResponse = try f.post("/invocations", csv, key: f.predictKey, type: "text/csv")
        #expect(csvResponse.status == 200)
        #expect(try body(csvResponse)["predictions"]?.excerpt == "an array of 1")
        #expect(try f.post("/invocations", #"{"rows": []}"#, key: f.predictKey).status == 400)
        #expect(try f.post("/invocations", "a=b", key: f.predictKey, type: "application/x-www-form-urlencoded").status == 415)
        #expect(try f.get("/ping").status == 200 && f.get("/health").status == 200)

        // x-request-id: echoed when sent, generated otherwise.
        let echoed = try f.post("/score", #"{"data": [\#(creditRecord)]}"#, key: f.predictKey, headers: [("x-request-id", "trace-42")])
        #expect(echoed.headers["x-request-id"] == "trace-42")
        #expect(try f.get("/nowhere").headers["x-request-id"]?.isEmpty == false)
        #expect(try f.get("/nowhere").status == 404)
    }

    @Test func keysAndScopes() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        let score = #"{"data": [\#(creditRecord)]}"#
        #expect(try f.post("/score", score).status == 401)
        #expect(try f.post("/score", score, key: "sy_bogus_key").status == 401)
        #expect(try f.post("/score", score, key: f.readKey).status == 403)
        #expect(try f.post("/score", score, key: f.predictKey).status == 200)
        #expect(try f.post("/score", score, key: f.adminKey).status == 200)
        #expect(try f.get("/v1/status").status == 401)
        #expect(try f.get("/v1/status", key: f.readKey).status == 200)
        #expect(try f.get("/metrics", key: f.readKey).status == 200)
        #expect(try f.get("/healthz").status == 200 && f.get("/readyz").status == 200)
        #expect(try f.post("/v1/model", #"{"version": 2}"#, key: f.operateKey).status == 403)
        #expect(try f.post("/v1/model", #"{"version": 2}"#, key: f.predictKey).status == 403)
        // The header is read from its bytes: the scheme in any case, spaces around the key ignored.
        for (header, status) in [("bearer \(f.predictKey)", 200), ("BEARER   \(f.predictKey)  ", 200), ("Bearer", 401), ("Bearer ", 401),
                                 ("Basic \(f.predictKey)", 401), ("Bearer \(f.predictKey)x", 401), ("Bearer\t\(f.predictKey)", 401)] {
            let response = try f.post("/score", score, headers: [("Authorization", header)])
            #expect(response.status == status, "\(header): \(response.text)")
        }
        // A revoked key stops working once the server refreshes its key table.
        let id = try f.keys.list().first { $0.scope == .predict }!.id
        try f.keys.revoke(id: id)
        f.host.control.authenticator.refresh()
        #expect(try f.post("/score", score, key: f.predictKey).status == 401)
    }

    @Test func openScoringNeedsNoKeyButControlStillDoes() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        #expect(try f.post("/score", #"{"data": [\#(creditRecord)]}"#).status == 200)
        #expect(try f.post("/v1/model", #"{"version": 2}"#).status == 401)
        let noKeys = Authenticator(store: nil, loops: 1)
        #expect(throws: (any Error).self) { try ComponentHost.checkExposure(host: "0.0.0.0", open: false, authenticator: noKeys) }
        #expect(throws: (any Error).self) { try ComponentHost.checkExposure(host: "0.0.0.0", open: true, authenticator: f.host.control.authenticator) }
        try ComponentHost.checkExposure(host: "0.0.0.0", open: false, authenticator: f.host.control.authenticator)
        try ComponentHost.checkExposure(host: "127.0.0.1", open: true, authenticator: noKeys)
    }
}

@Suite(.serialized) struct ServeSwapTests {
    @Test func twentySwapsUnderLoadFailNoRequest() throws {
        let f = try ServeFixture(threads: 2)
        defer { f.stop() }
        let answers = [1: try f.expected(1).probabilities, 2: try f.expected(2).probabilities]
        let stop = Atomic<Bool>(false)
        let tallies = Mutex<(ok: Int, failed: [String], byVersion: [String: Int], mismatched: Int)>((0, [], [:], 0))
        let payload = Array(#"{"data": [\#(creditRecord)]}"#.utf8)
        let key = f.predictKey, port = f.port
        let workers = (0..<4).map { _ in
            Thread {
                let client = HTTPClient(port: port)
                let deadline = Date().addingTimeInterval(120)  // only ends a hung test
                while !stop.load(ordering: .relaxed) && Date() < deadline {
                    do {
                        let r = try client.request("POST", "/score", headers: [("Content-Type", "application/json"), ("Authorization", "Bearer \(key)")], body: payload)
                        let version = r.headers["x-model-version"] ?? "?"
                        var consistent = false
                        if case .array(let p) = try JSONValue.parse(r.body), case .number(let p1)? = p.first?["probabilities"]?["1"] {
                            consistent = p1 == answers[Int(version) ?? 0]?[1]
                        }
                        tallies.withLock {
                            if r.status == 200 { $0.ok += 1 } else { $0.failed.append("\(r.status) \(r.text)") }
                            $0.byVersion[version, default: 0] += 1
                            if !consistent { $0.mismatched += 1 }
                        }
                    } catch {
                        tallies.withLock { $0.failed.append("\(error)") }
                    }
                }
            }
        }
        workers.forEach { $0.start() }
        // Each version serves requests between swaps: wait for answers rather than for time.
        func answered() -> Int { tallies.withLock { $0.ok + $0.failed.count } }
        func waitForMoreAnswers(_ n: Int) {
            let target = answered() + n
            let deadline = Date().addingTimeInterval(30)
            while answered() < target && Date() < deadline { usleep(1_000) }
        }
        waitForMoreAnswers(20)
        for i in 0..<20 {
            let r = try f.post("/v1/model", #"{"version": \#(i % 2 == 0 ? 2 : 1)}"#, key: f.adminKey)
            #expect(r.status == 200, "swap \(i): \(r.text)")
            waitForMoreAnswers(20)
        }
        stop.store(true, ordering: .relaxed)
        while workers.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let t = tallies.withLock { $0 }
        #expect(t.failed.isEmpty, "\(t.failed.prefix(3))")
        #expect(t.ok > 100)
        #expect(t.mismatched == 0)  // every answer came from the version its header names
        #expect((t.byVersion["1"] ?? 0) > 0 && (t.byVersion["2"] ?? 0) > 0)
        let status = try ComponentAPI(url: "http://127.0.0.1:\(f.port)", key: f.readKey).status()
        #expect(status.counters["swaps"] == 20 && status.model?.version == 1)
        let metrics = try f.get("/metrics", key: f.readKey).text
        #expect(metrics.contains(#"switchyard_http_requests_total{status="200",model="credit",model_version="2"}"#))
        #expect(metrics.contains("switchyard_model_swaps_total 20"))
    }

    /// The component follows an alias moved in the registry. How fast is a benchmark's question, not
    /// a test's: the deadline here only fails a component that never follows.
    @Test func anAliasMovedInTheRegistryIsFollowed() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        #expect(try f.post("/score", #"{"data": [\#(creditRecord)]}"#, key: f.predictKey).headers["x-model-version"] == "1")
        let moved = Date()
        try f.registry.promote(model: "credit", version: 2, alias: "production", who: "test")
        var version = "1"
        while version != "2" && Date().timeIntervalSince(moved) < 30 {
            usleep(50_000)
            version = try f.post("/score", #"{"data": [\#(creditRecord)]}"#, key: f.predictKey).headers["x-model-version"] ?? ""
        }
        #expect(version == "2")
    }

    /// A swap loads its version off the event loop: with one loop, a request that arrives while
    /// the new version is still loading is answered at once, by the old version; the swap's own
    /// answer comes when it is done. (It used to load on the loop that received POST /v1/model,
    /// and that loop served nothing meanwhile.)
    @Test func aSwapLoadsOffTheEventLoop() throws {
        let gate = LoadGate()
        let f = try ServeFixture(open: true, threads: 1, source: { GatedSource(base: $0, gate: gate) })
        defer {
            gate.release()
            f.stop()
        }
        let swapped = Mutex<Result<SwapResult, ComponentError>?>(nil)
        let admin = try ComponentAPI(url: "http://127.0.0.1:\(f.port)", key: f.adminKey, timeout: 60)
        let thread = Thread {
            do throws(ComponentError) { let r = try admin.swap(.version(2)); swapped.withLock { $0 = .success(r) } } catch { swapped.withLock { $0 = .failure(error) } }
        }
        thread.start()
        #expect(gate.waitUntilEntered(), "the swap reached the registry's document")
        // The only loop is free: a prediction is answered now, by version 1.
        let scored = try HTTPClient(port: f.port, timeout: 10).request("POST", "/score", headers: [("Content-Type", "application/json")],
                                                                       body: Array(#"{"data": [\#(creditRecord)]}"#.utf8))
        #expect(scored.status == 200 && scored.headers["x-model-version"] == "1")
        #expect(swapped.withLock { $0 } == nil, "the swap has not answered yet")
        gate.release()
        for _ in 0..<3000 where swapped.withLock({ $0 }) == nil { usleep(10_000) }  // 30 s: only fails a hung swap
        #expect(try swapped.withLock { $0 }?.get().model.reference == "credit@2")
        #expect(try f.post("/score", #"{"data": [\#(creditRecord)]}"#).headers["x-model-version"] == "2")
    }

    /// Another alias pointing at the version a component runs changes nothing it runs: no swap,
    /// no reload (a version's identity is its model, number and sha256, not its list of aliases).
    @Test func anotherAliasOnTheRunningVersionIsNotASwap() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        try f.registry.promote(model: "credit", version: 1, alias: "canary", who: "test")
        f.serve.tick()
        f.serve.tick()
        var status = ComponentStatus(kind: "serve")
        f.serve.describe(&status)
        #expect(status.counters["swaps"] == 0)
        #expect(f.serve.model.current?.version.reference == "credit@1")
    }

    /// The issue-14 attack: an admin's `{"version": 1e300}` trapped converting to Int in every
    /// component. Now every shape of a bad swap request is a 400 naming the field.
    @Test(arguments: [
        (#"{"version": 1e300}"#, #"field "version": expected a whole number from 1 to 9007199254740992, got 1e+300"#),
        (#"{"version": 1e19}"#, #"field "version": expected a whole number from 1 to 9007199254740992, got 1e+19"#),
        (#"{"version": -1}"#, #"field "version": expected a whole number from 1 to 9007199254740992, got -1.0"#),
        (#"{"version": 1.5}"#, #"field "version": expected a whole number from 1 to 9007199254740992, got 1.5"#),
        (#"{"version": "99999999999999999999"}"#, #"field "version": expected a whole number from 1 to 9007199254740992, got "99999999999999999999""#),
        (#"{"version": true}"#, #"field "version": expected a whole number"#),
        (#"{"alias": 7}"#, #"field "alias": expected a string"#),
        (#"{"alias": "12"}"#, #"field "alias": expected a name of 1 to 128 characters that is not a number"#),
        (#"{"version": 1, "alias": "production"}"#, #"give "version" or "alias", not both"#),
        (#"[1]"#, #"the body is not a JSON object: expected {"version": N} or {"alias": "NAME"}"#),
        (#"{}"#, #"expected {"version": N} or {"alias": "NAME"}"#),
    ])
    func aBadSwapRequestIs400NamingTheField(body text: String, message: String) throws {
        #expect(SwapRequest.decode(Array(text.utf8)).failure?.message == message)
        #expect(SwapRequest.decode(Array(text.utf8)).failure?.status == 400)
    }

    /// A console polling status, time series and events is not traffic: an idle serve used to
    /// show three requests a second per console.
    @Test func controlAPIPollsAreNotCountedAsRequests() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        for path in ["/v1/status", "/v1/timeseries?window=5", "/v1/events", "/metrics", "/healthz"] {
            #expect(try f.get(path, key: f.readKey).status == 200)
        }
        #expect(f.serve.responses.total == 0)
        #expect(try f.post("/score", #"{"data": [\#(creditRecord)]}"#, key: f.predictKey).status == 200)
        #expect(try f.post("/score", "{}", key: f.predictKey).status == 400)
        #expect(f.serve.responses.total == 2 && f.serve.responses.clientErrors == 1)
    }

    @Test func anOutOfRangeVersionDoesNotKillTheComponent() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        let r = try f.post("/v1/model", #"{"version": 1e300}"#, key: f.adminKey)
        #expect(r.status == 400)
        #expect(try f.post("/v1/model", #"{"version": "2"}"#, key: f.adminKey).status == 200)
        #expect(try f.get("/healthz").status == 200)
    }

    @Test func aVersionThatFailsToLoadLeavesTheOldOneServing() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        var broken = f.documents[1]!
        broken.estimator.intercepts[0] = 42
        let v3 = try f.registry.register(broken, who: "test").version
        try Data("{\"not\": \"a model\"}".utf8).write(to: f.home.artifacts.appendingPathComponent("\(v3.sha256).json"))
        let r = try f.post("/v1/model", #"{"version": 3}"#, key: f.adminKey)
        #expect(r.status >= 400)
        #expect(r.text.contains("corrupt"))
        #expect(try f.post("/score", #"{"data": [\#(creditRecord)]}"#, key: f.predictKey).headers["x-model-version"] == "1")
        let events = try f.get("/v1/events", key: f.readKey).text
        #expect(events.contains("swap to credit@3 failed, still serving credit@1"))
        #expect(try f.post("/v1/model", #"{"version": 99}"#, key: f.adminKey).status == 404)
        #expect(try f.post("/v1/model", #"{"alias": "production"}"#, key: f.adminKey).status == 200)
    }

    @Test func theFleetDirectoryListsTheComponentUntilItStops() throws {
        let f = try ServeFixture()
        let fleet = try FleetDirectory(home: f.home)
        let members = try fleet.members()
        #expect(members.count == 1)
        #expect(members.first?.kind == "serve")
        #expect(members.first?.url == "http://127.0.0.1:\(f.port)")
        #expect(members.first?.model == "credit@1")
        f.host.stop()
        #expect(try fleet.members().isEmpty)
        try? FileManager.default.removeItem(at: f.home.url)
    }

    /// Explanations on every protocol (issue 18 item 2): OIP's `parameters.explain`, `/score?explain=true`
    /// and MLflow's `params`, each equal to the embedded scorer's.
    @Test func everyProtocolExplainsWhenAsked() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        let scorer = try Scorer(f.documents[1]!)
        let expected = try scorer.explain(json: try JSONValue.parse(creditRecord))
        let margin = expected.margins[0]
        #expect(abs(margin - log(expected.prediction.probabilities[1] / expected.prediction.probabilities[0])) < 1e-9)

        let oip = try body(try f.post("/v2/models/credit/infer", #"{"inputs":[{"name":"input","shape":[1,15],"datatype":"BYTES","data":\#(creditArray)}],"parameters":{"explain":true}}"#))
        guard case .array(let outputs)? = oip["outputs"], let contributions = outputs.first(where: { $0["name"] == .string("contributions") }) else {
            Issue.record("no contributions output: \(oip)")
            return
        }
        #expect(contributions["shape"] == .array([.number(1), .number(15)]))
        #expect(numbers(contributions["data"]) == expected.contributions[0])
        #expect(numbers(contributions["parameters"]?["base"]) == expected.base)
        #expect(contributions["parameters"]?["margins"] == .array([.string("1")]))

        let score = try body(try f.post("/score?explain=true", #"{"data": [\#(creditRecord)]}"#))
        let explanation = score[0]?["explanation"]?[0]
        #expect(explanation?["class"] == .string("1") && explanation?["base"] == .number(expected.base[0]))
        #expect(explanation?["contributions"]?["credit_score"] == .number(expected.contributions[0][scorer.fieldIndex("credit_score")!]))
        #expect(explanation?["margin"] == .number(margin))
        #expect(try body(try f.post("/score", #"{"data": [\#(creditRecord)]}"#))[0]?["explanation"] == nil, "only when asked")

        let mlflow = try body(try f.post("/invocations", #"{"dataframe_records": [\#(creditRecord)], "params": {"explain": true}}"#))
        #expect(mlflow["predictions"]?[0]?["explanation"]?[0]?["margin"] == .number(margin))
    }

    /// The prediction log (issue 18 item 4): what a request was answered is found by its request id
    /// or by the record's key field, over HTTP with scope operate; every protocol logs.
    @Test func predictionsAreLoggedAndFoundByRequestIDAndKey() throws {
        let f = try ServeFixture(open: true, log: .all, logKey: "customer")
        defer { f.stop() }
        let first = #"{"customer": "C-1042", "amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let scored = try f.post("/score", #"{"data": [\#(first), \#(creditRecord)]}"#, headers: [("x-request-id", "support-case-7")])
        #expect(scored.status == 200)
        #expect(try f.post("/v2/models/credit/infer", #"{"inputs":[{"name":"input","shape":[1,15],"datatype":"BYTES","data":\#(creditArray)}]}"#,
                           headers: [("x-request-id", "oip-1")]).status == 200)
        #expect(try f.post("/invocations", #"{"dataframe_records": [\#(first)]}"#, headers: [("x-request-id", "mlflow-1")]).status == 200)
        let folder = f.home.url.appendingPathComponent("predictions")
        #expect(waitFor { PredictionLog.find(in: folder, requestID: "mlflow-1").count == 1 })

        #expect(try f.get("/v1/predictions/support-case-7").status == 401)
        #expect(try f.get("/v1/predictions/support-case-7", key: f.predictKey).status == 403, "records can hold personal data: operate")
        let found = try body(try f.get("/v1/predictions/support-case-7", key: f.operateKey))
        guard case .array(let entries)? = found["predictions"] else {
            Issue.record("no predictions: \(found)")
            return
        }
        #expect(entries.count == 2)
        let expected = try f.expected(1, first)
        let row1 = entries.first { $0["row"] == .number(1) }
        #expect(row1?["model"] == .string("credit@1") && row1?["sha256"] == .string(f.serve.model.current!.version.sha256))
        #expect(row1?["key"] == .string("C-1042") && row1?["record"]?["customer"] == .string("C-1042"))
        if case .string(let at)? = row1?["at"], let time = parseTimestamp(at) {
            #expect(abs(time - Date().timeIntervalSince1970) < 3600 && at.count == 24 && at.hasSuffix("Z"), "\(at)")
        } else {
            Issue.record("no time: \(String(describing: row1))")
        }
        #expect(row1?["probabilities"]?["1"] == .number(expected.probabilities[1]) && row1?["label"] == .string(expected.label))
        let oip = PredictionLog.find(in: folder, requestID: "oip-1")
        #expect(oip.first?["record"]?["region"] == .string("east"))

        let byKey = try body(try f.get("/v1/predictions?key=C-1042", key: f.operateKey))
        guard case .array(let keyed)? = byKey["predictions"] else { return }
        #expect(Set(keyed.compactMap { if case .string(let id)? = $0["request_id"] { id } else { nil } }) == ["support-case-7", "mlflow-1"])
        #expect(try f.get("/v1/predictions/nobody", key: f.operateKey).status == 404)
        #expect(try f.get("/v1/predictions", key: f.operateKey).status == 400)
        // The writer counts a batch just after writing it: wait for the count, not only the file.
        #expect(waitFor { (try? body(try f.get("/v1/status", key: f.readKey)))?["counters"]?["predictions_logged"] == .number(4) })
    }

    @Test func aSampledLogKeepsItsShareAndSkipsACutOffLine() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-log-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        var options = PredictionLog.Options(folder: folder, prefix: "t", policy: PredictionLog.Policy("sample=0.25")!, key: nil)
        options.segmentBytes = 400
        options.maxBytes = 2000
        options.flushInterval = 0.01
        let log = try PredictionLog(options, loops: 1)
        let sampled = (0..<1000).filter { _ in log.sample(loop: 0) }.count
        #expect(sampled == 251, "the first, then one in four")
        // Batches of ten lines (each batch one write), the writer catching up between them.
        for batch in 0..<20 {
            for i in 0..<10 { log.append(Array(#"{"request_id":"r\#(batch * 10 + i)","row":1,"pad":"\#(String(repeating: "x", count: 60))"}"#.utf8)) }
            #expect(waitFor { log.counts.written == (batch + 1) * 10 })
        }
        log.stop()
        // A new segment once one passes 400 bytes; the oldest deleted beyond 2,000 in all.
        let segments = PredictionLog.segments(in: folder)
        let total = segments.reduce(0) { $0 + $1.size }
        #expect(segments.count >= 2 && total <= 2000 + 1000, "\(segments.count) segments, \(total) bytes")
        #expect(PredictionLog.find(in: folder, requestID: "r0").isEmpty, "the oldest went")
        #expect(PredictionLog.find(in: folder, requestID: "r199").count == 1, "the newest is kept")
        // A crash mid-write leaves a last line without its newline: it is not read.
        let cut = folder.appendingPathComponent("t-1-1-999999.jsonl")
        try Data(#"{"request_id":"whole","row":1}"#.utf8 + [0x0A] + #"{"request_id":"cut","ro"#.utf8).write(to: cut)
        #expect(PredictionLog.find(in: folder, requestID: "whole").count == 1)
        #expect(PredictionLog.find(in: folder, requestID: "cut").isEmpty)
    }

    /// A log whose folder cannot take its lines says so — an outage event and a DOWN dependency —
    /// counts the lines as dropped, and recovers by itself once it can write again.
    @Test func aLogThatCannotWriteIsAnOutageAndCountsItsLines() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-log-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        var options = PredictionLog.Options(folder: folder, prefix: "t", policy: .all, key: nil)
        options.flushInterval = 0.01
        let events = EventLog()
        let log = try PredictionLog(options, loops: 1, events: events)
        defer { log.stop() }
        // The folder replaced by a file: no segment can be made in it (root or not).
        try FileManager.default.removeItem(at: folder)
        try Data("in the way".utf8).write(to: folder)
        for i in 0..<5 { log.append(Array(#"{"request_id":"r\#(i)","row":1}"#.utf8)) }
        #expect(waitFor { log.counts.dropped == 5 })
        #expect(log.counts.written == 0 && !log.health.isUp && log.problem?.contains("cannot write") == true)
        #expect(events.after(0).contains { $0.kind == "error" && $0.message.hasPrefix("prediction log \(folder.path)") })
        try FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        log.append(Array(#"{"request_id":"back","row":1}"#.utf8))
        #expect(waitFor { log.counts.written == 1 })
        #expect(log.health.isUp && log.problem == nil && log.health.outages == 1)
        #expect(events.after(0).contains { $0.kind == "recovered" })
    }

    /// SIGTERM drains: during the drain delay readiness answers 503 on both readiness routes and
    /// status says `draining`, while scoring still works (the load balancer has not noticed yet);
    /// then the host stops and leaves the fleet.
    @Test func drainingTurnsReadinessTo503AndKeepsScoringUntilTheListenerCloses() throws {
        let f = try ServeFixture(open: true)
        defer { try? FileManager.default.removeItem(at: f.home.url) }
        #expect(try f.get("/readyz").status == 200)
        let giveUp = Atomic<Bool>(false)
        let left = Mutex<Int?>(nil)
        let host = f.host
        Thread { let n = host.drain(delay: 600, timeout: 600, giveUp: { giveUp.load(ordering: .relaxed) }); left.withLock { $0 = n } }.start()
        #expect(waitFor { (try? f.get("/readyz").status) == 503 })
        let oip = try f.get("/v2/health/ready")
        #expect(try oip.status == 503 && body(oip)["ready"] == .bool(false))
        #expect(try f.get("/v2/models/credit/ready").status == 503)
        #expect(try body(try f.get("/v1/status", key: f.readKey))["state"] == .string("draining"))
        #expect(f.serve.events.after(0).contains { $0.kind == "drain" })
        #expect(try f.post("/score", "{\"data\": [\(creditRecord)]}").status == 200, "still scoring during the delay")
        giveUp.store(true, ordering: .relaxed)
        #expect(waitFor { left.withLock { $0 } != nil })
        #expect(try FleetDirectory(home: f.home).members().isEmpty)
    }

    @Test func timeseriesReportsRequestsAndLatency() throws {
        let f = try ServeFixture()
        defer { f.stop() }
        let client = f.client()
        let start = Date()
        while Date().timeIntervalSince(start) < 2.3 {
            _ = try client.request("POST", "/score", headers: [("Content-Type", "application/json"), ("Authorization", "Bearer \(f.predictKey)")], body: Array(#"{"data": [\#(creditRecord)]}"#.utf8))
        }
        let series = try body(try f.get("/v1/timeseries?window=5", key: f.readKey))
        guard case .array(let samples)? = series["samples"] else { Issue.record("no samples"); return }
        #expect(samples.count >= 2)
        let busiest = samples.compactMap { if case .number(let r)? = $0["requests"] { r } else { nil } }.max() ?? 0
        #expect(busiest > 10)
        #expect(samples.contains { if case .number(let p)? = $0["p99_ms"] { p > 0 } else { false } })
    }
}

/// A model reference means the same in every component as in `predict` and the README.
/// Per-loop state: each loop's value and counter row on a cache line of its own, so loops on
/// different cores never write the same line.
@Suite struct PerLoopStateTests {
    @Test func loopLocalValuesAreIndependentAndALineApart() {
        let local = LoopLocal<Int>(loops: 3) { 7 }
        var addresses: [UInt] = []
        for loop in 0..<3 {
            local.with(loop: loop) { value in
                value += loop
                withUnsafeMutablePointer(to: &value) { addresses.append(UInt(bitPattern: $0)) }
            }
        }
        #expect((0..<3).map { loop in local.with(loop: loop) { $0 } } == [7, 8, 9])
        #expect(addresses.allSatisfy { $0 % UInt(CacheLine.bytes) == 0 })
        #expect(zip(addresses, addresses.dropFirst()).allSatisfy { $1 - $0 >= UInt(CacheLine.bytes) })
        // A value larger than a line takes whole lines.
        let wide = LoopLocal<(Int, Int, Int, Int, Int, Int, Int, Int, Int)>(loops: 2) { (1, 2, 3, 4, 5, 6, 7, 8, 9) }
        wide.with(loop: 1) { $0.8 = 90 }
        #expect(wide.with(loop: 0) { $0.8 } == 9 && wide.with(loop: 1) { $0.8 } == 90)
    }

    @Test func loopCounterRowsDoNotOverlap() {
        let counters = LoopCounters(loops: 3, width: 18)
        for loop in 0..<3 {
            for column in 0..<18 { counters.add(loop: loop, column: column, UInt64(loop * 100 + column)) }
        }
        for column in 0..<18 { #expect(counters.sum(column: column) == UInt64(300 + 3 * column)) }
        counters.add(loop: 2, column: 17, UInt64.max)  // wraps: −1
        #expect(counters.sum(column: 17) == 350)
        let sequence = LoopCounters(loops: 2, width: 1)
        #expect([sequence.next(loop: 1), sequence.next(loop: 1), sequence.next(loop: 0)] == [0, 1, 0])
    }
}

@Suite struct ModelTargetTests {
    @Test func aBareNameFollowsProductionOrPinsTheLatest() throws {
        let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-target-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        var document = try ModelDocument.decode(try Data(contentsOf: fixtures.appendingPathComponent("sklearn-credit-model.json")))
        document.metadata.name = "credit"
        try registry.register(document, who: "test")
        document.estimator.intercepts[0] += 0.5
        try registry.register(document, who: "test")
        let latest = try ModelTarget("credit", in: registry)
        #expect(latest.version.version == 2 && latest.alias == nil, "no production alias: the latest version, pinned")
        try registry.promote(model: "credit", version: 1, alias: "production", who: "test")
        let production = try ModelTarget("credit", in: registry)
        #expect(production.version.version == 1 && production.alias == "production")
        #expect(try ModelTarget("credit@2", in: registry).alias == nil)
        #expect(try ModelTarget("credit@production", in: registry).alias == "production")
        // And a component started with the bare name serves it (it used to refuse: no alias "production").
        try FileManager.default.removeItem(at: home.url)
        let fresh = try ModelRegistry(home: home)
        try fresh.register(document, who: "test")
        let serve = try ServeComponent(registry: fresh, reference: "credit", loops: 1, open: true, events: EventLog(),
                                       authenticator: Authenticator(store: nil, loops: 1))
        #expect(serve.model.current?.version.reference == "credit@1")
    }
}

/// Holds `document` for version 2 until released, so a test can act while a swap is loading.
final class LoadGate: Sendable {
    private let entered = DispatchSemaphore(value: 0)
    private let opened = DispatchSemaphore(value: 0)
    private let released = Atomic<Bool>(false)

    func pass() {
        entered.signal()
        if !released.load(ordering: .acquiring) { opened.wait() }
    }

    /// Whether a load reached the gate within 30 s (only a hung swap takes that long).
    func waitUntilEntered() -> Bool { entered.wait(timeout: .now() + 30) == .success }

    func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        opened.signal()
    }
}

/// The local registry, with version 2's document held at a gate.
struct GatedSource: ModelSource {
    let base: ModelRegistry
    let gate: LoadGate

    func resolve(_ reference: String) throws(RegistryError) -> ModelVersion { try base.resolve(reference) }

    func document(_ version: ModelVersion) throws(RegistryError) -> ModelDocument {
        if version.version == 2 { gate.pass() }
        return try base.document(version)
    }
}

extension JSONValue {
    /// An array's element, for tests.
    subscript(index: Int) -> JSONValue? {
        guard case .array(let a) = self, a.indices.contains(index) else { return nil }
        return a[index]
    }
}
