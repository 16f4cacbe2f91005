#if canImport(Glibc)
import Glibc
#endif

/// Category value → code lookup on raw UTF-8 bytes: no `String` is made for a
/// CSV cell. Values match byte for byte (code points, as scikit-learn compares
/// them), so "é" and "e\u{301}" are different categories.
package struct CategoryTable: Sendable {
    private let storage: [UInt8]
    private let offsets: [Int]  // value i is storage[offsets[i]..<offsets[i + 1]]
    private let slots: [Int32]  // open addressing; -1 is empty
    private let mask: Int

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
                Self.hash(UnsafeRawBufferPointer(rebasing: $0[offsets[i]..<offsets[i + 1]]))
            }
            var slot = hash & (capacity - 1)
            while slots[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Int32(i)
        }
        self.storage = storage
        self.offsets = offsets
        self.slots = slots
        self.mask = capacity - 1
    }

    /// The code of `bytes`, or -1 when it is not one of the values.
    @inline(__always)
    package func code(of bytes: UnsafeRawBufferPointer) -> Int32 {
        var slot = Self.hash(bytes) & mask
        return storage.withUnsafeBytes { store in
            while true {
                let candidate = slots[slot]
                if candidate < 0 { return -1 }
                let start = offsets[Int(candidate)]
                let length = offsets[Int(candidate) + 1] - start
                if length == bytes.count
                    && (length == 0 || memcmp(store.baseAddress! + start, bytes.baseAddress!, length) == 0)
                {
                    return candidate
                }
                slot = (slot + 1) & mask
            }
        }
    }

    /// The code of `text`, or -1.
    package func code(of text: String) -> Int32 {
        var text = text
        return text.withUTF8 { code(of: UnsafeRawBufferPointer($0)) }
    }

    /// FNV-1a: short keys, no allocation.
    @inline(__always)
    private static func hash(_ bytes: UnsafeRawBufferPointer) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h = (h ^ UInt64(b)) &* 0x100_0000_01b3
        }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }
}
