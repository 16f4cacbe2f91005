// libFuzzer target: the JSON tape (the scoring paths' parser) against the JSONValue parser.
import JSON
import Scoring

/// Both parsers accept and refuse the same documents, and what the tape reads back of an
/// accepted one equals the other parser's value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var tape = JSONTape()
    let tapeResult = Result { () throws(JSONError) in try tape.parse(bytes) }
    let valueResult = Result { () throws(JSONError) in try JSONValue.parse(Array(bytes)) }
    switch (tapeResult, valueResult) {
    case (.success, .success(let value)):
        if tape.value(tape.root) != value, value == value { fatalError("the tape reads back \(tape.value(tape.root)), the parser gave \(value)") }
        var node = tape.root
        if tape.kind(node) == .array || tape.kind(node) == .object {
            node = tape.firstElement(node)
            for _ in 0..<tape.count(tape.root) { _ = tape.text(node); node = tape.next(node) }
        }
    case (.failure, .failure):
        break
    case (.success, .failure(let e)):
        fatalError("the tape accepted what the parser refused: \(e)")
    case (.failure(let e), .success):
        fatalError("the tape refused what the parser accepted: \(e)")
    }
    return 0
}
