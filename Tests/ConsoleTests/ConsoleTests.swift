import ControlProtocol
import Foundation
import JSON
import Synchronization
import Telemetry
import Testing

import Components
@testable import Console
import HTTP
import Registry
import Scoring

private func status(_ json: String) -> ComponentStatus { ComponentStatus(json: try! JSONValue.parse(json))! }
private func run(_ json: String) -> RunSummary { RunSummary(json: try! JSONValue.parse(json))! }

/// A fleet of three components and a down one, with fixed numbers.
private func fleet() -> FleetSnapshot {
    var s = FleetSnapshot()
    s.components = [
        ComponentView(url: "http://127.0.0.1:9001", kind: "batch", id: "batch-a",
                      status: status(#"{"kind":"batch","model":{"reference":"credit@1"},"following":"production","state":"running","queue":1,"run":{"id":7,"progress":0.45,"rows_done":120000,"rows_per_s":3000000,"eta_s":2,"file":"day.csv"},"schedule":{"schedule":"every 15m","next_run_at":"2026-11-25T02:15:00Z"}}"#),
                      series: ["rows": [0, 100, 200, 400], "progress": [0, 0.2, 0.45]], lastSeen: Date()),
        ComponentView(url: "http://127.0.0.1:9000", kind: "serve", id: "serve-a",
                      status: status(#"{"kind":"serve","model":{"reference":"credit@2"},"following":"production","state":"serving"}"#),
                      series: ["requests": [10, 20, 30, 40], "errors": [0, 0, 0, 0], "p50_ms": [0.1], "p95_ms": [0.2], "p99_ms": [0.1, 0.3, 0.4], "in_flight": [1]],
                      lastSeen: Date()),
        ComponentView(url: "http://127.0.0.1:9002", kind: "stream", id: "stream-a",
                      status: status(#"{"kind":"stream","model":{"reference":"credit@2"},"state":"running","backlog":{"status":"FALLING_BEHIND","events":1200,"age_s":3.5}}"#),
                      series: ["in": [5], "out": [1, 2, 3], "dead": [0], "backlog": [100, 600, 1200], "p99_ms": [2.5]], lastSeen: Date()),
        ComponentView(url: "http://127.0.0.1:9003", kind: "serve", id: "serve-b", lastSeen: Date(timeIntervalSince1970: 0), error: "connect failed"),
    ]
    s.aliases = [("credit", "production", 2), ("credit", "canary", 3)]
    return s
}

@Suite struct CanvasTests {
    @Test func putClipsAndBoxesDraw() {
        var canvas = Canvas(width: 10, height: 3, unicode: false)
        canvas.box(x: 0, y: 0, width: 10, height: 3, title: "abcdefghij")
        canvas.put(8, 1, "xyz", .value)
        #expect(canvas.text == "+- abcde-+\n|       xy\n+--------+")
        #expect(canvas.runs(1).map(\.role) == [.border, .text, .value])
    }

    @Test func sparklinesScaleToTheirWindowWithAnASCIIFallback() {
        #expect(sparkline([0, 1, 2, 4, 8], width: 5, unicode: true) == " ▂▃▅█")
        #expect(sparkline([0, 1, 2, 4, 8], width: 5, unicode: false) == " .,=#")
        #expect(sparkline([1, 1], width: 4, unicode: true) == "  ██")
        #expect(sparkline([0.5], width: 2, unicode: true, ceiling: 1) == " ▅")
    }

    @Test func themesOverrideRolesAndIgnoreUnknownKeys() {
        let theme = Theme.parse("# comment\nok = #00ff00\nnot.a.role = #123456\nerror = nonsense\n", name: "t")
        #expect(theme.colors[.ok] == Theme.RGB(0, 255, 0))
        #expect(theme.colors[.error] == Theme.builtIn.colors[.error])
        #expect(!theme.monochrome)
        #expect(Theme.parse("monochrome = true", name: "m").monochrome)
        #expect(Theme.xterm256(.init(255, 0, 0)) == 196)
        #expect(Theme.xterm256(.init(128, 128, 128)) == 244)
        #expect(Theme.basic8(.init(0, 200, 0)) == 2)
        // The shipped themes all parse, and each sets every role or is monochrome.
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("themes")
        for name in ["default", "light", "high-contrast", "mono"] {
            let text = (try? String(contentsOf: folder.appendingPathComponent("\(name).theme"), encoding: .utf8)) ?? ""
            let keys = text.split(separator: "\n").filter { !$0.hasPrefix("#") && $0.contains("=") }.map { $0.split(separator: "=")[0].trimmingCharacters(in: .whitespaces) }
            #expect(name == "mono" ? keys == ["monochrome"] : Set(keys) == Set(Role.allCases.map(\.rawValue)), "\(name)")
        }
    }
}

@Suite struct ScreenTests {
    /// The overview at 80×24, compared with golden text.
    @Test func overviewAt80x24() {
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)  // 2026-11-25 00:00:00 UTC
        state.status = "ready"
        let canvas = drawConsole(fleet(), state, width: 80, height: 24, unicode: true)
        let lines = canvas.text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
        #expect(lines.count == 24)
        #expect(lines.allSatisfy { $0.count == 80 })
        #expect(lines[0].hasPrefix(" Switchyard [0 Overview] 1 2 3 4 5 6 7 8 "))
        #expect(lines[1] == " 4 components: serve-b DOWN, stream-a FALLING_BEHIND  │ credit: production=v2 ca")
        #expect(lines[2] == "┌─ batch batch-a  credit@1  running ───────────────────────────────────────────┐")
        #expect(lines[3] == "│ run 7  45%  120.0k rows  3.0M rows/s  ETA 2s  day.csv  queue 1  next 02:15Z  │")
        #expect(lines[4].hasPrefix("│ rows/s                ▃▅█  progress "))
        #expect(lines[6] == "┌─ serve serve-a  credit@2  serving ───────────────────────────────────────────┐")
        #expect(lines[7].hasPrefix("│ req/s 40  p50 0.10 ms  p99 0.40 ms  4xx 0.0%  5xx 0.0%  in flight 1"))
        #expect(lines[10].hasPrefix("┌─ stream stream-a  credit@2  running "))
        #expect(lines[11].hasPrefix("│ FALLING_BEHIND  backlog 1200  age 3.5s  in 5/s  out 3/s  dead 0/s  p99 2.5ms │"))
        #expect(lines[14].hasPrefix("┌─ serve serve-b  no model  DOWN "))
        #expect(lines[15].hasPrefix("│ DOWN — last seen 20782d0h ago at http://127.0.0.1:9003"))
        #expect(lines[16].hasPrefix("│ connect failed"))
        #expect(lines[22] == " ready" + String(repeating: " ", count: 57) + "polling every 1s ")
        #expect(lines[23].hasPrefix(" q quit  ? help  0-8 views"))
        // Roles: the down panel's title is an error, the selected panel's frame is highlighted.
        #expect(canvas.cells[14 * 80 + 3].role == .error)
        #expect(canvas.cells[11 * 80 + 2].role == .warn)
        #expect(canvas.cells[2 * 80].role == .selected)
    }

    /// A stream whose Redis is gone says so on its panel's first line, in the error role.
    @Test func aDependencyOutageTakesThePanelsFirstLine() {
        var snapshot = fleet()
        snapshot.components[2].status = status(#"{"kind":"stream","model":{"reference":"credit@2"},"state":"reconnecting","backlog":{"status":"OK","events":0},"dependencies":[{"name":"source","address":"redis://127.0.0.1:6379/events","up":false,"since":"2026-11-24T23:58:58.000Z","error":"Redis at 127.0.0.1:6379 closed the connection","outages":1},{"name":"sink","address":"dir:out","up":true,"since":null,"error":null,"outages":0}]}"#)
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        let canvas = drawConsole(snapshot, state, width: 80, height: 24, unicode: true)
        let lines = canvas.text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
        #expect(lines[10].hasPrefix("┌─ stream stream-a  credit@2  reconnecting "))
        #expect(lines[11] == "│ source redis://127.0.0.1:6379/events unreachable for 1m2s: Redis at 127.0.0. │")
        #expect(canvas.cells[11 * 80 + 2].role == .error)
        #expect(canvas.cells[10 * 80 + 3].role == .error)
    }

    /// A flood of 400s is not health: the panel shows 4xx and 5xx apart, and the top line names it.
    @Test func aFloodOfClientErrorsIsNamed() {
        var snapshot = fleet()
        snapshot.components[1].series = ["requests": [100], "errors": [0], "client_errors": [87], "p50_ms": [0.1], "p99_ms": [0.4], "in_flight": [1]]
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        let canvas = drawConsole(snapshot, state, width: 120, height: 30, unicode: true)
        let lines = canvas.text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
        #expect(lines[1].hasPrefix(" 4 components: serve-b DOWN, serve-a 4xx 87%, stream-a FALLING_BEHIND  │"), "\(lines[1])")
        #expect(lines[9].hasPrefix("│ req/s 100  p50 0.10 ms  p99 0.40 ms  4xx 87.0%  5xx 0.0%  in flight 1"), "\(lines[9])")
        #expect(canvas.cells[9 * 120 + 2].role == .warn)
        #expect(canvas.cells[1 * 120 + 1].role == .error)
    }

    /// One time zone (UTC, said in the header), human units, and "–" where there is no data.
    @Test func oneTimeZoneHumanUnitsAndDashesForNoData() {
        var snapshot = fleet()
        snapshot.components[0].status?.batch?.run?.etaSeconds = 16_129
        snapshot.components[1].series = ["requests": [0], "errors": [0], "client_errors": [0], "p50_ms": [0], "p99_ms": [0], "in_flight": [0]]
        snapshot.components[2].series = ["in": [0], "out": [0], "dead": [0], "backlog": [0], "p99_ms": [0]]
        snapshot.components[2].status?.state = "paused"
        snapshot.components[2].status?.counters = NamedNumbers([NamedNumber("dead_letters", 0), NamedNumber("e2e_p99_ms", 13_200), NamedNumber("e2e_p50_ms", nil)])
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800 + 3_725)  // 01:02:05 UTC
        let lines = drawConsole(snapshot, state, width: 80, height: 24, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines[0].hasSuffix(" 01:02:05 UTC "), "\(lines[0])")
        #expect(lines[3].contains("ETA 4h28m"), "\(lines[3])")
        #expect(lines[7].hasPrefix("│ req/s 0  p50 –  p99 –  4xx 0.0%"), "\(lines[7])")
        #expect(lines[11].contains("p99 –"), "\(lines[11])")
        state.view = .stream
        let stream = drawConsole(snapshot, state, width: 100, height: 30, unicode: true).text
        #expect(stream.contains("dead letters 0  e2e p99 13.2 s  e2e p50 –"))
        #expect(stream.contains("p50 –  p99 –)"))
        #expect(!stream.contains("e2e_p99_ms"))
        // 99.96 events/s (100 events in a tick of 1.0004 s) is "100", not "100.0"; any offset shows in UTC.
        #expect(short(99.96) == "100" && short(12.5) == "12.5" && short(12_345) == "12.3k")
        #expect(shortTime("2026-11-29T23:10:49+01:00") == "11-29 22:10:49" && shortTime(nil) == "–")
        #expect(milliseconds(0.421) == "0.42 ms" && milliseconds(13_200) == "13.2 s" && milliseconds(2.5, compact: true) == "2.5ms")
    }

    /// A status message goes after a while (an error later) and is never cut: a long one wraps.
    @Test func statusMessagesExpireAndAreNeverCut() {
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        let message = "swap serve-a to credit@3: 409: the alias moved meanwhile (expected v2, it is on v4); look at the Models view and try again with the version you mean"
        state.status = message
        state.statusRole = .error
        func footer(_ state: ConsoleState) -> String {
            let lines = drawConsole(fleet(), state, width: 80, height: 24, unicode: true).text.split(separator: "\n", omittingEmptySubsequences: false)
            return lines[20...22].map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        }
        #expect(footer(state).contains(message), "\(footer(state))")
        state.now += statusLifetime * 2
        #expect(footer(state).contains(message), "an error stays longer")
        state.now += statusLifetime * 2
        #expect(!footer(state).contains("swap serve-a"))
        state.status = "refreshing"
        state.statusRole = .status
        #expect(footer(state).contains("refreshing"))
        state.now += statusLifetime + 1
        #expect(!footer(state).contains("refreshing"))
    }

    /// The help box fits the smallest terminal and lists the Predict view's keys too.
    @Test func helpFitsTheTerminal() {
        var state = ConsoleState()
        state.showHelp = true
        let lines = drawConsole(fleet(), state, width: 80, height: 24, unicode: true).text.split(separator: "\n").map(String.init)
        let box = lines.filter { $0.contains("│ ") && ($0.contains("quit") || $0.contains("Predict view")) }
        #expect(box.count == 2, "\(lines.joined(separator: "\n"))")
        #expect(!lines.joined().contains("more lines"))
        let small = drawConsole(fleet(), state, width: 80, height: 12, unicode: true).text
        #expect(small.contains("needs at least 80×24"))
    }

    /// A component that refuses the console's key is up, and says UNAUTHORIZED, not DOWN.
    @Test func anUnauthorizedComponentIsNotDown() {
        var snapshot = fleet()
        snapshot.components[3] = ComponentView(url: "http://127.0.0.1:9003", lastSeen: Date())
        snapshot.components[3].refused = "401 unauthorized: unknown or revoked API key"
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        let lines = drawConsole(snapshot, state, width: 80, height: 24, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines[1].hasPrefix(" 4 components: http://127.0.0.1:9003 UNAUTHORIZED, stream-a FALLING_BEHIND"), "\(lines[1])")
        #expect(lines[14].contains("UNAUTHORIZED") && !lines[14].contains("DOWN"), "\(lines[14])")
        #expect(lines[15].contains("refuses this console's key"))
        #expect(lines[16].contains("401 unauthorized: unknown or revoked API key"))
    }

    /// Panels grow with the terminal: at 140×45 three components' sparklines get several rows
    /// instead of leaving most of the screen empty; at 80×24 four components keep 4-row panels.
    @Test func panelsGrowWithTheTerminal() {
        var snapshot = fleet()
        snapshot.components.removeLast()
        let lines = drawConsole(snapshot, ConsoleState(), width: 140, height: 45, unicode: true).text.split(separator: "\n").map(String.init)
        let tops = lines.indices.filter { lines[$0].hasPrefix("┌─ ") }
        #expect(tops == [2, 14, 26], "\(tops)")
        let serveRows = lines[16...24].filter { $0.contains("█") }
        #expect(serveRows.count >= 4, "the serve panel's sparklines span several rows: \(serveRows)")
        let empty = lines[2..<43].filter { $0.trimmingCharacters(in: .whitespaces).isEmpty }
        #expect(empty.count <= 5)
        let small = drawConsole(fleet(), ConsoleState(), width: 80, height: 24, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(small.indices.filter { small[$0].hasPrefix("┌─ ") } == [2, 6, 10, 14])
    }

    /// The Stream view lists the latest dead letters; ↑↓ select one, Enter shows it whole.
    @Test func theStreamViewListsDeadLetters() {
        var s = fleet()
        s.components[2].deadLetters = [
            DeadLetter(id: "9", source: "b.jsonl:2", reason: "not valid JSON: unexpected end of input at byte 12", event: "{\"id\": 9, \"amo", at: 1_795_564_790),
            DeadLetter(id: "4", source: "a.jsonl:4", reason: "field \"amount\": expected a number, got \"lots\"", event: "{\"id\": 4, \"amount\": \"lots\"}", at: 1_795_564_780),
        ]
        s.components[2].deadLettersKept = "dir:/scored"
        var c = Controller()
        _ = c.handle(.character("3"), s)
        let lines = drawConsole(s, c.state, width: 100, height: 30, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("Latest dead letters by newest") && $0.contains("dir:/scored") })
        #expect(lines.contains { $0.contains("23:59:50  b.jsonl:2") && $0.contains("not valid JSON") })
        _ = c.handle(.down, s)
        _ = c.handle(.enter, s)
        #expect(c.state.detail?.title == "dead letter a.jsonl:4")
        let whole = drawConsole(s, c.state, width: 100, height: 30, unicode: true).text
        #expect(whole.contains(#"{"id": 4, "amount": "lots"}"#) && whole.contains(#"why: field "amount": expected a number, got "lots""#))
        // A read key: the view says why there is no list.
        s.components[2].deadLetters = []
        s.components[2].deadLetterProblem = "the latest dead letters need a key with scope operate (they hold events' data)"
        _ = c.handle(.escape, s)
        #expect(drawConsole(s, c.state, width: 100, height: 30, unicode: true).text.contains("need a key with scope operate"))
    }

    /// More components than panels fit: one line each, replicas of a service grouped under their
    /// totals (k9s's list); `m` switches to panels and back.
    @Test func manyComponentsAreATableWithReplicasGrouped() {
        func canvas(_ s: FleetSnapshot, _ c: Controller) -> Canvas { drawConsole(s, c.state, width: 80, height: 24, unicode: true) }
        func serve(_ n: Int, _ model: String, requests: Double, p99: Double, down: Bool = false) -> ComponentView {
            ComponentView(url: "http://10.0.0.\(n):8080", kind: "serve", id: "serve-\(n)",
                          status: status(#"{"kind":"serve","model":{"reference":"\#(model)"},"following":"production","state":"serving"}"#),
                          series: ["requests": [requests], "errors": [0], "p99_ms": [p99]], lastSeen: Date(timeIntervalSince1970: 1_795_564_700),
                          error: down ? "connect failed" : nil)
        }
        var s = FleetSnapshot()
        s.components = [fleet().components[0]]  // batch-a
            + [serve(1, "credit@2", requests: 100, p99: 0.5), serve(2, "credit@2", requests: 50, p99: 1.5), serve(3, "credit@2", requests: 0, p99: 0, down: true)]
            + [serve(4, "fraud@7", requests: 10, p99: 0.2)]
            + (5...11).map { serve($0, "scoring\($0)@1", requests: 1, p99: 0.1) }
        var c = Controller()
        c.state.now = Date(timeIntervalSince1970: 1_795_564_800)
        c.state.screenHeight = 24
        let lines = drawConsole(s, c.state, width: 80, height: 24, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines[2].hasPrefix(" KIND   ID                 MODEL        NOW"))
        #expect(lines[3].hasPrefix(" batch  batch-a            credit@1     run 7 45%  ETA 2s"), "\(lines[3])")
        #expect(lines[4].hasPrefix(" ▾ serve credit: 3 replicas, 2 up; 150 req/s, worst p99 1.5ms"), "\(lines[4])")
        #expect(lines[5].hasPrefix(" serve  serve-1            credit@2     100 req/s  p99 0.5ms  5xx 0.0%"), "\(lines[5])")
        #expect(lines[7].hasPrefix(" serve  serve-3            credit@2     DOWN, last seen 1m40s ago"), "\(lines[7])")
        #expect(canvas(s, c).cells[7 * 80 + 30].role == .error)
        #expect(lines.contains { $0.hasPrefix(" serve  serve-11") }, "all 11 components on one screen")
        #expect(!lines.contains { $0.contains("▾ serve fraud") }, "one component is not a group")
        // m: panels (they scroll); m again: the table.
        #expect(c.handle(.character("m"), s) == .redraw)
        #expect(c.state.compact == false)
        #expect(drawConsole(s, c.state, width: 80, height: 24, unicode: true).text.contains("┌─ batch batch-a"))
        _ = c.handle(.character("m"), s)
        #expect(c.state.compact == true)
    }

    /// Replicas shown as panels: their totals on the bottom edge of the group's last panel.
    @Test func replicaPanelsShowTheirTotals() {
        var s = fleet()
        s.components[3] = ComponentView(url: "http://127.0.0.1:9004", kind: "serve", id: "serve-c",
                                        status: status(#"{"kind":"serve","model":{"name":"credit","version":2,"reference":"credit@2"},"state":"serving"}"#),
                                        series: ["requests": [60], "p99_ms": [0.9]], lastSeen: Date())
        s.components[1].status?.model = ModelReference(name: "credit", version: 2, sha256: "")
        s.components.swapAt(2, 3)  // the collector's order: batch, serve-a, serve-c, stream
        let lines = drawConsole(s, ConsoleState(), width: 140, height: 30, unicode: true).text.split(separator: "\n").map(String.init)
        let bottom = lines.firstIndex { $0.contains("serve credit: 2 replicas, 2 up; 100 req/s, worst p99 0.9ms") }
        #expect(bottom != nil && lines[bottom!].hasPrefix("└"), "\(lines.joined(separator: "\n"))")
    }

    /// A detail chart has a time axis to now, units on its scale, min and max, and the swaps marked.
    @Test func detailChartsHaveAxesUnitsAndMarks() {
        var snapshot = fleet()
        snapshot.components[1].series = ["requests": Array(repeating: 50, count: 120), "p50_ms": Array(repeating: 0.2, count: 120),
                                         "p95_ms": Array(repeating: 0.5, count: 120), "p99_ms": Array(repeating: 0.9, count: 120)]
        var state = ConsoleState()
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        state.view = .serve
        snapshot.events = [EventItem(at: "2026-11-24T23:59:30.000Z", source: "serve serve-a", kind: "model", message: "swapped credit@1 → credit@2")]
        let lines = drawConsole(snapshot, state, width: 140, height: 40, unicode: true).text.split(separator: "\n").map(String.init)
        let axis = lines.filter { $0.contains("−2m") && $0.contains("−1m") && $0.contains("now") }
        #expect(axis.count == 2, "\(lines.joined(separator: "\n"))")
        #expect(axis.allSatisfy { $0.contains("◆") }, "the swap 30 s ago is marked on both axes")
        #expect(lines.contains { $0.hasPrefix(" 0.9ms") } && lines.contains { $0.hasPrefix(" 50/s") })
        #expect(lines.contains { $0.contains("•") } && lines.contains { $0.contains("·") }, "p95 and p50 drawn over the p99 bars")
    }

    @Test func aSmallTerminalIsToldSo() {
        let text = drawConsole(fleet(), ConsoleState(), width: 60, height: 20, unicode: true).text
        #expect(text.contains("The terminal is 60×20."))
        #expect(text.contains("needs at least 80×24"))
    }

    @Test func asciiFallbackHasNoUnicode() {
        let text = drawConsole(fleet(), ConsoleState(), width: 80, height: 24, unicode: false).text
        let foreign = text.unicodeScalars.filter { !$0.isASCII }.map(String.init).joined()
        #expect(foreign.isEmpty, "\(foreign)")
        #expect(text.contains("+- batch batch-a"))
    }

    @Test func eventsViewFilters() {
        var snapshot = fleet()
        snapshot.events = [
            EventItem(at: "2026-11-25T00:00:01Z", source: "serve serve-a", kind: "model", message: "swapped credit@1 → credit@2"),
            EventItem(at: "2026-11-25T00:00:02Z", source: "batch batch-a", kind: "run", message: "run 7 started"),
        ]
        var state = ConsoleState()
        state.view = .events
        state.filter = "swap"
        let text = drawConsole(snapshot, state, width: 80, height: 24, unicode: true).text
        #expect(text.contains("Events by newest (o sorts), times in UTC matching \"swap\" (1)"))
        #expect(text.contains("00:00:01  serve serve-a"))
        #expect(!text.contains("run 7 started"))
    }
}

@Suite struct ControllerTests {
    @Test func keysMoveSelectViewsAndQuit() {
        var c = Controller()
        let s = fleet()
        #expect(c.handle(.down, s) == .redraw)
        #expect(c.state.selected == 1)
        _ = c.handle(.character("j"), s); _ = c.handle(.character("j"), s); _ = c.handle(.character("j"), s)
        #expect(c.state.selected == 3, "stops at the last component")
        _ = c.handle(.character("6"), s)
        #expect(c.state.view == .events)
        _ = c.handle(.tab, s)
        #expect(c.state.view == .rollout)
        _ = c.handle(.tab, s)
        #expect(c.state.view == .drift)
        _ = c.handle(.tab, s)
        #expect(c.state.view == .overview)
        _ = c.handle(.character("?"), s)
        #expect(c.state.showHelp)
        _ = c.handle(.character("x"), s)
        #expect(!c.state.showHelp)
        _ = c.handle(.character("+"), s)
        #expect(c.state.interval == 0.5)
        #expect(c.handle(.character("q"), s) == .quit)
    }

    /// Esc goes back and never out; q closes help; under `up`, q asks before stopping everything.
    @Test func escapeGoesBackAndQuittingAsks() {
        var c = Controller()
        let s = fleet()
        _ = c.handle(.character("2"), s)
        #expect(c.handle(.escape, s) == .redraw)
        #expect(c.state.view == .overview)
        #expect(c.handle(.escape, s) == .redraw, "Esc on the overview does not quit")
        #expect(c.state.status == "q quits")
        _ = c.handle(.character("?"), s)
        #expect(c.handle(.character("q"), s) == .redraw, "q closes help")
        #expect(!c.state.showHelp)
        #expect(c.handle(.character("q"), s) == .quit, "the console alone quits at once")
        c.state.quitQuestion = "Stop everything?"
        #expect(c.handle(.character("q"), s) == .redraw)
        #expect(c.state.confirm?.question == "Stop everything?")
        #expect(c.handle(.escape, s) == .redraw)
        #expect(c.state.confirm == nil && c.state.status == "cancelled: quit")
        _ = c.handle(.character("q"), s)
        #expect(c.handle(.character("y"), s) == .quit)
    }

    @Test func triggerGoesAtOnceAndPauseAsksFirst() {
        var c = Controller()
        let s = fleet()
        #expect(c.handle(.character("t"), s) == .perform(.trigger, componentURL: "http://127.0.0.1:9001", label: "trigger a run of batch-a"))
        #expect(c.handle(.character("p"), s) == .redraw)
        #expect(c.state.confirm?.question.hasPrefix("Pause stream-a?") == true)
        #expect(c.handle(.character("n"), s) == .redraw)
        #expect(c.state.confirm == nil)
        _ = c.handle(.character("p"), s)
        #expect(c.handle(.character("y"), s) == .perform(.pause, componentURL: "http://127.0.0.1:9002", label: "pause stream-a"))
    }

    /// Commands name a component by kind, id, or the id's unique beginning, as well as the selection.
    @Test func commandsAddressAComponentByKindOrName() {
        var c = Controller()
        let s = fleet()  // batch-a (selected), serve-a, stream-a, serve-b DOWN
        func run(_ text: String) -> Effect { c.command(text, s) }
        #expect(run("swap serve 3") == .redraw)
        #expect(c.state.confirm?.question.hasPrefix("Swap serve serve-a: credit@2") == true, "\(c.state.confirm?.question ?? c.state.status)")
        #expect(c.handle(.character("y"), s) == .perform(.swap(.version(3)), componentURL: "http://127.0.0.1:9000", label: "swap serve-a to credit@3"))
        #expect(run("alias stream-a canary") == .redraw)
        #expect(c.handle(.character("y"), s) == .perform(.swap(.alias("canary")), componentURL: "http://127.0.0.1:9002", label: "swap stream-a to credit@canary"))
        #expect(run("rerun 7 batch") == .perform(.rerun(7), componentURL: "http://127.0.0.1:9001", label: "rerun run 7 of batch-a"))
        #expect(run("run bat") == .perform(.trigger, componentURL: "http://127.0.0.1:9001", label: "trigger a run of batch-a"))
        _ = run("run stream-a")
        #expect(c.state.status == "run: stream-a is a stream component; run needs a batch one")
        _ = run("swap serve-b 3")
        #expect(c.state.status == "swap: no component \"serve-b\" is up (Tab lists them)")
        _ = run("swap s 3")
        #expect(c.state.status == "swap: \"s\" could be serve-a, stream-a")
        _ = run("pause serve")
        #expect(c.state.status == "pause: serve-a is a serve component; pause needs a stream one")
        #expect(c.state.confirm == nil, "nothing was asked or sent for a refused command")
    }

    /// Tab completes a verb, then a component; several candidates complete to what they share and
    /// are listed. ↑ and ↓ walk the commands given before.
    @Test func tabCompletesAndArrowsWalkTheHistory() {
        var c = Controller()
        let s = fleet()
        func type(_ text: String) { for ch in text { _ = c.handle(.character(ch), s) } }
        _ = c.handle(.character(":"), s)
        type("sw")
        _ = c.handle(.tab, s)
        #expect(c.state.commandLine == "swap ")
        type("se")
        _ = c.handle(.tab, s)
        #expect(c.state.commandLine == "swap serve")
        #expect(c.state.status == "serve  serve-a")
        type("-")
        _ = c.handle(.tab, s)
        #expect(c.state.commandLine == "swap serve-a ")
        type("3")
        _ = c.handle(.enter, s)
        _ = c.handle(.character("n"), s)  // the swap asked; no
        _ = c.handle(.character(":"), s)
        type("run")
        _ = c.handle(.enter, s)
        _ = c.handle(.character(":"), s)
        _ = c.handle(.up, s)
        #expect(c.state.commandLine == "run")
        _ = c.handle(.up, s)
        #expect(c.state.commandLine == "swap serve-a 3")
        _ = c.handle(.up, s)
        #expect(c.state.commandLine == "swap serve-a 3", "the oldest stays")
        _ = c.handle(.down, s)
        _ = c.handle(.down, s)
        #expect(c.state.commandLine == "", "past the newest is a fresh line")
    }

    @Test func swapShowsFromToWithMetricsAndReadOnlyRefuses() {
        var c = Controller()
        c.describe = { $0 == "credit@2" ? "auc 0.8100" : $0 == "credit@3" ? "auc 0.8200" : nil }
        let s = fleet()
        _ = c.handle(.down, s)  // serve-a
        for key in [Key.character("s"), .character("3"), .enter] { _ = c.handle(key, s) }
        #expect(c.state.confirm?.question == "Swap serve serve-a: credit@2 (auc 0.8100) → credit@3 (auc 0.8200)?")
        #expect(c.handle(.character("y"), s) == .perform(.swap(.version(3)), componentURL: "http://127.0.0.1:9000", label: "swap serve-a to credit@3"))
        for key in [Key.character(":"), .character("f"), .character("o"), .enter] { _ = c.handle(key, s) }
        #expect(c.state.status.hasPrefix("unknown command \":fo\""))
        c.state.readOnly = true
        #expect(c.handle(.character("t"), s) == .redraw)
        #expect(c.state.status == "run: not allowed — started with --read-only")
        #expect(c.state.statusRole == .error)
    }
}

@Suite struct PredictTests {
    private func document() throws -> ModelDocument {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/sklearn-credit-model.json")
        return try ModelDocument.decode(try Data(contentsOf: url))
    }

    @Test func theFormStartsFromTheExampleAndEditsBecomeTheRecord() throws {
        var c = Controller()
        c.state.view = .predict
        c.state.predict = PredictForm(componentURL: "http://127.0.0.1:9000", model: "credit@2", document: try document())
        let s = fleet()
        #expect(c.state.predict?.fields.first?.name == "amount")
        #expect(c.state.predict?.fields.first(where: { $0.name == "region" })?.value.isEmpty == false)
        // Edit amount to 5000, clear term (missing), and send.
        for key in [Key.character("e"), .backspace, .backspace, .backspace, .backspace, .backspace, .backspace, .backspace, .backspace, .backspace, .backspace,
                    .character("5"), .character("0"), .character("0"), .character("0"), .enter, .down, .character("x")] { _ = c.handle(key, s) }
        let record = try c.state.predict!.record().get()
        #expect(record["amount"] == .number(5000))
        #expect(record["term"] == nil)
        #expect(c.handle(.enter, s) == .predict)
        #expect(c.state.predict?.sending == true)
        // A number field that is not a number is caught before sending.
        for key in [Key.up, .character("e"), .character("x"), .enter] { _ = c.handle(key, s) }
        #expect(c.handle(.enter, s) == .redraw)
        #expect(c.state.status.hasPrefix("field \"amount\": expected a number"))
    }

    @Test func theViewShowsBothAnswersAndTheVerdict() throws {
        var state = ConsoleState()
        state.view = .predict
        var form = PredictForm(componentURL: "http://127.0.0.1:9000", model: "credit@2", document: try document())
        form.result = PredictResult(service: [("0", 0.25), ("1", 0.75)], serviceLabel: "1", serviceVersion: "v2", latencyMilliseconds: 0.42,
                                    embedded: [("0", 0.25), ("1", 0.75)], embeddedLabel: "1",
                                    verdict: "parity: equal within 1e-9 (largest difference 0.0e+00)", agrees: true)
        state.predict = form
        let canvas = drawConsole(fleet(), state, width: 100, height: 30, unicode: true)
        let text = canvas.text
        #expect(text.contains("service v2: 1 in 0.42 ms"))
        #expect(text.contains("p(1) = 0.750000000000"))
        #expect(text.contains("embedded credit@2: 1"))
        #expect(text.contains("parity: equal within 1e-9"))
        #expect(text.contains("> amount"))
    }
}

@Suite struct PredictExplainTests {
    private func form() throws -> PredictForm {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/sklearn-credit-model.json")
        return PredictForm(componentURL: "http://127.0.0.1:9000", model: "credit@2", document: try ModelDocument.decode(try Data(contentsOf: url)))
    }

    /// An unknown category is flagged as it is typed and refused before sending (it used to be
    /// scored silently as all zeros); the allowed values are listed; an answer to a record that
    /// can no longer be sent is cleared.
    @Test func anUnknownCategoryIsFlaggedAndAStaleAnswerCleared() throws {
        var c = Controller()
        c.state.view = .predict
        var f = try form()
        f.result = PredictResult(service: [("1", 0.7)], serviceLabel: "1", verdict: "parity")
        f.selected = f.fields.firstIndex { $0.name == "region" }!
        c.state.predict = f
        let s = fleet()
        let drawnBefore = drawConsole(s, c.state, width: 120, height: 34, unicode: true).text
        #expect(drawnBefore.contains("region takes: central, east"))
        for key in [Key.character("e"), .character("a"), .character("t"), .character("l"), .character("a"), .character("n"), .character("t"), .character("i"), .character("s"), .enter] {
            _ = c.handle(key, s)
        }
        #expect(c.state.predict?.fields[f.selected].value == "atlantis", "e replaces the text")
        #expect(c.state.predict?.result == nil, "the stale answer is gone")
        #expect(c.handle(.enter, s) == .redraw)
        #expect(c.state.status.contains(#"unknown category "atlantis"; expected one of central, east"#), "\(c.state.status)")
        #expect(drawConsole(s, c.state, width: 120, height: 34, unicode: true).text.contains(#"region: unknown category "atlantis""#))
    }

    /// A record pasted as JSON fills the form (a paste arrives as keys; line breaks as Enter).
    @Test func aRecordPastedAsJSONFillsTheForm() throws {
        var c = Controller()
        c.state.view = .predict
        c.state.predict = try form()
        let s = fleet()
        let pasted = "{\"amount\": 5000, \"region\": \"west\", \"note\": \"a {brace} in text\",\n \"term\": null, \"customer\": \"C-1\"}"
        for ch in pasted { _ = c.handle(ch == "\n" ? .enter : .character(ch), s) }
        #expect(c.state.predict?.pasting == nil, "complete once the braces balance outside strings")
        let f = try #require(c.state.predict)
        #expect(f.fields.first { $0.name == "amount" }?.value == "5000")
        #expect(f.fields.first { $0.name == "region" }?.value == "west")
        #expect(f.fields.first { $0.name == "term" }?.value == "", "null: missing")
        #expect(f.fields.first { $0.name == "rate" }?.value == "", "absent: missing")
        #expect(c.state.status == "record pasted; not model inputs, ignored: note, customer")
        for ch in "{not json}" { _ = c.handle(.character(ch), s) }
        #expect(c.state.status.hasPrefix("the pasted record is not a JSON object"))
    }

    /// The answer explains itself: bars for the largest contributions, the base and margin, and
    /// what the last edit changed.
    @Test func theAnswerShowsWhyAndWhatTheEditChanged() throws {
        var f = try form()
        let score = f.fields.firstIndex { $0.name == "credit_score" }!
        var values = f.fields.map(\.value)
        var first = PredictResult(service: [("0", 0.3), ("1", 0.7)], serviceLabel: "1", serviceVersion: "v2", embedded: [("0", 0.3), ("1", 0.7)],
                                  embeddedLabel: "1", verdict: "parity: equal within 1e-9", agrees: true)
        first.margin = 0.85
        first.base = -0.41
        first.marginName = "log-odds of 1"
        first.contributions = [("credit_score", "724", -0.61), ("utilization", "1", 1.52), ("term", "36", 0.01)]
        f.receive(first, values: values)
        #expect(f.result?.change == nil, "nothing to compare the first answer with")
        values[score] = "580"
        f.fields[score].value = "580"
        var second = first
        second.margin = 1.27
        f.receive(second, values: values)
        #expect(f.result?.change?.hasPrefix("credit_score \(first.contributions[0].value) → 580: +0.42 log-odds of 1") == false)
        #expect(f.result?.change?.contains("→ 580: +0.42 log-odds of 1") == true, "\(f.result?.change ?? "")")
        var state = ConsoleState()
        state.view = .predict
        state.predict = f
        let text = drawConsole(fleet(), state, width: 140, height: 40, unicode: true).text
        #expect(text.contains("why — log-odds of 1: base -0.410 → +1.270"))
        #expect(text.contains("credit_score") && text.contains("-0.610") && text.contains("+1.520"))
        #expect(text.contains("█"))
        #expect(text.contains("→ 580: +0.42 log-odds of 1"))
    }
}

/// The fleet with batch run history, registry versions and an audit log.
private func detailedFleet() -> FleetSnapshot {
    var s = fleet()
    s.components[0].runs = [
        run(#"{"id":8,"status":"failed","trigger":"manual","who":"key:ops","model":"credit@1","inputs":[{"name":"bad.csv","size":2048,"sha256":"x"}],"rows_read":0,"rows_scored":0,"rows_rejected":0,"queued_at":"2026-11-25T01:10:00Z","started_at":"2026-11-25T01:10:01Z","finished_at":"2026-11-25T01:10:02Z","error":"bad.csv: the header lacks the required field \"amount\"","output":"/data/out"}"#),
        run(#"{"id":7,"status":"succeeded","trigger":"schedule","who":"schedule","model":"credit@1","inputs":[{"name":"day.csv","size":4096000,"sha256":"y"}],"rows_read":50000,"rows_scored":49990,"rows_rejected":10,"queued_at":"2026-11-25T01:00:00Z","started_at":"2026-11-25T01:00:00Z","finished_at":"2026-11-25T01:00:03Z","output":"/data/out","tasks":{"total":26,"done":26,"running":0,"failed":0,"retried":1,"workers":[{"name":"vm-a:4242:1f2e","done":14,"running":0,"rows":27000},{"name":"vm-b:77:aa01","done":12,"running":0,"rows":23000}]}}"#),
    ]
    s.components[1].status = status(#"{"kind":"serve","model":{"reference":"credit@2"},"following":"production","state":"serving","counters":{"swaps":1,"failed_swaps":0},"status_codes":{"200":9000,"400":12}}"#)
    s.versions = [
        .init(model: "credit", version: 3, sha256: "c", createdAt: "2026-11-25T00:30:00Z", createdBy: "cli", metrics: ["auc": 0.82, "accuracy": 0.74, "log_loss": 0.52], aliases: ["canary"]),
        .init(model: "credit", version: 2, sha256: "b", createdAt: "2026-11-25T00:20:00Z", createdBy: "cli", metrics: ["auc": 0.81], aliases: ["production"]),
        .init(model: "credit", version: 1, sha256: "a", createdAt: "2026-11-25T00:10:00Z", createdBy: "cli", metrics: ["auc": 0.79], aliases: []),
    ]
    s.audit = [
        .init(id: 4, at: "2026-11-25T00:31:00Z", who: "cli:ops", action: "promote", model: "credit", alias: "canary", fromVersion: nil, toVersion: 3, detail: nil),
        .init(id: 3, at: "2026-11-25T00:21:00Z", who: "cli:ops", action: "promote", model: "credit", alias: "production", fromVersion: 1, toVersion: 2, detail: nil),
    ]
    return s
}

@Suite struct DetailViewTests {
    func draw(_ view: ConsoleView, _ configure: (inout ConsoleState) -> Void = { _ in }) -> [String] {
        var state = ConsoleState()
        state.view = view
        state.now = Date(timeIntervalSince1970: 1_795_564_800)
        configure(&state)
        let text = drawConsole(detailedFleet(), state, width: 100, height: 30, unicode: true).text
        return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    @Test func batchViewListsRunsAndTheSelectedRunsDetails() {
        let lines = draw(.batch) { $0.row = 1 }
        #expect(lines[2].hasPrefix(" Batch batch-a  credit@1  next run 2026-11-25T02:15:00Z  queue 1"))
        #expect(lines[3].hasPrefix(" RUN   STATUS      TRIGGER  STARTED        ROWS    REJECTS MODEL"))
        #expect(lines[4].hasPrefix(" 8     failed      manual   11-25 01:10:01 0       0       credit@1"))
        #expect(lines[5].hasPrefix(" 7     succeeded   schedule 11-25 01:00:00 50.0k   10      credit@1"))
        let details = lines.joined(separator: "\n")
        #expect(details.contains("run 7: succeeded"))
        #expect(details.contains("read 50000  scored 49990"))
        #expect(details.contains("rejected 10"))
        #expect(details.contains("day.csv  4.1M B"))
        // A split run: its tasks, and who did them.
        #expect(details.contains("tasks 26/26 done ·"), "\(details)")
        #expect(details.contains("vm-a:4242:1f2e  14 done") && details.contains("vm-b:77:aa01  12 done"), "\(details)")
        let record = runDetail(detailedFleet().components[0].runs[1]).lines
        #expect(record.contains("tasks 26/26 done · 1 taken over · 2 workers"))
        #expect(record.contains("  vm-b:77:aa01  12 done  23000 rows"))
        // The filter narrows the table.
        let failed = draw(.batch) { $0.filter = "failed" }.joined(separator: "\n")
        #expect(failed.contains("runs matching \"failed\""))
        #expect(!failed.contains(" 7     succeeded"))
        #expect(failed.contains("error: bad.csv: the"), "the error wraps in the details")
    }

    /// `o` sorts a table another way; the selection stays on the same run.
    @Test func tablesSortAnotherWayAndKeepTheSelection() {
        var c = Controller()
        var s = detailedFleet()
        s.components[0].runs.append(run(#"{"id":6,"status":"succeeded","trigger":"manual","rows_read":90000,"rows_rejected":0}"#))
        _ = c.handle(.character("2"), s)
        _ = c.handle(.end, s)  // run 6, the oldest
        #expect(c.state.rowKey == "run:6")
        _ = c.handle(.character("o"), s)  // by status: failed 8, then succeeded 7 and 6
        #expect(batchRows(s, c.state).map(\.id) == [8, 7, 6] && c.state.status.hasPrefix("sorted by status"))
        _ = c.handle(.character("o"), s)  // by rows read
        #expect(batchRows(s, c.state).map(\.id) == [6, 7, 8])
        #expect(c.state.row == 0 && c.state.rowKey == "run:6", "still on run 6")
        #expect(drawConsole(s, c.state, width: 100, height: 30, unicode: true).text.contains("by rows (o sorts)"))
        _ = c.handle(.character("4"), s)
        _ = c.handle(.character("o"), s)  // versions by AUC
        #expect(modelRows(s, c.state).map(\.reference) == ["credit@3", "credit@2", "credit@1"])
    }

    /// A column too long for its width is cut with "…" and the next column still starts in its place.
    @Test func longValuesNeverRunIntoTheNextColumn() {
        #expect(column("credit@3", 10) == "credit@3  " && column("production,canary,shadow", 10) == "producti… ")
        var s = detailedFleet()
        s.versions[0].aliases = ["production-eu", "canary", "shadow", "blue", "green"]
        var state = ConsoleState()
        state.view = .models
        let lines = drawConsole(s, state, width: 100, height: 30, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines[4].hasPrefix(" credit@3             production-eu,cana… 0.8200  0.7400   0.5200   11-25 00:30"), "\(lines[4])")
    }

    @Test func modelsViewShowsVersionsAliasesMetricsAndAudit() {
        let lines = draw(.models)
        #expect(lines[4].hasPrefix(" credit@3             canary              0.8200  0.7400   0.5200   11-25 00:30"))
        #expect(lines[5].contains("credit@2             production          0.8100") && lines[5].contains("◂ serve,stream"))
        let text = lines.joined(separator: "\n")
        #expect(text.contains("Audit log, newest first"))
        #expect(text.contains("promote   credit@production  v1 → v2  by cli:ops"))
    }

    @Test func serveAndStreamViewsChartTheirSeries() {
        let serve = draw(.serve).joined(separator: "\n")
        #expect(serve.contains("Serve serve-a at http://127.0.0.1:9000  credit@2  serving  following @production"))
        #expect(serve.contains("latency: p99 bars, p95 •, p50 · (now: p50 0.10 ms  p95 0.20 ms  p99 0.40 ms)  min 0.1ms  max 0.4ms"))
        #expect(serve.contains("0.4ms") && serve.contains("now"), "the scale has units and the time axis ends at now")
        #expect(serve.contains("requests/s (40 now)  in flight 1  connections 0  min 10/s  max 40/s"))
        #expect(serve.contains("status codes since start:  200: 9000  400: 12"))
        #expect(serve.contains("█"))
        let stream = draw(.stream).joined(separator: "\n")
        #expect(stream.contains("Stream stream-a  credit@2  FALLING_BEHIND  backlog 1200 events, age 3.5s"))
        #expect(stream.contains("dead letters: 0 since start"))
    }
}

@Suite struct RegistryActionTests {
    @Test func promoteAndRollbackAskWithFromToAndMetrics() {
        var c = Controller()
        c.describe = { ["credit@1": "auc 0.7900", "credit@2": "auc 0.8100", "credit@3": "auc 0.8200"][$0] }
        let s = detailedFleet()
        _ = c.handle(.character("4"), s)
        _ = c.handle(.down, s)
        #expect(c.state.row == 1)
        #expect(c.handle(.character("P"), s) == .redraw)
        #expect(c.state.confirm == nil, "credit@2 is production already")
        #expect(c.state.status == "credit@production already points at v2")
        _ = c.handle(.up, s)
        _ = c.handle(.character("P"), s)
        #expect(c.state.confirm?.question == "Point credit@production: v2 (auc 0.8100) → v3 (auc 0.8200)? Components following it swap.")
        #expect(c.handle(.character("y"), s) == .registry(.promote(model: "credit", version: 3, alias: "production", expected: .version(2)), label: "promote credit@3 to production"))
        // One key rolls production back to where the audit log says it was.
        _ = c.handle(.character("b"), s)
        #expect(c.state.confirm?.question == "Roll credit@production back: v2 (auc 0.8100) → v1 (auc 0.7900)? Components following it swap.")
        #expect(c.handle(.character("y"), s) == .registry(.rollback(model: "credit", alias: "production"), label: "roll back credit@production to v1"))
        // From the overview, b rolls back the alias the selected component follows.
        _ = c.handle(.character("0"), s)
        _ = c.handle(.down, s)  // serve-a, following production
        _ = c.handle(.character("b"), s)
        #expect(c.state.confirm?.question.hasPrefix("Roll credit@production back: v2") == true)
    }

    /// The Rollout view: a split alias with a shadow, summed over its two replicas, its keys
    /// move the split by 10% (confirmed, then a registry route), abort and promote, and Enter on a
    /// disagreement opens its record in Predict.
    @Test func rolloutShowsTheSplitSideBySideAndMovesItWhenConfirmed() throws {
        var s = fleet()
        let route = #""route":{"split":[{"version":1,"weight":90},{"version":2,"weight":10}],"key":null,"shadow":{"version":3,"sample":100}}"#
        func replica(_ rps: Double, p99: Double) -> String {
            #"{"kind":"serve","model":{"reference":"credit@1"},"following":"production","state":"serving",\#(route),"status_codes":{"200":100},"versions":[{"version":1,"weight":90,"requests":900,"errors":0,"requests_per_second":\#(rps),"errors_per_second":0,"p50_ms":0.2,"p99_ms":\#(p99)},{"version":2,"weight":10,"requests":100,"errors":3,"requests_per_second":\#(rps / 9),"errors_per_second":0.5,"p50_ms":0.3,"p99_ms":2.5}]}"#
        }
        s.components[1].status = status(replica(90, p99: 1.5))
        s.components[3] = ComponentView(url: "http://127.0.0.1:9004", kind: "serve", id: "serve-c", status: status(replica(72, p99: 1.9)), lastSeen: Date())
        let record = try JSONValue.parse(#"{"amount": 1000, "region": "east"}"#)
        s.components[1].comparison = ShadowReport(
            model: "credit", shadow: .init(version: 3), comparedVersion: 3, window: 1000, windowLimit: 10_000, comparedTotal: 1000, dropped: 0, queued: 0,
            agreement: 0.97, disagreements: 30, shadowErrors: 0, meanAbsDelta: 0.012, maxAbsDelta: 0.21,
            versions: [.init(version: 1, role: "live", rows: 1000, p50Microseconds: 4, p99Microseconds: 9), .init(version: 3, role: "shadow", rows: 1000, p50Microseconds: 5, p99Microseconds: 11)],
            largest: [.init(requestID: "req-42", row: 1, liveVersion: 1, liveLabel: "0", shadowLabel: "1", liveProbability: 0.48, shadowProbability: 0.69, absDelta: 0.21, shadowError: nil, record: record)])
        var state = ConsoleState()
        state.view = .rollout
        let lines = drawConsole(s, state, width: 110, height: 30, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("credit@production: v1 90% · v2 10%, shadow v3  (2 replicas)") }, "\(lines)")
        #expect(lines.contains { $0.contains("v1       90%     162      0        0.20 ms   1.90 ms   1800      0") }, "requests/s summed, p99 the worst replica's: \(lines)")
        #expect(lines.contains { $0.contains("shadow v3: agreement 97.00%  mean |Δp| 0.0120  max |Δp| 0.2100  over 1000 rows") })
        #expect(lines.contains { $0.contains("req-42  #1  v1 0 0.480  →  1 0.690  0.2100") })

        var c = Controller()
        _ = c.handle(.character("7"), s)
        #expect(c.state.view == .rollout)
        _ = c.handle(.down, s)  // v2
        _ = c.handle(.character(">"), s)
        #expect(c.state.confirm?.question == "Route credit@production: v1 90% · v2 10%, shadow v3 → v1 80% · v2 20%, shadow v3? Every serve replica following it splits so within a second.")
        let wider = try AliasRoute(words: ["1=80", "2=20"], key: nil, shadow: .init(version: 3))
        #expect(c.handle(.character("y"), s) == .registry(.route(model: "credit", alias: "production", route: wider), label: "route credit@production 1=80 2=20"))
        _ = c.handle(.character("A"), s)
        #expect(c.state.confirm?.question.contains("→ v1 100% · v2 0%, shadow v3?") == true)
        _ = c.handle(.character("n"), s)
        _ = c.handle(.character("P"), s)
        #expect(c.state.confirm?.question.contains("→ v2 100% (no split)?") == true)
        _ = c.handle(.character("n"), s)
        _ = c.handle(.down, s)  // the disagreement
        #expect(c.handle(.enter, s) == .redraw)
        #expect(c.state.view == .predict && c.state.pendingRecord == record.jsonText)
        #expect(s.components[c.state.selected].id == "serve-a")
        // The command line does the same, and a read key may not.
        c.state.scope = "read"
        _ = c.command("route credit production 1=50 2=50", s)
        #expect(c.state.status == "route: not allowed — your key has scope read; route needs admin")
    }

    /// The Drift view draws each field's PSI as a bar, worst first, with the verdict; a version
    /// without a baseline says how to make one; the overview names a shifted field.
    @Test func driftShowsEachFieldsPSIAndTheOverviewFlagsAShift() {
        var s = fleet()
        s.components[1].status = status(#"{"kind":"serve","model":{"reference":"credit@1"},"following":"production","state":"serving","drift":[{"version":1,"window_s":300,"rows":2001,"baseline_rows":5000,"fields":[{"name":"age","psi":0.009},{"name":"income","psi":2.86},{"name":"rate","psi":0.12}],"prediction_psi":0.28,"problem":null},{"version":2,"problem":"credit@2 has no drift baseline; make one with 'switchyard models baseline credit@2 --data FILE.csv'"}]}"#)
        var state = ConsoleState()
        state.view = .drift
        let lines = drawConsole(s, state, width: 100, height: 30, unicode: true).text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("serve serve-a credit@1: 2001 rows in the last 5m0s against a baseline of 5000") }, "\(lines)")
        let income = lines.firstIndex { $0.hasPrefix("  income ") }, rate = lines.firstIndex { $0.hasPrefix("  rate ") }, age = lines.firstIndex { $0.hasPrefix("  age ") }
        #expect(income != nil && rate != nil && age != nil && income! < rate! && rate! < age!, "worst first: \(lines)")
        #expect(lines[income!].contains("2.860  SHIFTED") && lines[rate!].contains("0.120  look") && lines[age!].contains("0.009"), "\(lines)")
        #expect(lines.contains { $0.contains("credit@2 has no drift baseline; make one with 'switchyard models baseline") }
                && lines.contains { $0.hasPrefix(" credit@2 --data FILE.csv'") }, "wrapped, not cut: \(lines)")
        #expect(healthProblems(s, now: Date()).contains("serve-a v1 DRIFT income PSI 2.86"))
    }

    @Test func batchKeysRerunAndCancelTheSelectedRun() {
        var c = Controller()
        let s = detailedFleet()
        _ = c.handle(.character("2"), s)
        _ = c.handle(.down, s)
        #expect(c.handle(.character("R"), s) == .perform(.rerun(7), componentURL: "http://127.0.0.1:9001", label: "rerun run 7 of batch-a"))
        // A running run is offered for cancelling (a finished one is not: SelectionTests).
        var running = s
        running.components[0].runs.insert(run(#"{"id":9,"status":"running","trigger":"manual"}"#), at: 0)
        _ = c.handle(.up, running)
        _ = c.handle(.up, running)
        _ = c.handle(.character("c"), running)
        #expect(c.state.confirm?.question.hasPrefix("Cancel run 9 of batch-a?") == true)
    }

    @Test func aKeysScopeDisablesWhatItMayNotDoAndSaysWhy() {
        var c = Controller()
        c.state.scope = "operate"
        let s = detailedFleet()
        #expect(c.handle(.character("t"), s) != .redraw, "operate may trigger runs")
        _ = c.handle(.character("4"), s)
        _ = c.handle(.character("P"), s)
        #expect(c.state.confirm == nil)
        #expect(c.state.status == "promote: not allowed — your key has scope operate; promote needs admin")
        var screen = ConsoleState()
        screen.scope = "operate"
        #expect(drawConsole(s, screen, width: 120, height: 24, unicode: true).text.contains("key: operate (s, b, P need admin)"))
    }
}

/// A component answering the control API from `routes` (path → JSON body for the request), its
/// status from `status`, an empty time series and event list otherwise; on a free loopback port.
private final class FakeComponent: Sendable {
    let server: HTTPServer
    let url: String

    init(status: String, routes: [String: @Sendable (HTTPRequest) -> String] = [:]) throws {
        server = HTTPServer(configuration: .init(port: 0, threads: 1)) { request, _ in
            let path = String(request.path)
            let body = routes[path].map { $0(request) } ?? (path == "/v1/status" ? status : path == "/v1/timeseries" ? #"{"fields": [], "samples": []}"# : #"{"events": []}"#)
            return HTTPResponse(status: 200, contentType: "application/json", body: body)
        }
        url = "http://127.0.0.1:\(try server.start())"
    }

    func stop() { server.stop() }
}

@Suite struct CollectorTests {
    /// After the first poll only the samples since the last one are asked for and appended, once each.
    @Test func theSeriesIsReadOnceAndAppended() throws {
        let asked = Mutex<[String]>([])
        let round = Atomic<Int>(0)
        let fake = try FakeComponent(status: #"{"kind": "serve", "id": "serve-x", "state": "serving"}"#, routes: ["/v1/timeseries": { request in
            asked.withLock { $0.append(request.query["window"] ?? "") }
            // The first answer has seconds 1-3; the second overlaps it and adds 4 and 5.
            let times = round.add(1, ordering: .relaxed).oldValue == 0 ? [1, 2, 3] : [2, 3, 4, 5]
            return #"{"fields": ["requests"], "samples": ["# + times.map { #"{"t": \#($0), "requests": \#($0 * 10)}"# }.joined(separator: ",") + "]}"
        }])
        defer { fake.stop() }
        let collector = Collector(endpoints: [fake.url], registry: nil, key: nil)
        collector.collect()
        collector.collect()
        #expect(collector.snapshot.components.first?.series["requests"] == [10, 20, 30, 40, 50])
        let windows = asked.withLock { $0 }
        #expect(windows.first == "120" && windows.count == 2 && (Int(windows[1]) ?? 120) < 120, "\(windows)")
    }

    /// A stream's latest dead letters are read when its count moves, not every poll.
    @Test func deadLettersAreReadWhenTheirCountMoves() throws {
        let asked = Atomic<Int>(0)
        let count = Atomic<Int>(1)
        let fake = try FakeComponent(status: "", routes: [
            "/v1/status": { _ in #"{"kind": "stream", "id": "stream-x", "state": "running", "counters": {"dead_letters": \#(count.load(ordering: .relaxed))}}"# },
            "/v1/dead-letters": { _ in
                asked.add(1, ordering: .relaxed)
                return #"{"dead_letters": [{"id": "4", "source": "a.jsonl:4", "reason": "field \"amount\": expected a number", "event": "{\"id\": 4}", "at": 1795564800}], "total": 1, "kept": "dir:/scored"}"#
            },
        ])
        defer { fake.stop() }
        let collector = Collector(endpoints: [fake.url], registry: nil, key: "k")
        collector.collect()
        collector.collect()
        let view = try #require(collector.snapshot.components.first)
        #expect(view.deadLetters.map(\.source) == ["a.jsonl:4"] && view.deadLettersKept == "dir:/scored")
        #expect(asked.load(ordering: .relaxed) == 1, "the same count: not asked again")
        count.store(2, ordering: .relaxed)
        collector.collect()
        #expect(asked.load(ordering: .relaxed) == 2)
    }

    /// Views are registered in one list: each view's number, title, keys and what it needs collected
    /// come from there, and the collector reads only what some view needs.
    @Test func viewsAreRegisteredInOneList() throws {
        #expect(consoleViews.map(\.view) == ConsoleView.allCases)
        #expect(consoleViews.map(\.title) == ["Overview", "Serve", "Batch", "Stream", "Models", "Predict", "Events", "Rollout", "Drift"])
        #expect(collectedByViews == [.runs, .deadLetters, .comparison])
        var state = ConsoleState()
        state.view = .models
        let text = drawConsole(fleet(), state, width: 100, height: 30, unicode: true).text
        #expect(text.contains("[4 Models]") && text.contains(screen(.models).footerKeys))
        // A collector for views that need no runs does not ask for them.
        let asked = Atomic<Int>(0)
        let fake = try FakeComponent(status: #"{"kind": "batch", "id": "batch-x", "state": "idle"}"#, routes: ["/v1/runs": { _ in
            asked.add(1, ordering: .relaxed)
            return #"{"runs": []}"#
        }])
        defer { fake.stop() }
        Collector(endpoints: [fake.url], registry: nil, key: nil, collects: []).collect()
        #expect(asked.load(ordering: .relaxed) == 0)
        Collector(endpoints: [fake.url], registry: nil, key: nil).collect()
        #expect(asked.load(ordering: .relaxed) == 1)
    }

    /// `l` follows a component's log: its tail first, then what came after; a lower `next` means
    /// a new process at that address, said in the log.
    @Test func aLogIsFollowedAndARestartIsSaid() throws {
        let asked = Mutex<[String]>([])
        let newest = Atomic<Int>(3)
        let fake = try FakeComponent(status: #"{"kind": "serve", "id": "serve-x", "state": "serving"}"#, routes: ["/v1/logs": { request in
            let query = request.query["after"].map { "after=\($0)" } ?? "tail=\(request.query["tail"] ?? "")"
            asked.withLock { $0.append(query) }
            let n = newest.load(ordering: .relaxed)
            let from = (Int(request.query["after"] ?? "") ?? 0) + 1
            let lines = from <= n ? (from...n).map { #"{"seq": \#($0), "at": 1795564800, "text": "line \#($0)"}"# } : []
            return #"{"lines": [\#(lines.joined(separator: ","))], "next": \#(n)}"#
        }])
        defer { fake.stop() }
        let url = fake.url
        let collector = Collector(endpoints: [url], registry: nil, key: "k")
        collector.collect()
        var c = Controller()
        #expect(c.handle(.character("l"), collector.snapshot) == .watchLog(url: url))
        collector.watchLog(url)
        collector.collect()
        #expect(collector.snapshot.log?.lines.map(\.text) == ["line 1", "line 2", "line 3"])
        newest.store(5, ordering: .relaxed)
        collector.collect()
        #expect(collector.snapshot.log?.lines.map(\.text) == ["line 1", "line 2", "line 3", "line 4", "line 5"])
        newest.store(2, ordering: .relaxed)  // another process now: its lines start at 1
        collector.collect()
        #expect(collector.snapshot.log?.lines.suffix(3).map(\.text) == ["— the component restarted: its log starts again —", "line 1", "line 2"])
        #expect(asked.withLock { $0 } == ["tail=500", "after=3", "after=5", "tail=500"])
        // Drawn: the end while following; scrolled back, where it is; Esc closes and stops following.
        let text = drawConsole(collector.snapshot, c.state, width: 80, height: 24, unicode: true).text
        #expect(text.contains("log of serve serve-x") && text.contains("line 2") && text.contains("following"))
        _ = c.handle(.home, collector.snapshot)
        #expect(drawConsole(collector.snapshot, c.state, width: 80, height: 24, unicode: true).text.contains("lines 1-"))
        #expect(c.handle(.escape, collector.snapshot) == .watchLog(url: nil) && c.state.logOf == nil)
    }

    /// A component that answers 401 is up but refuses the key: no death event, no DOWN.
    @Test func aRefusedKeyIsNotADeath() throws {
        let server = HTTPServer(configuration: .init(port: 0, threads: 1)) { _, _ in
            HTTPResponse(status: 401, contentType: "application/json", body: #"{"error": "unknown or revoked API key"}"#)
        }
        let port = try server.start()
        defer { server.stop() }
        let collector = Collector(endpoints: ["http://127.0.0.1:\(port)"], registry: nil, key: "sy_wrong")
        collector.collect()
        collector.collect()
        let view = try #require(collector.snapshot.components.first)
        #expect(!view.isDown && view.refused == "401 unauthorized: unknown or revoked API key")
        #expect(!collector.snapshot.events.contains { $0.message.contains("stopped answering") })
    }

    /// A component that stops answering used to vanish once the fleet directory forgot it
    /// (~15 s); now it stays DOWN with when it was last seen, its death is an event, and it goes
    /// only when the operator acknowledges it.
    @Test func aDeadComponentStaysDownUntilAcknowledged() throws {
        let server = try FakeComponent(status: #"{"kind": "serve", "id": "serve-x", "model": {"reference": "credit@1"}, "state": "serving"}"#)
        let url = server.url
        let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-collector-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: home.url) }
        let fleet = try FleetDirectory(home: home)
        try fleet.heartbeat(.init(id: "serve-x", kind: "serve", url: url, pid: 1, host: "h", model: "credit@1", startedAt: "",
                                  heartbeat: Date().timeIntervalSince1970))
        let local = try EmbeddedRegistry(home: home, actor: "test")
        defer { local.stop() }
        let collector = Collector(endpoints: [], registry: try RegistryAPI(url: local.url, key: local.sessionKey), key: nil)
        collector.collect()
        #expect(collector.snapshot.components.map(\.isDown) == [false])

        server.stop()
        try fleet.remove(id: "serve-x")  // what the directory does once the heartbeat is stale
        collector.collect()
        #expect(collector.snapshot.components.map(\.isDown) == [true], "still on screen, DOWN")
        #expect(collector.snapshot.components.first?.lastSeen != nil)
        #expect(collector.snapshot.events.contains { $0.kind == "error" && $0.message.hasPrefix("serve serve-x stopped answering at \(url)") })
        collector.collect()
        #expect(collector.snapshot.components.count == 1, "and it stays")

        var controller = Controller()
        #expect(controller.handle(.character("x"), collector.snapshot) == .acknowledge(url: url))
        collector.acknowledge(url)
        collector.collect()
        #expect(collector.snapshot.components.isEmpty)
    }
}

/// Actions hit what the operator selected, not what happens to be at that position now.
@Suite struct SelectionTests {
    @Test func aNewRunDoesNotMoveTheSelectionToAnotherRun() {
        var c = Controller()
        var s = detailedFleet()
        _ = c.handle(.character("2"), s)
        _ = c.handle(.down, s)  // run 7 (runs are newest first: 8, 7)
        #expect(c.state.rowKey == "run:7")
        // A scheduled run 9 arrives at the top; R still means run 7.
        s.components[0].runs.insert(run(#"{"id":9,"status":"queued","trigger":"schedule"}"#), at: 0)
        c.follow(s)
        #expect(c.state.row == 2)
        #expect(c.handle(.character("R"), s) == .perform(.rerun(7), componentURL: "http://127.0.0.1:9001", label: "rerun run 7 of batch-a"))
    }

    /// PgUp/PgDn move a page, Home/End to the ends; the Events selection stays on its event when
    /// newer ones arrive; Enter opens the selected event or run whole, wrapped, and Esc closes it.
    @Test func pagesEndsAndTheWholeRecord() {
        var c = Controller()
        var s = detailedFleet()
        let long = "model swap failed: " + (1...40).map { "word\($0)" }.joined(separator: " ") + " THE-END"
        s.events = (0..<30).map { EventItem(at: String(format: "2026-11-25T01:%02d:00.000Z", $0), source: "serve serve-a", kind: "model", message: $0 == 20 ? long : "event \($0)") }
        c.state.pageRows = 5
        _ = c.handle(.character("6"), s)
        _ = c.handle(.pageDown, s)
        #expect(c.state.row == 5)
        _ = c.handle(.end, s)
        #expect(c.state.row == 29)
        _ = c.handle(.home, s)
        #expect(c.state.row == 0)
        for _ in 0..<9 { _ = c.handle(.down, s) }  // newest first: row 9 is event 20
        s.events.append(EventItem(at: "2026-11-25T02:00:00.000Z", source: "batch batch-a", kind: "run", message: "run 9 started"))
        c.follow(s)
        #expect(c.state.row == 10, "a newer event above keeps the selection on the same event")
        _ = c.handle(.enter, s)
        #expect(c.state.detail?.title == "event")
        let text = drawConsole(s, c.state, width: 80, height: 24, unicode: true).text
        #expect(text.contains("THE-END") && text.contains("word40"), "the whole message, wrapped")
        _ = c.handle(.escape, s)
        #expect(c.state.detail == nil && c.state.view == .events, "Esc closes the record, not the view")
        // A run: its error and inputs whole.
        _ = c.handle(.character("2"), s)
        _ = c.handle(.home, s)
        _ = c.handle(.enter, s)
        #expect(c.state.detail?.title == "run 8")
        let run = drawConsole(s, c.state, width: 80, height: 24, unicode: true).text
        #expect(run.contains("the header lacks the required field \"amount\""))
        #expect(run.contains("bad.csv  2048 bytes"))
        _ = c.handle(.escape, s)
        // On the overview, Enter opens the selected component's view.
        _ = c.handle(.escape, s)
        _ = c.handle(.home, s)
        _ = c.handle(.down, s)
        _ = c.handle(.enter, s)
        #expect(c.state.view == .serve)
    }

    @Test func aFinishedRunIsNotOfferedForCancelling() {
        var c = Controller()
        let s = detailedFleet()
        _ = c.handle(.character("2"), s)
        #expect(c.handle(.character("c"), s) == .redraw)
        #expect(c.state.confirm == nil)
        #expect(c.state.status == "cancel: run 8 has already finished (failed); R reruns it")
    }

    @Test func aSecondRollbackSaysItRePromotes() {
        var c = Controller()
        c.describe = { ["credit@1": "auc 0.7900", "credit@2": "auc 0.8100"][$0] }
        var s = detailedFleet()
        // production was rolled back from v2 to v1: b again would put v2 back.
        s.audit.insert(.init(id: 5, at: "2026-11-25T00:40:00Z", who: "cli:ops", action: "rollback", model: "credit", alias: "production",
                             fromVersion: 2, toVersion: 1, detail: nil), at: 0)
        s.aliases = [("credit", "production", 1)]
        _ = c.handle(.character("4"), s)
        _ = c.handle(.character("b"), s)
        #expect(c.state.confirm?.question == "Re-promote credit@production: v1 (auc 0.7900) → v2 (auc 0.8100), undoing the rollback? Components following it swap.")
    }
}

@Suite struct ReplayTests {
    /// Issue 18 item 5: `/` in Predict finds a request in the serve's prediction log, replays it on
    /// the version that answered and on the current production version, and says whether the
    /// replay matches what was logged; the record fills the form.
    @Test func aLoggedRequestIsReplayedOnItsVersionAndOnProduction() throws {
        let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-replay-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: home.url) }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/sklearn-credit-model.json")
        var document = try ModelDocument.decode(try Data(contentsOf: url))
        document.metadata.name = "credit"
        let registry = try ModelRegistry(home: home)
        try registry.register(document, who: "test")
        document.estimator.intercepts[0] += 1.5
        try registry.register(document, who: "test")
        try registry.promote(model: "credit", version: 1, alias: "production", who: "test")
        let keys = try KeyStore(home: home)
        let operate = try keys.create(scope: .operate, name: "support", who: "test").1
        let authenticator = Authenticator(store: keys, loops: 1)
        let events = EventLog()
        let log = try PredictionLog(.init(folder: home.url.appendingPathComponent("predictions"), prefix: "serve", policy: .all, key: "customer"), loops: 1)
        defer { log.stop() }
        let serve = try ServeComponent(registry: registry, reference: "credit@1", loops: 1, open: true, events: events, authenticator: authenticator, predictionLog: log)
        let host = ComponentHost(component: serve, observer: nil, configuration: .init(port: 0, threads: 1), authenticator: authenticator, events: events, fleet: nil)
        let port = try host.start()
        defer { host.stop() }
        let record = #"{"customer":"C-77","amount":12042.41,"term":36,"rate":18.19,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#
        let answered = try HTTPClient(port: port).request("POST", "/score", headers: [("Content-Type", "application/json"), ("x-request-id", "case-9")],
                                                          body: Array(#"{"data": [\#(record)]}"#.utf8))
        #expect(answered.status == 200)
        let folder = home.url.appendingPathComponent("predictions")
        for _ in 0..<2000 where PredictionLog.find(in: folder, requestID: "case-9").isEmpty { usleep(10_000) }
        try registry.promote(model: "credit", version: 2, alias: "production", who: "test")  // production moved since

        let local = try EmbeddedRegistry(home: home, actor: "test")
        defer { local.stop() }
        let api = try RegistryAPI(url: local.url, key: local.sessionKey)
        var form = PredictForm(componentURL: "http://127.0.0.1:\(port)", model: "credit@1", document: document)
        let result = replay(query: "case-9", form: form, key: operate, registry: api)
        #expect(result.error == nil, "\(result.error ?? "")")
        #expect(result.matches && result.verdict.hasPrefix("the replay on credit@1 matches what was logged"), "\(result.verdict)")
        #expect(result.logged?.model == "credit@1" && result.replayed?.model == "credit@1" && result.production?.model == "credit@2")
        #expect(result.production?.probability != result.replayed?.probability)
        #expect(result.replayed?.contributions.isEmpty == false)
        let byKey = replay(query: "C-77", form: form, key: operate, registry: api)
        #expect(byKey.requestID == "case-9" && byKey.matches, "a key value finds it too")
        #expect(replay(query: "nobody", form: form, key: operate, registry: api).error?.contains("no logged prediction for nobody") == true)

        form.fields[0].value = "1"
        form.receive(replay: result)
        #expect(form.fields.first { $0.name == "amount" }?.value == "12042.41", "the logged record fills the form")
        var state = ConsoleState()
        state.view = .predict
        state.predict = form
        let text = drawConsole(fleet(), state, width: 140, height: 40, unicode: true).text
        #expect(text.contains("request case-9 at"))
        #expect(text.contains("the replay on credit@1 matches what was logged"))
        #expect(text.contains("on production credit@2"))
    }

    /// A regression model in the Predict view (issue 20 item 1): the service's value and the
    /// embedded scorer's agree, the explanation is of the value, and a logged value replays.
    @Test func aRegressionsValueIsComparedExplainedAndReplayed() throws {
        let home = Home(FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-replay-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: home.url) }
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures")
        let document = try ModelImport.convert(
            try Data(contentsOf: fixtures.appendingPathComponent("lightgbm-rate-huber.txt")), format: .lightgbmText, file: "m.txt",
            schema: try ImportSchema.decode(try Data(contentsOf: fixtures.appendingPathComponent("lightgbm-rate-huber-schema.json"))),
            name: "pricing", created: "2026-11-30T00:00:00Z")
        let registry = try ModelRegistry(home: home)
        try registry.register(document, who: "test")
        let keys = try KeyStore(home: home)
        let operate = try keys.create(scope: .operate, name: "support", who: "test").1
        let authenticator = Authenticator(store: keys, loops: 1)
        let events = EventLog()
        let log = try PredictionLog(.init(folder: home.url.appendingPathComponent("predictions"), prefix: "serve", policy: .all, key: nil), loops: 1)
        defer { log.stop() }
        let serve = try ServeComponent(registry: registry, reference: "pricing@1", loops: 1, open: true, events: events, authenticator: authenticator, predictionLog: log)
        let host = ComponentHost(component: serve, observer: nil, configuration: .init(port: 0, threads: 1), authenticator: authenticator, events: events, fleet: nil)
        let port = try host.start()
        defer { host.stop() }
        let local = try EmbeddedRegistry(home: home, actor: "test")
        defer { local.stop() }
        let api = try RegistryAPI(url: local.url, key: local.sessionKey)
        let form = PredictForm(componentURL: "http://127.0.0.1:\(port)", model: "pricing@1", document: document)
        let record = try JSONValue.parse(#"{"amount":12042.41,"term":36,"income":14703.84,"age":55,"tenure":19.3,"utilization":1.0,"inquiries":2,"delinquencies":0,"open_accounts":8,"debt_ratio":0.531,"credit_score":724,"region":"east","product":"student","channel":"branch"}"#)
        let value = try #require(try Scorer(document).predict(json: record).value)

        let result = predictBoth(record: record, form: form, key: nil, registry: api)
        #expect(result.error == nil && result.agrees, "\(result.verdict)")
        #expect(result.regression && result.service.map(\.1) == [value] && result.embedded.map(\.1) == [value])
        #expect(result.marginName == "rate" && !result.contributions.isEmpty)
        var state = ConsoleState()
        state.view = .predict
        var shown = form
        shown.result = result
        state.predict = shown
        let text = drawConsole(fleet(), state, width: 140, height: 40, unicode: true).text
        #expect(text.contains("value = ") && !text.contains("p(value)"), "\(text)")
        #expect(text.contains("why — rate: base"))

        let answered = try HTTPClient(port: port).request("POST", "/score", headers: [("Content-Type", "application/json"), ("x-request-id", "quote-3")],
                                                          body: Array(#"{"data": [\#(record.jsonText)]}"#.utf8))
        #expect(answered.status == 200)
        let folder = home.url.appendingPathComponent("predictions")
        for _ in 0..<2000 where PredictionLog.find(in: folder, requestID: "quote-3").isEmpty { usleep(10_000) }
        let replayed = replay(query: "quote-3", form: form, key: operate, registry: api)
        #expect(replayed.error == nil && replayed.matches, "\(replayed.error ?? replayed.verdict)")
        #expect(replayed.logged?.label == JSONWriter.numberText(value) && replayed.replayed?.probability.isNaN == true)
    }
}
