import ControlProtocol
import Foundation
import JSON
import Scoring

/// The console's views: 0 the overview, 1–8 the detail views.
package enum ConsoleView: Int, CaseIterable, Sendable {
    case overview = 0, serve, batch, stream, models, predict, events, rollout, drift

    /// Its title, from its registered view (`consoleViews`).
    var title: String { screen(self).title }
}

/// A change in the registry: components that follow the alias pick it up.
package enum RegistryAction: Equatable, Sendable {
    /// `expected`: where the alias pointed when the operator confirmed.
    case promote(model: String, version: Int, alias: String, expected: AliasExpectation)
    case rollback(model: String, alias: String)
    /// Splits (or shadows) the alias; a route of one version ends a split.
    case route(model: String, alias: String, route: AliasRoute)
}

/// An action waiting for the operator's yes: a component's control API call, or a registry change.
package struct PendingAction: Sendable {
    package var question: String
    package var action: ComponentAction?
    package var component: ComponentView?
    package var registry: RegistryAction?
    package var label: String
    /// Yes quits (and, under `switchyard up`, stops what it started).
    package var quit = false
}

/// Everything the screen shows besides the fleet snapshot.
package struct ConsoleState: Sendable {
    package var view = ConsoleView.overview
    package var selected = 0
    /// What is selected, by identity: the component's URL and the table row's key (a run id,
    /// a version reference), so a refresh that adds a run or a component keeps the same one.
    package var selectedURL: String?
    package var rowKey: String?
    /// The selected row of the Batch and Models tables.
    package var row = 0
    /// The API key's scope when the local key store knows it (`read`, `operate`, `admin`).
    package var scope: String?
    package var showHelp = false
    /// The component whose log is open (`l`), what to call it, and how far it is scrolled (nil: it follows the end).
    package var logOf: String?
    package var logTitle = ""
    package var logScroll: Int?
    /// The drill-down over the view (Enter on a run, version or event), and how far it is scrolled.
    package var detail: (title: String, lines: [String])?
    package var detailScroll = 0
    /// Rows a page holds (PgUp/PgDn), from the terminal's height.
    package var pageRows = tableRows(height: minimumSize.height)
    /// The terminal's height, as last drawn.
    package var screenHeight = minimumSize.height
    /// When quitting stops more than the console (under `switchyard up`), `q` asks this first.
    package var quitQuestion: String?
    /// The `:` command line (nil when closed) and the `/` filter.
    package var commandLine: String?
    package var filter = ""
    package var filtering = false
    /// The status line's message; it goes after `statusLifetime` (an error after three times that).
    package var status = "press ? for help" { didSet { statusSince = now } }
    package var statusRole = Role.status
    package var statusSince = Date()
    /// Commands given on `:`, oldest first (↑ and ↓ walk them), and where the walk is.
    package var history: [String] = []
    package var historyIndex: Int?
    package var confirm: PendingAction?
    package var readOnly = false
    /// Each table's sort order, as an index into `sortOrders` (`o` cycles it).
    package var sort: [ConsoleView: Int] = [:]
    /// The overview as a table, a line per component with replicas grouped: nil chooses (a table
    /// when the panels would not all fit), `m` sets it either way.
    package var compact: Bool?
    package var readOnlyReason = "started with --read-only"
    package var interval = 1.0
    package var now = Date()
    /// The Predict view's form, made when the view opens on a serve component.
    package var predict: PredictForm?
    /// Why there is no form (no serve component, model not in the local registry).
    package var predictProblem = ""
    /// A record for the Predict form once it is made (the Rollout view's Enter on a disagreement).
    package var pendingRecord: String?
    package init() {}
}

/// The smallest terminal the layout is made for.
package let minimumSize = (width: 80, height: 24)

/// Draws one frame of the console into a canvas (collect, then draw: this only reads).
package func drawConsole(_ snapshot: FleetSnapshot, _ state: ConsoleState, width: Int, height: Int, unicode: Bool) -> Canvas {
    var canvas = Canvas(width: width, height: height, unicode: unicode)
    guard width >= minimumSize.width, height >= minimumSize.height else {
        let lines = ["The terminal is \(width)×\(height).", "The console needs at least \(minimumSize.width)×\(minimumSize.height);", "enlarge the window, or press q to quit."]
        for (i, line) in lines.enumerated() { canvas.put(max(0, (width - line.count) / 2), max(0, height / 2 - 1 + i), line, i == 0 ? .warn : .text) }
        return canvas
    }
    drawHeader(&canvas, snapshot, state)
    screen(state.view).draw(&canvas, snapshot, state)
    drawFooter(&canvas, state)
    if let confirm = state.confirm { drawDialog(&canvas, confirm.question) }
    if state.logOf != nil { drawLog(&canvas, snapshot.log, state) }
    if let detail = state.detail { drawDetail(&canvas, detail, scroll: state.detailScroll) }
    if state.showHelp { drawHelp(&canvas) }
    return canvas
}

private func drawHeader(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    let time = clock(state.now) + " UTC"
    func tabLine(titles: Bool) -> String {
        guard titles else { return ConsoleView.allCases.map { $0 == state.view ? "[\($0.rawValue) \($0.title)]" : "\($0.rawValue)" }.joined(separator: " ") }
        return ConsoleView.allCases.map { $0 == state.view ? "[\($0.rawValue) \($0.title)]" : " \($0.rawValue) \($0.title) " }.joined()
    }
    // On a narrow terminal only the current view's title is spelled out.
    var tabs = tabLine(titles: true)
    if tabs.count > canvas.width - 12 - time.count - 2 { tabs = tabLine(titles: false) }
    canvas.put(0, 0, " Switchyard ", .title)
    canvas.put(12, 0, tabs, .dim, limit: canvas.width - 12 - time.count - 2)
    if let start = tabs.range(of: "[")?.lowerBound {
        canvas.paint(12 + tabs.distance(from: tabs.startIndex, to: start), 0, state.view.title.count + 4, .selected)
    }
    canvas.put(canvas.width - time.count - 1, 0, time, .dim)
    // The version line: each alias against what every component runs.
    var x = 1
    // What needs on-call's eyes first: what is down, behind, failing or erroring, by name.
    let problems = healthProblems(snapshot, now: state.now)
    let summary = "\(snapshot.components.count) component\(snapshot.components.count == 1 ? "" : "s")"
        + (problems.isEmpty ? "" : ": " + problems.joined(separator: ", ")) + (canvas.unicode ? "  │ " : "  | ")
    canvas.put(x, 1, summary, problems.isEmpty ? .dim : .error)
    x += summary.count
    let models = Set(snapshot.aliases.map(\.model)).sorted()
    for model in models {
        let aliases = snapshot.aliases.filter { $0.model == model }.map { "\($0.alias)=v\($0.version)" }.joined(separator: " ")
        let text = "\(model): \(aliases)  "
        canvas.put(x, 1, text, .text)
        x += text.count
    }
    for component in snapshot.components where !component.isDown {
        guard let model = component.model else { continue }
        let parts = model.split(separator: "@")
        let following = component.status?.following
        let expected = snapshot.aliases.first { $0.model == String(parts.first ?? "") && $0.alias == following }?.version
        let skew = expected != nil && "\(expected!)" != String(parts.last ?? "")
        let text = "\(component.kind) v\(parts.last ?? "?")\(skew ? (canvas.unicode ? "≠" : "!=") : "") "
        canvas.put(x, 1, text, skew ? .warn : .ok)
        x += text.count
    }
}

private func drawFooter(_ canvas: inout Canvas, _ state: ConsoleState) {
    let y = canvas.height - 1
    if let line = state.commandLine {
        canvas.put(0, y, ":" + line + (canvas.unicode ? "█" : "_"), .value)
        return
    }
    if state.filtering {
        canvas.put(0, y, "/" + state.filter + (canvas.unicode ? "█" : "_"), .value)
        return
    }
    // What the key may not do, beside the polling rate.
    let rate = (state.scope == "operate" && !state.readOnly ? "key: operate (s, b, P need admin)  " : "")
        + String(format: "polling every %.2gs", state.interval)
    // A message goes after a while (an error stays three times as long) and is never cut: when
    // it does not fit beside the rate it takes the whole line, then the line above.
    let lifetime = state.statusRole == .error ? 3 * statusLifetime : statusLifetime
    let message = state.now.timeIntervalSince(state.statusSince) > lifetime ? "" : " " + state.status
    let beside = canvas.width - rate.count - 2
    if message.count <= beside {
        canvas.put(0, canvas.height - 2, message, state.statusRole)
        canvas.put(canvas.width - rate.count - 1, canvas.height - 2, rate, .dim)
    } else {
        let width = canvas.width - 1
        let lines = wrap(message, width: width)
        for (i, line) in lines.suffix(3).enumerated() {
            canvas.put(0, canvas.height - 1 - min(lines.count, 3) + i, line.padding(toLength: width, withPad: " ", startingAt: 0), state.statusRole)
        }
    }
    let arrows = canvas.unicode ? "↑↓" : "j/k"
    let viewKeys = screen(state.view).footerKeys
    let keys = state.readOnly
        ? " q quit  ? help  0-8 views  \(arrows) select  r refresh  +/- rate  (actions disabled: \(state.readOnlyReason))"
        : " q quit  ? help  0-8 views  \(arrows) select  \(viewKeys)  : command  r refresh"
    canvas.put(0, y, keys, .dim)
}

/// Seconds a status message stays on the status line.
package let statusLifetime = 15.0

/// `text` in lines of at most `width` characters, broken between words where it can be.
func wrap(_ text: String, width: Int) -> [String] {
    guard width > 0 else { return [] }
    var lines: [String] = []
    var line = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: false) {
        var word = Substring(word)
        if !line.isEmpty && line.count + 1 + word.count > width {
            lines.append(line)
            line = ""
        }
        while word.count > width {  // a word longer than a line is cut where the line ends
            if !line.isEmpty { lines.append(line) }
            lines.append(String(word.prefix(width)))
            word = word.dropFirst(width)
            line = ""
        }
        line += (line.isEmpty ? "" : " ") + word
    }
    if !line.isEmpty { lines.append(line) }
    return lines
}

func drawOverview(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    // Panels grow with the terminal (their sparklines get more rows), from 4 rows to 12, when every
    // component fits with 2 rows to spare; with more components than fit at 4 rows it is a table
    // (a line each, replicas grouped), unless the operator chose panels with `m` (they scroll).
    let top = 2
    let space = canvas.height - top - 2
    let fair = space / max(1, snapshot.components.count)
    let panelHeight = fair >= 6 ? min(12, fair) : 4
    let room = max(1, space / panelHeight)
    guard !snapshot.components.isEmpty else {
        canvas.put(2, top + 1, "No components found in the fleet directory or given with --endpoint.", .dim)
        canvas.put(2, top + 2, "Start one (switchyard serve | batch | stream), or run switchyard up.", .dim)
        return
    }
    let selected = min(state.selected, snapshot.components.count - 1)
    if state.compact ?? (snapshot.components.count > panelRoom(height: canvas.height)) {
        drawTable(&canvas, snapshot, selected: selected, now: state.now)
        return
    }
    let first = max(0, min(selected - room + 1, snapshot.components.count - room))
    let shown = first..<min(snapshot.components.count, first + room)
    for (slot, index) in shown.enumerated() {
        drawPanel(&canvas, snapshot.components[index], y: top + slot * panelHeight, height: panelHeight, selected: index == selected, now: state.now)
        drawMarks(&canvas, snapshot.components[index], snapshot.events, y: top + slot * panelHeight + panelHeight - 1, now: state.now)
    }
    // Replicas of one service: their totals on the bottom edge of the group's last panel shown.
    for group in replicaGroups(snapshot.components) where group.count > 1 {
        guard let totals = replicaTotals(snapshot.components[group]), let last = group.last(where: { shown.contains($0) }) else { continue }
        // Right of the swap/run legend (drawMarks); on a narrow terminal the end gives way to "…".
        let from = panelGraphWidth(canvas.width) + 24
        let room = canvas.width - 2 - from
        guard room > 12 else { continue }
        var text = " " + totals.text + " "
        if text.count > room { text = String(text.prefix(room - 2)) + "… " }
        canvas.put(canvas.width - 2 - text.count, top + (last - first) * panelHeight + panelHeight - 1, text, totals.role)
    }
    if snapshot.components.count > room {
        canvas.put(canvas.width - 16, canvas.height - 3, "\(first + 1)-\(min(snapshot.components.count, first + room)) of \(snapshot.components.count)", .dim)
    }
}

/// Runs of consecutive components of one kind and service (the collector keeps replicas side by side).
func replicaGroups(_ components: [ComponentView]) -> [Range<Int>] {
    var groups: [Range<Int>] = []
    var i = 0
    while i < components.count {
        let c = components[i]
        var j = i + 1
        while j < components.count, components[j].kind == c.kind, !c.service.isEmpty, components[j].service == c.service { j += 1 }
        groups.append(i..<j)
        i = j
    }
    return groups
}

/// "serve credit: 3 replicas, 2 up; 150 req/s, worst p99 1.5ms" (their sums and worst), in the warn role when some
/// are down or their versions differ; nil for a single component.
func replicaTotals(_ members: ArraySlice<ComponentView>) -> (text: String, role: Role)? {
    guard members.count > 1, let c = members.first else { return nil }
    func last(_ c: ComponentView, _ field: String) -> Double { c.series[field]?.last ?? 0 }
    let live = members.filter { !$0.isDown }
    var total = "\(c.kind) \(c.service): \(members.count) replicas, \(live.count) up"
    if c.kind == "serve" {
        let requests = live.map { last($0, "requests") }.reduce(0, +)
        let p99 = live.compactMap { last($0, "requests") > 0 ? $0.series["p99_ms"]?.last : nil }.max()
        total += "; \(short(requests)) req/s, worst p99 \(milliseconds(p99, compact: true))"
    } else if c.kind == "stream" {
        total += "; backlog \(short(live.map { $0.status?.stream?.backlog.events ?? 0 }.reduce(0, +))), out \(short(live.map { last($0, "out") }.reduce(0, +)))/s"
    }
    let versions = Set(live.compactMap(\.model))
    if versions.count > 1 { total += "; versions differ: " + versions.sorted().joined(separator: ", ") }
    return (total, live.count < members.count || versions.count > 1 ? .warn : .title)
}

/// The overview as a table: a line per component, replicas of one service (same kind, same
/// model name) under a line with their totals — what k9s shows for many pods.
private func drawTable(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, selected: Int, now: Date) {
    let components = snapshot.components
    func last(_ c: ComponentView, _ field: String) -> Double { c.series[field]?.last ?? 0 }
    /// What the component is doing now, in a few words, by kind.
    func doing(_ c: ComponentView) -> (String, Role) {
        if c.isDown { return ("DOWN, last seen " + (c.lastSeen.map { duration(now.timeIntervalSince($0)) + " ago" } ?? "never"), .error) }
        if c.refused != nil { return ("UNAUTHORIZED: refuses this console's key", .error) }
        if let outage = dependencyOutage(c.status, now: now) { return (outage, .error) }
        switch c.kind {
        case "serve":
            let requests = last(c, "requests")
            let errors = requests > 0 ? last(c, "errors") / requests * 100 : 0
            let p99 = requests > 0 ? c.series["p99_ms"]?.last : nil
            let state = c.status?.state ?? "?"
            return ((state == "serving" ? "" : state + "  ") + String(format: "%@ req/s  p99 %@  5xx %.1f%%", short(requests), milliseconds(p99, compact: true), errors),
                    errors > 1 ? .error : .value)
        case "batch":
            if let run = c.status?.batch?.run { return (String(format: "run %d %.0f%%  ETA %@", run.id, run.fraction * 100, run.etaSeconds.map(duration) ?? "–"), .accent) }
            return ("idle  queue \(c.status?.batch?.queue ?? 0)", .value)
        case "stream":
            let backlog = c.status?.stream?.backlog
            let status = backlog?.status ?? "?"
            let state = c.status?.state ?? "?"
            return ((state == "running" ? "" : state + "  ") + "\(status)  backlog \(short(backlog?.events ?? 0))  out \(short(last(c, "out")))/s",
                    status == "OK" ? .value : .warn)
        default:
            return ("", .dim)
        }
    }
    // Rows: a header line before each group of two or more replicas, then its members.
    var rows: [(text: String, role: Role, index: Int?)] = []
    for group in replicaGroups(components) {
        if group.count > 1, let totals = replicaTotals(components[group]) { rows.append((totals.text, totals.role, nil)) }
        for k in group { rows.append(("", .text, k)) }
    }
    let top = 3, room = canvas.height - top - 3
    canvas.put(1, 2, "KIND   ID                 MODEL        NOW", .dim, limit: canvas.width - 2)
    let selectedRow = rows.firstIndex { $0.index == selected } ?? 0
    let first = max(0, min(selectedRow - room + 1, rows.count - room))
    for (slot, row) in rows[first..<min(rows.count, first + room)].enumerated() {
        guard let index = row.index else {
            canvas.put(1, top + slot, (canvas.unicode ? "▾ " : "v ") + row.text, row.role, limit: canvas.width - 2)
            continue
        }
        let c = components[index]
        let (now, role) = doing(c)
        let name = c.id.isEmpty ? c.url : c.id
        let text = column(c.kind, 7) + column(name, 19) + column(c.model ?? "–", 13) + now
        canvas.put(1, top + slot, text, index == selected ? .selected : role, limit: canvas.width - 2)
    }
    if rows.count > room { canvas.put(canvas.width - 22, canvas.height - 3, "\(first + 1)-\(min(rows.count, first + room)) of \(rows.count) rows", .dim) }
}

/// Each component's trouble, worst first: DOWN, an unreachable dependency, a stalled or
/// falling-behind stream, 5xx over 1% or 4xx over 10% of the last second's requests.
func healthProblems(_ snapshot: FleetSnapshot, now: Date) -> [String] {
    var down: [String] = [], other: [String] = []
    for c in snapshot.components {
        let name = c.id.isEmpty ? c.url : c.id
        if c.isDown {
            down.append("\(name) DOWN")
            continue
        }
        if c.refused != nil {
            down.append("\(name) UNAUTHORIZED")
            continue
        }
        if dependencyOutage(c.status, now: now) != nil {
            if let d = c.status?.dependencies.first(where: { !$0.up }) { other.append("\(name) \(d.name) unreachable") }
        }
        if let backlog = c.status?.stream?.backlog.status, backlog == "STALLED" || backlog == "FALLING_BEHIND" {
            other.append("\(name) \(backlog)")
        }
        // Drift: the worst input field at or past the alert level (the Drift view has all of them).
        for d in c.status?.drift ?? [] {
            if let worst = d.worst, let psi = worst.psi, psi >= 0.25 { other.append(String(format: "%@ v%d DRIFT %@ PSI %.2f", name, d.version, worst.name, psi)) }
        }
        if c.kind == "serve", let requests = c.series["requests"]?.last, requests > 0 {
            let serverErrors = (c.series["errors"]?.last ?? 0) / requests, clientErrors = (c.series["client_errors"]?.last ?? 0) / requests
            if serverErrors > 0.01 { other.append(String(format: "%@ 5xx %.0f%%", name, serverErrors * 100)) }
            if clientErrors > 0.10 { other.append(String(format: "%@ 4xx %.0f%%", name, clientErrors * 100)) }
        }
    }
    if let problem = snapshot.registryProblem { other.append(problem) }
    return down + other
}

/// 75 → "1m15s"; 90000 → "1d1h".
func duration(_ seconds: Double) -> String {
    let s = Int(max(0, seconds))
    switch s {
    case ..<60: return "\(s)s"
    case ..<3600: return "\(s / 60)m\(s % 60)s"
    case ..<86_400: return "\(s / 3600)h\(s % 3600 / 60)m"
    default: return "\(s / 86_400)d\(s % 86_400 / 3600)h"
    }
}

/// The console's one time zone is UTC (the header says so): "22:10:49" of a date.
func clock(_ date: Date) -> String {
    let s = Int(date.timeIntervalSince1970.rounded(.down)) % 86_400
    let t = s < 0 ? s + 86_400 : s
    return String(format: "%02d:%02d:%02d", t / 3600, t % 3600 / 60, t % 60)
}

/// "11-29 22:10:49" (or "11-29 22:10" without seconds) of an RFC 3339 UTC timestamp; "–" for none.
func shortTime(_ iso: String?, seconds: Bool = true) -> String {
    guard let iso, let at = parseTimestamp(iso) else { return iso.map { String($0.prefix(seconds ? 14 : 11)) } ?? "–" }
    let utc = Array(isoTimestamp(Date(timeIntervalSince1970: at)))  // YYYY-MM-DDTHH:MM:SS.mmmZ, whatever offset it came with
    return String(utc[5..<10]) + " " + String(utc[11..<(seconds ? 19 : 16)])
}

/// A latency in milliseconds for people: "0.42 ms", "12.5 ms", "13.2 s"; "–" for no data.
/// `compact` leaves out the space and a digit for a panel's tight line ("2.5ms").
func milliseconds(_ x: Double?, compact: Bool = false) -> String {
    guard let x, x.isFinite else { return "–" }
    let space = compact ? "" : " "
    switch x {
    case ..<10: return String(format: compact ? "%.1f" : "%.2f", x) + space + "ms"
    case ..<1000: return String(format: compact ? "%.0f" : "%.1f", x) + space + "ms"
    default: return String(format: "%.1f", x / 1000) + space + "s"
    }
}

/// `text` as a table column `width` wide: padded, or cut with "…" so the next column always
/// starts after a space (a long id or alias list never runs into the next column).
func column(_ text: String, _ width: Int) -> String {
    text.count < width ? text.padding(toLength: width, withPad: " ", startingAt: 0) : String(text.prefix(max(0, width - 2))) + "… "
}

/// A number with a k/M suffix.
func short(_ x: Double) -> String {
    switch abs(x) {
    case 1e6...: String(format: "%.1fM", x / 1e6)
    case 1e4...: String(format: "%.1fk", x / 1e3)
    case 99.95...: String(format: "%.0f", x)  // 99.96 is "100", not "100.0"
    default: String(format: x == x.rounded() ? "%.0f" : "%.1f", x)
    }
}

private func drawPanel(_ canvas: inout Canvas, _ c: ComponentView, y: Int, height: Int, selected: Bool, now: Date) {
    let width = canvas.width
    let state = c.status?.state ?? "?"
    let title = "\(c.kind) \(c.id.isEmpty ? c.url : c.id)  \(c.model ?? "no model")  \(c.isDown ? "DOWN" : c.refused != nil ? "UNAUTHORIZED" : state)"
    let failing = c.isDown || c.refused != nil || dependencyOutage(c.status, now: now) != nil
    canvas.box(x: 0, y: y, width: width, height: height, title: title, role: selected ? .selected : .border, titleRole: failing ? .error : .title)
    let inner = width - 4
    if let refused = c.refused {
        canvas.put(2, y + 1, "UNAUTHORIZED \(canvas.unicode ? "—" : "-") answers at \(c.url), refuses this console's key", .error, limit: inner)
        canvas.put(2, y + 2, refused + "; start the console with --key KEY (scope read or more)", .dim, limit: inner)
        return
    }
    if c.isDown {
        let ago = c.lastSeen.map { "last seen \(duration(now.timeIntervalSince($0))) ago" } ?? "never answered"
        canvas.put(2, y + 1, "DOWN \(canvas.unicode ? "—" : "-") \(ago) at \(c.url)", .error, limit: inner)
        canvas.put(2, y + 2, c.error ?? "", .dim, limit: inner)
        return
    }
    let unicode = canvas.unicode
    let s = c.series
    func last(_ field: String) -> Double { s[field]?.last ?? 0 }
    /// A latency of the last second, or nil when nothing was measured in it (`count` was 0).
    func latency(_ field: String, count: String) -> Double? { last(count) > 0 ? s[field]?.last : nil }
    let chartRows = max(1, height - 3)
    /// A sparkline over the panel's chart rows, drawn from the first chart row down.
    func chart(_ x: Int, _ values: [Double], _ w: Int, _ role: Role, ceiling: Double? = nil) {
        for (r, line) in sparkRows(values, width: w, rows: chartRows, unicode: unicode, ceiling: ceiling).enumerated() { canvas.put(x, y + 2 + r, line, role) }
    }
    let graph = panelGraphWidth(width)
    switch c.kind {
    case "serve":
        // 4xx and 5xx apart: a flood of bad requests is not health, and not the server's fault either.
        let requests = last("requests")
        let serverErrors = requests > 0 ? last("errors") / requests * 100 : 0
        let clientErrors = requests > 0 ? last("client_errors") / requests * 100 : 0
        canvas.put(2, y + 1, String(format: "req/s %@  p50 %@  p99 %@  4xx %.1f%%  5xx %.1f%%  in flight %@",
                                    short(requests), milliseconds(latency("p50_ms", count: "requests")), milliseconds(latency("p99_ms", count: "requests")),
                                    clientErrors, serverErrors, short(last("in_flight"))),
                   serverErrors > 1 ? .error : clientErrors > 10 ? .warn : .value, limit: inner)
        canvas.put(2, y + 2, "req/s ", .dim)
        chart(8, s["requests"] ?? [], graph, .graphLow)
        canvas.put(9 + graph, y + 2, " p99 ", .dim)
        chart(14 + graph, s["p99_ms"] ?? [], graph, .graphMid)
    case "batch":
        var line: String
        if let run = c.status?.batch?.run {
            let eta = "ETA " + (run.etaSeconds.map(duration) ?? "–")
            line = String(format: "run %d %3.0f%%  %@ rows  %@ rows/s  %@  %@", run.id, run.fraction * 100,
                          short(Double(run.rowsDone)), short(run.rowsPerSecond), eta, run.file)
        } else {
            let counters = c.status?.counters ?? NamedNumbers()
            line = "idle  runs: \(Int(counters["runs_succeeded"] ?? 0)) ok, \(Int(counters["runs_failed"] ?? 0)) failed"
        }
        let queue = c.status?.batch?.queue ?? 0
        let next = c.status?.batch?.nextRunAt.map { "next \($0.dropFirst(11).prefix(5))Z" } ?? "no schedule"
        canvas.put(2, y + 1, line + "  queue \(queue)  \(next)", queue > 0 ? .warn : .value, limit: inner)
        canvas.put(2, y + 2, "rows/s ", .dim)
        chart(9, s["rows"] ?? [], graph, .graphLow)
        canvas.put(10 + graph, y + 2, " progress ", .dim)
        chart(20 + graph, s["progress"] ?? [], graph, .graphMid, ceiling: 1)
    case "stream":
        let backlog = c.status?.stream?.backlog
        let status = backlog?.status ?? "?"
        let age = backlog?.ageSeconds.map { $0 < 60 ? String(format: "%.1fs", $0) : duration($0) } ?? "–"
        canvas.put(2, y + 1, status, status == "OK" ? .ok : status == "FALLING_BEHIND" || status == "PAUSED" ? .warn : .error)
        canvas.put(3 + status.count, y + 1, " backlog \(short(backlog?.events ?? 0))  age \(age)  in \(short(last("in")))/s  out \(short(last("out")))/s  dead \(short(last("dead")))/s  p99 \(milliseconds(latency("p99_ms", count: "out"), compact: true))",
                   .value, limit: inner - status.count - 1)
        canvas.put(2, y + 2, "out/s ", .dim)
        chart(8, s["out"] ?? [], graph, .graphLow)
        canvas.put(9 + graph, y + 2, " backlog ", .dim)
        chart(18 + graph, s["backlog"] ?? [], graph, .graphHigh)
    default:
        canvas.put(2, y + 1, "unknown component kind \"\(c.kind)\" at \(c.url)", .dim, limit: inner)
    }
    // A dependency in an outage (a stream's Redis, the registry) takes the first line: it is what on-call needs.
    if let outage = dependencyOutage(c.status, now: now) {
        canvas.put(2, y + 1, outage.padding(toLength: inner, withPad: " ", startingAt: 0), .error, limit: inner)
    }
}

/// "source redis://… unreachable for 1m2s: …" for the first dependency a status reports down, or nil.
func dependencyOutage(_ status: ComponentStatus?, now: Date) -> String? {
    guard let d = status?.dependencies.first(where: { !$0.up }) else { return nil }
    let since = d.since.flatMap(parseTimestamp)
    let how = since.map { "unreachable for \(duration(now.timeIntervalSince1970 - $0))" } ?? "unreachable"
    return "\(d.name) \(d.address) \(how): \(d.error ?? "")"
}

/// Swaps and batch runs of the last minutes, marked under the panel's first
/// sparkline (one column a second, newest right) on the panel's bottom edge.
private func drawMarks(_ canvas: inout Canvas, _ c: ComponentView, _ events: [EventItem], y: Int, now: Date) {
    guard !c.isDown else { return }
    let graph = panelGraphWidth(canvas.width)
    let x0 = c.kind == "batch" ? 9 : 8
    let marks = chartMarks(c, events, now: now, unicode: canvas.unicode).filter { $0.age >= 0 && $0.age < graph }
    for mark in marks { canvas.put(x0 + graph - 1 - mark.age, y, mark.glyph, .accent) }
    if !marks.isEmpty { canvas.put(x0 + graph + 1, y, canvas.unicode ? "◆ swap ▲ run" : "S swap R run", .dim) }
}

/// The width of each of an overview panel's two sparklines on a terminal `width` columns wide.
func panelGraphWidth(_ width: Int) -> Int { max(10, (width - 4 - 40) / 2) }

/// The Events view's rows: newest first, filtered.
func eventRows(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [EventItem] {
    let filter = state.filter.lowercased()
    let events = snapshot.events.reversed().filter { filter.isEmpty || "\($0.source) \($0.kind) \($0.message)".lowercased().contains(filter) }
    switch sortOrder(.events, state) {
    case "kind": return events.sorted { ($0.kind, $1.at) < ($1.kind, $0.at) }
    case "source": return events.sorted { ($0.source, $1.at) < ($1.source, $0.at) }
    default: return events
    }
}

/// Rows a view's table shows on a terminal `height` rows tall (a page for PgUp/PgDn).
package func tableRows(height: Int) -> Int { max(1, height - 7) }

/// Overview panels of 4 rows that fit a terminal `height` rows tall.
package func panelRoom(height: Int) -> Int { max(1, (height - 4) / 4) }

func drawEvents(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    let events = eventRows(snapshot, state)
    canvas.put(1, 2, "Events by \(sortOrder(.events, state)) (o sorts), times in UTC" + (state.filter.isEmpty ? "" : " matching \"\(state.filter)\"") + " (\(events.count))"
        + (events.isEmpty ? "" : " — Enter shows one whole"), .title, limit: canvas.width - 2)
    let room = tableRows(height: canvas.height)
    let selected = min(state.row, max(0, events.count - 1))
    let first = max(0, min(selected - room + 1, events.count - room))
    for (slot, i) in (first..<min(events.count, first + room)).enumerated() {
        let event = events[i]
        let time = String(shortTime(event.at).suffix(8))
        let role: Role = i == selected ? .selected : event.kind == "error" ? .error : event.kind == "action" ? .accent : .text
        canvas.put(1, 3 + slot, "\(time)  \(column(event.source, 23))\(column(event.kind, 8))\(event.message)",
                   role, limit: canvas.width - 2)
    }
    if events.count > room { canvas.put(canvas.width - 22, canvas.height - 3, "\(first + 1)-\(min(events.count, first + room)) of \(events.count)", .dim) }
}

/// A component's log over the view: the end of it while following, wrapped; scrolled back with
/// ↑ PgUp Home, End follows again.
private func drawLog(_ canvas: inout Canvas, _ log: LogTail?, _ state: ConsoleState) {
    let x = 1, y = 1, width = canvas.width - 2, height = canvas.height - 2
    for row in y..<(y + height) { canvas.put(x, row, String(repeating: " ", count: width)) }
    let following = state.logScroll == nil
    canvas.box(x: x, y: y, width: width, height: height, title: "log of \(state.logTitle) (UTC)", role: .accent)
    let room = height - 3
    guard let log, log.url == state.logOf else {
        canvas.put(x + 2, y + 1, "reading…", .dim)
        return
    }
    var text: [(String, Role)] = []
    for line in log.lines {
        let time = line.seq == 0 ? "        " : clock(Date(timeIntervalSince1970: line.at))
        let role: Role = line.text.hasPrefix("error:") ? .error : line.seq == 0 ? .warn : .text
        for (i, piece) in wrap(line.text, width: max(10, width - 14)).enumerated() { text.append(((i == 0 ? time : "        ") + "  " + piece, role)) }
    }
    let top = following ? max(0, text.count - room) : max(0, min(state.logScroll!, text.count - room))
    for (i, line) in text.dropFirst(top).prefix(room).enumerated() { canvas.put(x + 2, y + 1 + i, line.0, line.1, limit: width - 4) }
    if text.isEmpty && log.problem == nil { canvas.put(x + 2, y + 1, "nothing logged yet", .dim) }
    let keys = canvas.unicode ? "↑ PgUp Home scroll back, End follows, Esc closes" : "up PgUp Home scroll back, End follows, Esc closes"
    let status = log.problem ?? ((following ? "following — " : "lines \(top + 1)-\(min(text.count, top + room)) of \(text.count) — ") + keys)
    canvas.put(x + 2, y + height - 2, status, log.problem == nil ? .dim : .error, limit: width - 4)
}

/// The drill-down: a run's, version's or event's whole text, wrapped, scrolled with ↑↓ PgUp PgDn Home End.
private func drawDetail(_ canvas: inout Canvas, _ detail: (title: String, lines: [String]), scroll: Int) {
    let x = 2, y = 2, width = canvas.width - 4, height = canvas.height - 4
    let text = detail.lines.flatMap { $0.isEmpty ? [""] : wrap($0, width: width - 4) }
    let room = height - 3
    let top = max(0, min(scroll, text.count - room))
    for row in y..<(y + height) { canvas.put(x, row, String(repeating: " ", count: width)) }
    canvas.box(x: x, y: y, width: width, height: height, title: detail.title + " (Esc closes)", role: .accent)
    for (i, line) in text.dropFirst(top).prefix(room).enumerated() { canvas.put(x + 2, y + 1 + i, line, .text, limit: width - 4) }
    let position = text.count > room ? "lines \(top + 1)-\(min(text.count, top + room)) of \(text.count); ↑↓ PgUp PgDn Home End scroll" : ""
    canvas.put(x + 2, y + height - 2, canvas.unicode ? position : position.replacingOccurrences(of: "↑↓", with: "up/down"), .dim, limit: width - 4)
}

private func drawDialog(_ canvas: inout Canvas, _ question: String) {
    let width = min(canvas.width - 4, max(40, question.count + 6))
    let x = (canvas.width - width) / 2, y = canvas.height / 2 - 2
    for row in y..<(y + 5) { canvas.put(x, row, String(repeating: " ", count: width)) }
    canvas.box(x: x, y: y, width: width, height: 5, title: "confirm", role: .warn, titleRole: .warn)
    canvas.put(x + 2, y + 1, question, .value, limit: width - 4)
    canvas.put(x + 2, y + 3, "y: go ahead    n or Esc: cancel", .dim)
}

private func drawHelp(_ canvas: inout Canvas) {
    let keys: [(String, String)] = [
        ("q", "quit (under switchyard up it asks first: it stops all)"),
        ("Esc", "back: closes a dialog, the filter, help, or a detail view"),
        ("0-8, Tab", "the views the header names"),
        ("arrows, j/k", "select a component, or a row in a view's table"),
        ("PgUp PgDn", "a page up or down; Home, End: the first, the last row"),
        ("Enter", "a row whole; on the overview, the component's own view"),
        ("r, + / -", "refresh now; poll faster / slower"),
        ("l", "the component's log, following it (scope operate)"),
        ("m", "the overview as panels or a table (replicas grouped)"),
        ("x", "acknowledge a DOWN component (it stays on screen until then)"),
        ("t, p", "trigger a batch run; pause or resume the stream"),
        ("s, b", "swap the model; roll back the alias the component follows"),
        ("R, c, P", "rerun, cancel the run (Batch); promote it (Models, Rollout)"),
        ("> < A", "Rollout: give the version 10% more, 10% less; abort it"),
        ("/, o", "filter the table; sort it another way"),
        ("e Enter / {", "Predict view: edit, send, replay a request, paste JSON"),
        (":", "a command: run, rerun ID, cancel ID, pause, resume, swap VER, alias NAME, promote MODEL@VER, rollback MODEL, route MODEL ALIAS V=P…; Tab completes, ↑↓ recall"),
    ]
    // It fits the terminal: descriptions wrap beside their keys, and what does not fit says so.
    let width = min(84, canvas.width - 2)
    var text: [String] = []
    for (key, description) in keys {
        for (i, piece) in wrap(description, width: width - 4 - 14).enumerated() {
            text.append((i == 0 ? key : "").padding(toLength: 14, withPad: " ", startingAt: 0) + piece)
        }
    }
    let room = canvas.height - 4
    if text.count > room { text = Array(text.prefix(room - 1)) + ["… \(text.count - room + 1) more lines: enlarge the terminal"] }
    let height = text.count + 2
    let x = (canvas.width - width) / 2, y = max(1, (canvas.height - height) / 2)
    for row in y..<(y + height) { canvas.put(x, row, String(repeating: " ", count: width)) }
    canvas.box(x: x, y: y, width: width, height: height, title: "keys (Esc closes)", role: .accent)
    for (i, line) in text.enumerated() {
        canvas.put(x + 2, y + 1 + i, canvas.unicode ? line : line.replacingOccurrences(of: "↑↓", with: "up/down"), .text, limit: width - 4)
    }
}

func drawPredict(_ canvas: inout Canvas, _ state: ConsoleState) {
    guard let form = state.predict else {
        canvas.put(2, 3, state.predictProblem.isEmpty ? "Select a serve component on the overview (0), then come back." : state.predictProblem, .dim, limit: canvas.width - 4)
        return
    }
    if let pasting = form.pasting {
        canvas.put(1, 2, "record as JSON (Esc cancels): " + String(pasting.suffix(max(10, canvas.width - 40))) + (canvas.unicode ? "█" : "_"), .value, limit: canvas.width - 2)
    } else if let search = form.searching {
        canvas.put(1, 2, "replay a logged request — its request id, or its key value: " + search + (canvas.unicode ? "█" : "_"), .value, limit: canvas.width - 2)
    } else {
        canvas.put(1, 2, "Predict with \(form.model) at \(form.componentURL) — e edits a field, Enter sends, / replays a logged request", .title, limit: canvas.width - 2)
    }
    let rows = canvas.height - 6
    let first = max(0, min(form.selected - rows + 1, form.fields.count - rows))
    for (slot, i) in (first..<min(form.fields.count, first + rows)).enumerated() {
        let field = form.fields[i]
        let selected = i == form.selected
        let value = selected && form.editing != nil ? form.editing! + (canvas.unicode ? "█" : "_") : field.value
        canvas.put(1, 3 + slot, (selected ? "> " : "  ") + field.name.padding(toLength: 16, withPad: " ", startingAt: 0), selected ? .selected : .text)
        canvas.put(19, 3 + slot, value.isEmpty ? "(missing)" : value, field.value.isEmpty ? .dim : field.problem != nil ? .error : .value, limit: 22)
    }
    // Under the form: what the selected field takes, or what is wrong with it.
    let selectedField = form.fields[form.selected]
    let hintY = 4 + min(rows, form.fields.count)
    if hintY < canvas.height - 4 {
        if let problem = selectedField.problem {
            canvas.put(1, hintY, "\(selectedField.name): \(problem)", .error, limit: 42)
        } else if let allowed = selectedField.allowed {
            canvas.put(1, hintY, "\(selectedField.name) takes: " + allowed.joined(separator: ", "), .dim, limit: 42)
        }
    }
    let x = 44
    let width = canvas.width - x - 1
    if form.sending { canvas.put(x, 3, "sending…", .dim) }
    if form.result == nil, let replay = form.replay, !form.sending {
        drawReplay(&canvas, replay, x: x, width: width)
        return
    }
    guard let r = form.result else {
        if !form.sending { canvas.put(x, 3, "Enter sends this record.", .dim) }
        return
    }
    if let error = r.error {
        canvas.put(x, 3, "error", .error)
        canvas.put(x, 4, error, .error, limit: width)
        return
    }
    canvas.put(x, 3, String(format: "service %@: %@ in %.2f ms", r.serviceVersion, r.serviceLabel, r.latencyMilliseconds), .value, limit: width)
    // A probability per class, or a regression's value.
    let number = r.regression ? "%@ = %.12g" : "p(%@) = %.12f"
    for (i, (name, p)) in r.service.enumerated() { canvas.put(x + 2, 4 + i, String(format: number, name, p), .text, limit: width - 2) }
    let y = 5 + r.service.count
    if !r.embedded.isEmpty {
        canvas.put(x, y, "embedded \(form.model): \(r.embeddedLabel)", .value, limit: width)
        for (i, (name, p)) in r.embedded.enumerated() { canvas.put(x + 2, y + 1 + i, String(format: number, name, p), .text, limit: width - 2) }
    }
    let verdictY = y + 2 + r.embedded.count
    var lineY = verdictY
    for chunk in stride(from: 0, to: r.verdict.count, by: max(width, 1)) {
        let start = r.verdict.index(r.verdict.startIndex, offsetBy: chunk)
        let end = r.verdict.index(start, offsetBy: min(width, r.verdict.count - chunk))
        canvas.put(x, lineY, String(r.verdict[start..<end]), r.agrees ? .ok : .error)
        lineY += 1
    }
    // Why: the largest contributions to the label's margin, as bars (+ right, − left of a centre).
    guard let margin = r.margin, lineY + 3 < canvas.height - 3 else { return }
    lineY += 1
    if let change = r.change {
        canvas.put(x, lineY, change, .value, limit: width)
        lineY += 1
    }
    canvas.put(x, lineY, String(format: "why — %@: base %+.3f → %+.3f", r.marginName, r.base, margin), .title, limit: width)
    lineY += 1
    let largest = max(r.contributions.first.map { abs($0.contribution) } ?? 0, 1e-12)
    let half = max(4, (width - 36) / 2)
    for item in r.contributions where lineY < canvas.height - 3 {
        let label = item.field.padding(toLength: 14, withPad: " ", startingAt: 0) + " " + String(item.value.prefix(9)).padding(toLength: 9, withPad: " ", startingAt: 0)
        canvas.put(x, lineY, label, .text, limit: width)
        canvas.put(x + 25, lineY, String(format: "%+.3f", item.contribution), item.contribution >= 0 ? .ok : .error)
        let length = Int((abs(item.contribution) / largest * Double(half)).rounded())
        let bar = String(repeating: canvas.unicode ? "█" : "#", count: length)
        let centre = x + 33 + half
        if item.contribution >= 0 {
            canvas.put(centre, lineY, bar, .ok, limit: max(0, canvas.width - centre - 1))
        } else {
            canvas.put(centre - length, lineY, bar, .error, limit: length)
        }
        lineY += 1
    }
}

/// A replayed request: the logged answer, the replay on that version (and whether it matches the
/// log), and the current production version's answer, with both explanations side by side.
func drawReplay(_ canvas: inout Canvas, _ r: ReplayResult, x: Int, width: Int) {
    if let error = r.error {
        canvas.put(x, 3, "replay of \(r.query)", .title, limit: width)
        canvas.put(x, 4, error, .error, limit: width)
        return
    }
    canvas.put(x, 3, "request \(r.requestID) at \(r.at.prefix(19).replacingOccurrences(of: "T", with: " "))", .title, limit: width)
    var y = 4
    func line(_ what: String, _ a: ReplayResult.Answer?) {
        guard let a else { return }
        // A regression's answer is its value alone (no probability).
        let answer = a.probability.isNaN ? "\(what) \(a.model): \(a.label)" : String(format: "%@ %@: %@ (p = %.4f)", what, a.model, a.label, a.probability)
        canvas.put(x, y, answer, .value, limit: width)
        y += 1
    }
    line("logged", r.logged)
    line("replayed on", r.replayed)
    line("production", r.production)
    canvas.put(x, y, r.verdict, r.matches ? .ok : .error, limit: width)
    y += 2
    guard let left = r.replayed, !left.contributions.isEmpty else { return }
    let column = max(20, width / 2)
    canvas.put(x, y, "why, on \(left.model)", .title, limit: column - 1)
    if let right = r.production { canvas.put(x + column, y, "on production \(right.model)", .title, limit: width - column) }
    y += 1
    for i in 0..<min(left.contributions.count, max(0, canvas.height - 4 - y)) {
        let l = left.contributions[i]
        canvas.put(x, y + i, l.field.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: " %+.3f", l.contribution),
                   l.contribution >= 0 ? .ok : .error, limit: column - 1)
        if let right = r.production, i < right.contributions.count {
            let c = right.contributions[i]
            canvas.put(x + column, y + i, c.field.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: " %+.3f", c.contribution),
                       c.contribution >= 0 ? .ok : .error, limit: width - column)
        }
    }
}
