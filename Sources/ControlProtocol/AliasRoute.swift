import JSON

/// A traffic split: an alias that points at several versions with weights
/// (`switchyard models route credit production 1=90 2=10`). The alias's own version is the main
/// one — the largest weight, the first listed on a tie — which batch and stream follow; serve
/// replicas split requests by weight. The split is the same on every replica: a request with a
/// routing key (the `x-routing-key` header, or the record field `key` names) goes where the key's
/// hash falls, so one customer keeps one version everywhere; a request without one is spread by a
/// low-discrepancy sequence, so even a few hundred requests come out close to the weights.
public struct AliasRoute: Sendable, Equatable, CustomStringConvertible {
    public struct Arm: Sendable, Equatable {
        public var version: Int
        /// Percent of the traffic, 0...100; the arms' weights add up to 100.
        public var weight: Int

        public init(version: Int, weight: Int) {
            self.version = version
            self.weight = weight
        }
    }

    /// A version that scores a copy of the live requests off the hot path, answering nobody.
    public struct Shadow: Sendable, Equatable {
        public var version: Int
        /// Percent of the live rows it scores, above 0 and at most 100.
        public var sample: Double

        public init(version: Int, sample: Double = 100) {
            self.version = version
            self.sample = sample
        }
    }

    public var arms: [Arm]
    /// The record field whose value keeps a caller on one version (`x-routing-key` wins over it).
    public var key: String?
    public var shadow: Shadow?

    /// Checks what `init(arms:key:shadow:)` is given: at least one arm, distinct versions from 1,
    /// weights 0...100 adding up to 100, a key field of at most 200 bytes, a shadow version that
    /// takes no live traffic, sampling above 0 and at most 100 percent.
    public init(arms: [Arm], key: String? = nil, shadow: Shadow? = nil) throws(RegistryError) {
        guard !arms.isEmpty else { throw RegistryError("a route needs at least one VERSION=PERCENT", status: 400) }
        guard arms.count <= Self.maxArms else { throw RegistryError("a route splits over at most \(Self.maxArms) versions", status: 400) }
        var seen = Set<Int>()
        for arm in arms {
            guard arm.version >= 1 else { throw RegistryError("version \(arm.version): versions are numbered from 1", status: 400) }
            guard seen.insert(arm.version).inserted else { throw RegistryError("version \(arm.version) is listed twice", status: 400) }
            guard (0...100).contains(arm.weight) else { throw RegistryError("v\(arm.version)=\(arm.weight): a weight is a percent, 0 to 100", status: 400) }
        }
        let total = arms.reduce(0) { $0 + $1.weight }
        guard total == 100 else {
            throw RegistryError("the weights add up to \(total), not 100 (\(arms.map { "\($0.version)=\($0.weight)" }.joined(separator: " ")))", status: 400)
        }
        if let key {
            guard !key.isEmpty, key.utf8.count <= 200 else { throw RegistryError("the routing key field must be 1 to 200 bytes", status: 400) }
        }
        if let shadow {
            guard shadow.version >= 1 else { throw RegistryError("shadow version \(shadow.version): versions are numbered from 1", status: 400) }
            guard !arms.contains(where: { $0.version == shadow.version && $0.weight > 0 }) else {
                throw RegistryError("v\(shadow.version) takes live traffic; a shadow version answers nobody", status: 400)
            }
            guard shadow.sample > 0, shadow.sample <= 100 else { throw RegistryError("the shadow's sample is a percent above 0 and at most 100", status: 400) }
        }
        self.arms = arms
        self.key = key
        self.shadow = shadow
    }

    public static let maxArms = 10

    /// Reads `1=90 2=10` (the command line's words).
    public init(words: [String], key: String?, shadow: Shadow? = nil) throws(RegistryError) {
        var arms: [Arm] = []
        for word in words {
            let parts = word.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2, let version = Int(parts[0]), let weight = Int(parts[1]) else {
                throw RegistryError("\"\(word)\": expected VERSION=PERCENT, as in 1=90 2=10", status: 400)
            }
            arms.append(Arm(version: version, weight: weight))
        }
        try self.init(arms: arms, key: key, shadow: shadow)
    }

    /// The version the alias itself points at: the largest weight, the first listed on a tie.
    public var main: Int {
        var best = arms[0]
        for arm in arms.dropFirst() where arm.weight > best.weight { best = arm }
        return best.version
    }

    /// One version and nothing else: the same as a plain alias (the registry keeps no route then).
    public var isSingle: Bool { arms.count == 1 && shadow == nil }

    public func weight(of version: Int) -> Int? { arms.first { $0.version == version }?.weight }

    /// `v1 90% · v2 10%, sticky on customer_id, shadow v3 (10% of rows)`.
    public var description: String {
        arms.map { "v\($0.version) \($0.weight)%" }.joined(separator: " · ") + (key.map { ", sticky on \($0)" } ?? "")
            + (shadow.map { ", shadow v\($0.version)" + ($0.sample < 100 ? " (\(JSONWriter.numberText($0.sample))% of rows)" : "") } ?? "")
    }

    /// `1=90 2=10`: the command-line form.
    public var words: String { arms.map { "\($0.version)=\($0.weight)" }.joined(separator: " ") }

    // MARK: - Picking an arm

    /// Where each arm's share ends on the 64-bit circle, in arm order (the last is `UInt64.max`).
    public var bounds: [UInt64] {
        var cumulative = 0
        return arms.enumerated().map { index, arm in
            cumulative += arm.weight
            if cumulative >= 100 { return UInt64.max }
            return UInt64(cumulative) * (UInt64.max / 100)
        }
    }

    /// The arm a point on the circle falls in, given `bounds`; arms of weight 0 are never picked.
    @inline(__always)
    public static func arm(at point: UInt64, bounds: [UInt64]) -> Int {
        var i = 0
        while i < bounds.count - 1 && point >= bounds[i] { i += 1 }
        return i
    }

    /// The point a routing key falls at: FNV-1a over its bytes, then mixed so nearby keys scatter.
    /// The same on every machine and in every process (unlike Swift's seeded `Hasher`).
    @inline(__always)
    public static func point<Bytes: Sequence>(key: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return mix(h)
    }

    /// The `n`th point of a request without a key: the golden-ratio (Weyl) sequence, which fills
    /// the circle evenly, so any run of requests comes out close to the weights.
    @inline(__always)
    public static func point(sequence n: UInt64) -> UInt64 { n &* 0x9e37_79b9_7f4a_7c15 }

    /// splitmix64's finalizer.
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    // MARK: - JSON

    /// `{"split": [{"version": 1, "weight": 90}, …], "key": "customer_id" | null}`.
    public var json: JSONValue {
        var o = JSONObject()
        o.append("split", .array(arms.map { .object(JSONObject(["version": .number(Double($0.version)), "weight": .number(Double($0.weight))])) }))
        o.append("key", key.map(JSONValue.string) ?? .null)
        o.append("shadow", shadow.map { .object(JSONObject(["version": .number(Double($0.version)), "sample": .number($0.sample)])) } ?? .null)
        return .object(o)
    }

    /// Reads `json`'s form, checked as `init(arms:key:)` checks; the error names the field.
    public init(json value: JSONValue) throws(RegistryError) {
        guard case .array(let items)? = value["split"], items.count <= Self.maxArms else {
            throw RegistryError(#"field "split": expected a list of {"version": N, "weight": PERCENT}"#, status: 400)
        }
        var arms: [Arm] = []
        for (i, item) in items.enumerated() {
            guard let version = wholeNumber(item["version"], from: 1), let weight = wholeNumber(item["weight"], from: 0) else {
                throw RegistryError("split[\(i)]: expected {\"version\": a whole number from 1, \"weight\": a percent from 0 to 100}", status: 400)
            }
            arms.append(Arm(version: version, weight: weight))
        }
        var key: String?
        switch value["key"] {
        case nil, .null?: key = nil
        case .string(let k)?: key = k
        default: throw RegistryError(#"field "key": expected the name of a record field, or null"#, status: 400)
        }
        var shadow: Shadow?
        switch value["shadow"] {
        case nil, .null?: shadow = nil
        case let s? where wholeNumber(s["version"], from: 1) != nil:
            var sample = 100.0
            switch s["sample"] {
            case nil, .null?: break
            case .number(let x)?: sample = x
            default: throw RegistryError(#"field "shadow.sample": expected a percent above 0 and at most 100"#, status: 400)
            }
            shadow = Shadow(version: wholeNumber(s["version"], from: 1)!, sample: sample)
        default: throw RegistryError(#"field "shadow": expected {"version": N, "sample": PERCENT} or null"#, status: 400)
        }
        try self.init(arms: arms, key: key, shadow: shadow)
    }
}
