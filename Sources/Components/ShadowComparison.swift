import CSystem
import ControlProtocol
import Foundation
import JSON
import Scoring
import Synchronization
import Telemetry

/// Shadow scoring: a copy of the live rows (all, or a sample) is scored by a shadow version on a
/// thread of its own, off the hot path, and compared with the version that answered.
///
/// What a loop does per copied row: writes the record's JSON into its own reused writer and
/// copies it into a fixed slot of its own lock-free ring — no lock, no allocation, no wake-up
/// (the shadow thread polls every 2 ms while rows come, and sleeps on a semaphore only after
/// 100 ms without any). A full ring drops the copy, counted, before any work. The shadow thread
/// runs in the idle scheduling class, yields the CPU every 10 µs of work (a loop made runnable
/// meanwhile would otherwise wait for a scheduler tick) and spends at most 1% of a core: under
/// full load it compares a sample and says how many rows it dropped, rather than taking CPU
/// from the requests it copies (`switchyard bench serve --auth open,shadow` measures the cost).
///
/// The comparison covers the last `window` rows: label agreement, mean and max |Δp| (the largest
/// difference over the classes; for a regression, agreement is an identical value and Δ the
/// values' difference), each version's scoring time per row (both scored the same way,
/// here), and the rows that disagree most, by request id — what `GET /v1/compare` answers.
package final class ShadowComparison: Sendable {
    package static let queueLimit = 4096
    package static let defaultWindow = 10_000
    /// The shadow thread's CPU: at most `budget` nanoseconds in each `budgetWindow`.
    static let budget: UInt64 = 100_000, budgetWindow: UInt64 = 10_000_000

    /// One compared row.
    struct Pair {
        var requestID: String
        var row: Int
        var liveVersion: Int
        var liveLabel: String
        var shadowLabel: String
        var liveProbability: Double
        var shadowProbability: Double
        var delta: Double
        var liveNanoseconds: UInt64
        var shadowNanoseconds: UInt64
        var shadowError: String?
        /// The record as both versions scored it (JSON), for the console to open in Predict.
        var record: [UInt8]
    }

    /// The compared rows of the window.
    private struct Window {
        var ring: [Pair] = []
        var next = 0
        /// The shadow version the ring compares; a different one starts a new window.
        var shadowVersion: Int?
        var compared: UInt64 = 0
    }

    /// Rows waiting for the shadow, one lock-free ring per event loop: a loop never waits for the
    /// shadow thread (which runs at idle priority, so a lock it held could stall a loop for a tick).
    private let queues: [RecordRing]
    /// Each loop's writer for the record it copies (reused: a loop allocates nothing per copy).
    private let writers: LoopLocal<JSONWriter>
    private let state = Mutex(Window())
    /// The thread found every queue empty and waits: the next offer signals it (and only that one).
    private let sleeping = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private let samplers: LoopLocal<Double>
    private let dropped = Atomic<Int>(0)
    private let window: Int

    /// Starts the comparing thread; it ends within a second of the comparison being released.
    package init(loops: Int, window: Int = ShadowComparison.defaultWindow) {
        samplers = LoopLocal(loops: loops) { 0 }
        queues = (0..<loops).map { _ in RecordRing(capacity: max(64, Self.queueLimit / max(1, loops))) }
        writers = LoopLocal(loops: loops) { JSONWriter() }
        self.window = max(1, window)
        let wake = self.wake
        let thread = Thread { [weak self] in
            _ = csystem_idle_priority()
            var windowStart = csystem_monotonic_ns(), busy: UInt64 = 0, idlePolls = 0, sinceYield: UInt64 = 0
            var scratch = Scratch()
            while true {
                var compared = false
                do {  // holds the comparison only while draining, so it can be released while the thread waits
                    guard let comparison = self else { return }
                    while true {
                        let start = csystem_monotonic_ns()
                        guard comparison.compareNext(&scratch) else { break }
                        compared = true
                        let end = csystem_monotonic_ns()
                        busy += end - start
                        sinceYield += end - start
                        // A loop made runnable meanwhile waits for a tick to preempt this thread
                        // (idle class or not): hand the CPU over every 10 µs of work instead.
                        if sinceYield >= 10_000 {
                            sched_yield()
                            sinceYield = 0
                        }
                        if end - windowStart >= Self.budgetWindow {
                            (windowStart, busy) = (end, 0)
                        } else if busy >= Self.budget {
                            usleep(UInt32((Self.budgetWindow - (end - windowStart)) / 1000))
                            (windowStart, busy) = (csystem_monotonic_ns(), 0)
                        }
                    }
                    idlePolls = compared ? 0 : idlePolls + 1
                    // Under traffic the thread polls every 2 ms, so a loop never pays for a wake-up;
                    // after 100 ms without rows it sleeps until an offer signals it.
                    if idlePolls < 50 { usleep(2000); continue }
                    comparison.sleeping.store(true, ordering: .sequentiallyConsistent)
                    if comparison.queues.contains(where: { $0.count > 0 }) {
                        comparison.sleeping.store(false, ordering: .sequentiallyConsistent)
                        continue
                    }
                }
                _ = wake.wait(timeout: .now() + 1)
                idlePolls = 0
            }
        }
        thread.name = "shadow"
        thread.start()
    }

    /// Whether the next live row on `loop` is copied to the shadow (`sample` percent of rows,
    /// evenly: every row at 100, every tenth at 10).
    @inline(__always)
    func sample(loop: Int, percent: Double) -> Bool {
        samplers.with(loop: loop) { credit in
            credit += percent / 100
            guard credit >= 1 else { return false }
            credit -= 1
            return true
        }
    }

    /// Queues a live row of `loop` for the shadow; drops it (counted) when that loop's queue is
    /// full or the record is larger than a slot, before copying anything.
    func offer(loop: Int, live: ModelSnapshot, shadow: ModelSnapshot, requestID: String, row: Int, record: (inout JSONWriter) -> Void) {
        let queue = queues[loop]
        guard !queue.isFull else {
            dropped.wrappingAdd(1, ordering: .relaxed)
            return
        }
        let pushed = writers.with(loop: loop) { w in
            w.removeAll()
            record(&w)
            return w.bytes.withUnsafeBytes { queue.push(live: live, shadow: shadow, row: row, requestID: requestID, record: $0) }
        }
        guard pushed else {
            dropped.wrappingAdd(1, ordering: .relaxed)
            return
        }
        if sleeping.load(ordering: .sequentiallyConsistent), sleeping.exchange(false, ordering: .sequentiallyConsistent) { wake.signal() }
    }

    /// The shadow thread's own reused buffers: the record's tape, its field nodes and each
    /// version's outputs (so a compared row allocates little besides what the window keeps).
    private struct Scratch {
        var tape = JSONTape()
        var fieldNodes: [Int32] = []
        var live: [Double] = []
        var shadow: [Double] = []
    }

    /// Compares the next queued row of any loop; false with none.
    private func compareNext(_ scratch: inout Scratch) -> Bool {
        for queue in queues where queue.pop({ compare($0, $1, row: $2, requestID: $3, recordBytes: $4, &scratch) }) { return true }
        return false
    }

    /// Scores `recordBytes` with `scorer` on the tape, as the loops do; the prediction, or the error.
    private static func predict(
        _ scorer: Scorer, _ tape: JSONTape, _ fieldNodes: inout [Int32], _ out: inout [Double]
    ) -> Result<Prediction, ScoringError> {
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(0, count: scorer.outputCount))
        let label = out.withUnsafeMutableBufferPointer { buffer in
            Result { () throws(ScoringError) -> Int in
                try scorer.predict(tape: tape, record: tape.root, row: nil, fieldNodes: &fieldNodes, into: buffer.baseAddress!)
            }
        }
        return label.map { scorer.prediction(out, label: $0) }
    }

    private func compare(
        _ live: ModelSnapshot, _ shadowSnapshot: ModelSnapshot, row: Int, requestID: String, recordBytes: UnsafeRawBufferPointer, _ scratch: inout Scratch
    ) {
        do { try scratch.tape.parse(recordBytes) } catch { return }  // written by the loop: always JSON
        let tape = scratch.tape
        let t0 = csystem_monotonic_ns()
        let prediction = try? Self.predict(live.scorer, tape, &scratch.fieldNodes, &scratch.live).get()
        let t1 = csystem_monotonic_ns()
        let shadow = Self.predict(shadowSnapshot.scorer, tape, &scratch.fieldNodes, &scratch.shadow)
        let t2 = csystem_monotonic_ns()
        guard let prediction else { return }  // the live version answered this row, so it scores it
        var pair = Pair(requestID: requestID, row: row, liveVersion: live.version.version, liveLabel: prediction.label,
                        shadowLabel: "", liveProbability: prediction.probabilities.last ?? 0, shadowProbability: .nan, delta: 0,
                        liveNanoseconds: t1 - t0, shadowNanoseconds: t2 - t1, record: Array(recordBytes))
        switch shadow {
        case .success(let p):
            pair.shadowLabel = p.label
            pair.shadowProbability = p.probabilities.last ?? 0
            // A regression's difference is the values'; classes are compared by name: a shadow may
            // order or name them differently.
            if let a = prediction.value, let b = p.value { pair.delta = abs(a - b) }
            let liveClasses = live.scorer.classes, shadowClasses = shadowSnapshot.scorer.classes
            for (k, name) in liveClasses.enumerated() {
                let other = shadowClasses.firstIndex(of: name).map { p.probabilities[$0] } ?? 0
                pair.delta = max(pair.delta, abs(prediction.probabilities[k] - other))
            }
        case .failure(let error):
            pair.shadowError = error.description
            pair.delta = 1
        }
        let shadowVersion = shadowSnapshot.version.version
        state.withLock { s in
            if s.shadowVersion != shadowVersion {
                s.ring.removeAll(keepingCapacity: true)
                s.next = 0
                s.shadowVersion = shadowVersion
            }
            if s.ring.count < window {
                s.ring.append(pair)
            } else {
                s.ring[s.next] = pair
                s.next = (s.next + 1) % window
            }
            s.compared &+= 1
        }
    }

    /// Rows compared since start (across windows), rows the full queue dropped, rows waiting.
    package var counts: (compared: UInt64, dropped: Int, queued: Int) {
        (state.withLock { $0.compared }, dropped.load(ordering: .relaxed), queues.reduce(0) { $0 + $1.count })
    }

    /// The comparison over the window: what `GET /v1/compare` answers. `shadow`: the route's
    /// shadow now (nil when it has none).
    package func report(shadow: AliasRoute.Shadow?, model: String, top: Int = 10) -> ShadowReport {
        let (pairs, shadowVersion) = state.withLock { ($0.ring, $0.shadowVersion) }
        let counts = self.counts
        let agreeing = pairs.filter { $0.shadowError == nil && $0.liveLabel == $0.shadowLabel }.count
        let deltas = pairs.filter { $0.shadowError == nil }.map(\.delta)
        func scoring(_ version: Int, _ role: String, _ values: [UInt64]) -> ShadowReport.VersionScoring {
            let sorted = values.sorted()
            func us(_ q: Double) -> Double? { sorted.isEmpty ? nil : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1000 }
            return .init(version: version, role: role, rows: values.count, p50Microseconds: us(0.5), p99Microseconds: us(0.99))
        }
        var versions = Set(pairs.map(\.liveVersion)).sorted().map { live in
            scoring(live, "live", pairs.filter { $0.liveVersion == live }.map(\.liveNanoseconds))
        }
        if let shadowVersion { versions.append(scoring(shadowVersion, "shadow", pairs.map(\.shadowNanoseconds))) }
        let differing = pairs.filter { $0.delta > 0 || $0.liveLabel != $0.shadowLabel }
        let largest = differing.sorted { ($0.delta, $0.liveLabel != $0.shadowLabel ? 1 : 0) > ($1.delta, $1.liveLabel != $1.shadowLabel ? 1 : 0) }.prefix(max(0, top))
        return ShadowReport(
            model: model, shadow: shadow, comparedVersion: shadowVersion, window: pairs.count, windowLimit: window,
            comparedTotal: Int(clamping: counts.compared), dropped: counts.dropped, queued: counts.queued,
            agreement: pairs.isEmpty ? nil : Double(agreeing) / Double(pairs.count), disagreements: pairs.count - agreeing,
            shadowErrors: pairs.filter { $0.shadowError != nil }.count,
            meanAbsDelta: deltas.isEmpty ? nil : deltas.reduce(0, +) / Double(deltas.count), maxAbsDelta: deltas.max(), versions: versions,
            largest: largest.map { p in
                .init(requestID: p.requestID, row: p.row, liveVersion: p.liveVersion, liveLabel: p.liveLabel,
                      shadowLabel: p.shadowError == nil ? p.shadowLabel : nil, liveProbability: p.liveProbability,
                      shadowProbability: p.shadowProbability.isFinite ? p.shadowProbability : nil, absDelta: p.delta, shadowError: p.shadowError,
                      record: try? JSONValue.parse(p.record))
            })
    }
}

/// The one shadow comparison of a serve component, made when a route first names a shadow.
package final class ShadowHolder: Sendable {
    private let made = Mutex<ShadowComparison?>(nil)

    func get(loops: Int) -> ShadowComparison {
        made.withLock { made in
            if let made { return made }
            let comparison = ShadowComparison(loops: loops)
            made = comparison
            return comparison
        }
    }

    package var current: ShadowComparison? { made.withLock { $0 } }
}

/// A bounded ring of copied rows with one producing thread (an event loop) and one consuming
/// thread (the shadow's), without locks and without allocating: each slot owns fixed bytes for
/// the request id and the record, written by the producer and read in place by the consumer (so
/// memory never crosses threads to be freed, where glibc's arena lock could stall the loop behind
/// the idle-priority consumer). The producer publishes a slot with a releasing store of `tail`,
/// the consumer frees it with a releasing store of `head`.
final class RecordRing: @unchecked Sendable {
    /// The largest request id and record a slot takes (bigger records are not copied).
    static let idBytes = 256, recordBytes = 4096

    private struct Slot {
        var live: ModelSnapshot?
        var shadow: ModelSnapshot?
        var row = 0
        var idCount = 0
        var recordCount = 0
    }

    private let slots: UnsafeMutablePointer<Slot>
    private let bytes: UnsafeMutableRawPointer
    private let capacity: Int
    private let head = Atomic<Int>(0)
    private let tail = Atomic<Int>(0)
    private static var slotBytes: Int { idBytes + recordBytes }

    init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        bytes = .allocate(byteCount: capacity * Self.slotBytes, alignment: 16)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
        bytes.deallocate()
    }

    /// From the producer.
    var isFull: Bool { tail.load(ordering: .relaxed) - head.load(ordering: .acquiring) >= capacity }

    /// From the producer; false when full or when the id or record does not fit a slot.
    func push(live: ModelSnapshot, shadow: ModelSnapshot, row: Int, requestID: String, record: UnsafeRawBufferPointer) -> Bool {
        let t = tail.load(ordering: .relaxed)
        guard t - head.load(ordering: .acquiring) < capacity, record.count <= Self.recordBytes, requestID.utf8.count <= Self.idBytes else { return false }
        let index = t % capacity
        let base = bytes + index * Self.slotBytes
        var id = requestID
        let idCount = id.withUTF8 { utf8 in
            if let address = utf8.baseAddress { base.copyMemory(from: address, byteCount: utf8.count) }
            return utf8.count
        }
        if record.count > 0 { (base + Self.idBytes).copyMemory(from: record.baseAddress!, byteCount: record.count) }
        slots[index] = Slot(live: live, shadow: shadow, row: row, idCount: idCount, recordCount: record.count)
        tail.store(t + 1, ordering: .releasing)
        return true
    }

    /// From the consumer: calls `body` with the oldest row in place, then frees its slot; false when empty.
    func pop(_ body: (ModelSnapshot, ModelSnapshot, _ row: Int, _ requestID: String, _ record: UnsafeRawBufferPointer) -> Void) -> Bool {
        let h = head.load(ordering: .relaxed)
        guard h < tail.load(ordering: .acquiring) else { return false }
        let index = h % capacity
        let slot = slots[index]
        slots[index].live = nil
        slots[index].shadow = nil
        let base = bytes + index * Self.slotBytes
        if let live = slot.live, let shadow = slot.shadow {
            let id = String(decoding: UnsafeRawBufferPointer(start: base, count: slot.idCount), as: UTF8.self)
            body(live, shadow, slot.row, id, UnsafeRawBufferPointer(start: base + Self.idBytes, count: slot.recordCount))
        }
        head.store(h + 1, ordering: .releasing)
        return true
    }

    /// Either side; approximate while the other moves.
    var count: Int { max(0, tail.load(ordering: .acquiring) - head.load(ordering: .acquiring)) }
}
