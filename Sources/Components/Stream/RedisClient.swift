import CSystem
import Foundation
import HTTP

#if canImport(Glibc)
import Glibc
#endif

/// A reply in the Redis serialization protocol (RESP2).
package indirect enum RESP: Sendable, Equatable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8]?)
    case array([RESP]?)

    package var text: String? {
        switch self {
        case .simple(let s): s
        case .bulk(let b?): String(decoding: b, as: UTF8.self)
        case .integer(let i): String(i)
        default: nil
        }
    }

    package var integer: Int? {
        switch self {
        case .integer(let i): i
        default: text.flatMap { Int($0) }
        }
    }

    package var elements: [RESP] {
        if case .array(let items?) = self { return items }
        return []
    }

    /// An array of alternating names and values (XINFO replies, entry fields) as a dictionary.
    package var fields: [String: RESP] {
        let items = elements
        var out: [String: RESP] = [:]
        for i in stride(from: 0, to: items.count - 1, by: 2) { out[items[i].text ?? ""] = items[i + 1] }
        return out
    }
}

/// Why a Redis command failed: the server's error reply, or the connection.
package struct RedisError: Error, Sendable, CustomStringConvertible {
    package var description: String
    package init(_ message: String) { description = message }
}

/// A blocking Redis client on one connection, speaking RESP over TCP (no
/// client library): commands, and pipelines of commands sent in one write.
/// A connection that fails is closed, and the next command connects again, so
/// a restarted redis-server is picked up by whoever retries (with backoff).
package final class RedisClient {
    package let host: String
    package let port: Int
    private var fd: Int32 = -1
    private var reader = RESPReader()
    private let timeout: Double
    private var readTimeout: Double?
    /// Connections made so far: a change tells the caller the server may have restarted.
    package private(set) var connections = 0

    /// Connects; `timeout` bounds each read and write (a blocking read is sized to its BLOCK).
    package init(host: String, port: Int, timeout: Double = 5) throws {
        self.host = host
        self.port = port
        self.timeout = timeout
        try connect()
    }

    deinit { if fd >= 0 { close(fd) } }

    private func connect() throws {
        do {
            fd = try connectTCP(host: host, port: port, timeout: timeout)
        } catch {
            throw RedisError("cannot reach Redis at \(host):\(port): \(error); is redis-server running?")
        }
        reader = RESPReader()
        connections += 1
        if let readTimeout { setReadTimeout(readTimeout) }
    }

    /// Drops a connection whose state is unknown (a failed write or read, a broken reply).
    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        reader = RESPReader()
    }

    /// Runs one command; an error reply throws.
    @discardableResult
    package func command(_ arguments: [String]) throws -> RESP {
        try pipeline([arguments.map { Array($0.utf8) }])[0].get()
    }

    /// Sends the commands in one write and reads one reply each.
    package func pipeline(_ commands: [[[UInt8]]]) throws -> [Result<RESP, RedisError>] {
        var out: [UInt8] = []
        for arguments in commands { Self.encode(arguments, into: &out) }
        if fd < 0 { try connect() }
        do {
            try send(out)
            var replies: [Result<RESP, RedisError>] = []
            replies.reserveCapacity(commands.count)
            for _ in commands {
                let reply = try readReply()
                if case .error(let message) = reply { replies.append(.failure(RedisError("Redis: \(message)"))) } else { replies.append(.success(reply)) }
            }
            return replies
        } catch {
            disconnect()
            throw error
        }
    }

    /// `*N\r\n$len\r\narg\r\n…`
    package static func encode(_ arguments: [[UInt8]], into out: inout [UInt8]) {
        out.append(0x2A)
        out.append(contentsOf: String(arguments.count).utf8)
        out.append(contentsOf: [0x0D, 0x0A])
        for argument in arguments {
            out.append(0x24)
            out.append(contentsOf: String(argument.count).utf8)
            out.append(contentsOf: [0x0D, 0x0A])
            out.append(contentsOf: argument)
            out.append(contentsOf: [0x0D, 0x0A])
        }
    }

    private func send(_ bytes: [UInt8]) throws {
        var offset = 0
        try bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw RedisError("writing to Redis at \(host):\(port): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }

    /// Sets the receive timeout (a BLOCK command waits longer than the default).
    package func setReadTimeout(_ seconds: Double) {
        readTimeout = seconds
        guard fd >= 0 else { return }
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Appends what the socket has (up to 64 KiB) to `buffer`; the reader calls it when a reply is incomplete.
    private func fill(_ buffer: inout [UInt8]) throws {
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: 1 << 16))
        var n: Int
        repeat {
            n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + old, 1 << 16, 0) }
        } while n < 0 && errno == EINTR
        buffer.removeLast((1 << 16) - max(n, 0))
        if n == 0 { throw RedisError("Redis at \(host):\(port) closed the connection") }
        if n < 0 { throw RedisError("reading from Redis at \(host):\(port): \(String(cString: strerror(errno)))") }
    }

    private func readReply() throws -> RESP {
        try reader.reply { try fill(&$0) }
    }
}

/// Reads RESP2 replies from bytes that arrive in pieces: `more` is called to append bytes
/// whenever a reply is not complete yet. Every length and count a server sends is checked
/// before it is used (Redis's own limits: 512 MiB bulk strings), so a broken or hostile
/// peer gets an error, never a trap or an allocation it chose.
package struct RESPReader {
    package private(set) var buffer: [UInt8] = []
    private var position = 0

    package static let maxBulkBytes = 512 << 20
    package static let maxElements = 1 << 24
    package static let maxDepth = 64
    package static let maxLineBytes = 64 << 10

    package init() {}

    /// The next reply.
    package mutating func reply(more: (inout [UInt8]) throws -> Void) throws -> RESP {
        compact()
        return try value(depth: 0, more: more)
    }

    /// Drops consumed bytes once they are most of the buffer.
    private mutating func compact() {
        if position > 0 && position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        } else if position > 1 << 20 {
            buffer.removeFirst(position)
            position = 0
        }
    }

    private mutating func line(more: (inout [UInt8]) throws -> Void) throws -> ArraySlice<UInt8> {
        var i = position
        while true {
            while i + 1 < buffer.count {
                if buffer[i] == 0x0D && buffer[i + 1] == 0x0A {
                    let line = buffer[position..<i]
                    position = i + 2
                    return line
                }
                i += 1
            }
            guard buffer.count - position <= Self.maxLineBytes else {
                throw RedisError("a reply line from Redis longer than \(Self.maxLineBytes) bytes")
            }
            try more(&buffer)
        }
    }

    /// A decimal count or length, within `range`.
    private func integer(_ text: ArraySlice<UInt8>, _ what: String, _ range: ClosedRange<Int>) throws -> Int {
        guard text.count <= 20, let n = Int(String(decoding: text, as: UTF8.self)), range.contains(n) else {
            throw RedisError("a bad \(what) from Redis: \(String(decoding: text.prefix(24), as: UTF8.self))")
        }
        return n
    }

    private mutating func value(depth: Int, more: (inout [UInt8]) throws -> Void) throws -> RESP {
        guard depth <= Self.maxDepth else { throw RedisError("a reply from Redis nested deeper than \(Self.maxDepth)") }
        let line = try line(more: more)
        guard let kind = line.first else { throw RedisError("an empty reply line from Redis") }
        let rest = line.dropFirst()
        switch kind {
        case 0x2B: return .simple(String(decoding: rest, as: UTF8.self))
        case 0x2D: return .error(String(decoding: rest, as: UTF8.self))
        case 0x3A: return .integer(try integer(rest, "integer", Int.min...Int.max))
        case 0x24:
            let length = try integer(rest, "bulk length", -1...Self.maxBulkBytes)
            if length < 0 { return .bulk(nil) }
            while buffer.count - position < length + 2 { try more(&buffer) }
            guard buffer[position + length] == 0x0D && buffer[position + length + 1] == 0x0A else {
                throw RedisError("a bulk string from Redis not followed by CRLF")
            }
            let bytes = Array(buffer[position..<(position + length)])
            position += length + 2
            return .bulk(bytes)
        case 0x2A:
            let count = try integer(rest, "array length", -1...Self.maxElements)
            if count < 0 { return .array(nil) }
            var items: [RESP] = []
            items.reserveCapacity(min(count, 1024))  // grown by what arrives, not by what was announced
            for _ in 0..<count { items.append(try value(depth: depth + 1, more: more)) }
            return .array(items)
        default:
            throw RedisError("an unexpected reply from Redis starting with byte \(kind)")
        }
    }
}

/// `redis://HOST:PORT/STREAM?group=G&consumer=C&maxlen=N`.
package struct RedisAddress: Sendable, Equatable, CustomStringConvertible {
    package var host: String
    package var port: Int
    package var stream: String
    package var parameters: [String: String]

    package init(_ text: String) throws(RedisError) {
        guard text.hasPrefix("redis://"), let components = URLComponents(string: text), let host = components.host else {
            throw RedisError("expected redis://HOST:PORT/STREAM, got \(text)")
        }
        self.host = host
        port = components.port ?? 6379
        stream = String(components.path.drop { $0 == "/" })
        guard !stream.isEmpty else { throw RedisError("\(text) names no stream: write redis://HOST:PORT/STREAM") }
        var parameters: [String: String] = [:]
        for item in components.queryItems ?? [] { parameters[item.name] = item.value ?? "" }
        self.parameters = parameters
    }

    package var description: String { "redis://\(host):\(port)/\(stream)" }
}
