import Foundation
import HTTP
import JSON
import Scoring
import Synchronization
import Testing

/// A switchyard process left running (a component), with its output collected.
final class RunningSwitchyard: @unchecked Sendable {
    let process = Process()
    private let output = Mutex<String>("")

    /// `descriptors` runs it under that descriptor limit (soft and hard), through `sh -c 'ulimit -n'`;
    /// `namespace` runs it in that network namespace (`ip netns exec`), a test host.
    init(_ arguments: [String], home: URL, descriptors: Int? = nil, namespace: String? = nil) throws {
        if let namespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace, switchyardBinary.path] + arguments
        } else if let descriptors {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(descriptors) && exec \"$0\" \"$@\"", switchyardBinary.path] + arguments
        } else {
            process.executableURL = switchyardBinary
            process.arguments = arguments
        }
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_HOME"] = home.path
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let handle = pipe.fileHandleForReading
        // A thread of its own: a blocking reader on a shared dispatch queue can wait behind the
        // other tests' readers when the suite runs in parallel, and then no output is seen at all.
        let reader = Thread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                self.output.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
            self.ended.store(true, ordering: .releasing)
            self.outputEnded.signal()
        }
        reader.start()
    }

    private let outputEnded = DispatchSemaphore(value: 0)
    private let ended = Atomic<Bool>(false)

    /// What it has printed so far.
    var text: String { output.withLock { $0 } }

    /// Everything it printed: once it has exited and the reader has read the pipe to its end
    /// (`text` right after the exit can miss the last lines still in the pipe).
    func finalText() -> String {
        process.waitUntilExit()
        for _ in 0..<3000 where !ended.load(ordering: .acquiring) { usleep(10_000) }  // 30 s: only a hung reader waits that long
        return text
    }

    /// The port from "control API on http://HOST:PORT" (HOST 127.0.0.1 unless given), waiting up to 20 s.
    func port(host: String = "127.0.0.1") throws -> Int {
        try port(after: "control API on http://\(host):")
    }

    /// The port `serve` prints ("serving credit@1 on http://127.0.0.1:PORT …").
    func servePort() throws -> Int { try port(after: " on http://127.0.0.1:") }

    /// The number after `marker` in the output, waiting up to 20 s.
    func port(after marker: String) throws -> Int {
        for _ in 0..<2000 {
            if let range = text.range(of: marker) {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits) { return port }
            }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        var ended = ""
        if !process.isRunning {
            _ = outputEnded.wait(timeout: .now() + 5)  // the last output of a process that exited
            ended = " (it exited with status \(process.terminationStatus), \(process.terminationReason == .uncaughtSignal ? "a signal" : "exit"))"
        }
        throw CLITestError("no control API address in the output of switchyard \(process.arguments?.first ?? "")\(ended): \(text)")
    }

    /// Signals it, unless it has already ended (its pid may belong to another process by now).
    func kill(_ signal: Int32) {
        if process.isRunning { Glibc.kill(process.processIdentifier, signal) }
        process.waitUntilExit()
    }
}

struct CLITestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite struct BatchProcessTests {
    /// SIGKILL mid-run: no partial output is visible, the run is marked interrupted at
    /// the next start, and its rerun writes outputs identical to an uninterrupted run.
    @Test func aKilledRunIsInterruptedAndItsRerunMatchesAnUninterruptedRun() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        let input = root.appendingPathComponent("in"), output = root.appendingPathComponent("out"), reference = root.appendingPathComponent("ref")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try trainCredit(home)
        for (name, seed) in [("a", "1"), ("b", "2"), ("c", "3")] {
            let made = try switchyard(["fixtures", "credit", "--rows", "30000", "--seed", seed, "--out", input.appendingPathComponent("\(name).csv").path], home: home)
            #expect(made.status == 0, "\(made.stderr)")
        }
        // A bad row, so the rejects files are compared too.
        let b = try FileHandle(forWritingTo: input.appendingPathComponent("b.csv"))
        try b.seekToEnd()
        try b.write(contentsOf: Data("30001,lots,36,5,50000,30,2,0.5,1,0,3,0.3,700,north,auto,online,0\n".utf8))
        try b.close()

        // --settle 0: the inputs were written just now (the settle interval has a test of its own).
        let once = try switchyard(["batch", "run", "--once", "--input", input.path, "--output", reference.path, "--model", "credit@production", "--settle", "0"], home: home)
        #expect(once.status == 0, "\(once.stdout) \(once.stderr)")
        #expect(once.stdout.contains("90001 rows read, 90000 scored, 1 rejected"), "\(once.stdout)")
        let key = try switchyard(["keys", "create", "--scope", "operate"], home: home).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let arguments = ["batch", "--input", input.path, "--output", output.path, "--model", "credit@production", "--port", "0",
                         "--max-rows-per-second", "40000", "--settle", "0"]
        let auth = [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")]

        // Start a run and kill the process once the first output has appeared.
        let first = try RunningSwitchyard(arguments, home: home)
        let trigger = try HTTPClient(port: try first.port()).request("POST", "/v1/runs", headers: auth)
        #expect(trigger.status == 202)
        let id = try #require(runID(trigger.body))
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: output.appendingPathComponent("a.csv").path) && Date() < deadline { usleep(5_000) }
        first.kill(SIGKILL)
        let visible = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { !$0.hasPrefix(".") }
        #expect(visible.contains("a.csv"))
        #expect(!visible.contains("c.csv"), "the kill came before the last input was done")
        for name in visible {  // whatever is visible is complete
            #expect(try Data(contentsOf: output.appendingPathComponent(name)) == Data(contentsOf: reference.appendingPathComponent(name)), "\(name)")
        }

        // Restart: the run is interrupted, leftovers are gone, and a rerun completes it.
        let second = try RunningSwitchyard(arguments, home: home)
        defer { second.kill(SIGTERM) }
        let client = HTTPClient(port: try second.port())
        let interrupted = try JSONValue.parse(try client.request("GET", "/v1/runs/\(id)", headers: auth).body)
        #expect(interrupted["status"] == .string("interrupted"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: output.path).allSatisfy { !$0.hasPrefix(".") }, "temporary files removed")
        let rerun = try client.request("POST", "/v1/runs/\(id)/rerun", headers: auth)
        #expect(rerun.status == 202)
        let rerunID = try #require(runID(rerun.body))
        var status = ""
        for _ in 0..<1000 {
            status = (try JSONValue.parse(try client.request("GET", "/v1/runs/\(rerunID)", headers: auth).body))["status"]?.stringValue ?? ""
            if status != "queued" && status != "running" { break }
            usleep(20_000)
        }
        #expect(status == "succeeded")
        let names = try FileManager.default.contentsOfDirectory(atPath: reference.path).sorted()
        #expect(names == ["a.csv", "a.rejects.csv", "b.csv", "b.rejects.csv", "c.csv", "c.rejects.csv"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: output.path).sorted() == names)
        for name in names {
            #expect(try Data(contentsOf: output.appendingPathComponent(name)) == Data(contentsOf: reference.appendingPathComponent(name)), "\(name)")
        }
    }
}

extension BatchProcessTests {
    /// One run of a job at a time across processes: a second `run --once` refuses (exit 75) and
    /// names the run that holds the job; with --wait it waits and then runs. Two runs of a job
    /// used to overlap, and the older one's output replaced the newer one's.
    @Test func aSecondRunOfAJobRefusesOrWaits() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        let input = root.appendingPathComponent("in"), output = root.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try trainCredit(home)
        #expect(try switchyard(["fixtures", "credit", "--rows", "100000", "--seed", "1", "--out", input.appendingPathComponent("a.csv").path], home: home).status == 0)
        let run = ["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "credit@production", "--job", "nightly", "--settle", "0"]
        // At 5,000 rows/s the first run holds the job for 20 s, however fast the machine: it is stopped below.
        let first = try RunningSwitchyard(run + ["--max-rows-per-second", "5000"], home: home)
        let lockFile = home.appendingPathComponent("locks/batch-nightly.lock").path
        var held = false
        for _ in 0..<2000 where !held {
            held = ((try? String(contentsOfFile: lockFile, encoding: .utf8)) ?? "").hasPrefix("\(first.process.processIdentifier) 1\n")
            usleep(10_000)
        }
        #expect(held, "the first run holds the job: \(first.text)")

        let refused = try switchyard(run, home: home)
        #expect(refused.status == 75)
        #expect(refused.stderr.contains("job nightly is busy: run 1 (credit@1, started "), "\(refused.stderr)")
        #expect(refused.stderr.contains("pid \(first.process.processIdentifier)) holds it; try again when it finishes, or add --wait"), "\(refused.stderr)")

        let waiting = try RunningSwitchyard(run + ["--wait"], home: home)
        var said = false
        for _ in 0..<2000 where !said {
            said = waiting.text.contains("waiting for it to finish")
            usleep(10_000)
        }
        #expect(said, "\(waiting.text)")
        first.kill(SIGINT)  // cancels its run; the waiting one goes next
        let finished = waiting.finalText()
        #expect(waiting.process.terminationStatus == 0, "\(finished)")
        #expect(finished.contains("run 2 succeeded: 1 input, 100000 rows read"), "\(finished)")
    }
}

private func runID(_ body: [UInt8]) -> Int? {
    if case .number(let id)? = (try? JSONValue.parse(body))?["id"] { return Int(id) }
    return nil
}

@Suite struct StreamProcessTests {
    /// SIGKILL the stream at arbitrary moments while events arrive: after restarts every
    /// event id is in the sink, and duplicates are at most one micro-batch per kill.
    @Test func killedAndRestartedTheStreamLosesNoEvent() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        let source = root.appendingPathComponent("events"), sink = root.appendingPathComponent("scored")
        try trainCredit(home)
        let total = 60_000, batch = 1000
        let producer = try RunningSwitchyard(["stream", "produce", "--to", "dir:\(source.path)", "--rate", "30000", "--count", "\(total)"], home: home)
        // The stream refuses a source folder that does not exist: start it once the producer made it.
        let made = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: source.path) && Date() < made { usleep(10_000) }
        let arguments = ["stream", "--source", "dir:\(source.path)", "--sink", "dir:\(sink.path)", "--model", "credit@production",
                         "--port", "0", "--max-batch", "\(batch)"]
        var kills = 0
        for pause in [300_000, 450_000, 200_000] as [UInt32] {
            let stream = try RunningSwitchyard(arguments, home: home)
            _ = try stream.port()
            usleep(pause)
            stream.kill(SIGKILL)
            kills += 1
        }
        producer.process.waitUntilExit()
        let last = try RunningSwitchyard(arguments, home: home)
        defer { last.kill(SIGTERM) }
        _ = try last.port()
        // Wait until the sink holds at least `total` lines and has stopped growing, then read it once.
        func lineCount() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: sink.path).filter { $0.hasPrefix("part-") }.reduce(0) { sum, name in
                sum + (try Data(contentsOf: sink.appendingPathComponent(name))).reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            }
        }
        let deadline = Date().addingTimeInterval(60)
        var previous = -1
        while Date() < deadline {
            usleep(300_000)
            let count = try lineCount()
            if count >= total && count == previous { break }
            previous = count
        }
        var seen: [Int: Int] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: sink.path) where name.hasPrefix("part-") {
            // Visible files are complete: every line is a whole prediction.
            for line in try String(contentsOf: sink.appendingPathComponent(name), encoding: .utf8).split(separator: "\n") {
                guard line.hasPrefix(#"{"id":"#), line.hasSuffix("}"), let id = Int(line.dropFirst(6).prefix { $0.isNumber }) else {
                    Issue.record("a bad line in \(name): \(line.prefix(80))")
                    return
                }
                seen[id, default: 0] += 1
            }
        }
        #expect(seen.count == total, "every event scored")
        #expect(Set(seen.keys) == Set(1...total))
        let duplicates = seen.values.reduce(0) { $0 + $1 - 1 }
        #expect(duplicates <= kills * batch, "\(duplicates) duplicates after \(kills) kills")
    }
}
