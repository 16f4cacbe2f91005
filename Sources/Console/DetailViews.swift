import ControlProtocol
import Foundation
import JSON
import Scoring

// The detail views 1–4: Serve, Batch, Stream, Models. Each shows the selected
// component of its kind (or the first one), so the overview's selection carries over.

/// The component a detail view shows: the selected one if it is of `kind`, else the first.
func focused(_ kind: String, _ snapshot: FleetSnapshot, _ state: ConsoleState) -> ComponentView? {
    let components = snapshot.components
    if state.selected < components.count, components[state.selected].kind == kind { return components[state.selected] }
    return components.first { $0.kind == kind }
}

/// Something drawn over a chart's bars: another series as a line of `glyph`s (p50 and p95 over
/// the p99 bars).
struct ChartOverlay {
    var values: [Double]
    var glyph: Character
    var role: Role
}

/// A chart of `values` (newest right, one column a second) in `height` rows: its label and
/// min/max on the first row, its scale with units on the left (top, middle, 0), and a time axis
/// (−2m … now) on the last row, with `marks` (swaps ◆, runs ▲) at their second.
func drawChart(
    _ canvas: inout Canvas, x: Int, y: Int, width: Int, height: Int, _ values: [Double], label: String, unit: String, role: Role,
    overlays: [ChartOverlay] = [], marks: [(age: Int, glyph: String)] = []
) {
    let plot = max(1, width - 9)
    let shown = Array(values.suffix(plot))
    let all = ([shown] + overlays.map { Array($0.values.suffix(plot)) }).flatMap { $0 }.filter(\.isFinite)
    let top = max(all.max() ?? 0, 1e-9)
    let range = shown.isEmpty ? "" : "  min \(short(shown.min() ?? 0))\(unit)  max \(short(shown.max() ?? 0))\(unit)"
    canvas.put(x, y, label, .title, limit: width)
    if label.count + range.count <= width { canvas.put(x + label.count, y, range, .dim) }
    let rows = max(1, height - 2)
    func withUnit(_ v: Double) -> String { (v == 0 ? "0" : short(v) + unit).padding(toLength: 8, withPad: " ", startingAt: 0) }
    let left = x + 9 + (plot - shown.count)  // the oldest sample's column
    for (r, line) in sparkRows(shown, width: shown.count, rows: rows, unicode: canvas.unicode, ceiling: top).enumerated() {
        let scale = r == 0 ? withUnit(top) : r == rows - 1 ? withUnit(0) : r == rows / 2 && rows > 2 ? withUnit(top / 2) : ""
        canvas.put(x, y + 1 + r, scale, .dim)
        canvas.put(left, y + 1 + r, line, role)
    }
    for overlay in overlays {
        let series = Array(overlay.values.suffix(shown.count))
        for (i, v) in series.enumerated() where v.isFinite && v > 0 {
            let r = rows - 1 - min(rows - 1, Int(v / top * Double(rows)))
            canvas.put(left + (shown.count - series.count) + i, y + 1 + r, String(overlay.glyph), overlay.role)
        }
    }
    // The time axis: how long ago the oldest column is, the middle, now; the marks at their second.
    let axis = y + 1 + rows
    guard height >= 3 else { return }
    if shown.count >= 12 {
        canvas.put(left, axis, "−" + ago(shown.count), .dim)
        if shown.count >= 30 { canvas.put(left + shown.count / 2 - 2, axis, "−" + ago(shown.count - shown.count / 2), .dim) }
    }
    canvas.put(x + 9 + plot - 3, axis, "now", .dim)
    for mark in marks where mark.age >= 0 && mark.age < shown.count {
        canvas.put(x + 9 + plot - 1 - mark.age, axis, mark.glyph, .accent)
    }
}

/// 45 → "45s", 120 → "2m", 90 → "1m30s".
func ago(_ seconds: Int) -> String {
    seconds < 60 ? "\(seconds)s" : seconds % 60 == 0 ? "\(seconds / 60)m" : "\(seconds / 60)m\(seconds % 60)s"
}

/// Swaps (◆) and runs (▲) of `c` as chart marks: how many seconds ago, and the glyph.
func chartMarks(_ c: ComponentView, _ events: [EventItem], now: Date, unicode: Bool) -> [(age: Int, glyph: String)] {
    let source = c.kind + " " + c.id
    return events.suffix(200).compactMap { event in
        guard event.source == source, event.kind == "model" || event.kind == "run", let at = parseTimestamp(event.at) else { return nil }
        return (Int(now.timeIntervalSince1970 - at), event.kind == "model" ? (unicode ? "◆" : "S") : (unicode ? "▲" : "R"))
    }
}

func drawServeView(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    guard let c = focused("serve", snapshot, state) else {
        canvas.put(2, 3, "No serve component found. Start one: switchyard serve --model NAME@ALIAS", .dim)
        return
    }
    canvas.put(1, 2, "Serve \(c.id) at \(c.url)  \(c.model ?? "no model")  \(c.isDown ? "DOWN" : "serving")"
        + (c.status?.following.map { "  following @\($0)" } ?? "  pinned"), c.isDown ? .error : .title, limit: canvas.width - 2)
    let s = c.series
    let width = canvas.width - 2
    let chartHeight = max(5, (canvas.height - 11) / 2)
    let marks = chartMarks(c, snapshot.events, now: state.now, unicode: canvas.unicode)
    drawChart(&canvas, x: 1, y: 3, width: width, height: chartHeight, s["p99_ms"] ?? [],
              label: "latency: p99 bars, p95 \(canvas.unicode ? "•" : "o"), p50 \(canvas.unicode ? "·" : ".") (now: p50 \(nowLatency(s, "p50_ms", "requests"))  p95 \(nowLatency(s, "p95_ms", "requests"))  p99 \(nowLatency(s, "p99_ms", "requests")))",
              unit: "ms", role: .graphMid,
              overlays: [ChartOverlay(values: s["p95_ms"] ?? [], glyph: canvas.unicode ? "•" : "o", role: .value),
                         ChartOverlay(values: s["p50_ms"] ?? [], glyph: canvas.unicode ? "·" : ".", role: .text)], marks: marks)
    drawChart(&canvas, x: 1, y: 3 + chartHeight, width: width, height: chartHeight, s["requests"] ?? [],
              label: "requests/s (\(short(s["requests"]?.last ?? 0)) now)  in flight \(short(s["in_flight"]?.last ?? 0))  connections \(short(s["connections"]?.last ?? 0))",
              unit: "/s", role: .graphLow, marks: marks)
    var y = 3 + 2 * chartHeight
    var codes = "status codes since start:"
    for code in c.status?.serve?.statusCodes.entries ?? [] { codes += "  \(code.name): \(short(code.value ?? 0))" }
    canvas.put(1, y, codes, .value, limit: canvas.width - 2)
    y += 1
    let counters = c.status?.counters ?? NamedNumbers()
    canvas.put(1, y, "swaps \(Int(counters["swaps"] ?? 0)) (failed \(Int(counters["failed_swaps"] ?? 0)))  errors/s now \(short(s["errors"]?.last ?? 0))  client errors/s \(short(s["client_errors"]?.last ?? 0))", .text, limit: canvas.width - 2)
}

/// The last second's latency `field`, or "–" when nothing was measured in it (`count` was 0).
private func nowLatency(_ series: [String: [Double]], _ field: String, _ count: String) -> String {
    (series[count]?.last ?? 0) > 0 ? milliseconds(series[field]?.last) : "–"
}

/// A counter as people read it: "dead letters 3", "e2e p99 13.2 s", "–" for none yet.
func counterText(_ counter: NamedNumber) -> String {
    let isMilliseconds = counter.name.hasSuffix("_ms")
    let name = (isMilliseconds ? String(counter.name.dropLast(3)) : counter.name).replacingOccurrences(of: "_", with: " ")
    return "\(name) " + (isMilliseconds ? milliseconds(counter.value) : counter.value.map(short) ?? "–")
}

/// The batch view's rows: the focused component's runs, filtered.
func batchRows(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [RunSummary] {
    guard let c = focused("batch", snapshot, state) else { return [] }
    let filter = state.filter.lowercased()
    let runs = filter.isEmpty ? c.runs : c.runs.filter { runLine($0).lowercased().contains(filter) }
    switch sortOrder(.batch, state) {
    case "status": return runs.sorted { ($0.status, -$0.id) < ($1.status, -$1.id) }
    case "rejects": return runs.sorted { ($1.rowsRejected, $1.id) < ($0.rowsRejected, $0.id) }
    case "rows": return runs.sorted { ($1.rowsRead, $1.id) < ($0.rowsRead, $0.id) }
    default: return runs  // newest first, as the component lists them
    }
}

private func runLine(_ run: RunSummary) -> String {
    let started = shortTime(run.startedAt ?? run.queuedAt)
    let rows = short(Double(run.rowsRead))
    let rejected = short(Double(run.rowsRejected))
    return column(String(run.id), 6) + column(run.status, 12) + column(run.trigger, 9) + column(started, 15) + column(rows, 8) + column(rejected, 8) + (run.model ?? "")
}

/// "tasks 12/26 done, 3 running · 2 retried · 3 workers".
private func taskLine(_ tasks: RunTasks) -> String {
    "tasks \(tasks.done)/\(tasks.total) done" + (tasks.running > 0 ? ", \(tasks.running) running" : "") + (tasks.failed > 0 ? ", \(tasks.failed) failed" : "")
        + (tasks.retried > 0 ? " · \(tasks.retried) taken over" : "") + " · \(tasks.workers.count) worker\(tasks.workers.count == 1 ? "" : "s")"
}

/// A run's whole record for the drill-down (Enter in the Batch view).
func runDetail(_ run: RunSummary) -> (title: String, lines: [String]) {
    var lines = [
        "status \(run.status)" + (run.existing ? " (an earlier trigger with the same key)" : ""),
        "trigger \(run.trigger)" + (run.rerunOf.map { " of run \($0)" } ?? "") + " by \(run.who)" + (run.idempotencyKey.map { ", idempotency key \($0)" } ?? ""),
        "model \(run.model ?? "–")" + (run.modelSHA256.map { " (sha256 \($0))" } ?? ""),
        "rows read \(run.rowsRead), scored \(run.rowsScored), rejected \(run.rowsRejected); bytes \(run.bytesDone) of \(run.bytesTotal)",
    ]
    if let p = run.progress {
        lines.append(String(format: "progress %.1f%% of %@, %@ rows/s, ETA %@, running %@", p.fraction * 100, p.file, short(p.rowsPerSecond),
                            p.etaSeconds.map(duration) ?? "–", duration(p.elapsedSeconds)))
    }
    if let tasks = run.tasks {
        lines.append(taskLine(tasks))
        lines += tasks.workers.map { "  \($0.name)  \($0.done) done\($0.running > 0 ? ", \($0.running) running" : "")  \($0.rows) rows" }
    }
    lines += ["queued \(run.queuedAt)", "started \(run.startedAt ?? "–")", "finished \(run.finishedAt ?? "–")"]
    if let slot = run.scheduledFor { lines.append("scheduled for \(slot)") }
    if let error = run.error { lines += ["", "error: \(error)"] }
    if let note = run.note { lines += ["", "note: \(note)"] }
    lines += ["", "inputs (\(run.inputs.count)); rejects are beside each output as NAME.rejects.*:"]
    lines += run.inputs.map { "  \($0.name)  \($0.size) bytes  sha256 \($0.sha256)" }
    lines.append("output \(run.output)")
    return ("run \(run.id)", lines)
}

func drawBatchView(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    guard let c = focused("batch", snapshot, state) else {
        canvas.put(2, 3, "No batch component found. Start one: switchyard batch --input DIR --output DIR --model NAME@ALIAS", .dim)
        return
    }
    let rows = batchRows(snapshot, state)
    let schedule = c.status?.batch?.nextRunAt.map { "next run \($0)" } ?? "no schedule"
    canvas.put(1, 2, "Batch \(c.id)  \(c.model ?? "")  \(schedule)  queue \(c.status?.batch?.queue ?? 0)"
        + (state.filter.isEmpty ? "" : "  runs matching \"\(state.filter)\"") + "  by \(sortOrder(.batch, state)) (o sorts)", c.isDown ? .error : .title, limit: canvas.width - 2)
    let tableWidth = max(50, min(72, canvas.width - 28))
    canvas.put(1, 3, "RUN   STATUS      TRIGGER  STARTED        ROWS    REJECTS MODEL", .dim, limit: tableWidth)
    let room = tableRows(height: canvas.height)
    let selected = min(state.row, max(0, rows.count - 1))
    let first = max(0, min(selected - room + 1, rows.count - room))
    for (slot, i) in (first..<min(rows.count, first + room)).enumerated() {
        let run = rows[i]
        let status = run.status
        let role: Role = i == selected ? .selected : status == "failed" || status == "interrupted" ? .error : status == "running" || status == "queued" ? .accent : .text
        canvas.put(1, 4 + slot, runLine(run), role, limit: tableWidth)
    }
    if rows.isEmpty { canvas.put(1, 4, c.runs.isEmpty ? "no runs yet; t triggers one" : "no run matches the filter", .dim) }
    // The selected run's details.
    let x = tableWidth + 2
    let width = canvas.width - x - 1
    guard width > 20, selected < rows.count else { return }
    let run = rows[selected]
    var y = 3
    func line(_ text: String, _ role: Role = .text) {
        // Long lines (an error message) wrap between words.
        for piece in wrap(text, width: width) {
            guard y < canvas.height - 3 else { return }
            canvas.put(x, y, piece, role, limit: width)
            y += 1
        }
    }
    line("run \(run.id): \(run.status)", .title)
    line("trigger \(run.trigger)" + (run.rerunOf.map { " of run \($0)" } ?? "") + " by \(run.who)")
    line("model \(run.model ?? "-")")
    line("read \(run.rowsRead)  scored \(run.rowsScored)", .value)
    line("rejected \(run.rowsRejected)", run.rowsRejected > 0 ? .warn : .value)
    if let progress = run.progress {
        line(String(format: "progress %.0f%%  %@ rows/s", progress.fraction * 100, short(progress.rowsPerSecond)), .accent)
    }
    if let tasks = run.tasks {
        line(taskLine(tasks), tasks.failed > 0 ? .error : .value)
        for worker in tasks.workers {
            line("  \(worker.name)  \(worker.done) done\(worker.running > 0 ? " +1" : "")  \(short(Double(worker.rows))) rows", worker.running > 0 ? .accent : .dim)
        }
    }
    line("queued \(run.queuedAt)", .dim)
    if let finished = run.finishedAt { line("finished \(finished)", .dim) }
    if let error = run.error { line("error: \(error)", .error) }
    if let note = run.note { line("note: \(note)", .dim) }
    if !run.inputs.isEmpty {
        line("inputs (\(run.inputs.count)); rejects beside each output as NAME.rejects.*:", .title)
        for input in run.inputs { line("  \(input.name)  \(short(Double(input.size))) B") }
    }
    if !run.output.isEmpty { line("output \(run.output)", .dim) }
}

func drawStreamView(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    guard let c = focused("stream", snapshot, state) else {
        canvas.put(2, 3, "No stream component found. Start one: switchyard stream --source … --sink … --model NAME@ALIAS", .dim)
        return
    }
    let backlog = c.status?.stream?.backlog
    let status = backlog?.status ?? "?"
    canvas.put(1, 2, "Stream \(c.id)  \(c.model ?? "")  \(c.isDown ? "DOWN" : status)  backlog \(short(backlog?.events ?? 0)) events, age \(String(format: "%.1f", backlog?.ageSeconds ?? 0))s",
               c.isDown ? .error : status == "OK" ? .ok : .warn, limit: canvas.width - 2)
    let s = c.series
    let width = canvas.width - 2
    let letters = c.deadLetters
    let listRows = letters.isEmpty && c.deadLetterProblem == nil ? 0 : min(9, max(2, letters.count + 1))
    let chartHeight = max(5, (canvas.height - 10 - listRows) / 2)
    let marks = chartMarks(c, snapshot.events, now: state.now, unicode: canvas.unicode)
    drawChart(&canvas, x: 1, y: 3, width: width, height: chartHeight, s["backlog"] ?? [],
              label: "backlog, events waiting (oldest \(String(format: "%.1f", s["backlog_age_s"]?.last ?? 0)) s)", unit: "", role: .graphHigh, marks: marks)
    drawChart(&canvas, x: 1, y: 3 + chartHeight, width: width, height: chartHeight, s["out"] ?? [],
              label: "scored/s (in \(short(s["in"]?.last ?? 0))/s  out \(short(s["out"]?.last ?? 0))/s  p50 \(nowLatency(s, "p50_ms", "out"))  p99 \(nowLatency(s, "p99_ms", "out")))",
              unit: "/s", role: .graphLow, marks: marks)
    var y = 3 + 2 * chartHeight
    let counters = c.status?.counters ?? NamedNumbers()
    let dead = counters["dead_letters"] ?? 0
    canvas.put(1, y, "dead letters: \(Int(dead)) since start, \(short(s["dead"]?.last ?? 0))/s now" + (dead > 0 ? " — records that could not be scored, with the reason, in the sink's dead letters" : ""),
               dead > 0 ? .warn : .text, limit: canvas.width - 2)
    y += 1
    let text = counters.entries.map(counterText).joined(separator: "  ")
    canvas.put(1, y, text, .dim, limit: canvas.width - 2)
    guard listRows > 0, y + 2 < canvas.height - 3 else { return }
    y += 1
    let keys = canvas.unicode ? "↑↓ select" : "up/down select"
    canvas.put(1, y, "Latest dead letters by \(sortOrder(.stream, state)), all kept in \(c.deadLettersKept.isEmpty ? "the sink" : c.deadLettersKept) (\(keys), Enter shows one, o sorts)",
               .title, limit: canvas.width - 2)
    if let problem = c.deadLetterProblem {
        canvas.put(1, y + 1, problem, .dim, limit: canvas.width - 2)
        return
    }
    let room = min(listRows - 1, canvas.height - 3 - (y + 1))
    let selected = min(state.row, max(0, letters.count - 1))
    let first = max(0, min(selected - room + 1, letters.count - room))
    for (slot, i) in (first..<min(letters.count, first + room)).enumerated() {
        let letter = letters[i]
        let line = String(shortTime(isoTimestamp(Date(timeIntervalSince1970: letter.at))).suffix(8)) + "  "
            + column(letter.source, 19) + letter.reason
        canvas.put(1, y + 1 + slot, line, i == selected ? .selected : .warn, limit: canvas.width - 2)
    }
}

/// The Stream view's rows: the focused stream's latest dead letters.
func deadLetterRows(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [DeadLetter] {
    let letters = focused("stream", snapshot, state)?.deadLetters ?? []
    return sortOrder(.stream, state) == "reason" ? letters.sorted { ($0.reason, -$0.at) < ($1.reason, -$1.at) } : letters
}

/// The Models view's rows: registry versions, filtered by model name.
func modelRows(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [ModelVersion] {
    let filter = state.filter.lowercased()
    let versions = filter.isEmpty ? snapshot.versions : snapshot.versions.filter { $0.reference.lowercased().contains(filter) }
    switch sortOrder(.models, state) {
    case "AUC": return versions.sorted { ($1.metrics["auc"] ?? -1, $1.reference) < ($0.metrics["auc"] ?? -1, $0.reference) }
    case "newest": return versions.sorted { ($1.createdAt, $1.version) < ($0.createdAt, $0.version) }
    default: return versions  // by model, newest version first
    }
}

func drawModelsView(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
    guard !snapshot.versions.isEmpty else {
        canvas.put(2, 3, "No registry here (SWITCHYARD_HOME), or no models in it yet: switchyard train | models import", .dim, limit: canvas.width - 4)
        return
    }
    let rows = modelRows(snapshot, state)
    canvas.put(1, 2, "Models in the registry" + (state.filter.isEmpty ? "" : " matching \"\(state.filter)\"") + " by \(sortOrder(.models, state)) — P promote to production, b roll production back, o sorts",
               .title, limit: canvas.width - 2)
    canvas.put(1, 3, "VERSION              ALIASES             AUC     ACCURACY LOG-LOSS CREATED", .dim, limit: canvas.width - 2)
    let tableRows = max(3, (canvas.height - 8) / 2)
    let selected = min(state.row, max(0, rows.count - 1))
    let first = max(0, min(selected - tableRows + 1, rows.count - tableRows))
    for (slot, i) in (first..<min(rows.count, first + tableRows)).enumerated() {
        let v = rows[i]
        func metric(_ key: String) -> String { v.metrics[key].map { String(format: "%.4f", $0) } ?? "-" }
        let running = snapshot.components.filter { $0.model == v.reference }.map(\.kind)
        let text = column(v.reference, 21) + column(v.aliases.joined(separator: ","), 20) + column(metric("auc"), 8) + column(metric("accuracy"), 9)
            + column(metric("log_loss"), 9) + shortTime(v.createdAt, seconds: false)
            + (running.isEmpty ? "" : "  ◂ " + running.joined(separator: ","))
        canvas.put(1, 4 + slot, canvas.unicode ? text : text.replacingOccurrences(of: "◂", with: "<"), i == selected ? .selected : v.aliases.isEmpty ? .text : .value, limit: canvas.width - 2)
    }
    let y = 5 + tableRows
    canvas.put(1, y, "Audit log, newest first", .title)
    for (i, entry) in snapshot.audit.prefix(canvas.height - y - 3).enumerated() {
        let move = entry.fromVersion.map { "v\($0) → " } ?? ""
        let to = entry.toVersion.map { "v\($0)" } ?? ""
        let text = "\(shortTime(entry.at))  \(column(entry.action, 10))\(entry.model)\(entry.alias.map { "@\($0)" } ?? "")  \(move)\(to)  by \(entry.who)"
        canvas.put(1, y + 1 + i, canvas.unicode ? text : text.replacingOccurrences(of: "→", with: "->"), .text, limit: canvas.width - 2)
    }
}
