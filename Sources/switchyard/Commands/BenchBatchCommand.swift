import CSystem
import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring

#if canImport(Glibc)
import Glibc
#endif

/// The same job in pandas + scikit-learn: the pipeline is fitted on the training rows first
/// (untimed), then read_csv, predict_proba and to_csv (fsynced, as the batch scorer's output is)
/// are timed. Prints one JSON line.
private let pandasScript = #"""
import json, os, sys, time
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
train_path, input_path, output_path = sys.argv[1:4]
cats = ["region", "product", "channel"]
train = pd.read_csv(train_path)
features = [c for c in train.columns if c not in ("id", "label")]
numbers = [c for c in features if c not in cats]
pipe = Pipeline([("pre", ColumnTransformer([("num", StandardScaler(), numbers), ("cat", OneHotEncoder(handle_unknown="ignore"), cats)])),
                 ("clf", LogisticRegression(max_iter=1000))]).fit(train[features], train["label"])
start = time.perf_counter()
df = pd.read_csv(input_path)
read = time.perf_counter()
p = pipe.predict_proba(df[features])
scored = time.perf_counter()
out = pd.DataFrame({"id": df["id"], "probability_0": p[:, 0], "probability_1": p[:, 1],
                    "label": pipe.classes_[p.argmax(1)], "model_version": "credit@1"})
with open(output_path, "w") as f:
    out.to_csv(f, index=False)
    f.flush()
    os.fsync(f.fileno())
end = time.perf_counter()
print(json.dumps({"seconds": end - start, "read_s": read - start, "score_s": scored - read, "write_s": end - scored}))
"""#

let benchBatchCommand = Command(
    words: ["bench", "batch"],
    summary: "Measure the batch scorer end to end: read CSV, score, write CSV; rows/s and peak RSS",
    options: [
        Option(name: "rows", value: "N", help: "rows in the generated credit file", defaultValue: "1000000"),
        Option(name: "repeat", value: "N", help: "runs; the median is reported", defaultValue: "5"),
        Option(name: "threads", value: "N", help: "parsing and scoring threads of the one-process run", defaultValue: "one per core"),
        Option(name: "workers", value: "N", help: "also run each round split into tasks for N 'batch worker' processes (one thread each, unless --threads), interleaved with the one-process run"),
        Option(name: "split", value: "MB", help: "task size for --workers", defaultValue: "8"),
        Option(name: "dir", value: "DIR", help: "scratch folder (removed afterwards)", defaultValue: "a new folder in /tmp"),
        Option(name: "python", value: "PATH", help: "the Python with pandas and scikit-learn for the comparison ('none' leaves it out)", defaultValue: "python3"),
    ],
    details: """
        Writes a credit fixture CSV, trains and registers a credit model in a scratch
        SWITCHYARD_HOME, then runs 'switchyard batch run --once' as a child process for
        each repetition, timing it from spawn to exit (process start, ledger, hashing the
        input, reading, parsing, scoring, writing and fsyncing the output included) and
        reading its peak RSS from the kernel (wait4).

        Each round also runs the same job in pandas + scikit-learn in a child process,
        alternating with Switchyard's: the same model kind fitted on the same training rows
        (untimed), then read_csv, predict_proba and to_csv with an fsync, timed inside the
        script. The ratio is pandas' median time over Switchyard's (whose time includes its
        process start); both peak RSS figures come from the kernel.

        With --workers N, each round also runs the job cut into tasks (batch run --once --split
        MB) for N 'batch worker' processes on the same SWITCHYARD_HOME, timed from the planner's
        spawn to its exit (planning, the workers' claims and scoring, and publishing included),
        and checks its output equals the one-process run's byte for byte. The workers are started
        once, before the first round, and run between rounds as they do in production (idle, they
        wait on the ledger's announcements and use no CPU); the first round includes their
        loading the model.
        """,
    run: { args in
        let rows = try args.integer("rows", range: 1000...1_000_000_000) ?? 1_000_000
        let repeats = try args.integer("repeat", range: 1...50) ?? 5
        let threadsText = args.string("threads")
        let workers = threadsText == nil || threadsText == "one per core" ? nil : try args.integer("threads", range: 1...256)
        let workerProcesses = try args.integer("workers", range: 1...64)
        let splitMB = try args.double("split") ?? 8
        guard splitMB >= 0.1, splitMB <= 100_000 else { throw UsageError("--split takes megabytes per task, from 0.1, got \(splitMB)") }
        let dirText = args.string("dir")
        let scratch: URL
        if let dirText, dirText != "a new folder in /tmp" {
            scratch = URL(fileURLWithPath: dirText).appendingPathComponent("switchyard-bench-batch-\(getpid())")
        } else {
            scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-bench-batch-\(getpid())")
        }
        let input = scratch.appendingPathComponent("in"), output = scratch.appendingPathComponent("out")
        let homeURL = scratch.appendingPathComponent("home")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }

        let file = input.appendingPathComponent("credit.csv")
        writeError("writing \(rows) credit rows to \(file.path) …")
        try writeCreditFixture(rows: rows, seed: 11, format: "csv", to: file.path)
        let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.int64Value ?? 0
        writeError("training and registering the credit model …")
        let registry = try registryCall { () throws(RegistryError) in try ModelRegistry(home: Home(homeURL)) }
        let trainingRows = scratch.appendingPathComponent("train.csv")
        let document = try trainBenchDocument(writing: trainingRows.path)
        let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        _ = try registryCall { () throws(RegistryError) in
            try registry.promote(model: registration.version.model, version: registration.version.version, alias: "production", who: "bench")
        }

        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        // The input is complete: no settle wait (--settle 0).
        var childArgs = ["batch", "run", "--once", "--settle", "0", "--input", input.path, "--output", output.path, "--model", "credit@production"]
        if let workers { childArgs += ["--threads", "\(workers)"] }
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_HOME"] = homeURL.path
        print("input: \(rows) rows, \(String(format: "%.1f", Double(size) / 1e6)) MB CSV; \(ProcessInfo.processInfo.activeProcessorCount) cores; threads: \(workers.map(String.init) ?? "one per core")"
              + (workerProcesses.map { "; split: \($0) worker processes, \(splitMB) MB tasks" } ?? ""))
        let python = args.string("python") ?? "python3"
        var pandasProblem: String? = python == "none" ? "--python none" : nil
        var rates: [Double] = [], seconds: [Double] = [], peaks: [Int] = []
        var pandasSeconds: [Double] = [], pandasPeaks: [Int] = []
        var splitSeconds: [Double] = [], splitPeaks: [Int] = []
        let splitOutput = scratch.appendingPathComponent("out-split")
        let splitWorkers = try workerProcesses.map {
            try SplitWorkers(executable, count: $0, threads: workers ?? 1, environment: environment, scratch: scratch)
        }
        for r in 1...repeats {
            let measured = try spawnMeasured(executable, childArgs, environment: environment)
            guard measured.status == 0 else {
                throw CommandError("run \(r) exited with status \(measured.status): \(measured.output)")
            }
            let rate = Double(rows) / measured.seconds
            rates.append(rate)
            seconds.append(measured.seconds)
            peaks.append(measured.maxRSSKiB)
            print(String(format: "  run %d: switchyard %.3f s  %@ rows/s  %.1f MB/s  peak RSS %.1f MiB", r, measured.seconds,
                         formatCount(rate), Double(size) / measured.seconds / 1e6, Double(measured.maxRSSKiB) / 1024))
            if let splitWorkers, let n = workerProcesses {
                let split = try splitWorkers.round(executable, splitMB: splitMB, input: input, output: splitOutput, environment: environment)
                splitSeconds.append(split.seconds)
                splitPeaks.append(split.plannerRSSKiB)
                print(String(format: "  run %d: split      %.3f s  %@ rows/s  over %d workers (tasks %@); peak RSS planner %.1f MiB", r, split.seconds,
                             formatCount(Double(rows) / split.seconds), n, split.tasks, Double(split.plannerRSSKiB) / 1024))
                let same = FileManager.default.contentsEqual(atPath: output.appendingPathComponent("credit.csv").path, andPath: splitOutput.appendingPathComponent("credit.csv").path)
                guard same else { throw CommandError("round \(r): the split run's output differs from the one-process run's") }
            }
            guard pandasProblem == nil else { continue }
            let pandasOutput = scratch.appendingPathComponent("pandas.csv").path
            let theirs = runPython(python, pandasScript, [trainingRows.path, file.path, pandasOutput])
            unlink(pandasOutput)
            guard let json = theirs.json, case .number(let t)? = json["seconds"] else {
                pandasProblem = "\(theirs.problem ?? "no seconds in its answer") (it needs pandas and scikit-learn)"
                continue
            }
            pandasSeconds.append(t)
            pandasPeaks.append(theirs.maxRSSKiB)
            let part = { (key: String) -> Double in if case .number(let x)? = json[key] { x } else { .nan } }
            print(String(format: "  run %d: pandas     %.3f s  %@ rows/s (read %.2f, score %.2f, write %.2f)  peak RSS %.1f MiB", r, t,
                         formatCount(Double(rows) / t), part("read_s"), part("score_s"), part("write_s"), Double(theirs.maxRSSKiB) / 1024))
        }
        let median = rates.sorted()[rates.count / 2]
        let spread = (rates.max()! - rates.min()!) / median * 100
        print(String(format: "median %@ rows/s (spread %.0f%% of the median, min %@, max %@); peak RSS max %.1f MiB",
                     formatCount(median), spread, formatCount(rates.min()!), formatCount(rates.max()!), Double(peaks.max()!) / 1024))
        if pandasSeconds.isEmpty {
            print("pandas comparison left out: \(pandasProblem ?? "no run")")
        } else {
            let ours = seconds.sorted()[seconds.count / 2], theirs = pandasSeconds.sorted()[pandasSeconds.count / 2]
            let ratios = zip(seconds, pandasSeconds).map { $1 / $0 }.sorted()
            print(String(format: "pandas + scikit-learn: median %.3f s [%.3f–%.3f], peak RSS max %.0f MiB; switchyard is %.1f× faster (medians; per round %.1f×–%.1f×)",
                         theirs, pandasSeconds.min()!, pandasSeconds.max()!, Double(pandasPeaks.max()!) / 1024, theirs / ours, ratios.first!, ratios.last!))
        }
        if !splitSeconds.isEmpty, let n = workerProcesses {
            let workersPeak = splitWorkers?.stop() ?? 0
            let ours = seconds.sorted()[seconds.count / 2], split = splitSeconds.sorted()[splitSeconds.count / 2]
            let ratios = zip(seconds, splitSeconds).map { $0 / $1 }.sorted()
            print(String(format: "split over %d workers: median %.3f s [%.3f–%.3f], %@ rows/s, %.2f× the one-process rows/s (medians; per round %.2f×–%.2f×); outputs identical; peak RSS planner %.1f MiB, workers %.1f MiB",
                         n, split, splitSeconds.min()!, splitSeconds.max()!, formatCount(Double(rows) / split), ours / split, ratios.first!, ratios.last!,
                         Double(splitPeaks.max()!) / 1024, Double(workersPeak) / 1024))
        }
        // The output must hold every row: a header plus one line per row.
        let outputFile = output.appendingPathComponent("credit.csv")
        let lines = try countLines(outputFile.path)
        guard lines == rows + 1 else { throw CommandError("the output has \(lines) lines, expected \(rows + 1)") }
        return Exit.ok
    })

/// The `batch worker` processes of the split rounds: started once, before the first round, and
/// left running between rounds, as workers run in production (a long-lived service that keeps
/// the model it scored with last); the first round includes their loading it.
private final class SplitWorkers {
    let job = "bench-split"
    private var pids: [pid_t] = []
    private var logs: [String] = []
    private var done: [Int]

    init(_ executable: String, count: Int, threads: Int, environment: [String: String], scratch: URL) throws {
        done = Array(repeating: 0, count: count)
        for i in 0..<count {
            let log = scratch.appendingPathComponent("worker-\(i).log").path
            logs.append(log)
            pids.append(try spawnLogged(executable, ["batch", "worker", "--job", job, "--threads", "\(threads)"], environment: environment, log: log, append: false))
        }
        // Every worker is up (it has printed its first line) before a clock starts.
        for log in logs {
            for _ in 0..<3000 where ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").isEmpty { usleep(2_000) }
        }
    }

    deinit { _ = stop() }

    /// One round: `batch run --once --split` timed from spawn to exit; the tasks each worker did
    /// in it.
    func round(_ executable: String, splitMB: Double, input: URL, output: URL, environment: [String: String]) throws -> (seconds: Double, plannerRSSKiB: Int, tasks: String) {
        try? FileManager.default.removeItem(at: output)
        let measured = try spawnMeasured(executable, ["batch", "run", "--once", "--settle", "0", "--input", input.path, "--output", output.path,
                                                      "--model", "credit@production", "--job", job, "--split", "\(splitMB)"], environment: environment)
        guard measured.status == 0 else { throw CommandError("the split run exited with status \(measured.status): \(measured.output)") }
        // A worker says "done task …" once the ledger has it, so the planner may exit before the
        // last such line is out: wait until each claim has its line (2 s at most).
        var totals = done
        for _ in 0..<1000 {
            let lines = logs.map { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").split(separator: "\n") }
            totals = lines.map { $0.filter { $0.hasPrefix("done task") }.count }
            if zip(lines, totals).allSatisfy({ $0.filter { $0.hasPrefix("claimed task") }.count == $1 }) { break }
            usleep(2_000)
        }
        let tasks = zip(totals, done).map { String($0 - $1) }
        done = totals
        return (measured.seconds, measured.maxRSSKiB, tasks.joined(separator: "+"))
    }

    /// Stops the workers (SIGTERM, waited for); their largest peak RSS.
    func stop() -> Int {
        var peak = 0
        for pid in pids {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            var usage = rusage()
            while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
            peak = max(peak, Int(usage.ru_maxrss))
        }
        for log in logs { unlink(log) }
        pids = []
        logs = []
        return peak
    }
}

/// Runs `python -c script arguments…` (`python` looked up on PATH) to its end and reads the JSON
/// line it prints last: that JSON and the child's peak RSS, or what went wrong, for the report.
func runPython(_ python: String, _ script: String, _ arguments: [String]) -> (json: JSONValue?, maxRSSKiB: Int, problem: String?) {
    let path = python.hasPrefix("/") ? python : (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        .map { "\($0)/\(python)" }.first { FileManager.default.isExecutableFile(atPath: $0) } ?? python
    let run: (status: Int32, seconds: Double, maxRSSKiB: Int, output: String)
    do { run = try spawnMeasured(path, ["-c", script] + arguments, environment: ProcessInfo.processInfo.environment) } catch {
        return (nil, 0, (error as? CommandError)?.message ?? "cannot start \(python): \(error)")
    }
    guard run.status == 0, let line = run.output.split(separator: "\n").last, let json = try? JSONValue.parse(String(line)) else {
        return (nil, run.maxRSSKiB, "\(python) failed: \(run.output.split(separator: "\n").last ?? "exit \(run.status)")")
    }
    return (json, run.maxRSSKiB, nil)
}

/// Runs a program to its end: exit status, wall seconds, peak RSS (KiB) and its output.
func spawnMeasured(_ path: String, _ arguments: [String], environment: [String: String]) throws -> (status: Int32, seconds: Double, maxRSSKiB: Int, output: String) {
    let log = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-spawn-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
    defer { unlink(log.path) }
    let start = csystem_monotonic_ns()
    let pid = try spawnLogged(path, arguments, environment: environment, log: log.path, append: false)
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let seconds = Double(csystem_monotonic_ns() - start) / 1e9
    let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    let exitStatus: Int32 = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    return (exitStatus, seconds, Int(usage.ru_maxrss), output)
}

/// Starts `path ARGUMENTS` with standard output and error going to `log`
/// (appended to, or truncated); returns its pid. Nothing else is inherited, but for
/// `lifeline`'s read end as descriptor 3: the child then stops when this process dies.
func spawnLogged(
    _ path: String, _ arguments: [String], environment: [String: String], log: String, append: Bool, lifeline: Lifeline? = nil
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var environment = environment
    if let lifeline {
        posix_spawn_file_actions_adddup2(&actions, lifeline.readEnd, 3)  // dup2 clears close-on-exec
        csystem_spawn_add_closefrom(&actions, 4)
        environment[parentLifelineVariable] = "3"
    } else {
        csystem_spawn_add_closefrom(&actions, 3)
        environment[parentLifelineVariable] = nil
    }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in argv { free(p) }
        for p in envp { free(p) }
    }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
    guard rc == 0 else { throw CommandError("cannot start \(path): \(String(cString: strerror(rc)))") }
    return pid
}

/// Counts line ends in a file, reading it in pieces.
func countLines(_ path: String) throws -> Int {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw CommandError("cannot read \(path)") }
    defer { try? handle.close() }
    var count = 0
    while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
        data.withUnsafeBytes { for b in $0 where b == 0x0A { count += 1 } }
    }
    return count
}
