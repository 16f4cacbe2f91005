import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring

let predictCommand = Command(
    words: ["predict"],
    summary: "Score records with the embedded scorer: one with --json, or JSON Lines on standard input",
    positionals: ["NAME[@VERSION|@ALIAS]"],
    options: [
        Option(name: "json", value: "RECORD", help: "one record: a JSON object (by field name) or array (schema order)"),
    ] + registryOptions,
    details: """
        Without --json, reads one record a line from standard input and writes one
        JSON line per input line, in order: the prediction, or {"row": N, "error": ...}
        for a line that cannot be scored (blank lines are skipped). The exit status
        is 65 when any line failed. A bare NAME means NAME@production, or the latest
        version when there is no production alias.

        Example:
          switchyard predict credit@production --json '{"amount": 12000, ...}'
          switchyard fixtures credit --rows 5 --out - --format jsonl | switchyard predict credit
        """,
    run: { args in
        let (version, scorer) = try loadScorer(try openStore(args), args.positional(0)!)
        if let text = args.string("json") {
            let record: JSONValue
            do { record = try JSONValue.parse(text) } catch { throw CommandError("--json: \(error)", code: Exit.dataError) }
            do {
                let prediction = try scorer.predict(json: record)
                print(predictionJSON(prediction, classes: scorer.classes, model: version.reference, row: nil).jsonText)
                return Exit.ok
            } catch let error as ScoringError {
                throw CommandError(error.description, code: Exit.dataError)
            }
        }
        return predictLines(scorer: scorer, model: version.reference)
    })

/// JSON Lines in, JSON Lines out, one output line per non-blank input line.
private func predictLines(scorer: Scorer, model: String) -> Int32 {
    var failed = 0
    var row = 0
    var pending: [UInt8] = []
    var out: [UInt8] = []
    func handle(_ line: ArraySlice<UInt8>) {
        var line = line
        if line.last == 0x0D { line = line.dropLast() }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
        row += 1
        var writer = JSONWriter()
        do {
            let record = try JSONValue.parse(line)
            let prediction = try scorer.predict(json: record, row: row)
            writer.value(predictionJSON(prediction, classes: scorer.classes, model: model, row: row))
        } catch {
            failed += 1
            let message = (error as? ScoringError)?.description ?? "row \(row): \(error)"
            writer.value(.object(JSONObject(["row": .number(Double(row)), "error": .string(message)])))
        }
        out.append(contentsOf: writer.bytes)
        out.append(0x0A)
    }
    let input = FileHandle.standardInput
    while true {
        let chunk = input.availableData
        if chunk.isEmpty { break }
        pending.append(contentsOf: chunk)
        var start = pending.startIndex
        while let newline = pending[start...].firstIndex(of: 0x0A) {
            handle(pending[start..<newline])
            start = newline + 1
        }
        pending.removeSubrange(..<start)
        if out.count > 1 << 16 {
            FileHandle.standardOutput.write(Data(out))
            out.removeAll(keepingCapacity: true)
        }
    }
    if !pending.isEmpty { handle(pending[...]) }
    FileHandle.standardOutput.write(Data(out))
    if failed > 0 {
        writeError("switchyard predict: \(failed) of \(row) records could not be scored (see their \"error\" lines)")
        return Exit.dataError
    }
    return Exit.ok
}
