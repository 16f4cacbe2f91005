import JSON

/// Why a record got its score: each input field's contribution to each margin (the log-odds of a
/// binary model, one margin per class for a multiclass one), from a base value. The base plus
/// the contributions is the margin the prediction came from.
public struct Explanation: Sendable, Equatable {
    public var prediction: Prediction
    /// Per margin: the margin before any field contributes (a logistic regression's intercept; a
    /// tree ensemble's expected margin over its training data).
    public var base: [Double]
    /// Per margin, per field in schema order.
    public var contributions: [[Double]]

    /// Per margin: base plus the contributions.
    public var margins: [Double] { zip(base, contributions).map { $0 + $1.reduce(0, +) } }
}

extension Scorer {
    /// Whether this model can be explained (a tree ensemble needs its nodes' covers).
    public var explainable: Bool { trees.map { !$0.cover.isEmpty } ?? true }

    /// The record (a JSON object by field name, or an array in schema order) scored and explained.
    /// Logistic regression: each field's term of the margin, one-hot columns summed per field and
    /// standardization folded in (a standardized field contributes w·(x − mean)/scale). Tree
    /// ensembles: exact path-dependent TreeSHAP (XGBoost's `pred_contribs`, LightGBM's
    /// `pred_contrib`) per design column, summed per field.
    public func explain(json record: JSONValue, row: Int? = nil) throws(ScoringError) -> Explanation {
        var values: [(JSONValue?, [String]?)] = []
        switch record {
        case .object(let object):
            for i in plans.indices {
                let value: JSONValue? = i < object.count && object.keys[i] == fieldNames[i] ? object.values[i] : object[fieldNames[i]]
                values.append((value, value == nil ? object.keys : nil))
            }
        case .array(let array):
            guard array.count == plans.count else { throw arrayLength(array.count, row: row) }
            values = array.map { ($0, nil) }
        default:
            throw ScoringError(row: row, field: nil, message: "expected a record (a JSON object or array), got \(record.excerpt)")
        }
        return try explain(row: row) { i, m throws(ScoringError) in try addJSON(field: i, values[i].0, m, row, record: values[i].1) }
    }

    /// A typed record in schema order, scored and explained.
    public func explain(_ values: [FieldValue], row: Int? = nil) throws(ScoringError) -> Explanation {
        guard values.count == plans.count else {
            throw ScoringError(row: row, field: nil, message: "expected \(plans.count) values in schema order, got \(values.count)")
        }
        return try explain(row: row) { i, m throws(ScoringError) in
            switch values[i] {
            case .number(let x): try addNumber(field: i, x, m, row)
            case .text(let text): try addText(field: i, text, m, row)
            case .missing: try addMissing(field: i, m, row, record: nil)
            }
        }
    }

    /// `add(i, m)` adds field `i` to `m` the way scoring does (margins for a linear model, the
    /// design vector for trees). The prediction is scoring's own; the contributions come beside it.
    private func explain(row: Int?, _ add: (Int, UnsafeMutablePointer<Double>) throws(ScoringError) -> Void) throws(ScoringError) -> Explanation {
        let m = marginCount
        var contributions = [[Double]](repeating: [Double](repeating: 0, count: plans.count), count: m)
        var base = [Double](repeating: 0, count: m)
        if let trees, trees.cover.isEmpty {
            throw ScoringError(row: row, field: nil, message: "this model cannot be explained: its trees carry no node covers (it was imported before explanations existed; import it again)")
        }
        var probabilities = [Double](repeating: 0, count: outputCount)
        let label = try probabilities.withUnsafeMutableBufferPointer { p throws(ScoringError) in
            try scoreRecord(into: p.baseAddress!, row: row) { margins throws(ScoringError) in
                for i in plans.indices { try add(i, margins) }
            }
        }
        if let trees {
            var x = designTemplate
            try x.withUnsafeMutableBufferPointer { x throws(ScoringError) in
                for i in plans.indices { try add(i, x.baseAddress!) }
            }
            let columns = trees.explain(x, base: &base)
            for k in 0..<m {
                for (column, phi) in columns[k].enumerated() where phi != 0 { contributions[k][columnField[column]] += phi }
            }
        } else {
            base = document.estimator.intercepts
            try withUnsafeTemporaryAllocation(of: Double.self, capacity: m) { one throws(ScoringError) in
                for i in plans.indices {
                    for k in 0..<m { one[k] = 0 }
                    try add(i, one.baseAddress!)
                    // A standardized number's term is w·x − w·mean: scoring folds the second part into the bias.
                    if case .number(let slot) = plans[i] {
                        for k in 0..<m { contributions[k][i] = one[k] - numberShift[slot * m + k] }
                    } else {
                        for k in 0..<m { contributions[k][i] = one[k] }
                    }
                }
            }
        }
        return Explanation(
            prediction: prediction(probabilities, label: label), base: base, contributions: contributions)
    }
}

extension TreeProgram {
    /// One element of TreeSHAP's path of unique features: the share of zero-paths and one-paths
    /// through it, and the permutation weight.
    struct PathElement {
        var column: Int
        var zero: Double
        var one: Double
        var weight: Double
    }

    /// What one tree walk reads, as raw pointers (the recursion is the hot loop of an explanation).
    struct ShapContext {
        var x: UnsafePointer<Double>
        var nodes: UnsafePointer<Node>
        var flags: UnsafePointer<UInt8>
        var leafValue: UnsafePointer<Double>
        var cover: UnsafePointer<Double>
        var phi: UnsafeMutablePointer<Double>
        /// 1 / n for n in 0...: the path arithmetic's divisions by small whole numbers, as products.
        var reciprocal: UnsafePointer<Double>
    }

    /// Path-dependent TreeSHAP (Lundberg et al., "Consistent individualized feature attribution for
    /// tree ensembles", algorithm 2) over design row `x`: per margin, each column's contribution.
    /// `base` receives each margin's expected value (intercept plus the trees' expected values).
    func explain(_ row: [Double], base: inout [Double]) -> [[Double]] {
        var x = row
        if float32 { for j in x.indices { x[j] = Double(Float(x[j])) } }
        var phi = [Double](repeating: 0, count: marginCount * width)
        for k in 0..<marginCount { base[k] = average ? 0 : intercepts[k] }
        let maxDepth = Int(depths.max() ?? 0) + 2
        var path = [PathElement](repeating: PathElement(column: -1, zero: 0, one: 0, weight: 0), count: (maxDepth + 1) * (maxDepth + 2) / 2 + 1)
        let reciprocal = (0...(maxDepth + 2)).map { $0 == 0 ? 0 : 1 / Double($0) }
        x.withUnsafeBufferPointer { x in
            path.withUnsafeMutableBufferPointer { path in
                nodes.withUnsafeBufferPointer { nodes in
                    flags.withUnsafeBufferPointer { flags in
                        leafValue.withUnsafeBufferPointer { leafValue in
                            cover.withUnsafeBufferPointer { cover in
                                reciprocal.withUnsafeBufferPointer { reciprocal in
                                    phi.withUnsafeMutableBufferPointer { phi in
                                        var context = ShapContext(
                                            x: x.baseAddress!, nodes: nodes.baseAddress!, flags: flags.baseAddress!, leafValue: leafValue.baseAddress!,
                                            cover: cover.baseAddress!, phi: phi.baseAddress!, reciprocal: reciprocal.baseAddress!)
                                        for t in roots.indices {
                                            let k = Int(treeMargin[t])
                                            context.phi = phi.baseAddress! + k * width
                                            recurse(Int(roots[t]), context, path.baseAddress!, depth: 0, zero: 1, one: 1, column: -1)
                                            base[k] += expected[t]
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        var out = (0..<marginCount).map { k in Array(phi[(k * width)..<((k + 1) * width)]) }
        if average {
            for k in 0..<marginCount {
                base[k] = intercepts[k] + base[k] * marginScale[k]
                for j in 0..<width { out[k][j] *= marginScale[k] }
            }
        }
        return out
    }

    private func recurse(
        _ node: Int, _ c: ShapContext, _ parentPath: UnsafeMutablePointer<PathElement>, depth: Int, zero parentZero: Double, one parentOne: Double,
        column parentColumn: Int
    ) {
        var depth = depth
        let path = parentPath + depth + 1
        path.update(from: parentPath, count: depth + 1)
        Self.extend(path, depth, parentZero, parentOne, parentColumn, c.reciprocal)
        if c.flags[node] & Self.leaf != 0 {
            let value = c.leafValue[node]
            if depth >= 1 {
                for i in 1...depth {
                    let w = Self.unwoundSum(path, depth, i, c.reciprocal)
                    c.phi[path[i].column] += w * (path[i].one - path[i].zero) * value
                }
            }
            return
        }
        let split = c.nodes[node]
        let column = Int(split.feature)
        let left = Int(split.left)
        let hot = goesLeft(node, c.x[column], split.threshold) ? left : left + 1
        let cold = hot == left ? left + 1 : left
        var incomingZero = 1.0, incomingOne = 1.0
        // A feature split on again: undo its earlier element, to redo it here.
        var index = 0
        while index <= depth && path[index].column != column { index += 1 }
        if index != depth + 1 {
            incomingZero = path[index].zero
            incomingOne = path[index].one
            Self.unwind(path, depth, index, c.reciprocal)
            depth -= 1
        }
        let covered = 1 / c.cover[node]
        recurse(hot, c, path, depth: depth + 1, zero: c.cover[hot] * covered * incomingZero, one: incomingOne, column: column)
        recurse(cold, c, path, depth: depth + 1, zero: c.cover[cold] * covered * incomingZero, one: 0, column: column)
    }

    @inline(__always)
    private static func extend(
        _ path: UnsafeMutablePointer<PathElement>, _ depth: Int, _ zero: Double, _ one: Double, _ column: Int, _ reciprocal: UnsafePointer<Double>
    ) {
        path[depth] = PathElement(column: column, zero: zero, one: one, weight: depth == 0 ? 1 : 0)
        let inverse = reciprocal[depth + 1]
        var i = depth - 1
        while i >= 0 {
            path[i + 1].weight += one * path[i].weight * Double(i + 1) * inverse
            path[i].weight = zero * path[i].weight * Double(depth - i) * inverse
            i -= 1
        }
    }

    private static func unwind(_ path: UnsafeMutablePointer<PathElement>, _ depth: Int, _ index: Int, _ reciprocal: UnsafePointer<Double>) {
        let one = path[index].one, zero = path[index].zero
        let inverse = reciprocal[depth + 1]
        var next = path[depth].weight
        var i = depth - 1
        while i >= 0 {
            if one != 0 {
                let saved = path[i].weight
                path[i].weight = next * Double(depth + 1) * reciprocal[i + 1] / one
                next = saved - path[i].weight * zero * Double(depth - i) * inverse
            } else {
                path[i].weight = path[i].weight * Double(depth + 1) * reciprocal[depth - i] / zero
            }
            i -= 1
        }
        for j in index..<depth {
            path[j].column = path[j + 1].column
            path[j].zero = path[j + 1].zero
            path[j].one = path[j + 1].one
        }
    }

    @inline(__always)
    private static func unwoundSum(_ path: UnsafeMutablePointer<PathElement>, _ depth: Int, _ index: Int, _ reciprocal: UnsafePointer<Double>) -> Double {
        let one = path[index].one, zero = path[index].zero
        let scale = Double(depth + 1)
        let inverse = reciprocal[depth + 1]
        var total = 0.0
        var i = depth - 1
        if one != 0 {
            let perOne = scale / one
            var next = path[depth].weight
            while i >= 0 {
                let share = next * perOne * reciprocal[i + 1]
                total += share
                next = path[i].weight - share * zero * Double(depth - i) * inverse
                i -= 1
            }
        } else {
            let perZero = scale / zero
            while i >= 0 {
                total += path[i].weight * perZero * reciprocal[depth - i]
                i -= 1
            }
        }
        return total
    }
}

extension Prediction {
    /// `{"label": ..., "probabilities": {class: p, ...}}`, or a regression's `{"value": x}`.
    public func json(_ scorer: Scorer) -> JSONObject {
        if let value { return JSONObject(["value": .number(value)]) }
        var probabilities = JSONObject()
        for (k, c) in scorer.classes.enumerated() { probabilities.append(c, .number(self.probabilities[k])) }
        return JSONObject(["label": .string(label), "probabilities": .object(probabilities)])
    }
}

extension Explanation {
    /// `[{"class", "base", "margin", "contributions": {field: value}}]`, one per margin: for a
    /// binary model the log-odds of its second class; for a multiclass one each class's margin;
    /// for a regression model the value itself ("class" is the target's name).
    public func json(_ scorer: Scorer) -> JSONValue {
        let margins = margins
        return .array(base.indices.map { k in
            var contributions = JSONObject()
            for (f, name) in scorer.fieldNames.enumerated() { contributions.append(name, .number(self.contributions[k][f])) }
            return .object(JSONObject([
                "class": .string(scorer.marginName(k)), "base": .number(base[k]), "margin": .number(margins[k]),
                "contributions": .object(contributions),
            ]))
        })
    }
}

extension Scorer {
    /// What margin `k` is the margin of: a regression's target, a binary model's second class
    /// (its log-odds), a multiclass model's class `k`.
    public func marginName(_ k: Int) -> String {
        if let target { return target }
        return classes[marginCount == 1 ? 1 : k]
    }

    /// Margin `k` for a person: "rate" (a regression's value), "log-odds of 1", "margin of mid".
    public func marginDescription(_ k: Int) -> String {
        if let target { return target }
        return marginCount == 1 ? "log-odds of \(classes[1])" : "margin of \(classes[k])"
    }

    /// The typed values of a JSON record in the schema's order: an object's members by name, a
    /// list by position; anything but a number or a string is missing.
    public func fieldValues(json record: JSONValue) -> [FieldValue] {
        func value(_ v: JSONValue?) -> FieldValue {
            switch v {
            case .number(let x)?: .number(x)
            case .string(let t)?: .text(t)
            default: .missing
            }
        }
        if case .array(let items) = record { return fieldNames.indices.map { value($0 < items.count ? items[$0] : nil) } }
        return fieldNames.map { value(record[$0]) }
    }

    /// The typed values of a record whose fields are tape nodes (schema order; -1 for absent), for
    /// explaining a record that already scored (so every node is a number, a string or null).
    package func fieldValues(tape: JSONTape, fieldNodes: UnsafeBufferPointer<Int32>) -> [FieldValue] {
        fieldNodes.map { node in
            guard node >= 0 else { return .missing }
            switch tape.kind(Int(node)) {
            case .number: return tape.number(Int(node)).map(FieldValue.number) ?? .missing
            case .string: return .text(tape.string(Int(node)) ?? "")
            default: return .missing
            }
        }
    }
}
