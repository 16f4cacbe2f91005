import Foundation
import JSON

/// A LightGBM text model (`booster.save_model("m.txt")`, format v3/v4).
///
/// What prediction does, and so what this keeps: a split sends `x <= threshold`
/// left, compared in double. `decision_type` bit 0 marks a categorical split
/// (codes in its bitset go left; NaN and negative codes go right), bit 1 the
/// default-left side, bits 2–3 the missing type: None (NaN is read as 0),
/// Zero (0 and NaN take the default side) or NaN (NaN takes it). Trees are
/// interleaved by class (`num_tree_per_iteration`); `average_output` (random
/// forests) divides each class's sum by the iteration count; a binary model's
/// `sigmoid:` scales the margin before the logistic function (folded into the
/// leaf values here). Category names come from `pandas_categorical` when the
/// model was trained on pandas categoricals.
struct LightGBMModel {
    let ensemble: ForeignEnsemble

    init(_ data: Data) throws(ModelFormatError) {
        let text = String(decoding: data, as: UTF8.self)
        var header: [String: String] = [:]
        var blocks: [[String: String]] = []
        var averageOutput = false
        var inTrees = false
        var current: [String: String]?
        var sawEnd = false
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line == "end of trees" {
                if let c = current { blocks.append(c) }
                current = nil
                sawEnd = true
                break
            }
            if line.hasPrefix("Tree=") {
                if let c = current { blocks.append(c) }
                current = [:]
                inTrees = true
                continue
            }
            if !inTrees && line == "average_output" { averageOutput = true }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<eq])
            let value = String(line[line.index(after: eq)...])
            if current != nil { current![key] = value } else if !inTrees { header[key] = value }
        }
        // pandas_categorical is the file's last line, after the trees and the parameters.
        let pandasCategorical = text.range(of: "\npandas_categorical:").map { String(text[$0.upperBound...].prefix { $0 != "\n" }) }
        guard header["version"] != nil, header["max_feature_idx"] != nil else {
            throw ModelFormatError("not a LightGBM text model: no version= or max_feature_idx= line (save it with booster.save_model(\"model.txt\"))")
        }
        guard sawEnd else { throw ModelFormatError("the model file is cut short: no \"end of trees\" line") }

        let objectiveLine = header["objective"] ?? ""
        let words = objectiveLine.split(separator: " ").map(String.init)
        let objective = words.first ?? ""
        var options: [String: String] = [:]
        for word in words.dropFirst() {
            let parts = word.split(separator: ":", maxSplits: 1).map(String.init)
            if parts.count == 2 { options[parts[0]] = parts[1] }
        }
        let perIteration = Int(header["num_tree_per_iteration"] ?? "1") ?? 1
        guard (1...maxImportedClasses).contains(perIteration) else {
            throw ModelFormatError("num_tree_per_iteration \(perIteration) is not a class count (1 to \(maxImportedClasses))")
        }
        let link: ModelDocument.Link
        var scale = 1.0
        switch objective {
        case "binary":
            link = .logistic
            if let s = options["sigmoid"] {
                guard let v = Double(s), v > 0 else { throw ModelFormatError("objective \"\(objectiveLine)\": sigmoid must be a positive number") }
                scale = v
            }
        case "multiclass", "softmax":
            link = .softmax
        case "regression", "regression_l1", "huber", "fair", "quantile", "mape":
            // The raw score is the prediction, unless the model was trained on √y (reg_sqrt).
            guard !words.contains("sqrt") else {
                throw ModelFormatError("objective \"\(objectiveLine)\": a model trained with reg_sqrt predicts the square root of its target; Switchyard does not import it")
            }
            link = .identity
        default:
            throw ModelFormatError("objective \"\(objectiveLine)\" is not supported; Switchyard imports binary, multiclass, and the regressions regression (l2), regression_l1, huber, fair, quantile and mape (not \(objective)'s transformed output)")
        }
        let margins = link == .softmax ? perIteration : 1
        guard margins >= 1, link == .softmax ? perIteration >= 2 : perIteration == 1 else {
            throw ModelFormatError("num_tree_per_iteration \(perIteration) does not fit objective \"\(objective)\"")
        }

        let maxFeature = Int(header["max_feature_idx"] ?? "") ?? -1
        guard (0..<maxImportedFeatures).contains(maxFeature) else {
            throw ModelFormatError("max_feature_idx \(header["max_feature_idx"] ?? "(missing)") is not a feature index (0 to \(maxImportedFeatures - 1))")
        }
        let featureCount = maxFeature + 1
        var names = (header["feature_names"] ?? "").split(separator: " ").map(String.init)
        if names.isEmpty { names = (0..<featureCount).map { "Column_\($0)" } }
        guard names.count == featureCount else {
            throw ModelFormatError("feature_names has \(names.count) names; max_feature_idx says \(featureCount)")
        }
        let infos = (header["feature_infos"] ?? "").split(separator: " ").map(String.init)
        let categorical = (0..<featureCount).map { f in
            f < infos.count && !infos[f].hasPrefix("[") && infos[f] != "none"
        }
        var categoryNames = [[String]?](repeating: nil, count: featureCount)
        if let json = pandasCategorical, case .array(let lists)? = try? JSONValue.parse(json) {
            let categoricalFeatures = (0..<featureCount).filter { categorical[$0] }
            if lists.count == categoricalFeatures.count {
                for (f, list) in zip(categoricalFeatures, lists) {
                    guard case .array(let values) = list else { continue }
                    categoryNames[f] = values.map { v in
                        switch v {
                        case .string(let s): s
                        case .number(let x): JSONWriter.numberText(x)
                        default: v.jsonText
                        }
                    }
                }
            }
        }

        var trees: [ForeignEnsemble.Tree] = []
        for (t, block) in blocks.enumerated() {
            trees.append(try Self.tree(block, index: t, margin: link == .softmax ? t % perIteration : 0, scale: scale))
        }
        guard !trees.isEmpty else { throw ModelFormatError("the model has no trees") }
        ensemble = ForeignEnsemble(
            library: "LightGBM (text format \(header["version"] ?? "?"))", objective: objectiveLine, featureNames: names,
            categorical: categorical, categoryNames: categoryNames, trees: trees,
            intercepts: [Double](repeating: 0, count: margins), link: link, split: .lessOrEqual, precision: .float64,
            average: averageOutput)
    }

    static func tree(_ block: [String: String], index t: Int, margin: Int, scale: Double) throws(ModelFormatError) -> ForeignEnsemble.Tree {
        func list<T>(_ key: String, _ parse: (Substring) -> T?) throws(ModelFormatError) -> [T] {
            guard let text = block[key] else { throw ModelFormatError("Tree=\(t): no \(key)= line") }
            var out: [T] = []
            for word in text.split(separator: " ") {
                guard let v = parse(word) else { throw ModelFormatError("Tree=\(t): \(key) has \"\(word)\", not a number") }
                out.append(v)
            }
            return out
        }
        guard let leaves = Int(block["num_leaves"] ?? ""), leaves >= 1 else { throw ModelFormatError("Tree=\(t): no num_leaves") }
        if block["is_linear"] == "1" { throw ModelFormatError("Tree=\(t): linear trees (linear_tree=true) are not supported") }
        let leafValues = try list("leaf_value") { Double($0) }
        guard leafValues.count == leaves else { throw ModelFormatError("Tree=\(t): \(leafValues.count) leaf values for \(leaves) leaves") }
        // Data counts: what LightGBM's own TreeSHAP (pred_contrib) weighs paths by.
        let leafCounts = (try? list("leaf_count") { Double($0) }).flatMap { $0.count == leaves ? $0 : nil }
        var leafNodes = leafValues.map { ForeignEnsemble.Node(value: $0 * scale) }
        if let leafCounts { for k in 0..<leaves { leafNodes[k].cover = leafCounts[k] } }
        guard leaves > 1 else { return ForeignEnsemble.Tree(margin: margin, nodes: leafNodes) }

        let splits = leaves - 1
        let features = try list("split_feature") { Int($0) }
        let thresholds = try list("threshold") { Double($0) }
        let decisions = try list("decision_type") { Int($0) }
        let lefts = try list("left_child") { Int($0) }
        let rights = try list("right_child") { Int($0) }
        guard features.count == splits, thresholds.count == splits, decisions.count == splits, lefts.count == splits,
            rights.count == splits
        else { throw ModelFormatError("Tree=\(t): the split arrays do not have num_leaves - 1 (\(splits)) entries") }
        let internalCounts = (try? list("internal_count") { Double($0) }).flatMap { $0.count == splits ? $0 : nil }
        let boundaries = (block["num_cat"].flatMap(Int.init) ?? 0) > 0 ? try list("cat_boundaries") { Int($0) } : []
        let bitsets = boundaries.isEmpty ? [] : try list("cat_threshold") { UInt32($0) }

        // Splits first, then leaves: LightGBM's child ~k is leaf k.
        for c in lefts + rights where c < -leaves || c >= splits {
            throw ModelFormatError("Tree=\(t): child \(c) is neither a split (0 to \(splits - 1)) nor a leaf (-1 to -\(leaves))")
        }
        func child(_ c: Int) -> Int { c >= 0 ? c : splits + ~c }
        var nodes: [ForeignEnsemble.Node] = []
        for i in 0..<splits {
            var node = ForeignEnsemble.Node()
            node.cover = leafCounts == nil ? nil : internalCounts?[i]
            node.feature = features[i]
            node.threshold = thresholds[i]
            node.left = child(lefts[i])
            node.right = child(rights[i])
            let d = decisions[i]
            let defaultLeft = d & 2 != 0
            let missing = (d >> 2) & 3
            if d & 1 != 0 {
                // Categorical: NaN and negative codes go right.
                let k = wholeNumber(thresholds[i]) ?? -1
                guard k >= 0, k < boundaries.count - 1, boundaries[k] >= 0, boundaries[k] <= boundaries[k + 1], boundaries[k + 1] <= bitsets.count else {
                    throw ModelFormatError("Tree=\(t): split \(i) names category set \(k), which does not exist")
                }
                var codes: [Int] = []
                for (w, word) in bitsets[boundaries[k]..<boundaries[k + 1]].enumerated() {
                    for b in 0..<32 where word & (1 << UInt32(b)) != 0 { codes.append(w * 32 + b) }
                }
                node.categoriesLeft = codes
                node.defaultLeft = false
                node.threshold = 0
            } else {
                switch missing {
                case 0: node.defaultLeft = 0 <= thresholds[i]  // None: NaN is read as 0
                case 1:
                    node.defaultLeft = defaultLeft  // Zero: 0 and NaN take the default side
                    node.zeroIsMissing = true
                default: node.defaultLeft = defaultLeft  // NaN
                }
            }
            nodes.append(node)
        }
        nodes.append(contentsOf: leafNodes)
        for (i, node) in nodes.prefix(splits).enumerated() {
            guard nodes.indices.contains(node.left), nodes.indices.contains(node.right) else {
                throw ModelFormatError("Tree=\(t): split \(i) has a child out of range")
            }
        }
        return ForeignEnsemble.Tree(margin: margin, nodes: nodes)
    }
}
