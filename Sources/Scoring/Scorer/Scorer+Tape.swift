import JSON
extension Scorer {
    /// Scores the record at `node` of `tape` — an object by field name (other
    /// members ignored) or an array in schema order — without building values:
    /// numbers are parsed and categories looked up straight from the request
    /// bytes. Probabilities go to `out` (`outputCount` of them); returns the
    /// label index. Errors are the same as `predict(json:)`'s.
    package func predict(
        tape: JSONTape, record node: Int, row: Int?, fieldNodes: inout [Int32], into out: UnsafeMutablePointer<Double>
    ) throws(ScoringError) -> Int {
        fieldNodes.removeAll(keepingCapacity: true)
        fieldNodes.append(contentsOf: repeatElement(-1, count: plans.count))
        switch tape.kind(node) {
        case .object:
            tape.forEachMember(node) { key, value in
                if let field = fieldIndex(tape, key) { fieldNodes[field] = Int32(value) }
            }
            return try fieldNodes.withUnsafeBufferPointer { nodes in
                Result { () throws(ScoringError) -> Int in try predict(tape: tape, fieldNodes: nodes, row: row, record: node, into: out) }
            }.get()
        case .array:
            guard tape.nodes[node].count == plans.count else { throw arrayLength(Int(tape.nodes[node].count), row: row) }
            var f = 0
            tape.forEachElement(node) { element in
                fieldNodes[f] = Int32(element)
                f += 1
            }
            return try fieldNodes.withUnsafeBufferPointer { nodes in
                Result { () throws(ScoringError) -> Int in try predict(tape: tape, fieldNodes: nodes, row: row, record: nil, into: out) }
            }.get()
        default:
            throw ScoringError(row: row, field: nil, message: "expected a record (a JSON object or array), got \(tape.value(node).excerpt)")
        }
    }

    /// Scores one row whose field values are the tape nodes `fieldNodes` (schema
    /// order; -1 for an absent field). `record` is the object node the fields came
    /// from, if any, for the misspelling hint of a missing field.
    package func predict(
        tape: JSONTape, fieldNodes: UnsafeBufferPointer<Int32>, row: Int?, record: Int?, into out: UnsafeMutablePointer<Double>
    ) throws(ScoringError) -> Int {
        try scoreRecord(into: out, row: row) { m throws(ScoringError) in
            for i in plans.indices {
                let node = Int(fieldNodes[i])
                guard node >= 0 else {
                    try addMissing(field: i, m, row, record: record.map { keys(tape, $0) })
                    continue
                }
                let n = tape.nodes[node]
                switch n.kind {
                case .null:
                    try addMissing(field: i, m, row, record: nil)
                case .number:
                    // The tape's grammar check guarantees a decimal; a huge one parses to ±inf and is refused.
                    try addNumber(field: i, DecimalParser.parse(tape.rawBytes(node)) ?? .nan, m, row)
                case .string:
                    switch plans[i] {
                    case .number:
                        throw notANumber(field: i, tape.string(node) ?? "", row: row)
                    case .category(let slot):
                        let code = n.escaped ? categoryTables[slot].code(of: tape.string(node) ?? "") : categoryTables[slot].code(of: tape.rawBytes(node))
                        try addCode(field: i, slot, code, m, row, text: tape.string(node) ?? "")
                    }
                default:
                    throw wrongType(field: i, tape.value(node), row: row)
                }
            }
        }
    }

    /// The field that string node `node` names (its index in schema order), without making a String.
    @inline(__always)
    package func fieldIndex(_ tape: JSONTape, _ node: Int) -> Int? {
        guard tape.kind(node) == .string else { return nil }
        let code = tape.nodes[node].escaped ? fieldTable.code(of: tape.string(node) ?? "") : fieldTable.code(of: tape.rawBytes(node))
        return code < 0 ? nil : Int(code)
    }

    private func keys(_ tape: JSONTape, _ object: Int) -> [String] {
        var out: [String] = []
        tape.forEachMember(object) { key, _ in out.append(tape.string(key) ?? "") }
        return out
    }
}
