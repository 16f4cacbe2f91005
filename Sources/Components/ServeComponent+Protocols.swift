import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring

/// The scoring protocols: Open Inference Protocol v2 (KServe/Triton REST),
/// Azure ML (`/score`, `/swagger.json`) and MLflow (`/invocations`). Every one
/// scores with the same snapshot and names the row and field of bad input.
extension ServeComponent {
    func routeProtocols(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) -> HTTPResponse? {
        let path = request.path
        if path.utf8.starts(with: "/v2/models/".utf8) { return openInference(request, context, snapshot) }
        switch (request.method, path) {
        case ("GET", "/"), ("HEAD", "/"):
            return HTTPResponse(status: 200, contentType: "text/plain", body: "Healthy")
        case ("GET", "/ping"), ("GET", "/health"):
            return json(200, .object(JSONObject(["status": .string("ok")])))
        case ("GET", "/v2/health/live"):
            return json(200, .object(JSONObject(["live": .bool(true)])))
        case ("GET", "/v2/health/ready"):
            return json(context.draining ? 503 : 200, .object(JSONObject(["ready": .bool(!context.draining)])))
        case ("GET", "/v2"):
            return json(200, .object(JSONObject([
                "name": .string("switchyard"), "version": .string(switchyardVersion), "extensions": .array([.string("binary_tensor_data")]),
            ])))
        case ("GET", "/swagger.json"):
            return json(200, swagger(snapshot))
        case ("POST", "/score"):
            return guarded(request, context) { try azureScore(request, context, snapshot) }
        case ("POST", "/invocations"):
            return guarded(request, context, allowCSV: true) { try mlflowInvocations(request, context, snapshot) }
        default:
            return nil
        }
    }

    // MARK: - Routing key

    /// Where a request falls on a split's routing circle: its `x-routing-key` header, else the
    /// value of the route's key field in its first record — an OIP input of that name, a member
    /// of the first of `records`/`data`/`instances`/`dataframe_records`/`inputs` (or of the body
    /// itself), or its column of `dataframe_split`. Nil when it has none (CSV bodies, binary
    /// tensors and a key that is not a string or number included): it is then spread evenly.
    func routingPoint(_ request: HTTPRequest, key field: String?, loop: Int) -> UInt64? {
        if let header = request.headers[.routingKey] { return AliasRoute.point(key: header.utf8) }
        guard let field, !request.body.isEmpty, !isCSV(request), request.headers[.inferenceHeaderContentLength] == nil else { return nil }
        return inferScratch.with(loop: loop) { s -> UInt64? in
            guard (request.body.withUnsafeBytes { body in (try? s.tape.parse(body)) != nil }) else { return nil }
            let tape = s.tape
            guard let node = Self.keyNode(tape, field: Array(field.utf8)) else { return nil }
            switch tape.kind(node) {
            case .string: return tape.string(node).map { AliasRoute.point(key: $0.utf8) }
            case .number: return AliasRoute.point(key: tape.rawBytes(node))
            default: return nil
            }
        }
    }

    /// The node holding the first record's value of `field`, in any of the body shapes the protocols accept.
    static func keyNode(_ tape: JSONTape, field: [UInt8]) -> Int? {
        func member(_ node: Int, _ name: [UInt8]) -> Int? {
            guard tape.kind(node) == .object else { return nil }
            var found: Int?
            tape.forEachMember(node) { key, value in
                if found == nil, tape.string(key).map({ $0.utf8.elementsEqual(name) }) == true { found = value }
            }
            return found
        }
        func first(_ node: Int) -> Int? {
            guard tape.kind(node) == .array, tape.count(node) > 0 else { return nil }
            return tape.firstElement(node)
        }
        /// The first scalar of a (nested) array, or the value itself.
        func scalar(_ node: Int) -> Int? {
            var n = node
            while tape.kind(n) == .array { guard let f = first(n) else { return nil }; n = f }
            return n
        }
        let root = tape.root
        if let record = first(root) { return member(record, field) }
        guard tape.kind(root) == .object else { return nil }
        if let inputs = tape.member(root, "inputs"), tape.kind(inputs) == .array {
            // OIP: a tensor named like the field; MLflow: a list of records.
            var found: Int?
            tape.forEachElement(inputs) { input in
                guard found == nil else { return }
                if let name = tape.member(input, "name"), tape.string(name).map({ $0.utf8.elementsEqual(field) }) == true,
                   let data = tape.member(input, "data") { found = scalar(data) }
            }
            if let found { return found }
            if let record = first(inputs), let value = member(record, field) { return value }
        }
        if let split = tape.member(root, "dataframe_split"), let columns = tape.member(split, "columns"), tape.kind(columns) == .array,
           let data = tape.member(split, "data"), let row = first(data), tape.kind(row) == .array {
            var index = 0, at: Int?
            tape.forEachElement(columns) { column in
                if at == nil, tape.string(column).map({ $0.utf8.elementsEqual(field) }) == true { at = index }
                index += 1
            }
            guard let at, at < tape.count(row) else { return nil }
            var node = tape.firstElement(row)
            for _ in 0..<at { node = tape.next(node) }
            return node
        }
        for list in [tape.member(root, "records"), tape.member(root, "data"), tape.member(root, "instances"), tape.member(root, "dataframe_records")] {
            if let list, let record = first(list), let value = member(record, field) { return value }
            if let list, let value = member(list, field) { return value }
        }
        return member(root, field)
    }

    /// Auth, content type, then the body; thrown `HTTPError`s become responses.
    private func guarded(
        _ request: HTTPRequest, _ context: RequestContext, allowCSV: Bool = false, binary: Bool = false, _ body: () throws -> HTTPResponse
    ) -> HTTPResponse {
        if let denied = authorizeScoring(request, context) { return denied }
        // A binary-tensor request's JSON part is defined by its header, whatever its Content-Type says.
        if !(allowCSV && isCSV(request)), !binary, let wrongType = requireJSON(request) {
            return allowCSV
                ? .error(415, "Content-Type \(request.headers[.contentType] ?? "") is not accepted here; send application/json or text/csv")
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

    /// `/v2/models/{name}[/versions/{v}][/ready|/infer]`, read segment by segment without copies.
    private func openInference(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) -> HTTPResponse? {
        let utf8 = request.path.utf8
        var i = utf8.index(utf8.startIndex, offsetBy: "/v2/models/".utf8.count)
        /// The next segment, or nil at the end of the path.
        func segment() -> Substring.UTF8View.SubSequence? {
            guard i < utf8.endIndex else { return nil }
            let start = i
            while i < utf8.endIndex && utf8[i] != UInt8(ascii: "/") { utf8.formIndex(after: &i) }
            defer { if i < utf8.endIndex { utf8.formIndex(after: &i) } }
            return utf8[start..<i]
        }
        guard let name = segment(), !name.isEmpty else { return nil }
        var action = segment()
        var requestedVersion: Substring.UTF8View.SubSequence?
        if let word = action, word.elementsEqual("versions".utf8) {
            guard let version = segment() else { return nil }
            requestedVersion = version
            action = segment()
        }
        guard segment() == nil else { return .error(404, "no route for \(request.method) \(request.path)") }
        guard name.elementsEqual(snapshot.version.model.utf8) else {
            return .error(404, "unknown model \"\(Substring(name))\"; this server serves \"\(snapshot.version.model)\"")
        }
        if let requestedVersion, !requestedVersion.elementsEqual(snapshot.versionText.utf8) {
            return .error(404, "version \(Substring(requestedVersion)) of \(snapshot.version.model) is not loaded; this server serves \(snapshot.label) (swap with POST /v1/model)")
        }
        switch (request.method, action.map(Substring.init)) {
        case ("GET", nil):
            return json(200, modelMetadata(snapshot))
        case ("GET", "ready"?):
            return json(context.draining ? 503 : 200, .object(JSONObject(["name": .string(snapshot.version.model), "ready": .bool(!context.draining)])))
        case ("POST", "infer"?):
            let binaryHeader = request.headers[.inferenceHeaderContentLength]
            return guarded(request, context, binary: binaryHeader != nil) { try infer(request, binaryHeader: binaryHeader, snapshot, context) }
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
            "outputs": .array(snapshot.scorer.isRegression
                ? [.object(JSONObject(["name": .string("predict"), "datatype": .string("FP64"), "shape": .array([.number(-1)])]))]
                : [
                    .object(JSONObject(["name": .string("probability"), "datatype": .string("FP64"),
                                        "shape": .array([.number(-1), .number(Double(snapshot.scorer.classes.count))])])),
                    .object(JSONObject(["name": .string("label"), "datatype": .string("BYTES"), "shape": .array([.number(-1)])])),
                ]),
        ]))
    }

    /// One input tensor of an infer request: where its name, shape and data are.
    struct Tensor {
        var nameNode: Int
        var shapeNode: Int
        var rank: Int
        /// The first two dimensions (1 when absent).
        var rows: Int
        var columns: Int
        /// A known OIP datatype; whether it fits the field is checked where the tensor is placed.
        var datatype: String
        /// Its data nodes are `InferScratch.data[offset..<offset + count]`.
        var offset: Int
        var count: Int
    }

    /// What one event loop reuses from one infer request to the next.
    struct InferScratch {
        var tape = JSONTape()
        var tensors: [Tensor] = []
        /// Every tensor's data nodes, flattened, one after another.
        var data: [Int32] = []
        /// One tape node per (row, field); -1 where a field has no value.
        var cells: [Int32] = []
        var probabilities: [Double] = []
        var labels: [Int] = []
    }

    /// `binaryHeader`: the request's Inference-Header-Content-Length, if it has one.
    private func infer(_ request: HTTPRequest, binaryHeader: String?, _ snapshot: ModelSnapshot, _ context: RequestContext) throws -> HTTPResponse {
        let loop = context.loop
        if let header = binaryHeader {
            // The binary tensor data extension: read as the JSON request it stands for.
            let json = try request.body.withUnsafeBytes { body in
                try BinaryTensors.jsonRequest(body, headerLength: try BinaryTensors.headerLength(header, bodyCount: body.count))
            }
            return try json.withUnsafeBytes { body in
                try inferScratch.with(loop: loop) { scratch in try infer(body, snapshot, &scratch, context) }
            }
        }
        return try request.body.withUnsafeBytes { body in
            try inferScratch.with(loop: loop) { scratch in try infer(body, snapshot, &scratch, context) }
        }
    }

    private func infer(_ body: UnsafeRawBufferPointer, _ snapshot: ModelSnapshot, _ s: inout InferScratch, _ context: RequestContext) throws -> HTTPResponse {
        do { try s.tape.parse(body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
        let tape = s.tape
        let scorer = snapshot.scorer
        guard let inputs = tape.member(tape.root, "inputs"), tape.kind(inputs) == .array, tape.count(inputs) > 0 else {
            throw HTTPError(400, #"expected "inputs": a list of tensors ({"name", "shape", "datatype", "data"})"#)
        }
        if let id = tape.member(tape.root, "id") {
            guard tape.kind(id) == .string, tape.text(id).count <= 258 else {
                throw HTTPError(400, #"field "id": expected a string of at most 256 bytes"#)
            }
        }
        let fieldCount = scorer.fieldNames.count
        s.tensors.removeAll(keepingCapacity: true)
        s.data.removeAll(keepingCapacity: true)
        var node = tape.firstElement(inputs)
        for i in 0..<tape.count(inputs) {
            defer { node = tape.next(node) }
            s.tensors.append(try tensor(tape, node, index: i, into: &s.data))
        }
        let first = s.tensors[0]
        let rows = first.rows
        s.cells.removeAll(keepingCapacity: true)
        if s.tensors.count == 1, first.rank == 2, first.columns == fieldCount,
            scorer.fieldIndex(tape, first.nameNode) == nil || fieldCount == 1
        {
            try checkDatatype(first, tape, field: fieldCount == 1 ? 0 : nil, scorer: scorer)
            s.cells.append(contentsOf: s.data)  // one [N, F] tensor, schema order
        } else {
            s.cells.append(contentsOf: repeatElement(-1, count: rows * fieldCount))
            for t in s.tensors {
                let name = tape.string(t.nameNode) ?? ""
                guard let field = scorer.fieldIndex(tape, t.nameNode) else {
                    throw HTTPError(400, "unknown input \"\(name)\"; the model's inputs are \(scorer.fieldNames.joined(separator: ", ")) (or one [N, \(fieldCount)] tensor in that order)")
                }
                try checkDatatype(t, tape, field: field, scorer: scorer)
                guard t.rank == 1 || (t.rank == 2 && t.columns == 1) else {
                    throw HTTPError(400, "input \"\(name)\": shape must be [N] or [N, 1], got \(shapeText(tape, t.shapeNode))")
                }
                guard t.rows == rows else {
                    throw HTTPError(400, "input \"\(name)\" has \(t.rows) rows, other inputs have \(rows)")
                }
                for r in 0..<rows { s.cells[r * fieldCount + field] = s.data[t.offset + r] }
            }
        }
        let c = scorer.outputCount
        s.probabilities.removeAll(keepingCapacity: true)
        s.probabilities.append(contentsOf: repeatElement(0, count: rows * c))
        s.labels.removeAll(keepingCapacity: true)
        s.labels.append(contentsOf: repeatElement(0, count: rows))
        try s.probabilities.withUnsafeMutableBufferPointer { out in
            try s.cells.withUnsafeBufferPointer { cells in
                for r in 0..<rows {
                    let fields = UnsafeBufferPointer(rebasing: cells[(r * fieldCount)..<((r + 1) * fieldCount)])
                    do {
                        s.labels[r] = try scorer.predict(tape: tape, fieldNodes: fields, row: r + 1, record: nil, into: out.baseAddress! + r * c)
                    } catch {
                        throw HTTPError(400, (error as? ScoringError)?.description ?? "\(error)")
                    }
                }
            }
        }
        let shadow = shadowing.with(loop: context.loop) { $0 }
        let drift = snapshot.drift.read(loop: context.loop)
        if predictionLog != nil || shadow != nil || drift != nil {
            let keyField = predictionLog?.options.key.flatMap { scorer.fieldIndex($0) }
            for r in 0..<rows {
                let cells = s.cells[(r * fieldCount)..<((r + 1) * fieldCount)]
                if let drift {
                    s.cells.withUnsafeBufferPointer { cells in
                        drift.observe(loop: context.loop, tape: tape, nodes: UnsafeBufferPointer(rebasing: cells[(r * fieldCount)..<((r + 1) * fieldCount)]),
                                      probability: s.probabilities[r * c + c - 1])
                    }
                }
                func record(_ w: inout JSONWriter) {
                    w.raw("{")
                    for (f, node) in cells.enumerated() {
                        if f > 0 { w.raw(",") }
                        w.string(scorer.fieldNames[f])
                        w.raw(":")
                        if node >= 0 { w.raw(tape.text(Int(node))) } else { w.raw("null") }
                    }
                    w.raw("}")
                }
                if let log = predictionLog, log.sample(loop: context.loop) {
                    let key = keyField.flatMap { f in cells[cells.startIndex + f] >= 0 ? PredictionLog.text(tape, Int(cells[cells.startIndex + f])) : nil }
                    s.probabilities.withUnsafeBufferPointer { p in
                        log.append(logLine(context, row: r + 1, snapshot, key: key, label: s.labels[r], p.baseAddress! + r * c, record: record))
                    }
                }
                if let shadow, shadow.comparison.sample(loop: context.loop, percent: shadow.sample) {
                    shadow.comparison.offer(loop: context.loop, live: snapshot, shadow: shadow.snapshot, requestID: context.requestID, row: r + 1, record: record)
                }
            }
        }
        // Outputs, and which come back as binary data (the extension): `binary_data_output` on the
        // request says all, `binary_data` on a requested output says that one. A regression model's
        // one output is `predict`, its values [N] (in the probability's place); it has no label.
        let regression = scorer.isRegression
        let numbersOutput = regression ? "predict" : "probability"
        var wantProbability = true, wantLabel = !regression
        func flag(_ node: Int?, _ name: StaticString) -> Bool? {
            guard let node, tape.kind(node) == .object, let value = tape.member(node, name) else { return nil }
            return tape.kind(value) == .true
        }
        let allBinary = flag(tape.member(tape.root, "parameters"), "binary_data_output") ?? false
        let explain = flag(tape.member(tape.root, "parameters"), "explain") ?? false
        var binaryProbability = allBinary, binaryLabel = allBinary
        if let requested = tape.member(tape.root, "outputs"), tape.kind(requested) == .array, tape.count(requested) > 0 {
            wantProbability = false
            wantLabel = false
            var output = tape.firstElement(requested)
            for _ in 0..<tape.count(requested) {
                defer { output = tape.next(output) }
                let name = tape.member(output, "name").flatMap { tape.string($0) } ?? ""
                let binary = flag(tape.member(output, "parameters"), "binary_data") ?? allBinary
                switch name {
                case numbersOutput: (wantProbability, binaryProbability) = (true, binary)
                case "label" where !regression: (wantLabel, binaryLabel) = (true, binary)
                default:
                    throw HTTPError(400, "unknown output \"\(name)\"; " + (regression ? "a regression model's output is predict" : "outputs are probability and label"))
                }
            }
        }
        var w = JSONWriter()
        var tail: [UInt8] = []
        w.reserveCapacity(160 + rows * (c * 24 + 16))
        w.raw(#"{"model_name":"#)
        w.string(snapshot.version.model)
        w.raw(#","model_version":""#)
        w.raw(snapshot.versionText)
        w.raw("\"")
        if let id = tape.member(tape.root, "id") {
            // Checked before scoring (a string of at most 256 bytes): its text as parsed is valid JSON.
            w.raw(#","id":"#)
            w.raw(tape.text(id))
        }
        w.raw(#","outputs":["#)
        if wantProbability {
            w.raw(#"{"name":""#)
            w.raw(numbersOutput)
            w.raw(#"","datatype":"FP64","shape":["#)
            w.integer(rows)
            if !regression {
                w.raw(",")
                w.integer(c)
            }
            if binaryProbability {
                w.raw(#"],"parameters":{"binary_data_size":"#)
                w.integer(s.probabilities.count * 8)
                w.raw("}}")
                BinaryTensors.append(s.probabilities, to: &tail)
            } else {
                w.raw(#"],"data":["#)
                for (i, p) in s.probabilities.enumerated() {
                    if i > 0 { w.raw(",") }
                    w.number(p)
                }
                w.raw("]}")
            }
        }
        if wantLabel {
            if wantProbability { w.raw(",") }
            w.raw(#"{"name":"label","datatype":"BYTES","shape":["#)
            w.integer(rows)
            if binaryLabel {
                let start = tail.count
                for label in s.labels { BinaryTensors.append(bytes: scorer.classes[label], to: &tail) }
                w.raw(#"],"parameters":{"binary_data_size":"#)
                w.integer(tail.count - start)
                w.raw("}}")
            } else {
                w.raw(#"],"data":["#)
                for (i, label) in s.labels.enumerated() {
                    if i > 0 { w.raw(",") }
                    w.string(scorer.classes[label])
                }
                w.raw("]}")
            }
        }
        if explain {
            // Each field's contribution to each margin (parameters "explain": true): [N, F] for a
            // binary model (the log-odds of its second class) or a regression (the value),
            // [N, classes, F] for a multiclass one.
            let fieldCount = scorer.fieldNames.count
            var explanations: [Explanation] = []
            explanations.reserveCapacity(rows)
            for r in 0..<rows {
                let values = s.cells.withUnsafeBufferPointer {
                    scorer.fieldValues(tape: tape, fieldNodes: UnsafeBufferPointer(rebasing: $0[(r * fieldCount)..<((r + 1) * fieldCount)]))
                }
                do { explanations.append(try scorer.explain(values, row: r + 1)) } catch { throw HTTPError(400, error.description) }
            }
            let m = scorer.marginCount
            if wantProbability || wantLabel { w.raw(",") }
            w.raw(#"{"name":"contributions","datatype":"FP64","shape":["#)
            w.integer(rows)
            if m > 1 {
                w.raw(",")
                w.integer(m)
            }
            w.raw(",")
            w.integer(fieldCount)
            w.raw(#"],"parameters":{"fields":["#)
            for (f, name) in scorer.fieldNames.enumerated() {
                if f > 0 { w.raw(",") }
                w.string(name)
            }
            w.raw(#"],"margins":["#)
            for k in 0..<m {
                if k > 0 { w.raw(",") }
                w.string(scorer.marginName(k))
            }
            w.raw(#"],"base":["#)
            for k in 0..<m {
                if k > 0 { w.raw(",") }
                w.number(explanations.first?.base[k] ?? 0)
            }
            w.raw(#"]},"data":["#)
            var first = true
            for e in explanations {
                for k in 0..<m {
                    for value in e.contributions[k] {
                        if !first { w.raw(",") }
                        first = false
                        w.number(value)
                    }
                }
            }
            w.raw("]}")
        }
        w.raw("]}")
        guard (wantProbability && binaryProbability) || (wantLabel && binaryLabel) else { return jsonBytes(200, w.bytes) }
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/octet-stream")
        headers.add("Inference-Header-Content-Length", String(w.bytes.count))
        return HTTPResponse(status: 200, headers: headers, body: w.bytes + tail)
    }

    /// Reads and checks input tensor `index` at `node`, appending its data nodes to `data`. The shape
    /// is checked against `maxRows` and the data before anything is sized by it.
    private func tensor(_ tape: JSONTape, _ node: Int, index: Int, into data: inout [Int32]) throws -> Tensor {
        guard let nameNode = tape.member(node, "name"), tape.kind(nameNode) == .string else {
            throw HTTPError(400, "inputs[\(index)]: missing \"name\"")
        }
        func name() -> String { tape.string(nameNode) ?? "" }
        func shapeError() -> HTTPError { HTTPError(400, "input \"\(name())\": \"shape\" must be a list of non-negative integers") }
        guard let shapeNode = tape.member(node, "shape"), tape.kind(shapeNode) == .array, tape.count(shapeNode) > 0 else { throw shapeError() }
        var dims = (rows: 1, columns: 1), product = 1, overflow = false
        var dim = tape.firstElement(shapeNode)
        for d in 0..<tape.count(shapeNode) {
            defer { dim = tape.next(dim) }
            guard let n = tape.number(dim), n >= 0, n == n.rounded(), n < 1e9 else { throw shapeError() }
            if d == 0 { dims.rows = Int(n) } else if d == 1 { dims.columns = Int(n) }
            let (p, o) = product.multipliedReportingOverflow(by: Int(n))
            product = p
            overflow = overflow || o
        }
        guard dims.rows <= maxRows else {
            throw tooMany("input \"\(name())\": \(dims.rows) rows")
        }
        guard let typeNode = tape.member(node, "datatype"), tape.kind(typeNode) == .string, let type = tape.string(typeNode) else {
            throw HTTPError(400, "input \"\(name())\": missing \"datatype\"")
        }
        guard type == "BYTES" || Self.numericDatatypes.contains(type) else {
            throw HTTPError(400, "input \"\(name())\": datatype \"\(type.prefix(40))\" is not one of BYTES, \(Self.numericDatatypes.sorted().joined(separator: ", "))")
        }
        guard let dataNode = tape.member(node, "data"), tape.kind(dataNode) == .array else {
            throw HTTPError(400, "input \"\(name())\": missing \"data\"")
        }
        let offset = data.count
        flatten(tape, dataNode, into: &data)
        let count = data.count - offset
        guard !overflow, count == product else {
            throw HTTPError(400, "input \"\(name())\": shape \(shapeText(tape, shapeNode)) holds \(overflow ? "more" : "\(product)") values, data has \(count)")
        }
        return Tensor(
            nameNode: nameNode, shapeNode: shapeNode, rank: tape.count(shapeNode), rows: dims.rows, columns: dims.columns,
            datatype: type, offset: offset, count: count)
    }

    /// The tensor datatypes of the Open Inference Protocol.
    static let numericDatatypes: Set<String> = [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16",
    ]

    /// Whether a tensor's datatype fits where it goes: BYTES for a category field, a number type for
    /// a number field (`field`); a whole-record [N, F] tensor (`field` nil) is BYTES, as its rows mix
    /// numbers and text, or a number type when every field is a number.
    private func checkDatatype(_ t: Tensor, _ tape: JSONTape, field: Int?, scorer: Scorer) throws {
        let input = tape.string(t.nameNode) ?? ""
        let fields = scorer.document.schema.fields
        if let field {
            let isNumber = fields[field].type == .number
            if isNumber != (t.datatype != "BYTES") {
                throw HTTPError(400, "input \"\(input)\": datatype \(t.datatype) does not fit a \(isNumber ? "number" : "category") field; send \(isNumber ? "FP64" : "BYTES")")
            }
        } else if t.datatype != "BYTES" && fields.contains(where: { $0.type != .number }) {
            throw HTTPError(400, "input \"\(input)\": a whole-record tensor mixes numbers and categories, so its datatype is BYTES, not \(t.datatype)")
        }
    }

    /// The 413 for a request with more rows than `maxRows`; `what` says how many it had.
    private func tooMany(_ what: String) -> HTTPError {
        HTTPError(413, "\(what); a request scores at most \(maxRows) (serve --max-rows)")
    }

    /// A shape as sent, for messages: `[2, 15]`.
    private func shapeText(_ tape: JSONTape, _ shapeNode: Int) -> String {
        "[" + tape.elements(shapeNode).map { JSONWriter.numberText(tape.number($0) ?? .nan) }.joined(separator: ", ") + "]"
    }

    /// Appends the leaves of a (nested) array, in order.
    private func flatten(_ tape: JSONTape, _ array: Int, into out: inout [Int32]) {
        var child = tape.firstElement(array)
        for _ in 0..<tape.count(array) {
            if tape.kind(child) == .array { flatten(tape, child, into: &out) } else { out.append(Int32(child)) }
            child = tape.next(child)
        }
    }

    // MARK: - Azure ML

    private func azureScore(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) throws -> HTTPResponse {
        let scorer = snapshot.scorer
        let explain = wantsExplanation(request)
        let shadow = shadowing.with(loop: context.loop) { $0 }
        let drift = snapshot.drift.read(loop: context.loop)
        // The loop's scratch (tape, cells, probabilities) is reused from request to request.
        return try inferScratch.with(loop: context.loop) { s in try request.body.withUnsafeBytes { body in
            do { try s.tape.parse(body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
            let tape = s.tape
            guard let data = tape.member(tape.root, "data"), tape.kind(data) == .array || tape.kind(data) == .object else {
                throw HTTPError(400, #"expected {"data": [[values in schema order], ...]} or {"data": [{"field": value, ...}, ...]}"#)
            }
            let count = tape.kind(data) == .object ? 1 : tape.count(data)
            guard count <= maxRows else { throw tooMany("\(count) records") }
            s.probabilities.removeAll(keepingCapacity: true)
            s.probabilities.append(contentsOf: repeatElement(0, count: scorer.outputCount))
            var w = JSONWriter()
            w.reserveCapacity(16 + min(count, 256) * (48 + 32 * scorer.classes.count))
            w.raw("[")
            var record = tape.kind(data) == .object ? data : tape.firstElement(data)
            for r in 0..<count {
                defer { record = tape.next(record) }
                let label: Int
                do {
                    label = try s.probabilities.withUnsafeMutableBufferPointer { out in
                        Result { () throws(ScoringError) -> Int in
                            try scorer.predict(tape: tape, record: record, row: r + 1, fieldNodes: &s.cells, into: out.baseAddress!)
                        }
                    }.get()
                } catch {
                    throw HTTPError(400, (error as? ScoringError)?.description ?? "\(error)")
                }
                if let log = predictionLog, log.sample(loop: context.loop) {
                    let key = log.options.key.flatMap { PredictionLog.keyText(tape, record, $0) }
                    s.probabilities.withUnsafeBufferPointer { p in
                        log.append(logLine(context, row: r + 1, snapshot, key: key, label: label, p.baseAddress!) { $0.raw(tape.text(record)) })
                    }
                }
                if let shadow, shadow.comparison.sample(loop: context.loop, percent: shadow.sample) {
                    shadow.comparison.offer(loop: context.loop, live: snapshot, shadow: shadow.snapshot, requestID: context.requestID, row: r + 1) { $0.raw(tape.text(record)) }
                }
                if let drift {
                    s.cells.withUnsafeBufferPointer { drift.observe(loop: context.loop, tape: tape, nodes: $0, probability: s.probabilities.last) }
                }
                if r > 0 { w.raw(",") }
                guard explain else {
                    writePrediction(&w, label: label, s.probabilities, scorer)
                    continue
                }
                let values = s.cells.withUnsafeBufferPointer { scorer.fieldValues(tape: tape, fieldNodes: $0) }
                do {
                    let explanation = try scorer.explain(values, row: r + 1)
                    var object = explanation.prediction.json(scorer)
                    object.append("explanation", explanation.json(scorer))
                    w.value(.object(object))
                } catch {
                    throw HTTPError(400, (error as? ScoringError)?.description ?? "\(error)")
                }
            }
            w.raw("]")
            return jsonBytes(200, w.bytes)
        } }
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
        let outcome: JSONObject = snapshot.scorer.isRegression
            ? JSONObject(["value": .object(JSONObject(["type": .string("number"), "description": .string(snapshot.scorer.target ?? "")]))])
            : JSONObject([
                "label": .object(JSONObject(["type": .string("string"), "enum": .array(snapshot.scorer.classes.map(JSONValue.string))])),
                "probabilities": .object(JSONObject(["type": .string("object"), "properties": .object(probabilities)])),
            ])
        let prediction: JSONValue = .object(JSONObject(["type": .string("object"), "properties": .object(outcome)]))
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

    private func mlflowInvocations(_ request: HTTPRequest, _ context: RequestContext, _ snapshot: ModelSnapshot) throws -> HTTPResponse {
        let scorer = snapshot.scorer
        var explain = wantsExplanation(request)
        var records: [JSONValue]
        if isCSV(request) {
            // Each CSV row as the record it stands for (an empty cell is missing).
            records = try csvRows(request.body, scorer).map { row -> JSONValue in
                var object = JSONObject()
                for (name, value) in zip(scorer.fieldNames, row) {
                    switch value {
                    case .number(let x): object.append(name, .number(x))
                    case .text(let t): object.append(name, .string(t))
                    case .missing: object.append(name, .null)
                    }
                }
                return .object(object)
            }
        } else {
            let body = try parseBody(request)
            if case .bool(true)? = body["params"]?["explain"] { explain = true }
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
        }
        let scored = try score(records, scorer, explain: explain)
        logRecords(context, snapshot, records, scored.map(\.prediction))
        return json(200, .object(JSONObject(["predictions": .array(scored.map(\.json))])))
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

    // MARK: - The prediction log

    /// One line of the prediction log (see `PredictionLog.line`).
    func logLine(
        _ context: RequestContext, row: Int, _ snapshot: ModelSnapshot, key: String?, label: Int, _ probabilities: UnsafePointer<Double>,
        record: (inout JSONWriter) -> Void
    ) -> [UInt8] {
        guard let predictionLog else { return [] }
        return predictionLog.line(
            requestID: context.requestID, row: row, loop: context.loop, identity: snapshot.logIdentity, key: key, record: record,
            label: label, scorer: snapshot.scorer, probabilities: probabilities)
    }

    /// MLflow's records (already parsed) and their predictions, sampled into the log.
    private func logRecords(_ context: RequestContext, _ snapshot: ModelSnapshot, _ records: [JSONValue], _ predictions: [Prediction]) {
        if let drift = snapshot.drift.read(loop: context.loop) {
            for (record, prediction) in zip(records, predictions) {
                drift.observe(loop: context.loop, snapshot.scorer.fieldValues(json: record), probability: prediction.probabilities.last)
            }
        }
        if let shadow = shadowing.with(loop: context.loop, { $0 }) {
            for (r, record) in records.enumerated() where shadow.comparison.sample(loop: context.loop, percent: shadow.sample) {
                shadow.comparison.offer(loop: context.loop, live: snapshot, shadow: shadow.snapshot, requestID: context.requestID, row: r + 1) { $0.value(record) }
            }
        }
        guard let log = predictionLog else { return }
        for (r, record) in records.enumerated() where log.sample(loop: context.loop) {
            let prediction = predictions[r]
            let key = log.options.key.flatMap { name -> String? in
                switch record[name] {
                case .string(let s)?: s
                case .number(let x)?: JSONWriter.numberText(x)
                default: nil
                }
            }
            prediction.probabilities.withUnsafeBufferPointer { p in
                log.append(logLine(context, row: r + 1, snapshot, key: key, label: prediction.labelIndex, p.baseAddress!) { $0.value(record) })
            }
        }
    }

    // MARK: - Shared

    private func isCSV(_ request: HTTPRequest) -> Bool {
        request.headers.value(.contentType, hasPrefix: "text/csv")
    }

    private func parseBody(_ request: HTTPRequest) throws -> JSONValue {
        do { return try JSONValue.parse(request.body) } catch { throw HTTPError(400, "the request body is not JSON: \(error)") }
    }

    /// `?explain=true` (or `1`) on the URL.
    private func wantsExplanation(_ request: HTTPRequest) -> Bool {
        guard let value = request.query["explain"] else { return false }
        return value == "true" || value == "1"
    }

    /// Each record's prediction, and its JSON for MLflow's `predictions` (with its explanation when
    /// `explain`; a regression's plain value without one).
    private func score(_ records: [JSONValue], _ scorer: Scorer, explain: Bool) throws -> [(prediction: Prediction, json: JSONValue)] {
        guard records.count <= maxRows else { throw tooMany("\(records.count) records") }
        var out: [(prediction: Prediction, json: JSONValue)] = []
        out.reserveCapacity(records.count)
        for (i, record) in records.enumerated() {
            do {
                guard explain else {
                    let prediction = try scorer.predict(json: record, row: i + 1)
                    // MLflow answers a regression with its plain numbers.
                    out.append((prediction, prediction.value.map(JSONValue.number) ?? .object(prediction.json(scorer))))
                    continue
                }
                let explanation = try scorer.explain(json: record, row: i + 1)
                var object = explanation.prediction.json(scorer)
                object.append("explanation", explanation.json(scorer))
                out.append((explanation.prediction, .object(object)))
            } catch {
                throw HTTPError(400, error.description)
            }
        }
        return out
    }
}

/// Writes `{"label": ..., "probabilities": {class: p, ...}}`, or a regression's `{"value": x}`.
func writePrediction(_ w: inout JSONWriter, label: Int, _ probabilities: [Double], _ scorer: Scorer) {
    w.raw("{")
    writeOutcome(&w, label: label, scorer) { probabilities[$0] }
    w.raw("}")
}

/// Writes the members `"label": ..., "probabilities": {class: p, ...}` — or a regression model's
/// `"value": x` — of an object the caller opened. `outcome(k)` is the record's k-th outcome number.
@inline(__always)
func writeOutcome(_ w: inout JSONWriter, label: Int, _ scorer: Scorer, _ outcome: (Int) -> Double) {
    if scorer.isRegression {
        w.raw(#""value":"#)
        w.number(outcome(0))
        return
    }
    let classes = scorer.classes
    w.raw(#""label":"#)
    w.string(classes[label])
    w.raw(#","probabilities":{"#)
    for (k, c) in classes.enumerated() {
        if k > 0 { w.raw(",") }
        w.string(c)
        w.raw(":")
        w.number(outcome(k))
    }
    w.raw("}")
}

/// A JSON response from bytes already written.
func jsonBytes(_ status: Int, _ bytes: [UInt8]) -> HTTPResponse {
    var headers = HTTPHeaders()
    headers.add("Content-Type", "application/json")
    return HTTPResponse(status: status, headers: headers, body: bytes)
}

