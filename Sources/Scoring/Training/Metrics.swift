#if canImport(Glibc)
import Glibc
#endif

/// Classification and regression metrics for held-out evaluation.
package enum Metrics {
    /// `r2` (scikit-learn's r2_score: 1 − residual / total sum of squares about the
    /// truth's mean), `rmse` and `mae` of `predicted` against `truth`.
    package static func regression(predicted: [Double], truth: [Double]) -> [String: Double] {
        let n = Double(truth.count)
        let mean = truth.reduce(0, +) / n
        var residual = 0.0, total = 0.0, absolute = 0.0
        for (p, t) in zip(predicted, truth) {
            residual += (t - p) * (t - p)
            total += (t - mean) * (t - mean)
            absolute += abs(t - p)
        }
        return ["r2": total > 0 ? 1 - residual / total : 0, "rmse": (residual / n).squareRoot(), "mae": absolute / n]
    }

    /// Area under the ROC curve (the Mann–Whitney statistic, ties counted half).
    /// nil when one class is absent.
    package static func auc(scores: [Double], positives: [Bool]) -> Double? {
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var rankSumPositive = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let averageRank = Double(i + j) / 2 + 1
            for t in i...j where positives[order[t]] { rankSumPositive += averageRank }
            i = j + 1
        }
        let p = Double(positives.lazy.filter { $0 }.count)
        let q = Double(positives.count) - p
        guard p > 0, q > 0 else { return nil }
        return (rankSumPositive - p * (p + 1) / 2) / (p * q)
    }

    /// Mean negative log-likelihood of the true classes; probabilities clipped
    /// to [1e-15, 1 − 1e-15].
    package static func logLoss(probabilities: [Double], classes: Int, truth: [Int]) -> Double {
        var sum = 0.0
        for (i, y) in truth.enumerated() {
            let p = min(max(probabilities[i * classes + y], 1e-15), 1 - 1e-15)
            sum -= log(p)
        }
        return sum / Double(truth.count)
    }

    /// The macro average of one-vs-rest AUCs (the AUC itself for two classes).
    package static func macroAUC(probabilities: [Double], classes: Int, truth: [Int]) -> Double? {
        if classes == 2 {
            return auc(scores: truth.indices.map { probabilities[$0 * 2 + 1] }, positives: truth.map { $0 == 1 })
        }
        var total = 0.0
        for k in 0..<classes {
            guard let a = auc(scores: truth.indices.map { probabilities[$0 * classes + k] }, positives: truth.map { $0 == k })
            else { return nil }
            total += a
        }
        return total / Double(classes)
    }
}
