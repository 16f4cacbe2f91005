import Foundation
import Scoring

/// The repository's fixtures/ folder.
let fixturesURL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fixtures")

func fixtureData(_ name: String) throws -> Data {
    try Data(contentsOf: fixturesURL.appendingPathComponent(name))
}

/// A small binary model over two numbers and a category, written out by hand so
/// every expected probability can be computed in the test.
func handModel(
    numberMissing: ModelDocument.MissingPolicy = .error,
    categoryMissing: ModelDocument.MissingPolicy = .error,
    unknown: ModelDocument.UnknownPolicy = .error
) -> ModelDocument {
    ModelDocument(
        metadata: .init(name: "hand", created: "2026-11-24T00:00:00Z"),
        schema: .init(fields: [
            .init(name: "income", type: .number, missing: numberMissing),
            .init(name: "age", type: .number),
            .init(name: "city", type: .category, values: ["Zürich", "北京", "e\u{301}", "é"], missing: categoryMissing, unknown: unknown),
        ]),
        preprocessing: [
            .init(field: "income", transform: .standardize, mean: 50_000, scale: 20_000, impute: numberMissing == .impute ? 40_000 : nil),
            .init(field: "age", transform: .identity),
            .init(field: "city", transform: .oneHot),
        ],
        estimator: .init(coefficients: [[0.8, -0.03, 0.5, -0.25, 1.0, -1.0]], intercepts: [0.1], link: .logistic),
        outputs: .init(classes: ["good", "bad"]))
}

/// The hand model's positive-class probability, computed the long way.
func handProbability(income: Double, age: Double, cityCode: Int?) -> Double {
    let cityWeights = [0.5, -0.25, 1.0, -1.0]
    let z = 0.1 + 0.8 * (income - 50_000) / 20_000 - 0.03 * age + (cityCode.map { cityWeights[$0] } ?? 0)
    return 1 / (1 + exp(-z))
}

/// |a − b| within `relative` of |b| (or of 1e-300 for values that small).
func close(_ a: Double, _ b: Double, relative: Double) -> Bool {
    abs(a - b) <= relative * max(abs(b), 1e-300)
}

/// `seed` with `edits` random byte replacements, deletions and insertions (fuzzing).
func mutated(_ seed: [UInt8], edits: ClosedRange<Int>, _ random: inout SystemRandomNumberGenerator) -> [UInt8] {
    var bytes = seed
    for _ in 0..<Int.random(in: edits, using: &random) {
        let i = Int.random(in: 0..<max(bytes.count, 1), using: &random)
        switch (Int.random(in: 0..<3, using: &random), bytes.isEmpty) {
        case (0, false): bytes[i] = UInt8.random(in: 0...255, using: &random)
        case (1, false): bytes.remove(at: i)
        default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: min(i, bytes.count))
        }
    }
    return bytes
}
