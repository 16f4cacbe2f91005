import Foundation
import Scoring

/// A subcommand: its words (`["models", "promote"]`), usage, options, and what it runs.
struct Command: Sendable {
    var words: [String]
    var summary: String
    /// Positional arguments, e.g. "NAME@VERSION"; a trailing "?" marks one optional.
    var positionals: [String] = []
    var options: [Option] = []
    var details: String = ""
    var run: @Sendable (Arguments) throws -> Int32

    var path: String { words.joined(separator: " ") }

    var usageLine: String {
        var parts = ["switchyard", path]
        for p in positionals { parts.append(p.hasSuffix("?") ? "[\(p.dropLast())]" : p) }
        for o in options where o.required { parts.append("--\(o.name) \(o.value ?? "")".trimmingCharacters(in: .whitespaces)) }
        if options.contains(where: { !$0.required }) { parts.append("[options]") }
        return parts.joined(separator: " ")
    }

    var help: String {
        var out = "\(summary)\n\nUsage: \(usageLine)\n"
        if !options.isEmpty {
            out += "\nOptions:\n"
            let rows = options.map { o -> (String, String) in
                let left = "--\(o.name)" + (o.value.map { " \($0)" } ?? "")
                var right = o.help
                if let d = o.defaultValue { right += " (default: \(d))" }
                return (left, right)
            }
            let width = min(28, (rows.map(\.0.count).max() ?? 0) + 2)
            for (left, right) in rows {
                out += "  " + left.padding(toLength: max(width, left.count + 2), withPad: " ", startingAt: 0) + right + "\n"
            }
            out += "  " + "--help".padding(toLength: width, withPad: " ", startingAt: 0) + "show this help\n"
        }
        if !details.isEmpty { out += "\n" + details + "\n" }
        return out
    }
}

/// One `--name [VALUE]` option. Without `value` it is a flag.
struct Option: Sendable {
    var name: String
    var value: String?
    var help: String
    var defaultValue: String? = nil
    var required = false
    /// May be given more than once.
    var repeatable = false
}

/// A command line that does not fit the command: exit 64 with one line.
struct UsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// An operation that failed for a reason the user can act on: exit 1 (or `code`).
struct CommandError: Error {
    var message: String
    var code: Int32 = 1
    init(_ message: String, code: Int32 = 1) {
        self.message = message
        self.code = code
    }
}

/// Parsed arguments of one command.
struct Arguments {
    let command: Command
    var values: [String: [String]] = [:]
    var positionals: [String] = []

    init(command: Command, _ argv: ArraySlice<String>) throws(UsageError) {
        self.command = command
        var rest = argv
        while let word = rest.popFirst() {
            if word == "--" {
                positionals.append(contentsOf: rest)
                break
            }
            if word.hasPrefix("--") {
                var name = String(word.dropFirst(2))
                var inline: String?
                if let eq = name.firstIndex(of: "=") {
                    inline = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                guard let option = command.options.first(where: { $0.name == name }) else {
                    let near = command.options.map(\.name).min { editDistance($0, name) < editDistance($1, name) }
                    let hint = near.flatMap { editDistance($0, name) <= 3 ? " (did you mean --\($0)?)" : nil } ?? ""
                    throw UsageError("unknown option --\(name)\(hint)")
                }
                var value = "true"
                if option.value != nil {
                    if let inline {
                        value = inline
                    } else if let next = rest.popFirst() {
                        value = next
                    } else {
                        throw UsageError("--\(name) needs a value: --\(name) \(option.value!)")
                    }
                } else if inline != nil {
                    throw UsageError("--\(name) takes no value")
                }
                if values[name] != nil && !option.repeatable {
                    throw UsageError("--\(name) is given twice")
                }
                values[name, default: []].append(value)
            } else if word.hasPrefix("-") && word.count > 1 && Double(word) == nil {
                throw UsageError("unknown option \(word); options are spelled --name")
            } else {
                positionals.append(word)
            }
        }
        let required = command.positionals.filter { !$0.hasSuffix("?") }
        if positionals.count < required.count {
            throw UsageError("missing \(required[positionals.count])")
        }
        // A last positional ending in "..." takes every word left.
        if positionals.count > command.positionals.count, command.positionals.last?.hasSuffix("...") != true {
            throw UsageError("unexpected argument \"\(positionals[command.positionals.count])\"")
        }
        for option in command.options where option.required && values[option.name] == nil {
            throw UsageError("missing --\(option.name) \(option.value ?? "")")
        }
    }

    func positional(_ i: Int) -> String? { i < positionals.count ? positionals[i] : nil }

    func string(_ name: String) -> String? { values[name]?.last ?? command.options.first { $0.name == name }?.defaultValue }

    func strings(_ name: String) -> [String] { values[name] ?? [] }

    func flag(_ name: String) -> Bool { values[name] != nil }

    func require(_ name: String) throws(UsageError) -> String {
        guard let v = string(name) else { throw UsageError("missing --\(name)") }
        return v
    }

    func double(_ name: String) throws(UsageError) -> Double? {
        guard let text = string(name) else { return nil }
        guard let v = Double(text), v.isFinite else { throw UsageError("--\(name) expects a number, got \"\(text)\"") }
        return v
    }

    /// A duration in seconds: above 0 and at most a day.
    func seconds(_ name: String, zeroAllowed: Bool = false) throws(UsageError) -> Double? {
        guard let v = try double(name) else { return nil }
        guard zeroAllowed ? v >= 0 : v > 0, v <= 86_400 else {
            throw UsageError("--\(name) must be \(zeroAllowed ? "from" : "more than") 0 and at most 86400 seconds, got \(v)")
        }
        return v
    }

    func integer(_ name: String, range: ClosedRange<Int>? = nil) throws(UsageError) -> Int? {
        guard let text = string(name) else { return nil }
        guard let v = Int(text.replacingOccurrences(of: "_", with: "")) else {
            throw UsageError("--\(name) expects a whole number, got \"\(text)\"")
        }
        if let range, !range.contains(v) {
            throw UsageError("--\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(v)")
        }
        return v
    }

    func choice(_ name: String, _ allowed: [String]) throws(UsageError) -> String? {
        guard let v = string(name) else { return nil }
        guard allowed.contains(v) else {
            throw UsageError("--\(name) must be one of \(allowed.joined(separator: ", ")), got \"\(v)\"")
        }
        return v
    }
}
