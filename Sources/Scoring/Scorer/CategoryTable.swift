#if canImport(Glibc)
import Glibc
#endif

/// Category value → code lookup on raw UTF-8 bytes: no `String` is made for a
/// CSV cell. Values match byte for byte (code points, as scikit-learn compares
/// them), so "é" and "e\u{301}" are different categories.
package struct CategoryTable: Sendable {
    /// Owns the table's memory; `view` points into it.
    private let box: Box
    /// The table as plain pointers, for hot loops: copying it touches no reference count.
    package let view: View

    package init(_ values: [String]) {
        var storage: [UInt8] = []
        var offsets = [0]
        for value in values {
            storage.append(contentsOf: value.utf8)
            offsets.append(storage.count)
        }
        var capacity = 8
        while capacity < values.count * 2 { capacity <<= 1 }
        var slots = [Int32](repeating: -1, count: capacity)
        for i in values.indices {
            let hash = storage.withUnsafeBytes {
                View.hash(UnsafeRawBufferPointer(rebasing: $0[offsets[i]..<offsets[i + 1]]))
            }
            var slot = hash & (capacity - 1)
            while slots[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Int32(i)
        }
        box = Box(storage: storage, offsets: offsets, slots: slots)
        view = View(storage: UnsafePointer(box.storage), offsets: UnsafePointer(box.offsets), slots: UnsafePointer(box.slots), mask: capacity - 1)
    }

    /// The code of `bytes`, or -1 when it is not one of the values.
    @inline(__always)
    package func code(of bytes: UnsafeRawBufferPointer) -> Int32 { view.code(of: bytes) }

    /// The code of `text`, or -1.
    package func code(of text: String) -> Int32 {
        var text = text
        return text.withUTF8 { view.code(of: UnsafeRawBufferPointer($0)) }
    }

    /// Safety: points into memory its table's `Box` owns and never changes; valid while the table
    /// (its scorer) lives.
    package struct View: @unchecked Sendable {
        let storage: UnsafePointer<UInt8>
        let offsets: UnsafePointer<Int>  // value i is storage[offsets[i]..<offsets[i + 1]]
        let slots: UnsafePointer<Int32>  // open addressing; -1 is empty
        let mask: Int

        /// The code of `bytes`, or -1 when it is not one of the values.
        @inline(__always)
        package func code(of bytes: UnsafeRawBufferPointer) -> Int32 {
            var slot = Self.hash(bytes) & mask
            while true {
                let candidate = slots[slot]
                if candidate < 0 { return -1 }
                let start = offsets[Int(candidate)]
                let length = offsets[Int(candidate) + 1] - start
                if length == bytes.count && (length == 0 || memcmp(storage + start, bytes.baseAddress!, length) == 0) {
                    return candidate
                }
                slot = (slot + 1) & mask
            }
        }

        /// FNV-1a: short keys, no allocation.
        @inline(__always)
        static func hash(_ bytes: UnsafeRawBufferPointer) -> Int {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in bytes {
                h = (h ^ UInt64(b)) &* 0x100_0000_01b3
            }
            return Int(truncatingIfNeeded: h ^ (h >> 29))
        }
    }

    /// The table's memory, allocated once and freed with the last copy of the table.
    private final class Box: @unchecked Sendable {
        let storage: UnsafeMutablePointer<UInt8>
        let offsets: UnsafeMutablePointer<Int>
        let slots: UnsafeMutablePointer<Int32>

        init(storage: [UInt8], offsets: [Int], slots: [Int32]) {
            func copy<T>(_ array: [T]) -> UnsafeMutablePointer<T> {
                let p = UnsafeMutablePointer<T>.allocate(capacity: max(1, array.count))
                _ = UnsafeMutableBufferPointer(start: p, count: array.count).initialize(from: array)
                return p
            }
            self.storage = copy(storage)
            self.offsets = copy(offsets)
            self.slots = copy(slots)
        }

        deinit {
            storage.deallocate()
            offsets.deallocate()
            slots.deallocate()
        }
    }
}
