// libFuzzer target: the HTTP/1.1 request parser (chunked bodies included).
// Built and run by .ci/fuzz; not a SwiftPM target.
import HTTP

/// The first byte picks where the input is split; the rest is the byte stream. Whatever the
/// bytes, the parser yields at most one error, as its last event, and the same events whether
/// the bytes come whole, split once or one at a time.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    var limits = HTTPRequestParser.Limits()
    limits.headBytes = 512
    limits.bodyBytes = 4096
    func run(_ pieces: [ArraySlice<UInt8>]) -> [HTTPRequestParser.Event] {
        var parser = HTTPRequestParser(limits: limits)
        var events: [HTTPRequestParser.Event] = []
        for piece in pieces { events += Array(piece).withUnsafeBytes { parser.feed($0) } }
        _ = parser.phase
        return events
    }
    let whole = run([bytes[...]])
    let split = Int(data[0]) % (bytes.count + 1)
    let twice = run([bytes[..<split], bytes[split...]])
    let single = run(bytes.indices.map { bytes[$0...$0] })
    for (i, event) in whole.enumerated() {
        if case .error = event, i != whole.count - 1 { fatalError("an event after an error") }
        if case .request(let r) = event, r.request.body.count > limits.bodyBytes { fatalError("a body over the limit") }
    }
    if whole != twice || whole != single { fatalError("the events depend on where the bytes were split") }
    return 0
}
