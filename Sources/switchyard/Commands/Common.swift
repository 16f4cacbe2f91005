import CSystem
import Components
import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// Options of the commands that use the registry: the service's URL and the key to use it with.
let registryOptions: [Option] = [
    Option(name: "registry", value: "URL", help: "the registry service (switchyard registry) at http://HOST:PORT, or its PostgreSQL store at postgres://USER@HOST:PORT/DB", defaultValue: "$SWITCHYARD_REGISTRY, else this machine's SWITCHYARD_HOME"),
    Option(name: "key", value: "KEY", help: "API key for the registry service (operate, for a component)", defaultValue: "$SWITCHYARD_KEY"),
]

/// Where a component's models, keys and fleet record come from: the registry service
/// (`--registry`, with its `client`), or the local SWITCHYARD_HOME.
struct RegistryAccess {
    var store: any RegistryStore
    var keyAdministration: any KeyAdministration
    var models: any ModelSource { store }
    var keys: any KeySource
    var fleet: any FleetRecorder
    var client: RegistryClient?
    /// The registry as a dependency, for status and /metrics (none when local).
    var dependencies: [DependencyHealth] { client.map { [$0.health] } ?? [] }

    /// A component's key must read the key table and heartbeat (scope operate): say so at start
    /// rather than run refusing every request. Skipped while the registry is unreachable.
    func checkComponentKey() throws {
        guard let client else { return }
        do {
            let who = try client.whoami()
            if let scope = who.scope, scope < .operate {
                throw CommandError("the key given with --key (\(who.id ?? "?")) has scope \(scope.rawValue); a component needs operate to read the registry's key table and report to its fleet")
            }
        } catch let error as RegistryError where error.status == 401 {
            throw CommandError("registry \(client.url): \(error.message); give a key with --key or SWITCHYARD_KEY (scope operate)")
        } catch is RegistryError {
            // Unreachable now: the component starts from its cache and says so.
        }
    }

    /// With the registry service, `host`'s component follows alias moves as they happen
    /// (the client watches the alias revision) rather than at its next once-a-second tick.
    func follow(_ host: ComponentHost) {
        client?.follow({ host.nudge() }, until: { host.isStopping })
    }
}

/// `--registry`, else SWITCHYARD_REGISTRY; nil for the local SWITCHYARD_HOME.
func registryURL(_ args: Arguments) -> String? {
    let text = args.string("registry").flatMap { $0.hasPrefix("$SWITCHYARD_REGISTRY") ? nil : $0 } ?? ProcessInfo.processInfo.environment["SWITCHYARD_REGISTRY"]
    return text?.isEmpty == false ? text : nil
}

/// Where a batch job's run ledger is: the registry's PostgreSQL when `--registry` names one (so
/// batch workers on other machines find its tasks), else this machine's SWITCHYARD_HOME.
func ledgerLocation(_ args: Arguments) -> StoreLocation {
    if let url = registryURL(args), StoreLocation.isPostgres(url) { return .postgres(url: url) }
    return .home(Home.fromEnvironment())
}

func registryAccess(_ args: Arguments, events: EventLog) throws -> RegistryAccess {
    let environment = ProcessInfo.processInfo.environment
    let home = Home.fromEnvironment()
    let urlText = registryURL(args)
    if let url = urlText, StoreLocation.isPostgres(url) {
        return try registryAccess(at: .postgres(url: url))
    }
    if let url = urlText, !url.isEmpty {
        let key = args.string("key").flatMap { $0 == "$SWITCHYARD_KEY" ? nil : $0 } ?? environment["SWITCHYARD_KEY"]
        let client = try registryCall { () throws(RegistryError) in try RegistryClient(url: url, key: key, home: home, events: events) }
        return RegistryAccess(store: client, keyAdministration: client, keys: client, fleet: client, client: client)
    }
    return try registryAccess(at: .home(home))
}

/// The registry's own store, used directly: this machine's SWITCHYARD_HOME, or PostgreSQL.
private func registryAccess(at location: StoreLocation) throws -> RegistryAccess {
    try registryCall { () throws(RegistryError) in
        let keys = try KeyStore(location: location)
        return RegistryAccess(store: try ModelRegistry(location: location), keyAdministration: keys, keys: keys, fleet: try FleetDirectory(location: location))
    }
}

/// The registry an operator's command works on: the service at `--registry` (or
/// SWITCHYARD_REGISTRY) with `--key` (or SWITCHYARD_KEY), else the local SWITCHYARD_HOME.
func openStore(_ args: Arguments) throws -> any RegistryStore {
    try registryAccess(args, events: EventLog()).store
}

/// Hands each event of `events` to `each` as it comes (looked at ten times a second) until the
/// returned function is called, which hands over the rest first. Stopping wakes the follower at
/// once: a command's last line is not held back by its nap.
func followEvents(_ events: EventLog, _ each: @escaping @Sendable (EventLog.Event) -> Void) -> () -> Void {
    let following = Atomic<Bool>(true)
    let wake = DispatchSemaphore(value: 0), stopped = DispatchSemaphore(value: 0)
    let seen = Mutex<Int>(0)
    let drain: @Sendable () -> Void = {
        seen.withLock { last in
            for event in events.after(last) {
                last = event.id
                each(event)
            }
        }
    }
    Thread {
        while following.load(ordering: .acquiring) {
            drain()
            _ = wake.wait(timeout: .now() + .milliseconds(100))
        }
        stopped.signal()
    }.start()
    return {
        following.store(false, ordering: .releasing)
        wake.signal()
        stopped.wait()
        drain()
    }
}

/// The registry in SWITCHYARD_HOME, with the error turned into a command error.
func openRegistry() throws -> ModelRegistry {
    do {
        return try ModelRegistry(home: Home.fromEnvironment())
    } catch {
        throw CommandError(error.message)
    }
}

/// Who the audit log names for a command-line change.
func cliActor() -> String {
    let env = ProcessInfo.processInfo.environment
    if let user = env["USER"] ?? env["LOGNAME"] { return "cli:" + user }
    if let entry = getpwuid(getuid()), let name = entry.pointee.pw_name { return "cli:" + String(cString: name) }
    return "cli:uid\(getuid())"
}

/// Reads a whole file, naming it when it cannot be read.
func readFile(_ path: String) throws -> [UInt8] {
    if path == "-" { return [UInt8](FileHandle.standardInput.readDataToEndOfFile()) }
    guard FileManager.default.fileExists(atPath: path) else { throw CommandError("no such file: \(path)") }
    guard let data = FileManager.default.contents(atPath: path) else { throw CommandError("cannot read \(path)") }
    return [UInt8](data)
}

/// Loads and compiles the version `reference` names.
func loadScorer(_ registry: any ModelSource, _ reference: String) throws -> (ModelRegistry.Version, Scorer) {
    let version = try registryCall { () throws(RegistryError) in try registry.resolve(reference) }
    let document = try registryCall { () throws(RegistryError) in try registry.document(version) }
    do {
        return (version, try Scorer(document))
    } catch {
        throw CommandError("\(version.reference): \(error)")
    }
}

/// Runs a registry call, turning its error into a command error.
func registryCall<T>(_ body: () throws(RegistryError) -> T) throws -> T {
    do { return try body() } catch { throw CommandError(error.message) }
}

/// `0.812345` → "0.8123"; metrics print with 4 decimals.
func format4(_ x: Double?) -> String {
    guard let x else { return "-" }
    return String(format: "%.4f", x)
}

/// Left-aligned text columns, two spaces apart.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
}

/// The JSON of a prediction: label and probability per class (a regression's value), and which
/// model answered.
func predictionJSON(_ p: Prediction, _ scorer: Scorer, model: String, row: Int?) -> JSONValue {
    var object = JSONObject()
    if let row { object.append("row", .number(Double(row))) }
    let outcome = p.json(scorer)
    for (key, value) in zip(outcome.keys, outcome.values) { object.append(key, value) }
    object.append("model", .string(model))
    return .object(object)
}

/// Registers `document`, says which version it became, and points `alias` at it if given.
/// Registers `document`; with `baselineData` (a CSV of the data it was made from: its name and
/// bytes) it stores the version's drift baseline too, before any alias moves to it.
func registerAndReport(_ registry: any RegistryStore, _ document: ModelDocument, promote alias: String?, baselineData: (name: String, bytes: [UInt8])? = nil) throws {
    let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: cliActor()) }
    let v = registration.version
    print(registration.existed ? "already registered as \(v.reference) (same content)" : "registered \(v.reference) (sha256 \(v.sha256.prefix(12)))")
    if let baselineData { try storeBaseline(registry, v, document, data: baselineData) }
    if let alias { try promoteAndReport(registry, model: v.model, version: v.version, alias: alias) }
}

/// Makes the drift baseline of `version` from a CSV (its first `limit` rows) and stores it.
func storeBaseline(_ registry: any RegistryStore, _ version: ModelVersion, _ document: ModelDocument, data: (name: String, bytes: [UInt8]), limit: Int = 1_000_000) throws {
    let scorer: Scorer
    do { scorer = try Scorer(document) } catch { throw CommandError("\(version.reference): \(error)") }
    let rows: [[FieldValue]]
    do { rows = try DriftBaseline.rows(csv: data.bytes, name: data.name, scorer: scorer, limit: limit) } catch { throw CommandError("\(error)", code: Exit.dataError) }
    guard !rows.isEmpty else { throw CommandError("\(data.name) has no rows to make a drift baseline from", code: Exit.dataError) }
    let baseline = DriftBaseline.make(scorer: scorer, rows: rows)
    try registryCall { () throws(RegistryError) in try registry.setBaseline(model: version.model, version: version.version, baseline: baseline, who: cliActor()) }
    print("drift baseline of \(version.reference): \(rows.count) rows of \(data.name), \(baseline.fields.count) fields")
}

/// `--baseline-data FILE`, read (`-` is standard input), with its name for messages.
func baselineData(_ args: Arguments, _ option: String = "baseline-data") throws -> (name: String, bytes: [UInt8])? {
    try args.string(option).map { (URL(fileURLWithPath: $0).lastPathComponent, try readFile($0)) }
}

/// Points `alias` at `version` and prints from → to.
func promoteAndReport(_ registry: any RegistryStore, model: String, version: Int, alias: String) throws {
    let previous = try registryCall { () throws(RegistryError) in
        try registry.promote(model: model, version: version, alias: alias, who: cliActor(), expected: nil)
    }
    if previous == version {
        print("\(model)@\(alias) already points at v\(version)")
    } else {
        print("\(model)@\(alias): \(previous.map { "v\($0)" } ?? "none") → v\(version)")
    }
}

/// Binds a component's host; a taken port or a failed bind becomes a message saying what to do.
func startListening(_ runner: ComponentHost, host: String, port: Int) throws -> Int {
    do {
        return try runner.start()
    } catch let error as IOError where error.errno == EADDRINUSE {
        throw CommandError("port \(port) on \(host) is already in use; pick another with --port (0 picks a free one)")
    } catch {
        throw CommandError("cannot listen on \(host):\(port): \(error)")
    }
}

/// Calls `handler` on each of `signals` (SIGINT and SIGTERM by default) instead of the
/// default action, for the rest of the process. The signal is caught by a C handler from the
/// moment this returns (it writes to a pipe a thread here reads), so a signal that arrives right
/// after is handled, not lost: a dispatch signal source is armed later, on its own thread, and a
/// SIGTERM sent as soon as a component said it was ready used to fall in between and be ignored.
func onTermination(signals: [Int32] = [SIGINT, SIGTERM], _ handler: @escaping @Sendable () -> Void) {
    SignalHandlers.shared.add(signals, handler)
}

private final class SignalHandlers: @unchecked Sendable {
    // Safety: `handlers` and `reading` are only touched under `lock`.
    static let shared = SignalHandlers()
    private let lock = NSLock()
    private var handlers: [Int32: [@Sendable () -> Void]] = [:]
    private var reading = false

    func add(_ signals: [Int32], _ handler: @escaping @Sendable () -> Void) {
        var fd: Int32 = -1
        let start: Bool = lock.withLock {
            for sig in signals { handlers[sig, default: []].append(handler) }
            defer { reading = true }
            return !reading
        }
        for sig in signals { fd = csystem_catch_signal(sig) }
        guard start, fd >= 0 else { return }
        let pipe = fd
        let thread = Thread { [self] in
            var byte: UInt8 = 0
            while true {
                let n = read(pipe, &byte, 1)
                if n < 0 && errno == EINTR { continue }
                guard n == 1 else { return }
                let calls = lock.withLock { handlers[Int32(byte)] ?? [] }
                for call in calls { call() }
            }
        }
        thread.name = "signals"
        thread.start()
    }
}

/// SIGINT or SIGTERM, caught from the moment this is made. A component makes it before it says
/// it is ready: a stop sent as soon as the ready line appears was lost before (the signal came
/// between the line and the handler), and the process ran on.
final class Termination: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let signals = Atomic<Int>(0)

    init() {
        onTermination { [self] in
            signals.wrappingAdd(1, ordering: .relaxed)
            done.signal()
        }
    }

    /// A second signal came: whoever is stopping cleanly should stop at once.
    var repeated: Bool { signals.load(ordering: .relaxed) > 1 }

    /// Blocks until the signal came (at once if it already did).
    func wait() { done.wait() }
}

/// A flag one thread sets and another polls.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func stop() { value.store(true, ordering: .relaxed) }
    var stopped: Bool { value.load(ordering: .relaxed) }
}

// MARK: - Children that end with their parent

/// The environment variable that tells a child which descriptor is its parent's lifeline.
let parentLifelineVariable = "SWITCHYARD_PARENT_FD"

/// A pipe whose write end only the parent holds: children inherit the read end and see
/// end-of-file when the parent dies, however it dies (SIGKILL included). Unlike
/// PR_SET_PDEATHSIG it does not fire when the thread that spawned a child ends.
final class Lifeline: Sendable {
    let readEnd: Int32
    private let writeEnd: Int32

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw CommandError("pipe: \(String(cString: strerror(errno)))") }
        // Children get the read end through posix_spawn's dup2 only; closefrom drops the rest.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        readEnd = fds[0]
        writeEnd = fds[1]
    }
}

/// Started by a parent with a lifeline (`SWITCHYARD_PARENT_FD`): a thread waits for its end of
/// file and then asks this process to stop as Ctrl-C would (SIGTERM), with a hard exit 10 s later
/// in case a clean stop hangs.
func exitWithParent() {
    guard let text = ProcessInfo.processInfo.environment[parentLifelineVariable], let fd = Int32(text), fd > 2 else { return }
    guard fcntl(fd, F_GETFD) >= 0 else { return }
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)  // not passed on to grandchildren
    let thread = Thread {
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
        }
        writeError("switchyard: the parent process is gone; stopping")
        kill(getpid(), SIGTERM)
        sleep(10)
        _exit(Exit.failure)
    }
    thread.name = "parent-lifeline"
    thread.start()
}

/// The prediction log's options, shared by serve and stream.
let predictionLogOptions = [
    Option(name: "log-predictions", value: "all|sample=SHARE|off", help: "keep what was answered, for 'switchyard predictions show' and GET /v1/predictions", defaultValue: "sample=0.05"),
    Option(name: "log-key", value: "FIELD", help: "a record field (a customer id) logged as the key to look predictions up by"),
    Option(name: "log-max-bytes", value: "BYTES", help: "the prediction log's size on disk; the oldest segments go beyond it", defaultValue: "1073741824"),
]

/// The prediction log the options ask for, under SWITCHYARD_HOME/predictions; nil when off.
func predictionLog(_ args: Arguments, prefix: String, loops: Int, events: EventLog) throws -> PredictionLog? {
    let text = args.string("log-predictions") ?? "sample=0.05"
    guard let policy = PredictionLog.Policy(text) else {
        throw UsageError("--log-predictions is all, off or sample=SHARE (a share above 0 and at most 1), got \"\(text)\"")
    }
    guard policy != .off else { return nil }
    var options = PredictionLog.Options(
        folder: Home.fromEnvironment().url.appendingPathComponent("predictions"), prefix: prefix, policy: policy, key: args.string("log-key"))
    options.maxBytes = try args.integer("log-max-bytes", range: 1 << 20...1 << 50) ?? options.maxBytes
    do { return try PredictionLog(options, loops: loops, events: events) } catch { throw CommandError("cannot keep the prediction log in \(options.folder.path): \(error)") }
}

/// A line of a component's log: printed, and kept for its `GET /v1/logs` (the console's `l`).
func logLine(_ text: String) { LogBook.process.write(text) }
