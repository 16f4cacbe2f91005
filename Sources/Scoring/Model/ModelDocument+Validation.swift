extension ModelDocument {
    /// The number of design-vector columns the preprocessing produces.
    public var designWidth: Int {
        preprocessing.reduce(0) { width, step in
            if step.transform == .oneHot,
                let field = schema.fields.first(where: { $0.name == step.field })
            {
                return width + (field.values?.count ?? 0)
            }
            return width + 1
        }
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

        var seen: Set<String> = []
        for (i, field) in schema.fields.enumerated() {
            let at = "schema.fields[\(i)] (\"\(field.name)\")"
            guard !field.name.isEmpty else { throw ModelFormatError("schema.fields[\(i)]: empty name") }
            guard seen.insert(field.name).inserted else { throw ModelFormatError("\(at): duplicate field name") }
            switch field.type {
            case .number:
                guard field.values == nil else { throw ModelFormatError("\(at): a number field has no \"values\"") }
                guard field.missing != .allZeros else {
                    throw ModelFormatError("\(at): missing must be \"error\" or \"impute\" for a number")
                }
            case .category:
                guard let values = field.values, !values.isEmpty else {
                    throw ModelFormatError("\(at): a category field needs a non-empty \"values\" list")
                }
                // Categories match byte for byte (as scikit-learn compares code points).
                guard Set(values.map { Array($0.utf8) }).count == values.count
                else { throw ModelFormatError("\(at): \"values\" has duplicates") }
                guard field.missing != .impute else {
                    throw ModelFormatError("\(at): missing must be \"error\" or \"all_zeros\" for a category")
                }
                guard field.unknown != nil else {
                    throw ModelFormatError("\(at): a category field needs \"unknown\": \"error\" or \"all_zeros\"")
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
            case (.number, .standardize):
                guard let mean = step.mean, mean.isFinite, let scale = step.scale, scale.isFinite, scale != 0 else {
                    throw ModelFormatError("\(at): standardize needs a finite \"mean\" and a finite, non-zero \"scale\"")
                }
            case (.category, .oneHot): break
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
        guard classes.count >= 2, Set(classes).count == classes.count else {
            throw ModelFormatError("outputs.classes needs at least two distinct classes")
        }
        let rows = estimator.coefficients.count
        switch estimator.link {
        case .logistic:
            guard classes.count == 2, rows == 1 else {
                throw ModelFormatError(
                    "estimator: link \"logistic\" takes 2 classes and 1 coefficient row (got \(classes.count) classes, \(rows) rows)")
            }
        case .softmax:
            guard rows == classes.count else {
                throw ModelFormatError(
                    "estimator: link \"softmax\" takes one coefficient row per class (got \(rows) rows for \(classes.count) classes)")
            }
        }
        guard estimator.intercepts.count == rows else {
            throw ModelFormatError("estimator: \(estimator.intercepts.count) intercepts for \(rows) coefficient rows")
        }
        for (k, row) in estimator.coefficients.enumerated() {
            guard row.count == width else {
                throw ModelFormatError(
                    "estimator.coefficients[\(k)] has \(row.count) values; the preprocessing makes \(width) columns")
            }
            guard row.allSatisfy(\.isFinite) else { throw ModelFormatError("estimator.coefficients[\(k)] has a non-finite value") }
        }
        guard estimator.intercepts.allSatisfy(\.isFinite) else { throw ModelFormatError("estimator.intercepts has a non-finite value") }
    }
}
