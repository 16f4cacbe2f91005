import Components
import Console
import ControlProtocol
import Foundation
import Registry
import Scoring
import Synchronization
import Telemetry

let consoleCommand = Command(
    words: ["console"],
    summary: "The operations console: watch serve, batch and stream components live, and act on them",
    options: [
        Option(name: "endpoint", value: "URL", help: "a component's control API (repeatable); the fleet directory adds the local ones", repeatable: true),
        Option(name: "key", value: "KEY", help: "API key for status (read) and actions (operate, admin)", defaultValue: "$SWITCHYARD_KEY"),
        Option(name: "theme", value: "NAME", help: "themes/NAME.theme: default, light, high-contrast, mono", defaultValue: "default"),
        Option(name: "read-only", help: "watch only: actions are refused with the reason"),
        Option(name: "refresh", value: "SECONDS", help: "poll interval (+ and - change it live)", defaultValue: "1"),
        Option(name: "registry", value: "URL", help: "the registry service: the fleet, models, audit and aliases come from it", defaultValue: "$SWITCHYARD_REGISTRY, else this machine's SWITCHYARD_HOME"),
    ],
    details: """
        Components are found in the registry's fleet directory (SWITCHYARD_HOME's, or the
        registry service's with --registry: every serve, batch and stream that uses it, on any
        machine) and from --endpoint. With --registry the console needs no local file: versions,
        the audit log, promote and rollback (compare-and-set on what the dialog showed), the
        key's scope and the Predict view's model all come over HTTP. A component that stops answering shows as DOWN with when it was last
        seen, and comes back by itself. Polling runs off the UI thread with 1 s timeouts.

        Keys: q quit, ? help, 0 overview, 1 serve, 2 batch, 3 stream, 4 models, 5 predict,
        6 events, ↑↓ select, t trigger a batch run, p pause/resume a stream, s swap the selected
        model, b roll back its alias, R/c rerun/cancel a run (Batch), P promote a version
        (Models), : commands (run, rerun ID, cancel ID, pause, resume, swap VERSION, alias NAME,
        promote MODEL@VER [ALIAS], rollback MODEL [ALIAS]), / filter tables, r refresh,
        + and - poll faster or slower. Destructive actions ask first.

        NO_COLOR or --theme mono: no colors. Needs an 80×24 terminal at least.
        """,
    run: { args in
        let key = args.string("key").flatMap { $0 == "$SWITCHYARD_KEY" ? nil : $0 } ?? ProcessInfo.processInfo.environment["SWITCHYARD_KEY"]
        let refresh = try args.double("refresh") ?? 1
        guard refresh >= 0.25 && refresh <= 60 else { throw UsageError("--refresh must be between 0.25 and 60 seconds") }
        guard isatty(1) == 1 else { throw CommandError("the console needs a terminal; run it in one (or inside tmux)") }
        let stop = StopFlag()
        onTermination { stop.stop() }
        let registry = args.string("registry").flatMap { $0.hasPrefix("$SWITCHYARD_REGISTRY") ? nil : $0 }
            ?? ProcessInfo.processInfo.environment["SWITCHYARD_REGISTRY"]
        try runConsole(home: Home.fromEnvironment(), key: key, endpoints: args.strings("endpoint"), theme: args.string("theme") ?? "default",
                       readOnly: args.flag("read-only"), refresh: refresh, stop: stop, registry: registry.flatMap { $0.isEmpty ? nil : $0 })
        return Exit.ok
    })

/// Runs the console on this terminal until the operator quits or `stop` is set.
func runConsole(
    home: Home, key: String?, endpoints: [String], theme name: String, readOnly: Bool, refresh: Double, stop: StopFlag, registry url: String? = nil,
    quitQuestion: String? = nil, collecting: ((Collector) -> Void)? = nil
) throws {
    // The console is a pure HTTP client of a registry service: the one at --registry, or this
    // machine's SWITCHYARD_HOME served to this process on a loopback port.
    let registry: RegistryAPI
    var embedded: EmbeddedRegistry?
    if let url {
        registry = try registryCall { () throws(RegistryError) in try RegistryAPI(url: url, key: key) }
    } else {
        let local = try EmbeddedRegistry(home: home, actor: "console:" + ProcessInfo.processInfo.userName)
        embedded = local
        registry = try registryCall { () throws(RegistryError) in try RegistryAPI(url: local.url, key: key ?? local.sessionKey) }
    }
    defer { embedded?.stop() }
    var identity: (id: String, scope: Scope)?
    if key != nil, let who = try? registry.whoami(), let id = who.id, let scope = who.scope { identity = (id, scope) }
    let folders = [URL(fileURLWithPath: "themes"), home.url.appendingPathComponent("themes"),
                   URL(fileURLWithPath: selfExecutable()).deletingLastPathComponent().appendingPathComponent("../../../themes").standardized]
    let theme: Theme
    do { theme = try Theme.load(name, folders: folders) } catch { throw UsageError("\(error)") }
    let collector = Collector(endpoints: endpoints, registry: registry, key: key)
    collecting?(collector)
    let app = ConsoleApp(collector: collector, registry: registry, key: key, keyIdentity: identity, theme: theme, readOnly: readOnly,
                         interval: refresh, quitQuestion: quitQuestion) { reference in
        guard let version = try? registry.resolve(reference).version else { return nil }
        return version.metrics["auc"].map { String(format: "auc %.4f", $0) }
    }
    app.run { stop.stopped }
}
