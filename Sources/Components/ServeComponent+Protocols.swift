import Foundation
import HTTP
import Registry
import Scoring

/// The scoring protocols: Open Inference Protocol v2 (KServe/Triton REST),
/// Azure ML (`/score`, `/swagger.json`) and MLflow (`/invocations`). Every one
/// scores with the same snapshot and names the row and field of bad input.
extension ServeComponent {
    func routeProtocols(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) -> HTTPResponse? {
        let path = request.path
        switch (request.method, path) {
        case ("GET", "/"), ("HEAD", "/"):
            return HTTPResponse(status: 200, contentType: "text/plain", body: "Healthy")
        case ("GET", "/ping"), ("GET", "/health"):
            return json(200, .object(JSONObject(["status": .string("ok")])))
        case ("GET", "/v2/health/live"):
            return json(200, .object(JSONObject(["live": .bool(true)])))
        case ("GET", "/v2/health/ready"):
            return json(200, .object(JSONObject(["ready": .bool(true)])))
        case ("GET", "/v2"):
            return json(200, .object(JSONObject([
                "name": .string("switchyard"), "version": .string(switchyardVersion), "extensions": .array([]),
            ])))
        case ("GET", "/swagger.json"):
            return json(200, swagger(snapshot))
        case ("POST", "/score"):
            return guarded(request, context) { try azureScore(request, snapshot) }
        case ("POST", "/invocations"):
            return guarded(request, context, allowCSV: true) { try mlflowInvocations(request, snapshot) }
        default:
            guard path.hasPrefix("/v2/models/") else { return nil }
            return openInference(request, context, snapshot)
        }
    }

    /// Auth, content type, then the body; thrown `HTTPError`s become responses.
    private func guarded(
        _ request: HTTPRequest, _ context: RequestContext, allowCSV: Bool = false, _ body: () throws -> HTTPResponse
    ) -> HTTPResponse {
        if let denied = authorizeScoring(request, context) { return denied }
        if !(allowCSV && isCSV(request)), let wrongType = requireJSON(request) {
            return allowCSV
                ? .error(415, "Content-Type \(request.headers["Content-Type"] ?? "") is not accepted here; send application/json or text/csv")
                : wrongType
        }
        do {
            return try body()
        } catch let error as HTTPError {
            return error.response
        } catch {
            return .error(500, "\(error)")
        }
    }

    // MARK: - Open Inference Protocol v2

    private func openInference(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) -> HTTPResponse? {
        let parts = request.path.dropFirst("/v2/models/".count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let name = parts.first, !name.isEmpty else { return nil }
        var rest = Array(parts.dropFirst())
        var requestedVersion: String?
        if rest.first == "versions" {
            guard rest.count >= 2 else { return nil }
            requestedVersion = rest[1]
            rest = Array(rest.dropFirst(2))
        }
        guard name == snapshot.version.model else {
            return .error(404, "unknown model \"\(name)\"; this server serves \"\(snapshot.version.model)\"")
        }
        if let requestedVersion, requestedVersion != "\(snapshot.version.version)" {
            return .error(404, "version \(requestedVersion) of \(name) is not loaded; this server serves \(snapshot.label) (swap with POST /v1/model)")
        }
        switch (request.method, rest) {
        case ("GET", []):
            return json(200, modelMetadata(snapshot))
        case ("GET", ["ready"]):
            return json(200, .object(JSONObject(["name": .string(name), "ready": .bool(true)])))
        case ("POST", ["infer"]):
            return guarded(request, context) { try infer(request, snapshot) }
        default:
            return .error(404, "no route for \(request.method) \(request.path)")
        }
    }

    private func modelMetadata(_ snapshot: ModelSnapshot) -> JSONValue {
        let inputs = snapshot.scorer.document.schema.fields.map { f -> JSONValue in
            .object(JSONObject([
                "name": .string(f.name), "datatype": .string(f.type == .number ? "FP64" : "BYTES"), "shape": .array([.number(-1)]),
            ]))
        }
        return .object(JSONObject([
            "name": .string(snapshot.version.model),
            "versions": .array([.string("\(snapshot.version.version)")]),
            "platform": .string("switchyard"),
            "inputs": .array(inputs),
            "outputs": .array([
                .object(JSONObject(["name": .string("probability"), "datatype": .string("FP64"),
                                    "shape": .array([.number(-1), .number(Double(snapshot.scorer.classes.count))])])),
                .object(JSONObject(["name": .string("label"), "datatype": .string("BYTES"), "shape": .array([.number(-1)])])),
            ]),
        ]))
    }

    private func infer(_ request: HTTPRequest, _ snapshot: ModelSnapshot) throws -> HTTPResponse {
        let scorer = snapshot.scorer
        var tape = JSONTape()
        return try request.body.withUnsafeBytes { body in
            do { try tape.parse(body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
            guard let inputs = tape.member(tape.root, "inputs"), tape.kind(inputs) == .array, tape.nodes[inputs].count > 0 else {
                throw HTTPError(400, #"expected "inputs": a list of tensors ({"name", "shape", "datatype", "data"})"#)
            }
            let fieldCount = scorer.fieldNames.count
            var tensors: [(name: String, shape: [Int], data: [Int32])] = []
            for (i, tensor) in tape.elements(inputs).enumerated() {
                guard let nameNode = tape.member(tensor, "name"), let name = tape.string(nameNode) else {
                    throw HTTPError(400, "inputs[\(i)]: missing \"name\"")
                }
                guard let shapeNode = tape.member(tensor, "shape"), tape.kind(shapeNode) == .array else {
                    throw HTTPError(400, "input \"\(name)\": \"shape\" must be a list of non-negative integers")
                }
                let shape = tape.elements(shapeNode).compactMap { node -> Int? in
                    guard let n = tape.number(node), n >= 0, n == n.rounded(), n < 1e9 else { return nil }
                    return Int(n)
                }
                guard shape.count == Int(tape.nodes[shapeNode].count), !shape.isEmpty else {
                    throw HTTPError(400, "input \"\(name)\": \"shape\" must be a list of non-negative integers")
                }
                guard let type = tape.member(tensor, "datatype"), tape.kind(type) == .string else {
                    throw HTTPError(400, "input \"\(name)\": missing \"datatype\"")
                }
                guard let dataNode = tape.member(tensor, "data"), tape.kind(dataNode) == .array else {
                    throw HTTPError(400, "input \"\(name)\": missing \"data\"")
                }
                var data: [Int32] = []
                flatten(tape, dataNode, into: &data)
                let expected = shape.reduce(1, *)
                guard data.count == expected else {
                    throw HTTPError(400, "input \"\(name)\": shape \(shape) holds \(expected) values, data has \(data.count)")
                }
                tensors.append((name, shape, data))
            }
            // One tape node per (row, field); -1 where a field has no tensor.
            let rows = tensors[0].shape[0]
            var cells: [Int32]
            if tensors.count == 1, tensors[0].shape.count == 2, tensors[0].shape[1] == fieldCount,
                scorer.fieldIndex(tensors[0].name) == nil || fieldCount == 1
            {
                cells = tensors[0].data  // one [N, F] tensor, schema order
            } else {
                cells = [Int32](repeating: -1, count: rows * fieldCount)
                for t in tensors {
                    guard let field = scorer.fieldIndex(t.name) else {
                        throw HTTPError(400, "unknown input \"\(t.name)\"; the model's inputs are \(scorer.fieldNames.joined(separator: ", ")) (or one [N, \(fieldCount)] tensor in that order)")
                    }
                    guard t.shape.count == 1 || (t.shape.count == 2 && t.shape[1] == 1) else {
                        throw HTTPError(400, "input \"\(t.name)\": shape must be [N] or [N, 1], got \(t.shape)")
                    }
                    guard t.shape[0] == rows else {
                        throw HTTPError(400, "input \"\(t.name)\" has \(t.shape[0]) rows, other inputs have \(rows)")
                    }
                    for r in 0..<rows { cells[r * fieldCount + field] = t.data[r] }
                }
            }
            let c = scorer.classes.count
            var probabilities = [Double](repeating: 0, count: rows * c)
            var labels = [Int](repeating: 0, count: rows)
            try probabilities.withUnsafeMutableBufferPointer { out in
                try cells.withUnsafeBufferPointer { cells in
                    for r in 0..<rows {
                        let fields = UnsafeBufferPointer(rebasing: cells[(r * fieldCount)..<((r + 1) * fieldCount)])
                        do {
                            labels[r] = try scorer.predict(tape: tape, fieldNodes: fields, row: r + 1, record: nil, into: out.baseAddress! + r * c)
                        } catch {
                            throw HTTPError(400, (error as? ScoringError)?.description ?? "\(error)")
                        }
                    }
                }
            }
            var wantProbability = true, wantLabel = true
            if let requested = tape.member(tape.root, "outputs"), tape.kind(requested) == .array, tape.nodes[requested].count > 0 {
                wantProbability = false
                wantLabel = false
                for output in tape.elements(requested) {
                    let name = tape.member(output, "name").flatMap { tape.string($0) } ?? ""
                    switch name {
                    case "probability": wantProbability = true
                    case "label": wantLabel = true
                    default: throw HTTPError(400, "unknown output \"\(name)\"; outputs are probability and label")
                    }
                }
            }
            var w = JSONWriter()
            w.raw(#"{"model_name":"#)
            w.string(snapshot.version.model)
            w.raw(#","model_version":""# + String(snapshot.version.version) + "\"")
            if let id = tape.member(tape.root, "id") {
                w.raw(#","id":"#)
                w.value(tape.value(id))
            }
            w.raw(#","outputs":["#)
            if wantProbability {
                w.raw(#"{"name":"probability","datatype":"FP64","shape":["# + String(rows) + "," + String(c) + #"],"data":["#)
                for (i, p) in probabilities.enumerated() {
                    if i > 0 { w.raw(",") }
                    w.number(p)
                }
                w.raw("]}")
            }
            if wantLabel {
                if wantProbability { w.raw(",") }
                w.raw(#"{"name":"label","datatype":"BYTES","shape":["# + String(rows) + #"],"data":["#)
                for (i, label) in labels.enumerated() {
                    if i > 0 { w.raw(",") }
                    w.string(scorer.classes[label])
                }
                w.raw("]}")
            }
            w.raw("]}")
            return jsonBytes(200, w.bytes)
        }
    }

    private func flatten(_ tape: JSONTape, _ node: Int, into out: inout [Int32]) {
        tape.forEachElement(node) { element in
            if tape.kind(element) == .array { flatten(tape, element, into: &out) } else { out.append(Int32(element)) }
        }
    }

    // MARK: - Azure ML

    private func azureScore(_ request: HTTPRequest, _ snapshot: ModelSnapshot) throws -> HTTPResponse {
        let scorer = snapshot.scorer
        var tape = JSONTape()
        return try request.body.withUnsafeBytes { body in
            do { try tape.parse(body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
            guard let data = tape.member(tape.root, "data"), tape.kind(data) == .array || tape.kind(data) == .object else {
                throw HTTPError(400, #"expected {"data": [[values in schema order], ...]} or {"data": [{"field": value, ...}, ...]}"#)
            }
            let records = tape.kind(data) == .object ? [data] : tape.elements(data)
            var probabilities = [Double](repeating: 0, count: scorer.classes.count)
            var fieldNodes: [Int32] = []
            var w = JSONWriter()
            w.raw("[")
            for (r, record) in records.enumerated() {
                let label: Int
                do {
                    label = try probabilities.withUnsafeMutableBufferPointer { out in
                        Result { () throws(ScoringError) -> Int in
                            try scorer.predict(tape: tape, record: record, row: r + 1, fieldNodes: &fieldNodes, into: out.baseAddress!)
                        }
                    }.get()
                } catch {
                    throw HTTPError(400, (error as? ScoringError)?.description ?? "\(error)")
                }
                if r > 0 { w.raw(",") }
                writePrediction(&w, label: label, probabilities, scorer.classes)
            }
            w.raw("]")
            return jsonBytes(200, w.bytes)
        }
    }

    /// An OpenAPI 3 document for `/score`, generated from the schema.
    private func swagger(_ snapshot: ModelSnapshot) -> JSONValue {
        var properties = JSONObject()
        for field in snapshot.scorer.document.schema.fields {
            var p = JSONObject()
            switch field.type {
            case .number: p.append("type", .string("number"))
            case .category:
                p.append("type", .string("string"))
                p.append("enum", .array((field.values ?? []).map(JSONValue.string)))
            }
            if field.missing != .error { p.append("nullable", .bool(true)) }
            properties.append(field.name, .object(p))
        }
        let required = snapshot.scorer.document.schema.fields.filter { $0.missing == .error }.map { JSONValue.string($0.name) }
        let record: JSONValue = .object(JSONObject(["type": .string("object"), "properties": .object(properties), "required": .array(required)]))
        var probabilities = JSONObject()
        for c in snapshot.scorer.classes { probabilities.append(c, .object(JSONObject(["type": .string("number")]))) }
        let prediction: JSONValue = .object(JSONObject([
            "type": .string("object"),
            "properties": .object(JSONObject([
                "label": .object(JSONObject(["type": .string("string"), "enum": .array(snapshot.scorer.classes.map(JSONValue.string))])),
                "probabilities": .object(JSONObject(["type": .string("object"), "properties": .object(probabilities)])),
            ])),
        ]))
        let requestBody: JSONValue = .object(JSONObject([
            "required": .bool(true),
            "content": .object(JSONObject(["application/json": .object(JSONObject([
                "schema": .object(JSONObject([
                    "type": .string("object"), "required": .array([.string("data")]),
                    "properties": .object(JSONObject(["data": .object(JSONObject(["type": .string("array"), "items": record]))])),
                ])),
                "example": .object(JSONObject(["data": .array([snapshot.example])])),
            ]))])),
        ]))
        let error: JSONValue = .object(JSONObject(["description": .string("Bad input: the message names the row and field")]))
        return .object(JSONObject([
            "openapi": .string("3.0.3"),
            "info": .object(JSONObject([
                "title": .string("\(snapshot.version.model) scoring service"), "version": .string("\(snapshot.version.version)"),
                "description": .string("Switchyard serving \(snapshot.label) (sha256 \(snapshot.version.sha256))"),
            ])),
            "paths": .object(JSONObject([
                "/score": .object(JSONObject(["post": .object(JSONObject([
                    "summary": .string("Score records"),
                    "requestBody": requestBody,
                    "responses": .object(JSONObject([
                        "200": .object(JSONObject([
                            "description": .string("One prediction per record"),
                            "content": .object(JSONObject(["application/json": .object(JSONObject([
                                "schema": .object(JSONObject(["type": .string("array"), "items": prediction])),
                            ]))])),
                        ])),
                        "400": error,
                    ])),
                ]))])),
                "/": .object(JSONObject(["get": .object(JSONObject([
                    "summary": .string("Liveness"),
                    "responses": .object(JSONObject(["200": .object(JSONObject(["description": .string("Healthy")]))])),
                ]))])),
            ])),
        ]))
    }

    // MARK: - MLflow

    private func mlflowInvocations(_ request: HTTPRequest, _ snapshot: ModelSnapshot) throws -> HTTPResponse {
        let scorer = snapshot.scorer
        let predictions: [Prediction]
        if isCSV(request) {
            predictions = try score(try csvRows(request.body, scorer), scorer)
        } else {
            let body = try parseBody(request)
            var records: [JSONValue]
            if let split = body["dataframe_split"] {
                guard case .array(let columns)? = split["columns"], case .array(let data)? = split["data"] else {
                    throw HTTPError(400, #"dataframe_split needs "columns" and "data""#)
                }
                let names = columns.map { if case .string(let s) = $0 { s } else { $0.excerpt } }
                records = try data.enumerated().map { r, row in
                    guard case .array(let values) = row, values.count == names.count else {
                        throw HTTPError(400, "row \(r + 1): expected \(names.count) values (one per column)")
                    }
                    var o = JSONObject()
                    for (name, value) in zip(names, values) { o.append(name, value) }
                    return .object(o)
                }
            } else if case .array(let rows)? = body["dataframe_records"] {
                records = rows
            } else if case .array(let rows)? = body["instances"] {
                records = rows
            } else if let inputs = body["inputs"] {
                switch inputs {
                case .array(let rows): records = rows
                case .object(let columns):
                    // Column-oriented: {"amount": [..], "region": [..]}.
                    let count = columns.values.map { if case .array(let a) = $0 { a.count } else { 1 } }.max() ?? 0
                    records = (0..<count).map { r in
                        var o = JSONObject()
                        for (name, value) in zip(columns.keys, columns.values) {
                            if case .array(let a) = value { o.append(name, r < a.count ? a[r] : .null) } else { o.append(name, value) }
                        }
                        return .object(o)
                    }
                default: throw HTTPError(400, #""inputs" must be a list of records or an object of columns"#)
                }
            } else {
                throw HTTPError(400, "expected one of dataframe_split, dataframe_records, instances or inputs (MLflow's formats), or a text/csv body")
            }
            predictions = try score(records, scorer)
        }
        return json(200, .object(JSONObject(["predictions": .array(predictions.map { predictionJSON($0, scorer.classes) })])))
    }

    private func csvRows(_ body: [UInt8], _ scorer: Scorer) throws -> [[FieldValue]] {
        var reader = CSVReader()
        var header: [Int?] = []
        var rows: [[FieldValue]] = []
        var failure: HTTPError?
        do {
            _ = try body.withUnsafeBytes { buffer throws(CSVError) in
                try reader.read(buffer, final: true) { (record, line) throws(CSVError) in
                    if header.isEmpty && rows.isEmpty && failure == nil {
                        header = (0..<record.fieldCount).map { scorer.fieldIndex(record.string($0)) }
                        if header.allSatisfy({ $0 == nil }) {
                            failure = HTTPError(400, "the CSV header names none of the model's inputs (\(scorer.fieldNames.joined(separator: ", ")))")
                            return false
                        }
                        return true
                    }
                    guard record.fieldCount == header.count else {
                        failure = HTTPError(400, "row \(rows.count + 1) (line \(line)): \(record.fieldCount) fields, the header has \(header.count)")
                        return false
                    }
                    var row = [FieldValue](repeating: .missing, count: scorer.fieldNames.count)
                    for (column, field) in header.enumerated() {
                        guard let field else { continue }
                        let cell = record.field(column)
                        if cell.isEmpty { continue }
                        if let x = DecimalParser.parse(cell), scorer.document.schema.fields[field].type == .number {
                            row[field] = .number(x)
                        } else {
                            row[field] = .text(String(decoding: cell, as: UTF8.self))
                        }
                    }
                    rows.append(row)
                    return true
                }
            }
        } catch {
            throw HTTPError(400, "CSV body, \(error)")
        }
        if let failure { throw failure }
        return rows
    }

    // MARK: - Shared

    private func isCSV(_ request: HTTPRequest) -> Bool {
        request.headers["Content-Type"]?.lowercased().hasPrefix("text/csv") == true
    }

    private func parseBody(_ request: HTTPRequest) throws -> JSONValue {
        do { return try JSONValue.parse(request.body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
    }

    private func score(_ records: [JSONValue], _ scorer: Scorer) throws -> [Prediction] {
        var out: [Prediction] = []
        out.reserveCapacity(records.count)
        for (i, record) in records.enumerated() {
            do { out.append(try scorer.predict(json: record, row: i + 1)) } catch { throw HTTPError(400, error.description) }
        }
        return out
    }

    private func score(_ rows: [[FieldValue]], _ scorer: Scorer) throws -> [Prediction] {
        var out: [Prediction] = []
        out.reserveCapacity(rows.count)
        for (i, row) in rows.enumerated() {
            do { out.append(try scorer.predict(row, row: i + 1)) } catch { throw HTTPError(400, error.description) }
        }
        return out
    }
}

/// Writes `{"label": ..., "probabilities": {class: p, ...}}`.
func writePrediction(_ w: inout JSONWriter, label: Int, _ probabilities: [Double], _ classes: [String]) {
    w.raw(#"{"label":"#)
    w.string(classes[label])
    w.raw(#","probabilities":{"#)
    for (k, c) in classes.enumerated() {
        if k > 0 { w.raw(",") }
        w.string(c)
        w.raw(":")
        w.number(probabilities[k])
    }
    w.raw("}}")
}

/// A JSON response from bytes already written.
func jsonBytes(_ status: Int, _ bytes: [UInt8]) -> HTTPResponse {
    var headers = HTTPHeaders()
    headers.add("Content-Type", "application/json")
    return HTTPResponse(status: status, headers: headers, body: bytes)
}

/// `{"label": ..., "probabilities": {class: p, ...}}`.
func predictionJSON(_ p: Prediction, _ classes: [String]) -> JSONValue {
    var probabilities = JSONObject()
    for (k, c) in classes.enumerated() { probabilities.append(c, .number(p.probabilities[k])) }
    return .object(JSONObject(["label": .string(p.label), "probabilities": .object(probabilities)]))
}
