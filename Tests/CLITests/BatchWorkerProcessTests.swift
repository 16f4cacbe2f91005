import Foundation
import Glibc
import Registry
import Synchronization
import TestSupport
import Testing

/// Batch runs cut into tasks and done by `switchyard batch worker` processes sharing the run
/// ledger in PostgreSQL (issue 21): a worker SIGKILLed mid-task, and the database restarted under
/// the workers. Every input row ends up in exactly one output or reject row, the run succeeds, and
/// its outputs equal a one-process run's byte for byte.
@Suite struct BatchWorkerProcessTests {
    /// The inputs: a 60,000-row CSV, a small CSV with rows the model rejects, JSON Lines.
    private func inputs(_ root: URL) throws -> URL {
        let input = root.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        let home = root.appendingPathComponent("fixtures-home")
        #expect(try switchyard(["fixtures", "credit", "--rows", "60000", "--seed", "11", "--out", input.appendingPathComponent("big.csv").path], home: home).status == 0)
        let sample = try String(contentsOf: fixtures.appendingPathComponent("credit-sample.csv"), encoding: .utf8)
        var lines = sample.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines[3] = lines[3].replacingOccurrences(of: ",", with: ";")
        lines[7] = "\"an open quote,1,2"
        try lines.joined(separator: "\n").write(to: input.appendingPathComponent("odd.csv"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("credit-sample.jsonl"), to: input.appendingPathComponent("events.jsonl"))
        return input
    }

    /// Every file of `a` (not hidden) is in `b` with the same bytes, and nothing else is.
    private func sameOutputs(_ a: URL, _ b: URL) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: a.path).filter { !$0.hasPrefix(".") }.sorted()
        #expect(names.count == 6, "\(names)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.path).sorted() == names, "no parts or temporary files left")
        for name in names {
            let same = try Data(contentsOf: a.appendingPathComponent(name)) == Data(contentsOf: b.appendingPathComponent(name))
            #expect(same, "\(name) differs from the one-process run's")
        }
    }

    private func prepare(_ server: TestPostgres, _ root: URL) throws -> (input: URL, reference: URL, home: URL) {
        let home = root.appendingPathComponent("planner")
        let trained = try switchyard(["train", "--data", fixtures.appendingPathComponent("credit-sample.csv").path, "--label", "label", "--name", "credit",
                                      "--promote", "production", "--registry", server.url], home: home)
        #expect(trained.status == 0, "\(trained.stderr)")
        let input = try inputs(root)
        let reference = root.appendingPathComponent("one-process")
        let single = try switchyard(["batch", "run", "--once", "--input", input.path, "--output", reference.path, "--model", "credit@production",
                                     "--settle", "0", "--job", "single", "--registry", server.url], home: home)
        #expect(single.status == 0, "\(single.stderr)")
        return (input, reference, home)
    }

    private func worker(_ server: TestPostgres, _ root: URL, _ i: Int) throws -> RunningSwitchyard {
        try RunningSwitchyard(["batch", "worker", "--job", "nightly", "--threads", "1", "--lease", "1", "--registry", server.url],
                              home: root.appendingPathComponent("worker-\(i)"))
    }

    /// `batch run --once` of the job split into tasks (1 MiB reads: about 12,000 rows a task),
    /// its workers slowed to 20,000 rows/s each so a task lasts long enough to be caught in.
    private func plan(_ server: TestPostgres, input: URL, output: URL, home: URL) throws -> RunningSwitchyard {
        try RunningSwitchyard(["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "credit@production",
                               "--settle", "0", "--job", "nightly", "--split", "0.2", "--max-rows-per-second", "20000", "--registry", server.url],
                              home: home)
    }

    @Test func aWorkerKilledMidTaskLosesNothing() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let (input, reference, home) = try prepare(server, root)
        let workers = try (0..<3).map { try worker(server, root, $0) }
        defer { for w in workers { w.kill(SIGTERM) } }
        let output = root.appendingPathComponent("split")
        let planner = try plan(server, input: input, output: output, home: home)
        defer { planner.kill(SIGKILL) }
        // A worker caught holding a task — still holding it after it is dead — was killed mid-task.
        let db = try PostgresConnection(url: server.url)
        var killed: (worker: String, seq: Int)?
        for _ in 0..<3000 where killed == nil && planner.process.isRunning {
            if let row = try db.query("SELECT worker, seq, attempts FROM batch_tasks WHERE status = 'running' ORDER BY seq LIMIT 1").first,
               let name = row[0].text, let pid = name.split(separator: ":").dropFirst().first.flatMap({ Int32($0) }),
               let victim = workers.first(where: { $0.process.processIdentifier == pid }) {
                victim.kill(SIGKILL)
                victim.process.waitUntilExit()
                let still = try db.query("SELECT 1 FROM batch_tasks WHERE seq = $1 AND worker = $2 AND attempts = $3 AND status = 'running'",
                                         [.integer(row[1].integer ?? -1), .text(name), .integer(row[2].integer ?? -1)])
                if !still.isEmpty { killed = (name, Int(row[1].integer ?? -1)) }
            }
            if killed == nil { usleep(5_000) }
        }
        let text = planner.finalText()
        #expect(planner.process.terminationStatus == 0, "\(text)")
        let victim = try #require(killed, "no worker was caught mid-task")
        // Its task was taken over by another worker (after its 1 s lease) and done.
        let task = try db.query("SELECT status, attempts, worker FROM batch_tasks WHERE seq = $1 ORDER BY run_id DESC LIMIT 1", [.integer(Int64(victim.seq))]).first
        #expect(task?[0].text == "done" && (task?[1].integer ?? 0) >= 2 && task?[2].text != victim.worker, "\(String(describing: task))")
        #expect(try db.query("SELECT count(DISTINCT worker) FROM batch_tasks WHERE status = 'done'").first?.first?.integer ?? 0 >= 2)
        try sameOutputs(reference, output)
        // Rows read = scored + rejected, and the same counts as one process.
        let runs = try db.query("SELECT job, rows_read, rows_scored, rows_rejected, status FROM batch_runs ORDER BY id")
        #expect(runs.count == 2 && runs[0][1] == runs[1][1] && runs[0][2] == runs[1][2] && runs[0][3] == runs[1][3], "\(runs)")
        #expect(runs[1][4] == .text("succeeded") && (runs[1][1].integer ?? 0) == (runs[1][2].integer ?? 0) + (runs[1][3].integer ?? 0))
        #expect((runs[1][1].integer ?? 0) > 60_000)
    }

    /// On one machine (the SQLite ledger in SWITCHYARD_HOME): a split run with no worker says it
    /// waits for one and how to start it, and goes on when one comes.
    @Test func aSplitRunSaysItWaitsForWorkersOnThisMachine() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let input = try inputs(root)
        let output = root.appendingPathComponent("out")
        let planner = try RunningSwitchyard(["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "credit@production",
                                             "--settle", "0", "--job", "local", "--split", "1"], home: home)
        defer { planner.kill(SIGKILL) }
        for _ in 0..<3000 where !planner.text.contains("waits for workers") && planner.process.isRunning { usleep(10_000) }
        #expect(planner.text.contains("waits for workers: start 'switchyard batch worker --job local'"), "\(planner.text)")
        let worker = try RunningSwitchyard(["batch", "worker", "--job", "local", "--threads", "1"], home: home)
        defer { worker.kill(SIGTERM) }
        let text = planner.finalText()
        #expect(planner.process.terminationStatus == 0 && text.contains("succeeded"), "\(text)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: output.path).sorted()
            == ["big.csv", "big.rejects.csv", "events.jsonl", "events.rejects.jsonl", "odd.csv", "odd.rejects.csv"])
    }

    @Test func workersRideOutADatabaseRestart() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let (input, reference, home) = try prepare(server, root)
        let workers = try (0..<2).map { try worker(server, root, $0) }
        defer { for w in workers { w.kill(SIGTERM) } }
        let output = root.appendingPathComponent("split")
        let planner = try plan(server, input: input, output: output, home: home)
        defer { planner.kill(SIGKILL) }
        // Once a task is done and others are not (a task lasts about 0.6 s at 20,000 rows/s), the
        // database goes away until a worker says it lost the ledger, and comes back.
        var restarted = false
        for _ in 0..<3000 where !restarted && planner.process.isRunning {
            let db = try PostgresConnection(url: server.url)
            let done = try db.query("SELECT count(*) FROM batch_tasks WHERE status = 'done'").first?.first?.integer ?? 0
            let open = try db.query("SELECT count(*) FROM batch_tasks WHERE status <> 'done'").first?.first?.integer ?? 0
            if done >= 1 && open >= 2 {
                server.kill()
                for _ in 0..<3000 where !workers.contains(where: { $0.text.contains("unreachable") }) { usleep(10_000) }
                try server.start()
                restarted = true
            } else {
                usleep(5_000)
            }
        }
        let text = planner.finalText()
        #expect(restarted)
        #expect(planner.process.terminationStatus == 0, "\(text)")
        try sameOutputs(reference, output)
        for w in workers { w.kill(SIGTERM) }
        let logs = workers.map { $0.finalText() }
        // The outage was noticed and said once per outage (not once per retry), and its end too
        // (by a worker that tried again before the run was over).
        #expect(logs.contains { $0.contains("unreachable") } && logs.contains { $0.contains("reachable again") }, "\(logs)")
        for log in logs {
            let lines = log.split(separator: "\n")
            #expect(lines.filter { $0.contains("unreachable") }.count <= 3, "\(log)")
        }
    }
}
