import CSystem
import ControlProtocol
import Foundation
import Scoring
import Synchronization

/// The console: a collector polling the components off the UI thread, and a
/// UI loop on the calling thread that reads keys, draws a frame when the
/// snapshot or the state changed, and flushes it (the only ncurses caller).
package final class ConsoleApp {
    private let collector: Collector
    private var controller: Controller
    private let theme: Theme
    /// Outcomes of actions, handed from their threads to the UI thread.
    private let outcomes = Outbox()
    private let registry: RegistryAPI?
    private let apiKey: String?

    /// `keyIdentity`: the key's id and scope as the registry service knows it (whoami), so
    /// actions it may not take are refused before sending.
    package init(collector: Collector, registry: RegistryAPI?, key: String?, keyIdentity: (id: String, scope: Scope)?, theme: Theme,
                 readOnly: Bool, interval: Double, quitQuestion: String? = nil, describe: @escaping @Sendable (String) -> String?) {
        self.collector = collector
        self.registry = registry
        apiKey = key
        self.theme = theme
        controller = Controller()
        controller.state.readOnly = readOnly
        // What the key may do, when this machine's key store knows it: actions it may not take show why.
        if key != nil, let known = keyIdentity {
            controller.state.scope = known.scope.rawValue
            if known.scope == .read {
                controller.state.readOnly = true
                controller.state.readOnlyReason = "key \(known.id) has scope read; actions need operate or admin"
            }
        }
        controller.state.interval = interval
        controller.state.quitQuestion = quitQuestion
        controller.describe = describe
        collector.interval = interval
    }

    /// Makes (or remakes) the Predict form for the selected serve component's model version.
    private func preparePredict() {
        let components = collector.snapshot.components
        let selected = controller.state.selected < components.count ? components[controller.state.selected] : nil
        guard let serve = selected?.kind == "serve" && selected?.isDown == false ? selected : components.first(where: { $0.kind == "serve" && !$0.isDown }),
              let model = serve.model else {
            controller.state.predict = nil
            controller.state.predictProblem = "No serve component is up: the Predict view sends records to one."
            return
        }
        if let form = controller.state.predict, form.componentURL == serve.url, form.model == model { return }
        guard let registry, let document = try? fetchDocument(registry, model) else {
            controller.state.predict = nil
            controller.state.predictProblem = "\(model) is not in the registry this console reads (SWITCHYARD_HOME or --registry); the form and the embedded comparison need it."
            return
        }
        controller.state.predict = PredictForm(componentURL: serve.url, model: model, document: document)
    }

    /// Runs until the operator quits (q, Esc, :q) or `stop` is set (SIGINT/SIGTERM).
    package func run(stop: @escaping @Sendable () -> Bool) {
        collector.start()
        let terminal = Terminal(theme: theme)
        defer {
            terminal.end()
            collector.stop()
        }
        var drawnVersion = -1
        var dirty = true
        var lastClock = 0
        while !stop() {
            if let key = terminal.key() {
                let snapshot = collector.snapshot
                switch controller.handle(key, snapshot) {
                case .quit: return
                case .none: break
                case .redraw: dirty = true
                case .refresh:
                    collector.refresh()
                    dirty = true
                case .acknowledge(let url):
                    collector.acknowledge(url)
                    dirty = true
                case .watchLog(let url):
                    collector.watchLog(url)
                    dirty = true
                case .perform(let action, let url, let label):
                    if snapshot.components.contains(where: { $0.url == url }) {
                        collector.perform(action, on: url, label: label) { [outcomes] result in
                            switch result {
                            case .success(let outcome): outcomes.post { $0.status = "\(label): done — \(outcome)"; $0.statusRole = .ok }
                            case .failure(let error): outcomes.post { $0.status = "\(label): \(error.description)"; $0.statusRole = .error }
                            }
                        }
                    }
                    dirty = true
                case .registry(let action, let label):
                    if let registry {
                        collector.change(registry, action, label: label) { [outcomes] result in
                            switch result {
                            case .success(let message): outcomes.post { $0.status = message; $0.statusRole = .ok }
                            case .failure(let error): outcomes.post { $0.status = "\(label): \(error.description)"; $0.statusRole = .error }
                            }
                        }
                    } else {
                        controller.state.status = "\(label): this console has no registry (start it with --registry URL)"
                        controller.state.statusRole = .error
                    }
                    dirty = true
                case .replay(let query):
                    if let form = controller.state.predict {
                        let (registry, apiKey, outcomes) = (registry, apiKey, outcomes)
                        DispatchQueue.global().async {
                            let result = replay(query: query, form: form, key: apiKey, registry: registry)
                            outcomes.post { state in state.predict?.receive(replay: result) }
                        }
                    }
                    dirty = true
                case .predict:
                    if let form = controller.state.predict, case .success(let record) = form.record() {
                        let (registry, apiKey, outcomes) = (registry, apiKey, outcomes)
                        DispatchQueue.global().async {
                            let result = predictBoth(record: record, form: form, key: apiKey, registry: registry)
                            let values = form.fields.map(\.value)
                            outcomes.post { state in state.predict?.receive(result, values: values) }
                        }
                    }
                    dirty = true
                }
                collector.interval = controller.state.interval
                if controller.state.view == .predict {
                    preparePredict()
                    if let record = controller.state.pendingRecord, controller.state.predict != nil {
                        controller.state.pendingRecord = nil
                        switch controller.state.predict!.paste(record) {
                        case .success(let message): (controller.state.status, controller.state.statusRole) = ("the disagreeing record: \(message); Enter sends it", .ok)
                        case .failure(let error): (controller.state.status, controller.state.statusRole) = (error.description, .error)
                        }
                    }
                }
            }
            for change in outcomes.take() {
                change(&controller.state)
                dirty = true
            }
            let version = collector.version
            let second = Int(Date().timeIntervalSince1970)
            if version != drawnVersion || dirty || second != lastClock {
                controller.state.now = Date()
                controller.follow(collector.snapshot)  // the selection stays on the same run, version, component
                let (width, height) = terminal.size
                controller.state.pageRows = tableRows(height: height)
                controller.state.screenHeight = height
                terminal.draw(drawConsole(collector.snapshot, controller.state, width: width, height: height, unicode: terminal.unicode))
                drawnVersion = version
                dirty = false
                lastClock = second
            }
        }
    }
}

/// State changes handed from action threads to the UI thread, which applies them.
private final class Outbox: Sendable {
    private let items = Mutex<[@Sendable (inout ConsoleState) -> Void]>([])
    func post(_ change: @escaping @Sendable (inout ConsoleState) -> Void) { items.withLock { $0.append(change) } }
    func take() -> [@Sendable (inout ConsoleState) -> Void] { items.withLock { o in defer { o.removeAll() }; return o } }
}
