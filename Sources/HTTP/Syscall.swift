import CSystem

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: errno and the call's name.
public struct IOError: Error, Sendable, CustomStringConvertible {
    public var errno: Int32
    public var function: String
    public init(errno: Int32, function: String) {
        self.errno = errno
        self.function = function
    }
    public var description: String { "\(function) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// What a non-blocking call did.
package enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// Runs a system call, retrying EINTR, reporting EAGAIN as would-block and
/// throwing `IOError` otherwise (SwiftNIO's `syscall`).
@inline(__always)
package func syscall<T: FixedWidthInteger>(_ function: String, _ body: () -> T) throws(IOError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let e = errno
        if e == EINTR { continue }
        if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
        throw IOError(errno: e, function: function)
    }
}

/// epoll, wrapped (SwiftNIO's `enum Epoll`).
package enum Epoll {
    package static let readable = UInt32(EPOLLIN.rawValue)
    package static let writable = UInt32(EPOLLOUT.rawValue)
    package static let hangup = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue) | UInt32(EPOLLRDHUP.rawValue)

    package static func create() throws(IOError) -> Int32 {
        guard case .done(let fd) = try syscall("epoll_create1", { epoll_create1(Int32(EPOLL_CLOEXEC)) }) else {
            throw IOError(errno: EAGAIN, function: "epoll_create1")
        }
        return fd
    }

    package static func control(_ epfd: Int32, _ op: Int32, _ fd: Int32, events: UInt32) throws(IOError) {
        var event = epoll_event()
        event.events = events
        event.data.fd = fd
        _ = try syscall("epoll_ctl") { epoll_ctl(epfd, op, fd, &event) }
    }

    package static let add = EPOLL_CTL_ADD
    package static let modify = EPOLL_CTL_MOD
    package static let delete = EPOLL_CTL_DEL
}

/// The monotonic clock in nanoseconds.
@inline(__always)
package func monotonicNanoseconds() -> UInt64 { csystem_monotonic_ns() }
