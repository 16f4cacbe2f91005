import ControlProtocol
import Foundation
import Registry
import Scoring

let trainCommand = Command(
    words: ["train"],
    summary: "Fit a logistic regression (classes) or a ridge regression (a number) on a CSV file and register it",
    options: [
        Option(name: "data", value: "FILE.csv", help: "training data: CSV with a header line", required: true),
        Option(name: "label", value: "COL", help: "the column to predict", required: true),
        Option(name: "task", value: "classification|regression", help: "predict the label's classes, or the label as a number", defaultValue: "classification"),
        Option(name: "name", value: "NAME", help: "model name", defaultValue: "the data file's name"),
        Option(name: "holdout", value: "SHARE", help: "share of rows held out for evaluation", defaultValue: "0.2"),
        Option(name: "seed", value: "N", help: "seed of the train/holdout split", defaultValue: "42"),
        Option(name: "C", value: "C", help: "classification: inverse L2 strength, as scikit-learn's C", defaultValue: "1.0"),
        Option(name: "alpha", value: "A", help: "regression: L2 strength, as scikit-learn's Ridge alpha", defaultValue: "1.0"),
        Option(name: "ignore", value: "COL", help: "a column that is not a feature (repeatable)", defaultValue: "id", repeatable: true),
        Option(name: "max-iterations", value: "N", help: "L-BFGS iteration limit", defaultValue: "1000"),
        Option(name: "tol", value: "T", help: "classification: stop when the largest gradient component is below T (scikit-learn's tol)", defaultValue: "1e-4"),
        Option(name: "promote", value: "ALIAS", help: "also point ALIAS (e.g. production) at the new version"),
        Option(name: "out", value: "FILE.json", help: "also write the model file here"),
    ] + registryOptions,
    details: """
        Numbers are standardized and categories one-hot encoded (a column is a number
        column when every non-empty cell is a number). Classification: binary labels fit
        one logistic regression, three or more classes a multinomial (softmax) one; the
        held-out AUC, accuracy and log-loss are stored in the model's metadata.
        Regression: a ridge regression of the label (a number column) in closed form;
        the held-out R², RMSE and MAE are stored.

        Examples:
          switchyard train --data credit.csv --label label --name credit --promote production
          switchyard train --data credit.csv --label rate --task regression --ignore id --ignore label --name pricing
        """,
    run: { args in
        let path = try args.require("data")
        let holdout = try args.double("holdout") ?? 0.2
        guard holdout > 0, holdout < 1 else { throw UsageError("--holdout must be between 0 and 1, got \(holdout)") }
        let c = try args.double("C") ?? 1
        guard c > 0 else { throw UsageError("--C must be positive, got \(c)") }
        let alpha = try args.double("alpha") ?? 1
        guard alpha >= 0, alpha.isFinite else { throw UsageError("--alpha must be a number ≥ 0, got \(alpha)") }
        let taskText = args.string("task") ?? "classification"
        guard let task = Trainer.Task(rawValue: taskText) else {
            throw UsageError("--task is classification or regression, got \"\(taskText)\"")
        }
        guard let seed = UInt64(args.string("seed") ?? "42") else { throw UsageError("--seed expects a whole number ≥ 0") }
        let iterations = try args.integer("max-iterations", range: 1...100_000) ?? 1000
        let tolerance = try args.double("tol") ?? 1e-4
        guard tolerance > 0, tolerance.isFinite else { throw UsageError("--tol must be a positive number, got \(tolerance)") }
        let name = args.string("name").flatMap { $0 == "the data file's name" ? nil : $0 }
            ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let ignore = args.strings("ignore").isEmpty ? ["id"] : args.strings("ignore")

        let bytes = try readFile(path)
        let started = Date()
        let report: Trainer.Report
        do {
            report = try Trainer.train(
                csv: bytes,
                .init(
                    name: name, label: try args.require("label"), task: task, holdout: holdout, seed: seed, c: c, alpha: alpha, ignore: ignore,
                    maximumIterations: iterations, tolerance: tolerance, created: isoTimestamp(Date())))
        } catch let error as TrainingError {
            throw CommandError("\(path): \(error.message)", code: Exit.dataError)
        }
        let training = report.document.metadata.training!
        print("read \(path): \(training.dataRows) rows (sha256 \(training.dataSHA256.prefix(12)))")
        print("features: \(report.numberFeatures.count) numbers (\(report.numberFeatures.joined(separator: ", "))), "
            + "\(report.categoryFeatures.count) categories (\(report.categoryFeatures.joined(separator: ", ")))"
            + (report.ignored.isEmpty ? "" : "; ignored: \(report.ignored.joined(separator: ", "))"))
        let outputs = report.document.outputs
        print((outputs.target.map { "target: \($0) (a number); " } ?? "classes: \(outputs.classes.joined(separator: ", ")); ")
            + "split: \(report.trainRows) train / \(report.holdoutRows) held out (seed \(seed))")
        let seconds = String(format: "%.2f", Date().timeIntervalSince(started))
        let m = training.metrics
        if task == .regression {
            print("fitted ridge regression (alpha \(alpha)) in closed form, \(seconds) s")
            print(heldOutSummary(m))
        } else {
            print("fitted with L-BFGS in \(report.iterations) iterations, \(seconds) s"
                + (report.converged ? "" : " — did not fully converge; raise --max-iterations or lower --C"))
            print(heldOutSummary(m))
        }

        if let out = args.string("out") {
            try registryCall { () throws(RegistryError) in try writeAtomically(report.document.encoded(), to: URL(fileURLWithPath: out)) }
            print("wrote \(out)")
        }
        // The data it was trained on is its drift baseline.
        try registerAndReport(try openStore(args), report.document, promote: args.string("promote"),
                              baselineData: (URL(fileURLWithPath: path).lastPathComponent, bytes))
        return Exit.ok
    })

/// A training's held-out metrics on one line: a regression's R², RMSE and MAE, a classifier's
/// AUC, accuracy and log-loss.
func heldOutSummary(_ m: [String: Double]) -> String {
    if m["r2"] != nil { return "held out: R² \(format4(m["r2"]))  RMSE \(format4(m["rmse"]))  MAE \(format4(m["mae"]))" }
    return "held out: AUC \(format4(m["auc"]))  accuracy \(format4(m["accuracy"]))  log-loss \(format4(m["log_loss"]))"
}
