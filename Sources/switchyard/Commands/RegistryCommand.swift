import Components
import ControlProtocol
import Foundation
import HTTP
import Registry
import Telemetry

let registryCommand = Command(
    words: ["registry"],
    summary: "Serve this machine's registry to components and consoles on other machines (models, aliases, audit, keys, fleet)",
    options: [
        Option(name: "port", value: "PORT", help: "port to listen on (0 picks a free one)", defaultValue: "8079"),
        Option(name: "host", value: "ADDRESS", help: "address to bind; anything but loopback needs API keys", defaultValue: "127.0.0.1"),
        Option(name: "store", value: "URL", help: "postgres://USER@HOST:PORT/DB to keep the registry in PostgreSQL (default: the SQLite file in SWITCHYARD_HOME)"),
    ],
    details: """
        The registry in SWITCHYARD_HOME, over HTTP with API keys. Components elsewhere take
        --registry http://HOST:PORT and --key KEY (scope operate) and share nothing else with
        this machine; they cache what they run, and keep serving while the registry is down.

        Routes (besides the control API): GET /v1/models, /v1/models/NAME, /v1/resolve?ref=REF,
        /v1/artifacts/SHA256 (immutable, ETag), /v1/aliases[?after=REVISION] (what changed since),
        /v1/audit?model=M&after=ID, /v1/fleet (live and gone members), /v1/whoami (scope read);
        POST /v1/models (a model document; x-content-sha256 is checked), POST /v1/fleet,
        DELETE /v1/fleet/ID, GET /v1/keys/active (scope operate); POST /v1/aliases/MODEL/ALIAS
        {"version": N, "expected": M} (compare-and-set: 409 when it moved meanwhile),
        POST /v1/aliases/MODEL/ALIAS/rollback, GET|POST /v1/keys, POST /v1/keys/ID/revoke
        (scope admin). Changes are audited under the key's id and name.

        Example:
          switchyard keys create --scope admin --name ops        # on the registry's machine
          switchyard registry --host 10.0.0.5 --port 8079
          switchyard serve --registry http://10.0.0.5:8079 --key "$KEY" --model credit@production
        """,
    run: { args in
        let port = try args.integer("port", range: 0...65535) ?? 8079
        let host = args.string("host") ?? "127.0.0.1"
        let home = Home.fromEnvironment()
        let location = try registryCall { () throws(RegistryError) in try StoreLocation.parse(args.string("store"), home: home) }
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(location: location) }
        let keys = try registryCall { () throws(RegistryError) in try KeyStore(location: location) }
        let fleet = try registryCall { () throws(RegistryError) in try FleetDirectory(location: location) }
        let authenticator = Authenticator(store: keys, loops: 2)
        do {
            try ComponentHost.checkExposure(host: host, open: false, authenticator: authenticator)
        } catch let error as HTTPError {
            throw CommandError(error.message)
        }
        let events = EventLog()
        let storeHealth: DependencyHealth? = if case .postgres = location { DependencyHealth(name: "store", address: location.description, events: events) } else { nil }
        let component = RegistryComponent(registry: registry, keys: keys, fleet: fleet, events: events, authenticator: authenticator, storeHealth: storeHealth)
        let runner = ComponentHost(
            component: component, observer: nil, configuration: HTTPServer.Configuration(host: host, port: port, threads: 2),
            authenticator: authenticator, events: events, fleet: fleet, dependencies: storeHealth.map { [$0] } ?? [])
        let termination = Termination()
        let bound = try startListening(runner, host: host, port: port)
        logLine("registry \(location): control API on http://\(host):\(bound)")
        fflush(nil)
        termination.wait()
        logLine("stopping")
        runner.stop()
        return Exit.ok
    })
