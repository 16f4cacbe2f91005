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

extension ModelRegistry: ModelSource {}
extension KeyStore: KeySource {}
extension FleetDirectory: FleetRecorder {}
