import Foundation
import HTTP
import JSON
import Synchronization

/// A failed call to a component's control API: its own error and status, `unreachable` (with
/// 503) when no answer came, 502 when the answer is not what the route promises.
public struct ComponentError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var status: Int
    public var unreachable: Bool

    public init(_ message: String, status: Int, unreachable: Bool = false) {
        self.message = message
        self.status = status
        self.unreachable = unreachable
    }

    public var description: String { unreachable ? message : "\(status): \(message)" }
}

/// What an operator asks a component to do (the console's keys and `:` commands).
public enum ComponentAction: Sendable, Equatable {
    /// Batch: start a run now.
    case trigger
    /// Batch: run a finished run again, on its model.
    case rerun(Int)
    /// Batch: stop a queued or running run.
    case cancel(Int)
    /// Stream: stop reading (the backlog grows) and start again.
    case pause, resume
    /// Serve, batch, stream: pin a version or follow an alias.
    case swap(SwapRequest)

    /// The route and body it is sent as.
    public var request: (method: String, path: String, body: JSONValue?) {
        switch self {
        case .trigger: ("POST", "/v1/runs", .object(JSONObject()))
        case .rerun(let id): ("POST", "/v1/runs/\(id)/rerun", .object(JSONObject()))
        case .cancel(let id): ("POST", "/v1/runs/\(id)/cancel", .object(JSONObject()))
        case .pause: ("POST", "/v1/pause", nil)
        case .resume: ("POST", "/v1/resume", nil)
        case .swap(let request): ("POST", "/v1/model", request.json)
        }
    }
}

/// A component's one client: the control API every component speaks (status, time series,
/// events) and each kind's own routes (batch runs, stream pause, model swaps), typed. Used by
/// the console, the command line and the tests. It keeps one keep-alive connection (reopened
/// when the component closed it); calls from several threads take turns on it.
public final class ComponentAPI: Sendable {
    /// `http://HOST:PORT`.
    public let url: String
    public let host: String
    public let port: Int
    private let key: String?
    private let timeout: Double
    private let connection: Mutex<HTTPClient>

    /// `url` is `http://HOST:PORT` (a trailing slash is fine).
    public init(url: String, key: String?, timeout: Double = 5) throws(ComponentError) {
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host, !host.isEmpty,
              let port = components.port else {
            throw ComponentError("a component's address is http://HOST:PORT, got \"\(url)\"", status: 400)
        }
        self.host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        self.port = port
        self.url = "http://\(host):\(port)"
        self.key = key
        self.timeout = timeout
        connection = Mutex(HTTPClient(host: self.host, port: port, timeout: timeout))
    }

    /// Closes the kept connection (the next call opens one).
    public func close() { connection.withLock { $0.close() } }

    // MARK: - Requests

    /// One request, answered with its JSON body; an error status becomes a `ComponentError`
    /// with the component's own message.
    public func call(_ method: String, _ path: String, body: JSONValue? = nil) throws(ComponentError) -> JSONValue {
        try send(method, path, body: body).value
    }

    /// One request: the JSON body and the response's headers.
    private func send(_ method: String, _ path: String, body: JSONValue?) throws(ComponentError) -> (value: JSONValue, headers: HTTPHeaders) {
        var headers = [("Content-Type", "application/json")]
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        let bytes = body.map { Array(JSONWriter.text($0).utf8) } ?? []
        let outcome: Result<HTTPClient.Response, IOError> = connection.withLock { client in
            do throws(IOError) {
                return .success(try client.request(method, path, headers: headers, body: bytes))
            } catch {
                client.close()
                return .failure(error)
            }
        }
        let response: HTTPClient.Response
        switch outcome {
        case .success(let answer): response = answer
        case .failure(let error): throw ComponentError("\(url) unreachable: \(error)", status: 503, unreachable: true)
        }
        let value = try? JSONValue.parse(response.body)
        guard response.status < 400 else {
            throw ComponentError(value?["error"]?.stringValue ?? String(response.text.prefix(200)), status: response.status)
        }
        guard let value else { throw malformed(path, "something that is not JSON") }
        return (value, response.headers)
    }

    private func malformed(_ path: String, _ what: String) -> ComponentError {
        ComponentError("\(url) answered \(path) with \(what)", status: 502)
    }

    private func decode<T>(_ path: String, _ what: String, _ value: JSONValue, _ decoder: (JSONValue) -> T?) throws(ComponentError) -> T {
        guard let decoded = decoder(value) else { throw malformed(path, "no \(what)") }
        return decoded
    }

    // MARK: - Every component

    public func status() throws(ComponentError) -> ComponentStatus {
        try decode("/v1/status", "status", try call("GET", "/v1/status"), ComponentStatus.init(json:))
    }

    /// The last `window` seconds of samples.
    public func timeseries(window: Int = 600) throws(ComponentError) -> SeriesWindow {
        let path = "/v1/timeseries?window=\(window)"
        return try decode(path, "time series", try call("GET", path), SeriesWindow.init(json:))
    }

    /// Events with ids above `after`, oldest first.
    public func events(after: Int = 0) throws(ComponentError) -> [ComponentEvent] {
        let path = "/v1/events?after=\(after)"
        let value = try call("GET", path)
        guard case .array(let items)? = value["events"] else { throw malformed(path, "events") }
        return items.compactMap(ComponentEvent.init(json:))
    }

    /// The component's log (scope operate): its last `tail` lines, or with `after` the lines since
    /// that one (follow it by asking again `after: page.next`).
    public func logs(after: Int? = nil, tail: Int = 200) throws(ComponentError) -> LogPage {
        let path = "/v1/logs?" + (after.map { "after=\($0)" } ?? "tail=\(tail)")
        return try decode(path, "log lines", try call("GET", path), LogPage.init(json:))
    }

    /// Pins a version or follows an alias (scope admin).
    public func swap(_ request: SwapRequest) throws(ComponentError) -> SwapResult {
        let (method, path, body) = ComponentAction.swap(request).request
        return try decode(path, "swap result", try call(method, path, body: body), SwapResult.init(json:))
    }

    // MARK: - Serve

    /// What serve's `POST /score` (Azure ML's form) answers for one record.
    public struct Score: Sendable, Equatable {
        /// The label; a regression model's value as text.
        public var label: String
        /// Class → probability, in the model's order; a regression model's one entry, "value".
        public var probabilities: NamedNumbers
        /// The version that answered (`x-model-version`).
        public var modelVersion: String?
    }

    /// Scores `record` on a serve component.
    public func score(_ record: JSONValue) throws(ComponentError) -> Score {
        let (value, headers) = try send("POST", "/score", body: .object(JSONObject(["data": .array([record])])))
        guard case .array(let answers) = value, let first = answers.first else { throw malformed("/score", "no answer") }
        if case .number(let v)? = first["value"] {
            // A regression model's answer: its value.
            return Score(label: JSONWriter.numberText(v), probabilities: NamedNumbers([NamedNumber("value", v)]), modelVersion: headers["x-model-version"])
        }
        guard case .object = first["probabilities"] ?? .null else { throw malformed("/score", "no probabilities and no value") }
        return Score(label: first["label"]?.stringValue ?? "", probabilities: NamedNumbers(json: first["probabilities"]),
                     modelVersion: headers["x-model-version"])
    }

    // MARK: - Batch

    /// A page of runs, newest first.
    public func runs(limit: Int = 50, before: Int? = nil) throws(ComponentError) -> RunPage {
        let path = "/v1/runs?limit=\(limit)" + (before.map { "&before=\($0)" } ?? "")
        return try decode(path, "runs", try call("GET", path), RunPage.init(json:))
    }

    public func run(_ id: Int) throws(ComponentError) -> RunSummary {
        let path = "/v1/runs/\(id)"
        return try decode(path, "run", try call("GET", path), RunSummary.init(json:))
    }

    /// Starts a run (scope operate): the run queued, or the one an earlier trigger with the same
    /// idempotency key started (`existing`).
    public func trigger(idempotencyKey: String? = nil) throws(ComponentError) -> RunSummary {
        let body: JSONValue = .object(idempotencyKey.map { JSONObject(["idempotency_key": .string($0)]) } ?? JSONObject())
        return try decode("/v1/runs", "run", try call("POST", "/v1/runs", body: body), RunSummary.init(json:))
    }

    // MARK: - Stream

    /// The stream's latest dead letters, newest first (scope operate: they hold events' data).
    /// A serve replica's shadow comparison (`GET /v1/compare`, scope read); 404 when no shadow ran there.
    public func comparison(top: Int = 10) throws(ComponentError) -> ShadowReport {
        let path = "/v1/compare?top=\(top)"
        return try decode(path, "a comparison", try call("GET", path), ShadowReport.init(json:))
    }

    public func deadLetters(limit: Int = 100) throws(ComponentError) -> DeadLetterPage {
        let path = "/v1/dead-letters?limit=\(limit)"
        return try decode(path, "dead letters", try call("GET", path), DeadLetterPage.init(json:))
    }

    // MARK: - Any action

    /// What an action did, in words for the operator (`run 12 queued`, `credit@2 → credit@3`).
    public func perform(_ action: ComponentAction) throws(ComponentError) -> String {
        let (method, path, body) = action.request
        let value = try call(method, path, body: body)
        switch action {
        case .trigger, .rerun:
            let run = try decode(path, "run", value, RunSummary.init(json:))
            return run.existing ? "run \(run.id) already exists for this key (\(run.status))" : "run \(run.id) \(run.status)"
        case .cancel:
            let run = try decode(path, "run", value, RunSummary.init(json:))
            return "run \(run.id) \(run.status)"
        case .pause, .resume:
            let result = try decode(path, "state", value, PauseResult.init(json:))
            return result.changed ? result.state : "already \(result.state)"
        case .swap:
            let result = try decode(path, "swap result", value, SwapResult.init(json:))
            return "\(result.previous?.reference ?? "none") → \(result.model.reference)"
                + (result.following.map { ", following @\($0)" } ?? ", pinned") + (result.takesEffect.map { ", \($0)" } ?? "")
        }
    }
}
