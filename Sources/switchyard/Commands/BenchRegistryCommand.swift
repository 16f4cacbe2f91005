import CSystem
import Components
import ControlProtocol
import Foundation
import HTTP
import Registry
import Scoring
import Synchronization
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

let benchRegistryCommand = Command(
    words: ["bench", "registry"],
    summary: "Measure the registry service: alias moves and split changes reaching followers, heartbeats/s, start time with --registry",
    options: [
        Option(name: "followers", value: "N", help: "serve components following the alias", defaultValue: "10"),
        Option(name: "moves", value: "N", help: "alias moves timed", defaultValue: "20"),
        Option(name: "seconds", value: "S", help: "length of the heartbeat load", defaultValue: "5"),
        Option(name: "store", value: "URL", help: "an empty PostgreSQL database (postgres://…): two registry services on it, moves through one, followers on the other"),
    ],
    details: """
        Everything runs in this process over loopback HTTP: a registry service (one event loop)
        on a scratch SWITCHYARD_HOME with two versions of a model, and N serve components, each
        with its own home and registry client, following credit@production. Each move flips the
        alias through the service; its time is from the request to the moment the last follower
        serves the new version; each split change likewise, until the last follower splits by the
        new weights. Heartbeats: the built-in load generator posts fleet heartbeats
        on 16 connections (its own CPU is reported, so a saturated generator shows). Start: a
        `switchyard serve` process from spawn to its "serving … on" line, against the local
        registry and against the service with an empty cache, 7 of each, interleaved.

        With --store postgres://…, two registry services keep the registry in that database; the
        moves and split changes go through the first, the followers follow the second, so each
        time includes PostgreSQL's LISTEN/NOTIFY between them.
        """,
    run: { args in
        let followers = try args.integer("followers", range: 1...100) ?? 10
        let moves = try args.integer("moves", range: 2...1000) ?? 20
        let seconds = try args.double("seconds") ?? 5
        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-bench-registry-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let home = Home(scratch.appendingPathComponent("registry"))
        let location = try registryCall { () throws(RegistryError) in try StoreLocation.parse(args.string("store"), home: home) }
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(location: location) }
        guard try registryCall({ () throws(RegistryError) in try registry.versions(model: nil) }).isEmpty else {
            throw CommandError("\(location) already holds models; give an empty database")
        }
        var document = try trainBenchDocument()
        document.metadata.name = "credit"
        _ = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        document.estimator.intercepts[0] += 0.5
        _ = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        _ = try registryCall { () throws(RegistryError) in try registry.promote(model: "credit", version: 1, alias: "production", who: "bench") }
        let keys = try registryCall { () throws(RegistryError) in try KeyStore(location: location) }
        let admin = try registryCall { () throws(RegistryError) in try keys.create(scope: .admin, name: "bench", who: "bench") }.1
        /// A registry service on the store (each with its own connections, as separate processes have).
        func service() throws -> (host: ComponentHost, port: Int) {
            let events = EventLog()
            let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(location: location) }
            let keys = try registryCall { () throws(RegistryError) in try KeyStore(location: location) }
            let fleet = try registryCall { () throws(RegistryError) in try FleetDirectory(location: location) }
            let authenticator = Authenticator(store: keys, loops: 1)
            let health: DependencyHealth? = if case .postgres = location { DependencyHealth(name: "store", address: location.description, events: events) } else { nil }
            let host = ComponentHost(
                component: RegistryComponent(registry: registry, keys: keys, fleet: fleet, events: events, authenticator: authenticator, storeHealth: health),
                observer: nil, configuration: .init(port: 0, threads: 1), authenticator: authenticator, events: events, fleet: nil)
            return (host, try host.start())
        }
        let (serviceHost, port) = try service()
        defer { serviceHost.stop() }
        let url = "http://127.0.0.1:\(port)"
        var followed = url
        var second: ComponentHost?
        if case .postgres = location {
            let other = try service()
            second = other.host
            followed = "http://127.0.0.1:\(other.port)"
            print("two registry services on \(location): moves through \(url), followers on \(followed) (one event loop each)")
        } else {
            print("registry service on \(url) (one event loop)")
        }
        defer { second?.stop() }

        // Followers.
        var serves: [ServeComponent] = []
        var hosts: [ComponentHost] = []
        for i in 0..<followers {
            let followerHome = Home(scratch.appendingPathComponent("follower-\(i)"))
            let client = try registryCall { () throws(RegistryError) in try RegistryClient(url: followed, key: admin, home: followerHome, events: EventLog()) }
            let serve = try ServeComponent(registry: client, reference: "credit@production", loops: 1, open: true, events: EventLog(),
                                           authenticator: Authenticator(store: nil, loops: 1))
            let host = ComponentHost(component: serve, observer: nil, configuration: .init(port: 0, threads: 1),
                                     authenticator: Authenticator(store: nil, loops: 1), events: EventLog(), fleet: nil)
            _ = try host.start()
            client.follow({ host.nudge() }, until: { host.isStopping })
            serves.append(serve)
            hosts.append(host)
        }
        defer { for host in hosts { host.stop() } }
        let mover = try registryCall { () throws(RegistryError) in try RegistryClient(url: url, key: admin, home: Home(scratch.appendingPathComponent("mover")), events: EventLog()) }
        var latencies: [Double] = []
        for i in 0..<moves {
            let target = i % 2 == 0 ? 2 : 1
            let start = csystem_monotonic_ns()
            _ = try registryCall { () throws(RegistryError) in try mover.promote(model: "credit", version: target, alias: "production", expected: .version(3 - target)) }
            let deadline = Date().addingTimeInterval(30)
            while serves.contains(where: { $0.model.current?.version.version != target }) && Date() < deadline { usleep(500) }
            guard !serves.contains(where: { $0.model.current?.version.version != target }) else {
                throw CommandError("move \(i + 1): not every follower reached v\(target) within 30 s")
            }
            latencies.append(Double(csystem_monotonic_ns() - start) / 1e6)
        }
        let sorted = latencies.sorted()
        func q(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        print(String(format: "alias move → all %d followers serving it: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d moves (goal p99 ≤ 1000 ms)",
                     followers, q(0.5), q(0.99), sorted.last ?? 0, moves))

        // Weight changes of a split (issue: every replica follows within 1 s).
        var weightLatencies: [Double] = []
        for i in 0..<moves {
            let words = i % 2 == 0 ? ["1=90", "2=10"] : ["1=50", "2=50"]
            let route = try registryCall { () throws(RegistryError) in try AliasRoute(words: words, key: nil) }
            let start = csystem_monotonic_ns()
            _ = try registryCall { () throws(RegistryError) in try mover.setRoute(model: "credit", alias: "production", route: route) }
            let deadline = Date().addingTimeInterval(30)
            while serves.contains(where: { $0.model.current?.route != route }) && Date() < deadline { usleep(500) }
            guard !serves.contains(where: { $0.model.current?.route != route }) else {
                throw CommandError("weight change \(i + 1): not every follower split \(route.words) within 30 s")
            }
            weightLatencies.append(Double(csystem_monotonic_ns() - start) / 1e6)
        }
        let weights = weightLatencies.sorted()
        print(String(format: "split weight change → all %d followers splitting by it: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d changes (goal ≤ 1000 ms)",
                     followers, weights[weights.count / 2], weights[min(weights.count - 1, Int(Double(weights.count) * 0.99))], weights.last ?? 0, moves))

        // Heartbeats.
        let body = #"{"id": "bench-member", "kind": "serve", "url": "http://127.0.0.1:1", "pid": 1, "host": "bench", "model": "credit@1", "started_at": "2026-01-01T00:00:00Z"}"#
        let request = Array("POST /v1/fleet HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(admin)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        func threadCPU() -> Double {
            var t = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
        }
        let before = threadCPU()
        let load = LoadGenerator.run(port: port, request: request, connections: 16, duration: seconds)
        let after = threadCPU()
        print(String(format: "heartbeats: %.0f/s on one event loop (p50 %.2f ms, p99 %.2f ms, %d failed; load generator CPU %.0f%% of one core) (goal ≥ 1,000/s)",
                     load.rate, load.quantile(0.5) / 1e6, load.quantile(0.99) / 1e6, load.failed, (after - before) / max(load.seconds, 1e-9) * 100))

        // Start time: `switchyard serve` as a process, from spawn to "serving … on", against the
        // local registry and against the service with an empty cache, interleaved.
        func startMilliseconds(_ arguments: [String], home: URL) throws -> Double {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: selfExecutable())
            process.arguments = ["serve", "--model", "credit@production", "--port", "0", "--open", "--threads", "1"] + arguments
            var environment = ProcessInfo.processInfo.environment
            environment["SWITCHYARD_HOME"] = home.path
            process.environment = environment
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            let start = csystem_monotonic_ns()
            try process.run()
            var output = Data()
            while !String(decoding: output, as: UTF8.self).contains(" on http://") {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { throw CommandError("serve exited before it served: \(String(decoding: output, as: UTF8.self))") }
                output += chunk
            }
            let elapsed = Double(csystem_monotonic_ns() - start) / 1e6
            process.terminate()
            process.waitUntilExit()
            return elapsed
        }
        var local: [Double] = [], remote: [Double] = []
        for i in 0..<7 {
            if case .home = location { local.append(try startMilliseconds([], home: home.url)) } else { local.append(try startMilliseconds(["--registry", args.string("store")!], home: scratch.appendingPathComponent("local-\(i)"))) }
            remote.append(try startMilliseconds(["--registry", url, "--key", admin], home: scratch.appendingPathComponent("start-\(i)")))
        }
        let l = local.sorted()[3], r = remote.sorted()[3]
        let direct = if case .home = location { "local" } else { "straight from PostgreSQL" }
        print(String(format: "serve process start (spawn to serving): %@ %.1f ms, with --registry %.1f ms (empty cache) — %.2f× (goal ≤ 1.5×); ranges %.1f–%.1f and %.1f–%.1f ms",
                     direct, l, r, r / l, local.min() ?? 0, local.max() ?? 0, remote.min() ?? 0, remote.max() ?? 0))
        return Exit.ok
    })


