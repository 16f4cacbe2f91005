import Foundation
import HTTP
import JSON

// The control API's wire types: what serve, batch, stream and the registry answer on
// /v1/status, /v1/timeseries, /v1/events, /v1/model and /v1/runs, and what the console, the
// command line and the tests read back through `ComponentAPI`. Each has one JSON form, written
// by `json` and read back by `init?(json:)`. Readers are lenient: a field that is missing or of
// the wrong type reads as its default, so an older or newer component still shows.

/// An HTTP status and message on its way to becoming `{"error": ...}`.
public struct HTTPError: Error, Sendable {
    public var status: Int
    public var message: String
    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
    public var response: HTTPResponse { .error(status, message) }
}

/// The model version a component runs: `{name, version, sha256, reference}`.
public struct ModelReference: Sendable, Equatable {
    public var name: String
    public var version: Int
    public var sha256: String
    /// `NAME@VERSION`.
    public var reference: String { "\(name)@\(version)" }

    public init(name: String, version: Int, sha256: String) {
        self.name = name
        self.version = version
        self.sha256 = sha256
    }

    public init(_ version: ModelVersion) {
        self.init(name: version.model, version: version.version, sha256: version.sha256)
    }

    public var json: JSONValue {
        .object(JSONObject(["name": .string(name), "version": .number(Double(version)), "sha256": .string(sha256), "reference": .string(reference)]))
    }

    public init?(json value: JSONValue?) {
        guard let value, case .object = value else { return nil }
        if let name = value["name"]?.stringValue, let version = wholeNumber(value["version"], from: 0) {
            self.init(name: name, version: version, sha256: value["sha256"]?.stringValue ?? "")
        } else if let reference = value["reference"]?.stringValue, let at = reference.lastIndex(of: "@"),
                  let version = Int(reference[reference.index(after: at)...]) {
            self.init(name: String(reference[..<at]), version: version, sha256: value["sha256"]?.stringValue ?? "")
        } else {
            return nil
        }
    }
}

/// A named number (a counter, a status code's count), in the order the component gives them;
/// nil when there is nothing to count yet (a quantile before the first event).
public struct NamedNumber: Sendable, Equatable {
    public var name: String
    public var value: Double?
    public init(_ name: String, _ value: Double?) {
        self.name = name
        self.value = value
    }
}

/// Named numbers as one JSON object, in order.
public struct NamedNumbers: Sendable, Equatable {
    public var entries: [NamedNumber]
    public init(_ entries: [NamedNumber] = []) { self.entries = entries }

    public subscript(name: String) -> Double? {
        get { entries.last { $0.name == name }?.value ?? nil }
        set {
            if let i = entries.lastIndex(where: { $0.name == name }) { entries[i].value = newValue } else { entries.append(NamedNumber(name, newValue)) }
        }
    }

    public var json: JSONValue {
        .object(entries.reduce(into: JSONObject()) { $0.append($1.name, $1.value.map(JSONValue.number) ?? .null) })
    }

    public init(json value: JSONValue?) {
        guard case .object(let o)? = value else {
            self.init()
            return
        }
        self.init(zip(o.keys, o.values).map { NamedNumber($0, number($1)) })
    }
}

/// A dependency (a stream's source and sink, the registry service) as status shows it.
public struct DependencyStatus: Sendable, Equatable {
    public var name: String
    public var address: String
    public var up: Bool
    /// When the current outage began; nil while up.
    public var since: String?
    public var error: String?
    public var outages: Int

    public init(name: String, address: String, up: Bool, since: String?, error: String?, outages: Int) {
        self.name = name
        self.address = address
        self.up = up
        self.since = since
        self.error = error
        self.outages = outages
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("name", .string(name))
        o.append("address", .string(address))
        o.append("up", .bool(up))
        o.append("since", since.map(JSONValue.string) ?? .null)
        o.append("error", error.map(JSONValue.string) ?? .null)
        o.append("outages", .number(Double(outages)))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let name = value["name"]?.stringValue else { return nil }
        self.init(name: name, address: value["address"]?.stringValue ?? "", up: value["up"] != .bool(false), since: value["since"]?.stringValue,
                  error: value["error"]?.stringValue, outages: wholeNumber(value["outages"], from: 0) ?? 0)
    }
}

/// A component's answer to `GET /v1/status`: what every component reports, plus its kind's own part.
public struct ComponentStatus: Sendable, Equatable {
    public var kind: String
    public var id: String
    public var url: String
    /// The switchyard release.
    public var version: String
    public var pid: Int
    public var startedAt: String
    /// The model version it runs; nil while loading (and for the registry).
    public var model: ModelReference?
    /// The alias it follows; nil when pinned to a version.
    public var following: String?
    /// The followed alias's traffic split, when it has one: serve splits by it, batch and stream
    /// run its main version (`model`).
    public var route: AliasRoute?
    /// Input drift of the versions it runs (serve and stream), the main version first.
    public var drift: [DriftStatus] = []
    /// `serving`, `loading`, `idle`, `running`, `paused`, `reconnecting`, …
    public var state: String
    public var counters: NamedNumbers
    public var dependencies: [DependencyStatus]
    public var http: ConnectionFigures?
    public var serve: ServeStatus?
    public var batch: BatchStatus?
    public var stream: StreamStatus?

    public init(kind: String, id: String = "", url: String = "", version: String = "", pid: Int = 0, startedAt: String = "",
                model: ModelReference? = nil, following: String? = nil, state: String = "", counters: NamedNumbers = NamedNumbers(),
                dependencies: [DependencyStatus] = [], http: ConnectionFigures? = nil) {
        self.kind = kind
        self.id = id
        self.url = url
        self.version = version
        self.pid = pid
        self.startedAt = startedAt
        self.model = model
        self.following = following
        self.state = state
        self.counters = counters
        self.dependencies = dependencies
        self.http = http
    }

    /// The server's connection figures.
    public struct ConnectionFigures: Sendable, Equatable {
        public var connections: Int
        public var maxConnections: Int
        public var acceptPauses: Int
        public init(connections: Int, maxConnections: Int, acceptPauses: Int) {
            self.connections = connections
            self.maxConnections = maxConnections
            self.acceptPauses = acceptPauses
        }
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("kind", .string(kind))
        o.append("id", .string(id))
        o.append("url", .string(url))
        o.append("version", .string(version))
        o.append("pid", .number(Double(pid)))
        o.append("started_at", .string(startedAt))
        o.append("model", model?.json ?? .null)
        o.append("following", following.map(JSONValue.string) ?? .null)
        if let route { o.append("route", route.json) }
        if !drift.isEmpty { o.append("drift", .array(drift.map(\.json))) }
        o.append("state", .string(state))
        o.append("counters", counters.json)
        serve?.append(to: &o)
        batch?.append(to: &o)
        stream?.append(to: &o)
        if !dependencies.isEmpty { o.append("dependencies", .array(dependencies.map(\.json))) }
        if let http {
            o.append("http", .object(JSONObject([
                "connections": .number(Double(http.connections)),
                "max_connections": .number(Double(http.maxConnections)),
                "accept_pauses": .number(Double(http.acceptPauses)),
            ])))
        }
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard case .object = value, let kind = value["kind"]?.stringValue else { return nil }
        var dependencies: [DependencyStatus] = []
        if case .array(let items)? = value["dependencies"] { dependencies = items.compactMap(DependencyStatus.init(json:)) }
        var http: ConnectionFigures?
        if case .object? = value["http"] {
            http = ConnectionFigures(connections: wholeNumber(value["http"]?["connections"], from: 0) ?? 0,
                                     maxConnections: wholeNumber(value["http"]?["max_connections"], from: 0) ?? 0,
                                     acceptPauses: wholeNumber(value["http"]?["accept_pauses"], from: 0) ?? 0)
        }
        self.init(kind: kind, id: value["id"]?.stringValue ?? "", url: value["url"]?.stringValue ?? "", version: value["version"]?.stringValue ?? "",
                  pid: wholeNumber(value["pid"], from: 0) ?? 0, startedAt: value["started_at"]?.stringValue ?? "",
                  model: ModelReference(json: value["model"]), following: value["following"]?.stringValue, state: value["state"]?.stringValue ?? "",
                  counters: NamedNumbers(json: value["counters"]), dependencies: dependencies, http: http)
        if let r = value["route"], r != .null { route = try? AliasRoute(json: r) }
        if case .array(let items)? = value["drift"] { drift = items.compactMap(DriftStatus.init(json:)) }
        switch kind {
        case "serve": serve = ServeStatus(json: value)
        case "batch": batch = BatchStatus(json: value)
        case "stream": stream = StreamStatus(json: value)
        default: break
        }
    }
}

/// Serve's part of its status: responses by status code (`"200"`, …, `"other"`).
public struct ServeStatus: Sendable, Equatable {
    public var statusCodes: NamedNumbers
    /// Traffic per version it answers with: the main version, and every version of a split.
    public var versions: [VersionTraffic]

    public init(statusCodes: NamedNumbers, versions: [VersionTraffic] = []) {
        self.statusCodes = statusCodes
        self.versions = versions
    }

    func append(to o: inout JSONObject) {
        o.append("status_codes", statusCodes.json)
        o.append("versions", .array(versions.map(\.json)))
    }

    init(json value: JSONValue) {
        let versions: [VersionTraffic] = if case .array(let items)? = value["versions"] { items.compactMap(VersionTraffic.init(json:)) } else { [] }
        self.init(statusCodes: NamedNumbers(json: value["status_codes"]), versions: versions)
    }
}

/// One version's traffic on a serve replica: totals since it was loaded, and the last sampling
/// interval's rates and latency (request received to response written).
public struct VersionTraffic: Sendable, Equatable {
    public var version: Int
    /// Its share of a split, in percent; nil when the alias does not split.
    public var weight: Int?
    public var requests: Double
    /// Answers with status 5xx.
    public var errors: Double
    public var requestsPerSecond: Double
    public var errorsPerSecond: Double
    public var p50Ms: Double
    public var p99Ms: Double

    public init(version: Int, weight: Int?, requests: Double, errors: Double, requestsPerSecond: Double, errorsPerSecond: Double, p50Ms: Double, p99Ms: Double) {
        self.version = version
        self.weight = weight
        self.requests = requests
        self.errors = errors
        self.requestsPerSecond = requestsPerSecond
        self.errorsPerSecond = errorsPerSecond
        self.p50Ms = p50Ms
        self.p99Ms = p99Ms
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("version", .number(Double(version)))
        o.append("weight", weight.map { .number(Double($0)) } ?? .null)
        o.append("requests", .number(requests))
        o.append("errors", .number(errors))
        o.append("requests_per_second", .number(requestsPerSecond))
        o.append("errors_per_second", .number(errorsPerSecond))
        o.append("p50_ms", .number(p50Ms))
        o.append("p99_ms", .number(p99Ms))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let version = wholeNumber(value["version"], from: 1) else { return nil }
        func n(_ key: String) -> Double { if case .number(let x)? = value[key], x.isFinite { x } else { 0 } }
        self.init(version: version, weight: wholeNumber(value["weight"], from: 0), requests: n("requests"), errors: n("errors"),
                  requestsPerSecond: n("requests_per_second"), errorsPerSecond: n("errors_per_second"), p50Ms: n("p50_ms"), p99Ms: n("p99_ms"))
    }
}

/// Batch's part of its status: the job, its folders and schedule, the queue and the running run.
public struct BatchStatus: Sendable, Equatable {
    public var job: String
    public var input: String
    public var output: String
    /// The schedule (`every 15m`, a cron line); nil when runs are only triggered.
    public var schedule: String?
    /// The schedule's next slot (always nil without a schedule).
    public var nextRunAt: String?
    /// Runs waiting to start.
    public var queue: Int
    public var run: RunProgress?

    public init(job: String, input: String, output: String, schedule: String?, nextRunAt: String?, queue: Int, run: RunProgress?) {
        self.job = job
        self.input = input
        self.output = output
        self.schedule = schedule
        self.nextRunAt = nextRunAt
        self.queue = queue
        self.run = run
    }

    func append(to o: inout JSONObject) {
        o.append("job", .string(job))
        o.append("input", .string(input))
        o.append("output", .string(output))
        o.append("schedule", schedule.map {
            .object(JSONObject(["schedule": .string($0), "next_run_at": nextRunAt.map(JSONValue.string) ?? .null]))
        } ?? .null)
        o.append("queue", .number(Double(queue)))
        o.append("run", run?.json ?? .null)
    }

    init(json value: JSONValue) {
        let schedule = value["schedule"]?["schedule"]?.stringValue
        self.init(job: value["job"]?.stringValue ?? "", input: value["input"]?.stringValue ?? "", output: value["output"]?.stringValue ?? "",
                  schedule: schedule, nextRunAt: schedule == nil ? nil : value["schedule"]?["next_run_at"]?.stringValue,
                  queue: wholeNumber(value["queue"], from: 0) ?? 0, run: value["run"].flatMap(RunProgress.init(json:)))
    }
}

/// Stream's part of its status: its name, source, sink and backlog.
public struct StreamStatus: Sendable, Equatable {
    public var name: String
    public var source: String
    public var sink: String
    public var backlog: Backlog

    public init(name: String, source: String, sink: String, backlog: Backlog) {
        self.name = name
        self.source = source
        self.sink = sink
        self.backlog = backlog
    }

    /// Events waiting at the source and whether scoring keeps up.
    public struct Backlog: Sendable, Equatable {
        /// `OK`, `FALLING_BEHIND`, `UNKNOWN`, …
        public var status: String
        public var events: Double
        public var bytes: Double?
        /// Age of the oldest waiting event.
        public var ageSeconds: Double?
        public var inputPerSecond: Double?
        public var processingPerSecond: Double

        public init(status: String, events: Double, bytes: Double?, ageSeconds: Double?, inputPerSecond: Double?, processingPerSecond: Double) {
            self.status = status
            self.events = events
            self.bytes = bytes
            self.ageSeconds = ageSeconds
            self.inputPerSecond = inputPerSecond
            self.processingPerSecond = processingPerSecond
        }
    }

    func append(to o: inout JSONObject) {
        o.append("name", .string(name))
        o.append("source", .string(source))
        o.append("sink", .string(sink))
        var b = JSONObject()
        b.append("status", .string(backlog.status))
        b.append("events", .number(backlog.events))
        b.append("bytes", backlog.bytes.map(JSONValue.number) ?? .null)
        b.append("age_s", backlog.ageSeconds.map(JSONValue.number) ?? .null)
        b.append("input_per_s", backlog.inputPerSecond.map(JSONValue.number) ?? .null)
        b.append("processing_per_s", .number(backlog.processingPerSecond))
        o.append("backlog", .object(b))
    }

    init(json value: JSONValue) {
        let b = value["backlog"]
        self.init(name: value["name"]?.stringValue ?? "", source: value["source"]?.stringValue ?? "", sink: value["sink"]?.stringValue ?? "",
                  backlog: Backlog(status: b?["status"]?.stringValue ?? "UNKNOWN", events: number(b?["events"]) ?? 0, bytes: number(b?["bytes"]),
                                   ageSeconds: number(b?["age_s"]), inputPerSecond: number(b?["input_per_s"]),
                                   processingPerSecond: number(b?["processing_per_s"]) ?? 0))
    }
}

/// The running batch run's progress.
public struct RunProgress: Sendable, Equatable {
    public var id: Int
    public var model: String
    /// The file being read.
    public var file: String
    public var rowsDone: Int
    public var rowsRejected: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
    /// Bytes done over bytes total, 0 to 1.
    public var fraction: Double
    public var rowsPerSecond: Double
    /// Seconds left at the current rate; nil before there is a rate.
    public var etaSeconds: Double?
    public var elapsedSeconds: Double

    public init(id: Int, model: String, file: String, rowsDone: Int, rowsRejected: Int, bytesDone: Int64, bytesTotal: Int64,
                fraction: Double, rowsPerSecond: Double, etaSeconds: Double?, elapsedSeconds: Double) {
        self.id = id
        self.model = model
        self.file = file
        self.rowsDone = rowsDone
        self.rowsRejected = rowsRejected
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.fraction = fraction
        self.rowsPerSecond = rowsPerSecond
        self.etaSeconds = etaSeconds
        self.elapsedSeconds = elapsedSeconds
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("id", .number(Double(id)))
        o.append("model", .string(model))
        o.append("file", .string(file))
        o.append("rows_done", .number(Double(rowsDone)))
        o.append("rows_rejected", .number(Double(rowsRejected)))
        o.append("bytes_done", .number(Double(bytesDone)))
        o.append("bytes_total", .number(Double(bytesTotal)))
        o.append("progress", .number(fraction))
        o.append("rows_per_s", .number(rowsPerSecond))
        o.append("eta_s", etaSeconds.map(JSONValue.number) ?? .null)
        o.append("elapsed_s", .number(elapsedSeconds))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard case .object = value, let id = wholeNumber(value["id"], from: 0) else { return nil }
        self.init(id: id, model: value["model"]?.stringValue ?? "", file: value["file"]?.stringValue ?? "",
                  rowsDone: wholeNumber(value["rows_done"], from: 0) ?? 0, rowsRejected: wholeNumber(value["rows_rejected"], from: 0) ?? 0,
                  bytesDone: Int64(wholeNumber(value["bytes_done"], from: 0) ?? 0), bytesTotal: Int64(wholeNumber(value["bytes_total"], from: 0) ?? 0),
                  fraction: number(value["progress"]) ?? 0, rowsPerSecond: number(value["rows_per_s"]) ?? 0,
                  etaSeconds: number(value["eta_s"]), elapsedSeconds: number(value["elapsed_s"]) ?? 0)
    }
}

/// A batch run as `GET /v1/runs` lists it and `POST /v1/runs` answers it.
public struct RunSummary: Sendable, Equatable {
    public var id: Int
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, …
    public var status: String
    /// `manual`, `schedule`, `rerun`, …
    public var trigger: String
    public var rerunOf: Int?
    public var who: String
    public var idempotencyKey: String?
    public var model: String?
    public var modelSHA256: String?
    public var inputs: [Input]
    public var rowsRead: Int
    public var rowsScored: Int
    public var rowsRejected: Int
    public var bytesTotal: Int64
    public var bytesDone: Int64
    public var queuedAt: String
    public var startedAt: String?
    public var finishedAt: String?
    public var error: String?
    public var scheduledFor: String?
    public var note: String?
    /// The output folder.
    public var output: String
    /// Live progress while it runs.
    public var progress: RunProgress?
    /// The answer to a trigger that named an idempotency key already used: the run it started then.
    public var existing: Bool
    /// A run cut into tasks (`--split`): how many, how far, and who did them.
    public var tasks: RunTasks?

    /// A file the run read.
    public struct Input: Sendable, Equatable {
        public var name: String
        public var size: Int64
        public var sha256: String
        public init(name: String, size: Int64, sha256: String) {
            self.name = name
            self.size = size
            self.sha256 = sha256
        }
    }

    public init(id: Int, status: String, trigger: String, rerunOf: Int? = nil, who: String = "", idempotencyKey: String? = nil,
                model: String? = nil, modelSHA256: String? = nil, inputs: [Input] = [], rowsRead: Int = 0, rowsScored: Int = 0,
                rowsRejected: Int = 0, bytesTotal: Int64 = 0, bytesDone: Int64 = 0, queuedAt: String = "", startedAt: String? = nil,
                finishedAt: String? = nil, error: String? = nil, scheduledFor: String? = nil, note: String? = nil, output: String = "",
                progress: RunProgress? = nil, existing: Bool = false, tasks: RunTasks? = nil) {
        self.id = id
        self.status = status
        self.trigger = trigger
        self.rerunOf = rerunOf
        self.who = who
        self.idempotencyKey = idempotencyKey
        self.model = model
        self.modelSHA256 = modelSHA256
        self.inputs = inputs
        self.rowsRead = rowsRead
        self.rowsScored = rowsScored
        self.rowsRejected = rowsRejected
        self.bytesTotal = bytesTotal
        self.bytesDone = bytesDone
        self.queuedAt = queuedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.error = error
        self.scheduledFor = scheduledFor
        self.note = note
        self.output = output
        self.progress = progress
        self.existing = existing
        self.tasks = tasks
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("id", .number(Double(id)))
        o.append("status", .string(status))
        o.append("trigger", .string(trigger))
        o.append("rerun_of", rerunOf.map { .number(Double($0)) } ?? .null)
        o.append("who", .string(who))
        o.append("idempotency_key", idempotencyKey.map(JSONValue.string) ?? .null)
        o.append("model", model.map(JSONValue.string) ?? .null)
        o.append("model_sha256", modelSHA256.map(JSONValue.string) ?? .null)
        o.append("inputs", .array(inputs.map {
            .object(JSONObject(["name": .string($0.name), "size": .number(Double($0.size)), "sha256": .string($0.sha256)]))
        }))
        if let progress { o.append("progress", progress.json) }
        o.append("rows_read", .number(Double(rowsRead)))
        o.append("rows_scored", .number(Double(rowsScored)))
        o.append("rows_rejected", .number(Double(rowsRejected)))
        o.append("bytes_total", .number(Double(bytesTotal)))
        o.append("bytes_done", .number(Double(bytesDone)))
        o.append("queued_at", .string(queuedAt))
        o.append("started_at", startedAt.map(JSONValue.string) ?? .null)
        o.append("finished_at", finishedAt.map(JSONValue.string) ?? .null)
        o.append("error", error.map(JSONValue.string) ?? .null)
        o.append("scheduled_for", scheduledFor.map(JSONValue.string) ?? .null)
        o.append("note", note.map(JSONValue.string) ?? .null)
        o.append("output", .string(output))
        if let tasks { o.append("tasks", tasks.json) }
        if existing { o.append("existing", .bool(true)) }
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard case .object = value, let id = wholeNumber(value["id"], from: 0) else { return nil }
        var inputs: [Input] = []
        if case .array(let items)? = value["inputs"] {
            inputs = items.compactMap { item in
                guard let name = item["name"]?.stringValue else { return nil }
                return Input(name: name, size: Int64(wholeNumber(item["size"], from: 0) ?? 0), sha256: item["sha256"]?.stringValue ?? "")
            }
        }
        self.init(id: id, status: value["status"]?.stringValue ?? "?", trigger: value["trigger"]?.stringValue ?? "",
                  rerunOf: wholeNumber(value["rerun_of"], from: 0), who: value["who"]?.stringValue ?? "",
                  idempotencyKey: value["idempotency_key"]?.stringValue, model: value["model"]?.stringValue,
                  modelSHA256: value["model_sha256"]?.stringValue, inputs: inputs,
                  rowsRead: wholeNumber(value["rows_read"], from: 0) ?? 0, rowsScored: wholeNumber(value["rows_scored"], from: 0) ?? 0,
                  rowsRejected: wholeNumber(value["rows_rejected"], from: 0) ?? 0,
                  bytesTotal: Int64(wholeNumber(value["bytes_total"], from: 0) ?? 0), bytesDone: Int64(wholeNumber(value["bytes_done"], from: 0) ?? 0),
                  queuedAt: value["queued_at"]?.stringValue ?? "", startedAt: value["started_at"]?.stringValue,
                  finishedAt: value["finished_at"]?.stringValue, error: value["error"]?.stringValue,
                  scheduledFor: value["scheduled_for"]?.stringValue, note: value["note"]?.stringValue, output: value["output"]?.stringValue ?? "",
                  progress: value["progress"].flatMap(RunProgress.init(json:)), existing: value["existing"] == .bool(true),
                  tasks: value["tasks"].flatMap(RunTasks.init(json:)))
    }

    /// Whether it has finished (and can be rerun, not cancelled).
    public var isFinished: Bool { status != "queued" && status != "running" }
}

/// The tasks of a run cut into tasks, and the workers that did them (a worker is `HOST:PID:ID`).
public struct RunTasks: Sendable, Equatable {
    public var total: Int
    public var done: Int
    public var running: Int
    public var failed: Int
    /// Tasks whose worker died and that another worker took over (or will).
    public var retried: Int
    public var workers: [Worker]

    public struct Worker: Sendable, Equatable {
        public var name: String
        public var done: Int
        public var running: Int
        /// Rows read in its done tasks, and so far in its running one.
        public var rows: Int
        public init(name: String, done: Int, running: Int, rows: Int) {
            self.name = name
            self.done = done
            self.running = running
            self.rows = rows
        }
    }

    public init(total: Int, done: Int, running: Int, failed: Int, retried: Int, workers: [Worker]) {
        self.total = total
        self.done = done
        self.running = running
        self.failed = failed
        self.retried = retried
        self.workers = workers
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("total", .number(Double(total)))
        o.append("done", .number(Double(done)))
        o.append("running", .number(Double(running)))
        o.append("failed", .number(Double(failed)))
        o.append("retried", .number(Double(retried)))
        o.append("workers", .array(workers.map {
            .object(JSONObject(["name": .string($0.name), "done": .number(Double($0.done)), "running": .number(Double($0.running)),
                                "rows": .number(Double($0.rows))]))
        }))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard case .object = value, let total = wholeNumber(value["total"], from: 0) else { return nil }
        var workers: [Worker] = []
        if case .array(let items)? = value["workers"] {
            workers = items.compactMap { item in
                guard let name = item["name"]?.stringValue else { return nil }
                return Worker(name: name, done: wholeNumber(item["done"], from: 0) ?? 0, running: wholeNumber(item["running"], from: 0) ?? 0,
                              rows: wholeNumber(item["rows"], from: 0) ?? 0)
            }
        }
        self.init(total: total, done: wholeNumber(value["done"], from: 0) ?? 0, running: wholeNumber(value["running"], from: 0) ?? 0,
                  failed: wholeNumber(value["failed"], from: 0) ?? 0, retried: wholeNumber(value["retried"], from: 0) ?? 0, workers: workers)
    }
}

/// One page of `GET /v1/runs`, newest first; `nextBefore` asks for the page after it.
public struct RunPage: Sendable, Equatable {
    public var runs: [RunSummary]
    public var nextBefore: Int?
    public init(runs: [RunSummary], nextBefore: Int?) {
        self.runs = runs
        self.nextBefore = nextBefore
    }

    public var json: JSONValue {
        .object(JSONObject(["runs": .array(runs.map(\.json)), "next_before": nextBefore.map { .number(Double($0)) } ?? .null]))
    }

    public init?(json value: JSONValue) {
        guard case .array(let items)? = value["runs"] else { return nil }
        self.init(runs: items.compactMap(RunSummary.init(json:)), nextBefore: wholeNumber(value["next_before"], from: 0))
    }
}

/// An entry of a component's event log (`GET /v1/events`).
public struct ComponentEvent: Sendable, Equatable {
    /// Increasing within one process: `after=ID` asks for what came since.
    public var id: Int
    public var at: String
    /// `model`, `error`, `recovered`, `stream`, …
    public var kind: String
    public var message: String

    public init(id: Int, at: String, kind: String, message: String) {
        self.id = id
        self.at = at
        self.kind = kind
        self.message = message
    }

    public var json: JSONValue {
        .object(JSONObject(["id": .number(Double(id)), "at": .string(at), "kind": .string(kind), "message": .string(message)]))
    }

    public init?(json value: JSONValue) {
        guard let id = wholeNumber(value["id"], from: 0) else { return nil }
        self.init(id: id, at: value["at"]?.stringValue ?? "", kind: value["kind"]?.stringValue ?? "", message: value["message"]?.stringValue ?? "")
    }
}

/// Per-second samples of a component's figures (`GET /v1/timeseries`), oldest first.
public struct SeriesWindow: Sendable, Equatable {
    public var fields: [String]
    /// Unix seconds of each sample.
    public var times: [Double]
    /// Field → one value per sample.
    public var columns: [String: [Double]]

    public init(fields: [String], times: [Double], columns: [String: [Double]]) {
        self.fields = fields
        self.times = times
        self.columns = columns
    }

    public var json: JSONValue {
        let samples = times.indices.map { i -> JSONValue in
            var o = JSONObject()
            o.append("t", .number(times[i]))
            for field in fields { o.append(field, .number(columns[field].flatMap { i < $0.count ? $0[i] : nil } ?? 0)) }
            return .object(o)
        }
        return .object(JSONObject(["interval_s": .number(1), "fields": .array(fields.map(JSONValue.string)), "samples": .array(samples)]))
    }

    public init?(json value: JSONValue) {
        guard case .array(let names)? = value["fields"], case .array(let samples)? = value["samples"] else { return nil }
        let fields = names.compactMap(\.stringValue)
        var columns: [String: [Double]] = [:]
        for field in fields { columns[field] = samples.map { number($0[field]) ?? 0 } }
        self.init(fields: fields, times: samples.map { number($0["t"]) ?? 0 }, columns: columns)
    }
}

/// What `POST /v1/model` asks for: `{"version": N}` (a number or its text) pins a version,
/// `{"alias": "A"}` follows an alias.
public enum SwapRequest: Equatable, Sendable {
    case version(Int)
    case alias(String)

    /// The largest version number a request may name; versions are counted from 1 in one registry.
    public static let maxVersion = 1 << 53

    /// `n` as a version number (whole, 1 to `maxVersion`), or nil. Checked as a Double first:
    /// Int(n) traps beyond Int's range (1e19, 1e300, inf).
    public static func versionNumber(_ n: Double) -> Int? {
        n.isFinite && n == n.rounded() && n >= 1 && n <= Double(maxVersion) ? Int(n) : nil
    }

    public var json: JSONValue {
        switch self {
        case .version(let n): .object(JSONObject(["version": .number(Double(n))]))
        case .alias(let a): .object(JSONObject(["alias": .string(a)]))
        }
    }

    /// The request `body` describes, or a 400 naming the field and what was expected.
    public static func decode(_ body: [UInt8]) -> Result<SwapRequest, HTTPError> {
        let expected = #"expected {"version": N} or {"alias": "NAME"}"#
        guard let value = try? JSONValue.parse(body), case .object = value else {
            return .failure(HTTPError(400, "the body is not a JSON object: \(expected)"))
        }
        switch (value["version"], value["alias"]) {
        case (.number(let n)?, nil):
            guard let version = versionNumber(n) else {
                return .failure(HTTPError(400, "field \"version\": expected a whole number from 1 to \(maxVersion), got \(n)"))
            }
            return .success(.version(version))
        case (.string(let text)?, nil):
            guard let n = Int(text), n >= 1, n <= maxVersion else {
                return .failure(HTTPError(400, "field \"version\": expected a whole number from 1 to \(maxVersion), got \"\(text.prefix(40))\""))
            }
            return .success(.version(n))
        case (nil, .string(let alias)?):
            guard !alias.isEmpty, alias.utf8.count <= 128, Int(alias) == nil else {
                return .failure(HTTPError(400, "field \"alias\": expected a name of 1 to 128 characters that is not a number"))
            }
            return .success(.alias(alias))
        case (_?, _?):
            return .failure(HTTPError(400, "give \"version\" or \"alias\", not both"))
        case (_?, nil):
            return .failure(HTTPError(400, "field \"version\": expected a whole number"))
        case (nil, _?):
            return .failure(HTTPError(400, "field \"alias\": expected a string"))
        case (nil, nil):
            return .failure(HTTPError(400, expected))
        }
    }
}

/// The answer to `POST /v1/model`.
public struct SwapResult: Sendable, Equatable {
    public var previous: ModelReference?
    public var model: ModelReference
    public var following: String?
    /// When the new version takes effect, where that is not at once (batch: "at the next run").
    public var takesEffect: String?

    public init(previous: ModelReference?, model: ModelReference, following: String?, takesEffect: String? = nil) {
        self.previous = previous
        self.model = model
        self.following = following
        self.takesEffect = takesEffect
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("previous", previous?.json ?? .null)
        o.append("model", model.json)
        o.append("following", following.map(JSONValue.string) ?? .null)
        if let takesEffect { o.append("takes_effect", .string(takesEffect)) }
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let model = ModelReference(json: value["model"]) else { return nil }
        self.init(previous: ModelReference(json: value["previous"]), model: model, following: value["following"]?.stringValue,
                  takesEffect: value["takes_effect"]?.stringValue)
    }
}

/// The answer to a stream's `POST /v1/pause` or `/v1/resume`.
public struct PauseResult: Sendable, Equatable {
    /// `paused` or `running`.
    public var state: String
    /// False when it already was in that state.
    public var changed: Bool

    public init(state: String, changed: Bool) {
        self.state = state
        self.changed = changed
    }

    public var json: JSONValue { .object(JSONObject(["state": .string(state), "changed": .bool(changed)])) }

    public init?(json value: JSONValue) {
        guard let state = value["state"]?.stringValue else { return nil }
        self.init(state: state, changed: value["changed"] == .bool(true))
    }
}

/// An event a stream could not score, as its sink keeps it: the event's id and where it came
/// from, why, the event's text (its first 4 KB) and when (Unix seconds).
public struct DeadLetter: Sendable, Equatable {
    public var id: String
    public var source: String
    public var reason: String
    public var event: String
    public var at: Double

    public init(id: String, source: String, reason: String, event: String, at: Double) {
        self.id = id
        self.source = source
        self.reason = reason
        self.event = event
        self.at = at
    }

    public var json: JSONValue {
        .object(JSONObject(["id": .string(id), "source": .string(source), "reason": .string(reason), "event": .string(event), "at": .number(at)]))
    }

    public init?(json value: JSONValue) {
        guard let reason = value["reason"]?.stringValue else { return nil }
        self.init(id: value["id"]?.stringValue ?? "", source: value["source"]?.stringValue ?? "", reason: reason,
                  event: value["event"]?.stringValue ?? "", at: number(value["at"]) ?? 0)
    }
}

/// A stream's `GET /v1/dead-letters`: its latest dead letters (newest first), how many there
/// have been since it started, and where all of them are kept.
public struct DeadLetterPage: Sendable, Equatable {
    public var deadLetters: [DeadLetter]
    public var total: Int
    public var kept: String

    public init(deadLetters: [DeadLetter], total: Int, kept: String) {
        self.deadLetters = deadLetters
        self.total = total
        self.kept = kept
    }

    public var json: JSONValue {
        .object(JSONObject(["dead_letters": .array(deadLetters.map(\.json)), "total": .number(Double(total)), "kept": .string(kept)]))
    }

    public init?(json value: JSONValue) {
        guard case .array(let items)? = value["dead_letters"] else { return nil }
        self.init(deadLetters: items.compactMap(DeadLetter.init(json:)), total: wholeNumber(value["total"], from: 0) ?? 0, kept: value["kept"]?.stringValue ?? "")
    }
}

/// A line of a component's log (`GET /v1/logs`): its number, when (Unix seconds) and its text.
public struct LogLine: Sendable, Equatable {
    public var seq: Int
    public var at: Double
    public var text: String

    public init(seq: Int, at: Double, text: String) {
        self.seq = seq
        self.at = at
        self.text = text
    }

    public var json: JSONValue { .object(JSONObject(["seq": .number(Double(seq)), "at": .number(at), "text": .string(text)])) }

    public init?(json value: JSONValue) {
        guard let seq = wholeNumber(value["seq"], from: 0), let text = value["text"]?.stringValue else { return nil }
        self.init(seq: seq, at: number(value["at"]) ?? 0, text: text)
    }
}

/// Lines of a component's log, oldest first; `next` is what to ask `after` to follow it (the
/// newest line's number: below what a client asked after, the process has restarted).
public struct LogPage: Sendable, Equatable {
    public var lines: [LogLine]
    public var next: Int

    public init(lines: [LogLine], next: Int) {
        self.lines = lines
        self.next = next
    }

    public var json: JSONValue { .object(JSONObject(["lines": .array(lines.map(\.json)), "next": .number(Double(next))])) }

    public init?(json value: JSONValue) {
        guard case .array(let items)? = value["lines"] else { return nil }
        self.init(lines: items.compactMap(LogLine.init(json:)), next: wholeNumber(value["next"], from: 0) ?? 0)
    }
}

/// A finite number, or nil.
func number(_ value: JSONValue?) -> Double? {
    guard case .number(let n)? = value, n.isFinite else { return nil }
    return n
}

/// A component's input drift for one model version: the population stability index (PSI) per
/// input field and for the predicted probability, over the window's rows (serve and stream: the
/// last `windowSeconds`; batch, with `windowSeconds` 0: the running or latest run), against the
/// version's baseline. PSI is nil with too few rows; `problem` says why there is no drift at all (no
/// baseline for the version).
public struct DriftStatus: Sendable, Equatable {
    public struct Field: Sendable, Equatable {
        public var name: String
        public var psi: Double?
        public init(name: String, psi: Double?) {
            self.name = name
            self.psi = psi
        }
    }

    public var version: Int
    public var windowSeconds: Double
    public var rows: Int
    public var baselineRows: Int
    public var fields: [Field]
    public var prediction: Double?
    public var problem: String?

    public init(version: Int, windowSeconds: Double, rows: Int, baselineRows: Int, fields: [Field], prediction: Double?, problem: String?) {
        self.version = version
        self.windowSeconds = windowSeconds
        self.rows = rows
        self.baselineRows = baselineRows
        self.fields = fields
        self.prediction = prediction
        self.problem = problem
    }

    /// The largest field PSI.
    public var worst: Field? { fields.filter { $0.psi != nil }.max { $0.psi! < $1.psi! } }

    public var json: JSONValue {
        func number(_ x: Double?) -> JSONValue { x.map(JSONValue.number) ?? .null }
        var o = JSONObject()
        o.append("version", .number(Double(version)))
        o.append("window_s", .number(windowSeconds))
        o.append("rows", .number(Double(rows)))
        o.append("baseline_rows", .number(Double(baselineRows)))
        o.append("fields", .array(fields.map { .object(JSONObject(["name": .string($0.name), "psi": number($0.psi)])) }))
        o.append("prediction_psi", number(prediction))
        o.append("problem", problem.map(JSONValue.string) ?? .null)
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let version = wholeNumber(value["version"], from: 1) else { return nil }
        func number(_ v: JSONValue?) -> Double? { if case .number(let x)? = v, x.isFinite { x } else { nil } }
        var fields: [Field] = []
        if case .array(let items)? = value["fields"] {
            fields = items.compactMap { item in item["name"]?.stringValue.map { Field(name: $0, psi: number(item["psi"])) } }
        }
        self.init(version: version, windowSeconds: number(value["window_s"]) ?? 0, rows: wholeNumber(value["rows"], from: 0) ?? 0,
                  baselineRows: wholeNumber(value["baseline_rows"], from: 0) ?? 0, fields: fields, prediction: number(value["prediction_psi"]),
                  problem: value["problem"]?.stringValue)
    }
}
