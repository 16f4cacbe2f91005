import CSystem
import Components
import Console
import ControlProtocol
import Foundation
import Registry
import Scoring

#if canImport(Glibc)
import Glibc
#endif

let benchConsoleCommand = Command(
    words: ["bench", "console"],
    summary: "Measure the console's cost: frame render time, and CPU while it watches N components",
    options: [
        Option(name: "components", value: "N", help: "serve processes to watch", defaultValue: "30"),
        Option(name: "seconds", value: "S", help: "how long to watch", defaultValue: "10"),
        Option(name: "size", value: "WxH", help: "the terminal size drawn", defaultValue: "200x60"),
    ],
    details: """
        Starts N 'switchyard serve' processes (one event loop each) in a scratch SWITCHYARD_HOME,
        then runs the console's collector at a 1 s refresh against them, drawing a frame of the
        given size after every poll as the console does (without a terminal), and reports this
        process's CPU time over the run as a share of one core. That includes the loopback
        registry service the console starts when it has no --registry (it answers the
        collector's fleet, versions, aliases and audit requests). Frame time: the median and p99
        of 1,000 draws of that frame. Goals: a 200×60 frame with 30 components in ≤ 5 ms, and
        ≤ 1% of one core at a 1 s refresh.
        """,
    run: { args in
        let count = try args.integer("components", range: 1...100) ?? 30
        let seconds = try args.double("seconds") ?? 10
        let sizeText = args.string("size") ?? "200x60"
        let size = sizeText.split(separator: "x").compactMap { Int($0) }
        guard size.count == 2, size[0] >= minimumSize.width, size[1] >= minimumSize.height, size[0] <= 1000, size[1] <= 1000 else {
            throw UsageError("--size expects WxH from \(minimumSize.width)x\(minimumSize.height) to 1000x1000, got \"\(sizeText)\"")
        }
        let (width, height) = (size[0], size[1])
        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-bench-console-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let home = Home(scratch.appendingPathComponent("home"))
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(home: home) }
        let document = try trainBenchDocument()
        let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        _ = try registryCall { () throws(RegistryError) in
            try registry.promote(model: registration.version.model, version: registration.version.version, alias: "production", who: "bench")
        }
        let children = try Children(logs: scratch, home: home)
        defer { children.stopAll() }
        for i in 0..<count {
            _ = try children.start("serve-\(i)", ["serve", "--model", "credit@production", "--port", "0", "--threads", "1", "--open"])
        }
        let fleet = try registryCall { () throws(RegistryError) in try FleetDirectory(home: home) }
        let deadline = Date().addingTimeInterval(20)
        while ((try? fleet.members().count) ?? 0) < count && Date() < deadline { usleep(100_000) }
        let local = try EmbeddedRegistry(home: home, actor: "bench")
        defer { local.stop() }
        let collector = Collector(endpoints: [], registry: try registryCall { () throws(RegistryError) in try RegistryAPI(url: local.url, key: local.sessionKey) }, key: nil)
        collector.collect()
        let found = collector.snapshot.components.count
        print("watching \(found) serve components (of \(count) started) at a 1 s refresh for \(Int(seconds)) s")

        // Frame time.
        var state = ConsoleState()
        var samples: [UInt64] = []
        for _ in 0..<1000 {
            state.now = Date()
            let start = csystem_monotonic_ns()
            let canvas = drawConsole(collector.snapshot, state, width: width, height: height, unicode: true)
            for y in 0..<canvas.height { _ = canvas.runs(y) }
            samples.append(csystem_monotonic_ns() - start)
        }
        samples.sort()
        print(String(format: "frame (%d×%d, %d components, draw + runs per row): median %.3f ms, p99 %.3f ms (goal ≤ 5 ms)",
                     width, height, found, Double(samples[500]) / 1e6, Double(samples[990]) / 1e6))

        // CPU while watching: the collector's polls plus one frame per poll.
        func cpu() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        }
        let before = cpu()
        let wallStart = csystem_monotonic_ns()
        collector.interval = 1
        collector.start()
        var drawn = -1
        while Double(csystem_monotonic_ns() - wallStart) / 1e9 < seconds {
            if collector.version != drawn {
                drawn = collector.version
                let canvas = drawConsole(collector.snapshot, state, width: width, height: height, unicode: true)
                for y in 0..<canvas.height { _ = canvas.runs(y) }
            }
            usleep(50_000)  // the console's key-read timeout
        }
        collector.stop()
        let used = cpu() - before
        let wall = Double(csystem_monotonic_ns() - wallStart) / 1e9
        print(String(format: "CPU: %.3f s over %.1f s = %.2f%% of one core (goal ≤ 1%%)", used, wall, used / wall * 100))
        return Exit.ok
    })
