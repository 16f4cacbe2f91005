// libFuzzer target: the model document decoder and validator, then compiling and scoring; and the
// drift baseline reader (a baseline is uploaded to the registry beside a version).
import Foundation
import JSON
import Scoring

/// A document that decodes and validates compiles into a scorer, which scores its own example
/// record without trapping (an error is fine).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if let value = try? JSONValue.parse(Array(UnsafeBufferPointer(start: data, count: size))), let baseline = try? DriftBaseline(json: value) {
        // What it reads bins any value without trapping, and writes back to what reads the same.
        for field in baseline.fields + [baseline.prediction] {
            for v in [FieldValue.number(.infinity), .number(-1e308), .number(0), .text("x"), .missing] { _ = field.bin(v) }
            _ = DriftBaseline.psi(field, [UInt64](repeating: 1, count: field.binCount))
        }
        guard (try? DriftBaseline(json: (try? JSONValue.parse(Array(baseline.json.jsonText.utf8))) ?? .null)) == baseline else {
            fatalError("DriftBaseline does not read back")
        }
    }
    guard let document = try? ModelDocument.decode(Data(bytes: data, count: size)) else { return 0 }
    guard let scorer = try? Scorer(document) else { return 0 }
    _ = try? scorer.predict(json: document.exampleRecord())
    _ = try? scorer.predict(json: .object(JSONObject()))
    return 0
}
