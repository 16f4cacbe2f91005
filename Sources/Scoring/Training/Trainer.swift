import Foundation

#if canImport(Glibc)
import Glibc
import JSON
#endif

/// Fits, on standardized numbers and one-hot categories, either an L2-regularized
/// logistic regression (binary, or multinomial for more than two classes) with
/// L-BFGS — exactly scikit-learn's objective `0.5‖W‖² + C·Σ log-loss` — or a ridge
/// regression in closed form — scikit-learn's Ridge, `‖y − Xw − b‖² + α‖w‖²`;
/// intercepts are unpenalized in both. Evaluates on a held-out split through the
/// compiled `Scorer`, so the metrics are those of the model as it will be served.
public enum Trainer {
    public enum Task: String, Sendable, CaseIterable {
        /// The label's values are classes: logistic regression.
        case classification
        /// The label is a number: ridge regression.
        case regression
    }

    public struct Configuration: Sendable {
        public var name: String
        public var label: String
        public var task: Task
        /// Ridge's L2 strength (regression), as scikit-learn's `alpha`.
        public var alpha: Double
        /// The share of rows held out for evaluation.
        public var holdout: Double
        public var seed: UInt64
        /// scikit-learn's C: the inverse of the L2 strength.
        public var c: Double
        /// Columns that are not features (identifiers); only those present are left out.
        public var ignore: [String]
        public var maximumIterations: Int
        /// L-BFGS stops when the largest gradient component is below this (scikit-learn's `tol`).
        public var tolerance: Double
        /// Threads the logistic fit uses (the rows are split between them).
        public var threads: Int
        /// ISO 8601 creation time, written into the metadata.
        public var created: String

        public init(
            name: String, label: String, task: Task = .classification, holdout: Double = 0.2, seed: UInt64 = 42, c: Double = 1.0,
            alpha: Double = 1.0, ignore: [String] = ["id"], maximumIterations: Int = 1000, tolerance: Double = 1e-4,
            threads: Int = Trainer.defaultThreads, created: String
        ) {
            self.tolerance = tolerance
            self.threads = threads
            self.name = name
            self.label = label
            self.task = task
            self.alpha = alpha
            self.holdout = holdout
            self.seed = seed
            self.c = c
            self.ignore = ignore
            self.maximumIterations = maximumIterations
            self.created = created
        }
    }

    /// The cores this machine has, as everything else that sizes threads counts them.
    public static var defaultThreads: Int { ProcessInfo.processInfo.activeProcessorCount }

    public struct Report: Sendable {
        public var document: ModelDocument
        public var trainRows: Int
        public var holdoutRows: Int
        public var iterations: Int
        public var converged: Bool
        public var numberFeatures: [String]
        public var categoryFeatures: [String]
        public var ignored: [String]
    }

    /// Whether data row `index` (0-based, header excluded) is held out: the
    /// (index+1)-th SplitMix64 output for `seed`, as a uniform in [0, 1), is
    /// below `share`. fixtures/sklearn_reference.py computes the same split.
    public static func isHeldOut(row index: Int, seed: UInt64, share: Double) -> Bool {
        let u = Double(SplitMix64.mix(seed &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15) >> 11) * 0x1p-53
        return u < share
    }

    public static func train(csv: [UInt8], _ configuration: Configuration) throws(TrainingError) -> Report {
        guard configuration.holdout > 0, configuration.holdout < 1 else {
            throw TrainingError("--holdout must be between 0 and 1 (exclusive), got \(configuration.holdout)")
        }
        guard configuration.c > 0, configuration.c.isFinite else { throw TrainingError("C must be a positive number") }
        let table = try TrainingTable(csv: csv)
        guard let labelColumn = table.index(of: configuration.label) else {
            throw TrainingError(
                "no column \"\(configuration.label)\" in the header; columns are: \(table.names.joined(separator: ", "))")
        }

        // MARK: The label: classes, or a number to predict
        var classes: [String] = []
        var truth = [Int](repeating: 0, count: table.rowCount)
        var targets: [Double] = []
        switch (configuration.task, table.columns[labelColumn]) {
        case (.regression, .numbers(let values)):
            if let i = values.firstIndex(where: \.isNaN) {
                throw TrainingError("data row \(i + 1): the label \"\(configuration.label)\" is empty")
            }
            targets = values
        case (.regression, .categories(let codes, let values)):
            let i = codes.firstIndex { $0 >= 0 } ?? 0
            throw TrainingError(
                "the label \"\(configuration.label)\" is not a number column (data row \(i + 1) has \"\(codes[i] >= 0 ? values[Int(codes[i])] : "")\"); a regression predicts a number")
        case (.classification, .numbers(let values)):
            if let i = values.firstIndex(where: \.isNaN) {
                throw TrainingError("data row \(i + 1): the label \"\(configuration.label)\" is empty")
            }
            let distinct = Array(Set(values)).sorted()
            classes = distinct.map(JSONWriter.numberText)
            let index = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, $0) })
            for i in values.indices { truth[i] = index[values[i]]! }
        case (.classification, .categories(let codes, let values)):
            if let i = codes.firstIndex(of: -1) {
                throw TrainingError("data row \(i + 1): the label \"\(configuration.label)\" is empty")
            }
            let used = Set(codes).sorted()
            classes = used.map { values[Int($0)] }
            let index = Dictionary(uniqueKeysWithValues: used.enumerated().map { ($1, $0) })
            for i in codes.indices { truth[i] = index[codes[i]]! }
        }
        if configuration.task == .classification && classes.count < 2 {
            throw TrainingError("the label \"\(configuration.label)\" has only one value (\(classes.first ?? "")); nothing to learn")
        }
        // A number label with very many values is more likely a quantity than classes.
        if configuration.task == .classification, classes.count > 100, case .numbers = table.columns[labelColumn] {
            throw TrainingError(
                "the label \"\(configuration.label)\" has \(classes.count) distinct numbers; to predict the number itself, train with --task regression")
        }

        // MARK: Split
        var trainRows: [Int] = []
        var holdoutRows: [Int] = []
        for i in 0..<table.rowCount {
            if isHeldOut(row: i, seed: configuration.seed, share: configuration.holdout) { holdoutRows.append(i) } else { trainRows.append(i) }
        }
        guard !trainRows.isEmpty, !holdoutRows.isEmpty else {
            throw TrainingError("\(table.rowCount) rows are too few to hold out \(configuration.holdout) of them; add rows or change --holdout")
        }

        // MARK: Schema and preprocessing, fitted on the training rows
        let ignored = configuration.ignore.filter { table.index(of: $0) != nil && $0 != configuration.label }
        var fields: [ModelDocument.Field] = []
        var numberSteps: [ModelDocument.PreprocessingStep] = []
        var categorySteps: [ModelDocument.PreprocessingStep] = []
        var numberColumns: [(values: [Double], mean: Double, scale: Double)] = []
        var categoryColumns: [(codes: [Int32], width: Int)] = []  // codes in the field's value list, -1 none
        for (c, name) in table.names.enumerated() where c != labelColumn && !ignored.contains(name) {
            switch table.columns[c] {
            case .numbers(let values):
                var sum = 0.0
                var count = 0
                for i in trainRows where !values[i].isNaN {
                    sum += values[i]
                    count += 1
                }
                guard count > 0 else { throw TrainingError("column \"\(name)\" has no values in the training rows") }
                let mean = sum / Double(count)
                var squares = 0.0
                for i in trainRows where !values[i].isNaN { squares += (values[i] - mean) * (values[i] - mean) }
                let std = (squares / Double(count)).squareRoot()
                let scale = std > 0 && std.isFinite ? std : 1  // scikit-learn's StandardScaler does the same
                let hasMissing = values.contains { $0.isNaN }
                fields.append(.init(name: name, type: .number, missing: hasMissing ? .impute : .error))
                numberSteps.append(.init(field: name, transform: .standardize, mean: mean, scale: scale, impute: hasMissing ? mean : nil))
                numberColumns.append((values, mean, scale))
            case .categories(let codes, let values):
                // Categories seen in training only; others are unknown (all zeros), as OneHotEncoder(handle_unknown="ignore").
                let seen = Set(trainRows.map { codes[$0] }).subtracting([-1]).sorted()
                guard !seen.isEmpty else { throw TrainingError("column \"\(name)\" has no values in the training rows") }
                var recode = [Int32](repeating: -1, count: values.count)
                for (new, old) in seen.enumerated() { recode[Int(old)] = Int32(new) }
                let hasMissing = codes.contains(-1)
                fields.append(.init(
                    name: name, type: .category, values: seen.map { values[Int($0)] },
                    missing: hasMissing ? .allZeros : .error, unknown: .allZeros))
                categorySteps.append(.init(field: name, transform: .oneHot))
                categoryColumns.append((codes.map { $0 < 0 ? -1 : recode[Int($0)] }, seen.count))
            }
        }
        guard !fields.isEmpty else { throw TrainingError("no feature columns are left besides the label") }

        // MARK: Design matrix (numbers standardized, then one-hot blocks)
        let width = numberColumns.count + categoryColumns.reduce(0) { $0 + $1.width }
        let n = trainRows.count
        var design = [Double](repeating: 0, count: n * width)
        for (r, i) in trainRows.enumerated() {
            var j = 0
            for column in numberColumns {
                let x = column.values[i]
                design[r * width + j] = x.isNaN ? 0 : (x - column.mean) / column.scale
                j += 1
            }
            for column in categoryColumns {
                let code = column.codes[i]
                if code >= 0 { design[r * width + j + Int(code)] = 1 }
                j += column.width
            }
        }

        // MARK: Fit
        let estimator: ModelDocument.Estimator
        let outputs: ModelDocument.Outputs
        var iterations = 1, converged = true
        if configuration.task == .regression {
            let y = trainRows.map { targets[$0] }
            guard let (w, b) = design.withUnsafeBufferPointer({ Self.ridge($0, y, n: n, width: width, alpha: configuration.alpha) }) else {
                throw TrainingError("the features are collinear and --alpha 0 leaves the least-squares problem without one solution; use --alpha > 0")
            }
            estimator = .init(type: .linearRegression, coefficients: [w], intercepts: [b], link: .identity)
            outputs = .init(target: configuration.label)
        } else {
            let y = trainRows.map { Int32(truth[$0]) }
            let margins = classes.count == 2 ? 1 : classes.count
            let stride = width + 1  // coefficients, then the intercept
            // scikit-learn's stopping rule: the largest gradient component below tol, or a
            // relative improvement below 64 machine epsilons.
            var lbfgs = LBFGS.Configuration()
            lbfgs.maximumIterations = configuration.maximumIterations
            lbfgs.gradientTolerance = configuration.tolerance
            lbfgs.functionTolerance = 64 * Double.ulpOfOne
            let l2 = 1 / (configuration.c * Double(n))
            let result = design.withUnsafeBufferPointer { x in
                let objective = LogisticObjective(design: x, labels: y, width: width, margins: margins, l2: l2, threads: configuration.threads)
                return LBFGS.minimize([Double](repeating: 0, count: margins * stride), configuration: lbfgs, objective.evaluate)
            }
            let coefficients = (0..<margins).map { k in Array(result.x[(k * stride)..<(k * stride + width)]) }
            let intercepts = (0..<margins).map { k in result.x[k * stride + width] }
            estimator = .init(coefficients: coefficients, intercepts: intercepts, link: margins == 1 ? .logistic : .softmax)
            outputs = .init(classes: classes)
            (iterations, converged) = (result.iterations, result.converged)
        }
        var document = ModelDocument(
            metadata: .init(name: configuration.name, created: configuration.created),
            schema: .init(fields: fields),
            preprocessing: numberSteps + categorySteps,
            estimator: estimator,
            outputs: outputs)

        // MARK: Evaluate on the held-out rows with the compiled scorer
        let scorer: Scorer
        do { scorer = try Scorer(document) } catch { throw TrainingError("internal error: the trained model does not compile: \(error)") }
        var batch = ColumnBatch(for: scorer, capacity: holdoutRows.count)
        let featureColumns = table.names.enumerated().compactMap { c, name in scorer.fieldIndex(name).map { (c, $0) } }
        for i in holdoutRows {
            batch.appendRow()
            for (c, field) in featureColumns {
                switch table.columns[c] {
                case .numbers(let values): batch.setNumber(field: field, values[i])
                case .categories(let codes, let values):
                    if codes[i] >= 0 {
                        var text = values[Int(codes[i])]
                        text.withUTF8 { batch.setText(field: field, UnsafeRawBufferPointer($0)) }
                    }
                }
            }
        }
        var output = BatchOutput()
        scorer.score(batch, into: &output)
        if let first = output.errors.first {
            throw TrainingError("internal error: a held-out row could not be scored: \(first)")
        }
        var metrics: [String: Double] = ["holdout_rows": Double(holdoutRows.count), "train_rows": Double(n)]
        if configuration.task == .regression {
            for (name, value) in Metrics.regression(predicted: output.probabilities, truth: holdoutRows.map { targets[$0] }) {
                metrics[name] = value
            }
        } else {
            let heldTruth = holdoutRows.map { truth[$0] }
            var correct = 0
            for (r, t) in heldTruth.enumerated() where Int(output.labels[r]) == t { correct += 1 }
            metrics["accuracy"] = Double(correct) / Double(heldTruth.count)
            metrics["log_loss"] = Metrics.logLoss(probabilities: output.probabilities, classes: classes.count, truth: heldTruth)
            if let auc = Metrics.macroAUC(probabilities: output.probabilities, classes: classes.count, truth: heldTruth) {
                metrics["auc"] = auc
            }
        }
        var hasher = SHA256()
        hasher.update(csv)
        document.metadata.training = .init(
            dataSHA256: SHA256.hexString(hasher.finalize()), dataRows: table.rowCount, label: configuration.label,
            holdout: configuration.holdout, seed: configuration.seed,
            algorithm: configuration.task == .regression ? "ridge" : "lbfgs",
            c: configuration.task == .regression ? nil : configuration.c,
            alpha: configuration.task == .regression ? configuration.alpha : nil,
            iterations: iterations, metrics: metrics)
        return Report(
            document: document, trainRows: n, holdoutRows: holdoutRows.count, iterations: iterations,
            converged: converged, numberFeatures: numberSteps.map(\.field),
            categoryFeatures: categorySteps.map(\.field), ignored: ignored)
    }

    /// Ridge regression in closed form: the coefficients and intercept minimizing
    /// `‖y − Xw − b‖² + α‖w‖²` (the intercept unpenalized, as scikit-learn's Ridge), from the
    /// normal equations of the design with a column of ones, solved by Cholesky. nil when the
    /// system is singular (collinear columns with α = 0).
    static func ridge(_ x: UnsafeBufferPointer<Double>, _ y: [Double], n: Int, width: Int, alpha: Double) -> (w: [Double], b: Double)? {
        let d = width + 1
        // The upper triangle of [X 1]ᵀ[X 1], row by row, and [X 1]ᵀy.
        var a = [Double](repeating: 0, count: d * d)
        var rhs = [Double](repeating: 0, count: d)
        var row = [Double](repeating: 1, count: d)
        a.withUnsafeMutableBufferPointer { a in
            for r in 0..<n {
                for j in 0..<width { row[j] = x[r * width + j] }
                let target = y[r]
                for i in 0..<d {
                    let v = row[i]
                    if v == 0 { continue }  // one-hot columns are mostly zero
                    rhs[i] += v * target
                    let base = i * d
                    for j in i..<d { a[base + j] += v * row[j] }
                }
            }
        }
        for i in 0..<width { a[i * d + i] += alpha }
        for i in 0..<d { for j in 0..<i { a[i * d + j] = a[j * d + i] } }
        // Cholesky: a = L Lᵀ, L in the lower triangle.
        for j in 0..<d {
            var sum = a[j * d + j]
            for k in 0..<j { sum -= a[j * d + k] * a[j * d + k] }
            guard sum > 1e-12 * max(1, abs(a[j * d + j])) else { return nil }
            let pivot = sum.squareRoot()
            a[j * d + j] = pivot
            for i in (j + 1)..<d {
                var s = a[i * d + j]
                for k in 0..<j { s -= a[i * d + k] * a[j * d + k] }
                a[i * d + j] = s / pivot
            }
        }
        var z = rhs
        for i in 0..<d {
            for k in 0..<i { z[i] -= a[i * d + k] * z[k] }
            z[i] /= a[i * d + i]
        }
        for i in stride(from: d - 1, through: 0, by: -1) {
            for k in (i + 1)..<d { z[i] -= a[k * d + i] * z[k] }
            z[i] /= a[i * d + i]
        }
        return (Array(z[0..<width]), z[width])
    }
}
