import ControlProtocol
import Foundation
import JSON

/// A followed alias that splits traffic or runs a shadow, as the serve replicas following it
/// report it: the route, each version's traffic summed over the replicas (p50 and p99 the worst
/// replica's), and the shadow comparison merged over them.
struct RolloutGroup {
    var model: String
    var alias: String
    var route: AliasRoute
    var replicas: [ComponentView]
    var traffic: [VersionTraffic]
    var comparison: ShadowReport?

    /// The version whose weight a change moves against the selected one: the largest other.
    func counterpart(of version: Int) -> Int? {
        route.arms.filter { $0.version != version }.max { $0.weight < $1.weight }?.version
    }

    /// The route with `delta` percent moved to `version` from its counterpart (clamped to 0...100).
    func moving(_ delta: Int, to version: Int) -> AliasRoute? {
        guard let other = counterpart(of: version), let mine = route.weight(of: version), let theirs = route.weight(of: other) else { return nil }
        let step = delta > 0 ? min(delta, theirs) : -min(-delta, mine)
        guard step != 0 else { return nil }
        let arms = route.arms.map { arm in
            AliasRoute.Arm(version: arm.version, weight: arm.weight + (arm.version == version ? step : arm.version == other ? -step : 0))
        }
        return try? AliasRoute(arms: arms, key: route.key, shadow: route.shadow)
    }
}

/// One selectable line of the Rollout view.
enum RolloutRow {
    case version(group: Int, version: Int)
    case disagreement(group: Int, ShadowReport.Disagreement)

    var key: String {
        switch self {
        case .version(let g, let v): "rollout:\(g):v\(v)"
        case .disagreement(let g, let d): "rollout:\(g):\(d.requestID)#\(d.row)"
        }
    }
}

/// Every split or shadowed alias the serve components follow, by model and alias.
func rolloutGroups(_ snapshot: FleetSnapshot) -> [RolloutGroup] {
    var groups: [RolloutGroup] = []
    for c in snapshot.components where c.kind == "serve" && !c.isDown {
        guard let status = c.status, let route = status.route, let alias = status.following else { continue }
        if let i = groups.firstIndex(where: { $0.model == c.service && $0.alias == alias }) {
            groups[i].replicas.append(c)
        } else {
            groups.append(RolloutGroup(model: c.service, alias: alias, route: route, replicas: [c], traffic: [], comparison: nil))
        }
    }
    for i in groups.indices {
        let versions = groups[i].route.arms.map(\.version)
        groups[i].traffic = versions.map { version in
            let parts = groups[i].replicas.compactMap { $0.status?.serve?.versions.first { $0.version == version } }
            return VersionTraffic(
                version: version, weight: groups[i].route.weight(of: version), requests: parts.reduce(0) { $0 + $1.requests },
                errors: parts.reduce(0) { $0 + $1.errors }, requestsPerSecond: parts.reduce(0) { $0 + $1.requestsPerSecond },
                errorsPerSecond: parts.reduce(0) { $0 + $1.errorsPerSecond }, p50Ms: parts.map(\.p50Ms).max() ?? 0, p99Ms: parts.map(\.p99Ms).max() ?? 0)
        }
        groups[i].comparison = merge(groups[i].replicas.compactMap(\.comparison))
    }
    return groups
}

/// The replicas' comparisons as one: counts added, agreement and mean |Δp| weighted by window,
/// the largest of the maxima and of the disagreements.
private func merge(_ reports: [ShadowReport]) -> ShadowReport? {
    guard var merged = reports.first else { return nil }
    for r in reports.dropFirst() {
        let (a, b) = (Double(merged.window), Double(r.window))
        func weighted(_ x: Double?, _ y: Double?) -> Double? {
            guard a + b > 0 else { return nil }
            return ((x ?? 0) * a + (y ?? 0) * b) / (a + b)
        }
        merged.agreement = weighted(merged.agreement, r.agreement)
        merged.meanAbsDelta = weighted(merged.meanAbsDelta, r.meanAbsDelta)
        merged.maxAbsDelta = [merged.maxAbsDelta, r.maxAbsDelta].compactMap { $0 }.max()
        merged.window += r.window
        merged.comparedTotal += r.comparedTotal
        merged.dropped += r.dropped
        merged.queued += r.queued
        merged.disagreements += r.disagreements
        merged.shadowErrors += r.shadowErrors
        merged.largest = Array((merged.largest + r.largest).sorted { $0.absDelta > $1.absDelta }.prefix(10))
    }
    return merged
}

/// The Rollout view's rows, in the order drawn: each group's versions, then its largest disagreements.
func rolloutRows(_ snapshot: FleetSnapshot) -> [RolloutRow] {
    rolloutGroups(snapshot).enumerated().flatMap { g, group in
        group.route.arms.map { RolloutRow.version(group: g, version: $0.version) }
            + (group.comparison?.largest ?? []).map { RolloutRow.disagreement(group: g, $0) }
    }
}

struct RolloutScreen: ConsoleScreen {
    let view = ConsoleView.rollout
    let title = "Rollout"
    let collects: Set<Collected> = [.comparison]
    let footerKeys = "> +10%  < -10%  P promote  A abort  Enter open"

    func rowKeys(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> [String]? {
        let rows = rolloutRows(snapshot)
        return rows.isEmpty ? nil : rows.map(\.key)
    }

    func detail(_ snapshot: FleetSnapshot, _ state: ConsoleState) -> (title: String, lines: [String])? {
        let rows = rolloutRows(snapshot)
        guard !rows.isEmpty, case .version(let g, let version) = rows[min(state.row, rows.count - 1)] else { return nil }
        let group = rolloutGroups(snapshot)[g]
        let lines = group.replicas.map { c -> String in
            let t = c.status?.serve?.versions.first { $0.version == version }
            return "\(c.id) \(c.url): " + (t.map { "\(short($0.requestsPerSecond)) req/s, \(short($0.errorsPerSecond)) err/s, p99 \(milliseconds($0.p99Ms)), \(short($0.requests)) requests" } ?? "not loaded")
        }
        return ("\(group.model)@\(group.alias) v\(version) on each replica", lines)
    }

    func handle(_ key: Key, _ snapshot: FleetSnapshot, _ controller: inout Controller) -> Effect? {
        guard [.character(">"), .character("<"), .character("P"), .character("A"), .enter].contains(key) else { return nil }
        let rows = rolloutRows(snapshot)
        guard !rows.isEmpty else { return controller.fail("nothing is split or shadowed: route an alias first, e.g. :route credit production 1=90 2=10") }
        let groups = rolloutGroups(snapshot)
        switch rows[min(controller.state.row, rows.count - 1)] {
        case .disagreement(let g, let d):
            guard key == .enter else { return controller.fail("select a version row for > < P A") }
            guard let record = d.record else { return controller.fail("the comparison did not keep this row's record") }
            // Open the record in Predict, on a replica of the group.
            if let url = groups[g].replicas.first?.url, let index = snapshot.components.firstIndex(where: { $0.url == url }) {
                controller.state.selected = index
            }
            controller.state.view = .predict
            controller.state.pendingRecord = record.jsonText
            return .redraw
        case .version(let g, let version):
            let group = groups[g]
            var route: AliasRoute?
            switch key {
            case .character(">"): route = group.moving(10, to: version)
            case .character("<"): route = group.moving(-10, to: version)
            case .character("P"): route = try? AliasRoute(arms: [.init(version: version, weight: 100)])
            case .character("A"):
                guard let other = group.counterpart(of: version) else { return controller.fail("abort: v\(version) is the only version") }
                route = try? AliasRoute(arms: group.route.arms.map { .init(version: $0.version, weight: $0.version == other ? 100 : 0) },
                                        key: group.route.key, shadow: group.route.shadow)
            default: return nil  // Enter on a version: its detail
            }
            guard let route else { return controller.fail("v\(version) is at \(group.route.weight(of: version) ?? 0)% already") }
            var words = [route.words]
            if let sticky = route.key { words.append("sticky=\(sticky)") }
            if let shadow = route.shadow { words.append("shadow=\(shadow.version)@\(JSONWriter.numberText(shadow.sample))") }
            return controller.command("route \(group.model) \(group.alias) " + words.joined(separator: " "), snapshot)
        }
    }

    func draw(_ canvas: inout Canvas, _ snapshot: FleetSnapshot, _ state: ConsoleState) {
        let groups = rolloutGroups(snapshot)
        guard !groups.isEmpty else {
            canvas.put(2, 3, "No serve component follows a split or shadowed alias. Start one: :route MODEL ALIAS 1=90 2=10 (or switchyard models route)", .dim, limit: canvas.width - 4)
            return
        }
        let rows = rolloutRows(snapshot)
        let selected = min(state.row, max(0, rows.count - 1))
        var index = 0, y = 2
        let width = canvas.width - 2
        for group in groups {
            guard y < canvas.height - 3 else { break }
            canvas.put(1, y, "\(group.model)@\(group.alias): \(group.route.description)  (\(group.replicas.count) replica\(group.replicas.count == 1 ? "" : "s"))", .title, limit: width)
            y += 1
            canvas.put(1, y, "  VERSION  SHARE   REQ/S    ERR/S    P50       P99       REQUESTS  ERRORS", .dim, limit: width)
            y += 1
            for t in group.traffic {
                let line = "  v\(t.version)".padding(toLength: 11, withPad: " ", startingAt: 0)
                    + "\(t.weight ?? 0)%".padding(toLength: 8, withPad: " ", startingAt: 0)
                    + short(t.requestsPerSecond).padding(toLength: 9, withPad: " ", startingAt: 0)
                    + short(t.errorsPerSecond).padding(toLength: 9, withPad: " ", startingAt: 0)
                    + milliseconds(t.p50Ms).padding(toLength: 10, withPad: " ", startingAt: 0)
                    + milliseconds(t.p99Ms).padding(toLength: 10, withPad: " ", startingAt: 0)
                    + short(t.requests).padding(toLength: 10, withPad: " ", startingAt: 0) + short(t.errors)
                canvas.put(1, y, line, index == selected ? .selected : t.errorsPerSecond > 0 ? .warn : .text, limit: width)
                index += 1
                y += 1
            }
            if let shadow = group.route.shadow {
                y += 1
                let sample = shadow.sample < 100 ? " (\(JSONWriter.numberText(shadow.sample))% of rows)" : ""
                guard let c = group.comparison else {
                    canvas.put(1, y, "shadow v\(shadow.version)\(sample): no comparison yet", .dim, limit: width)
                    y += 1
                    continue
                }
                let agreement = c.agreement.map { String(format: "%.2f%%", $0 * 100) } ?? "–"
                let mean = c.meanAbsDelta.map { String(format: "%.4f", $0) } ?? "–", max = c.maxAbsDelta.map { String(format: "%.4f", $0) } ?? "–"
                canvas.put(1, y, "shadow v\(shadow.version)\(sample): agreement \(agreement)  mean |Δp| \(mean)  max |Δp| \(max)  over \(short(Double(c.window))) rows"
                    + (c.dropped > 0 ? " (\(short(Double(c.dropped))) not compared: the shadow had no spare CPU)" : ""),
                    (c.agreement ?? 1) < 0.95 ? .warn : .value, limit: width)
                y += 1
                let scoring = c.versions.map { v in "v\(v.version) \(v.role) p50 \(v.p50Microseconds.map { String(format: "%.0f µs", $0) } ?? "–") p99 \(v.p99Microseconds.map { String(format: "%.0f µs", $0) } ?? "–")" }
                canvas.put(1, y, "scoring per row: " + scoring.joined(separator: "   "), .text, limit: width)
                y += 1
                guard !c.largest.isEmpty else { continue }
                canvas.put(1, y, "largest disagreements (Enter opens the record in Predict):  REQUEST  ROW  LIVE  SHADOW  |Δp|", .dim, limit: width)
                y += 1
                for d in c.largest {
                    guard y < canvas.height - 2 else { break }
                    let shadowText = d.shadowLabel.map { "\($0) \(String(format: "%.3f", d.shadowProbability ?? 0))" } ?? "error: \(d.shadowError ?? "")"
                    let line = "  \(d.requestID)  #\(d.row)  v\(d.liveVersion) \(d.liveLabel) \(String(format: "%.3f", d.liveProbability))  →  \(shadowText)  \(String(format: "%.4f", d.absDelta))"
                    canvas.put(1, y, line, index == selected ? .selected : .text, limit: width)
                    index += 1
                    y += 1
                }
            }
            y += 1
        }
    }
}
