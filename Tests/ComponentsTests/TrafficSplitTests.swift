import ControlProtocol
import Foundation
import JSON
import Testing

@testable import Components
import HTTP
import Registry
import Scoring
import Telemetry

/// A seeded generator (splitmix64), so the keys a test sends are the same every run.
struct SeededKeys {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

@Suite(.serialized) struct TrafficSplitTests {
    static let json = [("Content-Type", "application/json")]

    /// Routes `credit@production` 90/10 in the registry and waits until the serve runs the split.
    func split(_ f: ServeFixture, _ words: [String], key: String? = nil) throws {
        try f.registry.setRoute(model: "credit", alias: "production", route: AliasRoute(words: words, key: key), who: "test")
        #expect(waitFor { f.serve.tick(); return f.serve.model.current?.route?.words == words.joined(separator: " ") })
    }

    /// 5,000 requests at 90/10 send 10 ± 1.5% to v2 — without a key (the even sequence) and with
    /// 5,000 seeded routing keys — and every response names the version that answered it, with
    /// that version's prediction.
    @Test func aSplitSendsEachVersionItsShare() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        try split(f, ["1=90", "2=10"])
        let expected = [1: try f.expected(1), 2: try f.expected(2)]
        let client = f.client()
        let body = Array(#"{"data": [\#(creditRecord)]}"#.utf8)
        var unkeyed = [1: 0, 2: 0], keyed = [1: 0, 2: 0]
        var keys = SeededKeys(state: 42)
        for i in 0..<10_000 {
            let headers = i % 2 == 0 ? Self.json : Self.json + [("x-routing-key", "customer-\(keys.next())")]
            let r = try client.request("POST", "/score", headers: headers, body: body)
            guard r.status == 200, let version = r.headers["x-model-version"].flatMap({ Int($0) }), expected[version] != nil else {
                Issue.record("request \(i): \(r.status) \(r.headers["x-model-version"] ?? "no version")")
                return
            }
            // The answer is that version's.
            if i < 200 {
                let p = try JSONValue.parse(r.body)[0]?["probabilities"]?["1"]
                #expect(p == .number(expected[version]!.probabilities[1]), "request \(i) answered by v\(version)")
            }
            if i % 2 == 0 { unkeyed[version]! += 1 } else { keyed[version]! += 1 }
        }
        let shareUnkeyed = Double(unkeyed[2]!) / 5000, shareKeyed = Double(keyed[2]!) / 5000
        #expect(abs(shareUnkeyed - 0.10) <= 0.015, "without a key: \(shareUnkeyed)")
        #expect(abs(shareKeyed - 0.10) <= 0.015, "with seeded keys: \(shareKeyed)")

        // Status and /metrics count per version.
        let status = try #require(ComponentStatus(json: try JSONValue.parse(f.get("/v1/status", key: f.readKey).body)))
        #expect(status.route?.description == "v1 90% · v2 10%")
        #expect(status.model?.version == 1, "the alias's main version")
        let traffic = status.serve?.versions ?? []
        #expect(traffic.map(\.version) == [1, 2] && traffic.map(\.weight) == [90, 10])
        #expect(traffic.map(\.requests) == [Double(unkeyed[1]! + keyed[1]!), Double(unkeyed[2]! + keyed[2]!)])
        let metrics = String(decoding: try f.get("/metrics", key: f.readKey).body, as: UTF8.self)
        #expect(metrics.contains(#"switchyard_http_requests_total{status="200",model="credit",model_version="2"} \#(unkeyed[2]! + keyed[2]!)"#))
        #expect(metrics.contains(#"switchyard_model_request_duration_seconds_count{model="credit",model_version="2"} \#(unkeyed[2]! + keyed[2]!)"#))
        #expect(metrics.contains(#"switchyard_route_weight_percent{model="credit",model_version="2"} 10"#))
        // One series per version, counted once, though the split republished v1 beside v2.
        #expect(metrics.components(separatedBy: #"switchyard_http_requests_total{status="200",model="credit",model_version="1"}"#).count == 2)
        #expect(metrics.contains(#"switchyard_http_requests_total{status="200",model="credit",model_version="1"} \#(unkeyed[1]! + keyed[1]!)"#))
    }

    /// One routing key always gets one version: by header, or by the route's record field in
    /// every protocol's body shape — and the same on a second replica.
    @Test func oneKeyAlwaysGetsOneVersionOnEveryReplica() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        try split(f, ["1=50", "2=50"], key: "customer_id")
        let replica = try ServeComponent(registry: f.registry, reference: "credit@production", loops: 1, open: true, events: EventLog(),
                                         authenticator: Authenticator(store: f.keys, loops: 1))
        let host = ComponentHost(component: replica, observer: { replica.observe(loop: $0, status: $1, nanoseconds: $2) },
                                 configuration: .init(port: 0, threads: 1), authenticator: Authenticator(store: f.keys, loops: 1),
                                 events: EventLog(), fleet: try FleetDirectory(home: f.home))
        let replicaPort = try host.start()
        defer { host.stop() }
        let clients = [f.client(), HTTPClient(port: replicaPort)]

        let record = String(creditRecord.dropLast())
        func bodies(_ id: String) -> [(path: String, body: String)] {
            [
                ("/score", #"{"data": [\#(record), "customer_id": \#(id)}]}"#),
                ("/score", #"[\#(record), "customer_id": \#(id)}]"#),
                ("/invocations", #"{"dataframe_records": [\#(record), "customer_id": \#(id)}]}"#),
                ("/invocations", #"{"dataframe_split": {"columns": ["term", "customer_id"], "data": [[36, \#(id)]]}}"#),
                ("/v2/models/credit/infer", #"{"inputs": [{"name": "term", "shape": [1], "datatype": "FP64", "data": [36]}, {"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": [\#(id)]}]}"#),
            ]
        }
        var seen = Set<Int>()
        var keys = SeededKeys(state: 7)
        for _ in 0..<40 {
            let id = "\(keys.next() % 1_000_000)"
            var versions = Set<String>()
            for client in clients {
                for _ in 0..<3 {
                    versions.insert(try client.request("POST", "/score", headers: Self.json + [("x-routing-key", id)], body: Array(#"{"data": [\#(creditRecord)]}"#.utf8)).headers["x-model-version"] ?? "?")
                }
                for (path, body) in bodies("\"\(id)\"") + bodies(id) {
                    // The dataframe_split and infer bodies lack inputs: answered 400, still by the key's version.
                    versions.insert(try client.request("POST", path, headers: Self.json, body: Array(body.utf8)).headers["x-model-version"] ?? "?")
                }
            }
            #expect(versions.count == 1, "key \(id) went to \(versions.sorted())")
            if let v = versions.first.flatMap({ Int($0) }) { seen.insert(v) }
        }
        #expect(seen == [1, 2], "40 keys at 50/50 reach both versions")
        // An OIP path naming a version of the split gets that version, whatever the key.
        for v in [1, 2] {
            let r = try clients[0].request("POST", "/v2/models/credit/versions/\(v)/infer", headers: Self.json + [("x-routing-key", "k")],
                                           body: Array(#"{"inputs": [{"name": "input", "shape": [1, 15], "datatype": "BYTES", "data": \#(creditArray)}]}"#.utf8))
            #expect(r.status == 200 && r.headers["x-model-version"] == "\(v)")
            #expect(try clients[0].request("GET", "/v2/models/credit/versions/\(v)").status == 200)
        }
    }

    /// Every replica of a fleet (each with its own home and registry client, following through the
    /// service's long poll) splits by a weight change made through the service, loading the new
    /// version once; a split naming a version that cannot load keeps what runs and says why.
    @Test func everyReplicaOfAFleetFollowsAWeightChange() throws {
        let f = try RegistryServiceFixture()
        defer { f.cleanUp() }
        var serves: [ServeComponent] = []
        var hosts: [ComponentHost] = []
        defer { for host in hosts { host.stop() } }
        for i in 0..<3 {
            let home = Home(f.home.url.appendingPathComponent("replica-\(i)"))
            let client = try f.client(key: f.operateKey, home: home)
            let serve = try ServeComponent(registry: client, reference: "credit@production", loops: 1, open: true, events: EventLog(),
                                           authenticator: Authenticator(store: client, loops: 1))
            let host = ComponentHost(component: serve, observer: nil, configuration: .init(port: 0, threads: 1),
                                     authenticator: Authenticator(store: client, loops: 1), events: EventLog(), fleet: nil)
            _ = try host.start()
            client.follow({ host.nudge() }, until: { host.isStopping })
            serves.append(serve)
            hosts.append(host)
        }
        let admin = try f.client(key: f.adminKey, home: Home(f.home.url.appendingPathComponent("admin")))
        for words in [["1=90", "2=10"], ["1=50", "2=50"], ["1=100"]] {
            let route = try AliasRoute(words: words, key: nil)
            _ = try admin.setRoute(model: "credit", alias: "production", route: route)
            let wanted = route.isSingle ? nil : route
            #expect(waitFor { serves.allSatisfy { $0.model.current?.route == wanted && $0.model.current?.version.version == route.main } },
                    "every replica splits \(words)")
        }
        #expect(serves.allSatisfy { $0.model.current?.arms.isEmpty == true })
        // An operate key may not split traffic.
        #expect(throws: RegistryError.self) { _ = try f.client(key: f.operateKey, home: f.home).setRoute(model: "credit", alias: "production", route: try AliasRoute(words: ["2=100"], key: nil)) }
    }

    /// A shadow answers nobody, and its comparison is exact: on v1 live against a shifted v2 as
    /// shadow, 300 generated records sent one a request through /score, OIP infer and MLflow
    /// /invocations give exactly the disagreements, mean and max |Δp| the embedded scorer gives,
    /// and the largest disagreement names its request.
    @Test func aShadowScoresACopyAndComparesExactly() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        try f.registry.setRoute(model: "credit", alias: "production",
                                route: AliasRoute(words: ["1=100"], key: nil, shadow: .init(version: 2)), who: "test")
        #expect(waitFor { f.serve.tick(); return f.serve.model.current?.route?.shadow?.version == 2 })
        #expect(try f.get("/v1/compare").status == 401, "scope read")
        let (live, shadow) = (try Scorer(f.documents[1]!), try Scorer(f.documents[2]!))
        var generator = CreditFixture(seed: 11)
        var disagreements = 0, deltas: [(id: String, delta: Double)] = []
        let client = f.client()
        for i in 0..<300 {
            let row = generator.next()
            let values: [(String, JSONValue)] = [
                ("amount", .number(row.amount)), ("term", .number(Double(row.term))), ("rate", .number(row.rate)), ("income", .number(row.income)),
                ("age", .number(Double(row.age))), ("tenure", .number(row.tenure)), ("utilization", .number(row.utilization)),
                ("inquiries", .number(Double(row.inquiries))), ("delinquencies", .number(Double(row.delinquencies))),
                ("open_accounts", .number(Double(row.openAccounts))), ("debt_ratio", .number(row.debtRatio)), ("credit_score", .number(Double(row.creditScore))),
                ("region", .string(CreditFixture.regions[row.region])), ("product", .string(CreditFixture.products[row.product])),
                ("channel", .string(CreditFixture.channels[row.channel])),
            ]
            var object = JSONObject()
            for (name, value) in values { object.append(name, value) }
            let record = JSONValue.object(object)
            let (a, b) = (try live.predict(json: record), try shadow.predict(json: record))
            if a.label != b.label { disagreements += 1 }
            let id = "r-\(i)"
            deltas.append((id, zip(a.probabilities, b.probabilities).map { abs($0 - $1) }.max()!))
            let (path, body): (String, String) = switch i % 3 {
            case 0: ("/score", #"{"data": [\#(record.jsonText)]}"#)
            case 1: ("/v2/models/credit/infer", #"{"inputs": ["# + values.map { name, value in
                #"{"name": "\#(name)", "shape": [1], "datatype": "\#(value.stringValue == nil ? "FP64" : "BYTES")", "data": [\#(value.jsonText)]}"#
            }.joined(separator: ",") + "]}")
            default: ("/invocations", #"{"dataframe_records": [\#(record.jsonText)]}"#)
            }
            let r = try client.request("POST", path, headers: Self.json + [("x-request-id", id)], body: Array(body.utf8))
            #expect(r.status == 200 && r.headers["x-model-version"] == "1", "\(path): \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        #expect(disagreements > 0, "the crafted pair disagrees on some rows")
        var report = JSONValue.null
        #expect(waitFor {
            report = (try? JSONValue.parse(f.get("/v1/compare", key: f.readKey).body)) ?? .null
            return report["compared_total"] == .number(300)
        })
        #expect(report["window"] == .number(300) && report["dropped"] == .number(0))
        #expect(report["disagreements"] == .number(Double(disagreements)))
        #expect(report["agreement"] == .number(Double(300 - disagreements) / 300))
        let maxDelta = deltas.map(\.delta).max()!
        #expect(report["max_abs_delta"] == .number(maxDelta))
        if case .number(let mean)? = report["mean_abs_delta"] {
            #expect(abs(mean - deltas.map(\.delta).reduce(0, +) / 300) < 1e-12)
        } else {
            Issue.record("no mean_abs_delta")
        }
        #expect(report["largest"]?[0]?["request_id"] == .string(deltas.first { $0.delta == maxDelta }!.id))
        #expect(report["shadow"]?["version"] == .number(2))
        let roles = report["versions"].flatMap { if case .array(let a) = $0 { a.map { $0["role"]?.stringValue ?? "" } } else { nil } }
        #expect(roles == ["live", "shadow"])
        // The console reads the same through the component client, record included.
        let typed = try ComponentAPI(url: "http://127.0.0.1:\(f.port)", key: f.readKey).comparison(top: 3)
        #expect(typed.disagreements == disagreements && typed.window == 300 && typed.largest.count == 3)
        #expect(typed.largest.first?.record?["credit_score"] != nil, "the disagreeing record, for Predict")
    }

    /// A row the live version scores and the shadow cannot (v3 refuses a region it does not know,
    /// where v1 scores it with every region column 0) counts as a shadow error and a disagreement
    /// with |Δp| 1, and the report names the field; the other rows agree exactly.
    @Test func aRowTheShadowCannotScoreIsAnErrorNamingTheField() throws {
        let f = try ServeFixture(open: true, prepare: { registry in
            var strict = try ModelDocument.decode(try Data(contentsOf: fixtures.appendingPathComponent("sklearn-credit-model.json")))
            strict.metadata.name = "credit"
            let region = strict.schema.fields.firstIndex { $0.name == "region" }!
            strict.schema.fields[region].unknown = .error
            strict.estimator.intercepts[0] += 1e-9  // a version of its own
            try registry.register(strict, who: "test")
        })
        defer { f.stop() }
        try f.registry.setRoute(model: "credit", alias: "production",
                                route: AliasRoute(words: ["1=100"], key: nil, shadow: .init(version: 3)), who: "test")
        #expect(waitFor { f.serve.tick(); return f.serve.model.current?.route?.shadow?.version == 3 })
        for i in 0..<10 {
            let record = i % 4 == 1 ? creditRecord.replacingOccurrences(of: #""east""#, with: #""mars""#) : creditRecord
            let r = try f.client().request("POST", "/score", headers: Self.json + [("x-request-id", "row-\(i)")], body: Array(#"{"data": [\#(record)]}"#.utf8))
            #expect(r.status == 200, "\(String(decoding: r.body, as: UTF8.self))")
        }
        var report = JSONValue.null
        #expect(waitFor {
            report = (try? JSONValue.parse(f.get("/v1/compare", key: f.readKey).body)) ?? .null
            return report["compared_total"] == .number(10)
        })
        #expect(report["shadow_errors"] == .number(3) && report["disagreements"] == .number(3), "\(report)")
        #expect(report["max_abs_delta"] != nil && report["agreement"] == .number(0.7))
        let largest: [JSONValue] = report["largest"].flatMap { if case .array(let a) = $0 { a } else { nil } } ?? []
        #expect(Set(largest.prefix(3).compactMap { $0["request_id"]?.stringValue }) == ["row-1", "row-5", "row-9"])
        #expect(largest.first?["abs_delta"] == .number(1))
        let error = largest.first?["shadow_error"]?.stringValue ?? ""
        #expect(error.contains("region"), "\(error)")
    }

    /// The registry side: a split is checked, audited, ends with 1=100 or a promote, and batch and
    /// stream (bindings that do not split) run its main version and say so.
    @Test func theRegistryKeepsAndAuditsASplit() throws {
        let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-route-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: home.url) }
        let registry = try ModelRegistry(home: home)
        try registerCreditVersions(registry)
        for (words, message) in [
            (["1=90", "2=20"], "the weights add up to 110, not 100 (1=90 2=20)"),
            (["1=90", "1=10"], "version 1 is listed twice"),
            (["1=ninety"], "\"1=ninety\": expected VERSION=PERCENT, as in 1=90 2=10"),
            (["1=101", "2=-1"], "v1=101: a weight is a percent, 0 to 100"),
        ] {
            #expect(throws: RegistryError(message, status: 400)) { _ = try AliasRoute(words: words, key: nil) }
        }
        #expect(throws: RegistryError("v2 takes live traffic; a shadow version answers nobody", status: 400)) {
            _ = try AliasRoute(words: ["1=50", "2=50"], key: nil, shadow: .init(version: 2))
        }
        let shadowed = try AliasRoute(json: try JSONValue.parse(#"{"split": [{"version": 1, "weight": 100}], "shadow": {"version": 2, "sample": 10}}"#))
        #expect(shadowed.description == "v1 100%, shadow v2 (10% of rows)" && !shadowed.isSingle)
        #expect(try AliasRoute(json: shadowed.json) == shadowed)
        #expect(throws: RegistryError.self) {
            try registry.setRoute(model: "credit", alias: "production", route: AliasRoute(words: ["1=90", "3=10"], key: nil), who: "t")
        }
        let events = EventLog()
        let batchLike = try ModelBinding<Int>(registry: registry, reference: "credit@production", events: events,
                                              wording: .init(running: "scoring with", effect: ""), make: { v, _ in v.version })
        #expect(try registry.setRoute(model: "credit", alias: "production", route: AliasRoute(words: ["1=30", "2=70"], key: nil), who: "ops") == 1)
        #expect(try registry.resolve("credit@production").version == 2, "the alias points at the largest weight")
        #expect(try registry.resolveRoute("credit").route?.words == "1=30 2=70", "a bare name follows production's split")
        let audit = try registry.audit(model: "credit").last
        #expect(audit?.action == "route" && audit?.fromVersion == 1 && audit?.toVersion == 2 && audit?.detail == "v1 30% · v2 70%")
        batchLike.follow()
        var status = ComponentStatus(kind: "batch")
        batchLike.describe(&status)
        #expect(status.model?.version == 2 && status.route?.words == "1=30 2=70" && batchLike.split == nil)
        #expect(events.after(0).contains { $0.message.contains("this component runs its main version credit@2") })

        // A promote ends the split; so does 1=100.
        try registry.promote(model: "credit", version: 1, alias: "production", who: "ops")
        #expect(try registry.resolveRoute("credit@production").route == nil)
        try registry.setRoute(model: "credit", alias: "production", route: AliasRoute(words: ["1=0", "2=100"], key: nil), who: "ops")
        #expect(try registry.resolveRoute("credit@production").route?.main == 2)
        try registry.setRoute(model: "credit", alias: "production", route: AliasRoute(words: ["2=100"], key: nil), who: "ops")
        #expect(try registry.resolveRoute("credit@production").route == nil)
        #expect(try registry.audit(model: "credit").last?.detail == "split ended: v2 100%")
    }
}
