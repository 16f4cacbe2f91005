// libFuzzer target: the scoring protocols' request decoding (Open Inference Protocol,
// Azure ML /score, MLflow /invocations) through the serve component's control API.
import Foundation
import Components
import HTTP
import Registry
import Scoring
import Telemetry

/// A serve component over a scratch registry with `file`'s model as `name` (run from the repository's root).
func serving(_ file: String, as name: String) -> ControlAPI {
    let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-fuzz-\(getpid())-\(name)"))
    do {
        let registry = try ModelRegistry(home: home)
        var document = try ModelDocument.decode(try Data(contentsOf: URL(fileURLWithPath: file)))
        document.metadata.name = name
        try registry.register(document, who: "fuzz")
        try registry.promote(model: name, version: 1, alias: "production", who: "fuzz")
        let authenticator = Authenticator(store: nil, loops: 1)
        let events = EventLog()
        let component = try ServeComponent(registry: registry, reference: "\(name)@production", loops: 1, open: true, events: events,
                                           authenticator: authenticator, maxRows: 1000)
        return ControlAPI(component: component, id: "fuzz", authenticator: authenticator, events: events)
    } catch {
        fatalError("cannot set up the serve component: \(error) (run from the repository's root)")
    }
}

/// The scikit-learn credit classifier, and a ridge regression (its answers are values).
let credit = serving("fixtures/sklearn-credit-model.json", as: "credit")
let pricing = serving("fixtures/sklearn-rate-ridge-model.json", as: "pricing")

func paths(_ model: String) -> [String] {
    ["/v2/models/\(model)/infer", "/score", "/invocations", "/v2/models/\(model)/versions/1/infer", "/v1/model"]
}

/// The first byte picks the route (and 0x80 CSV for /invocations, 0x20 the regression model); with
/// 0x40 on an infer route the next two bytes (little-endian) are the Inference-Header-Content-Length
/// of a binary-tensor request. The rest is the body. Any body gets an answer below 500.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let regression = data[0] & 0x20 != 0
    let routes = paths(regression ? "pricing" : "credit")
    let path = routes[Int(data[0] & 0x1F) % routes.count]
    var headers = HTTPHeaders()
    headers.add("Content-Type", data[0] & 0x80 != 0 && path == "/invocations" ? "text/csv" : "application/json")
    var start = 1
    if data[0] & 0x40 != 0, path.hasSuffix("/infer"), size >= 3 {
        headers.add("Inference-Header-Content-Length", String(Int(data[1]) | Int(data[2]) << 8))
        start = 3
    }
    let request = HTTPRequest(method: "POST", target: path, minorVersion: 1, headers: headers,
                              body: Array(UnsafeBufferPointer(start: data + start, count: size - start)), keepAlive: true)
    let response = (regression ? pricing : credit).handle(request, HTTPServer.Context(loop: 0, receivedNanoseconds: 0))
    if response.status >= 500 && path != "/v1/model" { fatalError("\(path) answered \(response.status): \(String(decoding: response.body, as: UTF8.self))") }
    return 0
}
