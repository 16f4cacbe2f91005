import Foundation
import JSON

/// A Switchyard model file (`"format": "switchyard.model"`, `format_version` 1):
/// the input schema, the preprocessing that turns a record into the estimator's
/// design vector, the estimator, the outputs and metadata. The README documents
/// every field; `Scorer` compiles a document for fast scoring.
public struct ModelDocument: Codable, Sendable, Equatable {
    public static let formatName = "switchyard.model"
    public static let currentFormatVersion = 1

    public var format: String
    public var formatVersion: Int
    public var metadata: Metadata
    public var schema: Schema
    public var preprocessing: [PreprocessingStep]
    public var estimator: Estimator
    public var outputs: Outputs

    public init(
        metadata: Metadata, schema: Schema, preprocessing: [PreprocessingStep],
        estimator: Estimator, outputs: Outputs
    ) {
        self.format = Self.formatName
        self.formatVersion = Self.currentFormatVersion
        self.metadata = metadata
        self.schema = schema
        self.preprocessing = preprocessing
        self.estimator = estimator
        self.outputs = outputs
    }

    enum CodingKeys: String, CodingKey {
        case format, formatVersion = "format_version", metadata, schema, preprocessing, estimator, outputs
    }

    // MARK: - Schema

    /// The typed input: what a record must carry.
    public struct Schema: Codable, Sendable, Equatable {
        public var fields: [Field]
        public init(fields: [Field]) { self.fields = fields }
    }

    /// One input field. `values` lists a category field's allowed values, in the
    /// order their one-hot columns take.
    public struct Field: Codable, Sendable, Equatable {
        public var name: String
        public var type: FieldType
        public var values: [String]?
        /// What a missing value (absent, `null`, empty CSV cell) does.
        public var missing: MissingPolicy
        /// What a category outside `values` does (category fields only).
        public var unknown: UnknownPolicy?

        public init(
            name: String, type: FieldType, values: [String]? = nil,
            missing: MissingPolicy = .error, unknown: UnknownPolicy? = nil
        ) {
            self.name = name
            self.type = type
            self.values = values
            self.missing = missing
            self.unknown = unknown
        }
    }

    public enum FieldType: String, Codable, Sendable {
        case number
        case category
    }

    public enum MissingPolicy: String, Codable, Sendable {
        /// The record is rejected, naming the field.
        case error
        /// Numbers: the preprocessing step's `impute` value is used.
        case impute
        /// Categories: every one-hot column is 0 (scikit-learn's "ignore").
        case allZeros = "all_zeros"
        /// Tree ensembles only: the value reaches the trees as missing, and each
        /// split sends it its default way (XGBoost's and LightGBM's own rule).
        case passThrough = "pass_through"
    }

    public enum UnknownPolicy: String, Codable, Sendable {
        case error
        case allZeros = "all_zeros"
        /// `category_code` only: an unknown category is a missing value.
        case asMissing = "as_missing"
    }

    // MARK: - Preprocessing

    /// Turns one field into design-vector columns, in the order the steps are listed.
    public struct PreprocessingStep: Codable, Sendable, Equatable {
        public var field: String
        public var transform: Transform
        /// `standardize`: (x - mean) / scale.
        public var mean: Double?
        public var scale: Double?
        /// The value a missing number takes before the transform (policy `impute`).
        public var impute: Double?

        public init(field: String, transform: Transform, mean: Double? = nil, scale: Double? = nil, impute: Double? = nil) {
            self.field = field
            self.transform = transform
            self.mean = mean
            self.scale = scale
            self.impute = impute
        }
    }

    public enum Transform: String, Codable, Sendable {
        /// A number as it is: one column.
        case identity
        /// A number as (x - mean) / scale: one column.
        case standardize
        /// A category as one column per allowed value.
        case oneHot = "one_hot"
        /// A category as one column holding its index in `values` (tree ensembles'
        /// native categorical splits).
        case categoryCode = "category_code"
    }

    // MARK: - Estimator

    /// The estimator over the design vector: a logistic or linear regression
    /// (`coefficients`) or a tree ensemble (`trees`).
    public struct Estimator: Codable, Sendable, Equatable {
        public var type: EstimatorType
        /// Logistic regression: one row per margin: 1 row for a binary model (the
        /// positive class's log-odds, scikit-learn's `coef_` shape), one per class for softmax.
        /// Linear regression: 1 row.
        public var coefficients: [[Double]]?
        /// One per margin: the margin before any coefficient or tree adds to it.
        public var intercepts: [Double]
        public var link: Link
        public var trees: TreeEnsemble?

        public init(type: EstimatorType = .logisticRegression, coefficients: [[Double]], intercepts: [Double], link: Link) {
            self.type = type
            self.coefficients = coefficients
            self.intercepts = intercepts
            self.link = link
        }

        public init(trees: TreeEnsemble, intercepts: [Double], link: Link) {
            self.type = .treeEnsemble
            self.trees = trees
            self.intercepts = intercepts
            self.link = link
        }

        /// The number of margins the link takes: 1 for logistic and identity, one per class for softmax.
        public var marginCount: Int {
            if let coefficients { return coefficients.count }
            return intercepts.count
        }
    }

    public enum EstimatorType: String, Codable, Sendable {
        case logisticRegression = "logistic_regression"
        /// Coefficients with the identity link: ordinary least squares or ridge.
        case linearRegression = "linear_regression"
        case treeEnsemble = "tree_ensemble"
    }

    /// Gradient-boosted trees or a forest over the design vector. Margin `k` is
    /// `intercepts[k]` plus the sum (or, with `average`, the mean) of the leaf
    /// values its trees reach.
    public struct TreeEnsemble: Codable, Sendable, Equatable {
        /// How a numeric split compares: `less_than` (`x < threshold` goes left,
        /// XGBoost) or `less_or_equal` (`x <= threshold` goes left, LightGBM).
        public var split: SplitRule
        /// `float32`: inputs are rounded to float32 before they are compared and
        /// margins are summed in float32 (XGBoost); `float64`: neither (LightGBM).
        public var precision: Precision
        /// Each margin is the mean of its trees rather than the sum (LightGBM's `average_output`).
        public var average: Bool
        public var trees: [Tree]

        public init(split: SplitRule, precision: Precision, average: Bool, trees: [Tree]) {
            self.split = split
            self.precision = precision
            self.average = average
            self.trees = trees
        }
    }

    public enum SplitRule: String, Codable, Sendable {
        case lessThan = "less_than"
        case lessOrEqual = "less_or_equal"
    }

    public enum Precision: String, Codable, Sendable {
        case float32
        case float64
    }

    /// One tree as parallel node arrays; node 0 is the root. A leaf has
    /// `feature` -1 and its output in `value`. A missing input (NaN) goes the
    /// `default_left` way. A categorical split sends the codes in its set left and
    /// every other code right.
    public struct Tree: Codable, Sendable, Equatable {
        /// The margin (class) this tree adds to.
        public var margin: Int
        /// Design-vector column a split reads; -1 for a leaf.
        public var feature: [Int]
        public var threshold: [Double]
        public var left: [Int]
        public var right: [Int]
        public var defaultLeft: [Bool]
        public var value: [Double]
        /// Categorical splits: node → the codes that go left.
        public var categorical: [CategorySplit]?
        /// Nodes where an input of 0 counts as missing (LightGBM's `zero_as_missing`).
        public var zeroIsMissing: [Int]?
        /// Per node: how much training data reached it (XGBoost's hessian sum, LightGBM's count),
        /// what TreeSHAP weighs the paths a record does not take by. Absent in files written
        /// before explanations; such a model scores but cannot explain.
        public var cover: [Double]?

        enum CodingKeys: String, CodingKey {
            case margin, feature, threshold, left, right, defaultLeft = "default_left", value, categorical
            case zeroIsMissing = "zero_is_missing", cover
        }

        public init(margin: Int) {
            self.margin = margin
            feature = []
            threshold = []
            left = []
            right = []
            defaultLeft = []
            value = []
        }
    }

    public struct CategorySplit: Codable, Sendable, Equatable {
        public var node: Int
        public var left: [Int]
        public init(node: Int, left: [Int]) {
            self.node = node
            self.left = left
        }
    }

    public enum Link: String, Codable, Sendable {
        /// Binary: p(classes[1]) = 1 / (1 + e^-margin), p(classes[0]) = 1 - that.
        case logistic
        /// Multinomial: p(class k) = e^margin_k / sum_j e^margin_j.
        case softmax
        /// Regression: the predicted value is the margin itself.
        case identity
    }

    // MARK: - Outputs and metadata

    /// A classifier's classes, in the order probabilities are given (the label is
    /// the most probable), or a regression model's `target`: the name of the number
    /// it predicts (its training label). A file has one or the other; a classifier's
    /// file is written exactly as before regression existed, so its sha256 is unchanged.
    public struct Outputs: Codable, Sendable, Equatable {
        public var classes: [String]
        public var target: String?

        public init(classes: [String]) {
            self.classes = classes
            self.target = nil
        }

        /// A regression model's outputs: one number named `target`.
        public init(target: String) {
            self.classes = []
            self.target = target
        }

        enum CodingKeys: String, CodingKey { case classes, target }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            target = try c.decodeIfPresent(String.self, forKey: .target)
            // A regression file has no classes; a classifier's must list them.
            classes = try target == nil ? c.decode([String].self, forKey: .classes) : c.decodeIfPresent([String].self, forKey: .classes) ?? []
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            if target == nil || !classes.isEmpty { try c.encode(classes, forKey: .classes) }
            try c.encodeIfPresent(target, forKey: .target)
        }
    }

    public struct Metadata: Codable, Sendable, Equatable {
        public var name: String
        public var description: String?
        /// ISO 8601, UTC.
        public var created: String
        public var training: Training?
        public var imported: Imported?

        public init(name: String, description: String? = nil, created: String, training: Training? = nil, imported: Imported? = nil) {
            self.name = name
            self.description = description
            self.created = created
            self.training = training
            self.imported = imported
        }
    }

    /// Where an imported model came from: the file, its format and the library that wrote it.
    public struct Imported: Codable, Sendable, Equatable {
        public var format: String
        public var file: String
        public var sha256: String
        /// The library and version the file names, when it names them.
        public var library: String?
        /// The library's objective, as the file gives it.
        public var objective: String?
        public init(format: String, file: String, sha256: String, library: String? = nil, objective: String? = nil) {
            self.format = format
            self.file = file
            self.sha256 = sha256
            self.library = library
            self.objective = objective
        }
    }

    /// How the model was made, for the audit trail.
    public struct Training: Codable, Sendable, Equatable {
        /// sha256 of the training file's bytes.
        public var dataSHA256: String
        public var dataRows: Int
        public var label: String
        public var holdout: Double
        public var seed: UInt64
        public var algorithm: String
        /// A classifier's scikit-learn C: the inverse of the L2 strength.
        public var c: Double?
        /// A ridge regression's L2 strength, as scikit-learn's Ridge `alpha`.
        public var alpha: Double?
        public var iterations: Int
        /// Held-out metrics: a classifier's `auc`, `accuracy`, `log_loss`; a regression's
        /// `r2`, `rmse`, `mae` (and row counts).
        public var metrics: [String: Double]

        enum CodingKeys: String, CodingKey {
            case dataSHA256 = "data_sha256", dataRows = "data_rows", label, holdout, seed, algorithm
            case c = "C", alpha, iterations, metrics
        }

        public init(
            dataSHA256: String, dataRows: Int, label: String, holdout: Double, seed: UInt64,
            algorithm: String, c: Double? = nil, alpha: Double? = nil, iterations: Int, metrics: [String: Double]
        ) {
            self.dataSHA256 = dataSHA256
            self.dataRows = dataRows
            self.label = label
            self.holdout = holdout
            self.seed = seed
            self.algorithm = algorithm
            self.c = c
            self.alpha = alpha
            self.iterations = iterations
            self.metrics = metrics
        }
    }
}

// MARK: - Reading and writing

extension ModelDocument {
    /// Decodes and validates a model file; the error says which field is wrong.
    public static func decode(_ data: Data) throws(ModelFormatError) -> ModelDocument {
        let document: ModelDocument
        do {
            document = try JSONDecoder().decode(ModelDocument.self, from: data)
        } catch let error as DecodingError {
            throw ModelFormatError(Self.describe(error))
        } catch {
            throw ModelFormatError("not a model file: \(error)")
        }
        try document.validate()
        return document
    }

    /// Pretty, key-sorted JSON: the same document always gives the same bytes,
    /// so its sha256 names it.
    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Every field is a plain value; encoding cannot fail.
        return (try? encoder.encode(self)) ?? Data()
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "the document" : String(p.dropFirst(p.hasPrefix(".") ? 1 : 0))
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = context.codingPath.isEmpty ? "" : " in \(path(context))"
            return "missing field \"\(key.stringValue)\"\(at)"
        case .typeMismatch(let type, let context):
            return "\(path(context)): expected \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context)): expected \(type), got null"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "not valid JSON: \(context.debugDescription)" }
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

/// A model file that cannot be used, with what is wrong in it.
public struct ModelFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid model file: \(message)" }
}

extension ModelDocument {
    /// A record built from the schema: numbers at their training mean (or impute
    /// value; for trees, the median split threshold; or 0), categories at their
    /// first value. For warm-up and examples.
    public func exampleRecord() -> JSONValue {
        var o = JSONObject()
        let steps = Dictionary(preprocessing.map { ($0.field, $0) }, uniquingKeysWith: { first, _ in first })
        // A tree model's numbers: the median of the thresholds its splits compare them with.
        var thresholds: [Int: [Double]] = [:]
        for tree in estimator.trees?.trees ?? [] {
            for (i, f) in tree.feature.enumerated() where f >= 0 { thresholds[f, default: []].append(tree.threshold[i]) }
        }
        let columns = designColumns.start
        for field in schema.fields {
            switch field.type {
            case .number:
                let step = steps[field.name]
                let split = columns[field.name].flatMap { thresholds[$0]?.sorted() }.map { $0[$0.count / 2] }
                let value = step?.impute ?? step?.mean ?? split ?? 0
                o.append(field.name, .number((value * 100).rounded() / 100))
            case .category:
                o.append(field.name, .string(field.values?.first ?? ""))
            }
        }
        return .object(o)
    }
}
