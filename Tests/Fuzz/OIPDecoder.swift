// libFuzzer target: the scoring protocols' request decoding (Open Inference Protocol,
// Azure ML /score, MLflow /invocations) through the serve component's control API.
import Foundation
import Components
import HTTP
import Registry
import Scoring
import Telemetry

/// A serve component over a scratch registry with the credit model (run from the repository's root).
let serve: ControlAPI = {
    let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-fuzz-\(getpid())"))
    do {
        let registry = try ModelRegistry(home: home)
        var document = try ModelDocument.decode(try Data(contentsOf: URL(fileURLWithPath: "fixtures/sklearn-credit-model.json")))
        document.metadata.name = "credit"
        try registry.register(document, who: "fuzz")
        try registry.promote(model: "credit", version: 1, alias: "production", who: "fuzz")
        let authenticator = Authenticator(store: nil, loops: 1)
        let events = EventLog()
        let component = try ServeComponent(registry: registry, reference: "credit@production", loops: 1, open: true, events: events,
                                           authenticator: authenticator, maxRows: 1000)
        return ControlAPI(component: component, id: "fuzz", authenticator: authenticator, events: events)
    } catch {
        fatalError("cannot set up the serve component: \(error) (run from the repository's root)")
    }
}()

let paths = ["/v2/models/credit/infer", "/score", "/invocations", "/v2/models/credit/versions/1/infer", "/v1/model"]

/// The first byte picks the route (and 0x80 CSV for /invocations); with 0x40 on an infer route the
/// next two bytes (little-endian) are the Inference-Header-Content-Length of a binary-tensor
/// request. The rest is the body. Any body gets an answer below 500.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let path = paths[Int(data[0]) % paths.count]
    var headers = HTTPHeaders()
    headers.add("Content-Type", data[0] & 0x80 != 0 && path == "/invocations" ? "text/csv" : "application/json")
    var start = 1
    if data[0] & 0x40 != 0, path.hasSuffix("/infer"), size >= 3 {
        headers.add("Inference-Header-Content-Length", String(Int(data[1]) | Int(data[2]) << 8))
        start = 3
    }
    let request = HTTPRequest(method: "POST", target: path, minorVersion: 1, headers: headers,
                              body: Array(UnsafeBufferPointer(start: data + start, count: size - start)), keepAlive: true)
    let response = serve.handle(request, HTTPServer.Context(loop: 0, receivedNanoseconds: 0))
    if response.status >= 500 && path != "/v1/model" { fatalError("\(path) answered \(response.status): \(String(decoding: response.body, as: UTF8.self))") }
    return 0
}
