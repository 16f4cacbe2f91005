import ControlProtocol
import Foundation
import JSON
import Testing

@testable import Components
@testable import HTTP
import Registry
import Telemetry

/// The control API's wire types: each one written by `json` reads back the same, through text.
@Suite struct ControlProtocolTests {
    private func roundTrip(_ value: JSONValue) throws -> JSONValue { try JSONValue.parse(Array(JSONWriter.text(value).utf8)) }

    @Test func everyComponentStatusReadsBackAsWritten() throws {
        let model = ModelReference(name: "credit", version: 3, sha256: String(repeating: "ab", count: 32))
        var serve = ComponentStatus(kind: "serve", id: "serve-1", url: "http://127.0.0.1:8080", version: "0.1.0", pid: 42, startedAt: "2026-11-29T10:00:00.000Z",
                                    model: model, following: "production", state: "serving",
                                    counters: NamedNumbers([NamedNumber("requests", 10), NamedNumber("e2e_p50_ms", nil)]),
                                    dependencies: [DependencyStatus(name: "registry", address: "http://10.0.0.1:8079", up: false, since: "2026-11-29T10:01:00.000Z",
                                                                    error: "connection refused", outages: 2)],
                                    http: .init(connections: 3, maxConnections: 1000, acceptPauses: 1))
        serve.serve = ServeStatus(statusCodes: NamedNumbers([NamedNumber("200", 9), NamedNumber("other", 1)]))
        var batch = ComponentStatus(kind: "batch", id: "batch-1", model: model, state: "running")
        batch.batch = BatchStatus(job: "nightly", input: "/in/*.csv", output: "/out", schedule: "every 15m", nextRunAt: "2026-11-29T10:15:00.000Z", queue: 2,
                                  run: RunProgress(id: 7, model: "credit@3", file: "day.csv", rowsDone: 100, rowsRejected: 1, bytesDone: 4096, bytesTotal: 8192,
                                                   fraction: 0.5, rowsPerSecond: 2000, etaSeconds: 1.5, elapsedSeconds: 0.7))
        var stream = ComponentStatus(kind: "stream", id: "stream-1", model: nil, following: nil, state: "paused")
        stream.stream = StreamStatus(name: "scores", source: "redis://127.0.0.1:6379/events", sink: "dir:/out", backlog: .init(
            status: "FALLING_BEHIND", events: 1200, bytes: nil, ageSeconds: 3.25, inputPerSecond: 500, processingPerSecond: 400))
        for status in [serve, batch, stream, ComponentStatus(kind: "registry", state: "serving")] {
            #expect(ComponentStatus(json: try roundTrip(status.json)) == status)
        }
        // A reader takes what it knows and leaves the rest: an older component's status still shows.
        let old = try #require(ComponentStatus(json: try JSONValue.parse(#"{"kind":"serve","model":{"reference":"credit@2"},"state":"serving","extra":1}"#)))
        #expect(old.model?.reference == "credit@2" && old.serve?.statusCodes.entries == [] && old.counters["requests"] == nil)
        #expect(ComponentStatus(json: try JSONValue.parse(#"{"state":"serving"}"#)) == nil, "a status without a kind is not a status")
    }

    @Test func runsEventsSeriesAndSwapsReadBackAsWritten() throws {
        let run = RunSummary(id: 9, status: "failed", trigger: "rerun", rerunOf: 8, who: "key:ab12 (ops)", idempotencyKey: "nightly", model: "credit@1",
                             modelSHA256: "cd", inputs: [.init(name: "a.csv", size: 2048, sha256: "ef")], rowsRead: 10, rowsScored: 8, rowsRejected: 2,
                             bytesTotal: 2048, bytesDone: 2048, queuedAt: "2026-11-29T10:00:00.000Z", startedAt: "2026-11-29T10:00:01.000Z",
                             finishedAt: "2026-11-29T10:00:02.000Z", error: "a.csv: row 3, field \"amount\": expected a number", scheduledFor: nil,
                             note: "interrupted", output: "/out", progress: nil, existing: true)
        #expect(RunSummary(json: try roundTrip(run.json)) == run)
        let page = RunPage(runs: [run, RunSummary(id: 8, status: "succeeded", trigger: "schedule")], nextBefore: 8)
        #expect(RunPage(json: try roundTrip(page.json)) == page)
        let event = ComponentEvent(id: 3, at: "2026-11-29T10:00:00.000Z", kind: "model", message: "swapped credit@1 → credit@2")
        #expect(ComponentEvent(json: try roundTrip(event.json)) == event)
        let series = SeriesWindow(fields: ["requests", "p99_ms"], times: [1, 2], columns: ["requests": [10, 20], "p99_ms": [0.5, 0.25]])
        #expect(SeriesWindow(json: try roundTrip(series.json)) == series)
        let swap = SwapResult(previous: nil, model: ModelReference(name: "credit", version: 2, sha256: "aa"), following: "canary", takesEffect: "at the next run")
        #expect(SwapResult(json: try roundTrip(swap.json)) == swap)
        #expect(PauseResult(json: try roundTrip(PauseResult(state: "paused", changed: false).json)) == PauseResult(state: "paused", changed: false))
        for request in [SwapRequest.version(3), .alias("canary"), .version(SwapRequest.maxVersion)] {
            #expect(try SwapRequest.decode(Array(JSONWriter.text(request.json).utf8)).get() == request)
        }
    }

    /// Timestamps are written and read by arithmetic: the same text as Foundation's ISO 8601
    /// formatter, read back to the millisecond, and nonsense refused.
    /// A shadow report's record is any JSON: a number too large for a Double (`1e400`) reads as
    /// what JSON carries back, null, so the report reads back as written (the fuzz target found it).
    @Test func aShadowRecordWithAnOverflowingNumberReadsBack() throws {
        let text = #"{"model": "credit", "largest": [{"request_id": "r", "live_version": 1, "record": {"amount": 1e400, "term": [36, -1e400]}}]}"#
        let report = try #require(ShadowReport(json: try JSONValue.parse(Array(text.utf8))))
        #expect(report.largest.first?.record == .object(JSONObject(["amount": .null, "term": .array([.number(36), .null])])))
        #expect(ShadowReport(json: try JSONValue.parse(Array(JSONWriter.text(report.json).utf8))) == report)
    }

    @Test func timestampsMatchTheISO8601FormatterAndReadBack() {
        let reference = ISO8601DateFormatter()
        reference.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var generator = SystemRandomNumberGenerator()
        let fixed: [Double] = [0, -1, 951_782_400.5, 1_795_564_800.999, -2_208_988_800, 4_102_444_800, 1_709_164_800]  // 1970, 1969, 2000-02-29, 2026, 1900, 2100, 2024-02-29
        for t in fixed + (0..<2000).map({ _ in Double(Int64.random(in: -5_000_000_000_000...10_000_000_000_000, using: &generator)) / 1000 }) {
            let date = Date(timeIntervalSince1970: t)
            let text = isoTimestamp(date)
            #expect(text == reference.string(from: date), "\(t)")
            #expect(parseTimestamp(text).map { abs($0 - (t * 1000).rounded() / 1000) < 1e-6 } == true, "\(text)")
        }
        #expect(parseTimestamp("2026-11-29T22:10:49Z") == 1_795_990_249)
        #expect(parseTimestamp("2026-11-29T23:10:49+01:00") == 1_795_990_249)
        for bad in ["", "2026-11-29", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T22:10:49",
                    "2026-11-29T22:10:49.Z", "2026-11-29T22:10:49+1:00", "x026-11-29T22:10:49Z", String(repeating: "9", count: 100)] {
            #expect(parseTimestamp(bad) == nil, "\(bad)")
        }
    }

    @Test func anAddressThatIsNotHTTPHostPortIsRefusedBeforeAnyCall() {
        #expect(throws: ComponentError.self) { try ComponentAPI(url: "ftp://127.0.0.1:1", key: nil) }
        #expect(throws: ComponentError.self) { try ComponentAPI(url: "http://127.0.0.1", key: nil) }
    }

    /// The client against a live component: answers typed, errors with the component's status and
    /// message, and a component that is not there is `unreachable`.
    @Test func theClientAgainstALiveComponent() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.start()
        let reader = try f.api(f.readKey)
        let status = try reader.status()
        #expect(status.kind == "batch" && status.state == "idle" && status.url == "http://127.0.0.1:\(f.port)")
        #expect(status.model?.reference == "credit@1" && status.following == "production" && status.batch?.job == "test")
        #expect(status.pid == Int(getpid()) && status.version == switchyardVersion)
        #expect(throws: ComponentError("key \(try #require(f.keys.list().first { $0.scope == .read }?.id)) has scope 'read'; this needs 'operate'", status: 403)) {
            try reader.trigger()
        }
        do {
            _ = try ComponentAPI(url: "http://127.0.0.1:\(f.port)", key: nil).perform(.trigger)
            Issue.record("a trigger without a key went through")
        } catch {
            #expect(error.status == 401 && !error.unreachable)
        }
        #expect(try f.api(f.adminKey).perform(.swap(.alias("production"))) == "credit@1 → credit@1, following @production, at the next run")
        #expect(try reader.events().contains { $0.kind == "model" })
        // The component stops: its port no longer answers.
        f.host?.stop()
        f.host = nil
        do {
            _ = try reader.status()
            Issue.record("a closed port answered")
        } catch {
            #expect(error.unreachable && error.status == 503)
        }
    }

    /// The process's log over the control API (scope operate): its tail, then what came after a
    /// line; events are in it too.
    @Test func aComponentsLogIsReadAndFollowed() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.start()
        let marker = "log line \(UUID().uuidString)"
        LogBook.process.write(marker, echo: false)
        let operate = try f.api(f.operateKey)
        let page = try operate.logs(tail: 2000)
        #expect(page.lines.contains { $0.text == marker })
        #expect(page.next == page.lines.last?.seq)
        _ = try f.api(f.adminKey).swap(.version(2))  // an event: it is in the log as well
        let more = try operate.logs(after: page.next)
        #expect(more.lines.contains { $0.text.hasPrefix("model: swapped credit@1 → credit@2") }, "\(more.lines.map(\.text))")
        #expect(more.lines.allSatisfy { $0.seq > page.next } && more.next >= page.next)
        #expect(throws: ComponentError.self) { try f.api(f.readKey).logs() }
        #expect(throws: ComponentError("after: expected the number of the last line seen (a whole number from 0)", status: 400)) {
            try operate.call("GET", "/v1/logs?after=-1")
        }
    }
}
