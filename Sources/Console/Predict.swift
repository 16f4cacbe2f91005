import CSystem
import ControlProtocol
import Foundation
import HTTP
import JSON
import Scoring

/// The Predict view's form: one editable value per schema field, for one serve
/// component and the model version it runs.
package struct PredictForm: Sendable {
    package struct Field: Sendable, Equatable {
        package var name: String
        package var value: String
        package var isNumber: Bool
        /// A category field's allowed values (an unknown one is flagged before sending).
        package var allowed: [String]? = nil

        /// Why the value cannot be sent, if it cannot.
        package var problem: String? {
            guard !value.isEmpty else { return nil }
            if isNumber {
                guard let x = Double(value), x.isFinite else { return "expected a number, got \"\(value)\"" }
                return nil
            }
            guard let allowed, !allowed.contains(value) else { return nil }
            let shown = allowed.count <= 8 ? allowed.joined(separator: ", ") : allowed.prefix(8).joined(separator: ", ") + ", …"
            return "unknown category \"\(value)\"; expected one of \(shown)"
        }
    }

    package var componentURL: String
    package var model: String
    package var fields: [Field]
    package var selected = 0
    /// The text being typed into the selected field; nil when not editing.
    package var editing: String?
    package var result: PredictResult?
    package var sending = false
    /// The values and explained margin of the last record answered, to say what an edit changed.
    package var lastSent: (values: [String], margin: Double)?
    /// The request id or key being typed after `/`; nil when not searching.
    package var searching: String?
    /// A record being pasted (or typed) as JSON, from its `{`; nil when not pasting.
    package var pasting: String?
    /// The last replay of a logged prediction.
    package var replay: ReplayResult?

    /// A form prefilled with the document's example record.
    package init(componentURL: String, model: String, document: ModelDocument) {
        self.componentURL = componentURL
        self.model = model
        let example = document.exampleRecord()
        fields = document.schema.fields.map { field in
            let value: String = switch example[field.name] {
            case .number(let x)?: JSONWriter.numberText(x)
            case .string(let s)?: s
            default: ""
            }
            return Field(name: field.name, value: value, isNumber: field.type == .number, allowed: field.type == .category ? field.values : nil)
        }
    }

    /// Whether the pasted text is a whole JSON object yet: its braces balance outside strings.
    package static func isComplete(_ text: String) -> Bool {
        var depth = 0, inString = false, escaped = false
        for c in text.utf8 {
            if inString {
                if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch c {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        return depth <= 0 && !text.isEmpty
    }

    /// Fills the form from a pasted JSON object; the fields it names are set (null or absent ones
    /// become missing). Returns what to tell the operator, or an error.
    package mutating func paste(_ text: String) -> Result<String, ConsoleError> {
        guard case .object(let object)? = try? JSONValue.parse(text) else {
            return .failure(ConsoleError("the pasted record is not a JSON object: paste {\"field\": value, …}"))
        }
        let known = Set(fields.map(\.name))
        for i in fields.indices {
            switch object[fields[i].name] {
            case .number(let x)?: fields[i].value = JSONWriter.numberText(x)
            case .string(let s)?: fields[i].value = s
            case .bool(let b)?: fields[i].value = b ? "true" : "false"
            default: fields[i].value = ""
            }
        }
        result = nil
        let ignored = object.keys.filter { !known.contains($0) }
        return .success("record pasted" + (ignored.isEmpty ? "" : "; not model inputs, ignored: " + ignored.prefix(6).joined(separator: ", ")))
    }

    /// Takes a replay: its record fills the form, so it can be edited and sent.
    package mutating func receive(replay: ReplayResult) {
        self.replay = replay
        sending = false
        guard replay.error == nil else { return }
        for i in fields.indices { fields[i].value = replay.values[fields[i].name] ?? "" }
        result = nil
        lastSent = nil
    }

    /// Takes an answer for the record whose values were `values`: says what changed since the last one.
    package mutating func receive(_ answer: PredictResult, values: [String]) {
        var answer = answer
        if let margin = answer.margin, let last = lastSent, last.values.count == values.count {
            let changed = values.indices.filter { values[$0] != last.values[$0] }
            if !changed.isEmpty {
                func shown(_ v: String) -> String { v.isEmpty ? "(missing)" : v }
                let what = changed.prefix(2).map { "\(fields[$0].name) \(shown(last.values[$0])) → \(shown(values[$0]))" }.joined(separator: ", ")
                    + (changed.count > 2 ? " and \(changed.count - 2) more" : "")
                answer.change = what + String(format: ": %+.2f ", margin - last.margin) + answer.marginName
            }
        }
        if let margin = answer.margin { lastSent = (values, margin) }
        result = answer
        replay = nil
        sending = false
    }

    /// The record as JSON; an empty value is left out (missing); a number field must parse.
    package func record() -> Result<JSONValue, ConsoleError> {
        var o = JSONObject()
        for field in fields where !field.value.isEmpty {
            if let problem = field.problem { return .failure(ConsoleError("field \"\(field.name)\": \(problem)")) }
            if field.isNumber {
                o.append(field.name, .number(Double(field.value)!))
            } else {
                o.append(field.name, .string(field.value))
            }
        }
        return .success(.object(o))
    }
}

/// Both answers for one record and whether they agree.
package struct PredictResult: Sendable, Equatable {
    package var service: [(String, Double)] = []
    package var serviceLabel = ""
    package var serviceVersion = ""
    package var latencyMilliseconds = 0.0
    package var embedded: [(String, Double)] = []
    package var embeddedLabel = ""
    /// The model predicts a number: `service` and `embedded` hold one entry, "value".
    package var regression = false
    package var verdict = ""
    package var agrees = false
    package var error: String?
    /// The embedded scorer's explanation of the label's margin: each field's value and
    /// contribution, largest first, from `base` to `margin` (nil when the model cannot explain).
    package var contributions: [(field: String, value: String, contribution: Double)] = []
    package var base = 0.0
    package var margin: Double?
    /// "log-odds of 1", "margin of high".
    package var marginName = ""
    /// What the last edit changed: `credit_score 680 → 580: -0.42 log-odds of 1`.
    package var change: String?

    package static func == (a: PredictResult, b: PredictResult) -> Bool {
        a.verdict == b.verdict && a.error == b.error && a.serviceLabel == b.serviceLabel && a.embeddedLabel == b.embeddedLabel
    }
}

/// Sends a record to a serve component (Azure ML `/score`) and scores it with the
/// embedded scorer on the same version from the registry; parity within 1e-9.
package func predictBoth(record: JSONValue, form: PredictForm, key: String?, registry: RegistryAPI?) -> PredictResult {
    var result = PredictResult()
    do throws(ComponentError) {
        let api = try ComponentAPI(url: form.componentURL, key: key)
        let start = csystem_monotonic_ns()
        let score = try api.score(record)
        result.latencyMilliseconds = Double(csystem_monotonic_ns() - start) / 1e6
        result.service = score.probabilities.entries.compactMap { p in p.value.map { (p.name, $0) } }
        result.serviceLabel = score.label
        result.serviceVersion = score.modelVersion.map { "v\($0)" } ?? ""
    } catch {
        result.error = error.unreachable ? "cannot reach \(form.componentURL): \(error.message)" : "serve answered \(error.status): \(error.message)"
        return result
    }
    guard let registry else {
        result.verdict = "no registry: the embedded comparison needs the registry with \(form.model)"
        return result
    }
    do {
        let scorer = try Scorer(try fetchDocument(registry, form.model))
        // An explanation carries scoring's own prediction: one pass when the model can explain.
        let e = scorer.explainable ? try scorer.explain(json: record) : nil
        let p = try e?.prediction ?? scorer.predict(json: record)
        // A regression's one number is its value, named as the service names it.
        result.embedded = p.value.map { [("value", $0)] } ?? zip(scorer.classes, p.probabilities).map { ($0, $1) }
        result.embeddedLabel = p.label
        result.regression = scorer.isRegression
        if let e {
            // A binary model's or a regression's one margin; a multiclass one's margin of the predicted class.
            let k = e.base.count == 1 ? 0 : p.labelIndex
            result.base = e.base[k]
            result.margin = e.margins[k]
            result.marginName = scorer.marginDescription(k)
            result.contributions = scorer.fieldNames.indices.map { f in
                (scorer.fieldNames[f], form.fields.first { $0.name == scorer.fieldNames[f] }?.value ?? "", e.contributions[k][f])
            }.sorted { abs($0.contribution) > abs($1.contribution) }
        }
    } catch {
        result.verdict = "embedded scorer: \(error)"
        return result
    }
    var worst = 0.0
    var detail = ""
    for (name, embedded) in result.embedded {
        guard let served = result.service.first(where: { $0.0 == name })?.1 else {
            detail = "\(result.regression ? "the value" : "class \(name)") is missing from the service's answer"
            worst = .infinity
            break
        }
        // A regression's value is compared relative to its size; probabilities absolutely.
        let diff = abs(served - embedded) / (result.regression ? max(1, abs(embedded)) : 1)
        if diff > worst {
            worst = diff
            detail = "class \(name): service \(served), embedded \(embedded)"
        }
    }
    result.agrees = worst <= 1e-9
    result.verdict = result.agrees ? String(format: "parity: equal within 1e-9 (largest difference %.1e)", worst) : "MISMATCH — \(detail)"
    return result
}

/// The model document a reference points at, fetched from the registry service by sha256 (the
/// bytes are checked against it) for the embedded scorer.
func fetchDocument(_ registry: RegistryAPI, _ reference: String) throws -> ModelDocument {
    let version = try registry.resolve(reference).version
    return try ModelDocument.decode(Data(try registry.artifact(version.sha256)))
}

/// A logged prediction replayed (the Predict view's `/`): what the service answered then, the
/// same record on the version that answered it and on the current production version, and
/// whether the replay matches the log.
package struct ReplayResult: Sendable {
    package struct Answer: Sendable {
        package var model: String
        package var label: String
        package var probability: Double
        /// The label's margin explained, largest first.
        package var contributions: [(field: String, contribution: Double)] = []
        package var marginName = ""
    }

    package var query: String
    package var requestID = ""
    package var at = ""
    package var logged: Answer?
    package var replayed: Answer?
    package var production: Answer?
    package var matches = false
    package var verdict = ""
    package var error: String?
    /// The logged record's values by field name, for the form.
    package var values: [String: String] = [:]
}

/// Finds `query` (a request id, else a key value) in the serve's prediction log and replays it.
package func replay(query: String, form: PredictForm, key: String?, registry: RegistryAPI?) -> ReplayResult {
    var result = ReplayResult(query: query)
    let entry: JSONValue
    do throws(ComponentError) {
        let api = try ComponentAPI(url: form.componentURL, key: key)
        let escaped = query.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?&=#"))) ?? query
        let found: JSONValue
        do {
            found = try api.call("GET", "/v1/predictions/\(escaped)")
        } catch where error.status == 404 {
            found = try api.call("GET", "/v1/predictions?key=\(escaped)&limit=1")
        }
        guard case .array(let entries)? = found["predictions"], let first = entries.first else {
            result.error = "the serve's log has nothing for \(query)"
            return result
        }
        entry = first
    } catch {
        result.error = error.status == 404
            ? "no logged prediction for \(query) (a request id, or a --log-key value; the log may keep only a sample)"
            : error.status == 401 || error.status == 403 ? "the log needs a key with scope operate: \(error.message)" : error.message
        return result
    }
    // A classifier's entry has a label and probabilities, a regression's a value.
    let loggedValue: Double? = if case .number(let v)? = entry["value"] { v } else { nil }
    guard let record = entry["record"], case .string(let model)? = entry["model"],
        let label = entry["label"]?.stringValue ?? loggedValue.map(JSONWriter.numberText)
    else {
        result.error = "the logged entry has no record, model, label or value"
        return result
    }
    result.requestID = entry["request_id"]?.stringValue ?? query
    result.at = entry["at"]?.stringValue ?? ""
    if case .object(let object) = record {
        for (name, value) in zip(object.keys, object.values) {
            switch value {
            case .number(let x): result.values[name] = JSONWriter.numberText(x)
            case .string(let s): result.values[name] = s
            default: result.values[name] = ""
            }
        }
    }
    // A regression's answer shows its value, with no probability (NaN).
    let loggedP: Double = if loggedValue == nil, case .number(let p)? = entry["probabilities"]?[label] { p } else { .nan }
    result.logged = .init(model: model, label: label, probability: loggedP)
    guard let registry else {
        result.error = "no registry: replaying needs the registry with \(model)"
        return result
    }
    func answer(_ reference: String) throws -> (ReplayResult.Answer, [Double], [String]) {
        let scorer = try Scorer(try fetchDocument(registry, reference))
        let version = (try? registry.resolve(reference).version.reference) ?? reference
        let e = scorer.explainable ? try scorer.explain(json: record) : nil
        let p = try e?.prediction ?? scorer.predict(json: record)
        var out = ReplayResult.Answer(model: version, label: p.label, probability: p.value == nil ? p.probabilities[p.labelIndex] : .nan)
        if let e {
            let k = e.base.count == 1 ? 0 : p.labelIndex
            out.marginName = scorer.marginDescription(k)
            out.contributions = scorer.fieldNames.indices.map { (scorer.fieldNames[$0], e.contributions[k][$0]) }
                .sorted { abs($0.contribution) > abs($1.contribution) }
        }
        return (out, p.probabilities, scorer.classes)
    }
    do {
        let (replayed, probabilities, classes) = try answer(model)
        result.replayed = replayed
        var worst = 0.0
        for (k, name) in classes.enumerated() {
            guard case .number(let logged)? = entry["probabilities"]?[name] else { worst = .infinity; continue }
            worst = max(worst, abs(logged - probabilities[k]))
        }
        if classes.isEmpty {
            // A regression: the logged value against the replayed one, relative to its size.
            worst = loggedValue.map { abs($0 - probabilities[0]) / max(1, abs($0)) } ?? .infinity
        }
        result.matches = worst <= 1e-9 && (classes.isEmpty || replayed.label == label)
        result.verdict = result.matches
            ? String(format: "the replay on %@ matches what was logged (within %.0e)", model, max(worst, 1e-16))
            : "MISMATCH: the replay on \(model) differs from the log (largest difference \(worst))"
        let production = model.split(separator: "@").first.map { "\($0)@production" } ?? model
        result.production = try? answer(production).0
    } catch {
        result.error = "replaying on \(model): \(error)"
    }
    return result
}
