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

let benchStreamCommand = Command(
    words: ["bench", "stream"],
    summary: "Measure the stream scorer: backlog drain events/s and end-to-end latency at a steady rate",
    options: [
        Option(name: "events", value: "N", help: "events queued before the drain runs", defaultValue: "1000000"),
        Option(name: "rate", value: "N", help: "steady rate for the latency run, events/s", defaultValue: "10000"),
        Option(name: "seconds", value: "S", help: "length of the latency run", defaultValue: "10"),
        Option(name: "redis", value: "yes|no|only", help: "also through a redis-server this bench starts on a free loopback port", defaultValue: "yes when redis-server is installed"),
    ],
    details: """
        Drain: N credit events are written to the source first (a JSON Lines file, or XADD into
        a Redis stream), then a stream component (in this process) scores them to the sink —
        folder to folder, or Redis to Redis — and the time from start to the last prediction
        committed gives events/s. Latency: a producer thread writes events at a steady rate,
        stamped with their event time; end-to-end latency is event time to prediction written
        (sink write done, fsynced for a folder), p50/p99 over the run.

        For comparison (issue 5): Spark Structured Streaming in local mode drains a queued
        backlog at 64,000-115,000 rows/s; its latency floor is about 0.74 s per micro-batch.
        """,
    run: { args in
        let total = try args.integer("events", range: 1000...100_000_000) ?? 1_000_000
        let rate = try args.integer("rate", range: 1...10_000_000) ?? 10_000
        let seconds = try args.double("seconds") ?? 10
        let redisChoice = args.string("redis").map { $0.hasPrefix("yes when") ? "auto" : $0 } ?? "auto"
        let redisBinary = findExecutable("redis-server")
        let withRedis = redisChoice == "yes" || redisChoice == "only" || (redisChoice == "auto" && redisBinary != nil)
        if withRedis && redisBinary == nil { throw CommandError("--redis \(redisChoice) needs redis-server on PATH (apt-get install redis-server)") }

        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-bench-stream-\(getpid())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let home = Home(scratch.appendingPathComponent("home"))
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(home: home) }
        let document = try trainBenchDocument()
        let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        _ = try registryCall { () throws(RegistryError) in
            try registry.promote(model: registration.version.model, version: registration.version.version, alias: "production", who: "bench")
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; model credit (15 inputs); events of the credit fixture")

        func component(_ source: any StreamSource, _ sink: any StreamSink, _ name: String) throws -> StreamComponent {
            do {
                return try StreamComponent(registry: registry, reference: "credit@production", name: name, source: source, sink: sink,
                                           options: .init(), events: EventLog(), authenticator: Authenticator(store: nil, loops: 1))
            } catch let error as HTTPError {
                throw CommandError(error.message)
            }
        }

        /// Runs the component until `expected` events are out; seconds taken.
        func drain(_ stream: StreamComponent, expected: Int, timeout: Double = 300) throws -> Double {
            let start = csystem_monotonic_ns()
            stream.start()
            defer { stream.stop() }
            while stream.written.load(ordering: .relaxed) + stream.dead.load(ordering: .relaxed) < expected {
                if Double(csystem_monotonic_ns() - start) / 1e9 > timeout { throw CommandError("the drain did not finish in \(Int(timeout)) s") }
                usleep(1_000)
            }
            return Double(csystem_monotonic_ns() - start) / 1e9
        }

        /// Produces at `rate` for `seconds` while the component runs; its latency quantiles.
        func steady(_ stream: StreamComponent, to endpoint: Endpoint, firstID: Int) throws -> (p50: Double, p99: Double, max: Double, count: Int) {
            stream.start()
            defer { stream.stop() }
            let producer = try EventProducer(endpoint, seed: 21, firstID: firstID)
            let stop = StopFlag()
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { stop.stop() }
            let sent = try producer.run(rate: Double(rate), count: Int.max, stop: stop)
            let deadline = Date().addingTimeInterval(30)
            while stream.written.load(ordering: .relaxed) < sent && Date() < deadline { usleep(1_000) }
            let h = stream.latency.snapshot()
            func ms(_ q: Double) -> Double { Double(h.quantile(q) ?? 0) / 1e6 }
            return (ms(0.5), ms(0.99), ms(1.0), Int(h.count))
        }

        func report(_ label: String, _ seconds: Double, _ events: Int) {
            print(String(format: "  %@: %d events in %.2f s = %@ events/s", label, events, seconds, formatCount(Double(events) / seconds)))
        }

        if redisChoice != "only" {
            print("folder → folder")
            let src = scratch.appendingPathComponent("src"), out = scratch.appendingPathComponent("out")
            let producer = try EventProducer(.folder(src), seed: 11, firstID: 1)
            _ = try producer.run(rate: 0, count: total, stop: StopFlag())
            let checkpoints = try registryCall { () throws(RegistryError) in try StreamCheckpoints(home: home) }
            let drained = try component(try FolderSource(directory: src, stream: "drain", checkpoints: checkpoints), try FolderSink(directory: out), "drain")
            report("drain of a queued backlog", try drain(drained, expected: total), total)
            let src2 = scratch.appendingPathComponent("src2"), out2 = scratch.appendingPathComponent("out2")
            try FileManager.default.createDirectory(at: src2, withIntermediateDirectories: true)
            let live = try component(try FolderSource(directory: src2, stream: "steady", checkpoints: checkpoints), try FolderSink(directory: out2), "steady")
            let l = try steady(live, to: .folder(src2), firstID: 1)
            print(String(format: "  steady %d events/s for %.0f s: e2e p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d events)", rate, seconds, l.p50, l.p99, l.max, l.count))
        }

        if withRedis, let redisBinary {
            let redis = try RedisServer(binary: redisBinary, folder: scratch.appendingPathComponent("redis"))
            defer { redis.stop() }
            print("redis → redis (redis-server on 127.0.0.1:\(redis.port), started by this bench)")
            let input = try RedisAddress("redis://127.0.0.1:\(redis.port)/events?group=bench")
            let output = try RedisAddress("redis://127.0.0.1:\(redis.port)/predictions?maxlen=2000000")
            let producer = try EventProducer(.redis(input), seed: 11, firstID: 1)
            let loadStart = csystem_monotonic_ns()
            _ = try producer.run(rate: 0, count: total, stop: StopFlag())
            report("XADD of the backlog (the producer alone)", Double(csystem_monotonic_ns() - loadStart) / 1e9, total)
            do {
                let drained = try component(try RedisSource(address: input), try RedisSink(address: output), "redis-drain")
                report("drain of a queued backlog", try drain(drained, expected: total), total)
                let live = try component(try RedisSource(address: input), try RedisSink(address: output), "redis-steady")
                let l = try steady(live, to: .redis(input), firstID: total + 1)
                print(String(format: "  steady %d events/s for %.0f s: e2e p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d events)", rate, seconds, l.p50, l.p99, l.max, l.count))
            } catch let error as RedisError {
                throw CommandError(error.description)
            }
        }
        return Exit.ok
    })

/// A redis-server this process starts on a free loopback port and stops by its pid.
final class RedisServer {
    let process = Process()
    let port: Int

    init(binary: String, folder: URL) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        port = try freeLoopbackPort()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<500 {
            if let client = try? RedisClient(host: "127.0.0.1", port: port), (try? client.command(["PING"])) != nil { return }
            usleep(10_000)
        }
        stop()
        throw CommandError("redis-server did not answer on port \(port) within 5 s")
    }

    func stop() {
        // SIGKILL: no persistence is configured, so nothing is lost; wait at most 5 s.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for _ in 0..<500 where process.isRunning { usleep(10_000) }
    }
}
