import ControlProtocol
import Foundation

/// What a view needs collected beyond every component's status, time series and events.
package enum Collected: Sendable, Hashable {
    /// A batch component's latest runs (`GET /v1/runs`).
    case runs
    /// A stream's latest dead letters (`GET /v1/dead-letters`, scope operate).
    case deadLetters
    /// A serve replica's shadow comparison (`GET /v1/compare`), when its route has a shadow.
    case comparison
}

/// One of the console's views, as htop's meters are: its title, what it needs collected, its
/// table (the rows' identities, one row whole for Enter, its sort orders), its own keys and how it
/// draws. Each is registered in `consoleViews`; the controller, the collector, the header, the
/// footer and the help ask the list, so adding a view is its value, its case in `ConsoleView`
/// and its place in the list.
protocol ConsoleScreen: Sendable {
    var view: ConsoleView { get }
    var title: String { get }
    /// The kind of component it shows (`serve`, `batch`, `stream`); nil for the others.
    var kind: String? { get }
    /// What the collector must read for it.
    var collects: Set<Collected> { get }
    /// Its keys on the footer.
    var footerKeys: String { get }
    /// Its table's orders, the first the default (`o` cycles them); none without a table.
    var sortOrders: [String] { get }
    /// The identities of its table's rows, in the order shown; nil when it has no table (then
    /// ↑↓ move between components).
    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]?
    /// The selected row whole, for Enter.
    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])?
    /// Its own keys: what happened, or nil to pass the key on to the console's keys.
    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect?
    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState)
}

extension ConsoleScreen {
    var kind: String? { nil }
    var collects: Set<Collected> { [] }
    var sortOrders: [String] { [] }
    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? { nil }
    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? { nil }
    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? { nil }
}

/// Every view, in the order of their numbers (0–8).
let consoleViews: [any ConsoleScreen] = [
    OverviewScreen(), ServeScreen(), BatchScreen(), StreamScreen(), ModelsScreen(), PredictScreen(), EventsScreen(), RolloutScreen(), DriftScreen(),
]

/// The registered view for `view`.
func screen(_ view: ConsoleView) -> any ConsoleScreen { consoleViews.first { $0.view == view } ?? consoleViews[0] }

/// What the registered views need collected.
package var collectedByViews: Set<Collected> { consoleViews.reduce(into: []) { $0.formUnion($1.collects) } }

/// The current sort order of `view`'s table ("" without a table).
func sortOrder(_ view: ConsoleView, _ state: ConsoleState) -> String {
    let orders = screen(view).sortOrders
    return orders.isEmpty ? "" : orders[(state.sort[view] ?? 0) % orders.count]
}

/// The row `state.row` points at, clamped to the table.
private func selectedRow<T>(_ rows: [T], _ state: ConsoleState) -> T? {
    rows.isEmpty ? nil : rows[min(state.row, rows.count - 1)]
}

struct OverviewScreen: ConsoleScreen {
    let view = ConsoleView.overview
    let title = "Overview"
    let footerKeys = "t run  p pause  s swap  b rollback  m table  Enter open"

    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? {
        let components = snapshot.components
        switch key {
        case .enter:
            // The selected component's own view.
            guard controller.state.selected < components.count else { return controller.fail("Enter: no component selected") }
            let kind = components[controller.state.selected].kind
            guard let view = consoleViews.first(where: { $0.kind == kind })?.view else {
                return controller.fail("Enter: \(kind) has no view of its own")
            }
            controller.state.view = view
            controller.state.row = 0
            return .redraw
        case .character("m"):
            controller.state.compact = !(controller.state.compact ?? (components.count > panelRoom(height: controller.state.screenHeight)))
            controller.state.status = controller.state.compact! ? "the overview as a table (m: panels)" : "the overview as panels (m: a table)"
            controller.state.statusRole = .status
            return .redraw
        case .character("x"):
            guard controller.state.selected < components.count, components[controller.state.selected].isDown else {
                return controller.fail("x: select a DOWN component to acknowledge (it stays on screen until you do)")
            }
            let gone = components[controller.state.selected]
            controller.state.status = "acknowledged: \(gone.kind) \(gone.id) at \(gone.url) is no longer shown"
            controller.state.statusRole = .status
            controller.state.selected = max(0, controller.state.selected - 1)
            return .acknowledge(url: gone.url)
        default:
            return nil
        }
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawOverview(&canvas, snapshot, state) }
}

struct ServeScreen: ConsoleScreen {
    let view = ConsoleView.serve
    let title = "Serve"
    let kind: String? = "serve"
    let footerKeys = "s swap  b rollback"
    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawServeView(&canvas, snapshot, state) }
}

struct BatchScreen: ConsoleScreen {
    let view = ConsoleView.batch
    let title = "Batch"
    let kind: String? = "batch"
    let collects: Set<Collected> = [.runs]
    let footerKeys = "t run  R rerun  c cancel  / filter  o sort  Enter open"
    let sortOrders = ["newest", "status", "rows", "rejects"]

    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? { batchRows(snapshot, state).map { "run:\($0.id)" } }

    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? {
        selectedRow(batchRows(snapshot, state), state).map(runDetail)
    }

    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? {
        guard key == .character("R") || key == .character("c") else { return nil }
        let verb = key == .character("R") ? "rerun" : "cancel"
        guard let run = selectedRow(batchRows(snapshot, controller.state), controller.state) else { return controller.fail("\(verb): select a run first") }
        if verb == "cancel" && run.isFinished { return controller.fail("cancel: run \(run.id) has already finished (\(run.status)); R reruns it") }
        return controller.command("\(verb) \(run.id)", snapshot)
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawBatchView(&canvas, snapshot, state) }
}

struct StreamScreen: ConsoleScreen {
    let view = ConsoleView.stream
    let title = "Stream"
    let kind: String? = "stream"
    let collects: Set<Collected> = [.deadLetters]
    let footerKeys = "p pause  s swap  o sort  Enter open"
    let sortOrders = ["newest", "reason"]

    /// The dead letters are its table; without any, ↑↓ move between components.
    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? {
        let rows = deadLetterRows(snapshot, state)
        return rows.isEmpty ? nil : rows.map { "dead:\($0.at)|\($0.source)" }
    }

    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? {
        selectedRow(deadLetterRows(snapshot, state), state).map { d in
            ("dead letter \(d.source)", ["at \(isoTimestamp(Date(timeIntervalSince1970: d.at))) (UTC)", "event id \(d.id.isEmpty ? "–" : d.id)",
                                         "from \(d.source)", "", "why: \(d.reason)", "", "the event as it came:", d.event])
        }
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawStreamView(&canvas, snapshot, state) }
}

struct ModelsScreen: ConsoleScreen {
    let view = ConsoleView.models
    let title = "Models"
    let footerKeys = "P promote  b rollback  / filter  o sort  Enter open"
    let sortOrders = ["model", "AUC", "newest"]

    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? { modelRows(snapshot, state).map(\.reference) }

    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? {
        guard let v = selectedRow(modelRows(snapshot, state), state) else { return nil }
        let audit = snapshot.audit.filter { $0.model == v.model && ($0.toVersion == v.version || $0.fromVersion == v.version) }
        let aliases: String = v.aliases.isEmpty ? "none" : v.aliases.joined(separator: ", ")
        let metrics: String = v.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: "  ")
        let ids: [String] = snapshot.components.filter { $0.model == v.reference }.map(\.id)
        var lines: [String] = ["created \(v.createdAt) by \(v.createdBy)", "sha256 \(v.sha256)", "aliases: \(aliases)", "metrics: \(metrics)"]
        lines.append("running on: " + (ids.isEmpty ? "nothing" : ids.joined(separator: ", ")))
        lines += ["", "audit entries that name it, newest first:"]
        lines += audit.map(Self.auditLine)
        return ("version \(v.reference)", lines)
    }

    private static func auditLine(_ e: AuditEntry) -> String {
        let alias = e.alias.map { "@\($0)" } ?? ""
        let from = e.fromVersion.map { "v\($0)" } ?? "none", to = e.toVersion.map { "v\($0)" } ?? "none"
        return "  \(e.at)  \(e.action) \(e.model)\(alias)  \(from) → \(to)  by \(e.who)" + (e.detail.map { "  (\($0))" } ?? "")
    }

    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? {
        guard key == .character("P") || key == .character("b") else { return nil }
        guard let v = selectedRow(modelRows(snapshot, controller.state), controller.state) else {
            return controller.fail(key == .character("P") ? "promote: no version to promote" : "rollback: no model selected")
        }
        return controller.command(key == .character("P") ? "promote \(v.reference) production" : "rollback \(v.model) production", snapshot)
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawModelsView(&canvas, snapshot, state) }
}

struct PredictScreen: ConsoleScreen {
    let view = ConsoleView.predict
    let title = "Predict"
    let footerKeys = "e edit  x missing  Enter send  / replay"

    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? {
        controller.state.predict == nil ? nil : controller.handlePredict(key)
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawPredict(&canvas, state) }
}

struct EventsScreen: ConsoleScreen {
    let view = ConsoleView.events
    let title = "Events"
    let footerKeys = "/ filter  o sort  Enter open"
    let sortOrders = ["newest", "kind", "source"]

    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? { eventRows(snapshot, state).map(\.identity) }

    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? {
        selectedRow(eventRows(snapshot, state), state).map { e in ("event", ["at \(e.at) (UTC)", "from \(e.source)", "kind \(e.kind)", "", e.message]) }
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) { drawEvents(&canvas, snapshot, state) }
}
