import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring
import Components

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
                print(predictionJSON(prediction, scorer, model: version.reference, row: nil).jsonText)
                return Exit.ok
            } catch let error as ScoringError {
                throw CommandError(error.description, code: Exit.dataError)
            }
        }
        return jsonLines(verb: "predict") { record, row in
            predictionJSON(try scorer.predict(json: record, row: row), scorer, model: version.reference, row: row)
        }
    })

/// JSON Lines in, JSON Lines out, one output line per non-blank input line: `answer(record, row)`,
/// or `{"row": N, "error": ...}` for a line that is not JSON or cannot be answered.
private func jsonLines(verb: String, _ answer: (JSONValue, Int) throws -> JSONValue) -> Int32 {
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
            writer.value(try answer(try JSONValue.parse(line), row))
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
        writeError("switchyard \(verb): \(failed) of \(row) records could not be \(verb == "explain" ? "explained" : "scored") (see their \"error\" lines)")
        return Exit.dataError
    }
    return Exit.ok
}

let explainCommand = Command(
    words: ["explain"],
    summary: "Why a record gets its score: each field's contribution to the model's margin",
    positionals: ["NAME[@VERSION|@ALIAS]"],
    options: [
        Option(name: "json", value: "RECORD", help: "one record: a JSON object (by field name) or array (schema order)"),
        Option(name: "format", value: "table|json", help: "how to print one record's explanation", defaultValue: "table"),
    ] + registryOptions,
    details: """
        A logistic regression's margin (the log-odds of the second class, or each class's
        margin for a multiclass model) is its intercept plus one term per field; a tree
        ensemble's is its expected value plus each field's exact TreeSHAP contribution (as
        XGBoost's pred_contribs and LightGBM's pred_contrib compute it). Base plus the
        contributions is the margin; the probability follows from it. A regression's margin
        is its predicted value itself.

        Without --json, reads JSON Lines from standard input and writes one JSON line per
        record: the prediction with "explanation": [{"class", "base", "margin",
        "contributions": {field: value}}], or {"row": N, "error": ...}.

        Example:
          switchyard explain credit --json '{"amount": 12000, "term": 36, ...}'
        """,
    run: { args in
        let (version, scorer) = try loadScorer(try openStore(args), args.positional(0)!)
        guard scorer.explainable else {
            throw CommandError("\(version.reference) cannot be explained: its trees carry no node covers (imported before explanations existed); import it again")
        }
        guard let text = args.string("json") else {
            return jsonLines(verb: "explain") { record, row in
                explanationJSON(try scorer.explain(json: record, row: row), scorer: scorer, model: version.reference, row: row)
            }
        }
        let format = args.string("format") ?? "table"
        guard format == "table" || format == "json" else { throw UsageError("--format is table or json, got \"\(format)\"") }
        let record: JSONValue
        do { record = try JSONValue.parse(text) } catch { throw CommandError("--json: \(error)", code: Exit.dataError) }
        let explanation: Explanation
        do { explanation = try scorer.explain(json: record) } catch let error as ScoringError {
            throw CommandError(error.description, code: Exit.dataError)
        }
        if format == "json" {
            print(explanationJSON(explanation, scorer: scorer, model: version.reference, row: nil).jsonText)
        } else {
            print(explanationTable(explanation, scorer: scorer, record: record, model: version.reference), terminator: "")
        }
        return Exit.ok
    })

func explanationJSON(_ e: Explanation, scorer: Scorer, model: String, row: Int?) -> JSONValue {
    guard case .object(var object) = predictionJSON(e.prediction, scorer, model: model, row: row) else { return .null }
    object.append("explanation", e.json(scorer))
    return .object(object)
}

/// The contributions as a table for a person: largest first, with a bar, per margin.
func explanationTable(_ e: Explanation, scorer: Scorer, record: JSONValue, model: String) -> String {
    let p = e.prediction
    var out = p.value.map { "\(model): \(scorer.target ?? "value") = \(JSONWriter.numberText($0))\n" }
        ?? "\(model): \(p.label) (p = \(String(format: "%.4f", p.probabilities[p.labelIndex])))\n"
    for k in e.base.indices {
        let what = scorer.marginDescription(k)
        out += "\n\(what): base \(String(format: "%+.4f", e.base[k])), margin \(String(format: "%+.4f", e.margins[k]))\n"
        let order = e.contributions[k].indices.sorted { abs(e.contributions[k][$0]) > abs(e.contributions[k][$1]) }
        let largest = max(order.first.map { abs(e.contributions[k][$0]) } ?? 0, 1e-12)
        let nameWidth = scorer.fieldNames.map(\.count).max() ?? 0
        for f in order {
            let name = scorer.fieldNames[f]
            let value: String
            switch record {
            case .object: value = record[name].map { $0 == .null ? "(missing)" : $0.excerpt } ?? "(missing)"
            case .array(let a): value = f < a.count ? a[f].excerpt : ""
            default: value = ""
            }
            let c = e.contributions[k][f]
            let bar = String(repeating: c >= 0 ? "+" : "-", count: Int((abs(c) / largest * 20).rounded()))
            out += "  " + name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                + String(value.prefix(14)).padding(toLength: 14, withPad: " ", startingAt: 0) + "  "
                + String(format: "%+.4f", c) + "  " + bar + "\n"
        }
    }
    return out
}

let predictionsShowCommand = Command(
    words: ["predictions", "show"],
    summary: "What the service answered: a logged prediction by request id, or by --key",
    positionals: ["REQUEST-ID?"],
    options: [
        Option(name: "key", value: "VALUE", help: "the records logged with this key (serve --log-key FIELD), newest first"),
        Option(name: "limit", value: "N", help: "at most this many", defaultValue: "20"),
    ],
    details: """
        Searches the prediction log that serve keeps under SWITCHYARD_HOME/predictions (see
        'switchyard serve --help'). Prints one JSON line per logged record: request_id, row, at,
        model, sha256, key, record, label and probabilities. A running serve answers the same
        from its own machine: GET /v1/predictions/ID or /v1/predictions?key=VALUE (scope operate).

        Example:
          switchyard predictions show 5f3a9c1e-42
          switchyard predictions show --key C-1042
        """,
    run: { args in
        let id = args.positional(0)
        let key = args.string("key")
        guard id != nil || key != nil else { throw UsageError("give a REQUEST-ID or --key VALUE") }
        let limit = try args.integer("limit", range: 1...100_000) ?? 20
        let folder = Home.fromEnvironment().url.appendingPathComponent("predictions")
        guard FileManager.default.fileExists(atPath: folder.path) else {
            throw CommandError("no prediction log in \(folder.path): serve keeps one there (--log-predictions)", code: Exit.failure)
        }
        let found = PredictionLog.find(in: folder, requestID: id, key: id == nil ? key : nil, limit: limit)
        guard !found.isEmpty else {
            throw CommandError(id.map { "no logged prediction for request \($0) (a sampled log keeps only some requests)" } ?? "no logged prediction with key \(key ?? "")")
        }
        for value in found { print(value.jsonText) }
        return Exit.ok
    })
