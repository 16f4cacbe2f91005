import Foundation
import Registry
import Scoring

#if canImport(Glibc)
import Glibc
#endif

/// Exit statuses (sysexits.h where one fits).
enum Exit {
    static let ok: Int32 = 0
    static let failure: Int32 = 1
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    /// A batch job another process is running (EX_TEMPFAIL).
    static let busy: Int32 = 75
}

let version = "0.1.0"

func topLevelHelp() -> String {
    var out = """
        switchyard \(version) — one model, deployed three ways, operated from one terminal.

        Usage: switchyard COMMAND [arguments] [options]

        Commands:

        """
    let width = (commands.map(\.path.count).max() ?? 0) + 4
    for c in commands {
        out += "  " + c.path.padding(toLength: width, withPad: " ", startingAt: 0) + c.summary + "\n"
    }
    out += """

        Quick start:
          switchyard fixtures credit --rows 20000 --seed 7 --out credit.csv
          switchyard train --data credit.csv --label label --name credit
          switchyard predict credit --json '{"amount": 12000, "term": 36, ...}'

        Models live in SWITCHYARD_HOME (default ./.switchyard).
        'switchyard COMMAND --help' describes each command.

        """
    return out
}

func writeError(_ text: String) {
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

func run(_ argv: [String]) -> Int32 {
    let args = Array(argv.dropFirst())
    if args.isEmpty || args == ["--help"] || args == ["-h"] || args == ["help"] {
        print(topLevelHelp(), terminator: "")
        return args.isEmpty ? Exit.usage : Exit.ok
    }
    if args == ["--version"] {
        print("switchyard \(version)")
        return Exit.ok
    }
    // The longest command path that prefixes the arguments.
    let matched = commands
        .filter { args.starts(with: $0.words) }
        .max { $0.words.count < $1.words.count }
    guard let command = matched else {
        let group = commands.filter { $0.words.first == args[0] }
        if !group.isEmpty {
            let sub = args.count > 1 && !args[1].hasPrefix("-") ? "unknown subcommand \"\(args[1])\"" : "needs a subcommand"
            let choices = group.map { $0.words.dropFirst().joined(separator: " ") }.joined(separator: ", ")
            if args.dropFirst().contains("--help") {
                print("switchyard \(args[0]) subcommands:\n" + group.map { "  \($0.path)  — \($0.summary)" }.joined(separator: "\n"))
                return Exit.ok
            }
            writeError("switchyard \(args[0]): \(sub); one of: \(choices)")
            return Exit.usage
        }
        let near = Set(commands.map { $0.words[0] }).min { editDistance($0, args[0]) < editDistance($1, args[0]) }
        let hint = near.flatMap { editDistance($0, args[0]) <= 2 ? " (did you mean \"\($0)\"?)" : nil } ?? ""
        writeError("switchyard: unknown command \"\(args[0])\"\(hint); see 'switchyard --help'")
        return Exit.usage
    }
    let rest = args.dropFirst(command.words.count)
    if rest.contains("--help") || rest.contains("-h") {
        print(command.help, terminator: "")
        return Exit.ok
    }
    do {
        let parsed = try Arguments(command: command, rest)
        return try command.run(parsed)
    } catch let error as UsageError {
        writeError("switchyard \(command.path): \(error.message) (see 'switchyard \(command.path) --help')")
        return Exit.usage
    } catch let error as CommandError {
        writeError("switchyard \(command.path): error: \(error.message)")
        return error.code
    } catch {
        writeError("switchyard \(command.path): error: \(error)")
        return Exit.failure
    }
}

// A parent may have started us with signals blocked (Foundation's Process on Linux spawns
// with the calling thread's mask): unblock them before any thread exists, so SIGINT and
// SIGTERM reach the handlers that stop components cleanly.
var unblocked = sigset_t()
sigemptyset(&unblocked)
pthread_sigmask(SIG_SETMASK, &unblocked, nil)

exitWithParent()
let status = run(CommandLine.arguments)
exit(status)
