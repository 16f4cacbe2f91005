import ControlProtocol
import Foundation
import Registry
import Scoring

let fixturesCreditCommand = Command(
    words: ["fixtures", "credit"],
    summary: "Write the deterministic synthetic credit table (CSV or JSON Lines)",
    options: [
        Option(name: "rows", value: "N", help: "number of rows", required: true),
        Option(name: "seed", value: "S", help: "random seed; the same seed gives the same bytes", defaultValue: "7"),
        Option(name: "out", value: "FILE", help: "where to write ('-' for standard output)", required: true),
        Option(name: "format", value: "csv|jsonl", help: "CSV with a label column, or JSON Lines without it", defaultValue: "csv"),
    ],
    details: """
        Columns: id, 12 numbers (amount, term, rate, income, age, tenure, utilization,
        inquiries, delinquencies, open_accounts, debt_ratio, credit_score), 3 categories
        (region, product, channel) and a 0/1 label drawn from a logistic function of them.
        The file appears atomically: complete under its name, or not at all.
        """,
    run: { args in
        let rows = try args.integer("rows", range: 1...1_000_000_000)!
        guard let seed = UInt64(args.string("seed") ?? "7") else { throw UsageError("--seed expects a whole number ≥ 0") }
        let format = try args.choice("format", ["csv", "jsonl"]) ?? "csv"
        let out = try args.require("out")
        try writeCreditFixture(rows: rows, seed: seed, format: format, to: out)
        if out != "-" { writeError("wrote \(rows) rows to \(out)") }
        return Exit.ok
    })

/// Streams the credit table to `path` (or standard output for "-") in 1 MiB pieces.
func writeCreditFixture(rows: Int, seed: UInt64, format: String, to path: String) throws {
    var generator = CreditFixture(seed: seed)
    var buffer: [UInt8] = []
    buffer.reserveCapacity(1 << 20 + 4096)
    if format == "csv" { buffer.append(contentsOf: CreditFixture.csvHeader.utf8) }
    let file = path == "-" ? nil : try registryCall { () throws(RegistryError) in try AtomicFile(URL(fileURLWithPath: path)) }
    func flush() throws {
        if let file {
            try registryCall { () throws(RegistryError) in try file.write(buffer) }
        } else {
            FileHandle.standardOutput.write(Data(buffer))
        }
        buffer.removeAll(keepingCapacity: true)
    }
    for _ in 0..<rows {
        let row = generator.next()
        if format == "csv" { CreditFixture.appendCSV(row, to: &buffer) } else { CreditFixture.appendJSON(row, to: &buffer) }
        if buffer.count >= 1 << 20 { try flush() }
    }
    try flush()
    try registryCall { () throws(RegistryError) in try file?.commit() }
}
