import ControlProtocol
import Foundation
import HTTP
import JSON
import Registry
import Scoring
import Synchronization
import Telemetry

/// What a component runs, one mechanism for serve, batch and stream: the target (a followed
/// alias or a pinned version, from a reference as `ModelTarget` reads it), loading a version
/// through its `ModelSource` (the registry service's client caches the artifacts it loads), swaps
/// on request (one at a time; a failed swap keeps what runs), following the alias, and one shape
/// for status and for the answer to `POST /v1/model`.
///
/// `Loaded` is what the component makes of a version (a scorer; serve's warmed snapshot). `make`
/// builds it; `activate` hands each new one to the component (serve publishes it to its loops).
package final class ModelBinding<Loaded: Sendable>: Sendable {
    package typealias Current = (version: ModelVersion, loaded: Loaded)

    /// How a component words a change in its events.
    package struct Wording: Sendable {
        /// "serving", "scoring with": what it keeps doing when a swap fails.
        package var running: String
        /// When a change takes effect: "" (at once), "from the next micro-batch".
        package var effect: String

        package init(running: String, effect: String) {
            self.running = running
            self.effect = effect
        }
    }

    private let registry: any ModelSource
    private let events: EventLog
    private let wording: Wording
    private let make: @Sendable (ModelVersion, ModelDocument) throws -> Loaded
    private let activate: @Sendable (Current) -> Void
    private let state: Mutex<(model: String, alias: String?, current: Current?)>
    private let swapLock = Mutex<Void>(())
    private let lastFollowError = Mutex<String?>(nil)
    private let swapCount = Atomic<Int>(0)
    private let failedSwapCount = Atomic<Int>(0)

    /// Loads what `reference` names (`NAME@ALIAS` follows the alias, `NAME@N` pins version N, a
    /// bare `NAME` follows `production` or pins the latest version).
    package init(
        registry: any ModelSource, reference: String, events: EventLog, wording: Wording,
        make: @escaping @Sendable (ModelVersion, ModelDocument) throws -> Loaded,
        activate: @escaping @Sendable (Current) -> Void = { _ in }
    ) throws {
        self.registry = registry
        self.events = events
        self.wording = wording
        self.make = make
        self.activate = activate
        let target = try registryCall { () throws(RegistryError) in try ModelTarget(reference, in: registry) }
        state = Mutex((target.model, target.alias, nil))
        let loaded = try load(target.version)
        state.withLock { $0.current = loaded }
        activate(loaded)
        events.append("model", "loaded \(target.version.reference) (\(target.description))")
    }

    package var current: Current? { state.withLock { $0.current } }
    package var version: ModelVersion? { state.withLock { $0.current?.version } }
    /// The alias followed, or nil when a version is pinned.
    package var alias: String? { state.withLock { $0.alias } }
    package var swaps: Int { swapCount.load(ordering: .relaxed) }
    package var failedSwaps: Int { failedSwapCount.load(ordering: .relaxed) }

    private func load(_ version: ModelVersion) throws -> Current {
        let document = try registryCall { () throws(RegistryError) in try registry.document(version) }
        return (version, try make(version, document))
    }

    /// Runs `version` (unless it already does) and sets what is followed; one at a time.
    @discardableResult
    private func bind(_ version: ModelVersion, alias: String?, reason: String) throws -> (from: ModelVersion?, to: Current) {
        try swapLock.withLock { _ in
            let current = state.withLock { $0.current }
            if let current, current.version.isSame(as: version) {
                state.withLock { $0.alias = alias }
                return (current.version, current)
            }
            let next: Current
            do {
                next = try load(version)
            } catch {
                failedSwapCount.wrappingAdd(1, ordering: .relaxed)
                events.append("error", "swap to \(version.reference) failed, still \(wording.running) \(current?.version.reference ?? "nothing"): \(error)")
                throw error
            }
            state.withLock {
                $0.current = next
                $0.alias = alias
            }
            swapCount.wrappingAdd(1, ordering: .relaxed)
            activate(next)
            let effect = wording.effect.isEmpty ? "" : " " + wording.effect
            events.append("model", "swapped \(current?.version.reference ?? "none") → \(version.reference)\(effect): \(reason)")
            return (current?.version, next)
        }
    }

    /// `POST /v1/model`: `{"version": N}` pins N, `{"alias": "A"}` follows A. Answers
    /// a `SwapResult`; `takesEffect` says when, where that is not at once.
    package func swap(_ request: SwapRequest, by principal: Principal, takesEffect: String? = nil) -> HTTPResponse {
        let name = state.withLock { $0.model }
        let reference: String
        var follow: String?
        switch request {
        case .version(let n): reference = "\(name)@\(n)"
        case .alias(let a):
            reference = "\(name)@\(a)"
            follow = a
        }
        do {
            let version = try registryCall { () throws(RegistryError) in try registry.resolve(reference) }
            let moved = try bind(version, alias: follow, reason: "requested by \(principal.name)" + (follow.map { ", now following alias \($0)" } ?? ", pinned"))
            let result = SwapResult(previous: moved.from.map(ModelReference.init), model: ModelReference(moved.to.version),
                                    following: follow, takesEffect: takesEffect)
            return json(200, result.json)
        } catch let error as HTTPError {
            return error.response
        } catch {
            return .error(500, "\(error)")
        }
    }

    /// Follows the alias: runs what it points at now (called every second, and at once when the
    /// registry client hears of a move). A failure is reported once until it changes.
    package func follow() {
        let (name, alias) = state.withLock { ($0.model, $0.alias) }
        guard let alias else { return }
        do {
            let version = try registryCall { () throws(RegistryError) in try registry.resolve("\(name)@\(alias)") }
            if self.version.map({ !$0.isSame(as: version) }) ?? true { try bind(version, alias: alias, reason: "alias \(alias) moved in the registry") }
            lastFollowError.withLock { $0 = nil }
        } catch {
            let message = "\(error)"
            let repeated = lastFollowError.withLock { last in
                defer { last = message }
                return last == message
            }
            if !repeated { events.append("error", "following \(name)@\(alias): \(message)") }
        }
    }

    /// `model` and `following` for /v1/status.
    package func describe(_ status: inout ComponentStatus) {
        let (alias, current) = state.withLock { ($0.alias, $0.current) }
        status.model = current.map { ModelReference($0.version) }
        status.following = alias
    }
}
