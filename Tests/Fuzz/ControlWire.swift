// libFuzzer target: the control protocol's readers (what the console and the command line
// decode from components and the registry service, which may be anything at that address).
import ControlProtocol
import Foundation
import JSON

/// Every wire type reads any JSON without trapping, and what it reads writes back to JSON that
/// reads back the same.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let value = try? JSONValue.parse(Array(UnsafeBufferPointer(start: data, count: size))) else { return 0 }
    func again(_ v: JSONValue) -> JSONValue { (try? JSONValue.parse(Array(JSONWriter.text(v).utf8))) ?? .null }
    if let status = ComponentStatus(json: value), ComponentStatus(json: again(status.json)) != status { fatalError("ComponentStatus does not read back") }
    if let run = RunSummary(json: value), RunSummary(json: again(run.json)) != run { fatalError("RunSummary does not read back") }
    if let page = RunPage(json: value), RunPage(json: again(page.json)) != page { fatalError("RunPage does not read back") }
    if let event = ComponentEvent(json: value), ComponentEvent(json: again(event.json)) != event { fatalError("ComponentEvent does not read back") }
    if let series = SeriesWindow(json: value), SeriesWindow(json: again(series.json)) != series { fatalError("SeriesWindow does not read back") }
    if let swap = SwapResult(json: value), SwapResult(json: again(swap.json)) != swap { fatalError("SwapResult does not read back") }
    if let page = DeadLetterPage(json: value), DeadLetterPage(json: again(page.json)) != page { fatalError("DeadLetterPage does not read back") }
    if let page = LogPage(json: value), LogPage(json: again(page.json)) != page { fatalError("LogPage does not read back") }
    if let route = try? AliasRoute(json: value), (try? AliasRoute(json: again(route.json))) != route { fatalError("AliasRoute does not read back") }
    if let report = ShadowReport(json: value), ShadowReport(json: again(report.json)) != report { fatalError("ShadowReport does not read back") }
    if let drift = DriftStatus(json: value), DriftStatus(json: again(drift.json)) != drift { fatalError("DriftStatus does not read back") }
    _ = PauseResult(json: value)
    _ = SwapRequest.decode(Array(UnsafeBufferPointer(start: data, count: size)))
    _ = ModelVersion(json: value)
    _ = AuditEntry(json: value)
    _ = FleetMember(json: value)
    _ = APIKey(json: value)
    _ = decodeKeyTable(value)
    return 0
}
