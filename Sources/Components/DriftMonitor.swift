import CSystem
import ControlProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import JSON
import Registry
import Scoring
import HTTP
import Synchronization
import Telemetry

/// Live drift of one model version against its baseline: every scored row's field values and
/// predicted probability counted into the baseline's bins, per event loop (single-writer counters,
/// nothing shared on the hot path), merged when read. Each sample (a second) keeps the merged
/// totals, so the population stability index per field covers a sliding window — the rows of
/// the last `window` seconds.
///
/// The bins are compiled into flat buffers at load, so counting a row allocates nothing and
/// touches no reference count: a number is binned by counting its field's edges below it, a
/// category by comparing its bytes with the schema's values (`observe(loop:tape:nodes:…)` reads
/// both straight from the request's tape).
package final class DriftMonitor: @unchecked Sendable {
    package let baseline: DriftBaseline
    package let version: ModelVersion
    package let window: Double
    /// PSI at which a field is worth a look, and at which it has shifted.
    package static let warn = 0.1, alert = 0.25
    /// Fewer rows than this in the window say nothing yet.
    package static let minimumRows: UInt64 = 100

    private struct Plan {
        var isNumber: Bool
        /// This field's first counter column, and its missing bin (the last of its bins).
        var base: Int
        var missing: Int
        /// A category's values in `spans`.
        var start: Int
        var count: Int
        /// A number's edges, eight to a vector (padded with +∞) in `blocks`, for counting those below a value.
        var blockStart = 0
        var blockCount = 0
    }

    /// Safety: written once in init, read-only after; freed in deinit.
    private let plans: UnsafeMutableBufferPointer<Plan>
    private let blocks: UnsafeMutableBufferPointer<SIMD8<Double>>
    private let spans: UnsafeMutableBufferPointer<(start: Int, count: Int)>
    private let bytes: UnsafeMutableBufferPointer<UInt8>
    private let width: Int
    private let counters: LoopCounters
    private let history = Mutex<[(at: Double, totals: [UInt64])]>([])

    package init(baseline: DriftBaseline, version: ModelVersion, loops: Int, window: Double = 300) {
        self.baseline = baseline
        self.version = version
        self.window = window
        let all = baseline.fields + [baseline.prediction]
        var plans: [Plan] = [], spans: [(start: Int, count: Int)] = [], bytes: [UInt8] = []
        var blocks: [SIMD8<Double>] = []
        var width = 0
        for field in all {
            let isNumber = field.kind == .number
            plans.append(Plan(isNumber: isNumber, base: width, missing: width + field.binCount - 1,
                              start: spans.count, count: isNumber ? 0 : field.values.count,
                              blockStart: blocks.count, blockCount: isNumber ? (field.edges.count + 7) / 8 : 0))
            if isNumber {
                for b in stride(from: 0, to: field.edges.count, by: 8) {
                    var block = SIMD8<Double>(repeating: .infinity)
                    for i in b..<min(b + 8, field.edges.count) { block[i - b] = field.edges[i] }
                    blocks.append(block)
                }
            }
            for value in field.values {
                spans.append((bytes.count, value.utf8.count))
                bytes += Array(value.utf8)
            }
            width += field.binCount
        }
        func copy<T>(_ array: [T]) -> UnsafeMutableBufferPointer<T> {
            let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: max(1, array.count))
            _ = buffer.initialize(from: array)
            return UnsafeMutableBufferPointer(rebasing: buffer[0..<array.count])
        }
        self.plans = copy(plans)
        self.blocks = copy(blocks)
        self.spans = copy(spans)
        self.bytes = copy(bytes)
        self.width = width
        counters = LoopCounters(loops: loops, width: width)
    }

    deinit {
        plans.baseAddress?.deallocate()
        blocks.baseAddress?.deallocate()
        spans.baseAddress?.deallocate()
        bytes.baseAddress?.deallocate()
    }

    /// The bin of `x`: the number of edges below it (bin i takes values ≤ edges[i]), counted
    /// eight edges at a time without a branch (a binary search mispredicts about every other step).
    @inline(__always)
    private func numberBin(_ plan: Plan, _ x: Double) -> Int {
        guard x.isFinite else { return plan.missing }
        let value = SIMD8<Double>(repeating: x)
        var below = SIMD8<Int64>()
        for b in 0..<plan.blockCount {
            below &+= SIMD8<Int64>(repeating: 0).replacing(with: 1, where: blocks[plan.blockStart + b] .< value)
        }
        return plan.base + Int(below.wrappedSum())
    }

    @inline(__always)
    private func categoryBin(_ plan: Plan, _ text: UnsafeRawBufferPointer) -> Int {
        for v in 0..<plan.count {
            let span = spans[plan.start + v]
            if span.count == text.count, span.count == 0 || memcmp(bytes.baseAddress! + span.start, text.baseAddress!, span.count) == 0 {
                return plan.base + v
            }
        }
        return plan.base + plan.count  // any other value
    }

    private func categoryBin(_ plan: Plan, _ text: String) -> Int {
        var text = text
        return text.withUTF8 { categoryBin(plan, UnsafeRawBufferPointer($0)) }
    }

    @inline(__always)
    private func countPrediction(loop: Int, _ probability: Double?) {
        let plan = plans[plans.count - 1]
        counters.add(loop: loop, column: probability.map { numberBin(plan, $0) } ?? plan.missing)
    }

    /// Counts a scored row from event loop `loop`: its fields as tape nodes in the schema's order
    /// (-1 for absent), straight from the request.
    @inline(__always)
    package func observe(loop: Int, tape: JSONTape, nodes: UnsafeBufferPointer<Int32>, probability: Double?) {
        for f in 0..<min(nodes.count, plans.count - 1) {
            let plan = plans[f], node = Int(nodes[f])
            var bin = plan.missing
            if node >= 0 {
                switch tape.kind(node) {
                case .number:
                    if plan.isNumber {
                        bin = DecimalParser.parse(tape.rawBytes(node)).map { numberBin(plan, $0) } ?? plan.missing
                    } else {
                        bin = categoryBin(plan, tape.rawBytes(node))  // a category given as a number: its text
                    }
                case .string:
                    if !plan.isNumber {
                        bin = tape.isEscaped(node) ? categoryBin(plan, tape.string(node) ?? "") : categoryBin(plan, tape.rawBytes(node))
                    }
                default: break
                }
            }
            counters.add(loop: loop, column: bin)
        }
        countPrediction(loop: loop, probability)
    }

    /// Per field of `scorer` (schema order): for a category, each of the model's value codes'
    /// bin here (the baseline's values may differ from the model's); empty for a number.
    package func categoryCodeBins(_ scorer: Scorer) -> [[Int]] {
        scorer.document.schema.fields.enumerated().map { f, field in
            guard f < plans.count - 1, !plans[f].isNumber, let values = field.values else { return [] }
            return values.map { categoryBin(plans[f], $0) }
        }
    }

    /// Counts a chunk's rows from its column batch, field by field: numbers from their parsed
    /// values (a CSV cell is parsed once, for scoring and for this), categories through
    /// `codeBins` (`categoryCodeBins`), a value outside the model's by its text.
    package func observe(loop: Int, batch: ColumnBatch, codeBins: [[Int]]) {
        let fields = plans.count - 1
        batch.forEachColumn(numbers: { f, values in
            guard f < fields else { return }
            let plan = plans[f]
            for x in values { counters.add(loop: loop, column: numberBin(plan, x)) }
        }, categories: { f, codes in
            guard f < fields, f < codeBins.count else { return }
            let plan = plans[f], bins = codeBins[f]
            for code in codes {
                if code >= 0 && Int(code) < bins.count {
                    counters.add(loop: loop, column: bins[Int(code)])
                } else if code == ColumnBatch.missingCode {
                    counters.add(loop: loop, column: plan.missing)
                }  // unknown: by its text, below
            }
        })
        for unknown in batch.unknownCategories where unknown.field < fields {
            counters.add(loop: loop, column: categoryBin(plans[unknown.field], unknown.text))
        }
    }

    /// Counts a row's predicted probability (nil: the row was not scored).
    @inline(__always)
    package func observePrediction(loop: Int, _ probability: Double?) { countPrediction(loop: loop, probability) }

    /// Counts a scored row from event loop `loop`: `values` in the schema's order (MLflow's
    /// records; binned by the baseline itself, off the tape-reading fast path).
    package func observe(loop: Int, _ values: [FieldValue], probability: Double?) {
        for (f, field) in baseline.fields.enumerated() where f < values.count {
            counters.add(loop: loop, column: plans[f].base + field.bin(values[f]))
        }
        countPrediction(loop: loop, probability)
    }

    private func totals() -> [UInt64] { (0..<width).map { counters.sum(column: $0) } }

    /// Keeps this second's totals (called once a second); drops what is older than the window.
    package func sample(now: Double = Date().timeIntervalSince1970) {
        let current = totals()
        history.withLock { h in
            h.append((now, current))
            while let first = h.first, now - first.at > window + 1, h.count > 2 { h.removeFirst() }
        }
    }

    /// PSI per field and for the prediction over the window: the counts since the oldest kept
    /// sample (all since start while the window is not yet full).
    package func report(now: Double = Date().timeIntervalSince1970) -> DriftStatus {
        let current = totals()
        let start = history.withLock { h in h.first { now - $0.at <= window }?.totals }
        let counts = zip(current, start ?? [UInt64](repeating: 0, count: current.count)).map { $0 &- $1 }
        func psi(_ index: Int, _ field: DriftBaseline.Field) -> (rows: UInt64, psi: Double?) {
            let plan = plans[index]
            let bins = counts[plan.base...plan.missing]
            let rows = bins.reduce(0, +)
            return (rows, rows >= Self.minimumRows ? DriftBaseline.psi(field, bins) : nil)
        }
        let fields = baseline.fields.enumerated().map { f, field in DriftStatus.Field(name: field.name, psi: psi(f, field).psi) }
        let prediction = psi(baseline.fields.count, baseline.prediction)
        return DriftStatus(version: version.version, windowSeconds: window, rows: Int(clamping: prediction.rows), baselineRows: baseline.rows,
                           fields: fields, prediction: prediction.psi, problem: nil)
    }
}

extension DriftMonitor {
    /// What a component says for a version without a baseline.
    package static func missing(_ version: ModelVersion) -> DriftStatus {
        DriftStatus(version: version.version, windowSeconds: 0, rows: 0, baselineRows: 0, fields: [], prediction: nil,
                    problem: "\(version.reference) has no drift baseline; make one with 'switchyard models baseline \(version.reference) --data FILE.csv'")
    }

    /// `GET /v1/drift` (scope read): `{"versions": [DriftStatus…]}`.
    package static func respond(_ request: HTTPRequest, _ context: RequestContext, authenticator: Authenticator, _ statuses: [DriftStatus]) -> HTTPResponse {
        guard request.method == "GET" else { return .error(405, "\(request.method) is not allowed on \(request.path)") }
        if case .failure(let error) = authenticator.authorize(request, loop: context.loop, needed: .read) { return error.response }
        return json(200, .object(JSONObject(["versions": .array(statuses.map(\.json))])))
    }

    /// `switchyard_drift_psi{model, model_version, field}`, the prediction as field "prediction".
    package static func metrics(_ text: inout PrometheusText, model: String, _ statuses: [DriftStatus]) {
        let measured = statuses.filter { $0.problem == nil }
        guard !measured.isEmpty else { return }
        text.describe("switchyard_drift_psi", "gauge", "Population stability index of an input field (or field=\"prediction\") over the drift window, against the version's baseline.")
        for d in measured {
            let labels = [("model", model), ("model_version", "\(d.version)")]
            for f in d.fields { if let psi = f.psi { text.sample("switchyard_drift_psi", labels + [("field", f.name)], psi) } }
            if let p = d.prediction { text.sample("switchyard_drift_psi", labels + [("field", "prediction")], p) }
        }
    }
}

/// A component's search for the drift baseline of the version it runs: looked for at once and
/// every `every` seconds until found; a new version starts the search again.
package final class BaselineSearch: Sendable {
    private let state = Mutex<(sha: String, monitor: DriftMonitor?, checkedAt: Double)>(("", nil, 0))
    private let every: Double

    package init(every: Double = 10) { self.every = every }

    /// The monitor of `version`, looking for its baseline in `registry` when due. Off the hot path.
    @discardableResult
    package func refresh(_ version: ModelVersion, registry: any ModelSource, loops: Int, events: EventLog, now: Double = Date().timeIntervalSince1970) -> DriftMonitor? {
        let due = state.withLock { s -> Bool in
            if s.sha != version.sha256 { s = (version.sha256, nil, 0) }
            guard s.monitor == nil, now - s.checkedAt >= every else { return false }
            s.checkedAt = now
            return true
        }
        if due, let baseline = try? registry.baseline(model: version.model, version: version.version) {
            let monitor = DriftMonitor(baseline: baseline, version: version, loops: loops)
            state.withLock { if $0.sha == version.sha256 { $0.monitor = monitor } }
            events.append("model", "drift of \(version.reference) measured against its baseline (\(baseline.rows) rows)")
        }
        return monitor(for: version)
    }

    /// The monitor of `version`, if its baseline was found.
    package func monitor(for version: ModelVersion) -> DriftMonitor? {
        state.withLock { $0.sha == version.sha256 ? $0.monitor : nil }
    }

    /// Looks again at the next refresh (a baseline just stored).
    package func again() { state.withLock { $0.checkedAt = 0 } }
}
