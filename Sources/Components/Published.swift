import Synchronization

/// A value replaced now and then (a model, the key table) and read on every
/// request. Readers on event-loop threads keep their own copy and take the
/// lock only when the generation number has moved, so the request path costs
/// one relaxed atomic load. A reader that took a copy finishes with it even if
/// the value is replaced meanwhile.
///
/// Safety: `caches[i]` is touched only by the thread of event loop `i`.
package final class Published<Value: Sendable>: @unchecked Sendable {
    private let value: Mutex<(generation: Int, value: Value)>
    private let generation = Atomic<Int>(0)
    private let caches: UnsafeMutablePointer<(generation: Int, value: Value?)>
    private let loops: Int

    package init(_ initial: Value, loops: Int) {
        value = Mutex((0, initial))
        self.loops = loops
        caches = .allocate(capacity: loops)
        caches.initialize(repeating: (-1, nil), count: loops)
    }

    deinit {
        caches.deinitialize(count: loops)
        caches.deallocate()
    }

    /// Replaces the value; readers see it at their next read.
    package func publish(_ newValue: Value) {
        value.withLock { state in
            state.generation += 1
            state.value = newValue
            generation.store(state.generation, ordering: .releasing)
        }
    }

    /// The current value, from event loop `loop`'s thread.
    @inline(__always)
    package func read(loop: Int) -> Value {
        let g = generation.load(ordering: .acquiring)
        if caches[loop].generation == g, let cached = caches[loop].value { return cached }
        let (fresh, current) = value.withLock { ($0.generation, $0.value) }
        caches[loop] = (fresh, current)
        return current
    }

    /// Moves each time a value is published: a reader's derived cache is current while it is unchanged.
    @inline(__always)
    package var generationNow: Int { generation.load(ordering: .acquiring) }

    /// The current value, from any thread.
    package var current: Value { value.withLock { $0.value } }
}

/// One value per event loop, for buffers a loop reuses from request to
/// request. Each loop's value starts on a cache line of its own: values written on every request
/// (a sampler's count, the version that answered) would otherwise share a line between two loops'
/// cores, and each write would take it from the other.
///
/// Safety: `with(loop:)` runs only on event loop `loop`'s thread (or, before
/// the loops start, on the one thread standing in for it) and is not re-entered.
package final class LoopLocal<Value>: @unchecked Sendable {
    private let storage: UnsafeMutableRawPointer
    private let loops: Int
    /// Bytes from one loop's value to the next.
    private let stride = CacheLine.roundUp(MemoryLayout<Value>.stride)

    package init(loops: Int, _ make: () -> Value) {
        self.loops = loops
        storage = .allocate(byteCount: loops * stride, alignment: max(CacheLine.bytes, MemoryLayout<Value>.alignment))
        for i in 0..<loops { (storage + i * stride).initializeMemory(as: Value.self, to: make()) }
    }

    deinit {
        for i in 0..<loops { (storage + i * stride).assumingMemoryBound(to: Value.self).deinitialize(count: 1) }
        storage.deallocate()
    }

    @inline(__always)
    package func with<R>(loop: Int, _ body: (inout Value) throws -> R) rethrows -> R {
        try body(&(storage + loop * stride).assumingMemoryBound(to: Value.self).pointee)
    }
}

/// The size of a cache line, which per-loop values are aligned to (64 bytes on x86-64 and most arm64).
package enum CacheLine {
    package static let bytes = 64

    /// `size` rounded up to whole lines (at least one).
    @inline(__always)
    package static func roundUp(_ size: Int) -> Int { max(1, (size + bytes - 1) / bytes) * bytes }
}
