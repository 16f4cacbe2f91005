import Foundation
import JSON
import Scoring
import Testing

@Suite struct TrainerTests {
    struct Reference: Decodable {
        var rows: Int
        var data_seed: UInt64
        var split_seed: UInt64
        var holdout: Double
        var data_sha256: String
        var train_rows: Int
        var auc: Double
    }

    func creditCSV(rows: Int, seed: UInt64) -> [UInt8] {
        var generator = CreditFixture(seed: seed)
        var csv = Array(CreditFixture.csvHeader.utf8)
        for _ in 0..<rows { CreditFixture.appendCSV(generator.next(), to: &csv) }
        return csv
    }

    @Test func heldOutAUCIsWithinHalfAPointOfScikitLearnOnTheSameSplit() throws {
        let reference = try JSONDecoder().decode(Reference.self, from: try fixtureData("sklearn-credit-reference.json"))
        let csv = creditCSV(rows: reference.rows, seed: reference.data_seed)
        var hasher = SHA256()
        hasher.update(csv)
        // The same bytes scikit-learn was fitted on, or the comparison means nothing.
        #expect(SHA256.hexString(hasher.finalize()) == reference.data_sha256)

        let report = try Trainer.train(
            csv: csv, .init(name: "credit", label: "label", holdout: reference.holdout, seed: reference.split_seed, created: "t"))
        #expect(report.trainRows == reference.train_rows)
        #expect(report.converged)
        let auc = try #require(report.document.metadata.training?.metrics["auc"])
        #expect(abs(auc - reference.auc) <= 0.005, "switchyard \(auc) vs scikit-learn \(reference.auc)")
        #expect(auc > 0.75 && auc < 0.85)  // "near 0.8", as DESIGN.md describes the fixture
        #expect(report.ignored == ["id"])
        #expect(report.document.schema.fields.count == 15)
        #expect(report.document.outputs.classes == ["0", "1"])
        let metrics = report.document.metadata.training!.metrics
        #expect(metrics["accuracy"]! > 0.6 && metrics["log_loss"]! < 0.69)
    }

    @Test func fitsAMultinomialModelAndItsMetadataDescribesTheData() throws {
        // Three classes whose centers differ in two numbers and a category.
        var random = SplitMix64(seed: 3)
        var csv = "x,y,color,label\n"
        for _ in 0..<3000 {
            let k = Int(random.next() % 3)
            let x = Double(k) * 2 + random.normal()
            let y = Double(2 - k) * 1.5 + random.normal()
            let color = ["red", "green", "blue"][random.uniform() < 0.7 ? k : Int(random.next() % 3)]
            csv += "\(x),\(y),\(color),\(["setosa", "versicolor", "virginica"][k])\n"
        }
        let report = try Trainer.train(csv: Array(csv.utf8), .init(name: "three", label: "label", created: "t"))
        #expect(report.document.estimator.link == .softmax)
        #expect(report.document.estimator.coefficients?.count == 3)
        #expect(report.document.outputs.classes == ["setosa", "versicolor", "virginica"])
        let metrics = try #require(report.document.metadata.training?.metrics)
        #expect(metrics["accuracy"]! > 0.85)
        #expect(metrics["auc"]! > 0.95)
        let scorer = try Scorer(report.document)
        let p = try scorer.predict(json: try JSONValue.parse(#"{"x": 4.2, "y": -0.1, "color": "blue"}"#))
        #expect(p.label == "virginica")
        #expect(abs(p.probabilities.reduce(0, +) - 1) < 1e-12)
    }

    @Test func missingCellsInTrainingDataMakeImputingFields() throws {
        let csv = "a,b,label\n1,x,0\n,y,1\n3,,0\n4,x,1\n5,y,0\n6,x,1\n7,y,0\n8,x,1\n9,y,0\n10,x,1\n11,y,0\n12,x,1\n"
        let report = try Trainer.train(csv: Array(csv.utf8), .init(name: "m", label: "label", holdout: 0.3, created: "t"))
        let fields = report.document.schema.fields
        #expect(fields[0].missing == .impute)
        #expect(fields[1].missing == .allZeros)
        #expect(report.document.preprocessing[0].impute != nil)
        _ = try Scorer(report.document).predict([.missing, .missing])
    }

    @Test(arguments: [
        ("", "empty"),
        ("a,b\n", "no rows"),
        ("a,label\n1,0\n2,0\n", "only one value"),
        ("a,b\n1,0\n", #"no column "label""#),
        ("a,label\n1\n", "line 2: 1 fields, but the header has 2"),
        ("a,a,label\n1,2,0\n", "appears twice"),
        ("a,label\n1,\n2,1\n", "data row 1: the label \"label\" is empty"),
    ])
    func explainsWhatIsWrongWithTheData(csv: String, message: String) {
        #expect {
            try Trainer.train(csv: Array(csv.utf8), .init(name: "m", label: "label", created: "t"))
        } throws: { error in
            (error as? TrainingError)?.message.contains(message) == true
        }
    }

    @Test func theSplitIsTheDocumentedSplitMix64Rule() {
        // First values of SplitMix64(seed 42), as fixtures/sklearn_reference.py computes them.
        var generator = SplitMix64(seed: 42)
        for i in 0..<1000 {
            let u = Double(generator.next() >> 11) * 0x1p-53
            #expect(Trainer.isHeldOut(row: i, seed: 42, share: 0.2) == (u < 0.2))
        }
    }
}

@Suite struct FixtureAndHashTests {
    @Test func theCreditFixtureIsDeterministicAndWellFormed() throws {
        func bytes(_ seed: UInt64) -> [UInt8] {
            var g = CreditFixture(seed: seed)
            var out: [UInt8] = []
            for _ in 0..<500 { CreditFixture.appendCSV(g.next(), to: &out) }
            return out
        }
        #expect(bytes(7) == bytes(7))
        #expect(bytes(7) != bytes(8))
        let table = try TrainingTable(csv: Array(CreditFixture.csvHeader.utf8) + bytes(7))
        #expect(table.names == CreditFixture.columns)
        #expect(table.rowCount == 500)
        for (name, column) in zip(table.names, table.columns) {
            switch (name, column) {
            case ("region", .categories(_, let values)): #expect(Set(values).isSubset(of: CreditFixture.regions))
            case ("product", .categories(_, let values)): #expect(Set(values).isSubset(of: CreditFixture.products))
            case ("channel", .categories(_, let values)): #expect(Set(values).isSubset(of: CreditFixture.channels))
            case (_, .numbers(let values)):
                let ranges: [String: ClosedRange<Double>] = [
                    "amount": 500...100_000, "rate": 2.5...35, "income": 8_000...500_000, "age": 18...85,
                    "utilization": 0...1, "debt_ratio": 0...2.5, "credit_score": 300...850, "label": 0...1,
                ]
                if let range = ranges[name] { #expect(values.allSatisfy { range.contains($0) }, "\(name)") }
                if name == "term" { #expect(Set(values).isSubset(of: [12, 24, 36, 48, 60])) }
            default: Issue.record("column \(name) has the wrong type")
            }
        }
    }

    @Test func theCommittedSampleIsWhatTheGeneratorWrites() throws {
        var g = CreditFixture(seed: 7)
        var csv = Array(CreditFixture.csvHeader.utf8)
        for _ in 0..<200 { CreditFixture.appendCSV(g.next(), to: &csv) }
        #expect(csv == [UInt8](try fixtureData("credit-sample.csv")))
        var h = CreditFixture(seed: 7)
        var jsonl: [UInt8] = []
        for _ in 0..<20 { CreditFixture.appendJSON(h.next(), to: &jsonl) }
        #expect(jsonl == [UInt8](try fixtureData("credit-sample.jsonl")))
    }

    @Test func jsonLinesFormHasTheSameFieldsWithoutTheLabel() throws {
        var g = CreditFixture(seed: 1)
        var line: [UInt8] = []
        CreditFixture.appendJSON(g.next(), to: &line)
        guard case .object(let o) = try JSONValue.parse(line) else { Issue.record("not an object"); return }
        #expect(o.keys == Array(CreditFixture.columns.dropLast()))
    }

    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func sha256MatchesTheStandardVectors(input: String, digest: String) {
        #expect(SHA256.hex(Array(input.utf8)) == digest)
        // Fed in uneven pieces, the digest is the same.
        var hasher = SHA256()
        for piece in Array(input.utf8).chunked(7) { hasher.update(piece) }
        #expect(SHA256.hexString(hasher.finalize()) == digest)
    }

    @Test func sha256OfAMillionAs() {
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000))
            == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func sha256ExtensionsAgreeWithThePortableRounds() {
        // Random lengths and split points, so both paths see partial and whole blocks.
        var random = SplitMix64(seed: 5)
        for _ in 0..<200 {
            let bytes = (0..<Int(random.next() % 5000)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let split = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
            var fast = SHA256(), portable = SHA256(accelerated: false)
            fast.update(Array(bytes[..<split]))
            fast.update(Array(bytes[split...]))
            portable.update(bytes)
            #expect(fast.finalize() == portable.finalize())
        }
    }

    @Test func aucCountsTiesAsHalf() {
        #expect(Metrics.auc(scores: [0.1, 0.4, 0.35, 0.8], positives: [false, false, true, true]) == 0.75)
        #expect(Metrics.auc(scores: [0.5, 0.5], positives: [false, true]) == 0.5)
        #expect(Metrics.auc(scores: [0.5, 0.7], positives: [true, true]) == nil)
    }
}

extension Array {
    func chunked(_ size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}

@Suite struct LogisticObjectiveTests {
    /// The SIMD, multi-threaded objective: its gradient matches finite differences, and splitting
    /// the rows over threads changes nothing but the order of additions.
    @Test(arguments: [1, 3])
    func gradientMatchesFiniteDifferencesOnAnyNumberOfThreads(margins: Int) {
        var random = SplitMix64(seed: 9)
        let n = 12_000, width = 37  // enough work for two threads; not a multiple of the SIMD widths
        let design = (0..<(n * width)).map { _ in random.normal() }
        let labels = (0..<n).map { _ in Int32(random.next() % UInt64(max(2, margins))) }
        let params = (0..<(margins * (width + 1))).map { _ in random.normal() * 0.1 }
        design.withUnsafeBufferPointer { x in
            let one = LogisticObjective(design: x, labels: labels, width: width, margins: margins, l2: 1e-3, threads: 1)
            let two = LogisticObjective(design: x, labels: labels, width: width, margins: margins, l2: 1e-3, threads: 2)
            #expect(two.threads == 2)
            var g1 = [Double](repeating: 0, count: params.count), g2 = g1, scratch = g1
            let f1 = one.evaluate(params, &g1), f2 = two.evaluate(params, &g2)
            #expect(abs(f1 - f2) <= 1e-12 * abs(f1))
            for i in g1.indices { #expect(abs(g1[i] - g2[i]) <= 1e-12) }
            for i in Set([0, 5, width, params.count / 2, params.count - 1]).sorted() {
                var up = params, down = params
                up[i] += 1e-6
                down[i] -= 1e-6
                let numeric = (one.evaluate(up, &scratch) - one.evaluate(down, &scratch)) / 2e-6
                #expect(abs(numeric - g1[i]) <= 1e-6, "parameter \(i): \(numeric) vs \(g1[i])")
            }
        }
    }
}
