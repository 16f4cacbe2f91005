import Foundation
import Glibc
import HTTP
import JSON
import Scoring
import Testing

@Suite struct ServeProcessTests {
    /// The issue-14 case: out of file descriptors, the server used to spin on accept (170% CPU)
    /// while new clients timed out. Now it clamps its connection limit to the descriptor limit,
    /// and when it still runs out it stops accepting until a descriptor frees.
    @Test func outOfDescriptorsPausesAcceptingInsteadOfSpinning() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("home")
        try trainCredit(home)
        let key = try switchyard(["keys", "create", "--scope", "read"], home: home).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let serve = try RunningSwitchyard(["serve", "--model", "credit@production", "--port", "0", "--open", "--threads", "1"], home: home, descriptors: 48)
        defer { serve.kill(SIGTERM) }
        let port = try serve.servePort()
        // One connection kept for asking status while the table is full.
        let control = HTTPClient(port: port, timeout: 20)
        func status() throws -> JSONValue { try JSONValue.parse(try control.request("GET", "/v1/status", headers: [("Authorization", "Bearer \(key)")]).body) }
        #expect(try status()["http"]?["max_connections"] == .number(36), "48 descriptors, 12 kept for files")

        // More connections than descriptors: the kernel queues them, the server takes what it can.
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<60 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(rc == 0)
            held.append(fd)
        }
        var pauses = 0.0
        for _ in 0..<200 where pauses == 0 {  // the status is refreshed once a second
            if case .number(let n)? = try status()["http"]?["accept_pauses"] { pauses = n }
            usleep(50_000)
        }
        #expect(pauses >= 1, "the server ran out of descriptors and paused accepting")
        // Paused, it does not spin: well under a core over two seconds (a spinning loop takes one whole).
        func cpuTicks() -> Int {
            let stat = (try? String(contentsOfFile: "/proc/\(serve.process.processIdentifier)/stat", encoding: .utf8)) ?? ""
            guard let close = stat.range(of: ") ", options: .backwards) else { return 0 }
            let fields = stat[close.upperBound...].split(separator: " ")
            return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)  // utime, stime
        }
        let before = cpuTicks()
        usleep(2_000_000)
        #expect(cpuTicks() - before < 100, "CPU ticks while out of descriptors")
        // Descriptors free up: it accepts again, and a new client is answered.
        for fd in held { close(fd) }
        held.removeAll()
        var answered = false
        for _ in 0..<400 where !answered {
            answered = (try? HTTPClient(port: port, timeout: 5).request("GET", "/healthz").status) == 200
            if !answered { usleep(50_000) }
        }
        #expect(answered, "a new client is served once descriptors are free")
    }
}
