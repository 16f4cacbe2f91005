#if canImport(Glibc)
import Glibc
import JSON
#endif

/// The embedded scorer: a model document compiled for scoring, immutable and
/// shared by every thread. A swap replaces the whole `Scorer`.
///
/// Preprocessing is folded into the estimator at compile time:
/// `w·(x − mean)/scale + b` becomes `(w/scale)·x + (b − w·mean/scale)`, and a
/// one-hot block becomes a weight lookup by category code, so a record costs
/// one multiply-add per number and one load per category.
public final class Scorer: Sendable {
    public let document: ModelDocument
    /// Output classes, in probability order; empty for a regression model.
    public let classes: [String]
    /// A regression model's target: the name of the number it predicts; nil for a classifier.
    public let target: String?
    /// How many numbers a record's outcome is: one per class, or 1 (the value) for a regression model.
    public let outputCount: Int
    /// Whether the model predicts a number rather than classes.
    public var isRegression: Bool { target != nil }
    /// Input field names, in schema order.
    public let fieldNames: [String]

    package let marginCount: Int
    let link: ModelDocument.Link
    let bias: [Double]
    let plans: [Plan]

    // Number slots, in schema order of the number fields.
    let numberWeights: [Double]  // slot * marginCount + k, already divided by scale
    let numberShift: [Double]  // slot * marginCount + k: weight × mean, folded into the bias
    let numberImpute: [Double]  // NaN where a missing value is an error
    let numberFields: [Int]

    // Category slots.
    let categoryTables: [CategoryTable]
    /// `plans` and the category tables as plain pointers into memory this scorer owns, for the
    /// per-cell loops (no reference counting per record).
    let cells: CellTables
    let categoryWeights: [[Double]]  // code * marginCount + k
    let categoryMissingIsError: [Bool]
    let categoryUnknownIsError: [Bool]
    let categoryFields: [Int]

    let fieldTable: CategoryTable

    // Tree ensembles: each field writes its design-vector columns, then the trees run.
    let trees: TreeProgram?
    let numberColumns: [Int]  // per number slot
    let numberPassThrough: [Bool]
    let categoryColumns: [Int]  // per category slot: the code column, or the first one-hot column
    let categoryOneHot: [Bool]
    /// A record's design vector before its fields are set: NaN (missing) in
    /// number and code columns, 0 in one-hot columns.
    let designTemplate: [Double]
    /// Per design column: the field it comes from (for explanations).
    let columnField: [Int]

    enum Plan: Sendable {
        case number(slot: Int)
        case category(slot: Int)
    }

    /// Compiles a validated document.
    public init(_ document: ModelDocument) throws(ModelFormatError) {
        try document.validate()
        self.document = document
        let fields = document.schema.fields
        classes = document.outputs.classes
        target = document.outputs.target
        outputCount = document.isRegression ? 1 : classes.count
        fieldNames = fields.map(\.name)
        fieldTable = CategoryTable(fieldNames)
        link = document.estimator.link
        let estimator = document.estimator
        let m = estimator.marginCount
        marginCount = m

        let (offset, column) = document.designColumns
        var stepOf: [String: ModelDocument.PreprocessingStep] = [:]
        for step in document.preprocessing where stepOf[step.field] == nil { stepOf[step.field] = step }
        let coefficients = estimator.coefficients ?? []

        var bias = estimator.intercepts
        var plans: [Plan] = []
        var numberWeights: [Double] = []
        var numberShift: [Double] = []
        var numberImpute: [Double] = []
        var numberFields: [Int] = []
        var numberColumns: [Int] = []
        var numberPassThrough: [Bool] = []
        var categoryTables: [CategoryTable] = []
        var categoryWeights: [[Double]] = []
        var categoryMissingIsError: [Bool] = []
        var categoryUnknownIsError: [Bool] = []
        var categoryFields: [Int] = []
        var categoryColumns: [Int] = []
        var categoryOneHot: [Bool] = []
        var template = [Double](repeating: .nan, count: column)
        var columnField = [Int](repeating: 0, count: column)

        // validate() guarantees every field has exactly one step and an offset.
        for (index, field) in fields.enumerated() {
            let step = stepOf[field.name]!
            let at = offset[field.name]!
            switch field.type {
            case .number:
                plans.append(.number(slot: numberFields.count))
                columnField[at] = index
                numberFields.append(index)
                numberColumns.append(at)
                numberPassThrough.append(field.missing == .passThrough)
                numberImpute.append(field.missing == .impute ? step.impute! : .nan)
                guard !coefficients.isEmpty else { continue }
                let mean = step.transform == .standardize ? step.mean! : 0
                let scale = step.transform == .standardize ? step.scale! : 1
                for k in 0..<m {
                    let w = coefficients[k][at] / scale
                    numberWeights.append(w)
                    numberShift.append(w * mean)
                    bias[k] -= w * mean
                }
            case .category:
                let values = field.values!
                plans.append(.category(slot: categoryFields.count))
                for c in 0..<(step.transform == .oneHot ? values.count : 1) { columnField[at + c] = index }
                categoryFields.append(index)
                categoryTables.append(CategoryTable(values))
                categoryColumns.append(at)
                categoryOneHot.append(step.transform == .oneHot)
                if step.transform == .oneHot { for c in values.indices { template[at + c] = 0 } }
                categoryMissingIsError.append(field.missing == .error)
                categoryUnknownIsError.append(field.unknown == .error)
                var weights: [Double] = []
                if !coefficients.isEmpty {
                    weights.reserveCapacity(values.count * m)
                    for code in values.indices {
                        for k in 0..<m { weights.append(coefficients[k][at + code]) }
                    }
                }
                categoryWeights.append(weights)
            }
        }
        self.bias = bias
        self.plans = plans
        self.numberWeights = numberWeights
        self.numberShift = numberShift
        self.columnField = columnField
        self.numberImpute = numberImpute
        self.numberFields = numberFields
        self.numberColumns = numberColumns
        self.numberPassThrough = numberPassThrough
        self.categoryTables = categoryTables
        cells = CellTables(plans: plans, views: categoryTables.map(\.view))
        self.categoryWeights = categoryWeights
        self.categoryMissingIsError = categoryMissingIsError
        self.categoryUnknownIsError = categoryUnknownIsError
        self.categoryFields = categoryFields
        self.categoryColumns = categoryColumns
        self.categoryOneHot = categoryOneHot
        self.designTemplate = template
        trees = estimator.trees.map { TreeProgram($0, intercepts: estimator.intercepts, width: column) }
    }

    /// The field named `name`'s index in schema order.
    public func fieldIndex(_ name: String) -> Int? {
        let code = fieldTable.code(of: name)
        return code < 0 ? nil : Int(code)
    }

    // MARK: - One record

    /// Scores a typed record given in schema order.
    public func predict(_ values: [FieldValue], row: Int? = nil) throws(ScoringError) -> Prediction {
        guard values.count == plans.count else {
            throw ScoringError(row: row, field: nil, message: "expected \(plans.count) values in schema order, got \(values.count)")
        }
        return try withMargins(row: row) { m throws(ScoringError) in
            for i in plans.indices {
                switch values[i] {
                case .number(let x): try addNumber(field: i, x, m, row)
                case .text(let text): try addText(field: i, text, m, row)
                case .missing: try addMissing(field: i, m, row, record: nil)
                }
            }
        }
    }

    /// Scores a record given as a JSON object (by field name; other fields are
    /// ignored) or a JSON array (schema order).
    public func predict(json record: JSONValue, row: Int? = nil) throws(ScoringError) -> Prediction {
        try withMargins(row: row) { m throws(ScoringError) in
            switch record {
            case .object(let object):
                for i in plans.indices {
                    // Clients usually send fields in schema order: try that position first.
                    let value: JSONValue?
                    if i < object.count, object.keys[i] == fieldNames[i] {
                        value = object.values[i]
                    } else {
                        value = object[fieldNames[i]]
                    }
                    try addJSON(field: i, value, m, row, record: object.keys)
                }
            case .array(let array):
                guard array.count == plans.count else { throw arrayLength(array.count, row: row) }
                for i in plans.indices { try addJSON(field: i, array[i], m, row, record: nil) }
            default:
                throw ScoringError(row: row, field: nil, message: "expected a record (a JSON object or array), got \(record.excerpt)")
            }
        }
    }

    func arrayLength(_ count: Int, row: Int?) -> ScoringError {
        ScoringError(
            row: row, field: nil,
            message: "expected an array of \(plans.count) values in schema order (\(fieldList)), got \(count)")
    }

    private var fieldList: String {
        fieldNames.count <= 8 ? fieldNames.joined(separator: ", ") : fieldNames.prefix(8).joined(separator: ", ") + ", …"
    }

    /// Runs `body` on margins that start at the intercepts, then applies the link.
    private func withMargins(row: Int?, _ body: (UnsafeMutablePointer<Double>) throws(ScoringError) -> Void) throws(ScoringError) -> Prediction {
        // outputCount ≥ marginCount: 2 classes for 1 logistic margin, one margin per class for softmax,
        // 1 value for 1 identity margin.
        var out = [Double](repeating: 0, count: outputCount)
        let result = out.withUnsafeMutableBufferPointer { buffer in
            Result { () throws(ScoringError) -> Int in try scoreRecord(into: buffer.baseAddress!, row: row, body) }
        }
        return prediction(out, label: try result.get())
    }

    /// The prediction for outcome numbers `out` (`outputCount` of them) and label index `label`.
    package func prediction(_ out: [Double], label: Int) -> Prediction {
        guard isRegression else { return Prediction(probabilities: out, labelIndex: label, label: classes[label]) }
        return Prediction(probabilities: out, labelIndex: 0, label: JSONWriter.numberText(out[0]), value: out[0])
    }

    /// Scores one record whose fields `fill` sets through the `add…` functions,
    /// into `out` (`outputCount` values); the label index (0 for a regression model).
    /// A linear model adds its weights straight to the margins; a tree ensemble
    /// fills a design vector on the stack, then walks its trees.
    @inline(__always)
    func scoreRecord(
        into out: UnsafeMutablePointer<Double>, row: Int?, _ fill: (UnsafeMutablePointer<Double>) throws(ScoringError) -> Void
    ) throws(ScoringError) -> Int {
        guard let trees else {
            for k in 0..<marginCount { out[k] = bias[k] }
            try fill(out)
            return try finish(out, row: row)
        }
        return try withUnsafeTemporaryAllocation(of: Double.self, capacity: max(designTemplate.count, 1)) { x in
            Result { () throws(ScoringError) -> Int in
                _ = x.initialize(from: designTemplate)
                try fill(x.baseAddress!)
                trees.evaluate(row: x.baseAddress!, into: out)
                return try finish(out, row: row)
            }
        }.get()
    }

    func addJSON(
        field i: Int, _ value: JSONValue?, _ m: UnsafeMutablePointer<Double>, _ row: Int?, record: [String]?
    ) throws(ScoringError) {
        switch value {
        case nil:
            try addMissing(field: i, m, row, record: record)
        case .null?:
            try addMissing(field: i, m, row, record: nil)
        case .number(let x)?:
            try addNumber(field: i, x, m, row)
        case .string(let text)?:
            try addText(field: i, text, m, row)
        case let other?:
            throw wrongType(field: i, other, row: row)
        }
    }

    func wrongType(field i: Int, _ value: JSONValue, row: Int?) -> ScoringError {
        let expected = if case .number = plans[i] { "a number" } else { "a category (a string)" }
        return ScoringError(row: row, field: fieldNames[i], message: "expected \(expected), got \(value.excerpt)")
    }

    func addNumber(field i: Int, _ x: Double, _ m: UnsafeMutablePointer<Double>, _ row: Int?) throws(ScoringError) {
        guard case .number(let slot) = plans[i] else {
            // A number given for a category field matches its text ("36" for 36).
            return try addText(field: i, JSONWriter.numberText(x), m, row)
        }
        guard x.isFinite else {
            throw ScoringError(row: row, field: fieldNames[i], message: "expected a finite number, got \(x)")
        }
        if trees != nil { return m[numberColumns[slot]] = x }
        let base = slot * marginCount
        for k in 0..<marginCount { m[k] += numberWeights[base + k] * x }
    }

    func addText(field i: Int, _ text: String, _ m: UnsafeMutablePointer<Double>, _ row: Int?) throws(ScoringError) {
        switch plans[i] {
        case .number: throw notANumber(field: i, text, row: row)
        case .category(let slot): try addCode(field: i, slot, categoryTables[slot].code(of: text), m, row, text: text)
        }
    }

    func notANumber(field i: Int, _ text: String, row: Int?) -> ScoringError {
        let cut = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return ScoringError(row: row, field: fieldNames[i], message: "expected a number, got \"\(cut)\"")
    }

    /// Adds a category's weights by code; an unknown code follows the field's policy.
    @inline(__always)
    func addCode(
        field i: Int, _ slot: Int, _ code: Int32, _ m: UnsafeMutablePointer<Double>, _ row: Int?, text: @autoclosure () -> String
    ) throws(ScoringError) {
        if code >= 0 {
            if trees != nil {
                // One-hot: the value's column is 1; a code column holds the value's index.
                if categoryOneHot[slot] { m[categoryColumns[slot] + Int(code)] = 1 } else { m[categoryColumns[slot]] = Double(code) }
                return
            }
            let base = Int(code) * marginCount
            for k in 0..<marginCount { m[k] += categoryWeights[slot][base + k] }
        } else if categoryUnknownIsError[slot] {
            throw unknownCategory(field: i, text(), row: row)
        }
    }

    /// Whether field `i` may be absent (imputed or all zeros) rather than an error.
    package func canBeMissing(field i: Int) -> Bool {
        switch plans[i] {
        case .number(let slot): !numberImpute[slot].isNaN || numberPassThrough[slot]
        case .category(let slot): !categoryMissingIsError[slot]
        }
    }

    func addMissing(field i: Int, _ m: UnsafeMutablePointer<Double>, _ row: Int?, record: [String]?) throws(ScoringError) {
        switch plans[i] {
        case .number(let slot):
            let x = numberImpute[slot]
            if numberPassThrough[slot] { return }  // the template's NaN stays
            guard !x.isNaN else { throw missingValue(field: i, row: row, record: record) }
            if trees != nil { return m[numberColumns[slot]] = x }
            let base = slot * marginCount
            for k in 0..<marginCount { m[k] += numberWeights[base + k] * x }
        case .category(let slot):
            if categoryMissingIsError[slot] { throw missingValue(field: i, row: row, record: record) }
        }
    }

    /// Applies the link to the margins at `m`; the label index.
    func finish(_ m: UnsafeMutablePointer<Double>, row: Int?) throws(ScoringError) -> Int {
        let label = applyLink(m)
        guard label >= 0 else { throw overflow(row: row) }
        return label
    }

    /// Turns margins at `p[0..<marginCount]` into probabilities at `p[0..<classes.count]`
    /// (a regression's value is its margin); returns the label index (0 for a regression),
    /// or -1 when the margins are not numbers.
    @inline(__always)

    func applyLink(_ p: UnsafeMutablePointer<Double>) -> Int {
        switch link {
        case .logistic:
            let z = p[0]
            guard !z.isNaN else { return -1 }
            // scipy's expit, then 1 − p, as scikit-learn's predict_proba does.
            let p1 = 1 / (1 + exp(-z))
            p[0] = 1 - p1
            p[1] = p1
            return z > 0 ? 1 : 0
        case .softmax:
            let n = classes.count
            var best = 0
            var top = -Double.infinity
            for k in 0..<n {
                // Clamped so that an infinite margin cannot make ∞ − ∞.
                let z = Swift.min(Swift.max(p[k], -Double.greatestFiniteMagnitude), Double.greatestFiniteMagnitude)
                guard !z.isNaN else { return -1 }
                p[k] = z
                if z > top {
                    top = z
                    best = k
                }
            }
            var sum = 0.0
            for k in 0..<n {
                let e = exp(p[k] - top)
                p[k] = e
                sum += e
            }
            for k in 0..<n { p[k] /= sum }
            return best
        case .identity:
            return p[0].isFinite ? 0 : -1
        }
    }

    // MARK: - Error messages

    func unknownCategory(field i: Int, _ text: String, row: Int?) -> ScoringError {
        let values = document.schema.fields[i].values ?? []
        let shown = values.count <= 12 ? values.joined(separator: ", ") : values.prefix(12).joined(separator: ", ") + ", … (\(values.count) in all)"
        let cut = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return ScoringError(row: row, field: fieldNames[i], message: "unknown category \"\(cut)\"; expected one of \(shown)")
    }

    /// `record`: the keys of an object record the field was absent from, for a misspelling hint.
    func missingValue(field i: Int, row: Int?, record: [String]?) -> ScoringError {
        let name = fieldNames[i]
        // An absent field: point at the record's field that looks like a misspelling of it.
        let unknown = record?.filter { fieldIndex($0) == nil } ?? []
        if let near = unknown.min(by: { editDistance($0, name) < editDistance($1, name) }),
            editDistance(near, name) <= max(2, name.count / 3)
        {
            return ScoringError(
                row: row, field: name, message: "missing (the record has an unknown field \"\(near)\" — a misspelling?)")
        }
        return ScoringError(row: row, field: name, message: "missing, and the model requires a value")
    }

    func overflow(row: Int?) -> ScoringError {
        ScoringError(row: row, field: nil, message: "the inputs overflow the model's arithmetic (a value is too large in magnitude)")
    }
}

/// Levenshtein distance, case-insensitive, for "did you mean" hints.
package func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.lowercased().unicodeScalars)
    let b = Array(b.lowercased().unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// What placing a cell needs, as memory allocated once per scorer and freed with it.
///
/// Safety: written once at init, read-only after; the views point into the scorer's tables.
struct CellTables: @unchecked Sendable {
    let plans: UnsafeBufferPointer<Scorer.Plan>
    let views: UnsafeBufferPointer<CategoryTable.View>
    private let owner: Owner

    init(plans: [Scorer.Plan], views: [CategoryTable.View]) {
        let p = UnsafeMutableBufferPointer<Scorer.Plan>.allocate(capacity: max(1, plans.count))
        _ = p.initialize(from: plans)
        let v = UnsafeMutableBufferPointer<CategoryTable.View>.allocate(capacity: max(1, views.count))
        _ = v.initialize(from: views)
        self.plans = UnsafeBufferPointer(rebasing: p[0..<plans.count])
        self.views = UnsafeBufferPointer(rebasing: v[0..<views.count])
        owner = Owner(p.baseAddress!, v.baseAddress!)
    }

    private final class Owner: @unchecked Sendable {
        let plans: UnsafeMutablePointer<Scorer.Plan>
        let views: UnsafeMutablePointer<CategoryTable.View>
        init(_ plans: UnsafeMutablePointer<Scorer.Plan>, _ views: UnsafeMutablePointer<CategoryTable.View>) {
            self.plans = plans
            self.views = views
        }
        deinit {
            plans.deallocate()
            views.deallocate()
        }
    }
}
