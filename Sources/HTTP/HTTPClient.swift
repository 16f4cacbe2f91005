import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client on one keep-alive connection, with send and
/// receive timeouts. For the console, tests and the load generator.
public final class HTTPClient {
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public let host: String
    public let port: Int
    private var fd: Int32 = -1
    private let timeout: Double
    private var buffer: [UInt8] = []

    public init(host: String = "127.0.0.1", port: Int, timeout: Double = 5) {
        self.host = host
        self.port = port
        self.timeout = timeout
    }

    deinit { close() }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        buffer.removeAll()
    }

    /// Connects if not connected.
    public func connect() throws(IOError) {
        guard fd < 0 else { return }
        let s = try connectTCP(host: host, port: port, timeout: timeout)
        fd = s
    }

    /// Sends one request and reads its response; reconnects once if a kept-alive connection was closed.
    public func request(
        _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []
    ) throws(IOError) -> Response {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let bytes = Array(head.utf8) + body
        for attempt in 0..<2 {
            let reused = fd >= 0
            try connect()
            do {
                try sendRaw(bytes)
                return try readResponse()
            } catch {
                close()
                if !reused || attempt == 1 { throw error }
            }
        }
        throw IOError(errno: ECONNRESET, function: "request")
    }

    /// Writes bytes as they are.
    public func sendRaw(_ bytes: [UInt8]) throws(IOError) {
        try connect()
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError(errno: errno, function: "send")
            }
            offset += n
        }
    }

    /// Reads one response (Content-Length, chunked, or until the server closes).
    public func readResponse() throws(IOError) -> Response {
        var headEnd: Int?
        while true {
            if let end = findHeadEnd() {
                headEnd = end
                break
            }
            guard try fill() else { throw IOError(errno: ECONNRESET, function: "recv (closed before a response)") }
        }
        let head = String(decoding: buffer[..<headEnd!], as: UTF8.self)
        buffer.removeFirst(headEnd! + 4)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw IOError(errno: EPROTO, function: "malformed status line") }
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        if status == 100 { return try readResponse() }
        var body: [UInt8] = []
        if let lengthText = headers["Content-Length"], let length = Int(lengthText) {
            while buffer.count < length {
                guard try fill() else { throw IOError(errno: ECONNRESET, function: "recv (body cut short)") }
            }
            body = Array(buffer[..<length])
            buffer.removeFirst(length)
        } else {
            while try fill() {}
            body = buffer
            buffer.removeAll()
        }
        if headers["Connection"]?.lowercased() == "close" { close() }
        return Response(status: status, headers: headers, body: body)
    }

    /// Everything until the server closes the connection or the timeout passes.
    public func readUntilClosed() -> [UInt8] {
        while (try? fill()) == true {}
        let out = buffer
        buffer.removeAll()
        return out
    }

    private func findHeadEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i
        }
        return nil
    }

    /// Reads more; false at end of stream.
    private func fill() throws(IOError) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffer.append(contentsOf: chunk[..<n])
                return true
            }
            if n == 0 { return false }
            if errno == EINTR { continue }
            throw IOError(errno: errno, function: "recv")
        }
    }
}

/// A blocking TCP connection to `host:port` (IPv4; "localhost" is 127.0.0.1) with
/// send and receive timeouts and Nagle off. Returns the socket.
public func connectTCP(host: String, port: Int, timeout: Double) throws(IOError) -> Int32 {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &address.sin_addr) == 1 else {
        throw IOError(errno: EINVAL, function: "inet_pton(\(host))")
    }
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard s >= 0 else { throw IOError(errno: errno, function: "socket") }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var one: Int32 = 1
    setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
        let e = errno
        Glibc.close(s)
        throw IOError(errno: e, function: "connect(\(host):\(port))")
    }
    return s
}
