import Foundation

#if canImport(Glibc)
import Glibc
import JSON
#endif

/// An XGBoost JSON model (`booster.save_model("m.json")`, XGBoost 1.6 and later).
///
/// What prediction does, and so what this keeps: a split sends `x < split_condition`
/// left, compared in float32; a missing value goes the `default_left` way; a
/// leaf's output is its `split_conditions` entry (not `base_weights`); a
/// categorical split (`split_type` 1) sends the codes in its set right; trees
/// add to the margin of their `tree_info` class, in float32, starting from the
/// base margin. `base_score` is a probability for `binary:logistic` (the margin
/// is its logit) and already a margin for `multi:softprob`/`softmax`; it may be
/// written `"5E-1"` or `"[5E-1]"` (a vector per class in XGBoost 3). Nodes left
/// unreachable by pruning (deleted nodes) are dropped.
struct XGBoostModel {
    let ensemble: ForeignEnsemble

    init(_ data: Data) throws(ModelFormatError) {
        let root: JSONValue
        do {
            root = try JSONValue.parse(data)
        } catch {
            throw ModelFormatError("not an XGBoost JSON model: \(error)")
        }
        guard let learner = root["learner"] else {
            throw ModelFormatError("not an XGBoost JSON model: no \"learner\" (save it with booster.save_model(\"model.json\"))")
        }
        let version = root["version"]?.arrayOfNumbers?.map { wholeNumber($0).map(String.init) ?? "?" }.joined(separator: ".")
        guard let objective = learner["objective"]?["name"]?.stringValue else {
            throw ModelFormatError("learner.objective.name is missing")
        }
        guard let booster = learner["gradient_booster"], let boosterName = booster["name"]?.stringValue else {
            throw ModelFormatError("learner.gradient_booster is missing")
        }
        guard boosterName == "gbtree" else {
            throw ModelFormatError("booster \"\(boosterName)\" is not supported; only gbtree is (dart and gblinear are not)")
        }
        guard let model = booster["model"], case .array(let treeValues)? = model["trees"] else {
            throw ModelFormatError("gradient_booster.model.trees is missing")
        }
        let params = learner["learner_model_param"]
        let numFeature = Int(params?["num_feature"]?.stringValue ?? "") ?? 0
        let numClass = Int(params?["num_class"]?.stringValue ?? "") ?? 0
        guard (0...maxImportedFeatures).contains(numFeature) else {
            throw ModelFormatError("num_feature \(numFeature) is not a feature count (0 to \(maxImportedFeatures))")
        }
        guard (0...maxImportedClasses).contains(numClass) else {
            throw ModelFormatError("num_class \(numClass) is not a class count (0 to \(maxImportedClasses))")
        }
        if let targets = Int(params?["num_target"]?.stringValue ?? ""), targets > 1 {
            throw ModelFormatError("multi-target models (num_target \(targets)) are not supported")
        }
        let baseScore = try Self.baseScore(params?["base_score"]?.stringValue ?? "0.5")

        let link: ModelDocument.Link
        let intercepts: [Double]
        switch objective {
        case "binary:logistic":
            guard let b = baseScore.first, b > 0, b < 1 else {
                throw ModelFormatError("binary:logistic needs a base_score between 0 and 1, got \(baseScore)")
            }
            link = .logistic
            intercepts = [-log(1 / b - 1)]
        case "multi:softprob", "multi:softmax":
            guard numClass >= 2 else { throw ModelFormatError("\(objective) with num_class \(numClass)") }
            link = .softmax
            intercepts = baseScore.count == numClass ? baseScore : [Double](repeating: baseScore.first ?? 0.5, count: numClass)
        case "reg:squarederror", "reg:linear", "reg:pseudohubererror", "reg:absoluteerror", "reg:quantileerror":
            // The prediction is the margin, which starts at base_score untransformed.
            guard baseScore.count == 1 else {
                throw ModelFormatError("\(objective) with \(baseScore.count) base scores (a multi-quantile or multi-target model) is not supported")
            }
            link = .identity
            intercepts = baseScore
        default:
            throw ModelFormatError("objective \"\(objective)\" is not supported; Switchyard imports binary:logistic, multi:softprob, multi:softmax and the regressions reg:squarederror, reg:pseudohubererror, reg:absoluteerror and reg:quantileerror (not transformed outputs such as reg:logistic, count:poisson, reg:gamma or reg:tweedie)")
        }

        var names = learner["feature_names"]?.arrayOfStrings ?? []
        let types = learner["feature_types"]?.arrayOfStrings ?? []
        let count = max(numFeature, names.count, types.count)
        if names.isEmpty { names = (0..<count).map { "f\($0)" } }
        guard names.count == count else { throw ModelFormatError("feature_names has \(names.count) names for \(count) features") }
        let categorical = (0..<count).map { $0 < types.count && types[$0] == "c" }
        let categoryNames = Self.categories(model["cats"], count: count)

        let info = model["tree_info"]?.arrayOfNumbers ?? []
        guard info.count == treeValues.count else {
            throw ModelFormatError("tree_info has \(info.count) entries for \(treeValues.count) trees")
        }
        var trees: [ForeignEnsemble.Tree] = []
        for (t, value) in treeValues.enumerated() {
            let margin = link == .softmax ? (wholeNumber(info[t]) ?? -1) : 0
            guard (0..<intercepts.count).contains(margin) else { throw ModelFormatError("tree \(t): tree_info \(info[t]) is not a class") }
            trees.append(try Self.tree(value, index: t, margin: margin))
        }
        ensemble = ForeignEnsemble(
            library: "XGBoost" + (version.map { " \($0)" } ?? ""), objective: objective, featureNames: names,
            categorical: categorical, categoryNames: categoryNames, trees: trees, intercepts: intercepts, link: link,
            split: .lessThan, precision: .float32, average: false)
    }

    /// `"5E-1"`, `"[5E-1]"` or `"[a,b,c]"`.
    static func baseScore(_ text: String) throws(ModelFormatError) -> [Double] {
        let inner = text.trimmingCharacters(in: CharacterSet(charactersIn: "[] "))
        let values = inner.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
            throw ModelFormatError("base_score \"\(text)\" is not a number or a list of numbers")
        }
        // XGBoost keeps it as float32.
        return values.map { Double(Float($0!)) }
    }

    /// XGBoost 3 stores each categorical feature's names (`cats.enc`: UTF-8
    /// bytes with offsets), so codes can be matched by name as XGBoost does.
    static func categories(_ cats: JSONValue?, count: Int) -> [[String]?] {
        var out = [[String]?](repeating: nil, count: count)
        guard case .array(let encodings)? = cats?["enc"] else { return out }
        for (f, enc) in encodings.enumerated() where f < count {
            guard let offsets = enc["offsets"]?.arrayOfNumbers, offsets.count > 1,
                let bytes = enc["values"]?.arrayOfNumbers
            else { continue }
            var names: [String] = []
            var start = 0
            for end in offsets.dropFirst().map({ wholeNumber($0) ?? -1 }) {
                guard start <= end, end <= bytes.count else { break }
                names.append(String(decoding: bytes[start..<end].map { UInt8(truncatingIfNeeded: wholeNumber($0) ?? 0) }, as: UTF8.self))
                start = end
            }
            // A list that does not decode cleanly is left for the schema to give.
            if names.count == offsets.count - 1 { out[f] = names }
        }
        return out
    }

    static func tree(_ value: JSONValue, index t: Int, margin: Int) throws(ModelFormatError) -> ForeignEnsemble.Tree {
        func numbers(_ key: String) throws(ModelFormatError) -> [Double] {
            guard let a = value[key]?.arrayOfNumbers else { throw ModelFormatError("tree \(t): \"\(key)\" is missing or not a list of numbers") }
            return a
        }
        let left = try numbers("left_children")
        let right = try numbers("right_children")
        let conditions = try numbers("split_conditions")
        let indices = try numbers("split_indices")
        let defaults = try numbers("default_left")
        let types = value["split_type"]?.arrayOfNumbers ?? []
        let n = left.count
        guard right.count == n, conditions.count == n, indices.count == n, defaults.count == n else {
            throw ModelFormatError("tree \(t): the node arrays have different lengths")
        }
        var nodes = [ForeignEnsemble.Node](repeating: ForeignEnsemble.Node(), count: n)
        // The hessian sums ("cover"): what XGBoost's own TreeSHAP (pred_contribs) weighs paths by.
        if let hessians = value["sum_hessian"]?.arrayOfNumbers, hessians.count == n {
            for i in 0..<n { nodes[i].cover = hessians[i] }
        }
        for i in 0..<n {
            if left[i] < 0 {
                nodes[i].value = Double(Float(conditions[i]))
            } else {
                // Out-of-range numbers become indices that do not exist: converting checks them
                // if the node is reached (a deleted node may carry any).
                nodes[i].feature = wholeNumber(indices[i]) ?? Int(Int32.max)
                nodes[i].threshold = conditions[i]
                nodes[i].left = wholeNumber(left[i]) ?? Int(Int32.max)
                nodes[i].right = wholeNumber(right[i]) ?? Int(Int32.max)
                nodes[i].defaultLeft = defaults[i] != 0
            }
        }
        // Categorical splits: the listed codes go right in XGBoost; Switchyard's
        // sets go left, so the children (and the default side) swap.
        let catNodes = value["categories_nodes"]?.arrayOfNumbers ?? []
        let segments = value["categories_segments"]?.arrayOfNumbers ?? []
        let sizes = value["categories_sizes"]?.arrayOfNumbers ?? []
        let categories = value["categories"]?.arrayOfNumbers ?? []
        guard segments.count == catNodes.count, sizes.count == catNodes.count else {
            throw ModelFormatError("tree \(t): categories_nodes, categories_segments and categories_sizes differ in length")
        }
        for (k, nodeValue) in catNodes.enumerated() {
            guard let i = wholeNumber(nodeValue), let start = wholeNumber(segments[k]), let size = wholeNumber(sizes[k]),
                  nodes.indices.contains(i), nodes[i].feature >= 0, start >= 0, size >= 0, size <= categories.count - start
            else {
                throw ModelFormatError("tree \(t): categorical split \(k) is out of range")
            }
            let codes = categories[start..<(start + size)].map { wholeNumber($0) ?? -1 }
            guard codes.allSatisfy({ $0 >= 0 }) else { throw ModelFormatError("tree \(t): categorical split \(k) lists a code that is not a whole number ≥ 0") }
            nodes[i].categoriesLeft = codes
            (nodes[i].left, nodes[i].right) = (nodes[i].right, nodes[i].left)
            nodes[i].defaultLeft.toggle()
        }
        for (i, type) in types.prefix(n).enumerated() where type == 1 && nodes[i].feature >= 0 && nodes[i].categoriesLeft == nil {
            throw ModelFormatError("tree \(t): node \(i) is a categorical split without categories")
        }
        return ForeignEnsemble.Tree(margin: margin, nodes: nodes)
    }
}

extension JSONValue {
    var arrayOfNumbers: [Double]? {
        guard case .array(let a) = self else { return nil }
        var out: [Double] = []
        out.reserveCapacity(a.count)
        for v in a {
            switch v {
            case .number(let x): out.append(x)
            case .bool(let b): out.append(b ? 1 : 0)
            default: return nil
            }
        }
        return out
    }

    var arrayOfStrings: [String]? {
        guard case .array(let a) = self else { return nil }
        var out: [String] = []
        for v in a {
            guard case .string(let s) = v else { return nil }
            out.append(s)
        }
        return out
    }
}
