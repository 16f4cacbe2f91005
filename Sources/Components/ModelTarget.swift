import ControlProtocol
import Registry

/// What a component runs, from a model reference: `NAME@ALIAS` follows the alias, `NAME@N` pins
/// version N, and a bare `NAME` follows `production`, or pins the latest version when there is no
/// `production` alias (as the registry reads a bare name everywhere).
package struct ModelTarget: Sendable, Equatable {
    package var model: String
    /// The alias followed, or nil when a version is pinned.
    package var alias: String?
    /// The version the reference resolves to now.
    package var version: ModelRegistry.Version
    /// The alias's traffic split, when it has one (`version` is its main version).
    package var route: AliasRoute?

    package init(_ reference: String, in source: any ModelSource) throws(RegistryError) {
        let parts = reference.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        model = parts[0]
        (version, route) = try source.resolveRoute(reference)
        if parts.count == 2 {
            alias = Int(parts[1]) == nil ? parts[1] : nil
        } else {
            alias = version.aliases.contains("production") ? "production" : nil
        }
    }

    /// "following credit@production" or "pinned" — for load events.
    package var description: String { alias.map { "following \(model)@\($0)" } ?? "pinned to \(version.reference)" }
}
