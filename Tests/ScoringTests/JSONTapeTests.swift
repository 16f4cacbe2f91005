import Foundation
import JSON
import Scoring
import Testing

@Suite struct JSONTapeTests {
    func tapeScore(_ scorer: Scorer, _ text: String, row: Int? = 17) -> Result<[Double], ScoringError> {
        var tape = JSONTape()
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { buffer in
            do { try tape.parse(buffer) } catch { return .failure(ScoringError(row: nil, field: nil, message: "\(error)")) }
            var out = [Double](repeating: .nan, count: scorer.classes.count)
            var nodes: [Int32] = []
            let result = out.withUnsafeMutableBufferPointer { p in
                Result { () throws(ScoringError) -> Int in try scorer.predict(tape: tape, record: tape.root, row: row, fieldNodes: &nodes, into: p.baseAddress!) }
            }
            return result.map { _ in out }
        }
    }

    func valueScore(_ scorer: Scorer, _ text: String, row: Int? = 17) -> Result<[Double], ScoringError> {
        guard let value = try? JSONValue.parse(text) else { return .failure(ScoringError(row: nil, field: nil, message: "parse")) }
        return Result { () throws(ScoringError) -> [Double] in try scorer.predict(json: value, row: row).probabilities }
    }

    @Test func acceptsExactlyWhatTheParserAccepts() {
        var random = SystemRandomNumberGenerator()
        let seed = Array(#"{"a": [1, -2.5e3, true, false, null, "x\u00e9\n"], "b": {"c": "北京"}, "d": 0.1}"#.utf8)
        for _ in 0..<20_000 {
            let bytes = mutated(seed, edits: 1...4, &random)
            var tape = JSONTape()
            let tapeOK = bytes.withUnsafeBytes { (try? tape.parse($0)) != nil }
            let valueOK = (try? JSONValue.parse(bytes)) != nil
            #expect(tapeOK == valueOK, "\(String(decoding: bytes, as: UTF8.self))")
        }
    }

    @Test func navigatesObjectsAndArrays() throws {
        let bytes = Array(#"{"id": "r1", "inputs": [{"name": "x", "data": [[1, 2], [3]]}, {"name": "y"}], "z": null}"#.utf8)
        var tape = JSONTape()
        try bytes.withUnsafeBytes { buffer in
            try tape.parse(buffer)
            let inputs = try #require(tape.member(tape.root, "inputs"))
            #expect(tape.kind(inputs) == .array)
            let tensors = tape.elements(inputs)
            #expect(tensors.count == 2)
            #expect(tape.member(tensors[0], "name").flatMap { tape.string($0) } == "x")
            let data = try #require(tape.member(tensors[0], "data"))
            #expect(tape.elements(data).map { tape.elements($0).compactMap { tape.number($0) } } == [[1, 2], [3]])
            #expect(tape.member(tape.root, "id").flatMap { tape.string($0) } == "r1")
            #expect(tape.member(tape.root, "z").map { tape.kind($0) } == .null)
            #expect(tape.member(tape.root, "missing") == nil)
        }
    }

    @Test func scoresAndFailsExactlyAsTheValuePath() throws {
        let scorer = try Scorer(handModel())
        let records = [
            #"{"income": 61000, "age": 40, "city": "北京"}"#,
            #"{"city": "Zürich", "age": 40, "income": 61000, "extra": [1]}"#,
            #"[61000, 40, "e\u0301"]"#,
            #"{"income": "abc", "age": 40, "city": "é"}"#,
            #"{"income": true, "age": 40, "city": "é"}"#,
            #"{"income": 1, "age": [40], "city": "é"}"#,
            #"{"income": 1, "age": 40, "city": {"a": 1}}"#,
            #"[1, 2]"#,
            #""just a string""#,
            #"{"incme": 1, "age": 40, "city": "é"}"#,
            #"{"income": null, "age": 40, "city": "é"}"#,
            #"{"income": 1e400, "age": 40, "city": "é"}"#,
            #"{"income": 1, "age": 2, "city": ""}"#,
            #"{"income": 1, "age": 2, "city": "atl\"antis"}"#,
            #"{"in\u0063ome": 5, "age": 2, "city": "Z\u00fcrich"}"#,
        ]
        for record in records {
            let a = tapeScore(scorer, record), b = valueScore(scorer, record)
            switch (a, b) {
            case (.success(let x), .success(let y)): #expect(x == y, "\(record)")
            case (.failure(let x), .failure(let y)): #expect(x == y, "\(record)")
            default: Issue.record("\(record): tape \(a) vs value \(b)")
            }
        }
    }

    @Test func matchesScikitLearnFixturesExactly() throws {
        for (model, expected) in [("sklearn-credit-model.json", "sklearn-credit-expected.jsonl"), ("sklearn-digits-model.json", "sklearn-digits-expected.jsonl")] {
            let scorer = try Scorer(try ModelDocument.decode(try fixtureData(model)))
            for line in String(decoding: try fixtureData(expected), as: UTF8.self).split(separator: "\n") {
                let record = try #require(try JSONValue.parse(String(line))["record"])
                let text = record.jsonText
                #expect(try tapeScore(scorer, text).get() == valueScore(scorer, text).get())
            }
        }
    }
}
