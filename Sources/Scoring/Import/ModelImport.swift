import Foundation

/// Models trained elsewhere, turned into Switchyard model documents:
/// XGBoost's JSON model, LightGBM's text model, the scikit-learn Pipeline
/// export of fixtures/sklearn_reference.py (already in the Switchyard format)
/// and ONNX graphs of the supported kinds. Pure conversions: bytes in, a
/// validated document out.
public enum ModelImport {
    public enum Format: String, CaseIterable, Sendable {
        case xgboostJSON = "xgboost-json"
        case lightgbmText = "lightgbm-text"
        case sklearnJSON = "sklearn-json"
        case onnx
    }

    /// Converts `data` (the file named `file`) to a model document named `name`.
    /// `schema` maps the model's features to named input fields; without one,
    /// every feature becomes a field of its own name (categorical features take
    /// their values from the model file when it lists them).
    public static func convert(
        _ data: Data, format: Format, file: String, schema: ImportSchema?, name: String, created: String
    ) throws(ModelFormatError) -> ModelDocument {
        let source = ModelDocument.Imported(
            format: format.rawValue, file: file, sha256: SHA256.hex(Array(data)))
        var document: ModelDocument
        switch format {
        case .sklearnJSON:
            document = try ModelDocument.decode(data)
            guard document.estimator.type != .treeEnsemble else {
                throw ModelFormatError("an sklearn-json export holds a logistic or linear regression; this file has a \(document.estimator.type.rawValue)")
            }
            guard schema == nil else {
                throw ModelFormatError("an sklearn-json export carries its own schema; leave out --schema")
            }
            document.metadata.imported = source
        case .xgboostJSON:
            let model = try XGBoostModel(data)
            document = try model.ensemble.document(schema: schema, source: source, name: name, created: created)
        case .lightgbmText:
            let model = try LightGBMModel(data)
            document = try model.ensemble.document(schema: schema, source: source, name: name, created: created)
        case .onnx:
            document = try ONNXImport.convert(Array(data), schema: schema, source: source, name: name, created: created)
        }
        document.metadata.name = name
        try document.validate()
        return document
    }
}

/// The `--schema` file: input fields, and how the model's features map onto them.
///
///     {"fields": [
///        {"name": "amount", "type": "number"},
///        {"name": "region", "type": "category", "values": ["north", "south"]},
///        {"name": "product", "type": "category", "values": ["auto", "card"],
///         "one_hot": ["product_auto", "product_card"]}],
///      "classes": ["no", "yes"]}
///
/// A regression model names its `"target"` (the number it predicts) instead of `"classes"`.
/// A number field reads the feature of its name (or `feature`). A category
/// field is either one categorical feature (its code is the value's index in
/// `values`) or, with `one_hot`, one 0/1 feature per value. `missing` and
/// `unknown` default to what the libraries do: a missing number or category
/// goes its split's default way, an unknown category counts as missing, and a
/// one-hot group is all zeros for both.
public struct ImportSchema: Codable, Sendable, Equatable {
    public struct Field: Codable, Sendable, Equatable {
        public var name: String
        public var type: ModelDocument.FieldType
        public var values: [String]?
        public var feature: String?
        public var oneHot: [String]?
        public var missing: ModelDocument.MissingPolicy?
        public var unknown: ModelDocument.UnknownPolicy?

        enum CodingKeys: String, CodingKey {
            case name, type, values, feature, oneHot = "one_hot", missing, unknown
        }

        public init(name: String, type: ModelDocument.FieldType, values: [String]? = nil, oneHot: [String]? = nil) {
            self.name = name
            self.type = type
            self.values = values
            self.oneHot = oneHot
        }
    }

    public var fields: [Field]
    /// A classifier's class names, in the model's class order.
    public var classes: [String]?
    /// A regression model's target: the name of the number it predicts ("prediction" when absent).
    public var target: String?

    public init(fields: [Field], classes: [String]? = nil, target: String? = nil) {
        self.fields = fields
        self.classes = classes
        self.target = target
    }

    public static func decode(_ data: Data) throws(ModelFormatError) -> ImportSchema {
        do {
            return try JSONDecoder().decode(ImportSchema.self, from: data)
        } catch {
            throw ModelFormatError("schema file: \(error)")
        }
    }
}

/// A tree ensemble as a library stores it, before features are mapped to fields.
struct ForeignEnsemble {
    /// One node of a tree as the library numbers them.
    struct Node {
        var feature = -1  // -1: a leaf
        var threshold = 0.0
        var left = -1
        var right = -1
        var defaultLeft = false
        var value = 0.0
        /// Codes that go left at a categorical split.
        var categoriesLeft: [Int]? = nil
        var zeroIsMissing = false
        /// The training data that reached the node (nil when the file does not say).
        var cover: Double? = nil
    }

    struct Tree {
        var margin: Int
        var nodes: [Node]
    }

    var library: String
    var objective: String
    var featureNames: [String]
    /// Per feature: whether the library splits it by category.
    var categorical: [Bool]
    /// Per feature: the category names in code order, when the file lists them.
    var categoryNames: [[String]?]
    var trees: [Tree]
    var intercepts: [Double]
    var link: ModelDocument.Link
    var split: ModelDocument.SplitRule
    var precision: ModelDocument.Precision
    var average: Bool

    /// The Switchyard document: fields from `schema` (or one per feature), a
    /// design vector whose columns the trees' features are renumbered onto,
    /// and only the nodes reachable from each root.
    func document(
        schema: ImportSchema?, source: ModelDocument.Imported, name: String, created: String
    ) throws(ModelFormatError) -> ModelDocument {
        let marginCount = intercepts.count
        let outputs: ModelDocument.Outputs
        if link == .identity {
            guard schema?.classes == nil else {
                throw ModelFormatError("the schema names classes, but the model is a regression (\(objective)); name its \"target\" instead")
            }
            outputs = .init(target: schema?.target ?? "prediction")
        } else {
            guard schema?.target == nil else {
                throw ModelFormatError("the schema names a regression \"target\", but the model is a classifier (\(objective)); name its \"classes\" instead")
            }
            let classes = schema?.classes ?? (0..<max(2, marginCount)).map { "\($0)" }
            guard link == .logistic ? classes.count == 2 : classes.count == marginCount else {
                throw ModelFormatError("the schema names \(classes.count) classes; the model has \(link == .logistic ? 2 : marginCount)")
            }
            outputs = .init(classes: classes)
        }
        let layout = try FeatureLayout(ensemble: self, schema: schema)
        var out: [ModelDocument.Tree] = []
        out.reserveCapacity(trees.count)
        for (t, tree) in trees.enumerated() {
            out.append(try convert(tree, index: t, column: layout.column))
        }
        var metadata = ModelDocument.Metadata(
            name: name, description: "\(library) \(objective), \(trees.count) trees, imported from \(source.file)", created: created)
        var imported = source
        imported.library = library
        imported.objective = objective
        metadata.imported = imported
        return ModelDocument(
            metadata: metadata, schema: ModelDocument.Schema(fields: layout.fields), preprocessing: layout.steps,
            estimator: ModelDocument.Estimator(
                trees: ModelDocument.TreeEnsemble(split: split, precision: precision, average: average, trees: out),
                intercepts: intercepts, link: link),
            outputs: outputs)
    }

    /// The reachable nodes of `tree` in depth-first order, features renumbered to design columns.
    private func convert(_ tree: Tree, index t: Int, column: [Int]) throws(ModelFormatError) -> ModelDocument.Tree {
        var out = ModelDocument.Tree(margin: tree.margin)
        var categorical: [ModelDocument.CategorySplit] = []
        var zero: [Int] = []
        var cover: [Double] = []
        guard !tree.nodes.isEmpty else { throw ModelFormatError("tree \(t) has no nodes") }
        // (library node, slot of its parent's child pointer to patch, is left)
        var stack: [(Int, Int, Bool)] = [(0, -1, false)]
        var seen = Set<Int>()
        while let (i, parent, isLeft) = stack.popLast() {
            guard tree.nodes.indices.contains(i) else { throw ModelFormatError("tree \(t): a split points at node \(i), which does not exist") }
            guard seen.insert(i).inserted else { throw ModelFormatError("tree \(t): node \(i) is reached twice") }
            let slot = out.feature.count
            if parent >= 0 {
                if isLeft { out.left[parent] = slot } else { out.right[parent] = slot }
            }
            let node = tree.nodes[i]
            if let c = node.cover, cover.count == slot { cover.append(c) }
            if node.feature < 0 {
                out.feature.append(-1)
                out.threshold.append(0)
                out.left.append(-1)
                out.right.append(-1)
                out.defaultLeft.append(false)
                out.value.append(node.value)
                continue
            }
            guard column.indices.contains(node.feature) else {
                throw ModelFormatError("tree \(t), node \(i): feature \(node.feature) does not exist (the model has \(column.count))")
            }
            out.feature.append(column[node.feature])
            out.threshold.append(node.threshold)
            out.left.append(-1)
            out.right.append(-1)
            out.defaultLeft.append(node.defaultLeft)
            out.value.append(0)
            if let set = node.categoriesLeft { categorical.append(ModelDocument.CategorySplit(node: slot, left: set)) }
            if node.zeroIsMissing { zero.append(slot) }
            stack.append((node.right, slot, false))
            stack.append((node.left, slot, true))
        }
        if !categorical.isEmpty { out.categorical = categorical }
        if !zero.isEmpty { out.zeroIsMissing = zero }
        if cover.count == out.feature.count { out.cover = cover }  // every node's, or none
        return out
    }
}

/// Where each model feature lands in the design vector, and the fields and
/// preprocessing steps that put it there.
struct FeatureLayout {
    var fields: [ModelDocument.Field] = []
    var steps: [ModelDocument.PreprocessingStep] = []
    /// Model feature index → design column.
    var column: [Int]

    init(ensemble: ForeignEnsemble, schema: ImportSchema?) throws(ModelFormatError) {
        let names = ensemble.featureNames
        column = [Int](repeating: -1, count: names.count)
        var index: [String: Int] = [:]
        for (i, name) in names.enumerated() where index[name] == nil { index[name] = i }
        let schemaFields = schema?.fields ?? names.enumerated().map { i, name in
            ensemble.categorical[i]
                ? ImportSchema.Field(name: name, type: .category)
                : ImportSchema.Field(name: name, type: .number)
        }
        var width = 0
        var seen = Set<String>()
        for field in schemaFields {
            guard seen.insert(field.name).inserted else { throw ModelFormatError("schema: field \"\(field.name)\" is listed twice") }
            switch field.type {
            case .number:
                let feature = field.feature ?? field.name
                guard let f = index[feature] else { throw Self.noFeature(field.name, feature, names) }
                guard !ensemble.categorical[f] else {
                    throw ModelFormatError("schema: field \"\(field.name)\" is a number, but the model splits feature \"\(feature)\" by category; make it a category field")
                }
                column[f] = width
                width += 1
                fields.append(ModelDocument.Field(name: field.name, type: .number, missing: field.missing ?? .passThrough))
                steps.append(ModelDocument.PreprocessingStep(field: field.name, transform: .identity))
            case .category:
                if let group = field.oneHot {
                    guard let values = field.values, values.count == group.count else {
                        throw ModelFormatError("schema: field \"\(field.name)\": \"one_hot\" needs one feature per entry of \"values\" (\(field.values?.count ?? 0) values, \(group.count) features)")
                    }
                    for (v, feature) in group.enumerated() {
                        guard let f = index[feature] else { throw Self.noFeature(field.name, feature, names) }
                        column[f] = width + v
                    }
                    width += group.count
                    fields.append(ModelDocument.Field(
                        name: field.name, type: .category, values: values, missing: field.missing ?? .allZeros,
                        unknown: field.unknown ?? .allZeros))
                    steps.append(ModelDocument.PreprocessingStep(field: field.name, transform: .oneHot))
                } else {
                    let feature = field.feature ?? field.name
                    guard let f = index[feature] else { throw Self.noFeature(field.name, feature, names) }
                    let known = ensemble.categoryNames[f]
                    guard let values = field.values ?? known, !values.isEmpty else {
                        throw ModelFormatError("feature \"\(feature)\" is categorical, but the model file does not list its categories; give them with --schema: {\"name\": \"\(field.name)\", \"type\": \"category\", \"values\": [...]}, in code order")
                    }
                    if let known, known != values {
                        throw ModelFormatError("schema: field \"\(field.name)\" lists values \(values), but the model codes feature \"\(feature)\" as \(known) (in that order)")
                    }
                    column[f] = width
                    width += 1
                    fields.append(ModelDocument.Field(
                        name: field.name, type: .category, values: values, missing: field.missing ?? .passThrough,
                        unknown: field.unknown ?? .asMissing))
                    steps.append(ModelDocument.PreprocessingStep(field: field.name, transform: .categoryCode))
                }
            }
        }
        if let unmapped = column.indices.first(where: { column[$0] < 0 }) {
            throw ModelFormatError("the model's feature \"\(names[unmapped])\" is in no schema field; add {\"name\": \"\(names[unmapped])\", \"type\": \"number\"} or list it in a one_hot group")
        }
    }

    private static func noFeature(_ field: String, _ feature: String, _ names: [String]) -> ModelFormatError {
        let near = names.min { editDistance($0, feature) < editDistance($1, feature) }
        let hint = near.map { editDistance($0, feature) <= max(2, feature.count / 3) ? " (did you mean \"\($0)\"?)" : "" } ?? ""
        return ModelFormatError("schema: field \"\(field)\" reads feature \"\(feature)\", which the model does not have\(hint); its features: \(names.prefix(12).joined(separator: ", "))\(names.count > 12 ? ", …" : "")")
    }
}

/// A count, index, code or child read from a model file as a number: nil unless it is a whole
/// number of magnitude below 2^53, so converting it never traps (`Int(1e300)` would).
@inline(__always)
func wholeNumber(_ x: Double) -> Int? {
    guard x.isFinite, x == x.rounded(), abs(x) < 9_007_199_254_740_992 else { return nil }
    return Int(x)
}

/// The most features and classes an imported model may declare; more is refused before
/// anything is sized by the claim.
let maxImportedFeatures = 1_000_000
let maxImportedClasses = 100_000
