// libFuzzer target: the XGBoost JSON, LightGBM text and ONNX importers, then compiling and scoring.
import Foundation
import JSON
import Scoring

/// The first byte picks the importer; the rest is the model file. Whatever imports compiles
/// and scores an empty record and its example record without trapping.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let format: ModelImport.Format = [.xgboostJSON, .lightgbmText, .onnx][Int(data[0] % 3)]
    let file = Data(bytes: data + 1, count: size - 1)
    guard let document = try? ModelImport.convert(file, format: format, file: "fuzz", schema: nil, name: "fuzz", created: "2026-01-01T00:00:00Z"),
          let scorer = try? Scorer(document) else { return 0 }
    _ = try? scorer.predict(json: document.exampleRecord())
    _ = try? scorer.predict(json: .object(JSONObject()))
    return 0
}
