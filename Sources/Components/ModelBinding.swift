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
/// An alias may split traffic over several versions (`AliasRoute`). A binding made with
/// `splits: true` (serve) loads every version of the split and hands them over together; the
/// others run the split's main version (the largest weight) and say so in status.
///
/// `Loaded` is what the component makes of a version (a scorer; serve's warmed snapshot). `make`
/// builds it; `activate` hands each new one to the component (serve publishes it to its loops).
package final class ModelBinding<Loaded: Sendable>: Sendable {
    package typealias Current = (version: ModelVersion, loaded: Loaded)

    /// A traffic split as it runs: every arm loaded, in the route's order, and the shadow version.
    package struct Split: Sendable {
        package var route: AliasRoute
        package var arms: [Current]
        package var shadow: Current?
    }

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

    private struct State {
        var model: String
        var alias: String?
        var current: Current?
        /// The followed alias's split (whether or not this binding runs it).
        var route: AliasRoute?
        var split: Split?
    }

    private let registry: any ModelSource
    private let events: EventLog
    private let wording: Wording
    private let splits: Bool
    private let make: @Sendable (ModelVersion, ModelDocument) throws -> Loaded
    private let activate: @Sendable (Current, Split?) -> Void
    private let state: Mutex<State>
    private let swapLock = Mutex<Void>(())
    private let lastFollowError = Mutex<String?>(nil)
    private let lastSwapFailure = Mutex<String?>(nil)
    private let swapCount = Atomic<Int>(0)
    private let failedSwapCount = Atomic<Int>(0)

    /// Loads what `reference` names (`NAME@ALIAS` follows the alias, `NAME@N` pins version N, a
    /// bare `NAME` follows `production` or pins the latest version). With `splits`, an alias's
    /// traffic split is loaded and activated whole.
    package init(
        registry: any ModelSource, reference: String, events: EventLog, wording: Wording, splits: Bool = false,
        make: @escaping @Sendable (ModelVersion, ModelDocument) throws -> Loaded,
        activate: @escaping @Sendable (Current, Split?) -> Void = { _, _ in }
    ) throws {
        self.registry = registry
        self.events = events
        self.wording = wording
        self.splits = splits
        self.make = make
        self.activate = activate
        let target = try registryCall { () throws(RegistryError) in try ModelTarget(reference, in: registry) }
        state = Mutex(State(model: target.model, alias: target.alias))
        try bind(target.version, route: target.alias == nil ? nil : target.route, alias: target.alias, reason: nil)
        events.append("model", "loaded \(target.version.reference) (\(target.description))")
    }

    package var current: Current? { state.withLock { $0.current } }
    package var version: ModelVersion? { state.withLock { $0.current?.version } }
    /// The alias followed, or nil when a version is pinned.
    package var alias: String? { state.withLock { $0.alias } }
    /// The split this binding runs (only with `splits`).
    package var split: Split? { state.withLock { $0.split } }
    package var swaps: Int { swapCount.load(ordering: .relaxed) }
    package var failedSwaps: Int { failedSwapCount.load(ordering: .relaxed) }

    private func load(_ version: ModelVersion) throws -> Current {
        let document = try registryCall { () throws(RegistryError) in try registry.document(version) }
        return (version, try make(version, document))
    }

    /// Runs `version` — and, with `splits`, every version of `route` — unless it already does,
    /// and sets what is followed; one at a time. `reason` nil: the first load (no swap event).
    @discardableResult
    private func bind(_ version: ModelVersion, route: AliasRoute?, alias: String?, reason: String?) throws -> (from: ModelVersion?, to: Current) {
        try swapLock.withLock { _ in
            let (current, currentSplit, currentRoute) = state.withLock { ($0.current, $0.split, $0.route) }
            let wantSplit = splits ? route : nil
            let sameVersion = current.map { $0.version.isSame(as: version) } ?? false
            if let current, sameVersion, currentSplit?.route == wantSplit {
                state.withLock {
                    $0.alias = alias
                    $0.route = route
                }
                if route != currentRoute, let reason {
                    events.append("model", route.map { "\(alias ?? "the alias") now splits \($0.description); this component runs its main version \(version.reference): \(reason)" }
                        ?? "\(alias ?? "the alias") no longer splits traffic: \(reason)")
                }
                return (current.version, current)
            }
            let next: Current
            var split: Split?
            do {
                // What runs already is reused: a weight change loads nothing.
                var loaded: [Current] = (current.map { [$0] } ?? []) + (currentSplit?.arms ?? []) + (currentSplit?.shadow.map { [$0] } ?? [])
                func obtain(_ v: ModelVersion) throws -> Current {
                    if let have = loaded.first(where: { $0.version.isSame(as: v) }) { return have }
                    let made = try load(v)
                    loaded.append(made)
                    return made
                }
                next = try obtain(version)
                if let wantSplit {
                    let name = version.model
                    func obtainNumber(_ number: Int) throws -> Current {
                        if number == version.version { return next }
                        return try obtain(try registryCall { () throws(RegistryError) in try registry.resolve("\(name)@\(number)") })
                    }
                    split = Split(route: wantSplit, arms: try wantSplit.arms.map { try obtainNumber($0.version) },
                                  shadow: try wantSplit.shadow.map { try obtainNumber($0.version) })
                }
            } catch {
                failedSwapCount.wrappingAdd(1, ordering: .relaxed)
                let what = wantSplit.map { "the split \($0.description)" } ?? version.reference
                sayOnce(lastSwapFailure, "swap to \(what) failed, still \(wording.running) \(current?.version.reference ?? "nothing"): \(error)")
                throw error
            }
            sayOnce(lastSwapFailure, nil)
            state.withLock {
                $0.current = next
                $0.split = split
                $0.alias = alias
                $0.route = route
            }
            activate(next, split)
            guard let reason else { return (current?.version, next) }
            swapCount.wrappingAdd(1, ordering: .relaxed)
            let effect = wording.effect.isEmpty ? "" : " " + wording.effect
            if !sameVersion {
                events.append("model", "swapped \(current?.version.reference ?? "none") → \(version.reference)\(effect): \(reason)")
            }
            if split?.route != currentSplit?.route {
                events.append("model", split.map { "splitting \($0.route.description)\(effect): \(reason)" } ?? "traffic split ended, all to \(version.reference)\(effect): \(reason)")
            } else if route != currentRoute, let route {
                events.append("model", "\(alias ?? "the alias") splits \(route.description); this component runs its main version \(version.reference)")
            }
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
            let (version, route) = try registryCall { () throws(RegistryError) in try registry.resolveRoute(reference) }
            let moved = try bind(version, route: route, alias: follow,
                                 reason: "requested by \(principal.name)" + (follow.map { ", now following alias \($0)" } ?? ", pinned"))
            let result = SwapResult(previous: moved.from.map(ModelReference.init), model: ModelReference(moved.to.version),
                                    following: follow, takesEffect: takesEffect)
            return json(200, result.json)
        } catch let error as HTTPError {
            return error.response
        } catch {
            return .error(500, "\(error)")
        }
    }

    /// Follows the alias: runs what it points at now, and its split (called every second, and at
    /// once when the registry client hears of a move). A failure is reported once until it changes.
    package func follow() {
        let (name, alias, running, route) = state.withLock { ($0.model, $0.alias, $0.current?.version, $0.route) }
        guard let alias else { return }
        do {
            let target = try registryCall { () throws(RegistryError) in try registry.resolveRoute("\(name)@\(alias)") }
            if running.map({ !$0.isSame(as: target.version) }) ?? true || target.route != route {
                try bind(target.version, route: target.route, alias: alias, reason: "alias \(alias) moved in the registry")
            }
            sayOnce(lastFollowError, nil)
        } catch {
            sayOnce(lastFollowError, "following \(name)@\(alias): \(error)")
        }
    }

    /// Appends `message` as an error event unless `slot` said it last (following retries each
    /// second: one failure is said once); nil clears the slot after a success.
    private func sayOnce(_ slot: borrowing Mutex<String?>, _ message: String?) {
        let repeated = slot.withLock { last in
            defer { last = message }
            return last == message
        }
        if let message, !repeated { events.append("error", message) }
    }

    /// `model`, `following` and `route` for /v1/status.
    package func describe(_ status: inout ComponentStatus) {
        let (alias, current, route) = state.withLock { ($0.alias, $0.current, $0.route) }
        status.model = current.map { ModelReference($0.version) }
        status.following = alias
        status.route = route
    }
}
