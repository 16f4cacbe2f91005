import JSON
import Scoring

/// Scores one JSON object given as bytes (a JSON Lines record, a stream event):
/// parse into a reused tape, check it is an object, predict. Batch and stream
/// share it, so both reject a bad record with the same words.
struct JSONRecordScorer {
    private(set) var tape = JSONTape()
    private var fieldNodes: [Int32] = []
    /// The last record's probabilities, `classes.count` of them.
    private(set) var probabilities: [Double] = []

    /// Counts the last scored record into `drift`'s bins, from counter slot `loop`.
    func observe(_ drift: DriftMonitor, loop: Int = 0, probability: Double) {
        fieldNodes.withUnsafeBufferPointer { drift.observe(loop: loop, tape: tape, nodes: $0, probability: probability) }
    }

    /// The label index, or why the record cannot be scored.
    mutating func score(_ text: UnsafeRawBufferPointer, with scorer: Scorer) -> Result<Int, ScoringFailure> {
        do {
            try tape.parse(text)
        } catch {
            return .failure(ScoringFailure(reason: "not valid JSON: \(error)", isObject: false))
        }
        guard tape.kind(tape.root) == .object else {
            return .failure(ScoringFailure(reason: "expected a JSON object, got \(tape.value(tape.root).excerpt)", isObject: false))
        }
        let width = max(scorer.classes.count, scorer.marginCount)
        if probabilities.count < width { probabilities = [Double](repeating: 0, count: width) }
        let tape = self.tape
        do {
            return .success(try probabilities.withUnsafeMutableBufferPointer { p throws(ScoringError) -> Int in
                try scorer.predict(tape: tape, record: tape.root, row: nil, fieldNodes: &fieldNodes, into: p.baseAddress!)
            })
        } catch {
            return .failure(ScoringFailure(reason: error.reason, isObject: true))
        }
    }
}

/// Why a record was not scored, in words for a rejects file or a dead letter.
struct ScoringFailure: Error {
    var reason: String
    /// Whether the record was a JSON object (its members, such as `id`, can be read from the tape).
    var isObject: Bool
}
