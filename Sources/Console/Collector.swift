import ControlProtocol
import Foundation
import HTTP
import JSON
import Scoring
import Synchronization

/// One component as the console last saw it.
package struct ComponentView: Sendable {
    package var url: String
    package var kind: String
    package var id: String
    package var status: ComponentStatus?
    /// Time series field → per-second values, oldest first.
    package var series: [String: [Double]] = [:]
    /// The component's time of its newest sample, and when this console last read the series:
    /// the next poll asks only for what came since.
    var seriesEnd: Double?
    var seriesReadAt: Date?
    package var lastSeen: Date?
    /// A batch component's latest runs, newest first (`GET /v1/runs`).
    package var runs: [RunSummary] = []
    /// A stream's latest dead letters, newest first, and where all of them are kept; or why they
    /// could not be read (they need a key with scope operate). Read when the count moves.
    package var deadLetters: [DeadLetter] = []
    package var deadLettersKept = ""
    package var deadLetterProblem: String?
    /// A serve replica's shadow comparison, while its route names a shadow (`GET /v1/compare`).
    package var comparison: ShadowReport?
    var deadLettersRead = 0
    /// Why the last poll failed; nil when it answered.
    package var error: String?
    package var isDown: Bool { error != nil }
    /// The component answers but refuses this console's key (401 or 403), with its reason: it is
    /// up, and what it runs is unknown to this console.
    package var refused: String?

    package init(url: String, kind: String = "?", id: String = "", status: ComponentStatus? = nil, series: [String: [Double]] = [:], lastSeen: Date? = nil, error: String? = nil) {
        self.url = url
        self.kind = kind
        self.id = id
        self.status = status
        self.series = series
        self.lastSeen = lastSeen
        self.error = error
    }

    /// `credit@3`, from the status's model.
    package var model: String? { status?.model?.reference }
    /// The model's name (`credit`): components of one kind running it are replicas of one service.
    package var service: String { status?.model?.name ?? "" }
}

/// A line of the events view: a component's event or an operator action.
package struct EventItem: Sendable, Equatable {
    package var at: String
    package var source: String
    package var kind: String
    package var message: String

    /// What keeps the selection on this event when newer ones arrive above it.
    var identity: String { "\(at)|\(source)|\(kind)|\(message)" }
}

/// A component's log as the console follows it.
package struct LogTail: Sendable {
    package var url: String
    package var lines: [LogLine] = []
    /// The last line read (the next poll asks for what came after it).
    var next: Int?
    package var problem: String?

    /// Lines kept for the view.
    static let kept = 2000
}

/// What the console shows, taken by the collector and read by the drawing thread.
package struct FleetSnapshot: Sendable {
    package var components: [ComponentView] = []
    /// (model, alias, version) from the registry.
    package var aliases: [(model: String, alias: String, version: Int)] = []
    /// The registry's versions, newest first, and its latest audit entries.
    package var versions: [ModelVersion] = []
    package var audit: [AuditEntry] = []
    /// Why the registry could not be read this round ("registry http://… unreachable: …"), or nil.
    package var registryProblem: String?
    /// The log the operator has open (`l`): whose, its latest lines, or why it cannot be read.
    package var log: LogTail?
    package var events: [EventItem] = []
    package var takenAt = Date()
    package init() {}
}

/// Polls every component's control API off the UI thread — in parallel, each
/// request with a timeout, so a slow or dead component never holds up the
/// others or the screen — and publishes immutable snapshots (btop's collect()).
package final class Collector: @unchecked Sendable {
    // Safety: `eventCursors`, `known`, `clients` and `registrySeen` are touched only by the
    // collector thread (collect()).
    private var eventCursors: [String: Int] = [:]
    private var known: [String: ComponentView] = [:]
    /// The registry's alias revision last read, with the aliases and audit log read then.
    private var registrySeen: (revision: Int, aliases: [(String, String, Int)], audit: [AuditEntry])?
    /// One client (one kept connection) per component address, kept across polls.
    private var clients: [String: ComponentAPI] = [:]
    private let endpoints: [String]
    /// What the views need besides status, series and events (batch runs, dead letters).
    private let collects: Set<Collected>
    private let registry: RegistryAPI?
    private let key: String?
    private let timeout: Double
    private let state = Mutex(FleetSnapshot())
    private let generation = Atomic<Int>(0)
    private let intervalMilliseconds = Atomic<Int>(1000)
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let operatorEvents = Mutex<[EventItem]>([])
    /// Components the operator acknowledged as gone (`x`), with when: they are dropped until the
    /// fleet directory hears from them again.
    private let acknowledged = Mutex<[String: Date]>([:])
    /// The component whose log is open, and the log read so far (collector thread only after the URL is set).
    private let logWatched = Mutex<String?>(nil)
    private var logRead: LogTail?

    /// `registry`: the registry service (its fleet, versions, aliases and audit log); nil shows
    /// only the `endpoints`.
    package init(endpoints: [String], registry: RegistryAPI?, key: String?, timeout: Double = 1, collects: Set<Collected> = collectedByViews) {
        self.collects = collects
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.registry = registry
        self.key = key
        self.timeout = timeout
    }

    package var snapshot: FleetSnapshot { state.withLock { $0 } }
    package var version: Int { generation.load(ordering: .acquiring) }

    package var interval: Double {
        get { Double(intervalMilliseconds.load(ordering: .relaxed)) / 1000 }
        set { intervalMilliseconds.store(Int(min(60, max(0.25, newValue)) * 1000), ordering: .relaxed) }
    }

    package func start() {
        let thread = Thread { [self] in
            while !stopping.load(ordering: .acquiring) {
                collect()
                _ = wake.wait(timeout: .now() + .milliseconds(intervalMilliseconds.load(ordering: .relaxed)))
            }
            done.signal()
        }
        thread.name = "console-collect"
        thread.start()
    }

    package func stop() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
        done.wait()
    }

    /// Polls now instead of at the next tick.
    package func refresh() { wake.signal() }

    /// An event from outside the components (`switchyard up` restarting one), shown in the events view.
    package func note(source: String, kind: String, message: String) {
        operatorEvents.withLock { $0.append(EventItem(at: isoTimestamp(Date()), source: source, kind: kind, message: message)) }
    }

    /// Follows the log of the component at `url` (nil: none); the next snapshot has it.
    package func watchLog(_ url: String?) {
        logWatched.withLock { $0 = url }
        wake.signal()
    }

    /// Drops a DOWN component from the screen (the operator has seen it); it returns when it
    /// answers again through the fleet directory, or for an endpoint given with --endpoint.
    package func acknowledge(_ url: String) {
        acknowledged.withLock { $0[url] = Date() }
        wake.signal()
    }

    /// One round: find components, poll them all in parallel, publish. A component seen once
    /// stays — DOWN, with when it was last seen — after it stops answering and the fleet
    /// directory forgets it, until the operator acknowledges it.
    package func collect() {
        let acks = acknowledged.withLock { $0 }
        var found = endpoints
        var registryProblem: String?
        do throws(RegistryError) {
            if let registry {
                let live = Date().timeIntervalSince1970 - FleetMember.goneAfter
                let members = try registry.fleet().filter { $0.heartbeat >= live }
                found += members.filter { member in acks[member.url].map { member.heartbeat > $0.timeIntervalSince1970 } ?? true }.map(\.url)
            }
        } catch {
            registryProblem = error.unreachable ? error.message : "registry: \(error.message)"
        }
        found += known.keys.sorted().filter { acks[$0] == nil }
        for url in acks.keys where found.contains(url) && !endpoints.contains(url) {
            acknowledged.withLock { _ = $0.removeValue(forKey: url) }  // heard from again: shown, and acknowledgeable again
        }
        for url in acks.keys where !found.contains(url) { known[url] = nil }
        var seen = Set<String>()
        let urls = found.filter { seen.insert($0).inserted }
        let results = Mutex<[String: (view: ComponentView, cursor: Int, events: [EventItem])]>([:])
        let cursors = eventCursors
        let previous = known
        for url in Array(clients.keys) where !urls.contains(url) { clients[url] = nil }
        for url in urls where clients[url] == nil { clients[url] = try? ComponentAPI(url: url, key: key, timeout: timeout) }
        let apis = clients
        DispatchQueue.concurrentPerform(iterations: urls.count) { i in
            let url = urls[i]
            var view = previous[url] ?? ComponentView(url: url)
            var events: [EventItem] = []
            var cursor = cursors[url] ?? 0
            if let api = apis[url] {
                poll(api, &view, events: &events, cursor: &cursor)
            } else {
                view.error = "not an http://HOST:PORT address"
            }
            results.withLock { $0[url] = (view, cursor, events) }
        }
        let all = results.withLock { $0 }
        var added: [EventItem] = []
        for url in urls {
            guard let result = all[url] else { continue }
            // A death and a return are events of their own (the component cannot report its death).
            let at = isoTimestamp(Date())
            if let before = previous[url], !before.isDown, result.view.isDown {
                added.append(EventItem(at: at, source: "console", kind: "error",
                                       message: "\(before.kind) \(before.id) stopped answering at \(url): \(result.view.error ?? "")"))
            } else if let before = previous[url], before.isDown, !result.view.isDown {
                added.append(EventItem(at: at, source: "console", kind: "recovered", message: "\(result.view.kind) \(result.view.id) answers again at \(url)"))
            }
            known[url] = result.view
            eventCursors[url] = result.cursor
            added += result.events
        }
        var aliases: [(String, String, Int)] = []
        var versions: [ModelVersion] = []
        var audit: [AuditEntry] = []
        if let registry, registryProblem == nil {
            do throws(RegistryError) {
                versions = try registry.versions().sorted { ($0.model, -$0.version) < ($1.model, -$1.version) }
                // Aliases and the audit log change only with the revision: read them when it moved.
                let listing = try registry.aliases(after: registrySeen?.revision)
                if listing.changed || registrySeen == nil {
                    aliases = listing.aliases.map { ($0.model, $0.alias, $0.version) }.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
                    audit = try registry.audit(limit: 200).sorted { $0.id > $1.id }
                    registrySeen = (listing.revision, aliases, audit)
                } else if let seen = registrySeen {
                    (aliases, audit) = (seen.aliases, seen.audit)
                }
            } catch {
                registryProblem = error.unreachable ? error.message : "registry: \(error.message)"
            }
        }
        // By kind, then service (the model's name: replicas of one service side by side), then address.
        let log = readLog()
        let components = urls.compactMap { known[$0] }.sorted { ($0.kind, $0.service, $0.url) < ($1.kind, $1.service, $1.url) }
        state.withLock { s in
            s.components = components
            s.aliases = aliases
            s.versions = versions
            s.audit = audit
            s.registryProblem = registryProblem
            s.log = log
            let merged = s.events + added + operatorEvents.withLock { e in defer { e.removeAll() }; return e }
            s.events = Array(merged.sorted { $0.at < $1.at }.suffix(500))  // ISO 8601 UTC sorts as text
            s.takenAt = Date()
        }
        generation.wrappingAdd(1, ordering: .releasing)
    }

    private func poll(_ api: ComponentAPI, _ view: inout ComponentView, events: inout [EventItem], cursor: inout Int) {
        do throws(ComponentError) {
            let status = try api.status()
            view.status = status
            view.refused = nil
            view.kind = status.kind
            view.id = status.id.isEmpty ? view.url : status.id
            // The rest is best effort: a component that answers its status is up.
            readSeries(api, &view)
            if let items = try? api.events(after: cursor) {
                for item in items {
                    cursor = max(cursor, item.id)
                    events.append(EventItem(at: item.at, source: view.kind + " " + view.id, kind: item.kind, message: item.message))
                }
            }
            if status.kind == "batch", collects.contains(.runs), let page = try? api.runs(limit: 50) { view.runs = page.runs }
            if status.kind == "stream", collects.contains(.deadLetters) { readDeadLetters(api, status, &view) }
            if status.kind == "serve", collects.contains(.comparison) {
                view.comparison = status.route?.shadow == nil ? nil : try? api.comparison(top: 10)
            }
            view.lastSeen = Date()
            view.error = nil
        } catch where error.status == 401 || error.status == 403 {
            view.refused = "\(error.status == 401 ? "401 unauthorized" : "403 forbidden"): \(error.message)"
            view.lastSeen = Date()
            view.error = nil
        } catch {
            view.error = error.unreachable || error.status == 400 ? error.message : "status \(error.status): \(error.message)"
        }
    }

    /// The open log: its last 500 lines at first, then what came since, up to `LogTail.kept`.
    private func readLog() -> LogTail? {
        guard let url = logWatched.withLock({ $0 }) else {
            logRead = nil
            return nil
        }
        var tail = logRead?.url == url ? logRead! : LogTail(url: url)
        do throws(ComponentError) {
            guard let api = clients[url] ?? (try? ComponentAPI(url: url, key: key, timeout: timeout)) else { throw ComponentError("bad address \(url)", status: 400) }
            var page = try api.logs(after: tail.next, tail: 500)
            if let asked = tail.next, page.next < asked {
                // A new process at that address numbers its lines from 1 again.
                page = try api.logs(tail: 500)
                tail.lines.append(LogLine(seq: 0, at: Date().timeIntervalSince1970, text: "— the component restarted: its log starts again —"))
            }
            tail.lines = Array((tail.lines + page.lines).suffix(LogTail.kept))
            tail.next = page.next
            tail.problem = nil
        } catch where error.status == 401 || error.status == 403 {
            tail.problem = "a component's log needs a key with scope operate (\(error.message))"
        } catch {
            tail.problem = "the log cannot be read now: \(error.description)"
        }
        logRead = tail
        return tail
    }

    /// The charts' last 120 seconds: after the first poll, only the samples since the last one are
    /// read and appended (counted on this machine's clock, so a component's clock skew does not matter).
    private func readSeries(_ api: ComponentAPI, _ view: inout ComponentView) {
        let now = Date()
        let elapsed = view.seriesReadAt.map { Int(now.timeIntervalSince($0).rounded(.up)) + 2 } ?? Self.seriesSeconds
        guard let window = try? api.timeseries(window: min(Self.seriesSeconds, max(2, elapsed))) else { return }
        view.seriesReadAt = now
        let fresh = window.times.indices.filter { view.seriesEnd == nil || window.times[$0] > view.seriesEnd! }
        if view.seriesEnd == nil || Set(window.fields) != Set(view.series.keys) {
            view.series = window.columns  // the first read, or the fields changed (another kind at that address)
        } else {
            for field in window.fields {
                let column = window.columns[field] ?? []
                view.series[field, default: []].append(contentsOf: fresh.map { $0 < column.count ? column[$0] : 0 })
                view.series[field] = Array(view.series[field]!.suffix(Self.seriesSeconds))
            }
        }
        view.seriesEnd = window.times.last ?? view.seriesEnd
    }

    static let seriesSeconds = 120

    /// A stream's latest dead letters, read again only when its count moved.
    private func readDeadLetters(_ api: ComponentAPI, _ status: ComponentStatus, _ view: inout ComponentView) {
        let total = Int(status.counters["dead_letters"] ?? 0)
        guard total != view.deadLettersRead else { return }
        do throws(ComponentError) {
            let page = try api.deadLetters(limit: 50)
            view.deadLetters = page.deadLetters
            view.deadLettersKept = page.kept
            view.deadLetterProblem = nil
            view.deadLettersRead = total
        } catch where error.status == 401 || error.status == 403 {
            view.deadLetterProblem = "the latest dead letters need a key with scope operate (they hold events' data)"
            view.deadLettersRead = total
        } catch {
            view.deadLetterProblem = "dead letters: \(error.description)"  // asked again next poll
        }
    }

    // MARK: - Actions

    /// Moves a registry alias off the UI thread; the outcome goes to `done` and the events view.
    package func change(_ registry: RegistryAPI, _ action: RegistryAction, label: String,
                        done: @escaping @Sendable (Result<String, ConsoleError>) -> Void) {
        act(label, detail: { $0 }, done: done) {
            do {
                switch action {
                case .promote(let model, let version, let alias, let expected):
                    // Compare-and-set on what the dialog showed: a move made meanwhile is not undone unseen.
                    let previous = try registry.promote(model: model, version: version, alias: alias, expected: expected)
                    return .success("\(model)@\(alias): \(previous.map { "v\($0)" } ?? "none") → v\(version)")
                case .rollback(let model, let alias):
                    let moved = try registry.rollback(model: model, alias: alias)
                    return .success("\(model)@\(alias): v\(moved.from) → v\(moved.to) (rolled back)")
                case .route(let model, let alias, let route):
                    _ = try registry.setRoute(model: model, alias: alias, route: route)
                    return .success("\(model)@\(alias): " + (route.isSingle ? "all to v\(route.main)" : route.description))
                }
            } catch {
                return .failure(ConsoleError("\(error)"))
            }
        }
    }

    /// Sends an operator action to the component at `url`; the outcome goes to `done` and the events view.
    package func perform(_ action: ComponentAction, on url: String, label: String,
                         done: @escaping @Sendable (Result<String, ConsoleError>) -> Void) {
        act(label, detail: { $0 }, done: done) { [key] in
            do throws(ComponentError) {
                return .success(try ComponentAPI(url: url, key: key).perform(action))
            } catch {
                return .failure(ConsoleError(error.description))
            }
        }
    }

    /// Runs an operator action off the UI thread, records its outcome in the events view,
    /// hands it to `done` and polls at once so the screen shows the effect.
    private func act<T: Sendable>(
        _ label: String, detail: @escaping @Sendable (T) -> String?, done: @escaping @Sendable (Result<T, ConsoleError>) -> Void,
        _ work: @escaping @Sendable () -> Result<T, ConsoleError>
    ) {
        DispatchQueue.global().async { [self] in
            let result = work()
            let message: String
            switch result {
            case .success(let value): message = "\(label): done" + (detail(value).map { " — \($0)" } ?? "")
            case .failure(let error): message = "\(label): failed — \(error.description)"
            }
            operatorEvents.withLock { $0.append(EventItem(at: isoTimestamp(Date()), source: "console", kind: "action", message: message)) }
            done(result)
            refresh()
        }
    }
}
