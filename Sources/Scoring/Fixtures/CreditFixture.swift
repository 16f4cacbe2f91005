#if canImport(Glibc)
import Glibc
#endif

/// The deterministic synthetic credit table of shared/DESIGN.md: 12 numbers,
/// 3 categories and a 0/1 label drawn from a logistic function of them (with
/// latent noise and one threshold effect, so a linear model reaches an AUC near
/// 0.8 but not more). The same seed gives the same bytes on every run.
package struct CreditFixture {
    package static let columns = [
        "id", "amount", "term", "rate", "income", "age", "tenure", "utilization", "inquiries",
        "delinquencies", "open_accounts", "debt_ratio", "credit_score", "region", "product", "channel", "label",
    ]
    package static let regions = ["north", "south", "east", "west", "central", "northeast", "southwest", "islands"]
    package static let products = ["personal", "auto", "mortgage", "card", "student"]
    package static let channels = ["branch", "online", "mobile", "broker"]
    private static let regionWeights = [0.16, 0.15, 0.14, 0.14, 0.15, 0.11, 0.10, 0.05]
    private static let regionEffect = [0.0, 0.15, -0.1, 0.05, -0.05, -0.2, 0.3, 0.45]
    private static let productWeights = [0.35, 0.25, 0.12, 0.20, 0.08]
    private static let productEffect = [0.0, -0.2, -0.55, 0.3, 0.4]
    private static let channelWeights = [0.25, 0.40, 0.27, 0.08]
    private static let channelEffect = [0.0, 0.1, 0.05, 0.45]
    private static let terms = [12, 24, 36, 48, 60]

    private var random: SplitMix64
    private var id = 0

    package init(seed: UInt64) { random = SplitMix64(seed: seed) }

    /// Field values of one row; `label` is 0 or 1.
    package struct Row {
        package var id: Int
        package var amount, rate, income, tenure, utilization, debtRatio: Double
        package var term, age, inquiries, delinquencies, openAccounts, creditScore: Int
        package var region, product, channel: Int
        package var label: Int
    }

    package mutating func next() -> Row {
        id += 1
        let age = clamp((42 + 13 * random.normal()).rounded(), 18, 85)
        let income = round2(clamp(exp(log(45_000) + 0.6 * random.normal()), 8_000, 500_000))
        let amount = round2(clamp(exp(log(12_000) + 0.9 * random.normal()), 500, 100_000))
        let term = Self.terms[Int(random.uniform() * 5)]
        let score = clamp((680 + 75 * random.normal()).rounded(), 300, 850)
        let rate = round2(clamp(35 - (score - 300) / 550 * 25 + 3 * random.normal(), 2.5, 35))
        let tenure = (clamp(-6 * log(1 - random.uniform()), 0, max(0, age - 16)) * 10).rounded() / 10
        let utilization = (clamp(pow(random.uniform(), 0.8) + 0.05 * random.normal(), 0, 1) * 1000).rounded() / 1000
        let inquiries = random.poisson(1.5)
        let delinquencies = random.poisson(score < 600 ? 0.8 : 0.25)
        let openAccounts = random.poisson(5) + 1
        let debtRatio = (clamp(exp(log(0.35) + 0.5 * random.normal()), 0, 2.5) * 1000).rounded() / 1000
        let region = pick(Self.regionWeights)
        let product = pick(Self.productWeights)
        let channel = pick(Self.channelWeights)

        var logit = -1.3
        logit += 0.8 * (debtRatio - 0.4) / 0.25
        logit -= 1.0 * (score - 680) / 75
        logit += 0.5 * (utilization - 0.5) / 0.28
        logit += 0.6 * (utilization > 0.9 ? 1 : 0)
        logit += 0.22 * Double(inquiries) + 0.45 * Double(delinquencies)
        logit -= 0.35 * log(income / 45_000) / 0.6
        logit += 0.25 * log(amount / 12_000) / 0.9
        logit += 0.006 * Double(term - 36) - 0.012 * (age - 42) - 0.03 * tenure + 0.04 * (rate - 15)
        logit -= 0.02 * Double(openAccounts - 6)
        logit += Self.regionEffect[region] + Self.productEffect[product] + Self.channelEffect[channel]
        logit += 1.1 * random.normal()  // what the table does not show
        let label = random.uniform() < 1 / (1 + exp(-logit)) ? 1 : 0

        return Row(
            id: id, amount: amount, rate: rate, income: income, tenure: tenure, utilization: utilization,
            debtRatio: debtRatio, term: term, age: Int(age), inquiries: inquiries, delinquencies: delinquencies,
            openAccounts: openAccounts, creditScore: Int(score), region: region, product: product,
            channel: channel, label: label)
    }

    /// The CSV header line, with its line end.
    package static var csvHeader: String { columns.joined(separator: ",") + "\n" }

    /// Appends `row` as a CSV line (with the label).
    package static func appendCSV(_ row: Row, to out: inout [UInt8]) {
        appendInt(row.id, &out); out.append(44)
        appendFixed(row.amount, 2, &out); out.append(44)
        appendInt(row.term, &out); out.append(44)
        appendFixed(row.rate, 2, &out); out.append(44)
        appendFixed(row.income, 2, &out); out.append(44)
        appendInt(row.age, &out); out.append(44)
        appendFixed(row.tenure, 1, &out); out.append(44)
        appendFixed(row.utilization, 3, &out); out.append(44)
        appendInt(row.inquiries, &out); out.append(44)
        appendInt(row.delinquencies, &out); out.append(44)
        appendInt(row.openAccounts, &out); out.append(44)
        appendFixed(row.debtRatio, 3, &out); out.append(44)
        appendInt(row.creditScore, &out); out.append(44)
        out.append(contentsOf: regions[row.region].utf8); out.append(44)
        out.append(contentsOf: products[row.product].utf8); out.append(44)
        out.append(contentsOf: channels[row.channel].utf8); out.append(44)
        appendInt(row.label, &out)
        out.append(10)
    }

    /// Appends `row` as a JSON Lines object (without the label).
    package static func appendJSON(_ row: Row, to out: inout [UInt8]) {
        func key(_ name: StaticString) {
            out.append(contentsOf: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        }
        key("{\"id\":"); appendInt(row.id, &out)
        key(",\"amount\":"); appendFixed(row.amount, 2, &out)
        key(",\"term\":"); appendInt(row.term, &out)
        key(",\"rate\":"); appendFixed(row.rate, 2, &out)
        key(",\"income\":"); appendFixed(row.income, 2, &out)
        key(",\"age\":"); appendInt(row.age, &out)
        key(",\"tenure\":"); appendFixed(row.tenure, 1, &out)
        key(",\"utilization\":"); appendFixed(row.utilization, 3, &out)
        key(",\"inquiries\":"); appendInt(row.inquiries, &out)
        key(",\"delinquencies\":"); appendInt(row.delinquencies, &out)
        key(",\"open_accounts\":"); appendInt(row.openAccounts, &out)
        key(",\"debt_ratio\":"); appendFixed(row.debtRatio, 3, &out)
        key(",\"credit_score\":"); appendInt(row.creditScore, &out)
        key(",\"region\":\""); out.append(contentsOf: regions[row.region].utf8)
        key("\",\"product\":\""); out.append(contentsOf: products[row.product].utf8)
        key("\",\"channel\":\""); out.append(contentsOf: channels[row.channel].utf8)
        key("\"}\n")
    }

    // MARK: - Helpers

    private mutating func pick(_ weights: [Double]) -> Int {
        var u = random.uniform()
        for (i, w) in weights.enumerated() {
            if u < w { return i }
            u -= w
        }
        return weights.count - 1
    }

    private func clamp(_ x: Double, _ lo: Double, _ hi: Double) -> Double { min(max(x, lo), hi) }
    private func round2(_ x: Double) -> Double { (x * 100).rounded() / 100 }
}

/// Appends the decimal digits of `value`.
package func appendInt(_ value: Int, _ out: inout [UInt8]) {
    if value < 0 { out.append(UInt8(ascii: "-")) }
    var v = value.magnitude
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var n = 0
    withUnsafeMutableBytes(of: &digits) { d in
        repeat {
            d[n] = UInt8(v % 10) + UInt8(ascii: "0")
            v /= 10
            n += 1
        } while v > 0
        while n > 0 {
            n -= 1
            out.append(d[n])
        }
    }
}

/// Appends `value` with exactly `decimals` digits after the point (rounded half away from zero).
package func appendFixed(_ value: Double, _ decimals: Int, _ out: inout [UInt8]) {
    var scale = 1
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((abs(value) * Double(scale)).rounded())
    if value < 0 && scaled != 0 { out.append(UInt8(ascii: "-")) }
    appendInt(scaled / scale, &out)
    guard decimals > 0 else { return }
    out.append(UInt8(ascii: "."))
    var fraction = scaled % scale
    var divisor = scale / 10
    while divisor > 0 {
        out.append(UInt8(fraction / divisor) + UInt8(ascii: "0"))
        fraction %= divisor
        divisor /= 10
    }
}
