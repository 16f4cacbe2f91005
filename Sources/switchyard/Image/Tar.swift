import Foundation
import Scoring

#if canImport(Glibc)
import Glibc
#endif

/// A POSIX ustar archive written straight to a file, hashed as it is written (an OCI blob's
/// digest). Deterministic: entries carry the same time, no owner names, and the caller's order.
struct TarWriter {
    private let handle: FileHandle
    private var hasher = SHA256()
    private(set) var size = 0
    /// Every entry's modification time (the build's fixed epoch, so equal inputs give equal bytes).
    let modified: Int

    init(path: String, modified: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CommandError("cannot create \(path)") }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        self.modified = modified
    }

    struct Owner {
        var uid: Int
        var gid: Int
        static let root = Owner(uid: 0, gid: 0)
    }

    mutating func directory(_ path: String, mode: Int = 0o755, owner: Owner = .root) throws {
        try header(path.hasSuffix("/") ? path : path + "/", size: 0, mode: mode, type: "5", owner: owner)
    }

    mutating func file(_ path: String, bytes: [UInt8], mode: Int = 0o644, owner: Owner = .root) throws {
        try header(path, size: bytes.count, mode: mode, type: "0", owner: owner)
        try write(bytes)
        try pad(bytes.count)
    }

    /// A file copied from `source` in 1 MiB pieces; its size is read first and checked at the end.
    mutating func file(_ path: String, copying source: String, mode: Int = 0o644, owner: Owner = .root) throws {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: source), let size = attributes[.size] as? Int,
              let input = FileHandle(forReadingAtPath: source) else { throw CommandError("cannot read \(source)") }
        defer { try? input.close() }
        try header(path, size: size, mode: mode, type: "0", owner: owner)
        var copied = 0
        while copied < size {
            let piece = input.readData(ofLength: min(1 << 20, size - copied))
            if piece.isEmpty { break }
            try write([UInt8](piece))
            copied += piece.count
        }
        guard copied == size else { throw CommandError("\(source) changed while it was being copied (\(copied) of \(size) bytes)") }
        try pad(size)
    }

    /// Two zero blocks end the archive; returns its sha256 (hex) and closes the file.
    mutating func finish() throws -> String {
        try write([UInt8](repeating: 0, count: 1024))
        try handle.synchronize()
        try handle.close()
        return SHA256.hexString(hasher.finalize())
    }

    private mutating func header(_ path: String, size: Int, mode: Int, type: Character, owner: Owner) throws {
        var block = [UInt8](repeating: 0, count: 512)
        let name = Array(path.utf8)
        if name.count <= 100 {
            block.replaceSubrange(0..<name.count, with: name)
        } else {
            // ustar splits a long path at a slash: up to 155 bytes of prefix, up to 100 of name.
            guard let cut = name.indices.last(where: { name[$0] == UInt8(ascii: "/") && $0 <= 155 && name.count - $0 - 1 <= 100 }) else {
                throw CommandError("the path \(path) is too long for a tar archive")
            }
            block.replaceSubrange(0..<(name.count - cut - 1), with: name[(cut + 1)...])
            block.replaceSubrange(345..<(345 + cut), with: name[..<cut])
        }
        func octal(_ value: Int, at offset: Int, width: Int) {
            let digits = Array(String(value, radix: 8).utf8)
            let padded = [UInt8](repeating: UInt8(ascii: "0"), count: max(0, width - 1 - digits.count)) + digits
            block.replaceSubrange(offset..<(offset + padded.count), with: padded)
        }
        guard size < 0o77777777777 else { throw CommandError("\(path) is too large for a tar archive") }
        octal(mode, at: 100, width: 8)
        octal(owner.uid, at: 108, width: 8)
        octal(owner.gid, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(modified, at: 136, width: 12)
        block[156] = type.asciiValue!
        block.replaceSubrange(257..<263, with: Array("ustar\0".utf8))
        block.replaceSubrange(263..<265, with: Array("00".utf8))
        block.replaceSubrange(148..<156, with: Array("        ".utf8))
        let sum = block.reduce(0) { $0 + Int($1) }
        octal(sum, at: 148, width: 7)  // six digits, a NUL, a space
        block[154] = 0
        block[155] = UInt8(ascii: " ")
        try write(block)
    }

    private mutating func pad(_ size: Int) throws {
        let rest = (512 - size % 512) % 512
        if rest > 0 { try write([UInt8](repeating: 0, count: rest)) }
    }

    private mutating func write(_ bytes: [UInt8]) throws {
        bytes.withUnsafeBytes { hasher.update($0) }
        try handle.write(contentsOf: bytes)
        size += bytes.count
    }
}
