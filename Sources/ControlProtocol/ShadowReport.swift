import JSON

/// What `GET /v1/compare` answers: a serve replica's shadow comparison over its window of the
/// latest compared rows.
public struct ShadowReport: Sendable, Equatable {
    /// One version's part: the live versions that answered, and the shadow.
    public struct VersionScoring: Sendable, Equatable {
        public var version: Int
        /// `live` or `shadow`.
        public var role: String
        public var rows: Int
        /// Scoring time per row in the comparing thread (both versions the same way), in µs.
        public var p50Microseconds: Double?
        public var p99Microseconds: Double?

        public init(version: Int, role: String, rows: Int, p50Microseconds: Double?, p99Microseconds: Double?) {
            self.version = version
            self.role = role
            self.rows = rows
            self.p50Microseconds = p50Microseconds
            self.p99Microseconds = p99Microseconds
        }
    }

    /// A row where the versions differ.
    public struct Disagreement: Sendable, Equatable {
        public var requestID: String
        public var row: Int
        public var liveVersion: Int
        public var liveLabel: String
        /// Nil when the shadow could not score the row (`shadowError` says why).
        public var shadowLabel: String?
        /// The probability of the last class (the positive one of two).
        public var liveProbability: Double
        public var shadowProbability: Double?
        /// The largest difference over the classes (1 when the shadow failed).
        public var absDelta: Double
        public var shadowError: String?
        /// The record both versions scored.
        public var record: JSONValue?

        public init(requestID: String, row: Int, liveVersion: Int, liveLabel: String, shadowLabel: String?, liveProbability: Double,
                    shadowProbability: Double?, absDelta: Double, shadowError: String?, record: JSONValue? = nil) {
            self.requestID = requestID
            self.row = row
            self.liveVersion = liveVersion
            self.liveLabel = liveLabel
            self.shadowLabel = shadowLabel
            self.liveProbability = liveProbability
            self.shadowProbability = shadowProbability
            self.absDelta = absDelta
            self.shadowError = shadowError
            self.record = record
        }
    }

    public var model: String
    /// The route's shadow now (nil when it has none any more).
    public var shadow: AliasRoute.Shadow?
    /// The shadow version the window holds.
    public var comparedVersion: Int?
    public var window: Int
    public var windowLimit: Int
    /// Since the replica started; rows the full queue dropped; rows waiting.
    public var comparedTotal: Int
    public var dropped: Int
    public var queued: Int
    /// Over the window: nil while it is empty.
    public var agreement: Double?
    public var disagreements: Int
    public var shadowErrors: Int
    public var meanAbsDelta: Double?
    public var maxAbsDelta: Double?
    public var versions: [VersionScoring]
    /// The largest disagreements, largest first.
    public var largest: [Disagreement]

    public init(model: String, shadow: AliasRoute.Shadow?, comparedVersion: Int?, window: Int, windowLimit: Int, comparedTotal: Int,
                dropped: Int, queued: Int, agreement: Double?, disagreements: Int, shadowErrors: Int, meanAbsDelta: Double?,
                maxAbsDelta: Double?, versions: [VersionScoring], largest: [Disagreement]) {
        self.model = model
        self.shadow = shadow
        self.comparedVersion = comparedVersion
        self.window = window
        self.windowLimit = windowLimit
        self.comparedTotal = comparedTotal
        self.dropped = dropped
        self.queued = queued
        self.agreement = agreement
        self.disagreements = disagreements
        self.shadowErrors = shadowErrors
        self.meanAbsDelta = meanAbsDelta
        self.maxAbsDelta = maxAbsDelta
        self.versions = versions
        self.largest = largest
    }

    public var json: JSONValue {
        func number(_ x: Double?) -> JSONValue { x.map(JSONValue.number) ?? .null }
        var o = JSONObject()
        o.append("model", .string(model))
        o.append("shadow", shadow.map { .object(JSONObject(["version": .number(Double($0.version)), "sample": .number($0.sample)])) } ?? .null)
        o.append("compared_version", number(comparedVersion.map(Double.init)))
        o.append("window", .number(Double(window)))
        o.append("window_limit", .number(Double(windowLimit)))
        o.append("compared_total", .number(Double(comparedTotal)))
        o.append("dropped", .number(Double(dropped)))
        o.append("queued", .number(Double(queued)))
        o.append("agreement", number(agreement))
        o.append("disagreements", .number(Double(disagreements)))
        o.append("shadow_errors", .number(Double(shadowErrors)))
        o.append("mean_abs_delta", number(meanAbsDelta))
        o.append("max_abs_delta", number(maxAbsDelta))
        o.append("versions", .array(versions.map { v in
            .object(JSONObject([
                "version": .number(Double(v.version)), "role": .string(v.role), "rows": .number(Double(v.rows)),
                "scoring": v.p50Microseconds == nil && v.p99Microseconds == nil ? .null
                    : .object(JSONObject(["p50_us": number(v.p50Microseconds), "p99_us": number(v.p99Microseconds)])),
            ]))
        }))
        o.append("largest", .array(largest.map { d in
            var item = JSONObject()
            item.append("request_id", .string(d.requestID))
            item.append("row", .number(Double(d.row)))
            item.append("live_version", .number(Double(d.liveVersion)))
            item.append("live_label", .string(d.liveLabel))
            item.append("shadow_label", d.shadowLabel.map(JSONValue.string) ?? .null)
            item.append("live_probability", .number(d.liveProbability))
            item.append("shadow_probability", number(d.shadowProbability))
            item.append("abs_delta", .number(d.absDelta))
            if let error = d.shadowError { item.append("shadow_error", .string(error)) }
            item.append("record", d.record ?? .null)
            return .object(item)
        }))
        return .object(o)
    }

    public init?(json value: JSONValue) {
        guard let model = value["model"]?.stringValue else { return nil }
        func double(_ v: JSONValue?) -> Double? { if case .number(let x)? = v, x.isFinite { x } else { nil } }
        func count(_ key: String) -> Int { wholeNumber(value[key], from: 0) ?? 0 }
        var shadow: AliasRoute.Shadow?
        if let version = wholeNumber(value["shadow"]?["version"], from: 1) { shadow = .init(version: version, sample: double(value["shadow"]?["sample"]) ?? 100) }
        var versions: [VersionScoring] = []
        if case .array(let items)? = value["versions"] {
            for v in items {
                guard let version = wholeNumber(v["version"], from: 1) else { continue }
                versions.append(VersionScoring(version: version, role: v["role"]?.stringValue ?? "", rows: wholeNumber(v["rows"], from: 0) ?? 0,
                                               p50Microseconds: double(v["scoring"]?["p50_us"]), p99Microseconds: double(v["scoring"]?["p99_us"])))
            }
        }
        var largest: [Disagreement] = []
        if case .array(let items)? = value["largest"] {
            for d in items {
                guard let id = d["request_id"]?.stringValue, let live = wholeNumber(d["live_version"], from: 1) else { continue }
                largest.append(Disagreement(
                    requestID: id, row: wholeNumber(d["row"], from: 0) ?? 0, liveVersion: live, liveLabel: d["live_label"]?.stringValue ?? "",
                    shadowLabel: d["shadow_label"]?.stringValue, liveProbability: double(d["live_probability"]) ?? 0,
                    shadowProbability: double(d["shadow_probability"]), absDelta: double(d["abs_delta"]) ?? 0, shadowError: d["shadow_error"]?.stringValue,
                    // As every other number here, only what JSON carries: a non-finite number is null.
                    record: d["record"].map(\.asWritten).flatMap { $0 == .null ? nil : $0 }))
            }
        }
        self.init(model: model, shadow: shadow, comparedVersion: wholeNumber(value["compared_version"], from: 1), window: count("window"),
                  windowLimit: count("window_limit"), comparedTotal: count("compared_total"), dropped: count("dropped"), queued: count("queued"),
                  agreement: double(value["agreement"]), disagreements: count("disagreements"), shadowErrors: count("shadow_errors"),
                  meanAbsDelta: double(value["mean_abs_delta"]), maxAbsDelta: double(value["max_abs_delta"]), versions: versions, largest: largest)
    }
}
