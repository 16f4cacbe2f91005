import Foundation
import JSON
import Scoring

/// What scikit-learn does for the comparison: the same seeded split as `Trainer.isHeldOut`,
/// StandardScaler on the number columns and OneHotEncoder(handle_unknown="ignore") on the others,
/// LogisticRegression(lbfgs, C, tol, max_iter). Prints one JSON line.
private let scikitLearnScript = #"""
import json, sys, time
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
path, label, ignore, seed, holdout, C, tol, max_iter = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
t0 = time.perf_counter()
df = pd.read_csv(path)
read = time.perf_counter() - t0
idx = np.arange(1, len(df) + 1, dtype=np.uint64)
with np.errstate(over="ignore"):
    z = np.uint64(seed) + idx * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
mask = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < holdout
features = [c for c in df.columns if c != label and c not in ignore]
numbers = [c for c in features if pd.api.types.is_numeric_dtype(df[c])]
cats = [c for c in features if c not in numbers]
train, test = df[~mask], df[mask]
steps = [("num", StandardScaler(), numbers)] + ([("cat", OneHotEncoder(handle_unknown="ignore"), cats)] if cats else [])
pipe = Pipeline([("pre", ColumnTransformer(steps)), ("clf", LogisticRegression(C=C, tol=tol, max_iter=max_iter))])
t1 = time.perf_counter()
pipe.fit(train[features], train[label])
fit = time.perf_counter() - t1
p = pipe.predict_proba(test[features])
classes = pipe.classes_
auc = roc_auc_score(test[label], p[:, 1]) if len(classes) == 2 else roc_auc_score(test[label], p, multi_class="ovr", average="macro")
print(json.dumps({"read_s": read, "fit_s": fit, "iterations": int(pipe.named_steps["clf"].n_iter_.max()),
                  "accuracy": accuracy_score(test[label], classes[p.argmax(1)]), "auc": auc}))
"""#

let benchTrainCommand = Command(
    words: ["bench", "train"],
    summary: "Time the trainer against scikit-learn's LogisticRegression on the same data and split",
    options: [
        Option(name: "credit-rows", value: "N", help: "rows of the generated credit table (0 leaves it out)", defaultValue: "100000"),
        Option(name: "mnist", value: "FILE.csv", help: "also the MNIST subset (fixtures/mnist_subset.py writes it; label column digit)"),
        Option(name: "rounds", value: "N", help: "interleaved rounds; medians and ranges are reported", defaultValue: "3"),
        Option(name: "tol", value: "T", help: "the stopping tolerance both fits use, as scikit-learn's tol", defaultValue: "1e-4"),
        Option(name: "threads", value: "N", help: "the trainer's threads", defaultValue: "one per core"),
        Option(name: "python", value: "PATH", help: "the Python with scikit-learn and pandas", defaultValue: "python3"),
    ],
    details: """
        Each round trains once with Switchyard (the whole of 'switchyard train' but the
        registry: parsing the CSV, preprocessing, the L-BFGS fit and the held-out
        evaluation) and once with scikit-learn in a child process (pandas read_csv, then
        Pipeline(StandardScaler + OneHotEncoder, LogisticRegression(lbfgs)).fit, timed
        separately), alternating. Both use the same rows, the same seeded 80/20 split, C=1,
        the same tol and max_iter 1000; both report held-out accuracy and AUC.

        The ratio compares Switchyard's whole training with scikit-learn's fit alone.
        Without Python (or scikit-learn), only Switchyard's figures are shown.
        """,
    run: { args in
        let creditRows = try args.integer("credit-rows", range: 0...10_000_000) ?? 100_000
        let rounds = try args.integer("rounds", range: 1...50) ?? 3
        let tolerance = try args.double("tol") ?? 1e-4
        guard tolerance > 0 else { throw UsageError("--tol must be positive") }
        let threadsText = args.string("threads")
        let threads = threadsText == nil || threadsText == "one per core" ? Trainer.defaultThreads : try args.integer("threads", range: 1...256)!
        let python = args.string("python") ?? "python3"

        let scratch = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("switchyard-bench-train-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        var datasets: [(name: String, path: String, label: String, ignore: [String])] = []
        if creditRows > 0 {
            let path = scratch.appendingPathComponent("credit.csv").path
            writeError("writing \(creditRows) credit rows …")
            try writeCreditFixture(rows: creditRows, seed: 7, format: "csv", to: path)
            datasets.append(("credit \(creditRows / 1000)k rows", path, "label", ["id"]))
        }
        if let mnist = args.string("mnist") { datasets.append(("MNIST 5k × 784", mnist, "digit", ["id"])) }
        guard !datasets.isEmpty else { throw UsageError("nothing to train: give --credit-rows > 0 or --mnist FILE") }

        /// One scikit-learn fit in a child process; nil (with the reason said once) without it.
        var pythonProblem: String?
        func scikitLearn(_ d: (name: String, path: String, label: String, ignore: [String])) -> JSONValue? {
            guard pythonProblem == nil else { return nil }
            let run = runPython(python, scikitLearnScript, [d.path, d.label, d.ignore.joined(separator: ","), "42", "0.2", "1.0", "\(tolerance)", "1000"])
            if let problem = run.problem { pythonProblem = "\(problem) (it needs scikit-learn and pandas)" }
            return run.json
        }

        struct Runs {
            var ours: [Double] = [], theirs: [Double] = [], theirsWithRead: [Double] = []
            var report: Trainer.Report?
            var sklearn: JSONValue?
        }
        var results = [Runs](repeating: Runs(), count: datasets.count)
        for round in 1...rounds {
            for (i, d) in datasets.enumerated() {
                writeError("round \(round)/\(rounds): \(d.name): switchyard …")
                let bytes = try readFile(d.path)
                let start = Date()
                let report = try Trainer.train(
                    csv: bytes, .init(name: "bench", label: d.label, tolerance: tolerance, threads: threads, created: "bench"))
                results[i].ours.append(Date().timeIntervalSince(start))
                results[i].report = report
                writeError("round \(round)/\(rounds): \(d.name): scikit-learn …")
                if let json = scikitLearn(d), case .number(let fit)? = json["fit_s"], case .number(let read)? = json["read_s"] {
                    results[i].theirs.append(fit)
                    results[i].theirsWithRead.append(fit + read)
                    results[i].sklearn = json
                }
            }
        }
        func summary(_ values: [Double]) -> String {
            let sorted = values.sorted()
            return String(format: "%.2f s [%.2f–%.2f]", sorted[sorted.count / 2], sorted.first!, sorted.last!)
        }
        print("switchyard bench train: \(rounds) interleaved rounds, tol \(tolerance), C 1, \(threads) trainer threads")
        for (d, r) in zip(datasets, results) {
            guard let report = r.report, let training = report.document.metadata.training else { continue }
            let m = training.metrics
            print("\n\(d.name) (\(report.trainRows) train / \(report.holdoutRows) held out)")
            print("  switchyard    \(summary(r.ours))  \(report.iterations) iterations  accuracy \(format4(m["accuracy"]))  AUC \(format4(m["auc"]))")
            guard let json = r.sklearn, !r.theirs.isEmpty else { continue }
            let iterations = json["iterations"].flatMap { if case .number(let x) = $0 { Int(x) } else { nil } } ?? 0
            let accuracy: Double? = if case .number(let x)? = json["accuracy"] { x } else { nil }
            let auc: Double? = if case .number(let x)? = json["auc"] { x } else { nil }
            print("  scikit-learn  \(summary(r.theirs)) fit (\(summary(r.theirsWithRead)) with read_csv)  \(iterations) iterations  accuracy \(format4(accuracy))  AUC \(format4(auc))")
            let ours = r.ours.sorted()[r.ours.count / 2], theirs = r.theirs.sorted()[r.theirs.count / 2]
            print(String(format: "  switchyard's whole training / scikit-learn's fit: %.2f× (medians)", ours / theirs))
        }
        if let pythonProblem { print("\nscikit-learn comparison left out: \(pythonProblem)") }
        return Exit.ok
    })
