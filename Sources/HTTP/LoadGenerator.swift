import CSystem
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A closed-loop HTTP/1.1 load generator on one thread: `connections`
/// keep-alive connections to 127.0.0.1, each sending the same request again as
/// soon as the previous response is complete, for `duration` seconds. Every
/// request's latency (send to last response byte) is kept. Bounded in time and
/// count; loopback only.
package enum LoadGenerator {
    package struct Result: Sendable {
        package var requests = 0
        /// Responses whose status was not 2xx.
        package var failed = 0
        /// Connections that broke.
        package var broken = 0
        package var seconds = 0.0
        package var latencies: [UInt64] = []  // sorted, ns

        package var rate: Double { Double(requests) / max(seconds, 1e-9) }
        package func quantile(_ q: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            return Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))])
        }
    }

    private final class Slot {
        let fd: Int32
        var sentAt: UInt64 = 0
        var buffer: [UInt8] = []
        var open = true
        init(fd: Int32) { self.fd = fd }
    }

    package static func run(port: Int, request: [UInt8], connections: Int, duration: Double, maximumRequests: Int = 50_000_000) -> Result {
        var result = Result()
        let epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        defer { close(epfd) }
        var slots: [Int32: Slot] = [:]
        for _ in 0..<connections {
            guard let fd = connect(port: port) else {
                result.broken += 1
                continue
            }
            var event = epoll_event()
            event.events = UInt32(EPOLLIN.rawValue)
            event.data.fd = fd
            epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event)
            slots[fd] = Slot(fd: fd)
        }
        result.latencies.reserveCapacity(1 << 20)
        let start = csystem_monotonic_ns()
        let deadline = start + UInt64(duration * 1e9)
        for slot in slots.values { send(slot, request, &result) }
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var chunk = [UInt8](repeating: 0, count: 65536)
        var outstanding = slots.values.filter(\.open).count
        while outstanding > 0 {
            let now = csystem_monotonic_ns()
            if now > deadline + 2_000_000_000 { break }  // a stuck server cannot hold the run
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, 256, 100) }
            for i in 0..<max(0, Int(n)) {
                guard let slot = slots[events[i].data.fd], slot.open else { continue }
                let got = chunk.withUnsafeMutableBytes { recv(slot.fd, $0.baseAddress, $0.count, 0) }
                if got <= 0 {
                    if got < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                    slot.open = false
                    result.broken += 1
                    outstanding -= 1
                    continue
                }
                slot.buffer.append(contentsOf: chunk[..<got])
                while let (status, length) = completeResponse(slot.buffer) {
                    slot.buffer.removeFirst(length)
                    let done = csystem_monotonic_ns()
                    result.latencies.append(done - slot.sentAt)
                    result.requests += 1
                    if status < 200 || status >= 300 { result.failed += 1 }
                    if done < deadline && result.requests < maximumRequests {
                        send(slot, request, &result)
                    } else {
                        slot.open = false
                        outstanding -= 1
                    }
                }
            }
        }
        result.seconds = Double(csystem_monotonic_ns() - start) / 1e9
        for slot in slots.values { close(slot.fd) }
        result.latencies.sort()
        return result
    }

    private static func send(_ slot: Slot, _ request: [UInt8], _ result: inout Result) {
        slot.sentAt = csystem_monotonic_ns()
        var offset = 0
        while offset < request.count {
            let n = request.withUnsafeBytes { Glibc.send(slot.fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                slot.open = false
                result.broken += 1
                return
            }
            offset += n
        }
    }

    /// (status, total length) of the first complete response in `buffer`.
    private static func completeResponse(_ buffer: [UInt8]) -> (Int, Int)? {
        guard buffer.count >= 16 else { return nil }
        var headEnd = -1
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            headEnd = i
            break
        }
        guard headEnd >= 0 else { return nil }
        let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
        let status = Int(head.dropFirst(9).prefix(3)) ?? 0
        var length = 0
        for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        let total = headEnd + 4 + length
        return buffer.count >= total ? (status, total) : nil
    }

    private static func connect(port: Int) -> Int32? {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = csystem_set_nonblocking(fd)
        return fd
    }
}
