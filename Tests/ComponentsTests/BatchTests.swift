import ControlProtocol
import Foundation
import JSON
import Synchronization
import Testing

@testable import Components
@testable import HTTP
import Registry
import Scoring
import Telemetry

private let utc: Calendar = {
    var c = Calendar(identifier: .gregorian)
    c.timeZone = TimeZone(identifier: "UTC")!
    return c
}()

private func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

/// The outcome numbers batch, stream and serve write: a probability of 1e-4 or more with 12
/// decimals and no trailing zero, reading back within half a unit of the 12th decimal; anything
/// else (smaller, a regression's value) in full, reading back exactly.
@Suite struct OutcomeTextTests {
    @Test func probabilitiesHaveTwelveDecimalsAtMostAndReadBack() throws {
        var generator = SplitMix64(seed: 5)
        for n in 0..<200_000 {
            let p: Double = switch n % 4 {
            case 0: Double(generator.next() >> 11) / Double(1 << 53)
            case 1: 1e-4 + Double(generator.next() % 1_000_000) * 1e-12  // near the threshold
            case 2: Double(generator.next() % 1_000_000_000_000) / 1e12  // exactly 12 decimals
            default: 1 - Double(generator.next() % 1_000_000) * 1e-15   // near 1
            }
            var out: [UInt8] = []
            appendOutcome(p, regression: false, to: &out)
            let text = String(decoding: out, as: UTF8.self)
            let back = try #require(Double(text), "\(p) → \(text)")
            if p >= 1e-4 {
                #expect(text == "1" || (text.hasPrefix("0.") && text.count <= 14 && !text.hasSuffix("0")), "\(p) → \(text)")
                #expect(abs(back - p) <= 0.5e-12 + 1e-16, "\(p) → \(text)")
            } else {
                #expect(back == p, "\(p) → \(text)")
            }
        }
        for v in [0.0, -0.0, 1e-300, -2.2250738585072014e-308, 123456.789, -1e22, .nan] {
            var out: [UInt8] = []
            appendOutcome(v, regression: true, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == JSONWriter.numberText(v))
        }
    }
}

@Suite struct ScheduleTests {
    @Test(arguments: [
        ("0 2 * * *", "2026-11-24T10:15:00Z", "2026-11-25T02:00:00Z"),
        ("*/15 * * * *", "2026-11-24T10:15:00Z", "2026-11-24T10:30:00Z"),
        ("5,35 9-17 * * mon-fri", "2026-11-27T17:40:00Z", "2026-11-30T09:05:00Z"),  // Friday evening → Monday
        ("0 0 1 jan *", "2026-11-24T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("0 12 13 * 5", "2026-11-24T00:00:00Z", "2026-11-27T12:00:00Z"),  // day 13 OR Friday (Vixie rule)
        ("0 0 * * 7", "2026-11-24T00:00:00Z", "2026-11-29T00:00:00Z"),  // 7 is Sunday
        ("0 0 29 2 *", "2026-11-24T00:00:00Z", "2028-02-29T00:00:00Z"),  // the next leap day
        ("@hourly", "2026-11-24T10:59:59Z", "2026-11-24T11:00:00Z"),
        ("10/20 * * * *", "2026-11-24T10:31:00Z", "2026-11-24T10:50:00Z"),
    ])
    func cronNextRun(expression: String, after: String, next: String) throws {
        let cron = try CronExpression(expression)
        #expect(cron.next(after: date(after), calendar: utc) == date(next))
    }

    @Test(arguments: [
        ("0 2 * *", "5 fields"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * foo *", "month field: cannot read \"foo\""),
        ("*/0 * * * *", "the step in \"*/0\" must be a positive number"),
        ("0 5-2 * * *", "the range \"5-2\" runs backwards"),
    ])
    func cronErrorsNameTheField(expression: String, message: String) {
        do {
            _ = try CronExpression(expression)
            Issue.record("accepted \(expression)")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
        }
    }

    @Test func intervalsAreMultiplesSinceTheEpoch() throws {
        let every15 = try Schedule.interval("every 15m")
        #expect(every15 == .every(seconds: 900))
        #expect(every15.next(after: date("2026-11-24T10:07:00Z")) == date("2026-11-24T10:15:00Z"))
        #expect(every15.next(after: date("2026-11-24T10:15:00Z")) == date("2026-11-24T10:30:00Z"))
        #expect(try Schedule.interval("2h") == .every(seconds: 7200))
        #expect(throws: ScheduleError.self) { try Schedule.interval("every fortnight") }
        #expect(throws: ScheduleError.self) { try Schedule.interval("every 0m") }
    }

    @Test func missedSlotsGiveOneCatchUpForTheLatest() throws {
        let hourly = try Schedule.interval("every 1h")
        let missed = hourly.missed(since: date("2026-11-24T07:00:00Z"), now: date("2026-11-24T10:20:00Z"))
        #expect(missed?.latest == date("2026-11-24T10:00:00Z"))
        #expect(missed?.count == 3)
        #expect(hourly.missed(since: date("2026-11-24T10:00:00Z"), now: date("2026-11-24T10:59:00Z")) == nil)
    }
}

/// A credit CSV in the fixture's columns, with `bad` lines mixed in.
private func creditCSV(rows: Int, seed: UInt64) -> [UInt8] {
    var generator = CreditFixture(seed: seed)
    var csv = Array(CreditFixture.csvHeader.utf8)
    for _ in 0..<rows { CreditFixture.appendCSV(generator.next(), to: &csv) }
    return csv
}

/// A scratch home with the scikit-learn credit model as credit@1 (production) and a shifted credit@2.
final class BatchFixture: @unchecked Sendable {
    let root: URL
    let home: Home
    let registry: ModelRegistry
    let ledger: RunLedger
    let keys: KeyStore
    let input: URL
    let output: URL
    var operateKey = "", readKey = "", adminKey = ""
    var component: BatchComponent?
    var host: ComponentHost?
    var port = 0

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-batch-\(UUID().uuidString)")
        home = Home(root.appendingPathComponent("home"))
        registry = try ModelRegistry(home: home)
        try registerCreditVersions(registry)
        ledger = try RunLedger(home: home)
        keys = try KeyStore(home: home)
        operateKey = try keys.create(scope: .operate, name: nil, who: "test").1
        readKey = try keys.create(scope: .read, name: nil, who: "test").1
        adminKey = try keys.create(scope: .admin, name: nil, who: "test").1
        input = root.appendingPathComponent("in")
        output = root.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: input.appendingPathComponent(name))
    }

    func scorer(_ version: Int) throws -> Scorer {
        try Scorer(try registry.document(try registry.resolve("credit@\(version)")))
    }

    /// Options for tests that write an input and run at once: no settle interval (the settle test sets one).
    static var immediate: BatchComponent.Options {
        var options = BatchComponent.Options()
        options.settleSeconds = 0
        return options
    }

    @discardableResult
    func start(schedule: Schedule? = nil, options: BatchComponent.Options = BatchFixture.immediate) throws -> BatchComponent {
        let authenticator = Authenticator(store: keys, loops: 1)
        let events = EventLog()
        let batch = try BatchComponent(
            registry: registry, ledger: ledger, reference: "credit@production", job: "test", input: input, pattern: nil,
            output: output, schedule: schedule, options: options, events: events, authenticator: authenticator)
        try batch.start()
        let host = ComponentHost(component: batch, observer: nil, configuration: .init(port: 0, threads: 1),
                                 authenticator: authenticator, events: events, fleet: nil)
        port = try host.start()
        component = batch
        self.host = host
        return batch
    }

    func stop() {
        host?.stop()
        component?.stop()
        try? FileManager.default.removeItem(at: root)
    }

    func request(_ method: String, _ path: String, key: String?, body: String = "", headers: [(String, String)] = []) throws -> (status: Int, json: JSONValue) {
        var h = headers + [("Content-Type", "application/json")]
        if let key { h.append(("Authorization", "Bearer \(key)")) }
        let response = try HTTPClient(port: port).request(method, path, headers: h, body: Array(body.utf8))
        return (response.status, (try? JSONValue.parse(response.body)) ?? .null)
    }

    /// The typed client, with `key`.
    func api(_ key: String?) throws -> ComponentAPI { try ComponentAPI(url: "http://127.0.0.1:\(port)", key: key) }

    /// Polls run `id` until it has finished (a deadline that only fails a hung run).
    func waitForRun(_ id: Int) throws -> RunLedger.Run {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let run = try ledger.run(id), run.status.isFinished { return run }
            usleep(20_000)
        }
        throw HTTPError(500, "run \(id) did not finish in 60 s")
    }
}

/// 400 credit rows with quoted fields holding commas, doubled quotes and line ends, CRLF and LF
/// line ends, and broken records (rejected).
private func quotedCSV(rows: Int = 400) -> [UInt8] {
    var csv = Array("id,amount,term,rate,income,age,tenure,utilization,inquiries,delinquencies,open_accounts,debt_ratio,credit_score,region,product,channel\r\n".utf8)
    var generator = CreditFixture(seed: 9)
    for i in 0..<rows {
        var row: [UInt8] = []
        CreditFixture.appendCSV(generator.next(), to: &row)
        var text = String(decoding: row, as: UTF8.self)
        text = String(text[..<text.lastIndex(of: ",")!])  // drop the label
        var cells = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        switch i % 7 {
        case 0: cells[0] = "\"id, with comma \(i)\""
        case 1: cells[0] = "\"id \"\"quoted\"\"\n\(i)\""
        case 2: cells[1] = "\"\(cells[1])\""
        case 3 where i % 3 == 0: cells[2] = "3\"6"  // a stray quote: rejected
        case 4 where i % 5 == 0: cells[3] = "\"17\"x"  // text after a closing quote: rejected
        default: break
        }
        csv += Array((cells.joined(separator: ",") + (i % 2 == 0 ? "\r\n" : "\n")).utf8)
    }
    return csv
}

@Suite struct BatchRunnerTests {
    /// Every row is scored or rejected; outputs match the embedded scorer; rejects name line and reason.
    @Test func rowsAreScoredOrRejectedNeverLost() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let good = creditCSV(rows: 300, seed: 3)
        var csv = good
        csv += Array("999,abc,36,5,50000,30,2,0.5,1,0,3,0.3,700,north,auto,online,0\n".utf8)  // line 302
        csv += Array("1000,100,36\n".utf8)  // line 303
        csv += Array("1001,\"1\"2,36,5,50000,30,2,0.5,1,0,3,0.3,700,north,auto,online,0\n".utf8)  // line 304
        csv += Array("1002,100,36,5,,30,2,0.5,1,0,3,0.3,700,north,auto,online,0\n".utf8)  // line 305
        try f.write("a.csv", csv)
        let scorer = try f.scorer(1)
        let runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: f.output, workers: 2)
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let progress = BatchProgress()
        let result = runner.score(f.input.appendingPathComponent("a.csv"), progress: progress)
        #expect(result.error == nil)
        #expect(result.rowsRead == 304)
        #expect(result.rowsRead == result.rowsScored + result.rowsRejected)
        #expect(result.rowsRejected == 4)
        #expect(result.input.sha256 == SHA256.hex(csv))
        #expect(progress.rowsRead.load(ordering: .relaxed) == 304)

        let rejects = try String(contentsOf: f.output.appendingPathComponent("a.rejects.csv"), encoding: .utf8)
        let lines = rejects.split(separator: "\n")
        #expect(lines[0] == "line,reason,record")
        #expect(lines[1].hasPrefix(#"302,"field ""amount"": expected a number, got ""abc""","999,abc,36"#))
        #expect(lines[2].hasPrefix(#"303,"expected 17 fields (as in the header), got 3","1000,100,36""#))
        #expect(lines[3].hasPrefix("304,\"not valid CSV"))
        #expect(lines[4].hasPrefix(#"305,"field ""income"": missing, and the model requires a value""#))

        // Output rows: the id, the scorer's probabilities (12 decimals), label, version.
        let output = try String(contentsOf: f.output.appendingPathComponent("a.csv"), encoding: .utf8).split(separator: "\n")
        #expect(output[0] == "id,probability_0,probability_1,label,model_version")
        #expect(output.count == 301)
        let records = try CSVTable(good)
        for (i, row) in output.dropFirst().enumerated() {
            let cells = row.split(separator: ",")
            let expected = try scorer.predict(json: records.json(i, fields: scorer.fieldNames))
            #expect(cells[0] == Substring(records.cell(i, "id")))
            #expect(abs(Double(cells[2])! - expected.probabilities[1]) < 1e-12)
            #expect(cells[3] == Substring(expected.label))
            #expect(cells[4] == "credit@1")
        }
    }

    /// `--explain top=2`: each scored row ends with its two largest contributions to the label's
    /// margin, as the embedded scorer explains the record, across chunk boundaries and past
    /// rejected rows (whose explanations are never written).
    @Test func explanationsFollowTheirRowsAcrossChunks() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let good = creditCSV(rows: 200, seed: 8)
        var csv = good
        csv += Array("999,abc,36,5,50000,30,2,0.5,1,0,3,0.3,700,north,auto,online,0\n".utf8)
        csv += Array("1000,100,36\n".utf8)
        csv += creditCSV(rows: 40, seed: 9).drop { $0 != 0x0A }.dropFirst()  // more rows, no header
        try f.write("a.csv", csv)
        let scorer = try f.scorer(1)
        var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: f.output, workers: 2)
        runner.explainTop = 2
        runner.chunkBytes = 4 << 10  // many chunks
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let result = runner.score(f.input.appendingPathComponent("a.csv"), progress: BatchProgress())
        #expect(result.error == nil && result.rowsScored == 240 && result.rowsRejected == 2)
        let output = try String(contentsOf: f.output.appendingPathComponent("a.csv"), encoding: .utf8).split(separator: "\n")
        #expect(output.count == 241)
        let records = try CSVTable(good + creditCSV(rows: 40, seed: 9).drop { $0 != 0x0A }.dropFirst())
        for (i, row) in output.dropFirst().enumerated() {
            let cells = row.split(separator: ",", omittingEmptySubsequences: false)
            let record = records.json(i, fields: scorer.fieldNames)
            let label = try scorer.predict(json: record).labelIndex
            let explanation = try scorer.explain(json: record)
            let values = explanation.contributions[explanation.base.count == 1 ? 0 : label]
            let order = values.indices.sorted { abs(values[$0]) > abs(values[$1]) }
            #expect(cells.count == 9, "\(row)")
            #expect(cells[0] == Substring(records.cell(i, "id")))
            for k in 0..<2 {
                #expect(cells[5 + 2 * k] == Substring(scorer.fieldNames[order[k]]), "row \(i): \(row)")
                #expect(abs((Double(cells[6 + 2 * k]) ?? .nan) - values[order[k]]) < 1e-12, "row \(i): \(row)")
            }
        }
    }

    /// One line longer than a record may be is one reject (its line and length), and every
    /// other row of the file is scored; it used to fail the whole file with no output.
    @Test(arguments: ["csv", "jsonl"])
    func anOversizedLineIsOneRejectNotALostFile(format: String) throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let rows = creditCSV(rows: 6, seed: 4)
        let table = try CSVTable(rows)
        let scorer = try f.scorer(1)
        var lines: [String] = []
        for i in 0..<5 {
            if format == "csv" {
                lines.append(table.rows[i].joined(separator: ","))
            } else {
                lines.append(JSONWriter.text(table.json(i, fields: table.header.filter { $0 != "label" })))
            }
        }
        lines.insert(String(repeating: "x", count: 1_000_000), at: 2)  // line 3 of the data
        var bytes = Array(((format == "csv" ? [table.header.joined(separator: ",")] : []) + lines).joined(separator: "\n").utf8) + [0x0A]
        if format == "jsonl" { bytes.removeLast() }  // and no final line feed
        try f.write("a.\(format)", bytes)
        var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: f.output, workers: 2)
        runner.maxRecordBytes = 64 << 10
        runner.chunkBytes = 16 << 10
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let result = runner.score(f.input.appendingPathComponent("a.\(format)"), progress: BatchProgress())
        #expect(result.error == nil)
        #expect(result.rowsRead == 6)
        #expect(result.rowsScored == 5)
        #expect(result.rowsRejected == 1)
        #expect(result.input.sha256 == SHA256.hex(bytes))
        let rejects = try String(contentsOf: f.output.appendingPathComponent("a.rejects.\(format)"), encoding: .utf8)
        let line = format == "csv" ? 4 : 3
        let reason = "the line is 1000000 bytes, longer than the 65536-byte limit for one record; its first 256 bytes are shown"
        if format == "csv" {
            #expect(rejects.hasPrefix("line,reason,record\n\(line),\"\(reason)\",\(String(repeating: "x", count: 256))\n"))
        } else {
            let reject = try JSONValue.parse(String(rejects.split(separator: "\n")[0]))
            #expect(reject["line"] == .number(Double(line)))
            #expect(reject["reason"] == .string(reason))
        }
        let output = try String(contentsOf: f.output.appendingPathComponent("a.\(format)"), encoding: .utf8).split(separator: "\n")
        #expect(output.count == (format == "csv" ? 6 : 5))
    }

    /// Chunks cut anywhere give byte-identical outputs, with quoted fields holding
    /// commas, doubled quotes and line ends, CRLF line ends, and broken records.
    @Test func outputsDoNotDependOnChunkBoundaries() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let csv = quotedCSV()
        try f.write("q.csv", csv)
        let scorer = try f.scorer(1)
        var outputs: [[UInt8]] = []
        var rejects: [[UInt8]] = []
        for chunk in [1 << 20, 4096, 97, 1] {
            let out = f.root.appendingPathComponent("out-\(chunk)")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: out, workers: 2)
            runner.chunkBytes = chunk
            let result = runner.score(f.input.appendingPathComponent("q.csv"), progress: BatchProgress())
            #expect(result.error == nil)
            #expect(result.rowsRead == 400)
            #expect(result.rowsRead == result.rowsScored + result.rowsRejected)
            #expect(result.rowsRejected > 0)
            outputs.append([UInt8](try Data(contentsOf: out.appendingPathComponent("q.csv"))))
            rejects.append([UInt8](try Data(contentsOf: out.appendingPathComponent("q.rejects.csv"))))
        }
        #expect(outputs.allSatisfy { $0 == outputs[0] })
        #expect(rejects.allSatisfy { $0 == rejects[0] })
        let text = String(decoding: outputs[0], as: UTF8.self)
        #expect(text.contains("\"id, with comma 7\","))
        #expect(text.contains("\"id \"\"quoted\"\"\n1\","))
        // Rejected records keep their first line number: line 2 is the first record.
        let firstReject = String(decoding: rejects[0], as: UTF8.self).split(separator: "\n")[1]
        #expect(firstReject.hasPrefix("6,not valid CSV: a quote inside an unquoted field"))  // record 3 is on line 6: record 1 spans lines 3-4
    }

    /// A run split into tasks: each part scored on its own, put together in order, is the whole
    /// file's output and rejects byte for byte, whatever the task and chunk sizes — quoted line
    /// ends, CRLF, broken records, a line too long to hold, JSON Lines — with the same counts and
    /// the same sha256 from planning.
    @Test(arguments: [(97, 300), (4096, 2000), (1 << 20, 1)])
    func partsPutTogetherAreTheWholeFilesOutput(chunk: Int, taskBytes: Int) throws {
        let f = try BatchFixture()
        defer { f.stop() }
        // Big enough for several chunks: a read takes at least 64 KiB, whatever the chunk size.
        try f.write("q.csv", quotedCSV(rows: 3000))
        var long = creditCSV(rows: 3000, seed: 5)
        let cut = long.indices.filter { long[$0] == 0x0A }[12]
        long.insert(contentsOf: Array(repeating: UInt8(ascii: "x"), count: 70_000) + [0x0A], at: cut + 1)
        try f.write("long.csv", long)
        let table = try CSVTable(creditCSV(rows: 2000, seed: 6))
        try f.write("e.jsonl", Array((0..<2000).map { JSONWriter.text(table.json($0, fields: table.header.filter { $0 != "label" })) }.joined(separator: "\n").utf8))
        let scorer = try f.scorer(1)
        for name in ["q.csv", "long.csv", "e.jsonl"] {
            let input = f.input.appendingPathComponent(name)
            let whole = f.root.appendingPathComponent("whole-\(name)"), parts = f.root.appendingPathComponent("parts-\(name)")
            for folder in [whole, parts] { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) }
            var runner = BatchRunner(scorer: scorer, model: "credit@1", outputDirectory: whole, workers: 2)
            runner.chunkBytes = chunk
            runner.maxRecordBytes = 64 << 10
            let one = runner.score(input, progress: BatchProgress())
            #expect(one.error == nil)
            let plan = runner.plan(input, taskBytes: taskBytes)
            #expect(plan.error == nil && plan.input == one.input, "\(name)")
            #expect(plan.tasks.count >= (chunk == 1 << 20 ? 1 : 3), "\(name): \(plan.tasks.count) tasks")
            #expect(plan.tasks.first?.start == 0 && plan.tasks.last?.end == plan.input.size)
            #expect(zip(plan.tasks, plan.tasks.dropFirst()).allSatisfy { $0.end == $1.start && $0.start < $0.end })
            var output: [UInt8] = [], rejects: [UInt8] = []
            var read = 0, scored = 0, rejected = 0
            for (i, task) in plan.tasks.enumerated() {
                var part = task
                part.output = parts.appendingPathComponent("\(i).out")
                part.rejects = parts.appendingPathComponent("\(i).rejects")
                let result = runner.score(input, part: part, progress: BatchProgress())
                #expect(result.error == nil)
                (read, scored, rejected) = (read + result.rowsRead, scored + result.rowsScored, rejected + result.rowsRejected)
                output += [UInt8](try Data(contentsOf: part.output!))
                rejects += [UInt8](try Data(contentsOf: part.rejects!))
            }
            #expect((read, scored, rejected) == (one.rowsRead, one.rowsScored, one.rowsRejected), "\(name)")
            #expect(output == [UInt8](try Data(contentsOf: runner.outputURL(for: input))), "\(name): the output")
            #expect(rejects == [UInt8](try Data(contentsOf: runner.rejectsURL(for: input))), "\(name): the rejects")
        }
    }

    @Test func jsonLinesInAndOut() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        var lines = try String(contentsOf: fixtures.appendingPathComponent("credit-sample.jsonl"), encoding: .utf8)
        lines += "\n{\"id\": \"x\", \"amount\": \"lots\"}\n[1,2]\nnot json\n"
        try f.write("e.jsonl", Array(lines.utf8))
        let runner = BatchRunner(scorer: try f.scorer(1), model: "credit@1", outputDirectory: f.output, workers: 2)
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let result = runner.score(f.input.appendingPathComponent("e.jsonl"), progress: BatchProgress())
        #expect(result.rowsRead == 23)
        #expect(result.rowsScored == 20)
        #expect(result.rowsRejected == 3)
        let out = try String(contentsOf: f.output.appendingPathComponent("e.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(out.count == 20)
        let first = try JSONValue.parse(String(out[0]))
        #expect(first["id"] == .number(1))
        #expect(first["model_version"] == .string("credit@1"))
        let rejects = try String(contentsOf: f.output.appendingPathComponent("e.rejects.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(rejects.count == 3)
        let reject = try JSONValue.parse(String(rejects[0]))
        #expect(reject["line"] == .number(22))
        #expect(reject["reason"]?.stringValue?.contains("field \"amount\"") == true)
    }

    @Test func aHeaderWithoutARequiredFieldFailsTheFileWithItsName() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.write("h.csv", Array("id,amount\n1,100\n".utf8))
        let runner = BatchRunner(scorer: try f.scorer(1), model: "credit@1", outputDirectory: f.output, workers: 1)
        try FileManager.default.createDirectory(at: f.output, withIntermediateDirectories: true)
        let result = runner.score(f.input.appendingPathComponent("h.csv"), progress: BatchProgress())
        #expect(result.error?.contains("the header lacks \"term\"") == true, "\(result.error ?? "")")
        #expect(!FileManager.default.fileExists(atPath: f.output.appendingPathComponent("h.csv").path))
        // Nothing half-written is left behind either.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.output.path).isEmpty)
    }
}

@Suite(.serialized) struct BatchComponentTests {
    /// A run counts its rows against the version's baseline: CSV rows with income tripled (and
    /// a JSON Lines file of the same) flag income and no other field, as the latest run's drift.
    @Test func aRunReportsItsInputsDriftAgainstTheBaseline() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let scorer = try f.scorer(1)
        try f.registry.setBaseline(model: "credit", version: 1, baseline: DriftBaseline.make(
            scorer: scorer, rows: creditRecords(seed: 1, count: 5000).map { scorer.fieldValues(json: $0) }), who: "test")
        let shifted = creditRecords(seed: 6, count: 900, incomeScale: 3)
        var csv = scorer.fieldNames.joined(separator: ",") + "\n"
        for record in shifted.prefix(600) {
            csv += scorer.fieldNames.map { name in
                switch record[name] { case .number(let x)?: JSONWriter.numberText(x); case .string(let t)?: t; default: "" }
            }.joined(separator: ",") + "\n"
        }
        try f.write("shifted.csv", Array(csv.utf8))
        try f.write("shifted.jsonl", Array(shifted.suffix(300).map(\.jsonText).joined(separator: "\n").utf8) + [0x0A])
        let batch = try f.start()
        #expect(batch.driftStatus().isEmpty, "before the first run")
        let answer = try f.request("POST", "/v1/runs", key: f.operateKey)
        guard case .number(let id)? = answer.json["id"] else { Issue.record("\(answer)"); return }
        #expect(try f.waitForRun(Int(id)).status == .succeeded)
        let drift = try #require(batch.driftStatus().first)
        #expect(drift.problem == nil && drift.rows == 900 && drift.windowSeconds == 0)
        let psi = Dictionary(uniqueKeysWithValues: drift.fields.map { ($0.name, $0.psi ?? -1) })
        #expect(psi["income"]! >= DriftMonitor.alert && psi.filter { $0.key != "income" }.allSatisfy { $0.value >= 0 && $0.value < DriftMonitor.warn }, "\(psi)")
        #expect(try f.request("GET", "/v1/drift", key: f.readKey).json["versions"]?[0]?["rows"] == .number(900))
    }

    @Test func triggersWithAndWithoutAnIdempotencyKey() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.start()
        let statuses = Mutex<[(Int, Int)]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let keyed = try? f.request("POST", "/v1/runs", key: f.operateKey, body: #"{"idempotency_key": "nightly-2026-11-24"}"#)
            let plain = try? f.request("POST", "/v1/runs", key: f.operateKey, headers: [("Idempotency-Key", "plain-\(i)")])
            statuses.withLock {
                if let keyed, case .number(let id)? = keyed.json["id"] { $0.append((keyed.status, Int(id))) }
                if let plain, case .number(let id)? = plain.json["id"] { $0.append((plain.status + 1000, Int(id))) }
            }
        }
        let all = statuses.withLock { $0 }
        let keyed = all.filter { $0.0 < 1000 }, plain = all.filter { $0.0 >= 1000 }
        #expect(keyed.count == 8 && plain.count == 8)
        #expect(Set(keyed.map(\.1)).count == 1, "one run for one key")
        #expect(keyed.filter { $0.0 == 202 }.count == 1)
        #expect(keyed.filter { $0.0 == 200 }.count == 7)
        #expect(Set(plain.map(\.1)).count == 8, "distinct keys start distinct runs")
        for id in Set(all.map(\.1)) { #expect(try f.waitForRun(id).status == .succeeded) }
        let page = try f.request("GET", "/v1/runs?limit=4", key: f.readKey)
        #expect(page.status == 200)
        guard case .array(let runs)? = page.json["runs"], case .number(let before)? = page.json["next_before"] else {
            Issue.record("no page")
            return
        }
        #expect(runs.count == 4)
        let next = try f.request("GET", "/v1/runs?limit=4&before=\(Int(before))", key: f.readKey)
        guard case .array(let more)? = next.json["runs"] else { return }
        #expect(more.count == 4)
        #expect(more.allSatisfy { (number($0["id"]) ?? 99) < before })
    }

    @Test func scopesGuardTheRunRoutes() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.start()
        #expect(try f.request("POST", "/v1/runs", key: nil).status == 401)
        #expect(try f.request("POST", "/v1/runs", key: f.readKey).status == 403)
        #expect(try f.request("GET", "/v1/runs", key: f.readKey).status == 200)
        #expect(try f.request("GET", "/v1/runs/99", key: f.readKey).status == 404)
        #expect(try f.request("POST", "/v1/runs/1/rerun", key: f.operateKey).status == 404)
        #expect(try f.request("POST", "/v1/model", key: f.operateKey, body: #"{"version": 2}"#).status == 403)
    }

    @Test func cancelARunningAndAQueuedRunAndRerun() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.write("big.csv", creditCSV(rows: 60_000, seed: 5))
        var options = BatchFixture.immediate
        options.rowsPerSecond = 20_000  // three seconds
        options.chunkBytes = 64 << 10
        try f.start(options: options)
        // Through the typed client the console and the command line use.
        let operate = try f.api(f.operateKey), admin = try f.api(f.adminKey)
        let first = try operate.trigger(), second = try operate.trigger()
        #expect(first.status == "queued" && second.status == "queued" && !first.existing)
        // Wait until the first run has rows done, then look at its live progress.
        var live = first
        for _ in 0..<200 {
            live = try operate.run(first.id)
            if (live.progress?.rowsDone ?? 0) > 0 { break }
            usleep(10_000)
        }
        #expect(live.status == "running")
        #expect((live.progress?.bytesTotal ?? 0) > 0)
        let status = try operate.status()
        #expect(status.kind == "batch" && status.state == "running")
        #expect(status.batch?.queue == 1 && status.batch?.run?.id == first.id && status.batch?.job == "test")
        // Cancel the queued one first, then the running one.
        #expect(try operate.perform(.cancel(second.id)) == "run \(second.id) cancelled")
        _ = try operate.perform(.cancel(first.id))
        #expect(try f.waitForRun(first.id).status == .cancelled)
        #expect(try f.waitForRun(second.id).status == .cancelled)
        #expect(throws: ComponentError("run \(first.id) already cancelled; only a queued or running run can be cancelled", status: 409)) {
            try operate.perform(.cancel(first.id))
        }
        // A cancelled run leaves no output, not even a temporary file.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.output.path).isEmpty)
        // Rerun it with the model swapped meanwhile: a rerun repeats its run's version.
        #expect(try admin.swap(.version(2)).model.reference == "credit@2")
        let rerun = try operate.perform(.rerun(first.id))
        let rerunRun = try #require(try operate.runs(limit: 1).runs.first)
        #expect(rerun == "run \(rerunRun.id) queued" && rerunRun.rerunOf == first.id)
        _ = try operate.perform(.cancel(rerunRun.id))
        let fresh = try operate.trigger()
        _ = try operate.perform(.cancel(fresh.id))
        let rerunDone = try f.waitForRun(rerunRun.id)
        #expect(rerunDone.model == "credit@1" || rerunDone.status == .cancelled)
    }

    @Test func aModelSwapTakesEffectAtTheNextRun() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        // 20,000 rows at 4,000 rows/s: the run lasts at least 5 s however fast the machine is,
        // so the swap lands mid-run (it used to be 1 s, which a loaded machine could miss).
        try f.write("a.csv", creditCSV(rows: 20_000, seed: 6))
        var options = BatchFixture.immediate
        options.rowsPerSecond = 4_000
        options.chunkBytes = 64 << 10
        try f.start(options: options)
        let id = try f.api(f.operateKey).trigger().id
        while try f.ledger.run(id)?.status == .queued { usleep(10_000) }
        // The one answer shape of serve, batch and stream (batch used to answer "previous" as a string).
        let swap = try f.api(f.adminKey).swap(.version(2))
        #expect(swap.takesEffect?.contains("run \(id) continues on credit@1") == true)
        #expect(swap.previous?.reference == "credit@1" && swap.model.reference == "credit@2" && swap.following == nil)
        #expect(try f.waitForRun(id).model == "credit@1")
        let output = try String(contentsOf: f.output.appendingPathComponent("a.csv"), encoding: .utf8)
        #expect(!output.contains("credit@2"))
        let next = Int(try f.request("POST", "/v1/runs", key: f.operateKey).json["id"].flatMap(number)!)
        #expect(try f.waitForRun(next).model == "credit@2")
    }

    /// A run held by a live process (the job's lock taken, as `batch run --once` does) is left
    /// alone when a component starts; once its owner is gone, the next run marks it interrupted.
    @Test func onlyRunsOfDeadOwnersBecomeInterrupted() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.write("a.csv", creditCSV(rows: 50, seed: 1))
        let owner = try #require(try JobLock.acquire(f.home, job: "test"))
        let live = try f.ledger.enqueue(job: "test", trigger: .manual, who: "cli").run
        #expect(try f.ledger.start(live.id, model: "credit@1", modelSHA256: "", bytesTotal: 0))
        owner.record(run: live.id)
        let batch = try f.start()
        #expect(try f.ledger.run(live.id)?.status == .running, "a live owner's run is not interrupted")
        // While the owner holds the job, a new run waits and says who holds it.
        let waiting = try batch.trigger(.manual, who: "test").run
        #expect(waitFor { f.host!.control.events.after(0).contains { $0.message.hasPrefix("run \(waiting.id) waits: job test is busy: run \(live.id) (credit@1") } })
        #expect(try f.ledger.run(waiting.id)?.status == .queued)
        // The owner dies (its lock goes with it): the waiting run goes, and the orphan is interrupted.
        owner.release()
        #expect(try f.waitForRun(waiting.id).status == .succeeded)
        #expect(try f.ledger.run(live.id)?.status == .interrupted)
    }

    /// Files modified within the settle interval may still be being written: they wait for the
    /// next run, and the ledger says so. A cut-off last line is never scored from such a file.
    @Test func aFileStillBeingWrittenWaitsForTheNextRun() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.write("a.csv", creditCSV(rows: 10, seed: 1))
        var growing = creditCSV(rows: 10, seed: 2)
        growing.removeLast(3)  // "…,0,696\n" cut to "…,0,6"
        try f.write("b.csv", growing)
        let now = Date()
        try FileManager.default.setAttributes([.modificationDate: now.addingTimeInterval(-3600)], ofItemAtPath: f.input.appendingPathComponent("a.csv").path)
        try FileManager.default.setAttributes([.modificationDate: now.addingTimeInterval(3600)], ofItemAtPath: f.input.appendingPathComponent("b.csv").path)
        var options = BatchComponent.Options()
        options.settleSeconds = 5
        let batch = try f.start(options: options)
        #expect(try batch.inputFiles(now: now) == ([f.input.appendingPathComponent("a.csv")], ["b.csv"]))
        let run = try f.waitForRun(try batch.trigger(.manual, who: "test").run.id)
        #expect(run.status == .succeeded)
        #expect(run.inputs.map(\.name) == ["a.csv"])
        #expect(run.rowsRead == 10)
        #expect(run.note == "left for the next run: 1 file modified in the last 5 s, perhaps still being written (b.csv)")
        #expect(!FileManager.default.fileExists(atPath: f.output.appendingPathComponent("b.csv").path))
    }

    /// A folder error names the folder and what to do, never a raw NSCocoaErrorDomain text.
    @Test func aMissingInputFolderFailsTheRunWithAPlainReason() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        let batch = try f.start()
        try FileManager.default.removeItem(at: f.input)
        let run = try f.waitForRun(try batch.trigger(.manual, who: "test").run.id)
        #expect(run.status == .failed)
        #expect(run.error == "the input folder \(f.input.path) does not exist (any more); create it or point --input at the folder the files land in")
    }

    /// A run cut into tasks, done by two workers on this machine through the SQLite ledger (one of
    /// them holding a task it never finishes, as a dead worker would): the task is taken over when
    /// its lease runs out, the outputs equal a one-process run's byte for byte, and the run's
    /// record shows the tasks by worker.
    @Test func aSplitRunIsDoneByWorkersAndEqualsAOneProcessRun() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        try f.write("a.csv", creditCSV(rows: 20_000, seed: 21))
        try f.write("q.csv", quotedCSV(rows: 2000))
        // The one-process run, as the reference.
        let reference = f.root.appendingPathComponent("reference")
        try FileManager.default.createDirectory(at: reference, withIntermediateDirectories: true)
        var runner = BatchRunner(scorer: try f.scorer(1), model: "credit@1", outputDirectory: reference, workers: 2)
        runner.chunkBytes = 64 << 10
        for name in ["a.csv", "q.csv"] { #expect(runner.score(f.input.appendingPathComponent(name), progress: BatchProgress()).error == nil) }

        var options = BatchFixture.immediate
        options.taskBytes = 128 << 10
        options.chunkBytes = 64 << 10
        let batch = try f.start(options: options)
        let run = try batch.trigger(.manual, who: "test").run
        // A worker that claims the first task and dies with it: its lease (0.3 s) runs out.
        var claimed: RunLedger.Claim?
        for _ in 0..<3000 where claimed == nil {
            claimed = try f.ledger.claim(job: "test", worker: "dead:1:x", lease: 0.3)
            if claimed == nil { usleep(2_000) }
        }
        #expect(claimed?.task.seq == 0)
        let events = EventLog()
        let workers = (0..<2).map { BatchWorker(ledger: f.ledger, registry: f.registry, job: "test", threads: 1, lease: 5, events: events, name: "w\($0)") }
        let threads = workers.map { worker in Thread { worker.run() } }
        for thread in threads { thread.start() }
        defer { for worker in workers { worker.stop() } }
        let finished = try f.waitForRun(run.id)
        #expect(finished.status == .succeeded, "\(finished.error ?? "")")
        for name in ["a.csv", "a.rejects.csv", "q.csv", "q.rejects.csv"] {
            let same = try Data(contentsOf: reference.appendingPathComponent(name)) == Data(contentsOf: f.output.appendingPathComponent(name))
            #expect(same, "\(name)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.output.path).sorted() == ["a.csv", "a.rejects.csv", "q.csv", "q.rejects.csv"])
        #expect(finished.rowsRead == 22_000 && finished.rowsRead == finished.rowsScored + finished.rowsRejected && finished.rowsRejected > 0)
        // The dead worker's completion is refused: the task was taken over.
        if let claimed { #expect(try !f.ledger.complete(claimed.task, worker: "dead:1:x", rowsRead: 1, rowsScored: 1, rowsRejected: 0, outputBytes: 0, rejectsBytes: 0)) }
        let summary = try f.api(f.readKey).run(run.id)
        let tasks = try #require(summary.tasks)
        #expect(tasks.total > 4 && tasks.done == tasks.total && tasks.failed == 0 && tasks.retried == 1)
        #expect(Set(tasks.workers.map(\.name)).isSubset(of: ["w0", "w1"]) && tasks.workers.reduce(0) { $0 + $1.done } == tasks.total)
        #expect(tasks.workers.reduce(0) { $0 + $1.rows } == 22_000)
    }

    @Test func missedSlotsWhileStoppedGiveOneCatchUpRun() throws {
        let f = try BatchFixture()
        defer { f.stop() }
        // The last scheduled run was for a slot three hours ago.
        let threeHoursAgo = (floor(Date().timeIntervalSince1970 / 3600) - 3) * 3600
        let old = try f.ledger.enqueue(job: "test", trigger: .schedule, who: "schedule", scheduledFor: threeHoursAgo).run
        _ = try f.ledger.cancelQueued(old.id, who: "test")
        try f.start(schedule: try Schedule.interval("every 1h"))
        let runs = try f.ledger.list(job: "test")
        let catchUp = try #require(runs.first { $0.id != old.id })
        #expect(catchUp.trigger == .schedule)
        #expect(catchUp.note?.contains("catch-up: 3 slots") == true)
        #expect(catchUp.scheduledFor == threeHoursAgo + 3 * 3600)
        #expect(runs.count == 2, "one catch-up run, not one per missed slot")
        let status = try f.api(f.readKey).status()
        #expect(status.batch?.schedule == "every 1h" && status.batch?.nextRunAt != nil)
    }
}

private func number(_ value: JSONValue?) -> Double? {
    if case .number(let x)? = value { return x }
    return nil
}

/// A parsed CSV for checking outputs.
struct CSVTable {
    var header: [String]
    var rows: [[String]]

    init(_ bytes: [UInt8]) throws {
        var reader = CSVReader()
        var all: [[String]] = []
        _ = try bytes.withUnsafeBytes { b throws(CSVError) in
            try reader.read(b, final: true) { r, _ in
                all.append((0..<r.fieldCount).map { r.string($0) })
                return true
            }
        }
        header = all[0]
        rows = all.dropFirst().filter { $0.count == all[0].count }
    }

    func cell(_ row: Int, _ name: String) -> String { rows[row][header.firstIndex(of: name)!] }

    func json(_ row: Int, fields: [String]) -> JSONValue {
        var o = JSONObject()
        for name in fields {
            let text = cell(row, name)
            o.append(name, Double(text).map(JSONValue.number) ?? .string(text))
        }
        return .object(o)
    }
}
