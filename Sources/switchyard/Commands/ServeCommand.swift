import Components
import ControlProtocol
import Foundation
import HTTP
import Registry
import Scoring
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

let serveCommand = Command(
    words: ["serve"],
    summary: "Serve a model over HTTP: Open Inference Protocol v2, Azure ML /score, MLflow /invocations",
    options: [
        Option(name: "model", value: "NAME@ALIAS", help: "the model; an alias is followed as it moves, a version number is pinned (with --model-file: NAME@N names the file's version)"),
        Option(name: "model-file", value: "FILE", help: "serve this model document instead of one from a registry (a container image's baked-in model)"),
        Option(name: "keys-file", value: "FILE", help: "API keys from this file, reread every 2 s: lines 'SCOPE KEY-or-sha256:HEX [NAME]' (a mounted Secret)"),
        Option(name: "port", value: "PORT", help: "port to listen on (0 picks a free one)", defaultValue: "8080"),
        Option(name: "host", value: "ADDRESS", help: "address to bind; anything but loopback needs API keys", defaultValue: "127.0.0.1"),
        Option(name: "threads", value: "N", help: "event loops (threads)", defaultValue: "one per core"),
        Option(name: "open", help: "score without an API key (loopback only); control actions still need keys"),
        Option(name: "max-body", value: "BYTES", help: "largest request body (413 beyond)", defaultValue: "1048576"),
        Option(name: "max-head", value: "BYTES", help: "largest request line + headers (431 beyond)", defaultValue: "16384"),
        Option(name: "max-connections", value: "N", help: "open connections beyond this get 503 (clamped to the descriptor limit)", defaultValue: "4096"),
        Option(name: "max-rows", value: "N", help: "rows (records, tensor rows) one request may score; 413 beyond", defaultValue: "10000"),
        Option(name: "header-timeout", value: "SECONDS", help: "time to send a request head (408 after)", defaultValue: "10"),
        Option(name: "body-timeout", value: "SECONDS", help: "time to send a request body (408 after)", defaultValue: "30"),
        Option(name: "idle-timeout", value: "SECONDS", help: "idle keep-alive connections close after this", defaultValue: "75"),
        Option(name: "drain-delay", value: "SECONDS", help: "on SIGTERM, keep accepting this long with readiness at 503 (for a load balancer to notice)", defaultValue: "0"),
        Option(name: "drain-timeout", value: "SECONDS", help: "on SIGTERM, requests in flight get this long to finish; the rest are cut off", defaultValue: "10"),
        Option(name: "busy-poll", value: "MICROSECONDS", help: "after work, an event loop keeps looking for the next request this long before it sleeps: lower latency at low concurrency, paid in CPU (below); 0 is off", defaultValue: "0"),
    ] + predictionLogOptions + registryOptions,
    details: """
        Endpoints (the same model behind all of them):
          POST /v2/models/NAME[/versions/V]/infer   Open Inference Protocol v2 (KServe, Triton)
          GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME[/versions/V][/ready]
          POST /score  {"data": [...]}                Azure ML; GET / says Healthy; GET /swagger.json
          POST /invocations                          MLflow: dataframe_split, dataframe_records,
                                                     instances, inputs, or text/csv; GET /ping, /health
        Control API (shared/DESIGN.md): /healthz /readyz /v1/status /v1/timeseries /v1/events
        /metrics (scope read) and POST /v1/model {"version": N} | {"alias": "A"} (scope admin).
        Scoring needs a key with scope predict unless --open. Keys: 'switchyard keys create'.
        Every response carries x-request-id and, from scoring routes, x-model-version.

        Predictions are logged (--log-predictions, a 5% sample by default) as JSON Lines under
        SWITCHYARD_HOME/predictions, at most --log-max-bytes: the request id, time, model version
        and sha256, the record and the answer. Find one: 'switchyard predictions show ID', or
        GET /v1/predictions/ID and GET /v1/predictions?key=VALUE (scope operate).

        --busy-poll trades CPU for latency when requests come one at a time. A loop that sleeps
        between requests is woken on an idle core for each, which costs tens of µs in a VM, and
        runs with cold caches. With --busy-poll 50, a loop that answered requests keeps looking
        for the next for 50 µs (giving its core to anything else runnable between looks). It
        burns CPU while requests keep coming with shorter gaps, so CPU use then overstates the
        load (mind autoscaling on CPU); an idle server sleeps. Off by default.

        SIGTERM (or Ctrl-C) drains: /readyz and /v2/health/ready answer 503, the listener closes
        after --drain-delay, idle keep-alive connections close and requests in flight finish with
        'Connection: close' within --drain-timeout. A second signal stops at once.

        Example:
          switchyard serve --model credit@production --port 8080
        """,
    run: { args in
        let modelFile = args.string("model-file")
        if modelFile == nil && args.string("model") == nil { throw UsageError("missing --model NAME@ALIAS (or --model-file FILE)") }
        let port = try args.integer("port", range: 0...65535) ?? 8080
        let host = args.string("host") ?? "127.0.0.1"
        let threadsText = args.string("threads")
        let threads = threadsText == nil || threadsText == "one per core"
            ? ProcessInfo.processInfo.activeProcessorCount : try args.integer("threads", range: 1...256)!
        var configuration = HTTPServer.Configuration(host: host, port: port, threads: threads)
        configuration.bodyBytes = try args.integer("max-body", range: 1...1 << 30) ?? configuration.bodyBytes
        configuration.headBytes = try args.integer("max-head", range: 256...1 << 20) ?? configuration.headBytes
        configuration.maxConnections = try args.integer("max-connections", range: 1...1_000_000) ?? configuration.maxConnections
        configuration.headerTimeout = try args.seconds("header-timeout") ?? configuration.headerTimeout
        configuration.bodyTimeout = try args.seconds("body-timeout") ?? configuration.bodyTimeout
        configuration.idleTimeout = try args.seconds("idle-timeout") ?? configuration.idleTimeout
        configuration.busyPoll = try args.busyPoll()
        let maxRows = try args.integer("max-rows", range: 1...10_000_000) ?? ServeComponent.defaultMaxRows
        let open = args.flag("open")
        let drainDelay = try args.seconds("drain-delay", zeroAllowed: true) ?? 0
        let drainTimeout = try args.seconds("drain-timeout", zeroAllowed: true) ?? 10

        let events = EventLog()
        let access = try registryAccess(args, events: events)
        try access.checkComponentKey()
        var models = access.models
        var reference = args.string("model") ?? ""
        if let modelFile {
            guard access.client == nil else { throw UsageError("--model-file serves a file: leave out --registry (or SWITCHYARD_REGISTRY)") }
            let file = try registryCall { () throws(RegistryError) in try ModelFile(path: modelFile, label: args.string("model")) }
            (models, reference) = (file, file.version.reference)
        }
        let keys = try args.string("keys-file").map { path in try registryCall { () throws(RegistryError) in try KeyFile(path: path) } } ?? access.keys
        let authenticator = Authenticator(store: keys, loops: threads)
        let log = try predictionLog(args, prefix: "serve", loops: threads, events: events)
        defer { log?.stop() }
        let serve: ServeComponent
        do {
            try ComponentHost.checkExposure(host: host, open: open, authenticator: authenticator)
            serve = try ServeComponent(registry: models, reference: reference, loops: threads, open: open, events: events, authenticator: authenticator,
                maxRows: maxRows, predictionLog: log)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let runner = ComponentHost(
            component: serve, observer: { serve.observe(loop: $0, status: $1, nanoseconds: $2) }, configuration: configuration,
            authenticator: authenticator, events: events, fleet: access.fleet, dependencies: access.dependencies)
        let termination = Termination()
        let bound = try startListening(runner, host: host, port: port)
        access.follow(runner)
        let model = serve.model.current.map { "\($0.version.model)@\($0.version.version)" } ?? reference
        logLine("serving \(model) on http://\(host):\(bound) with \(threads) event loops"
            + (open ? "; scoring is open (no key)" : "; scoring needs a key with scope predict"))
        logLine("  POST /v2/models/\(model.split(separator: "@")[0])/infer   POST /score   POST /invocations   GET /v1/status")
        fflush(nil)
        termination.wait()
        logLine("draining: readiness answers 503" + (drainDelay > 0 ? "; closing the listener in \(drainDelay) s" : ""))
        let cutOff = runner.drain(delay: drainDelay, timeout: drainTimeout, giveUp: { termination.repeated })
        logLine(cutOff == 0 ? "stopped: every request finished" : "stopped: \(cutOff) connection(s) cut off with requests unfinished")
        return Exit.ok
    })

extension Arguments {
    /// `--busy-poll MICROSECONDS` (serve, bench serve), as the seconds `HTTPServer.Configuration.busyPoll` takes; 0 when not given.
    func busyPoll() throws(UsageError) -> Double {
        Double(try integer("busy-poll", range: 0...Int(HTTPServer.Configuration.maxBusyPoll * 1e6)) ?? 0) / 1e6
    }
}

let keysCreateCommand = Command(
    words: ["keys", "create"],
    summary: "Create an API key; it is printed once and stored only as a hash",
    options: [
        Option(name: "scope", value: "read|predict|operate|admin", help: "what the key may do (each scope includes those before it)", required: true),
        Option(name: "name", value: "TEXT", help: "a note: who or what holds the key"),
    ] + registryOptions,
    run: { args in
        let scopeText = try args.require("scope")
        guard let scope = Scope(rawValue: scopeText) else {
            throw UsageError("--scope must be one of read, predict, operate, admin, got \"\(scopeText)\"")
        }
        let store = try registryAccess(args, events: EventLog()).keyAdministration
        let (key, secret) = try registryCall { () throws(RegistryError) in try store.create(scope: scope, name: args.string("name"), who: cliActor()) }
        print(secret)
        fflush(nil)  // the key and its line end go out before the note on standard error
        writeError("created key \(key.id) with scope \(scope.rawValue); it is shown only this once. Send it as 'Authorization: Bearer KEY'.")
        return Exit.ok
    })

let keysListCommand = Command(
    words: ["keys", "list"],
    summary: "List API keys (ids and scopes, never the keys)",
    options: registryOptions,
    run: { args in
        let store = try registryAccess(args, events: EventLog()).keyAdministration
        let keys = try registryCall { () throws(RegistryError) in try store.list() }
        if keys.isEmpty {
            print("no keys; create one: switchyard keys create --scope predict")
            return Exit.ok
        }
        print(table(["ID", "SCOPE", "NAME", "CREATED", "BY", "STATE"], keys.map {
            [$0.id, $0.scope.rawValue, $0.name ?? "", String($0.createdAt.prefix(19)), $0.createdBy, $0.revoked ? "revoked" : "active"]
        }), terminator: "")
        return Exit.ok
    })

let keysRevokeCommand = Command(
    words: ["keys", "revoke"],
    summary: "Revoke an API key; running components stop accepting it within 2 s",
    positionals: ["ID"],
    options: registryOptions,
    run: { args in
        let store = try registryAccess(args, events: EventLog()).keyAdministration
        try registryCall { () throws(RegistryError) in try store.revoke(id: args.positional(0)!) }
        print("revoked key \(args.positional(0)!)")
        return Exit.ok
    })
