import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// Who made a request: a key (its id and scope), or nobody.
package struct Principal: Sendable {
    package var keyID: String?
    package var scope: Scope?

    package static let anonymous = Principal(keyID: nil, scope: nil)
    /// For the audit trail: the key id, or "anonymous".
    package var name: String { keyID.map { "key:\($0)" } ?? "anonymous" }
}

/// What each component (serve, batch, stream) adds to the shared control API.
package protocol Component: AnyObject, Sendable {
    var kind: String { get }
    /// Fills in its part of /v1/status: `model`, `following`, `state`, `counters` and its kind's own part.
    func describe(_ status: inout ComponentStatus)
    /// The version it runs (`NAME@N`), for its fleet record; nil when it runs none.
    var runningModel: String? { get }
    /// Whether /readyz answers 200.
    var isReady: Bool { get }
    /// Fields of a per-second sample for /v1/timeseries.
    func sample(interval: Double) -> [String: Double]
    var sampleFields: [String] { get }
    /// Component metrics for /metrics.
    func metrics(_ text: inout PrometheusText)
    /// POST /v1/model, decoded.
    func swapModel(_ request: SwapRequest, by principal: Principal) -> HTTPResponse
    /// Every other route; nil means 404.
    func route(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse?
    /// Called once a second off the request path (alias polling and the like).
    func tick()
    /// What the component depends on (a stream's source and sink), for status and /metrics.
    var dependencies: [DependencyHealth] { get }
}

extension Component {
    package var dependencies: [DependencyHealth] { [] }
    package var runningModel: String? { nil }
}

/// A request's context inside a component.
package struct RequestContext: Sendable {
    package var loop: Int
    package var receivedNanoseconds: UInt64
    package var requestID: String
    package var principal: Principal
    /// The component is draining (shutting down): readiness answers 503.
    package var draining = false
}

/// Checks `Authorization: Bearer KEY` against the active keys, kept in memory
/// and refreshed from the registry every couple of seconds.
package final class Authenticator: Sendable {
    private let keys: Published<[String: KeyEntry]>
    private let store: (any KeySource)?
    /// Per event loop: keys already hashed and found, by their bytes, so a client sending the same
    /// key on every request costs a byte comparison, not a SHA-256 (valid while the table's
    /// generation stands; unknown keys are never kept, so a flood of made-up keys fills nothing).
    private let recent: LoopLocal<RecentKeys>

    package struct KeyEntry: Sendable {
        var id: String
        var scope: Scope
    }

    struct RecentKeys {
        static let capacity = 16
        var generation = -1
        var keys: [[UInt8]] = []
        var entries: [KeyEntry] = []
    }

    package init(store: (any KeySource)?, loops: Int) {
        self.store = store
        keys = Published([:], loops: loops)
        recent = LoopLocal(loops: loops) { RecentKeys() }
        refresh()
    }

    /// Reloads the key table; a failed read keeps the previous one.
    package func refresh() {
        guard let store, let active = try? store.activeKeys() else { return }
        keys.publish(active.mapValues { KeyEntry(id: $0.id, scope: $0.scope) })
    }

    package var hasKeys: Bool { !keys.current.isEmpty }

    private enum Presented {
        case none, malformed, unknown
        case key(KeyEntry)
    }

    /// The key an `Authorization: Bearer KEY` header presents, read from its bytes: the scheme in
    /// any case, then spaces, the key, and spaces or tabs around it ignored.
    private func presented(_ request: HTTPRequest, loop: Int) -> Presented {
        request.headers.withValue(.authorization) { value -> Presented in
            var start = 0, end = value.count
            while start < end && (value[start] == 0x20 || value[start] == 0x09) { start += 1 }
            while end > start && (value[end - 1] == 0x20 || value[end - 1] == 0x09) { end -= 1 }
            let scheme: StaticString = "bearer"
            let count = scheme.utf8CodeUnitCount
            guard end - start > count + 1, (0..<count).allSatisfy({ value[start + $0] | 0x20 == scheme.utf8Start[$0] }),
                  value[start + count] == 0x20 else { return .malformed }
            start += count
            while start < end && value[start] == 0x20 { start += 1 }
            let key = UnsafeBufferPointer(rebasing: value[start..<end])
            return recent.with(loop: loop) { cache -> Presented in
                let generation = keys.generationNow
                if cache.generation != generation {
                    cache = RecentKeys()
                    cache.generation = generation
                }
                if let i = cache.keys.firstIndex(where: { $0.elementsEqual(key) }) { return .key(cache.entries[i]) }
                guard let entry = keys.read(loop: loop)[SHA256.hex(Array(key))] else { return .unknown }
                if cache.keys.count == RecentKeys.capacity {
                    cache.keys.removeFirst()
                    cache.entries.removeFirst()
                }
                cache.keys.append(Array(key))
                cache.entries.append(entry)
                return .key(entry)
            }
        } ?? .none
    }

    /// The principal, or the 401/403 response when `needed` is not met.
    package func authorize(_ request: HTTPRequest, loop: Int, needed: Scope?) -> Result<Principal, HTTPError> {
        var principal = Principal.anonymous
        switch presented(request, loop: loop) {
        case .none: break
        case .malformed: return .failure(HTTPError(401, "the Authorization header must be 'Bearer KEY'"))
        case .unknown: return .failure(HTTPError(401, "unknown or revoked API key"))
        case .key(let entry): principal = Principal(keyID: entry.id, scope: entry.scope)
        }
        guard let needed else { return .success(principal) }
        guard let scope = principal.scope else {
            return .failure(HTTPError(401, "this needs an API key with scope '\(needed.rawValue)': send 'Authorization: Bearer KEY' (create one with 'switchyard keys create --scope \(needed.rawValue)')"))
        }
        guard scope >= needed else {
            return .failure(HTTPError(403, "key \(principal.keyID ?? "") has scope '\(scope.rawValue)'; this needs '\(needed.rawValue)'"))
        }
        return .success(principal)
    }
}

/// The control API every component speaks (shared/DESIGN.md): health,
/// status, time series, events, metrics and model swaps, with scopes, plus
/// `x-request-id` on every response. Everything else goes to the component.
package final class ControlAPI: Sendable {
    package let component: any Component
    package let id: String
    package let startedAt: String
    package let events: EventLog
    package let series: TimeSeries
    package let authenticator: Authenticator
    private let url = Mutex<String>("")
    /// The server's connection figures for status, set by the host each second.
    private let http = Mutex<(connections: Int, limit: Int, acceptPauses: Int)?>(nil)
    private let requestCounter = Atomic<UInt64>(0)
    private let requestPrefix: String
    private let drainingFlag = Atomic<Bool>(false)

    /// Dependencies besides the component's own (the registry service, for a component using one).
    package let extraDependencies: [DependencyHealth]

    package init(component: any Component, id: String, authenticator: Authenticator, events: EventLog, dependencies: [DependencyHealth] = []) {
        self.component = component
        extraDependencies = dependencies
        self.id = id
        self.authenticator = authenticator
        self.events = events
        series = TimeSeries(fields: component.sampleFields)
        startedAt = isoTimestamp(Date())
        requestPrefix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    package func setURL(_ value: String) { url.withLock { $0 = value } }
    package func record(_ server: HTTPServer) {
        http.withLock { $0 = (server.connections, server.maxConnections, server.acceptPauseCount) }
    }
    package var baseURL: String { url.withLock { $0 } }

    /// Readiness answers 503 from now on (load balancers take the component out of rotation), and status says `draining`.
    package func beginDrain(_ why: String) {
        guard !drainingFlag.exchange(true, ordering: .relaxed) else { return }
        events.append("drain", why)
    }

    package var isDraining: Bool { drainingFlag.load(ordering: .relaxed) }

    /// The server's handler.
    package func handle(_ request: HTTPRequest, _ context: HTTPServer.Context) -> HTTPResponse {
        let requestID = request.headers[.requestID].flatMap { $0.isEmpty || $0.utf8.count > 200 ? nil : $0 }
            ?? newRequestID()
        var ctx = RequestContext(
            loop: context.loop, receivedNanoseconds: context.receivedNanoseconds, requestID: requestID, principal: .anonymous,
            draining: drainingFlag.load(ordering: .relaxed))
        var response = route(request, &ctx)
        response.headers.add("x-request-id", requestID)
        return response
    }

    /// `PREFIX-N`: this process's random prefix and a counter, both in hex, written straight into one
    /// string of exactly its length, so that up to 15 bytes (the first 16 million ids) it is a small
    /// string, stored inline without an allocation.
    private func newRequestID() -> String {
        let n = requestCounter.wrappingAdd(1, ordering: .relaxed).newValue
        var digits = 1
        while digits < 16 && n >> (4 * UInt64(digits)) != 0 { digits += 1 }
        var prefix = requestPrefix
        return prefix.withUTF8 { p in
            String(unsafeUninitializedCapacity: p.count + 1 + digits) { out in
                _ = out.initialize(fromContentsOf: p)
                out[p.count] = UInt8(ascii: "-")
                for k in 0..<digits {
                    let nibble = UInt8(truncatingIfNeeded: n >> (4 * UInt64(digits - 1 - k))) & 0xF
                    out[p.count + 1 + k] = nibble < 10 ? nibble + 0x30 : nibble + 0x57
                }
                return p.count + 1 + digits
            }
        }
    }

    private static let paths = ["/healthz", "/readyz", "/v1/status", "/v1/timeseries", "/v1/events", "/v1/logs", "/metrics", "/v1/model"]

    private func route(_ request: HTTPRequest, _ ctx: inout RequestContext) -> HTTPResponse {
        let path = request.path
        // Most requests are the component's: one byte-wise look decides.
        let length = path.utf8.count
        guard Self.paths.contains(where: { $0.utf8.count == length && path.utf8.elementsEqual($0.utf8) }) else {
            return component.route(request, ctx) ?? .error(404, "no route for \(request.method) \(path)")
        }
        var response = controlRoute(request, path: path, &ctx)
        response.observed = false  // the control API is not the component's traffic
        return response
    }

    private func controlRoute(_ request: HTTPRequest, path: Substring, _ ctx: inout RequestContext) -> HTTPResponse {
        func needs(_ scope: Scope?) -> HTTPResponse? {
            switch authenticator.authorize(request, loop: ctx.loop, needed: scope) {
            case .success(let principal):
                ctx.principal = principal
                return nil
            case .failure(let error):
                return error.response
            }
        }
        switch (request.method, path) {
        case ("GET", "/healthz"), ("HEAD", "/healthz"):
            return json(200, .object(JSONObject(["status": .string("ok")])))
        case ("GET", "/readyz"), ("HEAD", "/readyz"):
            if ctx.draining { return .error(503, "not ready: draining (shutting down)") }
            return component.isReady
                ? json(200, .object(JSONObject(["status": .string("ready")])))
                : .error(503, "not ready: no model loaded yet")
        case ("GET", "/v1/status"):
            if let denied = needs(.read) { return denied }
            return json(200, status().json)
        case ("GET", "/v1/timeseries"):
            if let denied = needs(.read) { return denied }
            let window = Int(request.query["window"] ?? "600") ?? 600
            return json(200, timeseries(window: min(max(window, 1), 3600)).json)
        case ("GET", "/v1/events"):
            if let denied = needs(.read) { return denied }
            let after = Int(request.query["after"] ?? "0") ?? 0
            let list = events.after(after).map { ComponentEvent(id: $0.id, at: $0.at, kind: $0.kind, message: $0.message).json }
            return json(200, .object(JSONObject(["events": .array(list)])))
        case ("GET", "/v1/logs"):
            if let denied = needs(.operate) { return denied }  // what a process logs can name hosts, files and keys' ids
            let limit = min(max(Int(request.query["tail"] ?? "200") ?? 200, 1), LogBook.capacity)
            let lines: [LogBook.Line]
            if let text = request.query["after"] {
                guard let after = Int(text), after >= 0 else { return .error(400, "after: expected the number of the last line seen (a whole number from 0)") }
                lines = LogBook.process.after(after, limit: LogBook.capacity)
            } else {
                lines = LogBook.process.tail(limit)
            }
            let next = lines.last?.seq ?? LogBook.process.newest  // below a client's `after`: a new process
            return json(200, LogPage(lines: lines.map { LogLine(seq: $0.seq, at: $0.at, text: $0.text) }, next: next).json)
        case ("GET", "/metrics"):
            if let denied = needs(.read) { return denied }
            var text = PrometheusText()
            component.metrics(&text)
            let dependencies = component.dependencies + extraDependencies
            if !dependencies.isEmpty {
                DependencyHealth.describeMetrics(&text)
                for d in dependencies { d.metrics(&text) }
            }
            return HTTPResponse(status: 200, contentType: PrometheusText.contentType, body: text.text)
        case ("POST", "/v1/model"):
            if let denied = needs(.admin) { return denied }
            if let wrongType = requireJSON(request) { return wrongType }
            switch SwapRequest.decode(request.body) {
            case .success(let swap):
                // Loading and warming a version takes as long as the model is big: off the event
                // loop, which keeps serving with the old version; the answer goes out when the swap
                // is done (swaps still happen one at a time, in ModelBinding).
                let promise = HTTPPromise()
                let (component, principal) = (self.component, ctx.principal)
                DispatchQueue.global().async {
                    var response = component.swapModel(swap, by: principal)
                    response.observed = false
                    promise.fulfil(response)
                }
                return .later(promise)
            case .failure(let error):
                return error.response
            }
        default:
            return .error(405, "\(request.method) is not allowed on \(path)")
        }
    }

    /// The answer to /v1/status.
    package func status() -> ComponentStatus {
        var status = ComponentStatus(kind: component.kind, id: id, url: baseURL, version: switchyardVersion, pid: Int(getpid()), startedAt: startedAt)
        component.describe(&status)
        if isDraining { status.state = "draining" }
        status.dependencies = (component.dependencies + extraDependencies).map { $0.status() }
        if let http = http.withLock({ $0 }) {
            status.http = ComponentStatus.ConnectionFigures(connections: http.connections, maxConnections: http.limit, acceptPauses: http.acceptPauses)
        }
        return status
    }

    private func timeseries(window: Int) -> SeriesWindow {
        let samples = series.window(window)
        var columns: [String: [Double]] = [:]
        for field in series.fields { columns[field] = samples.map { $0.values[field] ?? 0 } }
        return SeriesWindow(fields: series.fields, times: samples.map(\.time), columns: columns)
    }

    /// Takes this second's sample; called by the component host.
    package func takeSample(interval: Double) {
        series.append(.init(time: Date().timeIntervalSince1970, values: component.sample(interval: interval)))
    }
}

/// The switchyard release, reported in /v1/status.
package let switchyardVersion = "0.1.0"

/// A JSON response.
package func json(_ status: Int, _ value: JSONValue, headers: [(String, String)] = []) -> HTTPResponse {
    var writer = JSONWriter()
    writer.value(value)
    var h = HTTPHeaders()
    h.add("Content-Type", "application/json")
    for (name, v) in headers { h.add(name, v) }
    return HTTPResponse(status: status, headers: h, body: writer.bytes)
}

/// 415 unless the request says it is JSON (a missing Content-Type is taken as JSON).
package func requireJSON(_ request: HTTPRequest) -> HTTPResponse? {
    if request.headers.value(.contentType, hasPrefix: "application/json") { return nil }  // the common case, without allocating
    guard let type = request.headers[.contentType] else { return nil }
    let base = type.lowercased().split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    if base == "application/json" || base.hasSuffix("+json") { return nil }
    return .error(415, "Content-Type \(base) is not accepted here; send Content-Type: application/json")
}
