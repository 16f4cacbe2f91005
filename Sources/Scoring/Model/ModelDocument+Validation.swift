extension ModelDocument {
    /// Whether the model predicts a number (`outputs.target`, link `identity`) rather than classes.
    public var isRegression: Bool { outputs.target != nil }

    /// The number of design-vector columns the preprocessing produces.
    public var designWidth: Int { designColumns.width }

    /// Where each field's columns start in the design vector (the first step for
    /// a field wins), and how many columns there are: steps in order, a one-hot
    /// step taking one column per value, every other step one.
    package var designColumns: (start: [String: Int], width: Int) {
        var start: [String: Int] = [:]
        var width = 0
        for step in preprocessing {
            if start[step.field] == nil { start[step.field] = width }
            if step.transform == .oneHot {
                width += schema.fields.first { $0.name == step.field }?.values?.count ?? 0
            } else {
                width += 1
            }
        }
        return (start, width)
    }

    /// Checks everything a scorer relies on, naming the first problem found.
    public func validate() throws(ModelFormatError) {
        guard format == Self.formatName else {
            throw ModelFormatError("\"format\" is \"\(format)\", expected \"\(Self.formatName)\"")
        }
        guard formatVersion == Self.currentFormatVersion else {
            throw ModelFormatError(
                "format_version \(formatVersion) is not supported; this switchyard reads version \(Self.currentFormatVersion)")
        }
        guard !schema.fields.isEmpty else { throw ModelFormatError("schema.fields is empty") }
        let isTrees = estimator.type == .treeEnsemble
        var transformOf: [String: Transform] = [:]
        for step in preprocessing where transformOf[step.field] == nil { transformOf[step.field] = step.transform }

        var seen: Set<String> = []
        for (i, field) in schema.fields.enumerated() {
            let at = "schema.fields[\(i)] (\"\(field.name)\")"
            guard !field.name.isEmpty else { throw ModelFormatError("schema.fields[\(i)]: empty name") }
            guard seen.insert(field.name).inserted else { throw ModelFormatError("\(at): duplicate field name") }
            switch field.type {
            case .number:
                guard field.values == nil else { throw ModelFormatError("\(at): a number field has no \"values\"") }
                guard field.missing != .allZeros, field.missing != .passThrough || isTrees else {
                    throw ModelFormatError(
                        "\(at): missing must be \"error\" or \"impute\"\(isTrees ? " or \"pass_through\"" : "") for a number")
                }
            case .category:
                guard let values = field.values, !values.isEmpty else {
                    throw ModelFormatError("\(at): a category field needs a non-empty \"values\" list")
                }
                // Categories match byte for byte (as scikit-learn compares code points).
                guard Set(values.map { Array($0.utf8) }).count == values.count
                else { throw ModelFormatError("\(at): \"values\" has duplicates") }
                let code = transformOf[field.name] == .categoryCode
                guard field.missing != .impute, field.missing != (code ? .allZeros : .passThrough) else {
                    throw ModelFormatError(
                        "\(at): missing must be \"error\" or \"\(code ? "pass_through" : "all_zeros")\" for a category\(code ? " code" : "")")
                }
                guard let unknown = field.unknown, unknown != (code ? .allZeros : .asMissing) else {
                    throw ModelFormatError(
                        "\(at): a category field needs \"unknown\": \"error\" or \"\(code ? "as_missing" : "all_zeros")\"")
                }
            }
        }

        var stepFor: [String: Int] = [:]
        for (i, step) in preprocessing.enumerated() {
            let at = "preprocessing[\(i)] (\"\(step.field)\")"
            guard let field = schema.fields.first(where: { $0.name == step.field }) else {
                throw ModelFormatError("\(at): no schema field of that name")
            }
            guard stepFor.updateValue(i, forKey: step.field) == nil else {
                throw ModelFormatError("\(at): the field already has a preprocessing step")
            }
            switch (field.type, step.transform) {
            case (.number, .identity): break
            case (.number, .standardize) where isTrees:
                throw ModelFormatError("\(at): a tree ensemble reads numbers as they are; use transform \"identity\"")
            case (.number, .standardize):
                guard let mean = step.mean, mean.isFinite, let scale = step.scale, scale.isFinite, scale != 0 else {
                    throw ModelFormatError("\(at): standardize needs a finite \"mean\" and a finite, non-zero \"scale\"")
                }
            case (.category, .oneHot): break
            case (.category, .categoryCode) where isTrees: break
            default:
                throw ModelFormatError("\(at): transform \"\(step.transform.rawValue)\" does not apply to a \(field.type.rawValue) field")
            }
            if field.missing == .impute {
                guard let value = step.impute, value.isFinite else {
                    throw ModelFormatError("\(at): the field's missing policy is \"impute\", so a finite \"impute\" value is needed")
                }
            }
        }
        for field in schema.fields where stepFor[field.name] == nil {
            throw ModelFormatError("schema field \"\(field.name)\" has no preprocessing step")
        }

        let width = designWidth
        let classes = outputs.classes
        let rows = estimator.marginCount
        if let target = outputs.target {
            guard !target.isEmpty, classes.isEmpty else {
                throw ModelFormatError("outputs: a regression model names its \"target\" (non-empty) and lists no classes")
            }
            guard estimator.link == .identity, rows == 1 else {
                throw ModelFormatError(
                    "estimator: a regression model (outputs.target) takes link \"identity\" and 1 margin (got link \"\(estimator.link.rawValue)\", \(rows) margins)")
            }
        } else {
            guard classes.count >= 2, Set(classes).count == classes.count else {
                throw ModelFormatError("outputs.classes needs at least two distinct classes (or outputs.target, for a regression model)")
            }
        }
        switch estimator.link {
        case .logistic:
            guard classes.count == 2, rows == 1 else {
                throw ModelFormatError(
                    "estimator: link \"logistic\" takes 2 classes and 1 margin (got \(classes.count) classes, \(rows) margins)")
            }
        case .softmax:
            guard rows == classes.count else {
                throw ModelFormatError(
                    "estimator: link \"softmax\" takes one margin per class (got \(rows) margins for \(classes.count) classes)")
            }
        case .identity:
            guard outputs.target != nil else {
                throw ModelFormatError("estimator: link \"identity\" is a regression's; outputs needs a \"target\" instead of classes")
            }
        }
        guard estimator.intercepts.count == rows else {
            throw ModelFormatError("estimator: \(estimator.intercepts.count) intercepts for \(rows) margins")
        }
        guard estimator.intercepts.allSatisfy(\.isFinite) else { throw ModelFormatError("estimator.intercepts has a non-finite value") }
        switch estimator.type {
        case .logisticRegression, .linearRegression:
            let type = estimator.type.rawValue
            guard (estimator.type == .linearRegression) == (estimator.link == .identity) else {
                throw ModelFormatError(
                    "estimator: a \(type) takes link \(estimator.type == .linearRegression ? "\"identity\"" : "\"logistic\" or \"softmax\""), not \"\(estimator.link.rawValue)\"")
            }
            guard estimator.trees == nil else { throw ModelFormatError("estimator: a \(type) has no \"trees\"") }
            guard let coefficients = estimator.coefficients else {
                throw ModelFormatError("estimator: a \(type) needs \"coefficients\"")
            }
            for (k, row) in coefficients.enumerated() {
                guard row.count == width else {
                    throw ModelFormatError(
                        "estimator.coefficients[\(k)] has \(row.count) values; the preprocessing makes \(width) columns")
                }
                guard row.allSatisfy(\.isFinite) else { throw ModelFormatError("estimator.coefficients[\(k)] has a non-finite value") }
            }
        case .treeEnsemble:
            guard estimator.coefficients == nil else { throw ModelFormatError("estimator: a tree_ensemble has no \"coefficients\"") }
            guard let ensemble = estimator.trees, !ensemble.trees.isEmpty else {
                throw ModelFormatError("estimator: a tree_ensemble needs a non-empty \"trees\" list")
            }
            for (t, tree) in ensemble.trees.enumerated() {
                try tree.validate(at: "estimator.trees.trees[\(t)]", width: width, margins: rows)
            }
        }
    }
}

extension ModelDocument.Tree {
    /// Checks the arrays agree, every index is in range, and the nodes form one
    /// tree from node 0 (so a walk always ends at a leaf).
    func validate(at: String, width: Int, margins: Int) throws(ModelFormatError) {
        let n = feature.count
        guard n > 0 else { throw ModelFormatError("\(at): no nodes") }
        guard threshold.count == n, left.count == n, right.count == n, defaultLeft.count == n, value.count == n else {
            throw ModelFormatError("\(at): feature, threshold, left, right, default_left and value must have one entry per node (\(n))")
        }
        guard (0..<margins).contains(margin) else {
            throw ModelFormatError("\(at): margin \(margin) is out of range; the estimator has \(margins)")
        }
        var parents = [Int](repeating: 0, count: n)
        for i in 0..<n {
            if feature[i] == -1 {
                guard value[i].isFinite else { throw ModelFormatError("\(at): leaf \(i) has a non-finite value") }
                continue
            }
            guard (0..<width).contains(feature[i]) else {
                throw ModelFormatError("\(at): node \(i) reads column \(feature[i]); the preprocessing makes \(width) columns")
            }
            guard !threshold[i].isNaN else { throw ModelFormatError("\(at): node \(i) has a NaN threshold") }
            for child in [left[i], right[i]] {
                guard (1..<n).contains(child) else { throw ModelFormatError("\(at): node \(i) has child \(child), out of range") }
                parents[child] += 1
            }
        }
        if let bad = parents.indices.dropFirst().first(where: { parents[$0] != 1 }) {
            throw ModelFormatError("\(at): node \(bad) has \(parents[bad]) parents; every node but the root needs exactly one")
        }
        // One parent each and n - 1 edges: a tree if everything is reached from the root.
        var reached = 1
        var stack = [0]
        while let i = stack.popLast() {
            guard feature[i] != -1 else { continue }
            reached += 2
            guard reached <= n else { throw ModelFormatError("\(at): the nodes form a cycle") }
            stack.append(left[i])
            stack.append(right[i])
        }
        guard reached == n else { throw ModelFormatError("\(at): \(n - reached) nodes are not reachable from the root") }
        for split in categorical ?? [] {
            guard (0..<n).contains(split.node), feature[split.node] != -1 else {
                throw ModelFormatError("\(at): categorical split at node \(split.node), which is not a split")
            }
            guard split.left.allSatisfy({ (0..<65_536).contains($0) }) else {
                throw ModelFormatError("\(at): node \(split.node)'s category codes must be in 0..<65536")
            }
        }
        for node in zeroIsMissing ?? [] {
            guard (0..<n).contains(node), feature[node] != -1 else {
                throw ModelFormatError("\(at): zero_is_missing names node \(node), which is not a split")
            }
        }
        if let cover {
            guard cover.count == n, cover.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw ModelFormatError("\(at): cover must have one finite, non-negative number per node (\(n))")
            }
            for i in 0..<n where feature[i] != -1 && cover[i] <= 0 {
                throw ModelFormatError("\(at): node \(i) is a split with cover \(cover[i]); a split's cover must be positive")
            }
        }
    }
}
