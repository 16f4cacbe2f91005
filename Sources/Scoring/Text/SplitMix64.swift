#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64: a small, fast, fully specified generator. The credit fixture and
/// the train/holdout split are reproducible from a seed on any machine, and
/// fixtures/sklearn_reference.py reimplements it in a few lines.
package struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    package init(seed: UInt64) { state = seed }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// The finalizer on its own: a stateless hash of one 64-bit value.
    package static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    package mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal (Box–Muller; the second value is discarded to keep the stream simple).
    package mutating func normal() -> Double {
        let u1 = 1 - uniform()  // (0, 1]
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// Poisson by Knuth's product method (small means only).
    package mutating func poisson(_ mean: Double) -> Int {
        let limit = exp(-mean)
        var k = 0
        var p = uniform()
        while p > limit {
            k += 1
            p *= uniform()
        }
        return k
    }
}

