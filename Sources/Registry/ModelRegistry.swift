import ControlProtocol
import Foundation
import JSON
import Scoring

/// Model versions, aliases and the audit log, in SWITCHYARD_HOME.
///
/// A version is immutable: its artifact is the canonical JSON of the model
/// document, stored under its sha256, and registering the same content under
/// the same name again returns the existing version. Every change (register,
/// promote, rollback) is one transaction that also appends to the audit log;
/// the log refuses updates and deletes (triggers), so it is append-only.
public final class ModelRegistry: Sendable {
    private let database: Database
    /// Where it is: a SWITCHYARD_HOME (artifacts and baselines are files beside the SQLite file)
    /// or a PostgreSQL database (they are rows of `artifacts`).
    public let location: StoreLocation
    private let now: @Sendable () -> Date

    /// Opens (and creates or upgrades) the registry in `home`.
    public convenience init(home: Home, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        try self.init(location: .home(home), now: now)
    }

    /// Opens (and creates or upgrades) the registry at `location`.
    public init(location: StoreLocation, now: @escaping @Sendable () -> Date = Date.init) throws(RegistryError) {
        self.location = location
        self.now = now
        database = try Database.open(location)
    }

    /// Hears of every audit entry (a change) made through any registry process on the same
    /// database: its id, as text (on SQLite, that there were entries, with no id).
    public func changeListener() throws(RegistryError) -> StoreListener {
        try database.listen(Self.changeChannel)
    }

    static let changeChannel = "switchyard_audit"
}

extension Database {
    /// Opens the registry database in `home`, creating or upgrading its schema.
    package static func open(_ home: Home) throws(RegistryError) -> Database {
        try open(.home(home))
    }

    /// Opens the registry database at `location`, creating or upgrading its schema.
    package static func open(_ location: StoreLocation) throws(RegistryError) -> Database {
        let database: Database
        switch location {
        case .home(let home):
            try home.prepare()
            database = try Database(path: home.databasePath)
        case .postgres(let url):
            database = try Database(postgres: url)
        }
        try database.migrate(sqlite: migrations, postgres: postgresMigrations)
        return database
    }

    /// SQLite's schema steps, applied once each, in order. Append new steps (and their PostgreSQL
    /// twin below); never edit one.
    static let migrations: [String] = [
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        );
        CREATE TABLE versions (
            model TEXT NOT NULL REFERENCES models(name),
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            metrics TEXT NOT NULL,
            PRIMARY KEY (model, version),
            UNIQUE (model, sha256)
        );
        CREATE TABLE aliases (
            model TEXT NOT NULL,
            alias TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (model, alias),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            model TEXT NOT NULL,
            alias TEXT,
            from_version INTEGER,
            to_version INTEGER,
            detail TEXT
        );
        CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
            BEGIN SELECT RAISE(ABORT, 'model versions are immutable'); END;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        """,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL,
            name TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE fleet (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            url TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            model TEXT,
            started_at TEXT NOT NULL,
            heartbeat_at REAL NOT NULL
        );
        """,
        """
        CREATE TABLE batch_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL,
            trigger TEXT NOT NULL,
            rerun_of INTEGER REFERENCES batch_runs(id),
            who TEXT NOT NULL,
            idempotency_key TEXT,
            model TEXT,
            model_sha256 TEXT,
            inputs TEXT NOT NULL DEFAULT '[]',
            rows_read INTEGER NOT NULL DEFAULT 0,
            rows_scored INTEGER NOT NULL DEFAULT 0,
            rows_rejected INTEGER NOT NULL DEFAULT 0,
            bytes_total INTEGER NOT NULL DEFAULT 0,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            queued_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT,
            scheduled_for REAL,
            note TEXT,
            UNIQUE (job, idempotency_key)
        );
        CREATE INDEX batch_runs_job_status ON batch_runs (job, status, id);
        """,
        """
        CREATE TABLE stream_files (
            stream TEXT NOT NULL,
            file TEXT NOT NULL,
            seq INTEGER NOT NULL,
            offset INTEGER NOT NULL DEFAULT 0,
            line INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (stream, file)
        );
        """,
        """
        CREATE TABLE routes (
            model TEXT NOT NULL,
            alias TEXT NOT NULL,
            spec TEXT NOT NULL,
            PRIMARY KEY (model, alias)
        );
        """,
        """
        CREATE TABLE baselines (
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (model, version),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        """,
        """
        ALTER TABLE batch_runs ADD COLUMN spec TEXT;
        CREATE TABLE batch_tasks (
            run_id INTEGER NOT NULL REFERENCES batch_runs(id),
            seq INTEGER NOT NULL,
            file TEXT NOT NULL,
            start_offset INTEGER NOT NULL,
            end_offset INTEGER NOT NULL,
            first_line INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            worker TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_until REAL,
            rows_read INTEGER NOT NULL DEFAULT 0,
            rows_scored INTEGER NOT NULL DEFAULT 0,
            rows_rejected INTEGER NOT NULL DEFAULT 0,
            output_bytes INTEGER NOT NULL DEFAULT 0,
            rejects_bytes INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            started_at TEXT,
            finished_at TEXT,
            PRIMARY KEY (run_id, seq)
        );
        CREATE INDEX batch_tasks_status ON batch_tasks (status, run_id, seq);
        """,
    ]
}

extension Database {
    /// PostgreSQL's schema steps, one for each of SQLite's: the same tables and constraints in its
    /// types (BIGSERIAL, DOUBLE PRECISION), triggers through a function, model documents and
    /// baselines in `artifacts` (SQLite's registry keeps them as files beside its database), and no
    /// stream checkpoints (a stream's file offsets belong to the machine that reads the files).
    static let postgresMigrations: [String] = [
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        );
        CREATE TABLE versions (
            model TEXT NOT NULL REFERENCES models(name),
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            metrics TEXT NOT NULL,
            PRIMARY KEY (model, version),
            UNIQUE (model, sha256)
        );
        CREATE TABLE aliases (
            model TEXT NOT NULL,
            alias TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (model, alias),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        CREATE TABLE audit (
            id BIGSERIAL PRIMARY KEY,
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            model TEXT NOT NULL,
            alias TEXT,
            from_version INTEGER,
            to_version INTEGER,
            detail TEXT
        );
        CREATE TABLE artifacts (
            sha256 TEXT PRIMARY KEY,
            body TEXT NOT NULL
        );
        CREATE FUNCTION switchyard_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
        CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
            FOR EACH ROW EXECUTE FUNCTION switchyard_refuse('model versions are immutable');
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            FOR EACH ROW EXECUTE FUNCTION switchyard_refuse('the audit log is append-only');
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION switchyard_refuse('the audit log is append-only');
        CREATE TRIGGER artifacts_immutable BEFORE UPDATE OR DELETE ON artifacts
            FOR EACH ROW EXECUTE FUNCTION switchyard_refuse('artifacts are immutable');
        """,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL,
            name TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE TABLE fleet (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            url TEXT NOT NULL,
            pid BIGINT NOT NULL,
            host TEXT NOT NULL,
            model TEXT,
            started_at TEXT NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL
        );
        """,
        """
        CREATE TABLE batch_runs (
            id BIGSERIAL PRIMARY KEY,
            job TEXT NOT NULL,
            trigger TEXT NOT NULL,
            rerun_of BIGINT REFERENCES batch_runs(id),
            who TEXT NOT NULL,
            idempotency_key TEXT,
            model TEXT,
            model_sha256 TEXT,
            inputs TEXT NOT NULL DEFAULT '[]',
            rows_read BIGINT NOT NULL DEFAULT 0,
            rows_scored BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0,
            bytes_total BIGINT NOT NULL DEFAULT 0,
            bytes_done BIGINT NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            queued_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT,
            scheduled_for DOUBLE PRECISION,
            note TEXT,
            UNIQUE (job, idempotency_key)
        );
        CREATE INDEX batch_runs_job_status ON batch_runs (job, status, id);
        """,
        "SELECT 1",  // SQLite's stream checkpoints: not kept here
        """
        CREATE TABLE routes (
            model TEXT NOT NULL,
            alias TEXT NOT NULL,
            spec TEXT NOT NULL,
            PRIMARY KEY (model, alias)
        );
        """,
        """
        CREATE TABLE baselines (
            model TEXT NOT NULL,
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (model, version),
            FOREIGN KEY (model, version) REFERENCES versions(model, version)
        );
        """,
        """
        ALTER TABLE batch_runs ADD COLUMN spec TEXT;
        CREATE TABLE batch_tasks (
            run_id BIGINT NOT NULL REFERENCES batch_runs(id),
            seq INTEGER NOT NULL,
            file TEXT NOT NULL,
            start_offset BIGINT NOT NULL,
            end_offset BIGINT NOT NULL,
            first_line BIGINT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            worker TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_until DOUBLE PRECISION,
            rows_read BIGINT NOT NULL DEFAULT 0,
            rows_scored BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0,
            output_bytes BIGINT NOT NULL DEFAULT 0,
            rejects_bytes BIGINT NOT NULL DEFAULT 0,
            error TEXT,
            started_at TEXT,
            finished_at TEXT,
            PRIMARY KEY (run_id, seq)
        );
        CREATE INDEX batch_tasks_status ON batch_tasks (status, run_id, seq);
        """,
    ]
}


extension ModelRegistry {

    // MARK: - Types

    public typealias Version = ModelVersion

    public typealias AuditEntry = ControlProtocol.AuditEntry

    /// The outcome of `register`: the version, and whether it already existed.
    public struct Registration: Sendable {
        public var version: Version
        public var existed: Bool
        public init(version: Version, existed: Bool) {
            self.version = version
            self.existed = existed
        }
    }

    // MARK: - Changes

    /// Registers `document` as the next version of its `metadata.name`.
    @discardableResult
    public func register(_ document: ModelDocument, who: String) throws(RegistryError) -> Registration {
        let name = document.metadata.name
        try Self.checkName(name, what: "model name")
        do { try document.validate() } catch { throw RegistryError("\(error)") }
        let bytes = document.encoded()
        let sha = SHA256.hex([UInt8](bytes))
        try storeContent(bytes, sha256: sha, folder: \.artifacts)
        let metrics = document.metadata.training?.metrics ?? [:]
        let metricsText = String(decoding: (try? JSONEncoder.sorted.encode(metrics)) ?? Data("{}".utf8), as: UTF8.self)
        let at = timestamp()
        return try database.exclusive { () throws(RegistryError) in
            try database.transaction { () throws(RegistryError) in
                if let existing = try database.query(
                    "SELECT version FROM versions WHERE model = ? AND sha256 = ?", [.text(name), .text(sha)]
                ).first?.first?.integer {
                    return Registration(version: try version(name, Int(existing)), existed: true)
                }
                try database.query("INSERT INTO models (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", [.text(name), .text(at)])
                let next = (try database.query("SELECT MAX(version) FROM versions WHERE model = ?", [.text(name)])
                    .first?.first?.integer ?? 0) + 1
                try database.query(
                    "INSERT INTO versions (model, version, sha256, created_at, created_by, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                    [.text(name), .integer(next), .text(sha), .text(at), .text(who), .text(metricsText)])
                try appendAudit(at: at, who: who, action: "register", model: name, alias: nil, from: nil, to: Int(next), detail: "sha256 \(sha)")
                return Registration(version: try version(name, Int(next)), existed: false)
            }
        }
    }

    /// What an alias must point at for a move to go ahead (compare-and-set).
    public typealias Expected = AliasExpectation

    /// Points `alias` of `model` at `version`. Returns the version it pointed at before. With
    /// `expected`, the move happens only if the alias points there now (409-style error otherwise),
    /// so two operators acting on what they saw cannot undo each other unknowingly.
    @discardableResult
    public func promote(model: String, version: Int, alias: String, who: String, expected: Expected? = nil) throws(RegistryError) -> Int? {
        try Self.checkAlias(alias)
        return try database.exclusive { () throws(RegistryError) in
            try database.transaction { () throws(RegistryError) -> Int? in
                _ = try self.version(model, version)
                let previous = try aliasTarget(model, alias)
                if let expected, expected != (previous.map(Expected.version) ?? .absent) {
                    let now = previous.map { "points at v\($0)" } ?? "does not exist"
                    let wanted = if case .version(let v) = expected { "v\(v)" } else { "no alias" }
                    throw RegistryError("\(model)@\(alias) \(now), not \(wanted) as expected; someone moved it meanwhile", status: 409)
                }
                if previous == version { return previous }
                try setAlias(model: model, alias: alias, version: version, who: who)
                try appendAudit(at: timestamp(), who: who, action: "promote", model: model, alias: alias, from: previous, to: version, detail: nil)
                return previous
            }
        }
    }

    /// Splits `alias` over the route's versions: the alias points at the route's main version
    /// (batch and stream follow it), serve replicas split by the weights. A route of one version
    /// is a plain alias, so `1=100` ends a split. Audited as `route` with the split as detail.
    /// Returns the version the alias pointed at before.
    @discardableResult
    public func setRoute(model: String, alias: String, route: AliasRoute, who: String) throws(RegistryError) -> Int? {
        try Self.checkAlias(alias)
        return try database.exclusive { () throws(RegistryError) in
            try database.transaction { () throws(RegistryError) -> Int? in
                for number in route.arms.map(\.version) + (route.shadow.map { [$0.version] } ?? []) { _ = try self.version(model, number) }
                let previous = try aliasTarget(model, alias)
                let before = try routeOf(model, alias)
                if before == route || (before == nil && route.isSingle && previous == route.main) { return previous }
                try setAlias(model: model, alias: alias, version: route.main, who: who)
                if !route.isSingle {
                    try database.query("INSERT INTO routes (model, alias, spec) VALUES (?, ?, ?)",
                                         [.text(model), .text(alias), .text(route.json.jsonText)])
                }
                try appendAudit(at: timestamp(), who: who, action: "route", model: model, alias: alias, from: previous, to: route.main,
                                detail: route.isSingle ? "split ended: v\(route.main) 100%" : route.description)
                return previous
            }
        }
    }

    /// Stores the drift baseline of a version (in `baselines/`, named by its sha256), replacing any
    /// earlier one; audited as `baseline`. Components running the version pick it up.
    public func setBaseline(model: String, version: Int, baseline: DriftBaseline, who: String) throws(RegistryError) {
        // Made for this version's inputs, in its schema's order: a baseline of another model would
        // bin every row into the wrong fields.
        let fields = try document(try database.exclusive { () throws(RegistryError) in try self.version(model, version) }).schema.fields
        guard baseline.fields.map(\.name) == fields.map(\.name),
              zip(baseline.fields, fields).allSatisfy({ ($0.kind == .number) == ($1.type == .number) }) else {
            throw RegistryError("the baseline's fields (\(baseline.fields.map(\.name).joined(separator: ", "))) are not the inputs of \(model)@\(version) "
                + "(\(fields.map(\.name).joined(separator: ", "))) with their types; make it with 'switchyard models baseline \(model)@\(version) --data FILE.csv'", status: 400)
        }
        let bytes = Data(baseline.json.jsonText.utf8)
        let sha = SHA256.hex([UInt8](bytes))
        try storeContent(bytes, sha256: sha, folder: \.baselines)
        try database.exclusive { () throws(RegistryError) in
            try database.transaction { () throws(RegistryError) in
                _ = try self.version(model, version)
                let at = timestamp()
                try database.query("""
                    INSERT INTO baselines (model, version, sha256, created_at, created_by) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (model, version) DO UPDATE SET sha256 = excluded.sha256, created_at = excluded.created_at, created_by = excluded.created_by
                    """, [.text(model), .integer(Int64(version)), .text(sha), .text(at), .text(who)])
                try appendAudit(at: at, who: who, action: "baseline", model: model, alias: nil, from: nil, to: version,
                                detail: "\(baseline.rows) rows, \(baseline.fields.count) fields, sha256 \(sha.prefix(12))")
            }
        }
    }

    /// The drift baseline of a version; nil when it has none.
    public func baseline(model: String, version: Int) throws(RegistryError) -> DriftBaseline? {
        let sha = try database.exclusive { () throws(RegistryError) in
            try database.query("SELECT sha256 FROM baselines WHERE model = ? AND version = ?", [.text(model), .integer(Int64(version))]).first?.first?.text
        }
        guard let sha else { return nil }
        let bytes: [UInt8]
        do { bytes = try content(sha256: sha, folder: \.baselines) } catch {
            throw RegistryError("the baseline of \(model)@\(version): \(error.message); store it again with 'switchyard models baseline'", status: 500)
        }
        do { return try DriftBaseline(json: try JSONValue.parse(bytes)) } catch { throw RegistryError("the baseline of \(model)@\(version): \(error)", status: 500) }
    }

    /// The split of `model@alias`; nil when it points at one version.
    public func route(model: String, alias: String) throws(RegistryError) -> AliasRoute? {
        try database.exclusive { () throws(RegistryError) in try routeOf(model, alias) }
    }

    private func routeOf(_ model: String, _ alias: String) throws(RegistryError) -> AliasRoute? {
        guard let spec = try database.query("SELECT spec FROM routes WHERE model = ? AND alias = ?", [.text(model), .text(alias)]).first?.first?.text
        else { return nil }
        do { return try AliasRoute(json: try JSONValue.parse(Array(spec.utf8))) } catch {
            throw RegistryError("the route of \(model)@\(alias) in the registry is damaged (\(error)); set it again with 'switchyard models route'", status: 500)
        }
    }

    /// Moves `alias` back to where it pointed before its latest change (a second
    /// rollback undoes the first). Returns (from, to).
    @discardableResult
    public func rollback(model: String, alias: String, who: String) throws(RegistryError) -> (from: Int, to: Int) {
        try database.exclusive { () throws(RegistryError) in
            try database.transaction { () throws(RegistryError) -> (from: Int, to: Int) in
                guard let current = try aliasTarget(model, alias) else {
                    throw RegistryError("\(model) has no alias \"\(alias)\"; see 'switchyard models show \(model)'")
                }
                let last = try database.query(
                    "SELECT from_version FROM audit WHERE model = ? AND alias = ? AND action IN ('promote', 'rollback') ORDER BY id DESC LIMIT 1",
                    [.text(model), .text(alias)])
                guard let previous = last.first?.first?.integer.map(Int.init) else {
                    throw RegistryError("\(model)@\(alias) has no earlier version to roll back to")
                }
                try setAlias(model: model, alias: alias, version: previous, who: who)
                try appendAudit(at: timestamp(), who: who, action: "rollback", model: model, alias: alias, from: current, to: previous, detail: nil)
                return (current, previous)
            }
        }
    }

    // MARK: - Reading

    /// Resolves `NAME`, `NAME@VERSION` or `NAME@ALIAS`. A bare name means its
    /// `production` alias, or its latest version when it has none.
    public func resolve(_ reference: String) throws(RegistryError) -> Version {
        let parts = reference.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let name = parts[0]
        return try database.exclusive { () throws(RegistryError) in
            guard try database.query("SELECT 1 FROM models WHERE name = ?", [.text(name)]).first != nil else {
                let known = try database.query("SELECT name FROM models ORDER BY name").compactMap { $0.first?.text }
                let hint = known.isEmpty ? "the registry is empty; train or register a model first" : "models: \(known.joined(separator: ", "))"
                throw RegistryError("no model named \"\(name)\" (\(hint))")
            }
            if parts.count == 1 {
                if let v = try aliasTarget(name, "production") { return try version(name, v) }
                let latest = try database.query("SELECT MAX(version) FROM versions WHERE model = ?", [.text(name)])
                return try version(name, Int(latest.first?.first?.integer ?? 0))
            }
            let tag = parts[1]
            if let number = Int(tag) { return try version(name, number) }
            guard let v = try aliasTarget(name, tag) else {
                let aliases = try database.query("SELECT alias FROM aliases WHERE model = ? ORDER BY alias", [.text(name)])
                    .compactMap { $0.first?.text }
                throw RegistryError(
                    "\(name) has no alias \"\(tag)\" (aliases: \(aliases.isEmpty ? "none" : aliases.joined(separator: ", ")))")
            }
            return try version(name, v)
        }
    }

    /// `resolve`, and the alias's split when it has one: `NAME@ALIAS`, or a bare name (its `production`).
    public func resolveRoute(_ reference: String) throws(RegistryError) -> (version: Version, route: AliasRoute?) {
        let version = try resolve(reference)
        let parts = reference.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let alias = parts.count == 1 ? "production" : parts[1]
        guard Int(alias) == nil, let route = try route(model: version.model, alias: alias) else { return (version, nil) }
        // Moved between the two reads: the route's main version is what the alias points at.
        return (route.main == version.version ? version : try resolve("\(version.model)@\(route.main)"), route)
    }

    /// The model document of a version, read from its artifact and checked against its sha256.
    public func document(_ version: Version) throws(RegistryError) -> ModelDocument {
        let bytes: [UInt8]
        do { bytes = try artifact(sha256: version.sha256) } catch { throw RegistryError("\(version.reference): \(error.message)", status: error.status) }
        do { return try ModelDocument.decode(Data(bytes)) } catch { throw RegistryError("\(version.reference): \(error)") }
    }

    /// The artifact stored under `sha256`, checked against it.
    public func artifact(sha256: String) throws(RegistryError) -> [UInt8] {
        try content(sha256: sha256, folder: \.artifacts)
    }

    /// Keeps `bytes` under their sha256: a file in the home's `folder` (written whole or not at
    /// all), or a row of PostgreSQL's `artifacts`. Content already there is left as it is.
    private func storeContent(_ bytes: Data, sha256: String, folder: KeyPath<Home, URL>) throws(RegistryError) {
        switch location {
        case .home(let home):
            let url = home[keyPath: folder].appendingPathComponent("\(sha256).json")
            guard !FileManager.default.fileExists(atPath: url.path) else { return }
            do {
                try FileManager.default.createDirectory(at: home[keyPath: folder], withIntermediateDirectories: true)
            } catch {
                throw RegistryError("cannot create \(home[keyPath: folder].path): \(error.localizedDescription)", status: 500)
            }
            try writeAtomically(bytes, to: url)
        case .postgres:
            try database.query("INSERT INTO artifacts (sha256, body) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               [.text(sha256), .text(String(decoding: bytes, as: UTF8.self))])
        }
    }

    /// What `storeContent` kept under `sha256`, checked against it: 404 when absent, 500 when it no
    /// longer matches.
    private func content(sha256: String, folder: KeyPath<Home, URL>) throws(RegistryError) -> [UInt8] {
        let bytes: [UInt8], place: String
        switch location {
        case .home(let home):
            let url = home[keyPath: folder].appendingPathComponent("\(sha256).json")
            place = url.path
            guard let data = FileManager.default.contents(atPath: url.path) else { throw RegistryError("the artifact \(sha256) is missing: \(place)", status: 404) }
            bytes = [UInt8](data)
        case .postgres:
            place = "the artifacts table"
            guard let body = try database.query("SELECT body FROM artifacts WHERE sha256 = ?", [.text(sha256)]).first?.first?.text else {
                throw RegistryError("the artifact \(sha256) is missing from \(place)", status: 404)
            }
            bytes = Array(body.utf8)
        }
        guard SHA256.hex(bytes) == sha256 else {
            throw RegistryError("the artifact \(sha256) is corrupt: its sha256 no longer matches \(place)", status: 500)
        }
        return bytes
    }

    /// Every model's versions, newest last.
    public func versions(model: String? = nil) throws(RegistryError) -> [Version] {
        try database.exclusive { () throws(RegistryError) in
            let rows = try database.query(
                model == nil
                    ? "SELECT model, version FROM versions ORDER BY model, version"
                    : "SELECT model, version FROM versions WHERE model = ? ORDER BY version",
                model.map { [.text($0)] } ?? [])
            var out: [Version] = []
            for row in rows { out.append(try version(row[0].text ?? "", Int(row[1].integer ?? 0))) }
            return out
        }
    }

    /// Aliases of `model` and the versions they point at.
    public func aliases(model: String) throws(RegistryError) -> [(alias: String, version: Int)] {
        try database.exclusive { () throws(RegistryError) in
            try database.query("SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", [.text(model)])
                .map { ($0[0].text ?? "", Int($0[1].integer ?? 0)) }
        }
    }

    /// Every alias of every model, and the revision they are at: the latest audit entry's id,
    /// which every alias move raises (a follower asks "anything after revision R?").
    public func allAliases() throws(RegistryError) -> (revision: Int, aliases: [(model: String, alias: String, version: Int)]) {
        try database.exclusive { () throws(RegistryError) in
            let revision = Int(try database.query("SELECT COALESCE(MAX(id), 0) FROM audit").first?.first?.integer ?? 0)
            let rows = try database.query("SELECT model, alias, version FROM aliases ORDER BY model, alias")
            return (revision, rows.map { ($0[0].text ?? "", $0[1].text ?? "", Int($0[2].integer ?? 0)) })
        }
    }

    /// The revision `allAliases` would report, without reading the aliases.
    public func revision() throws(RegistryError) -> Int {
        Int(try database.query("SELECT COALESCE(MAX(id), 0) FROM audit").first?.first?.integer ?? 0)
    }

    /// The audit log, oldest first; `model` narrows it to one model, `after` to entries past that id
    /// (then the oldest `limit` of them, for paging forward; otherwise the newest `limit`).
    public func audit(model: String? = nil, after: Int? = nil, limit: Int = 1000) throws(RegistryError) -> [AuditEntry] {
        try database.exclusive { () throws(RegistryError) in
            var conditions: [String] = []
            var values: [Database.Value] = []
            if let model {
                conditions.append("model = ?")
                values.append(.text(model))
            }
            if let after {
                conditions.append("id > ?")
                values.append(.integer(Int64(after)))
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let order = after == nil ? "DESC" : "ASC"
            let rows = try database.query(
                "SELECT id, at, who, action, model, alias, from_version, to_version, detail FROM audit \(filter) ORDER BY id \(order) LIMIT \(max(1, min(limit, 10_000)))",
                values)
            return (after == nil ? rows.reversed() : rows).map { row in
                AuditEntry(
                    id: Int(row[0].integer ?? 0), at: row[1].text ?? "", who: row[2].text ?? "", action: row[3].text ?? "",
                    model: row[4].text ?? "", alias: row[5].text, fromVersion: row[6].integer.map(Int.init),
                    toVersion: row[7].integer.map(Int.init), detail: row[8].text)
            }
        }
    }

    // MARK: - Helpers

    private func version(_ model: String, _ number: Int) throws(RegistryError) -> Version {
        guard let row = try database.query(
            "SELECT sha256, created_at, created_by, metrics FROM versions WHERE model = ? AND version = ?",
            [.text(model), .integer(Int64(number))]
        ).first else {
            let last = try database.query("SELECT MAX(version) FROM versions WHERE model = ?", [.text(model)]).first?.first?.integer
            throw RegistryError("\(model) has no version \(number)\(last.map { " (versions are 1 to \($0))" } ?? "")")
        }
        // The project's parser, not Foundation's JSONDecoder: this runs for every version listed and
        // every alias a follower resolves, each second.
        var metrics: [String: Double] = [:]
        if case .object(let o)? = try? JSONValue.parse(Array((row[3].text ?? "{}").utf8)) {
            for (key, value) in zip(o.keys, o.values) { if case .number(let x) = value { metrics[key] = x } }
        }
        let aliases = try database.query(
            "SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias", [.text(model), .integer(Int64(number))]
        ).compactMap { $0.first?.text }
        return Version(
            model: model, version: number, sha256: row[0].text ?? "", createdAt: row[1].text ?? "",
            createdBy: row[2].text ?? "", metrics: metrics, aliases: aliases)
    }

    private func aliasTarget(_ model: String, _ alias: String) throws(RegistryError) -> Int? {
        try database.query("SELECT version FROM aliases WHERE model = ? AND alias = ?", [.text(model), .text(alias)])
            .first?.first?.integer.map(Int.init)
    }

    /// Points the alias at one version and ends any split it had (`setRoute` sets a new one after).
    private func setAlias(model: String, alias: String, version: Int, who: String) throws(RegistryError) {
        try database.query("DELETE FROM routes WHERE model = ? AND alias = ?", [.text(model), .text(alias)])
        try database.query(
            """
            INSERT INTO aliases (model, alias, version, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by
            """,
            [.text(model), .text(alias), .integer(Int64(version)), .text(timestamp()), .text(who)])
    }

    private func appendAudit(
        at: String, who: String, action: String, model: String, alias: String?, from: Int?, to: Int?, detail: String?
    ) throws(RegistryError) {
        let id = try database.query(
            "INSERT INTO audit (at, who, action, model, alias, from_version, to_version, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                .text(at), .text(who), .text(action), .text(model), alias.map(Database.Value.text) ?? .null,
                from.map { .integer(Int64($0)) } ?? .null, to.map { .integer(Int64($0)) } ?? .null,
                detail.map(Database.Value.text) ?? .null,
            ]).first?.first?.integer ?? 0
        // Every registry process on the database hears of it at commit (`changeListener`).
        try database.notify(Self.changeChannel, payload: String(id))
    }

    private func timestamp() -> String { isoTimestamp(now()) }

    static func checkName(_ name: String, what: String) throws(RegistryError) {
        let allowed = name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F || b == 0x2E
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed else {
            throw RegistryError("\(what) \"\(name)\" must be 1 to 64 letters, digits, '.', '-' or '_'")
        }
    }

    static func checkAlias(_ alias: String) throws(RegistryError) {
        try checkName(alias, what: "alias")
        guard Int(alias) == nil else { throw RegistryError("alias \"\(alias)\" must not be a number (numbers name versions)") }
    }
}


extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
