import ControlProtocol
import Foundation

/// The Drift view: per component (serve and stream) and version it runs, the population stability
/// index of every input field and of the prediction over the drift window, as bars — warn at 0.1,
/// alert at 0.25 — or why there is none (no baseline: the command that makes one).
struct DriftScreen: ConsoleScreen {
    let view = ConsoleView.drift
    let title = "Drift"
    let footerKeys = "(PSI: ≥0.1 look, ≥0.25 shifted)"

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
        let measured = snapshot.components.filter { !$0.isDown && !($0.status?.drift.isEmpty ?? true) }
        guard !measured.isEmpty else {
            canvas.put(2, 3, "No serve or stream component reports drift yet (this needs components of this release).", .dim, limit: canvas.width - 4)
            return
        }
        let width = canvas.width - 2
        let barWidth = max(10, min(40, width - 40))
        var y = 2
        for c in measured {
            for d in c.status?.drift ?? [] {
                guard y < canvas.height - 3 else { return }
                let name = c.id.isEmpty ? c.url : c.id
                if let problem = d.problem {
                    for line in wrap("\(c.kind) \(name) v\(d.version): \(problem)", width: width) {
                        canvas.put(1, y, line, .dim, limit: width)
                        y += 1
                    }
                    y += 1
                    continue
                }
                let span = d.windowSeconds > 0 ? "in the last \(duration(d.windowSeconds))" : "in the \(c.status?.batch?.run == nil ? "latest" : "running") run"
                canvas.put(1, y, "\(c.kind) \(name) \(c.service)@\(d.version): \(d.rows) rows \(span) against a baseline of \(d.baselineRows)", .title, limit: width)
                y += 1
                let rows = d.fields.map { ($0.name, $0.psi) } + [("prediction", d.prediction)]
                for (field, psi) in rows.sorted(by: { ($0.1 ?? -1) > ($1.1 ?? -1) }) {
                    guard y < canvas.height - 2 else { break }
                    let role: Role = (psi ?? 0) >= 0.25 ? .error : (psi ?? 0) >= 0.1 ? .warn : .ok
                    let filled = psi.map { min(barWidth, Int(($0 / 0.5 * Double(barWidth)).rounded(.up))) } ?? 0
                    let bar = String(repeating: canvas.unicode ? "█" : "#", count: filled) + String(repeating: canvas.unicode ? "·" : ".", count: barWidth - filled)
                    let value = psi.map { String(format: "%.3f", $0) } ?? "–"
                    let verdict = psi == nil ? "too few rows" : role == .error ? "SHIFTED" : role == .warn ? "look" : ""
                    canvas.put(2, y, field.padding(toLength: 16, withPad: " ", startingAt: 0), field == "prediction" ? .value : .text, limit: 16)
                    canvas.put(19, y, bar, role, limit: barWidth)
                    canvas.put(20 + barWidth, y, "\(value)  \(verdict)", role, limit: width - barWidth - 20)
                    y += 1
                }
                y += 1
            }
        }
    }
}
