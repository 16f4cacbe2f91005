import Foundation
import Telemetry
import Testing

@Suite struct TelemetryTests {
    @Test func bucketsAreWithinThreePercentAndQuantilesAreRight() {
        let h = LatencyHistogram()
        for v in 1...10_000 { h.record(UInt64(v) * 1000) }  // 1 µs … 10 ms, uniform
        let s = h.snapshot()
        #expect(s.count == 10_000)
        #expect(s.sum == (1...10_000).reduce(0) { $0 + UInt64($1) * 1000 })
        for (q, exact) in [(0.5, 5_000_000.0), (0.95, 9_500_000.0), (0.99, 9_900_000.0)] {
            let v = Double(s.quantile(q)!)
            #expect(abs(v - exact) / exact < 0.035, "q\(q): \(v) vs \(exact)")
        }
        #expect(LatencyHistogram().snapshot().quantile(0.5) == nil)
    }

    @Test func perThreadHistogramsMergeAndDeltasSubtract() {
        let a = LatencyHistogram(), b = LatencyHistogram()
        let threads = [a, b].map { h in
            Thread { for i in 0..<100_000 { h.record(UInt64(i % 1000) + 1) } }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        usleep(10_000)
        let before = a.snapshot() + b.snapshot()
        #expect(before.count == 200_000)
        a.record(5_000_000)
        let delta = (a.snapshot() + b.snapshot()) - before
        #expect(delta.count == 1)
        #expect(delta.quantile(0.5).map { abs(Double($0) - 5e6) / 5e6 < 0.035 } == true)
    }

    @Test func prometheusTextMatchesTheGoldenForm() {
        let h = LatencyHistogram()
        h.record(500_000)      // 0.5 ms
        h.record(3_000_000)    // 3 ms
        h.record(2_000_000_000)  // 2 s
        var text = PrometheusText()
        text.describe("switchyard_http_requests_total", "counter", "Requests answered.")
        text.sample("switchyard_http_requests_total", [("status", "200"), ("model_version", "3")], 2)
        text.sample("switchyard_http_requests_total", [("status", "400"), ("model_version", "a\"b")], 1)
        text.histogram("switchyard_http_request_duration_seconds", help: "Request latency.", h.snapshot(), bounds: [0.001, 0.01, 1])
        #expect(text.text == """
            # HELP switchyard_http_requests_total Requests answered.
            # TYPE switchyard_http_requests_total counter
            switchyard_http_requests_total{status="200",model_version="3"} 2
            switchyard_http_requests_total{status="400",model_version="a\\"b"} 1
            # HELP switchyard_http_request_duration_seconds Request latency.
            # TYPE switchyard_http_request_duration_seconds histogram
            switchyard_http_request_duration_seconds_bucket{le="0.001"} 1
            switchyard_http_request_duration_seconds_bucket{le="0.01"} 2
            switchyard_http_request_duration_seconds_bucket{le="1"} 2
            switchyard_http_request_duration_seconds_bucket{le="+Inf"} 3
            switchyard_http_request_duration_seconds_sum 2.0035
            switchyard_http_request_duration_seconds_count 3

            """)
    }

    @Test func eventLogAndTimeSeriesKeepTheNewest() {
        let log = EventLog(capacity: 3)
        for i in 1...5 { log.append("swap", "event \(i)") }
        #expect(log.after(0).map(\.id) == [3, 4, 5])
        #expect(log.after(4).map(\.message) == ["event 5"])
        let series = TimeSeries(fields: ["requests"], capacity: 10)
        for i in 0..<25 { series.append(.init(time: Double(i), values: ["requests": Double(i)])) }
        #expect(series.window(600).map(\.time) == (15..<25).map(Double.init))
        #expect(series.window(3).map(\.time) == [22, 23, 24])
    }
}
