import CSystem
import ControlProtocol
import Foundation
import Registry
import Scoring

#if canImport(Glibc)
import Glibc
#endif

let benchBatchCommand = Command(
    words: ["bench", "batch"],
    summary: "Measure the batch scorer end to end: read CSV, score, write CSV; rows/s and peak RSS",
    options: [
        Option(name: "rows", value: "N", help: "rows in the generated credit file", defaultValue: "1000000"),
        Option(name: "repeat", value: "N", help: "runs; the median is reported", defaultValue: "5"),
        Option(name: "workers", value: "N", help: "parsing and scoring threads", defaultValue: "one per core"),
        Option(name: "dir", value: "DIR", help: "scratch folder (removed afterwards)", defaultValue: "a new folder in /tmp"),
    ],
    details: """
        Writes a credit fixture CSV, trains and registers a credit model in a scratch
        SWITCHYARD_HOME, then runs 'switchyard batch run --once' as a child process for
        each repetition, timing it from spawn to exit (process start, ledger, hashing the
        input, reading, parsing, scoring, writing and fsyncing the output included) and
        reading its peak RSS from the kernel (wait4).

        For comparison (same machine class, issue 4): pandas + scikit-learn does the same
        1 M-row job at 280,000-320,000 rows/s with a peak RSS near 1 GB.
        """,
    run: { args in
        let rows = try args.integer("rows", range: 1000...1_000_000_000) ?? 1_000_000
        let repeats = try args.integer("repeat", range: 1...50) ?? 5
        let workersText = args.string("workers")
        let workers = workersText == nil || workersText == "one per core" ? nil : try args.integer("workers", range: 1...256)
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
        let document = try trainBenchDocument()
        let registration = try registryCall { () throws(RegistryError) in try registry.register(document, who: "bench") }
        _ = try registryCall { () throws(RegistryError) in
            try registry.promote(model: registration.version.model, version: registration.version.version, alias: "production", who: "bench")
        }

        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var childArgs = ["batch", "run", "--once", "--input", input.path, "--output", output.path, "--model", "credit@production"]
        if let workers { childArgs += ["--workers", "\(workers)"] }
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_HOME"] = homeURL.path
        print("input: \(rows) rows, \(String(format: "%.1f", Double(size) / 1e6)) MB CSV; \(ProcessInfo.processInfo.activeProcessorCount) cores; workers: \(workers.map(String.init) ?? "one per core")")
        var rates: [Double] = []
        var peaks: [Int] = []
        for r in 1...repeats {
            let measured = try spawnMeasured(executable, childArgs, environment: environment)
            guard measured.status == 0 else {
                throw CommandError("run \(r) exited with status \(measured.status): \(measured.output)")
            }
            let rate = Double(rows) / measured.seconds
            rates.append(rate)
            peaks.append(measured.maxRSSKiB)
            print(String(format: "  run %d: %.3f s  %@ rows/s  %.1f MB/s  peak RSS %.1f MiB", r, measured.seconds,
                         formatCount(rate), Double(size) / measured.seconds / 1e6, Double(measured.maxRSSKiB) / 1024))
        }
        let median = rates.sorted()[rates.count / 2]
        let spread = (rates.max()! - rates.min()!) / median * 100
        print(String(format: "median %@ rows/s (spread %.0f%% of the median, min %@, max %@); peak RSS max %.1f MiB",
                     formatCount(median), spread, formatCount(rates.min()!), formatCount(rates.max()!), Double(peaks.max()!) / 1024))
        print(String(format: "vs pandas + scikit-learn (280k-320k rows/s): %.1fx-%.1fx", median / 320_000, median / 280_000))
        // The output must hold every row: a header plus one line per row.
        let outputFile = output.appendingPathComponent("credit.csv")
        let lines = try countLines(outputFile.path)
        guard lines == rows + 1 else { throw CommandError("the output has \(lines) lines, expected \(rows + 1)") }
        return Exit.ok
    })

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
