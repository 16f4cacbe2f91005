import CSystem
import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// The model a serve component answers with: immutable, shared by every loop.
/// A request takes one snapshot and finishes on it, whatever swaps meanwhile.
package final class ModelSnapshot: Sendable {
    package let scorer: Scorer
    package let version: ModelRegistry.Version
    /// Requests answered with this version, per loop and status (single-writer counters).
    package let counters: StatusCounters
    /// A valid record for warm-up and examples.
    package let example: JSONValue
    /// The version number as text, for every response's `x-model-version`.
    package let versionText: String
    /// `,"model":"NAME@N","sha256":"…"`: the same in every prediction-log line of this version.
    let logIdentity: [UInt8]
    /// Latency of the requests this version answered, per loop.
    let latency: [LatencyHistogram]
    /// Its inputs' drift, once its baseline is known (looked for at load and every 10 s after).
    let drift: Published<DriftMonitor?>
    let baseline = BaselineSearch()
    /// The totals at the last sample, and that interval's figures.
    private let window = Mutex<(histogram: HistogramSnapshot, requests: UInt64, errors: UInt64, recent: (rps: Double, eps: Double, p50: Double, p99: Double))>(
        (HistogramSnapshot(), 0, 0, (0, 0, 0, 0)))

    init(scorer: Scorer, version: ModelRegistry.Version, loops: Int) {
        self.scorer = scorer
        self.version = version
        latency = (0..<loops).map { _ in LatencyHistogram() }
        drift = Published(nil, loops: loops)
        counters = StatusCounters(loops: loops)
        example = scorer.document.exampleRecord()
        versionText = String(version.version)
        logIdentity = PredictionLog.identity(version)
    }

    var label: String { version.reference }

    /// Closes a sampling interval: its request and error rates and latency quantiles.
    func sampleWindow(interval: Double) {
        let merged = latency.reduce(HistogramSnapshot()) { $0 + $1.snapshot() }
        let requests = counters.total, errors = counters.errors
        window.withLock { w in
            let delta = merged - w.histogram
            func ms(_ q: Double) -> Double { delta.quantile(q).map { Double($0) / 1e6 } ?? 0 }
            w.recent = (Double(requests &- w.requests) / interval, Double(errors &- w.errors) / interval, ms(0.5), ms(0.99))
            (w.histogram, w.requests, w.errors) = (merged, requests, errors)
        }
    }

    func traffic(weight: Int?) -> VersionTraffic {
        let recent = window.withLock { $0.recent }
        return VersionTraffic(version: version.version, weight: weight, requests: Double(counters.total), errors: Double(counters.errors),
                              requestsPerSecond: recent.rps, errorsPerSecond: recent.eps, p50Ms: recent.p50, p99Ms: recent.p99)
    }
}

/// What a serve component answers with: the model's main version and, when its alias splits
/// traffic, every version of the split with where each one's share ends. Immutable, shared by
/// every loop; a request picks its version once and finishes on it.
package final class ServeModels: Sendable {
    package let main: ModelSnapshot
    /// The split's versions in the route's order; empty when the alias does not split.
    package let arms: [ModelSnapshot]
    package let route: AliasRoute?
    private let bounds: [UInt64]
    /// Whether requests are divided (two versions or more).
    let splits: Bool
    /// The version scoring a copy of the live rows, the percent of rows it gets, and where they are compared.
    let shadow: (snapshot: ModelSnapshot, sample: Double, comparison: ShadowComparison)?

    init(main: ModelSnapshot, split: ModelBinding<ModelSnapshot>.Split?, comparison: ShadowComparison?) {
        self.main = main
        arms = split?.arms.map(\.loaded) ?? []
        route = split?.route
        bounds = split?.route.bounds ?? []
        splits = arms.count > 1
        if let snapshot = split?.shadow?.loaded, let sample = split?.route.shadow?.sample, let comparison {
            shadow = (snapshot, sample, comparison)
        } else {
            shadow = nil
        }
    }

    /// The main version (what status calls the model).
    package var version: ModelRegistry.Version { main.version }

    /// The version a point on the routing circle falls to.
    @inline(__always)
    func pick(_ point: UInt64) -> ModelSnapshot { arms[AliasRoute.arm(at: point, bounds: bounds)] }

    /// The version of the split an OIP path names (`/v2/models/NAME/versions/N/…`), if it is one.
    func arm(named path: Substring) -> ModelSnapshot? {
        guard path.utf8.starts(with: "/v2/models/".utf8), let range = path.range(of: "/versions/") else { return nil }
        let number = path[range.upperBound...].prefix { $0 != "/" }
        return arms.first { $0.versionText == number }
    }

    /// Every version it answers with (the main one when not split), and the shadow.
    var all: [ModelSnapshot] { (arms.isEmpty ? [main] : arms) + (shadow.map { [$0.snapshot] } ?? []) }
}

/// Counters with one row per event loop: each loop adds only to its own row
/// (relaxed single-writer stores, no locked instruction); readers sum the rows.
/// Each row starts on a cache line of its own (`CacheLine`), so two loops counting at once do not
/// take the same line from each other's core.
///
/// Safety: row `loop` is written only by that loop's thread; readers use relaxed loads.
package final class LoopCounters: @unchecked Sendable {
    private let loops: Int
    let width: Int
    /// Counters from one row to the next: `width` rounded up to whole cache lines.
    private let stride: Int
    private let storage: UnsafeMutablePointer<UInt64>

    init(loops: Int, width: Int) {
        self.loops = loops
        self.width = width
        stride = CacheLine.roundUp(width * 8) / 8
        storage = UnsafeMutableRawPointer.allocate(byteCount: loops * stride * 8, alignment: CacheLine.bytes)
            .initializeMemory(as: UInt64.self, repeating: 0, count: loops * stride)
    }

    deinit { UnsafeMutableRawPointer(storage).deallocate() }

    /// Adds `value` (wrapping, so `UInt64.max` subtracts one).
    @inline(__always)
    func add(loop: Int, column: Int = 0, _ value: UInt64 = 1) {
        csystem_counter_add(storage + loop * stride + column, value)
    }

    /// This loop's count before adding one: a per-loop sequence number.
    @inline(__always)
    func next(loop: Int) -> UInt64 {
        let slot = storage + loop * stride
        let value = csystem_counter_load(slot)
        csystem_counter_add(slot, 1)
        return value
    }

    func sum(column: Int = 0) -> UInt64 {
        var total: UInt64 = 0
        for loop in 0..<loops { total &+= csystem_counter_load(storage + loop * stride + column) }
        return total
    }
}

/// Responses by status code, per loop.
package final class StatusCounters: Sendable {
    static let statuses = [200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 500, 501, 503, 505]
    private let counters: LoopCounters

    init(loops: Int) { counters = LoopCounters(loops: loops, width: Self.statuses.count + 1) }

    @inline(__always)
    func record(loop: Int, status: Int) {
        counters.add(loop: loop, column: Self.statuses.firstIndex(of: status) ?? Self.statuses.count)
    }

    /// Totals by status (codes outside the list under 0), nonzero ones only.
    func totals() -> [(status: Int, count: UInt64)] {
        (0..<counters.width).compactMap { column in
            let sum = counters.sum(column: column)
            return sum == 0 ? nil : (column < Self.statuses.count ? Self.statuses[column] : 0, sum)
        }
    }

    var total: UInt64 { totals().reduce(0) { $0 + $1.count } }
    var errors: UInt64 { totals().filter { $0.status >= 500 || $0.status == 0 }.reduce(0) { $0 + $1.count } }
    var clientErrors: UInt64 { totals().filter { $0.status >= 400 && $0.status < 500 }.reduce(0) { $0 + $1.count } }
}

/// The web scoring service: Open Inference Protocol v2, Azure ML and MLflow
/// endpoints over one model, hot swaps, and serve telemetry.
package final class ServeComponent: Component {
    package let kind = "serve"
    package let model: Published<ServeModels?>
    let events: EventLog
    let authenticator: Authenticator
    let loops: Int
    /// Scoring without a key (loopback only).
    let open: Bool
    /// The most rows one request may score (413 beyond), checked before anything is sized by a client's count.
    let maxRows: Int
    package static let defaultMaxRows = 10_000
    /// What it runs and follows; each version it loads is published to the loops.
    private let binding: ModelBinding<ModelSnapshot>
    /// Where versions and their drift baselines come from.
    private let registry: any ModelSource
    /// The versions served lately, for their per-version metrics.
    private let history: ServedVersions
    /// Latency and status of every response, per loop.
    let latency: [LatencyHistogram]
    let responses: StatusCounters
    private let inFlight: LoopCounters
    /// Each loop's count of split requests without a routing key (their place in the sequence).
    private let unkeyed: LoopCounters
    /// The version that answered each loop's latest request, until the server observes its latency.
    private let answered: LoopLocal<ModelSnapshot?>
    /// The shadow of each loop's request in progress, for the protocols to copy rows to.
    let shadowing: LoopLocal<(live: ModelSnapshot, snapshot: ModelSnapshot, sample: Double, comparison: ShadowComparison)?>
    /// The shadow comparison, once a route named a shadow.
    package let shadows: ShadowHolder
    /// Each loop's reusable infer buffers.
    let inferScratch: LoopLocal<InferScratch>
    private let sampling = Mutex<(histogram: HistogramSnapshot, requests: UInt64, errors: UInt64, clientErrors: UInt64)>(
        (HistogramSnapshot(), 0, 0, 0))
    /// Set by the host so status can report open connections.
    package let connections = Atomic<Int>(0)
    /// What it answered, for support staff (`--log-predictions`); nil when off.
    package let predictionLog: PredictionLog?

    /// Loads the model `reference` names (`NAME@ALIAS` is followed; `NAME@VERSION` is pinned).
    package init(
        registry: any ModelSource, reference: String, loops: Int, open: Bool, events: EventLog, authenticator: Authenticator,
        maxRows: Int = ServeComponent.defaultMaxRows, predictionLog: PredictionLog? = nil
    ) throws {
        self.maxRows = max(1, maxRows)
        self.registry = registry
        self.predictionLog = predictionLog
        self.authenticator = authenticator
        self.loops = loops
        self.open = open
        self.events = events
        model = Published(nil, loops: loops)
        latency = (0..<loops).map { _ in LatencyHistogram() }
        responses = StatusCounters(loops: loops)
        inFlight = LoopCounters(loops: loops, width: 1)
        unkeyed = LoopCounters(loops: loops, width: 1)
        answered = LoopLocal(loops: loops) { nil }
        shadowing = LoopLocal(loops: loops) { nil }
        inferScratch = LoopLocal(loops: loops) { InferScratch() }
        let (published, history, shadows) = (model, ServedVersions(), ShadowHolder())
        self.shadows = shadows
        self.history = history
        binding = try ModelBinding(
            registry: registry, reference: reference, events: events, wording: .init(running: "serving", effect: ""), splits: true,
            make: { version, document in try ServeComponent.prepare(version, document, loops: loops) },
            activate: { current, split in
                // One comparison for the component's life, made when a route first names a shadow.
                let comparison = split?.shadow == nil ? nil : shadows.get(loops: loops)
                let models = ServeModels(main: current.loaded, split: split, comparison: comparison)
                for snapshot in models.all { history.append(snapshot) }
                published.publish(models)
            })
    }

    package var isReady: Bool { model.current != nil }

    // MARK: - Loading and swapping

    /// Compiles and warms a version. Throws with the reason it cannot serve.
    private static func prepare(_ version: ModelVersion, _ document: ModelDocument, loops: Int) throws -> ModelSnapshot {
        let scorer: Scorer
        do { scorer = try Scorer(document) } catch { throw HTTPError(422, "\(version.reference): \(error)") }
        let snapshot = ModelSnapshot(scorer: scorer, version: version, loops: loops)
        // Warm up: the first predictions pay for page faults and lazy initialization.
        for _ in 0..<200 {
            do { _ = try scorer.predict(json: snapshot.example) } catch {
                throw HTTPError(422, "\(version.reference) cannot score its own example record: \(error)")
            }
        }
        return snapshot
    }

    package func swapModel(_ request: SwapRequest, by principal: Principal) -> HTTPResponse {
        binding.swap(request, by: principal)
    }

    /// Follows the alias: a move in the registry is picked up within a second. Looks for the drift
    /// baseline of each version it runs that has none yet (every 10 s).
    package func tick() {
        binding.follow()
        for snapshot in model.current?.all ?? [] where snapshot.drift.current == nil {
            if let monitor = snapshot.baseline.refresh(snapshot.version, registry: registry, loops: loops, events: events) { snapshot.drift.publish(monitor) }
        }
    }

    /// Drift per version it runs (the main first): PSI per field, or why there is none.
    package func driftStatus() -> [DriftStatus] {
        (model.current?.all ?? []).map { $0.drift.current?.report() ?? DriftMonitor.missing($0.version) }
    }

    // MARK: - Telemetry

    /// Records a response; called by the HTTP server on the loop's thread.
    package func observe(loop: Int, status: Int, nanoseconds: UInt64) {
        latency[loop].record(nanoseconds)
        responses.record(loop: loop, status: status)
        answered.with(loop: loop) { snapshot in
            snapshot?.latency[loop].record(nanoseconds)
            snapshot = nil
        }
    }

    /// The latency histograms' bucket bounds in `/metrics`, in seconds.
    static let latencyBounds = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

    package let sampleFields = ["requests", "errors", "client_errors", "p50_ms", "p95_ms", "p99_ms", "in_flight", "connections"]

    package func sample(interval: Double) -> [String: Double] {
        let merged = latency.reduce(HistogramSnapshot()) { $0 + $1.snapshot() }
        let requests = responses.total, errors = responses.errors, clientErrors = responses.clientErrors
        let previous = sampling.withLock { state in
            defer { state = (merged, requests, errors, clientErrors) }
            return state
        }
        let delta = merged - previous.histogram
        func ms(_ q: Double) -> Double { delta.quantile(q).map { Double($0) / 1e6 } ?? 0 }
        let busy = inFlight.sum()
        for snapshot in model.current?.all ?? [] {
            snapshot.sampleWindow(interval: interval)
            snapshot.drift.current?.sample()
        }
        return [
            "requests": Double(requests - previous.requests) / interval,
            "errors": Double(errors - previous.errors) / interval,
            "client_errors": Double(clientErrors - previous.clientErrors) / interval,
            "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99),
            "in_flight": Double(busy),
            "connections": Double(connections.load(ordering: .relaxed)),
        ]
    }

    package var runningModel: String? { binding.version?.reference }

    /// The prediction log, when on: a disk that refuses its lines is an outage in status.
    package var dependencies: [DependencyHealth] { predictionLog.map { [$0.health] } ?? [] }

    package func describe(_ status: inout ComponentStatus) {
        binding.describe(&status)
        status.state = model.current == nil ? "loading" : "serving"
        status.counters = NamedNumbers([
            NamedNumber("requests", Double(responses.total)),
            NamedNumber("errors", Double(responses.errors)),
            NamedNumber("client_errors", Double(responses.clientErrors)),
            NamedNumber("swaps", Double(binding.swaps)),
            NamedNumber("failed_swaps", Double(binding.failedSwaps)),
            NamedNumber("connections", Double(connections.load(ordering: .relaxed))),
        ] + (shadows.current.map { shadow in
            let counts = shadow.counts
            return [NamedNumber("shadow_compared", Double(counts.compared)), NamedNumber("shadow_dropped", Double(counts.dropped))]
        } ?? []) + (predictionLog.map { log in
            [NamedNumber("predictions_logged", Double(log.counts.written)), NamedNumber("predictions_dropped", Double(log.counts.dropped))]
        } ?? []))
        status.drift = driftStatus()
        let models = model.current
        status.serve = ServeStatus(
            statusCodes: NamedNumbers(responses.totals().sorted { $0.0 < $1.0 }.map { NamedNumber($0.0 == 0 ? "other" : "\($0.0)", Double($0.1)) }),
            versions: models?.all.map { $0.traffic(weight: models?.route?.weight(of: $0.version.version)) } ?? [])
    }

    package func metrics(_ text: inout PrometheusText) {
        let merged = latency.reduce(HistogramSnapshot()) { $0 + $1.snapshot() }
        text.histogram(
            "switchyard_http_request_duration_seconds", help: "Time from a complete request to its response.", merged,
            bounds: Self.latencyBounds)
        text.describe("switchyard_http_responses_total", "counter", "Responses by status, including the server's own 4xx/5xx.")
        for (status, count) in responses.totals() {
            text.sample("switchyard_http_responses_total", [("status", status == 0 ? "other" : "\(status)")], Double(count))
        }
        text.describe("switchyard_http_requests_total", "counter", "Requests handled, by status and the model version that answered.")
        let served = history.byVersion()
        for (version, statuses, _) in served {
            for (status, count) in statuses {
                text.sample("switchyard_http_requests_total",
                            [("status", status == 0 ? "other" : "\(status)"), ("model", version.model), ("model_version", "\(version.version)")],
                            Double(count))
            }
        }
        for (i, (version, _, latency)) in served.enumerated() {
            text.histogram(
                "switchyard_model_request_duration_seconds", help: "Time from a complete request to its response, by the model version that answered.",
                latency, bounds: Self.latencyBounds, labels: [("model", version.model), ("model_version", "\(version.version)")], described: i == 0)
        }
        if let models = model.current, let route = models.route {
            text.describe("switchyard_route_weight_percent", "gauge", "The share of requests the followed alias's split sends to each version.")
            for arm in route.arms {
                text.sample("switchyard_route_weight_percent", [("model", models.version.model), ("model_version", "\(arm.version)")], Double(arm.weight))
            }
        }
        DriftMonitor.metrics(&text, model: model.current?.version.model ?? "", driftStatus())
        text.describe("switchyard_model_swaps_total", "counter", "Model swaps completed.")
        text.sample("switchyard_model_swaps_total", [], Double(binding.swaps))
        text.describe("switchyard_model_swap_failures_total", "counter", "Model swaps that failed (the old version kept serving).")
        text.sample("switchyard_model_swap_failures_total", [], Double(binding.failedSwaps))
        text.describe("switchyard_http_connections", "gauge", "Open connections.")
        text.sample("switchyard_http_connections", [], Double(connections.load(ordering: .relaxed)))
    }

    // MARK: - Routing

    package func route(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse? {
        if request.path.utf8.starts(with: "/v1/predictions".utf8) {
            return PredictionLog.lookup(predictionLog, request, context, authenticator: authenticator)
        }
        if request.path == "/v1/compare" { return compare(request, context) }
        if request.path == "/v1/drift" { return DriftMonitor.respond(request, context, authenticator: authenticator, driftStatus()) }
        inFlight.add(loop: context.loop)
        defer { inFlight.add(loop: context.loop, UInt64.max) }  // wraps: −1
        guard let models = model.read(loop: context.loop) else { return .error(503, "no model loaded yet") }
        // A split routes scoring requests (POST) by their key, or along the even sequence; an OIP
        // path naming one of its versions (`/v2/models/NAME/versions/N/…`) gets that version.
        let snapshot = !models.splits ? models.main
            : models.arm(named: request.path) ?? (request.method != "POST" ? models.main
                : models.pick(routingPoint(request, key: models.route?.key, loop: context.loop)
                    ?? AliasRoute.point(sequence: unkeyed.next(loop: context.loop))))
        if let shadow = models.shadow {
            shadowing.with(loop: context.loop) { $0 = (snapshot, shadow.snapshot, shadow.sample, shadow.comparison) }
        }
        defer { if models.shadow != nil { shadowing.with(loop: context.loop) { $0 = nil } } }
        var response: HTTPResponse
        if let r = routeProtocols(request, context, snapshot) {
            response = r
        } else {
            return nil
        }
        response.headers.add("x-model-version", snapshot.versionText)
        response.headers.add("x-model", snapshot.version.model)
        snapshot.counters.record(loop: context.loop, status: response.status)
        answered.with(loop: context.loop) { $0 = snapshot }
        return response
    }

    /// `GET /v1/compare` (scope read): the shadow comparison over its window (`ShadowComparison.report`).
    private func compare(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse {
        guard request.method == "GET" else { return .error(405, "\(request.method) is not allowed on \(request.path)") }
        if case .failure(let error) = authenticator.authorize(request, loop: context.loop, needed: .read) { return error.response }
        let models = model.current
        guard let comparison = shadows.current else {
            return .error(404, "no shadow has run here; name one with 'switchyard models route \(models?.version.model ?? "NAME") ALIAS 1=100 --shadow 2'")
        }
        let top = min(max(Int(request.query["top"] ?? "10") ?? 10, 0), 100)
        return json(200, comparison.report(shadow: models?.route?.shadow, model: models?.version.model ?? "", top: top).json)
    }

    /// Checks the caller may score: scope `predict`, unless the server is open.
    func authorizeScoring(_ request: HTTPRequest, _ context: RequestContext) -> HTTPResponse? {
        switch authenticator.authorize(request, loop: context.loop, needed: open ? nil : .predict) {
        case .success: return nil
        case .failure(let error): return error.response
        }
    }
}

/// Runs a registry call, turning its error into an HTTP error with the status it carries.
func registryCall<T>(_ body: () throws(RegistryError) -> T) throws -> T {
    do { return try body() } catch { throw HTTPError(error.status, error.message) }
}

/// The last 50 versions a serve component published, oldest first.
final class ServedVersions: Sendable {
    private let list = Mutex<[ModelSnapshot]>([])

    /// Keeps `snapshot` (once: a split republishes the versions it already runs).
    func append(_ snapshot: ModelSnapshot) {
        list.withLock {
            guard !$0.contains(where: { $0 === snapshot }) else { return }
            $0.append(snapshot)
            if $0.count > 50 { $0.removeFirst() }
        }
    }

    /// Per version served, oldest first, its loads added together (a version swapped away and back
    /// is loaded twice): responses by status, and latency.
    func byVersion() -> [(version: ModelVersion, statuses: [(status: Int, count: UInt64)], latency: HistogramSnapshot)] {
        var out: [(version: ModelVersion, statuses: [Int: UInt64], latency: HistogramSnapshot)] = []
        for snapshot in list.withLock({ $0 }) {
            let i = out.firstIndex { $0.version.isSame(as: snapshot.version) } ?? {
                out.append((snapshot.version, [:], HistogramSnapshot()))
                return out.count - 1
            }()
            for (status, count) in snapshot.counters.totals() { out[i].statuses[status, default: 0] += count }
            out[i].latency = snapshot.latency.reduce(out[i].latency) { $0 + $1.snapshot() }
        }
        return out.map { ($0.version, $0.statuses.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, $0.latency) }
    }
}
