import ControlProtocol
import Foundation
import JSON
import Scoring

/// A key, as the terminal reports it.
package enum Key: Equatable, Sendable {
    case character(Character)
    case up, down, left, right, tab, enter, escape, backspace, resize
    case pageUp, pageDown, home, end
}

/// What handling a key asks of the app (htop's HandlerResult).
package enum Effect: Equatable, Sendable {
    case none, redraw, quit, refresh
    /// Send this action (already confirmed) to a component.
    case perform(ComponentAction, componentURL: String, label: String)
    /// Score the Predict form's record on its serve component and with the embedded scorer.
    case predict
    /// Find this request id (or key value) in the serve's prediction log and replay it.
    case replay(String)
    /// Change the local registry (already confirmed).
    case registry(RegistryAction, label: String)
    /// The operator has seen this DOWN component: stop showing it.
    case acknowledge(url: String)
    /// Follow this component's log (nil: stop).
    case watchLog(url: String?)
}

/// The console's key handling: a pure state machine over `ConsoleState`, so
/// tests drive it without a terminal.
package struct Controller: Sendable {
    package var state = ConsoleState()
    /// Training metrics of a registry version (`credit@3` → "auc 0.812"), for swap dialogs.
    package var describe: @Sendable (String) -> String? = { _ in nil }

    package init() {}

    /// Moves the selection indices to where the selected component and row are in `snapshot`
    /// (what arrived since may have shifted them); call it before handling a key and drawing.
    package mutating func follow(_ snapshot: FleetSnapshot) {
        if let url = state.selectedURL, let i = snapshot.components.firstIndex(where: { $0.url == url }) { state.selected = i }
        if let key = state.rowKey, let i = rowKeys(snapshot).firstIndex(of: key) { state.row = i }
    }

    /// Each row's identity in the current view's table.
    private func rowKeys(_ snapshot: FleetSnapshot) -> [String] { screen(state.view).rowKeys(snapshot, state) ?? [] }

    package mutating func handle(_ key: Key, _ snapshot: FleetSnapshot) -> Effect {
        follow(snapshot)
        let effect = handleKey(key, snapshot)
        // Remember the selection by identity for the next snapshot.
        let components = snapshot.components
        state.selectedURL = state.selected < components.count ? components[state.selected].url : nil
        let keys = rowKeys(snapshot)
        state.rowKey = state.row < keys.count ? keys[state.row] : nil
        return effect
    }

    private mutating func handleKey(_ key: Key, _ snapshot: FleetSnapshot) -> Effect {
        if state.confirm != nil { return handleConfirm(key) }
        if state.detail != nil { return handleDetail(key) }
        if state.logOf != nil { return handleLog(key) }
        if state.commandLine != nil { return handleCommandLine(key, snapshot) }
        if state.filtering { return handleFilter(key) }
        if state.showHelp {
            // Any key closes help, q and Esc included: neither quits from here.
            state.showHelp = false
            return .redraw
        }
        // The view's own keys first (Batch's R and c, Models' P and b, the overview's x and m, …).
        if let effect = screen(state.view).handle(key, snapshot, &self) { return effect }
        let count = snapshot.components.count
        switch key {
        case .character("q"):
            guard let question = state.quitQuestion else { return .quit }
            state.confirm = PendingAction(question: question, action: nil, component: nil, registry: nil, label: "quit", quit: true)
        case .escape:
            // Esc goes back, never out: a detail view returns to the overview.
            if state.view != .overview {
                state.view = .overview
                state.row = 0
            } else {
                state.status = "q quits" + (state.quitQuestion == nil ? "" : " (it asks first)")
                state.statusRole = .status
            }
        case .character("?"): state.showHelp = true
        case .character(let c) where ("0"..."8").contains(c): state.view = ConsoleView(rawValue: Int(String(c))!)!
        case .tab: state.view = ConsoleView(rawValue: (state.view.rawValue + 1) % ConsoleView.allCases.count)!
        case .up, .character("k"), .down, .character("j"), .pageUp, .pageDown, .home, .end:
            // One row, a page (what fits on the screen), or to either end: in a view's table, or
            // between the overview's components.
            let rows = tableCount(snapshot) ?? count
            let current = min(tableCount(snapshot) == nil ? state.selected : state.row, max(0, rows - 1))
            let page = max(1, state.pageRows)
            let next: Int
            switch key {
            case .up, .character("k"): next = current - 1
            case .down, .character("j"): next = current + 1
            case .pageUp: next = current - page
            case .pageDown: next = current + page
            case .home: next = 0
            default: next = rows - 1
            }
            let clamped = max(0, min(max(0, rows - 1), next))
            if tableCount(snapshot) != nil { state.row = clamped } else { state.selected = clamped }
        case .enter:
            // The selected row's whole text, wrapped: a run, an event, a version.
            guard let detail = screen(state.view).detail(snapshot, state) else { return fail("Enter opens the selected run (2), dead letter (3), version (4) or event (6)") }
            state.detail = detail
            state.detailScroll = 0
        case .character("b"):
            let components = snapshot.components
            guard state.selected < components.count, let model = components[state.selected].model else {
                return fail("rollback: select a component that runs a model")
            }
            let name = model.split(separator: "@").first.map(String.init) ?? model
            let alias = components[state.selected].status?.following ?? "production"
            return command("rollback \(name) \(alias)", snapshot)
        case .character("o") where !screen(state.view).sortOrders.isEmpty:
            // The next sort order; the selection stays on the same row.
            let key = rowKeys(snapshot).indices.contains(state.row) ? rowKeys(snapshot)[state.row] : nil
            state.sort[state.view] = ((state.sort[state.view] ?? 0) + 1) % screen(state.view).sortOrders.count
            if let key, let i = rowKeys(snapshot).firstIndex(of: key) { state.row = i }
            state.status = "sorted by \(sortOrder(state.view, state)) (o: the next order)"
            state.statusRole = .status
        case .character("l"):
            // The log of the selected component (or the one this view shows).
            let components = snapshot.components
            guard let c = screen(state.view).kind.flatMap({ focused($0, snapshot, state) }) ?? (state.selected < components.count ? components[state.selected] : nil) else {
                return fail("l: select a component to see its log")
            }
            state.logOf = c.url
            state.logTitle = "\(c.kind) \(c.id.isEmpty ? c.url : c.id)"
            state.logScroll = nil
            return .watchLog(url: c.url)
        case .character("r"):
            state.status = "refreshing"
            return .refresh
        case .character("+"): state.interval = max(0.25, state.interval / 2)
        case .character("-"): state.interval = min(60, state.interval * 2)
        case .character(":"): state.commandLine = ""
        case .character("/"):
            state.filtering = true
            state.filter = ""
        case .character("t"): return command("run", snapshot)
        case .character("p"):
            guard let stream = target("stream", snapshot) else { return fail("no stream component to pause") }
            return command(stream.status?.state == "paused" ? "resume" : "pause", snapshot)
        case .character("s"): state.commandLine = "swap "
        case .resize: return .redraw
        default: return .none
        }
        return .redraw
    }

    /// Keys of the Predict view: select and edit fields, Enter sends; nil passes the key on.
    mutating func handlePredict(_ key: Key) -> Effect? {
        guard var form = state.predict else { return nil }
        defer { state.predict = form }
        if let text = form.pasting {
            var next = text
            switch key {
            case .escape:
                form.pasting = nil
                return .redraw
            case .backspace: next = String(text.dropLast())
            case .character(let c): next = text + String(c)
            case .enter: next = text + " "  // a pasted line break
            default: return Effect.none
            }
            guard next.count <= 64 * 1024 else {
                form.pasting = nil
                state.status = "the pasted record is longer than 64 KiB"
                state.statusRole = .error
                return .redraw
            }
            if next.isEmpty || !PredictForm.isComplete(next) {
                form.pasting = next.isEmpty ? nil : next
                return .redraw
            }
            form.pasting = nil
            switch form.paste(next) {
            case .success(let message):
                state.status = message
                state.statusRole = .status
            case .failure(let error):
                state.status = error.description
                state.statusRole = .error
            }
            return .redraw
        }
        if let text = form.searching {
            switch key {
            case .enter:
                form.searching = nil
                let query = text.trimmingCharacters(in: .whitespaces)
                guard !query.isEmpty else { return .redraw }
                form.sending = true
                return .replay(query)
            case .escape: form.searching = nil
            case .backspace: if !text.isEmpty { form.searching = String(text.dropLast()) }
            case .character(let c): if text.count < 200 { form.searching = text + String(c) }
            default: return Effect.none
            }
            return .redraw
        }
        if let text = form.editing {
            switch key {
            case .enter:
                form.fields[form.selected].value = text
                form.editing = nil
                // An answer to a record that can no longer be sent is stale.
                if case .failure = form.record() { form.result = nil }
            case .escape: form.editing = nil
            case .backspace: if !text.isEmpty { form.editing = String(text.dropLast()) }
            case .character(let c): form.editing = text + String(c)
            default: return Effect.none
            }
            return .redraw
        }
        switch key {
        case .up, .character("k"): form.selected = max(0, form.selected - 1)
        case .down, .character("j"): form.selected = min(form.fields.count - 1, form.selected + 1)
        case .character("e"): form.editing = ""  // typing replaces the value; Esc keeps it
        case .character("/"): form.searching = ""
        case .character("{"): form.pasting = "{"  // a record pasted as JSON
        case .character("x"):
            form.fields[form.selected].value = ""
            if case .failure = form.record() { form.result = nil }
        case .enter:
            if case .failure(let error) = form.record() {
                state.status = error.description
                state.statusRole = .error
                return .redraw
            }
            form.sending = true
            form.result = nil
            return .predict
        default: return nil
        }
        return .redraw
    }

    private mutating func handleConfirm(_ key: Key) -> Effect {
        guard let pending = state.confirm else { return .none }
        switch key {
        case .character("y"), .character("Y"):
            state.confirm = nil
            if pending.quit { return .quit }
            state.status = "\(pending.label)…"
            state.statusRole = .status
            if let action = pending.registry { return .registry(action, label: pending.label) }
            guard let action = pending.action, let component = pending.component else { return .redraw }
            return .perform(action, componentURL: component.url, label: pending.label)
        case .character("n"), .character("N"), .escape, .character("q"):
            state.confirm = nil
            state.status = "cancelled: \(pending.label)"
            return .redraw
        default:
            return .none
        }
    }

    private mutating func handleFilter(_ key: Key) -> Effect {
        switch key {
        case .enter: state.filtering = false
        case .escape:
            state.filtering = false
            state.filter = ""
            state.row = 0
        case .backspace: if !state.filter.isEmpty { state.filter.removeLast() }
        case .character(let c):
            state.filter.append(c)
            state.row = 0
        default: return .none
        }
        return .redraw
    }

    /// Rows of the current view's table, when it has one (runs, versions, events, dead letters).
    private func tableCount(_ snapshot: FleetSnapshot) -> Int? { screen(state.view).rowKeys(snapshot, state)?.count }

    /// Keys of the log: scroll back (which stops following), End follows again, Esc closes.
    private mutating func handleLog(_ key: Key) -> Effect {
        let page = max(1, state.pageRows)
        let bottom = Int.max / 2
        switch key {
        case .escape, .character("q"), .character("l"):
            state.logOf = nil
            return .watchLog(url: nil)
        case .up, .character("k"): state.logScroll = max(0, (state.logScroll ?? bottom) - 1)
        case .pageUp: state.logScroll = max(0, (state.logScroll ?? bottom) - page)
        case .down, .character("j"): state.logScroll = state.logScroll.map { $0 + 1 }
        case .pageDown: state.logScroll = state.logScroll.map { $0 + page }
        case .home: state.logScroll = 0
        case .end: state.logScroll = nil
        default: return .none
        }
        return .redraw  // the drawing clamps the scroll and says whether it follows
    }

    /// Keys of the drill-down: scroll it, or close it.
    private mutating func handleDetail(_ key: Key) -> Effect {
        let page = max(1, state.pageRows)
        switch key {
        case .escape, .enter, .character("q"): state.detail = nil
        case .up, .character("k"): state.detailScroll = max(0, state.detailScroll - 1)
        case .down, .character("j"): state.detailScroll += 1
        case .pageUp: state.detailScroll = max(0, state.detailScroll - page)
        case .pageDown: state.detailScroll += page
        case .home: state.detailScroll = 0
        case .end: state.detailScroll = Int.max / 2
        default: return .none
        }
        return .redraw  // the drawing clamps the scroll to the text
    }

    /// The scope each action needs, as the components and the registry check it.
    static func scopeNeeded(_ verb: String) -> String? {
        switch verb {
        case "run", "rerun", "cancel", "pause", "resume": "operate"
        case "swap", "alias", "promote", "rollback", "route": "admin"
        default: nil
        }
    }

    private mutating func handleCommandLine(_ key: Key, _ snapshot: FleetSnapshot) -> Effect {
        guard var line = state.commandLine else { return .none }
        switch key {
        case .escape:
            state.commandLine = nil
            state.historyIndex = nil
        case .backspace:
            if line.isEmpty { state.commandLine = nil } else {
                line.removeLast()
                state.commandLine = line
            }
        case .enter:
            state.commandLine = nil
            state.historyIndex = nil
            let text = line.trimmingCharacters(in: .whitespaces)
            if !text.isEmpty && state.history.last != text {
                state.history.append(text)
                if state.history.count > 100 { state.history.removeFirst() }
            }
            return command(text, snapshot)
        case .up, .down:
            // History, newest first going up; past the newest is an empty line again.
            guard !state.history.isEmpty else { return .none }
            let last = state.history.count - 1
            let index = key == .up ? max(0, (state.historyIndex ?? state.history.count) - 1) : (state.historyIndex ?? last) + 1
            if index > last {
                state.historyIndex = nil
                state.commandLine = ""
            } else {
                state.historyIndex = index
                state.commandLine = state.history[index]
            }
        case .tab:
            state.commandLine = complete(line, snapshot)
        case .character(let c):
            state.commandLine = line + String(c)
        default:
            return .none
        }
        return .redraw
    }

    /// The commands `:` knows, for completion and the unknown-command message.
    static let verbs = ["run", "rerun", "cancel", "pause", "resume", "swap", "alias", "promote", "rollback", "route", "refresh", "help", "quit"]

    /// `line` with its last word completed: a verb first, then a component (kind or id), a
    /// version (`credit@3`) or a model. Several candidates complete to what they share and are
    /// listed on the status line.
    mutating func complete(_ line: String, _ snapshot: FleetSnapshot) -> String {
        var words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let current = words.popLast() ?? ""
        let candidates: [String]
        if words.isEmpty {
            candidates = Self.verbs
        } else {
            let live = snapshot.components.filter { !$0.isDown }
            let kinds = Array(Set(live.map(\.kind))).sorted()
            switch words[0] {
            case "promote": candidates = snapshot.versions.map(\.reference)
            case "rollback", "route": candidates = Array(Set(snapshot.versions.map(\.model) + snapshot.aliases.map(\.model))).sorted()
            default: candidates = kinds + live.map(\.id).filter { !$0.isEmpty }
            }
        }
        let matches = candidates.filter { $0.hasPrefix(current) }
        guard let first = matches.first else { return line }
        var shared = first
        for match in matches.dropFirst() {
            while !match.hasPrefix(shared) { shared.removeLast() }
        }
        if matches.count > 1 { state.status = matches.prefix(12).joined(separator: "  ") + (matches.count > 12 ? "  …" : "") }
        return (words + [shared]).joined(separator: " ") + (matches.count == 1 ? " " : "")
    }

    /// The component a command names: an id (or its unique beginning), a URL, or a kind — the
    /// selected component when it is of that kind, else the only live one of it. `kind` is what
    /// the command needs; nil `word` means the selection (or the only live one of `kind`).
    private func address(_ word: String?, kind: String?, verb: String, _ snapshot: FleetSnapshot) -> Result<ComponentView, ConsoleError> {
        let live = snapshot.components.filter { !$0.isDown }
        let selected = state.selected < snapshot.components.count ? snapshot.components[state.selected] : nil
        let found: ComponentView
        if let word {
            if let exact = live.first(where: { $0.id == word || $0.url == word }) {
                found = exact
            } else if ["serve", "batch", "stream"].contains(word) {
                let ofKind = live.filter { $0.kind == word }
                if let selected, selected.kind == word, !selected.isDown {
                    found = selected
                } else if ofKind.count == 1 {
                    found = ofKind[0]
                } else {
                    return .failure(ConsoleError(ofKind.isEmpty ? "\(verb): no \(word) component is up"
                                                 : "\(verb): \(ofKind.count) \(word) components are up (\(ofKind.map(\.id).joined(separator: ", "))); name one or select it"))
                }
            } else {
                let prefixed = live.filter { $0.id.hasPrefix(word) }
                guard prefixed.count == 1 else {
                    return .failure(ConsoleError(prefixed.isEmpty ? "\(verb): no component \"\(word)\" is up (Tab lists them)"
                                                 : "\(verb): \"\(word)\" could be \(prefixed.map(\.id).joined(separator: ", "))"))
                }
                found = prefixed[0]
            }
        } else if let selected, !selected.isDown, kind == nil || selected.kind == kind {
            found = selected
        } else if let kind, let only = target(kind, snapshot) {
            found = only
        } else {
            return .failure(ConsoleError(kind.map { "\(verb): no \($0) component is up" } ?? "\(verb): select a running component first, or name one"))
        }
        if let kind, found.kind != kind {
            return .failure(ConsoleError("\(verb): \(found.id) is a \(found.kind) component; \(verb) needs a \(kind) one"))
        }
        return .success(found)
    }

    /// The selected component if it is of `kind`, else the first of that kind.
    private func target(_ kind: String, _ snapshot: FleetSnapshot) -> ComponentView? {
        let components = snapshot.components
        if state.selected < components.count, components[state.selected].kind == kind { return components[state.selected] }
        return components.first { $0.kind == kind && !$0.isDown }
    }

    mutating func fail(_ message: String) -> Effect {
        state.status = message
        state.statusRole = .error
        return .redraw
    }

    /// Runs a `:` command (also what t, p and s turn into).
    package mutating func command(_ text: String, _ snapshot: FleetSnapshot) -> Effect {
        let words = text.split(separator: " ").map(String.init)
        guard let verb = words.first else { return .redraw }
        switch verb {
        case "q", "quit": return .quit
        case "refresh": return .refresh
        case "help":
            state.showHelp = true
            return .redraw
        default: break
        }
        guard !state.readOnly else { return fail("\(verb): not allowed — \(state.readOnlyReason)") }
        let ranks = ["read": 0, "operate": 1, "admin": 2]
        if let need = Self.scopeNeeded(verb), let scope = state.scope, (ranks[scope] ?? 0) < (ranks[need] ?? 0) {
            return fail("\(verb): not allowed — your key has scope \(scope); \(verb) needs \(need)")
        }
        switch verb {
        case "run":
            guard words.count <= 2 else { return fail("run takes at most a component, e.g. :run batch-eu") }
            switch address(words.dropFirst().first, kind: "batch", verb: verb, snapshot) {
            case .failure(let error): return fail(error.description)
            case .success(let batch): return ask(nil, .trigger, batch, "trigger a run of \(batch.id)")
            }
        case "rerun", "cancel":
            guard (2...3).contains(words.count), let id = Int(words[1]) else { return fail("\(verb) needs a run id, e.g. :\(verb) 12 (or :\(verb) 12 batch-eu)") }
            switch address(words.dropFirst(2).first, kind: "batch", verb: verb, snapshot) {
            case .failure(let error): return fail(error.description)
            case .success(let batch):
                let question = verb == "cancel" ? "Cancel run \(id) of \(batch.id)? Outputs written so far stay." : nil
                return ask(question, verb == "cancel" ? .cancel(id) : .rerun(id), batch, "\(verb) run \(id) of \(batch.id)")
            }
        case "pause", "resume":
            guard words.count <= 2 else { return fail("\(verb) takes at most a component, e.g. :\(verb) stream-eu") }
            switch address(words.dropFirst().first, kind: "stream", verb: verb, snapshot) {
            case .failure(let error): return fail(error.description)
            case .success(let stream):
                let question = verb == "pause" ? "Pause \(stream.id)? Its backlog grows until you resume." : nil
                return ask(question, verb == "pause" ? .pause : .resume, stream, "\(verb) \(stream.id)")
            }
        case "swap", "alias":
            guard (2...3).contains(words.count) else {
                return fail(verb == "swap" ? "swap needs a version, e.g. :swap 3 or :swap serve-a 3" : "alias needs a name, e.g. :alias canary or :alias serve canary")
            }
            let component: ComponentView
            switch address(words.count == 3 ? words[1] : nil, kind: nil, verb: verb, snapshot) {
            case .failure(let error): return fail(error.description)
            case .success(let found): component = found
            }
            let target = words[words.count - 1]
            let current = component.model ?? "none"
            let name = current.split(separator: "@").first.map(String.init) ?? ""
            let next = "\(name)@\(target)"
            let request = verb == "swap" ? Int(target).flatMap { SwapRequest.versionNumber(Double($0)) }.map(SwapRequest.version) : .alias(target)
            guard let request else { return fail("swap: \"\(target)\" is not a version number") }
            let metrics = [describe(current), describe(next)].map { $0 ?? "?" }
            let question = "Swap \(component.kind) \(component.id): \(current) (\(metrics[0])) → \(next) (\(metrics[1]))?"
            return ask(question, .swap(request), component, "swap \(component.id) to \(next)")
        case "promote":
            let parts = words.count >= 2 ? words[1].split(separator: "@").map(String.init) : []
            guard parts.count == 2, let version = Int(parts[1]) else { return fail("promote needs MODEL@VERSION, e.g. :promote credit@3 production") }
            let alias = words.count >= 3 ? words[2] : "production"
            let current = snapshot.aliases.first { $0.model == parts[0] && $0.alias == alias }?.version
            guard current != version else { return fail("\(parts[0])@\(alias) already points at v\(version)") }
            let from = current.map { "v\($0) (\(describe("\(parts[0])@\($0)") ?? "?"))" } ?? "none"
            let question = "Point \(parts[0])@\(alias): \(from) → v\(version) (\(describe("\(parts[0])@\(version)") ?? "?"))? Components following it swap."
            return askRegistry(question, .promote(model: parts[0], version: version, alias: alias, expected: current.map { .version($0) } ?? .absent),
                               "promote \(parts[0])@\(version) to \(alias)")
        case "rollback":
            guard words.count >= 2 else { return fail("rollback needs a model, e.g. :rollback credit production") }
            let model = words[1], alias = words.count >= 3 ? words[2] : "production"
            guard let current = snapshot.aliases.first(where: { $0.model == model && $0.alias == alias })?.version else {
                return fail("rollback: \(model)@\(alias) is not in this machine's registry")
            }
            let last = snapshot.audit.first { $0.model == model && $0.alias == alias && $0.toVersion == current }
            guard let previous = last?.fromVersion else { return fail("rollback: \(model)@\(alias) has no earlier version to go back to") }
            let versions = "v\(current) (\(describe("\(model)@\(current)") ?? "?")) → v\(previous) (\(describe("\(model)@\(previous)") ?? "?"))"
            // A second b undoes the first: say that it puts back the version just rolled away from.
            if last?.action == "rollback" {
                return askRegistry("Re-promote \(model)@\(alias): \(versions), undoing the rollback? Components following it swap.",
                                   .rollback(model: model, alias: alias), "re-promote \(model)@\(alias) to v\(previous)")
            }
            let question = "Roll \(model)@\(alias) back: \(versions)? Components following it swap."
            return askRegistry(question, .rollback(model: model, alias: alias), "roll back \(model)@\(alias) to v\(previous)")
        case "route":
            // :route MODEL ALIAS 1=90 2=10 [sticky=FIELD] [shadow=V[@PERCENT]]
            guard words.count >= 4 else { return fail("route needs a model, an alias and weights, e.g. :route credit production 1=90 2=10 [sticky=FIELD] [shadow=3]") }
            let (model, alias) = (words[1], words[2])
            var weights: [String] = [], sticky: String?, shadow: AliasRoute.Shadow?
            for word in words.dropFirst(3) {
                if word.hasPrefix("sticky=") {
                    sticky = String(word.dropFirst("sticky=".count))
                } else if word.hasPrefix("shadow=") {
                    let parts = word.dropFirst("shadow=".count).split(separator: "@")
                    guard let version = parts.first.flatMap({ Int($0) }), version >= 1 else { return fail("route: shadow=V[@PERCENT], e.g. shadow=3 or shadow=3@10") }
                    shadow = .init(version: version, sample: parts.count > 1 ? Double(parts[1]) ?? -1 : 100)
                } else {
                    weights.append(word)
                }
            }
            let route: AliasRoute
            do { route = try AliasRoute(words: weights, key: sticky, shadow: shadow) } catch { return fail("route: \(error.message)") }
            let now = snapshot.components.first { $0.kind == "serve" && $0.service == model && $0.status?.following == alias }?.status?.route
            let from = now?.description ?? snapshot.aliases.first { $0.model == model && $0.alias == alias }.map { "v\($0.version) 100%" } ?? "none"
            let to = route.isSingle ? "v\(route.main) 100% (no split)" : route.description
            return askRegistry("Route \(model)@\(alias): \(from) → \(to)? Every serve replica following it splits so within a second.",
                               .route(model: model, alias: alias, route: route), "route \(model)@\(alias) \(route.words)")
        default:
            return fail("unknown command \":\(verb)\"; try run, rerun ID, cancel ID, pause, resume, swap VERSION, alias NAME, promote MODEL@VER, rollback MODEL, route MODEL ALIAS V=P…, refresh, quit (Tab completes)")
        }
    }

    /// Registry changes always ask first.
    private mutating func askRegistry(_ question: String, _ action: RegistryAction, _ label: String) -> Effect {
        state.confirm = PendingAction(question: question, action: nil, component: nil, registry: action, label: label)
        return .redraw
    }

    /// Destructive actions wait for a yes; the others go at once.
    private mutating func ask(_ question: String?, _ action: ComponentAction, _ component: ComponentView, _ label: String) -> Effect {
        let pending = PendingAction(question: question ?? "", action: action, component: component, label: label)
        if question != nil {
            state.confirm = pending
            return .redraw
        }
        state.status = "\(label)…"
        state.statusRole = .status
        return .perform(action, componentURL: component.url, label: label)
    }
}
