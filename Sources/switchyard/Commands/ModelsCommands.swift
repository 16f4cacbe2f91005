import Components
import ControlProtocol
import Foundation
import JSON
import Registry
import Scoring

let modelsListCommand = Command(
    words: ["models", "list"],
    summary: "List model versions with their aliases and held-out AUC",
    options: [Option(name: "json", help: "print JSON Lines, one version a line")] + registryOptions,
    run: { args in
        let registry = try openStore(args)
        let versions = try registryCall { () throws(RegistryError) in try registry.versions(model: nil) }
        if args.flag("json") {
            for v in versions { print(v.json.jsonText) }
            return Exit.ok
        }
        if versions.isEmpty {
            print("no models yet; train one: switchyard train --data FILE.csv --label COL")
            return Exit.ok
        }
        print(table(
            ["MODEL", "VERSION", "ALIASES", "AUC", "CREATED", "BY", "SHA256"],
            versions.map {
                [$0.model, "\($0.version)", $0.aliases.joined(separator: ","), format4($0.metrics["auc"]),
                 String($0.createdAt.prefix(19)), $0.createdBy, String($0.sha256.prefix(12))]
            }), terminator: "")
        return Exit.ok
    })

let modelsShowCommand = Command(
    words: ["models", "show"],
    summary: "Show one version: metrics, aliases, input schema and classes",
    positionals: ["NAME[@VERSION|@ALIAS]"],
    options: [Option(name: "json", help: "print the model file itself")] + registryOptions,
    run: { args in
        let registry = try openStore(args)
        let (version, scorer) = try loadScorer(registry, args.positional(0)!)
        let document = scorer.document
        if args.flag("json") {
            print(String(decoding: document.encoded(), as: UTF8.self))
            return Exit.ok
        }
        print("\(version.reference)  sha256 \(version.sha256)")
        print("created \(version.createdAt) by \(version.createdBy)")
        let aliases = try registryCall { () throws(RegistryError) in try registry.aliases(model: version.model) }
        print("aliases: " + (aliases.isEmpty ? "none" : aliases.map { "\($0.alias)→v\($0.version)" }.joined(separator: "  ")))
        for (alias, _) in aliases {
            if let route = try registryCall({ () throws(RegistryError) in try registry.resolveRoute("\(version.model)@\(alias)") }).route {
                print("  \(alias) splits: \(route.description)")
            }
        }
        if let t = document.metadata.training {
            print("trained on \(t.dataRows) rows (sha256 \(t.dataSHA256.prefix(12))), label \"\(t.label)\", \(t.algorithm), \(t.alpha.map { "alpha=\($0), closed form" } ?? "C=\(t.c ?? 1), \(t.iterations) iterations")")
            print(heldOutSummary(t.metrics))
        }
        if let source = document.metadata.imported {
            print("imported from \(source.file) (\(source.format)\(source.library.map { ", \($0)" } ?? ""), sha256 \(source.sha256.prefix(12)))")
        }
        var estimator = "\(document.estimator.type.rawValue), link \(document.estimator.link.rawValue)"
        if let trees = document.estimator.trees {
            estimator += ", \(trees.trees.count) trees (\(trees.trees.reduce(0) { $0 + $1.feature.count }) nodes, \(trees.split.rawValue) in \(trees.precision.rawValue)\(trees.average ? ", averaged" : ""))"
        }
        print("estimator: \(estimator), " + (document.outputs.target.map { "predicts \($0) (a number)" } ?? "classes \(document.outputs.classes.joined(separator: ", "))"))
        print("\ninputs (schema order):")
        let steps = Dictionary(uniqueKeysWithValues: document.preprocessing.map { ($0.field, $0) })
        print(table(
            ["FIELD", "TYPE", "MISSING", "UNKNOWN", "TRANSFORM / VALUES"],
            document.schema.fields.map { f in
                let step = steps[f.name]
                let detail: String
                switch f.type {
                case .number:
                    detail = step?.transform == .standardize
                        ? "standardize (mean \(String(format: "%.4g", step?.mean ?? 0)), scale \(String(format: "%.4g", step?.scale ?? 1)))"
                        : "identity"
                case .category:
                    let values = (f.values ?? []).joined(separator: ", ")
                    detail = step?.transform == .categoryCode ? "code: \(values)" : values
                }
                return [f.name, f.type.rawValue, f.missing.rawValue, f.unknown?.rawValue ?? "", detail]
            }), terminator: "")
        return Exit.ok
    })

let modelsRegisterCommand = Command(
    words: ["models", "register"],
    summary: "Register a model file (Switchyard model format) as a new version",
    positionals: ["FILE.json"],
    options: [
        Option(name: "name", value: "NAME", help: "register under this name instead of metadata.name"),
        Option(name: "promote", value: "ALIAS", help: "also point ALIAS at the new version"),
        Option(name: "baseline-data", value: "FILE.csv", help: "also store its drift baseline from data like its training data"),
    ] + registryOptions,
    run: { args in
        let path = args.positional(0)!
        var document: ModelDocument
        do {
            document = try ModelDocument.decode(Data(try readFile(path)))
        } catch let error as ModelFormatError {
            throw CommandError("\(path): \(error)", code: Exit.dataError)
        }
        if let name = args.string("name") { document.metadata.name = name }
        try registerAndReport(try openStore(args), document, promote: args.string("promote"),
                              baselineData: try baselineData(args))
        return Exit.ok
    })

let modelsImportCommand = Command(
    words: ["models", "import"],
    summary: "Import a model trained elsewhere (XGBoost JSON, LightGBM text, scikit-learn export, ONNX) as a new version",
    positionals: ["FILE"],
    options: [
        Option(name: "format", value: "FORMAT", help: "xgboost-json, lightgbm-text, sklearn-json or onnx"),
        Option(name: "schema", value: "SCHEMA.json", help: "map model features to named input fields (see below)"),
        Option(name: "name", value: "NAME", help: "the model name (default: the file name without its extension)"),
        Option(name: "promote", value: "ALIAS", help: "also point ALIAS at the new version"),
        Option(name: "baseline-data", value: "FILE.csv", help: "also store its drift baseline from data like its training data"),
    ] + registryOptions,
    details: """
        Formats:
          xgboost-json   booster.save_model("model.json"); binary:logistic, multi:softprob, multi:softmax,
                         reg:squarederror, reg:pseudohubererror, reg:absoluteerror, reg:quantileerror
          lightgbm-text  booster.save_model("model.txt"); binary (with sigmoid:), multiclass, random
                         forests, regression (l2), regression_l1, huber, fair, quantile, mape
          sklearn-json   a Pipeline exported by fixtures/sklearn_reference.py or regression_reference.py
                         (Switchyard's own format: LogisticRegression, LinearRegression, Ridge)
          onnx           an ONNX graph from skl2onnx or onnxmltools: Imputer, Scaler, OneHotEncoder,
                         Concat, Cast, Reshape, Identity in front of one LinearClassifier,
                         LinearRegressor, TreeEnsembleClassifier or TreeEnsembleRegressor (ZipMap,
                         exact Normalizer behind it); graph inputs become input fields
        Predictions match the library's within 1e-6 (fixtures/trees_reference.py and
        regression_reference.py make the proof). Objectives whose output is transformed
        (count:poisson, reg:gamma, reg:tweedie, reg:logistic, LightGBM's poisson, gamma,
        tweedie, reg_sqrt) are refused, naming the objective.

        Without --schema every model feature becomes an input field of its own name;
        categorical features take their category names from the file (XGBoost 3, or
        LightGBM trained on pandas categoricals). A schema names the fields instead:
          {"fields": [{"name": "amount", "type": "number"},
                      {"name": "region", "type": "category", "values": ["north", "south"]},
                      {"name": "product", "type": "category", "values": ["auto", "card"],
                       "one_hot": ["product_auto", "product_card"]}],
           "classes": ["no", "yes"]}
        A regression names its "target" (the number it predicts, default "prediction") instead
        of "classes". "feature" reads a differently named feature; "one_hot" maps one 0/1 feature per value.
        A missing value goes its split's default way, as in the library; an unknown category
        counts as missing ("missing": "error" or "unknown": "error" refuse such records instead).
        """,
    run: { args in
        let path = args.positional(0)!
        guard let formatText = args.string("format") else {
            throw UsageError("--format is required: xgboost-json, lightgbm-text, sklearn-json or onnx")
        }
        guard let format = ModelImport.Format(rawValue: formatText) else {
            throw UsageError("unknown --format \"\(formatText)\"; expected xgboost-json, lightgbm-text, sklearn-json or onnx")
        }
        let data = Data(try readFile(path))
        var schema: ImportSchema?
        if let schemaPath = args.string("schema") {
            do {
                schema = try ImportSchema.decode(Data(try readFile(schemaPath)))
            } catch let error as ModelFormatError {
                throw CommandError("\(schemaPath): \(error.message)", code: Exit.dataError)
            }
        }
        let file = URL(fileURLWithPath: path).lastPathComponent
        let name = args.string("name") ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let document: ModelDocument
        do throws(ModelFormatError) {
            document = try ModelImport.convert(
                data, format: format, file: file, schema: schema, name: name,
                created: ISO8601DateFormatter().string(from: Date()))
        } catch {
            throw CommandError("\(path): cannot import: \(error.message)", code: Exit.dataError)
        }
        let outputs = document.outputs.target.map { "predicts \($0) (a number)" } ?? "classes \(document.outputs.classes.joined(separator: ", "))"
        let size = document.estimator.trees.map { "\($0.trees.reduce(0) { $0 + $1.feature.count }) nodes" } ?? "\(document.designWidth) coefficients per margin"
        print("\(document.metadata.description ?? ""): \(size), \(document.schema.fields.count) input fields, \(outputs)")
        try registerAndReport(try openStore(args), document, promote: args.string("promote"),
                              baselineData: try baselineData(args))
        return Exit.ok
    })

let modelsPromoteCommand = Command(
    words: ["models", "promote"],
    summary: "Point an alias (production, candidate, any name) at a version",
    positionals: ["NAME@VERSION"],
    options: [Option(name: "alias", value: "ALIAS", help: "the alias to move", defaultValue: "production")] + registryOptions,
    run: { args in
        let reference = args.positional(0)!
        let parts = reference.split(separator: "@", maxSplits: 1).map(String.init)
        guard parts.count == 2, let number = Int(parts[1]) else {
            throw UsageError("expected NAME@VERSION with a version number, got \"\(reference)\"")
        }
        let alias = args.string("alias") ?? "production"
        try promoteAndReport(try openStore(args), model: parts[0], version: number, alias: alias)
        return Exit.ok
    })

let modelsRollbackCommand = Command(
    words: ["models", "rollback"],
    summary: "Move an alias back to the version it pointed at before its last change",
    positionals: ["NAME"],
    options: [Option(name: "alias", value: "ALIAS", help: "the alias to move back", defaultValue: "production")] + registryOptions,
    details: "A second rollback undoes the first. Every move is in 'switchyard models audit'.",
    run: { args in
        let name = args.positional(0)!
        let alias = args.string("alias") ?? "production"
        let registry = try openStore(args)
        let moved = try registryCall { () throws(RegistryError) in try registry.rollback(model: name, alias: alias, who: cliActor()) }
        print("\(name)@\(alias): v\(moved.from) → v\(moved.to)")
        return Exit.ok
    })

let modelsRouteCommand = Command(
    words: ["models", "route"],
    summary: "Split an alias's traffic over versions by weight (a canary), or end a split",
    positionals: ["NAME", "ALIAS", "VERSION=PERCENT..."],
    options: [
        Option(name: "sticky", value: "FIELD", help: "keep each caller on one version by this record field (the x-routing-key header wins)"),
        Option(name: "shadow", value: "VERSION", help: "also score a copy of the live rows with VERSION, answering nobody (GET /v1/compare)"),
        Option(name: "shadow-sample", value: "PERCENT", help: "the percent of live rows the shadow scores", defaultValue: "100"),
    ] + registryOptions,
    details: """
        The weights are percents adding up to 100: 'route credit production 1=90 2=10' sends 10% of
        the requests to v2. The alias itself points at the largest weight, which batch and stream
        run; every serve replica following the alias splits the same way. A request with a routing
        key (the x-routing-key header, or the --sticky field of its first record) always gets the same
        version on every replica; one without is spread evenly. '1=100' ends the split; so does
        'models promote' or 'models rollback' on the alias. Every change is in 'models audit'.

        A shadow ('route credit production 1=100 --shadow 2') scores a copy of the live rows off
        the hot path on every serve replica and compares: label agreement, |Δp| and the rows that
        disagree most, in GET /v1/compare and the console's Rollout view.
        """,
    run: { args in
        let (name, alias) = (args.positional(0)!, args.positional(1)!)
        var shadow: AliasRoute.Shadow?
        if let version = try args.integer("shadow", range: 1...Int(Int32.max)) {
            shadow = AliasRoute.Shadow(version: version, sample: try args.double("shadow-sample") ?? 100)
        }
        let route = try registryCall { () throws(RegistryError) in
            try AliasRoute(words: Array(args.positionals.dropFirst(2)), key: args.string("sticky"), shadow: shadow)
        }
        let registry = try openStore(args)
        let previous = try registryCall { () throws(RegistryError) in try registry.setRoute(model: name, alias: alias, route: route, who: cliActor()) }
        print("\(name)@\(alias): " + (route.isSingle ? "all traffic to v\(route.main)" : route.description)
              + " (main version v\(route.main)\(previous.map { $0 == route.main ? "" : ", was v\($0)" } ?? ""))")
        return Exit.ok
    })

let modelsBaselineCommand = Command(
    words: ["models", "baseline"],
    summary: "Store a version's drift baseline from the data it was made from (for imported models)",
    positionals: ["NAME@VERSION"],
    options: [
        Option(name: "data", value: "FILE.csv", help: "rows like the ones the model was trained on: CSV with a header naming its inputs", required: true),
        Option(name: "limit", value: "N", help: "read at most the first N rows", defaultValue: "1000000"),
    ] + registryOptions,
    details: """
        The baseline keeps, per input field, ten quantile bins (numbers) or the schema's values
        (categories) with the share of rows in each and the share missing, and the same for the
        predicted probability. Serve and stream count live rows into the same bins and report the
        population stability index per field (GET /v1/drift, /metrics, the console). 'switchyard
        train' stores the training data's baseline by itself.
        """,
    run: { args in
        let reference = args.positional(0)!
        let registry = try openStore(args)
        let (version, scorer) = try loadScorer(registry, reference)
        _ = try args.require("data")
        try storeBaseline(registry, version, scorer.document, data: try baselineData(args, "data")!,
                          limit: try args.integer("limit", range: 1...100_000_000) ?? 1_000_000)
        return Exit.ok
    })

let modelsAuditCommand = Command(
    words: ["models", "audit"],
    summary: "Show the append-only audit log: who changed what, when, from → to",
    positionals: ["NAME?"],
    options: [
        Option(name: "limit", value: "N", help: "the newest N entries", defaultValue: "100"),
        Option(name: "json", help: "print JSON Lines"),
    ] + registryOptions,
    run: { args in
        let registry = try openStore(args)
        let limit = try args.integer("limit", range: 1...1_000_000) ?? 100
        let entries = try registryCall { () throws(RegistryError) in try registry.audit(model: args.positional(0), after: nil, limit: limit) }
        if args.flag("json") {
            for e in entries { print(e.json.jsonText) }
            return Exit.ok
        }
        print(table(
            ["AT", "WHO", "ACTION", "MODEL", "ALIAS", "FROM → TO", "DETAIL"],
            entries.map {
                [String($0.at.prefix(23)), $0.who, $0.action, $0.model, $0.alias ?? "",
                 "\($0.fromVersion.map { "v\($0)" } ?? "-") → \($0.toVersion.map { "v\($0)" } ?? "-")", $0.detail ?? ""]
            }), terminator: "")
        return Exit.ok
    })

