import Foundation

/// Prometheus text exposition format 0.0.4.
public struct PrometheusText {
    public private(set) var text = ""
    private var described: Set<String> = []

    public init() {}

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Writes HELP and TYPE once per metric name.
    public mutating func describe(_ name: String, _ type: String, _ help: String) {
        guard described.insert(name).inserted else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.format(value) + "\n"
    }

    /// A histogram in seconds from a nanosecond snapshot, at the given bucket bounds (seconds).
    /// `described: false` adds a labelled series to a histogram described already.
    public mutating func histogram(
        _ name: String, help: String, _ snapshot: HistogramSnapshot, bounds: [Double], labels: [(String, String)] = [], described: Bool = true
    ) {
        if described { describe(name, "histogram", help) }
        for bound in bounds {
            sample(name + "_bucket", labels + [("le", Self.format(bound))], Double(snapshot.count(atMost: UInt64(bound * 1e9))))
        }
        sample(name + "_bucket", labels + [("le", "+Inf")], Double(snapshot.count))
        sample(name + "_sum", labels, Double(snapshot.sum) / 1e9)
        sample(name + "_count", labels, Double(snapshot.count))
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
