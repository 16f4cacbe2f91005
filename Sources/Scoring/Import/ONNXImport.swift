/// An ONNX model as a Switchyard document. The graph is read the way the converters
/// (skl2onnx, onnxmltools) write the supported model kinds: preprocessing operators in front of
/// one estimator, output plumbing behind it. Each tensor before the estimator is followed as a
/// list of columns, each an affine function `a·x + b` of one input number or a 0/1 indicator of
/// one input category (or its code), so Imputer, Scaler, OneHotEncoder, LabelEncoder, Concat, Cast,
/// Reshape and Identity fold
/// into the document's per-field preprocessing, and the estimator's coefficients or tree features
/// land on its design columns. Graph inputs become schema fields: a `[N, 1]` input is a field of
/// its name, a `[N, F]` numeric input F fields `NAME_0`… (or the --schema file's names).
///
/// What is kept faithfully: LinearClassifier (binary LOGISTIC, one row or the converters'
/// negated pair; SOFTMAX), LinearRegressor, TreeEnsembleClassifier/Regressor in both attribute
/// forms (float lists and the `*_as_tensor` doubles of ai.onnx.ml 3) with BRANCH_LT/LEQ/GT/GTE
/// modes, missing values following `nodes_missing_value_tracks_true`, SUM or AVERAGE, base
/// values, and LOGISTIC (binary, one margin) or SOFTMAX post-transforms. Float graphs compare in
/// float32, as onnxruntime does. Anything else is refused naming the operator, the node and the
/// opset.
struct ONNXImport {
    /// What one column of a tensor holds, in terms of the graph's inputs.
    enum Column: Equatable {
        case number(field: Int, a: Double, b: Double)
        case indicator(field: Int, value: Int)
        /// A category's index in its field's values (a LabelEncoder's code).
        case code(field: Int)
        /// A category input's text: only a OneHotEncoder or a LabelEncoder reads it.
        case text(field: Int)
    }

    struct Field {
        var name: String
        var isCategory: Bool
        var values: [String]? = nil
        var impute: Double? = nil
        /// OneHotEncoder's `zeros`: an unknown category is all zeros (true) or an error.
        var unknownIsZeros = true
        /// Label-encoded (one code column) rather than one-hot encoded.
        var coded = false
        var inputType = 0
    }

    let model: ONNXModel
    var fields: [Field] = []
    var tensors: [String: [Column]] = [:]

    static func convert(
        _ data: [UInt8], schema: ImportSchema?, source: ModelDocument.Imported, name: String, created: String
    ) throws(ModelFormatError) -> ModelDocument {
        var importer = ONNXImport(model: try ONNXModel(data))
        return try importer.document(schema: schema, source: source, name: name, created: created)
    }

    private init(model: ONNXModel) { self.model = model }

    /// `node "NAME" (OP, ai.onnx.ml opset 3)`, for messages.
    func describe(_ node: ONNXModel.Node) -> String {
        let domain = node.domain.isEmpty ? "ai.onnx" : node.domain
        let opset = model.opsets[node.domain].map { " opset \($0)" } ?? " (no opset imported for it)"
        return "node \"\(node.name.isEmpty ? node.outputs.first ?? "?" : node.name)\" (\(node.op), \(domain)\(opset))"
    }

    private mutating func document(
        schema: ImportSchema?, source: ModelDocument.Imported, name: String, created: String
    ) throws(ModelFormatError) -> ModelDocument {
        try readInputs(schema: schema)
        let estimators: Set<String> = ["LinearClassifier", "LinearRegressor", "TreeEnsembleClassifier", "TreeEnsembleRegressor"]
        var estimator: ONNXModel.Node?
        var downstream: Set<String> = []
        for node in model.nodes {
            guard estimator == nil else {
                try checkPlumbing(node, after: estimator!, downstream: &downstream)
                continue
            }
            guard node.domain.isEmpty || node.domain == "ai.onnx.ml" else {
                throw ModelFormatError("\(describe(node)): the domain \(node.domain) is not supported")
            }
            if estimators.contains(node.op) {
                estimator = node
                downstream.formUnion(node.outputs)
                continue
            }
            try fold(node)
        }
        guard let estimator else {
            throw ModelFormatError("the graph has no estimator: Switchyard imports LinearClassifier, LinearRegressor, TreeEnsembleClassifier and TreeEnsembleRegressor")
        }
        guard let first = estimator.inputs.first, let columns = tensors[first] else {
            throw ModelFormatError("\(describe(estimator)): its input is not computed from the graph's inputs")
        }
        var document: ModelDocument
        switch estimator.op {
        case "LinearClassifier", "LinearRegressor": document = try linear(estimator, columns, schema: schema)
        default: document = try trees(estimator, columns, schema: schema)
        }
        var imported = source
        imported.library = "ONNX (ir \(model.irVersion), \(model.producer.isEmpty ? "unknown producer" : model.producer) \(model.producerVersion))"
        let post = estimator.attributes["post_transform"]?.string ?? "NONE"
        imported.objective = "\(estimator.op) \(post)"
        document.metadata = .init(
            name: name, description: "ONNX \(estimator.op) (post_transform \(post)) from \(imported.library ?? ""), imported from \(source.file)",
            created: created, imported: imported)
        try document.validate()
        return document
    }

    // MARK: - Inputs

    private mutating func readInputs(schema: ImportSchema?) throws(ModelFormatError) {
        guard !model.inputs.isEmpty else { throw ModelFormatError("the graph has no inputs") }
        let vectors = model.inputs.filter { ($0.dims.count == 2 ? $0.dims[1] ?? 0 : 1) > 1 }
        for input in model.inputs {
            guard input.dims.count <= 2 else {
                throw ModelFormatError("input \"\(input.name)\" has \(input.dims.count) dimensions; Switchyard reads [N] and [N, F] inputs")
            }
            let width = input.dims.count == 2 ? input.dims[1] : 1
            guard let width, width >= 1, width <= Int64(maxImportedFeatures) else {
                throw ModelFormatError("input \"\(input.name)\": its second dimension must be a number of columns (1 to \(maxImportedFeatures))")
            }
            let type = ONNXModel.ElementType(rawValue: input.type)
            switch type {
            case .string?:
                guard width == 1 else { throw ModelFormatError("input \"\(input.name)\": a string input must be [N, 1]") }
                tensors[input.name] = [.text(field: fields.count)]
                fields.append(Field(name: input.name, isCategory: true, inputType: input.type))
            case .float?, .double?, .int64?, .int32?:
                if width == 1 {
                    tensors[input.name] = [.number(field: fields.count, a: 1, b: 0)]
                    fields.append(Field(name: input.name, isCategory: false, inputType: input.type))
                    continue
                }
                // The --schema file names a lone vector input's columns.
                var names = (0..<Int(width)).map { "\(input.name)_\($0)" }
                if let schema, !schema.fields.isEmpty {
                    guard vectors.count == 1, schema.fields.count == Int(width) else {
                        throw ModelFormatError("the schema names \(schema.fields.count) fields; input \"\(input.name)\" has \(width) columns")
                    }
                    names = schema.fields.map(\.name)
                }
                tensors[input.name] = names.indices.map { .number(field: fields.count + $0, a: 1, b: 0) }
                for n in names { fields.append(Field(name: n, isCategory: false, inputType: input.type)) }
            default:
                throw ModelFormatError("input \"\(input.name)\": element type \(input.type) is not supported (float, double, int32, int64 or string)")
            }
        }
        guard Set(fields.map(\.name)).count == fields.count else { throw ModelFormatError("two inputs give the same field name") }
    }

    // MARK: - Preprocessing

    private func input(_ node: ONNXModel.Node, _ i: Int = 0) throws(ModelFormatError) -> [Column] {
        guard i < node.inputs.count, let columns = tensors[node.inputs[i]] else {
            throw ModelFormatError("\(describe(node)): input \(i) is not computed from the graph's inputs")
        }
        return columns
    }

    /// A float-list attribute, one value per column or one for all.
    private func perColumn(_ node: ONNXModel.Node, _ name: String, count: Int) throws(ModelFormatError) -> [Double]? {
        guard let values = node.attributes[name]?.floats, !values.isEmpty else { return nil }
        if values.count == 1 { return [Double](repeating: values[0], count: count) }
        guard values.count == count else {
            throw ModelFormatError("\(describe(node)): \(name) has \(values.count) values for \(count) columns")
        }
        return values
    }

    private mutating func fold(_ node: ONNXModel.Node) throws(ModelFormatError) {
        guard let output = node.outputs.first else { throw ModelFormatError("\(describe(node)): no output") }
        func numbers(_ columns: [Column]) throws(ModelFormatError) -> [Column] {
            if columns.contains(where: { if case .text = $0 { true } else { false } }) {
                throw ModelFormatError("\(describe(node)): reads a string input, which only a OneHotEncoder or LabelEncoder may read")
            }
            return columns
        }
        switch node.op {
        case "Identity":
            tensors[output] = try input(node)
        case "Cast":
            let to = node.attributes["to"]?.int ?? 0
            let columns = try input(node)
            let text = columns.allSatisfy { if case .text = $0 { true } else { false } }
            guard text ? to == Int64(ONNXModel.ElementType.string.rawValue) : [1, 11].contains(to) else {
                throw ModelFormatError("\(describe(node)): a cast to element type \(to) changes values; only casts between float and double (or string to string) are imported")
            }
            tensors[output] = columns
        case "Concat":
            let axis = node.attributes["axis"]?.int ?? 1
            guard axis == 1 || axis == -1 else { throw ModelFormatError("\(describe(node)): concatenation along axis \(axis), not the columns") }
            var out: [Column] = []
            for i in node.inputs.indices { out += try numbers(try input(node, i)) }
            tensors[output] = out
        case "Reshape":
            let columns = try input(node)
            let shape = node.inputs.count > 1 ? model.initializers[node.inputs[1]]?.integers : nil
            guard let shape, shape == [-1, Int64(columns.count)] || shape == [0, Int64(columns.count)]
                || (columns.count == 1 && shape == [-1])
            else {
                throw ModelFormatError("\(describe(node)): a reshape to \(shape.map { "\($0)" } ?? "a computed shape") changes the rows' columns")
            }
            tensors[output] = columns
        case "Imputer":
            var columns = try numbers(try input(node))
            guard node.attributes["imputed_value_int64s"]?.ints.isEmpty ?? true else {
                throw ModelFormatError("\(describe(node)): integer imputation is not imported")
            }
            guard let replaced = node.attributes["replaced_value_float"]?.float, replaced.isNaN else {
                throw ModelFormatError("\(describe(node)): it replaces a number (replaced_value_float is not NaN); only a missing value (NaN) is imputed")
            }
            guard let values = try perColumn(node, "imputed_value_floats", count: columns.count) else {
                throw ModelFormatError("\(describe(node)): no imputed_value_floats")
            }
            for (i, column) in columns.enumerated() {
                guard case .number(let f, 1, 0) = column, fields[f].impute == nil || fields[f].impute == values[i], values[i].isFinite else {
                    throw ModelFormatError("\(describe(node)): column \(i) is not an input number as it was read (imputation comes first)")
                }
                fields[f].impute = values[i]
                columns[i] = column
            }
            tensors[output] = columns
        case "Scaler":
            var columns = try numbers(try input(node))
            let offset = try perColumn(node, "offset", count: columns.count) ?? [Double](repeating: 0, count: columns.count)
            let scale = try perColumn(node, "scale", count: columns.count) ?? [Double](repeating: 1, count: columns.count)
            for (i, column) in columns.enumerated() {
                guard case .number(let f, let a, let b) = column else {
                    throw ModelFormatError("\(describe(node)): column \(i) is a category; only numbers are scaled")
                }
                columns[i] = .number(field: f, a: a * scale[i], b: (b - offset[i]) * scale[i])
            }
            tensors[output] = columns
        case "OneHotEncoder":
            let columns = try input(node)
            guard columns.count == 1, case .text(let f) = columns[0] else {
                throw ModelFormatError("\(describe(node)): it must read one string input ([N, 1]); integer categories (cats_int64s) are not imported")
            }
            let values = node.attributes["cats_strings"]?.strings ?? []
            guard !values.isEmpty, Set(values).count == values.count else {
                throw ModelFormatError("\(describe(node)): cats_strings must list distinct categories")
            }
            if let known = fields[f].values, known != values || fields[f].coded {
                throw ModelFormatError("\(describe(node)): input \"\(fields[f].name)\" is encoded twice, differently")
            }
            fields[f].values = values
            fields[f].unknownIsZeros = (node.attributes["zeros"]?.int ?? 1) != 0
            tensors[output] = values.indices.map { .indicator(field: f, value: $0) }
        case "LabelEncoder":
            // Strings to integer codes: classes_strings (ai.onnx.ml 1, code = index) or keys_strings
            // with values_int64s (ai.onnx.ml 2), which must number the categories 0..<k.
            let columns = try input(node)
            guard columns.count == 1, case .text(let f) = columns[0] else {
                throw ModelFormatError("\(describe(node)): it must read one string input ([N, 1])")
            }
            var values = node.attributes["classes_strings"]?.strings ?? []
            if values.isEmpty, let keys = node.attributes["keys_strings"]?.strings, let codes = node.attributes["values_int64s"]?.ints,
                keys.count == codes.count, Set(codes) == Set((0..<Int64(keys.count)))
            {
                values = [String](repeating: "", count: keys.count)
                for (key, code) in zip(keys, codes) { values[Int(code)] = key }
            }
            guard !values.isEmpty, Set(values).count == values.count else {
                throw ModelFormatError(
                    "\(describe(node)): only a string-to-code encoder whose codes number distinct categories 0, 1, … is imported")
            }
            if let known = fields[f].values, known != values || !fields[f].coded {
                throw ModelFormatError("\(describe(node)): input \"\(fields[f].name)\" is encoded twice, differently")
            }
            fields[f].values = values
            fields[f].coded = true
            tensors[output] = [.code(field: f)]
        default:
            throw ModelFormatError(
                "\(describe(node)) is not supported; before the estimator Switchyard imports Identity, Cast, Concat, Reshape, Imputer, Scaler, OneHotEncoder and LabelEncoder")
        }
    }

    /// After the estimator: nodes that only pass its outputs on (Identity, Cast, ZipMap, a
    /// multiplication by 1, an L1 Normalizer of probabilities that already sum to 1) are fine.
    private func checkPlumbing(_ node: ONNXModel.Node, after estimator: ONNXModel.Node, downstream: inout Set<String>) throws(ModelFormatError) {
        let reads = node.inputs.filter { model.initializers[$0] == nil }
        guard !reads.isEmpty, reads.allSatisfy({ downstream.contains($0) }) else {
            throw ModelFormatError("\(describe(node)): a node beside the estimator is not imported (the graph must end in one estimator)")
        }
        let post = estimator.attributes["post_transform"]?.string ?? "NONE"
        switch node.op {
        case "Identity", "Cast", "ZipMap": break
        case "Mul", "Div":
            let constant = node.inputs.compactMap { model.initializers[$0] }.first
            guard let constant, (constant.numbers + constant.integers.map(Double.init)).allSatisfy({ $0 == 1 }) else {
                throw ModelFormatError("\(describe(node)): it changes the estimator's outputs (only a \(node.op) by 1 is imported)")
            }
        case "Normalizer":
            let classes = estimator.attributes["classlabels_strings"]?.strings.count ?? estimator.attributes["classlabels_ints"]?.ints.count
                ?? estimator.attributes["classlabels_int64s"]?.ints.count ?? 0
            guard node.attributes["norm"]?.string == "L1", post == "SOFTMAX" || (post == "LOGISTIC" && classes == 2) else {
                throw ModelFormatError("\(describe(node)): only an L1 normalization of probabilities that already sum to 1 (softmax, or a binary logistic) is exact")
            }
        default:
            throw ModelFormatError("\(describe(node)) after the estimator is not supported (Identity, Cast, ZipMap, Normalizer and Mul by 1 are)")
        }
        downstream.formUnion(node.outputs)
    }

    // MARK: - Estimators

    /// The classes a classifier names (ints as text), or the schema's names for them.
    private func classes(_ node: ONNXModel.Node, schema: ImportSchema?) throws(ModelFormatError) -> [String] {
        let a = node.attributes
        var names = a["classlabels_strings"]?.strings ?? []
        if names.isEmpty { names = (a["classlabels_ints"]?.ints ?? a["classlabels_int64s"]?.ints ?? []).map { "\($0)" } }
        guard names.count >= 2, names.count <= maxImportedClasses else {
            throw ModelFormatError("\(describe(node)): \(names.count) class labels; a classifier needs 2 to \(maxImportedClasses)")
        }
        if let renamed = schema?.classes {
            guard renamed.count == names.count else {
                throw ModelFormatError("the schema names \(renamed.count) classes; the model has \(names.count)")
            }
            return renamed
        }
        return names
    }

    private func outputs(_ node: ONNXModel.Node, schema: ImportSchema?, regression: Bool) throws(ModelFormatError) -> ModelDocument.Outputs {
        if regression {
            guard schema?.classes == nil else { throw ModelFormatError("the schema names classes, but the model is a regression (\(node.op))") }
            return .init(target: schema?.target ?? "prediction")
        }
        guard schema?.target == nil else { throw ModelFormatError("the schema names a regression target, but the model is a classifier (\(node.op))") }
        return .init(classes: try classes(node, schema: schema))
    }

    /// The schema fields, with their missing and unknown policies.
    private func schemaFields(trees: Bool) throws(ModelFormatError) -> [ModelDocument.Field] {
        try fields.map { (f: Field) throws(ModelFormatError) -> ModelDocument.Field in
            if f.isCategory {
                guard let values = f.values else {
                    throw ModelFormatError("string input \"\(f.name)\" is not one-hot encoded, so its categories are unknown")
                }
                // A code for an unknown category is onnxruntime's default (-1), compared as a number:
                // Switchyard's codes cannot say that, so such a record is refused rather than scored apart.
                if f.coded { return .init(name: f.name, type: .category, values: values, missing: .error, unknown: .error) }
                let zeros = f.unknownIsZeros
                return .init(name: f.name, type: .category, values: values, missing: zeros ? .allZeros : .error, unknown: zeros ? .allZeros : .error)
            }
            if f.impute != nil { return .init(name: f.name, type: .number, missing: .impute) }
            return .init(name: f.name, type: .number, missing: trees ? .passThrough : .error)
        }
    }

    private func linear(_ node: ONNXModel.Node, _ columns: [Column], schema: ImportSchema?) throws(ModelFormatError) -> ModelDocument {
        let regression = node.op == "LinearRegressor"
        let a = node.attributes
        let post = a["post_transform"]?.string ?? "NONE"
        let width = columns.count
        let coefficients = a["coefficients"]?.floats ?? []
        guard width > 0, !coefficients.isEmpty, coefficients.count % width == 0 else {
            throw ModelFormatError("\(describe(node)): \(coefficients.count) coefficients for \(width) input columns")
        }
        let rows = coefficients.count / width
        var intercepts = a["intercepts"]?.floats ?? []
        if intercepts.isEmpty { intercepts = [Double](repeating: 0, count: rows) }
        guard intercepts.count == rows else { throw ModelFormatError("\(describe(node)): \(intercepts.count) intercepts for \(rows) coefficient rows") }
        let outputs = try outputs(node, schema: schema, regression: regression)
        var margins: [[Double]]
        var bias: [Double]
        let link: ModelDocument.Link
        func row(_ k: Int) -> [Double] { Array(coefficients[(k * width)..<((k + 1) * width)]) }
        if regression {
            guard (a["targets"]?.int ?? 1) == 1, rows == 1 else { throw ModelFormatError("\(describe(node)): \(rows) targets; Switchyard imports one") }
            guard post == "NONE" else { throw ModelFormatError("\(describe(node)): post_transform \(post) on a regression is not imported") }
            (margins, bias, link) = ([row(0)], intercepts, .identity)
        } else if post == "LOGISTIC" && outputs.classes.count == 2 && rows == 1 {
            (margins, bias, link) = ([row(0)], intercepts, .logistic)
        } else if post == "LOGISTIC" && outputs.classes.count == 2 && rows == 2 {
            // The converters' binary form: class 0's row is class 1's negated, so p0 = 1 − p1.
            let (r0, r1) = (row(0), row(1))
            guard zip(r0, r1).allSatisfy({ abs($0 + $1) <= 1e-6 * max(1, abs($1)) }), abs(intercepts[0] + intercepts[1]) <= 1e-6 * max(1, abs(intercepts[1])) else {
                throw ModelFormatError("\(describe(node)): two independent logistic scores (one-vs-rest) do not make one probability; not imported")
            }
            (margins, bias, link) = ([r1], [intercepts[1]], .logistic)
        } else if post == "SOFTMAX" && rows == outputs.classes.count {
            (margins, bias, link) = ((0..<rows).map(row), intercepts, .softmax)
        } else {
            throw ModelFormatError(
                "\(describe(node)): post_transform \(post) with \(rows) coefficient rows for \(outputs.classes.count) classes is not imported (binary LOGISTIC or SOFTMAX are)")
        }

        // Each number field is one standardize (or identity) column; each category one one-hot block.
        var numberColumn: [Int: (a: Double, b: Double, onnx: Int)] = [:]
        for (j, column) in columns.enumerated() {
            guard case .number(let f, let ca, let cb) = column else { continue }
            guard numberColumn[f] == nil else {
                throw ModelFormatError("\(describe(node)): input \"\(fields[f].name)\" feeds two columns of the estimator; not imported")
            }
            numberColumn[f] = (ca, cb, j)
        }
        var steps: [ModelDocument.PreprocessingStep] = []
        var design: [[Double]] = margins.map { _ in [] }
        if let coded = fields.first(where: \.coded) {
            throw ModelFormatError("\(describe(node)): input \"\(coded.name)\" is label-encoded; a linear model over category codes is not imported")
        }
        for (f, field) in fields.enumerated() {
            if field.isCategory {
                steps.append(.init(field: field.name, transform: .oneHot))
                let values = field.values?.count ?? 0
                for k in margins.indices {
                    var block = [Double](repeating: 0, count: values)
                    for (j, column) in columns.enumerated() {
                        if case .indicator(f, let v) = column { block[v] += margins[k][j] }
                    }
                    design[k] += block
                }
                continue
            }
            guard let (ca, cb, j) = numberColumn[f], ca != 0 else {
                // Unused, or constant: its weight is 0, a constant column's term goes to the intercept.
                if let (_, cb, j) = numberColumn[f] { for k in margins.indices { bias[k] += margins[k][j] * cb } }
                steps.append(.init(field: field.name, transform: .identity, impute: field.impute))
                for k in margins.indices { design[k].append(0) }
                continue
            }
            if ca == 1 && cb == 0 {
                steps.append(.init(field: field.name, transform: .identity, impute: field.impute))
            } else {
                // a·x + b = (x − mean) / scale with scale = 1/a, mean = −b/a.
                steps.append(.init(field: field.name, transform: .standardize, mean: -cb / ca, scale: 1 / ca, impute: field.impute))
            }
            for k in margins.indices { design[k].append(margins[k][j]) }
        }
        // Steps are in field order; the design's number and one-hot blocks follow it.
        return ModelDocument(
            metadata: .init(name: "", created: ""), schema: .init(fields: try schemaFields(trees: false)), preprocessing: steps,
            estimator: .init(type: regression ? .linearRegression : .logisticRegression, coefficients: design, intercepts: bias, link: link),
            outputs: outputs)
    }

    private func trees(_ node: ONNXModel.Node, _ columns: [Column], schema: ImportSchema?) throws(ModelFormatError) -> ModelDocument {
        let regression = node.op == "TreeEnsembleRegressor"
        let a = node.attributes
        let post = a["post_transform"]?.string ?? "NONE"
        let prefix = regression ? "target" : "class"
        func ints(_ name: String) -> [Int64] { a[name]?.ints ?? [] }
        /// A float list, or its `_as_tensor` form (ai.onnx.ml 3).
        func numbers(_ name: String) -> [Double] {
            if let values = a[name]?.floats, !values.isEmpty { return values }
            return a[name + "_as_tensor"]?.tensor?.numbers ?? []
        }
        let treeIDs = ints("nodes_treeids"), nodeIDs = ints("nodes_nodeids"), features = ints("nodes_featureids")
        let trueIDs = ints("nodes_truenodeids"), falseIDs = ints("nodes_falsenodeids")
        let modes = a["nodes_modes"]?.strings ?? []
        let values = numbers("nodes_values")
        let n = treeIDs.count
        var tracks = ints("nodes_missing_value_tracks_true")
        if tracks.isEmpty { tracks = [Int64](repeating: 0, count: n) }
        guard n > 0, [nodeIDs.count, features.count, trueIDs.count, falseIDs.count, modes.count, values.count, tracks.count].allSatisfy({ $0 == n }) else {
            throw ModelFormatError("\(describe(node)): the nodes_* attributes disagree in length (or there are none)")
        }
        let leafTrees = ints("\(prefix)_treeids"), leafNodes = ints("\(prefix)_nodeids"), leafIDs = ints("\(prefix)_ids")
        let weights = numbers("\(prefix)_weights")
        guard [leafNodes.count, leafIDs.count, weights.count].allSatisfy({ $0 == leafTrees.count }) else {
            throw ModelFormatError("\(describe(node)): the \(prefix)_* attributes disagree in length")
        }
        if regression, (a["n_targets"]?.int ?? 1) != 1 {
            throw ModelFormatError("\(describe(node)): \(a["n_targets"]?.int ?? 0) targets; Switchyard imports one")
        }
        let aggregate = a["aggregate_function"]?.string ?? "SUM"
        guard aggregate == "SUM" || aggregate == "AVERAGE" else {
            throw ModelFormatError("\(describe(node)): aggregate_function \(aggregate) is not imported (SUM and AVERAGE are)")
        }
        let outputs = try outputs(node, schema: schema, regression: regression)
        let base = numbers("base_values")

        // Margins and link.
        let usedIDs = Set(leafIDs)
        let marginCount: Int
        let link: ModelDocument.Link
        var intercepts: [Double]
        if regression {
            guard post == "NONE" else { throw ModelFormatError("\(describe(node)): post_transform \(post) on a regression is not imported") }
            guard usedIDs.isSubset(of: [0]) else { throw ModelFormatError("\(describe(node)): target ids other than 0") }
            (marginCount, link, intercepts) = (1, .identity, [base.first ?? 0])
        } else if outputs.classes.count == 2 && usedIDs.isSubset(of: [0]) && post == "LOGISTIC" {
            // onnxruntime's binary case: one score, p1 = logistic(score), p0 = logistic(−score) —
            // when some weights are negative; all-positive weights are read as probabilities.
            guard weights.contains(where: { $0 < 0 }) || base.contains(where: { $0 < 0 }) else {
                throw ModelFormatError("\(describe(node)): a binary ensemble whose leaf weights are all positive is read by onnxruntime as a probability; not imported")
            }
            guard base.count <= 1 else { throw ModelFormatError("\(describe(node)): \(base.count) base values for one score") }
            (marginCount, link, intercepts) = (1, .logistic, [base.first ?? 0])
        } else if post == "SOFTMAX" {
            let k = outputs.classes.count
            guard usedIDs.allSatisfy({ $0 >= 0 && $0 < k }) else { throw ModelFormatError("\(describe(node)): a class id outside the \(k) classes") }
            guard base.isEmpty || base.count == k else { throw ModelFormatError("\(describe(node)): \(base.count) base values for \(k) classes") }
            (marginCount, link, intercepts) = (k, .softmax, base.isEmpty ? [Double](repeating: 0, count: k) : base)
        } else {
            throw ModelFormatError(
                "\(describe(node)): post_transform \(post) over \(outputs.classes.count) classes is not imported (binary LOGISTIC over one score, or SOFTMAX, are)")
        }

        // Design columns: numbers as they are, categories as one-hot blocks, in field order.
        var designOf: [Int] = []  // ONNX column → design column
        var start: [Int] = []
        var width = 0
        for field in fields {
            start.append(width)
            width += field.isCategory && !field.coded ? field.values?.count ?? 0 : 1
        }
        var used = Set<Int>()
        for (j, column) in columns.enumerated() {
            switch column {
            case .number(let f, 1, 0):
                guard used.insert(f).inserted else {
                    throw ModelFormatError("\(describe(node)): input \"\(fields[f].name)\" feeds two columns of the ensemble; not imported")
                }
                designOf.append(start[f])
            case .indicator(let f, let v): designOf.append(start[f] + v)
            case .code(let f): designOf.append(start[f])
            default:
                throw ModelFormatError("\(describe(node)): column \(j) is a scaled number; trees over scaled inputs are not imported")
            }
        }

        // The trees: nodes by (tree, node id), then each tree walked from its root.
        var index: [Int64: [Int64: Int]] = [:]
        for i in 0..<n {
            guard index[treeIDs[i], default: [:]].updateValue(i, forKey: nodeIDs[i]) == nil else {
                throw ModelFormatError("\(describe(node)): tree \(treeIDs[i]) has node \(nodeIDs[i]) twice")
            }
        }
        var leafWeights: [Int64: [Int64: [Int: Double]]] = [:]  // tree → node → margin → weight
        for i in leafTrees.indices {
            let margin = regression || marginCount == 1 ? 0 : Int(leafIDs[i])
            leafWeights[leafTrees[i], default: [:]][leafNodes[i], default: [:]][margin, default: 0] += weights[i]
        }
        var split: ModelDocument.SplitRule?
        var out: [ModelDocument.Tree] = []
        for tree in index.keys.sorted() {
            let nodes = index[tree]!
            let children = Set(nodes.values.flatMap { i in modes[i] == "LEAF" ? [] : [trueIDs[i], falseIDs[i]] })
            let roots = nodes.keys.filter { !children.contains($0) }
            guard roots.count == 1 else { throw ModelFormatError("\(describe(node)): tree \(tree) has \(roots.count) roots") }
            var shape = ModelDocument.Tree(margin: 0)
            var leaves: [(slot: Int, node: Int64)] = []
            var stack: [(id: Int64, parent: Int, isLeft: Bool)] = [(roots[0], -1, false)]
            var seen = Set<Int64>()
            while let (id, parent, isLeft) = stack.popLast() {
                guard let i = nodes[id] else { throw ModelFormatError("\(describe(node)): tree \(tree) points at node \(id), which does not exist") }
                guard seen.insert(id).inserted else { throw ModelFormatError("\(describe(node)): tree \(tree) reaches node \(id) twice") }
                let slot = shape.feature.count
                if parent >= 0 {
                    if isLeft { shape.left[parent] = slot } else { shape.right[parent] = slot }
                }
                if modes[i] == "LEAF" {
                    shape.feature.append(-1)
                    shape.threshold.append(0)
                    shape.left.append(-1)
                    shape.right.append(-1)
                    shape.defaultLeft.append(false)
                    shape.value.append(0)
                    leaves.append((slot, id))
                    continue
                }
                // x < t and x <= t send the true branch left; x >= t and x > t are their negations.
                let (rule, swapped): (ModelDocument.SplitRule, Bool)
                switch modes[i] {
                case "BRANCH_LT": (rule, swapped) = (.lessThan, false)
                case "BRANCH_LEQ": (rule, swapped) = (.lessOrEqual, false)
                case "BRANCH_GTE": (rule, swapped) = (.lessThan, true)
                case "BRANCH_GT": (rule, swapped) = (.lessOrEqual, true)
                default: throw ModelFormatError("\(describe(node)): node mode \(modes[i]) is not imported (BRANCH_LT, LEQ, GT, GTE are)")
                }
                guard split == nil || split == rule else {
                    throw ModelFormatError("\(describe(node)): the ensemble mixes < and <= comparisons; not imported")
                }
                split = rule
                guard features[i] >= 0, features[i] < Int64(designOf.count) else {
                    throw ModelFormatError("\(describe(node)): tree \(tree) node \(id) reads column \(features[i]); the input has \(designOf.count)")
                }
                guard values[i].isFinite else { throw ModelFormatError("\(describe(node)): tree \(tree) node \(id) has a non-finite threshold") }
                shape.feature.append(designOf[Int(features[i])])
                shape.threshold.append(values[i])
                shape.value.append(0)
                shape.left.append(-1)
                shape.right.append(-1)
                let missingTrue = tracks[i] != 0
                shape.defaultLeft.append(swapped ? !missingTrue : missingTrue)
                let (left, right) = swapped ? (falseIDs[i], trueIDs[i]) : (trueIDs[i], falseIDs[i])
                stack.append((right, slot, false))
                stack.append((left, slot, true))
            }
            // One copy of the tree per margin its leaves add to (each, with AVERAGE, so every
            // margin averages over all the trees).
            let byLeaf = leafWeights[tree] ?? [:]
            let margins = aggregate == "AVERAGE" ? Array(0..<marginCount) : Set(byLeaf.values.flatMap(\.keys)).sorted()
            for margin in margins {
                var copy = shape
                copy.margin = margin
                for (slot, id) in leaves { copy.value[slot] = byLeaf[id]?[margin] ?? 0 }
                out.append(copy)
            }
        }
        guard !out.isEmpty else { throw ModelFormatError("\(describe(node)): no tree has a leaf weight") }
        var steps: [ModelDocument.PreprocessingStep] = []
        for field in fields {
            let transform: ModelDocument.Transform = field.coded ? .categoryCode : field.isCategory ? .oneHot : .identity
            steps.append(.init(field: field.name, transform: transform, impute: field.impute))
        }
        // onnxruntime compares and sums float inputs in float32.
        let doubles = fields.allSatisfy { $0.inputType == ONNXModel.ElementType.double.rawValue }
        return ModelDocument(
            metadata: .init(name: "", created: ""), schema: .init(fields: try schemaFields(trees: true)), preprocessing: steps,
            estimator: .init(
                trees: .init(split: split ?? .lessOrEqual, precision: doubles ? .float64 : .float32, average: aggregate == "AVERAGE", trees: out),
                intercepts: intercepts, link: link),
            outputs: outputs)
    }
}
