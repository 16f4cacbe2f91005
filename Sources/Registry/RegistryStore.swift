import ControlProtocol
import Foundation
import Scoring

/// Where components get their models: the local SQLite registry in SWITCHYARD_HOME (the
/// embedded default), or the registry service over HTTP (`--registry URL`).
public protocol ModelSource: Sendable {
    /// `NAME`, `NAME@VERSION` or `NAME@ALIAS`; a bare name means its `production` alias, or its
    /// latest version when it has none.
    func resolve(_ reference: String) throws(RegistryError) -> ModelRegistry.Version
    /// The model document of a version, checked against its sha256.
    func document(_ version: ModelRegistry.Version) throws(RegistryError) -> ModelDocument
    /// `resolve`, and the traffic split when the reference follows an alias that has one (the
    /// version is then the split's main one).
    func resolveRoute(_ reference: String) throws(RegistryError) -> (version: ModelRegistry.Version, route: AliasRoute?)
    /// The version's drift baseline; nil when it has none.
    func baseline(model: String, version: Int) throws(RegistryError) -> DriftBaseline?
}

extension ModelSource {
    /// A source without splits: every alias points at one version.
    public func resolveRoute(_ reference: String) throws(RegistryError) -> (version: ModelRegistry.Version, route: AliasRoute?) {
        (try resolve(reference), nil)
    }

    /// A source without baselines.
    public func baseline(model: String, version: Int) throws(RegistryError) -> DriftBaseline? { nil }
}

/// The active API keys, by the sha256 of the key: what a component checks requests against.
public protocol KeySource: Sendable {
    func activeKeys() throws(RegistryError) -> [String: (id: String, scope: Scope)]
}

/// The fleet directory a component records itself in.
public protocol FleetRecorder: Sendable {
    func heartbeat(_ member: FleetDirectory.Member) throws(RegistryError)
    func remove(id: String) throws(RegistryError)
    /// Deletes records silent for `retention` seconds; returns how many went.
    @discardableResult func expire(retention: Double) throws(RegistryError) -> Int
}

/// The fleet directory the registry service keeps: what components record, and the listing.
public protocol FleetStore: FleetRecorder {
    /// Members heard from within `maxAge` seconds (`.infinity`: every record kept).
    func members(maxAge: Double) throws(RegistryError) -> [FleetDirectory.Member]
}

extension KeyStore: KeySource {}
extension FleetDirectory: FleetStore {}

/// The registry's models, versions, artifacts, aliases and audit log: what the registry service
/// stores (today the SQLite file in its SWITCHYARD_HOME; a PostgreSQL store implements the same)
/// and what an operator changes (the command line: the local store, or the service through its
/// client). `who` names the actor for the audit log where the store cannot tell (locally); the
/// service names the key instead.
public protocol RegistryStore: ModelSource {
    func versions(model: String?) throws(RegistryError) -> [ModelRegistry.Version]
    func aliases(model: String) throws(RegistryError) -> [(alias: String, version: Int)]
    func register(_ document: ModelDocument, who: String) throws(RegistryError) -> ModelRegistry.Registration
    func promote(model: String, version: Int, alias: String, who: String, expected: ModelRegistry.Expected?) throws(RegistryError) -> Int?
    func rollback(model: String, alias: String, who: String) throws(RegistryError) -> (from: Int, to: Int)
    /// Splits the alias over the route's versions (`ModelRegistry.setRoute`); returns where it pointed before.
    func setRoute(model: String, alias: String, route: AliasRoute, who: String) throws(RegistryError) -> Int?
    /// Stores a version's drift baseline (`ModelRegistry.setBaseline`).
    func setBaseline(model: String, version: Int, baseline: DriftBaseline, who: String) throws(RegistryError)
    func audit(model: String?, after: Int?, limit: Int) throws(RegistryError) -> [ModelRegistry.AuditEntry]
    /// Every alias of every model, and the revision they are at (the latest audit entry's id).
    func allAliases() throws(RegistryError) -> (revision: Int, aliases: [(model: String, alias: String, version: Int)])
    /// The revision `allAliases` would report.
    func revision() throws(RegistryError) -> Int
    /// The artifact (model document) stored under `sha256`, checked against it: 404 when absent,
    /// 500 when what is stored no longer matches.
    func artifact(sha256: String) throws(RegistryError) -> [UInt8]
}

extension ModelRegistry: RegistryStore {}

/// Creating, listing and revoking API keys: locally, or through the registry service (admin).
public protocol KeyAdministration: Sendable {
    func create(scope: Scope, name: String?, who: String) throws(RegistryError) -> (KeyStore.Key, String)
    func list() throws(RegistryError) -> [KeyStore.Key]
    func revoke(id: String) throws(RegistryError)
}

extension KeyStore: KeyAdministration {}
