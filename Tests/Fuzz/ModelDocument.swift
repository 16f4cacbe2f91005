// libFuzzer target: the model document decoder and validator, then compiling and scoring.
import Foundation
import JSON
import Scoring

/// A document that decodes and validates compiles into a scorer, which scores its own example
/// record without trapping (an error is fine).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let document = try? ModelDocument.decode(Data(bytes: data, count: size)) else { return 0 }
    guard let scorer = try? Scorer(document) else { return 0 }
    _ = try? scorer.predict(json: document.exampleRecord())
    _ = try? scorer.predict(json: .object(JSONObject()))
    return 0
}
