import CSystem

/// An HDR-style latency histogram in nanoseconds: log-linear buckets, 16 per
/// power of two (±3% precision) from 1 ns to ~18 minutes. One thread records
/// into it without locks or locked instructions; any thread may snapshot it.
///
/// Safety: buckets are written only by the owning thread, through relaxed
/// atomic loads and stores (CSystem's counters); readers use relaxed loads.
public final class LatencyHistogram: @unchecked Sendable {
    public static let bucketCount = 16 + 37 * 16
    private let buckets: UnsafeMutablePointer<UInt64>
    private let totals: UnsafeMutablePointer<UInt64>  // [count, sum of ns]

    public init() {
        buckets = .allocate(capacity: Self.bucketCount)
        buckets.initialize(repeating: 0, count: Self.bucketCount)
        totals = .allocate(capacity: 2)
        totals.initialize(repeating: 0, count: 2)
    }

    deinit {
        buckets.deallocate()
        totals.deallocate()
    }

    /// Records one value; call only from the owning thread.
    @inline(__always)
    public func record(_ nanoseconds: UInt64) {
        csystem_counter_add(buckets + Self.bucket(of: nanoseconds), 1)
        csystem_counter_add(totals, 1)
        csystem_counter_add(totals + 1, nanoseconds)
    }

    public func snapshot() -> HistogramSnapshot {
        var counts = [UInt64](repeating: 0, count: Self.bucketCount)
        for i in 0..<Self.bucketCount { counts[i] = csystem_counter_load(buckets + i) }
        return HistogramSnapshot(counts: counts, sum: csystem_counter_load(totals + 1))
    }

    @inline(__always)
    static func bucket(of value: UInt64) -> Int {
        if value < 16 { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount  // ≥ 4
        let sub = Int((value >> UInt64(exponent - 4)) & 15)
        return min(16 + (exponent - 4) * 16 + sub, bucketCount - 1)
    }

    /// The smallest value in bucket `i`.
    static func lowerBound(of i: Int) -> UInt64 {
        if i < 16 { return UInt64(i) }
        let exponent = (i - 16) / 16 + 4
        let sub = UInt64((i - 16) % 16)
        return (16 + sub) << UInt64(exponent - 4)
    }

    /// The largest value in bucket `i`.
    static func upperBound(of i: Int) -> UInt64 {
        i + 1 < bucketCount ? lowerBound(of: i + 1) - 1 : UInt64.max
    }
}

/// Counts copied out of histograms: merged by adding, deltas by subtracting.
public struct HistogramSnapshot: Sendable, Equatable {
    public var counts: [UInt64]
    public var sum: UInt64

    public init(counts: [UInt64] = [UInt64](repeating: 0, count: LatencyHistogram.bucketCount), sum: UInt64 = 0) {
        self.counts = counts
        self.sum = sum
    }

    public var count: UInt64 { counts.reduce(0, +) }

    public static func + (a: Self, b: Self) -> Self {
        Self(counts: zip(a.counts, b.counts).map { $0 &+ $1 }, sum: a.sum &+ b.sum)
    }

    /// What was recorded after `earlier`.
    public static func - (a: Self, b: Self) -> Self {
        Self(counts: zip(a.counts, b.counts).map { $0 &- $1 }, sum: a.sum &- b.sum)
    }

    /// The value at quantile `q` (0...1), as the midpoint of its bucket; nil when empty.
    public func quantile(_ q: Double) -> UInt64? {
        let total = count
        guard total > 0 else { return nil }
        let rank = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= max(rank, 1) {
                let lo = LatencyHistogram.lowerBound(of: i), hi = LatencyHistogram.upperBound(of: i)
                return hi == UInt64.max ? lo : lo + (hi - lo) / 2
            }
        }
        return nil
    }

    /// How many values were ≤ `bound` (bucket resolution).
    public func count(atMost bound: UInt64) -> UInt64 {
        var total: UInt64 = 0
        for (i, c) in counts.enumerated() where LatencyHistogram.upperBound(of: i) <= bound { total += c }
        return total
    }
}
