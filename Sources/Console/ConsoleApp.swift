import CSystem
import Foundation
import Registry
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

    package init(collector: Collector, theme: Theme, readOnly: Bool, interval: Double, describe: @escaping @Sendable (String) -> String?) {
        self.collector = collector
        self.theme = theme
        controller = Controller()
        controller.state.readOnly = readOnly
        controller.state.interval = interval
        controller.describe = describe
        collector.interval = interval
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
                case .perform(let method, let path, let body, let url, let label):
                    if let component = snapshot.components.first(where: { $0.url == url }) {
                        collector.perform(method, path, body: body, on: component, label: label) { [outcomes] result in
                            switch result {
                            case .success: outcomes.post("\(label): done", .ok)
                            case .failure(let error): outcomes.post("\(label): \(error.description)", .error)
                            }
                        }
                    }
                    dirty = true
                }
                collector.interval = controller.state.interval
            }
            for (text, role) in outcomes.take() {
                controller.state.status = text
                controller.state.statusRole = role
                dirty = true
            }
            let version = collector.version
            let second = Int(Date().timeIntervalSince1970)
            if version != drawnVersion || dirty || second != lastClock {
                controller.state.now = Date()
                let (width, height) = terminal.size
                terminal.draw(drawConsole(collector.snapshot, controller.state, width: width, height: height, unicode: terminal.unicode))
                drawnVersion = version
                dirty = false
                lastClock = second
            }
        }
    }
}

/// Status lines handed from action threads to the UI thread.
private final class Outbox: Sendable {
    private let items = Mutex<[(String, Role)]>([])
    func post(_ text: String, _ role: Role) { items.withLock { $0.append((text, role)) } }
    func take() -> [(String, Role)] { items.withLock { o in defer { o.removeAll() }; return o } }
}
