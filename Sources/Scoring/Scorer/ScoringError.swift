/// Why a record could not be scored, naming the record and the field:
/// `row 17, field "income": expected a number, got "abc"`.
public struct ScoringError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 1-based record number within the request, batch or file; nil for a single record.
    public var row: Int?
    public var field: String?
    public var message: String

    public init(row: Int?, field: String?, message: String) {
        self.row = row
        self.field = field
        self.message = message
    }

    /// `field "income": expected a number, got "abc"` — the description without the row,
    /// for outputs that carry the line or event id beside it.
    public var reason: String { field.map { "field \"\($0)\": \(message)" } ?? message }

    public var description: String {
        var parts: [String] = []
        if let row { parts.append("row \(row)") }
        if let field { parts.append("field \"\(field)\"") }
        return parts.isEmpty ? message : parts.joined(separator: ", ") + ": " + message
    }
}

/// One record's answer: a probability per class (in `Scorer.classes` order) and the label,
/// or a regression model's value.
public struct Prediction: Sendable, Equatable {
    /// A classifier's probabilities in class order; a regression model's one value.
    public var probabilities: [Double]
    public var labelIndex: Int
    /// A classifier's most probable class; a regression model's value as text.
    public var label: String
    /// A regression model's predicted value; nil for a classifier.
    public var value: Double?

    public init(probabilities: [Double], labelIndex: Int, label: String, value: Double? = nil) {
        self.probabilities = probabilities
        self.labelIndex = labelIndex
        self.label = label
        self.value = value
    }
}

/// A value of one field in a typed record (schema order).
public enum FieldValue: Sendable, Equatable {
    case number(Double)
    case text(String)
    case missing
}
