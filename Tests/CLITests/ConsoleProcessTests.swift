import CSystem
import Foundation
import HTTP
import Scoring
import Testing

/// tmux, driven by the test: a server and session of its own (`-L`), keys in, the screen out.
struct Tmux {
    let session = "switchyard-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    /// Runs a tmux command and returns its output. posix_spawn and waitpid rather than
    /// Foundation's Process: the server `new-session` daemonizes would inherit the
    /// descriptors Process watches and keep waitUntilExit from ever returning.
    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(session)-\(UInt32.random(in: 0...UInt32.max)).out")
        defer { unlink(log.path) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        csystem_spawn_add_closefrom(&actions, 3)
        let argv = (["tmux", "-L", session] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        // The test's threads block most signals, and a spawned process inherits the mask: the tmux
        // server would then never see SIGCHLD or SIGHUP, and kill-server would leave it running.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/usr/bin/tmux", &actions, &attributes, argv, environ)
        guard rc == 0 else { throw CLITestError("cannot start tmux: \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    }

    func screen() throws -> String { try run(["capture-pane", "-t", session, "-p"]) }
    func keys(_ keys: String...) throws { try run(["send-keys", "-t", session] + keys) }

    /// Polls the screen until `predicate` holds (20 s at most); the last screen either way.
    func wait(_ what: String, _ predicate: (String) -> Bool) throws -> String {
        var text = ""
        for _ in 0..<200 {
            text = try screen()
            if predicate(text) { return text }
            usleep(100_000)
        }
        Issue.record("waited 20 s for \(what); the screen:\n\(text)")
        return text
    }
}

@Suite struct ConsoleProcessTests {
    /// The real console in tmux against real serve, batch and stream processes: live
    /// numbers move, a batch run triggered from the console finishes, a swap shows the
    /// new version, a stream pauses; q leaves no console behind.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux")))
    func consoleWatchesAndActsOnRealComponents() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        let input = root.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("events"), withIntermediateDirectories: true)
        let sample = fixtures.appendingPathComponent("credit-sample.csv").path
        #expect(try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--promote", "production"], home: home).status == 0)
        #expect(try switchyard(["train", "--data", sample, "--label", "label", "--name", "credit", "--C", "0.1"], home: home).status == 0)
        #expect(try switchyard(["fixtures", "credit", "--rows", "2000", "--seed", "4", "--out", input.appendingPathComponent("a.csv").path], home: home).status == 0)
        let key = try switchyard(["keys", "create", "--scope", "admin"], home: home).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let serve = try RunningSwitchyard(["serve", "--model", "credit@production", "--port", "0", "--open", "--threads", "1"], home: home)
        let batch = try RunningSwitchyard(["batch", "--input", input.path, "--output", root.appendingPathComponent("out").path,
                                           "--model", "credit@production", "--port", "0"], home: home)
        let stream = try RunningSwitchyard(["stream", "--source", "dir:\(root.appendingPathComponent("events").path)",
                                            "--sink", "dir:\(root.appendingPathComponent("scored").path)", "--model", "credit@production", "--port", "0"], home: home)
        let producer = try RunningSwitchyard(["stream", "produce", "--to", "dir:\(root.appendingPathComponent("events").path)", "--rate", "100", "--count", "100000"], home: home)
        defer { for p in [serve, batch, stream, producer] { p.kill(SIGTERM) } }
        _ = try batch.port()
        _ = try stream.port()
        let servePort = try serve.servePort()
        // Light load on serve while the console watches.
        let port = servePort
        let load = Thread {
            let client = HTTPClient(port: port)
            for _ in 0..<400 {
                _ = try? client.request("POST", "/score", headers: [("Content-Type", "application/json")],
                                        body: Array(#"{"data": [[12042.41,36,18.19,14703.84,55,19.3,1.0,2,0,8,0.531,724,"east","student","branch"]]}"#.utf8))
                usleep(25_000)
            }
        }
        load.start()

        let tmux = Tmux()
        let command = "SWITCHYARD_HOME='\(home.path)' '\(switchyardBinary.path)' console --key \(key)"
        try tmux.run(["new-session", "-d", "-s", tmux.session, "-x", "100", "-y", "30", command])
        defer { _ = try? tmux.run(["kill-server"]) }
        var screen = try tmux.wait("three live components") {
            $0.contains("3 components") && $0.contains("serving") && $0.range(of: #"in (9[0-9]|10[0-9])/s"#, options: .regularExpression) != nil
        }
        screen = try tmux.wait("a non-zero request rate") { $0.range(of: #"req/s [1-9]"#, options: .regularExpression) != nil }
        #expect(screen.contains("credit@1"))

        // Trigger a batch run (the batch panel is first and selected) and see it finish.
        try tmux.keys("t")
        screen = try tmux.wait("the run to finish") { $0.contains("runs: 1 ok") }
        // Swap serve (second panel) to version 2: the dialog shows from → to; y confirms.
        try tmux.keys("j", "s", "2", "Enter")
        screen = try tmux.wait("the swap dialog") { $0.contains("Swap serve") && $0.contains("credit@1") && $0.contains("→ credit@2") }
        try tmux.keys("y")
        screen = try tmux.wait("serve on credit@2") { $0.contains("serve") && $0.contains("credit@2  serving") }
        // l: serve's log, following it — its startup line and the swap just made are in it.
        try tmux.keys("l")
        _ = try tmux.wait("serve's log") { $0.contains("log of serve") && $0.contains("serving credit@1 on http://") && $0.contains("model: swapped credit@1") }
        try tmux.keys("Escape")
        _ = try tmux.wait("the overview again") { !$0.contains("log of serve") && $0.contains("credit@2  serving") }
        // Pause the stream by a command that names it, typed with Tab completion: ":pau⇥ st⇥" is
        // ":pause stream" (the kind and the stream's id share "stream"), which addresses the only stream.
        try tmux.keys(":", "p", "a", "u", "Tab", "s", "t", "Tab")
        _ = try tmux.wait("the completed command") { $0.contains(":pause stream") }
        try tmux.keys("Enter")
        _ = try tmux.wait("the pause dialog") { $0.contains("Pause stream") }
        try tmux.keys("y")
        screen = try tmux.wait("the stream paused") { $0.contains("paused") && $0.contains("PAUSED") }
        // Predict (support staff): the form for serve's model; Enter sends it to serve and the
        // embedded scorer, and the verdict says whether they agree.
        try tmux.keys("0", "k", "5")
        _ = try tmux.wait("the predict form") { $0.contains("Predict with credit@2") && $0.contains("> amount") }
        try tmux.keys("Enter")
        screen = try tmux.wait("the parity verdict") { $0.contains("parity: equal within 1e-9") }
        #expect(screen.contains("embedded credit@2"))
        // The batch view lists the finished run; the models view moves the production alias.
        try tmux.keys("2")
        _ = try tmux.wait("the run history") { $0.contains("RUN   STATUS") && $0.contains("succeeded") }
        // Enter opens the selected run whole; End and Home move in it; Esc closes it.
        try tmux.keys("Home", "Enter")
        _ = try tmux.wait("the run's whole record") { $0.contains("run 1 (Esc closes)") && $0.contains("status succeeded") && $0.contains("rows read ") }
        try tmux.keys("Escape")
        _ = try tmux.wait("the run history again") { $0.contains("RUN   STATUS") && !$0.contains("(Esc closes)") }
        try tmux.keys("4")
        _ = try tmux.wait("the models view") { $0.contains("Audit log") && $0.contains("credit@2") }
        try tmux.keys("P")
        _ = try tmux.wait("the promote dialog") { $0.contains("Point credit@production: v1") && $0.contains("→ v2") }
        try tmux.keys("y")
        screen = try tmux.wait("production on v2") { $0.contains("credit@production: v1 → v2") }
        // The events view lists the operator's actions.
        try tmux.keys("6")
        screen = try tmux.wait("actions in the events view") { $0.contains("console") && $0.contains("swap serve") }
        try tmux.keys("q")
        var sessions = ""
        for _ in 0..<2000 {  // until the session ends (20 s only fail a console that does not quit)
            sessions = (try? tmux.run(["list-sessions"])) ?? ""
            if !sessions.contains(tmux.session) { break }
            usleep(10_000)
        }
        #expect(!sessions.contains(tmux.session), "q ends the console (and its tmux session)")
    }
}
