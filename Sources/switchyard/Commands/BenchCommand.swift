import CSystem
import Foundation
import Registry
import Scoring

let benchScoreCommand = Command(
    words: ["bench", "score"],
    summary: "Measure the embedded scorer: single-record latency and batch rows/s on one core",
    options: [
        Option(name: "model", value: "REF", help: "a registered model (default: train a credit model in memory)"),
        Option(name: "records", value: "N", help: "single-record predictions timed, one by one", defaultValue: "200000"),
        Option(name: "rows", value: "N", help: "rows in the batch", defaultValue: "1000000"),
        Option(name: "repeat", value: "N", help: "batch runs; the median is reported", defaultValue: "5"),
    ],
    details: """
        Single record: each call is timed on its own (CLOCK_MONOTONIC, ~20 ns resolution
        and overhead included), for three inputs: a typed record in schema order, a
        parsed JSON object, and JSON text (parse + score). Batch: an already-parsed
        column batch of credit rows scored into a reused output, on one thread.
        """,
    run: { args in
        let records = try args.integer("records", range: 1000...100_000_000) ?? 200_000
        let rows = try args.integer("rows", range: 1000...100_000_000) ?? 1_000_000
        let repeats = try args.integer("repeat", range: 1...100) ?? 5
        let scorer: Scorer
        let label: String
        if let reference = args.string("model") {
            let (version, s) = try loadScorer(try openRegistry(), reference)
            scorer = s
            label = version.reference
        } else {
            scorer = try trainBenchModel()
            label = "credit (trained in memory on 20,000 fixture rows)"
        }
        let fieldCount = scorer.fieldNames.count
        print("model: \(label); \(fieldCount) inputs, \(scorer.classes.count) classes")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; one thread used\n")

        // Inputs from the credit fixture (fields the model lacks are left out).
        var generator = CreditFixture(seed: 99)
        let sample = 4096
        var jsonLines: [[UInt8]] = []
        var typed: [[FieldValue]] = []
        var objects: [JSONValue] = []
        for _ in 0..<sample {
            var line: [UInt8] = []
            CreditFixture.appendJSON(generator.next(), to: &line)
            line.removeLast()
            guard let value = try? JSONValue.parse(line) else { continue }
            jsonLines.append(line)
            objects.append(value)
            typed.append(scorer.fieldNames.map { name in
                switch value[name] {
                case .number(let x)?: .number(x)
                case .string(let s)?: .text(s)
                default: .missing
                }
            })
        }
        guard (try? scorer.predict(json: objects[0])) != nil else {
            throw CommandError("the model cannot score credit fixture records; bench score needs a credit-shaped model")
        }

        func timeEach(_ name: String, _ body: (Int) throws -> Void) rethrows {
            var samples = [UInt64](repeating: 0, count: records)
            for i in 0..<min(records, 10_000) { try body(i % sample) }  // warm up
            for i in 0..<records {
                let start = csystem_monotonic_ns()
                try body(i % sample)
                samples[i] = csystem_monotonic_ns() - start
            }
            samples.sort()
            let p50 = samples[records / 2], p99 = samples[records * 99 / 100], max = samples[records - 1]
            print("  " + name.padding(toLength: 28, withPad: " ", startingAt: 0)
                + "p50 \(p50) ns   p99 \(p99) ns   max \(max) ns")
        }
        print("single record (\(records) calls each):")
        var sink = 0.0
        try timeEach("typed record") { sink += try scorer.predict(typed[$0]).probabilities[0] }
        try timeEach("parsed JSON object") { sink += try scorer.predict(json: objects[$0]).probabilities[0] }
        try timeEach("JSON text → prediction") { sink += try scorer.predict(json: try JSONValue.parse(jsonLines[$0])).probabilities[0] }

        // Batch: build once, score repeatedly.
        var batch = ColumnBatch(for: scorer, capacity: rows)
        for r in 0..<rows {
            batch.appendRow()
            let record = typed[r % typed.count]
            for f in 0..<fieldCount {
                switch record[f] {
                case .number(let x): batch.setNumber(field: f, x)
                case .text(var s): s.withUTF8 { batch.setText(field: f, UnsafeRawBufferPointer($0)) }
                case .missing: break
                }
            }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)  // warm up, and size the output
        var rates: [Double] = []
        for _ in 0..<repeats {
            let start = csystem_monotonic_ns()
            scorer.score(batch, into: &output)
            let seconds = Double(csystem_monotonic_ns() - start) / 1e9
            rates.append(Double(rows) / seconds)
            sink += output.probabilities[0]
        }
        guard output.scored == rows else { throw CommandError("batch rejected \(rows - output.scored) rows: \(output.errors.first!)") }
        let sorted = rates.sorted()
        print("\nbatch (\(rows) rows, column-major, \(repeats) runs):")
        print("  median \(Int(sorted[sorted.count / 2])) rows/s   min \(Int(sorted.first!))   max \(Int(sorted.last!))"
            + "   (\(String(format: "%.1f", 1e9 / sorted[sorted.count / 2])) ns/row)")
        if sink.isNaN { print("") }  // keeps the work observable to the optimizer
        return Exit.ok
    })

/// A credit model trained in memory, so the benchmark runs on a fresh machine.
private func trainBenchModel() throws -> Scorer {
    var generator = CreditFixture(seed: 7)
    var csv = Array(CreditFixture.csvHeader.utf8)
    for _ in 0..<20_000 { CreditFixture.appendCSV(generator.next(), to: &csv) }
    do {
        let report = try Trainer.train(csv: csv, .init(name: "credit", label: "label", created: isoTimestamp(Date())))
        return try Scorer(report.document)
    } catch {
        throw CommandError("could not train the benchmark model: \(error)")
    }
}
