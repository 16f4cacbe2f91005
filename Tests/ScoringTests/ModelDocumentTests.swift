import Foundation
import JSON
import Scoring
import Testing

@Suite struct ModelDocumentTests {
    func decodeError(_ mutate: (inout [String: Any]) -> Void) -> String? {
        var object = try! JSONSerialization.jsonObject(with: handModel().encoded()) as! [String: Any]
        mutate(&object)
        let data = try! JSONSerialization.data(withJSONObject: object)
        do {
            _ = try ModelDocument.decode(data)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func encodingIsCanonicalAndRoundTrips() throws {
        let document = handModel()
        let bytes = document.encoded()
        #expect(try ModelDocument.decode(bytes) == document)
        #expect(try ModelDocument.decode(bytes).encoded() == bytes)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains(#""format" : "switchyard.model""#))
        #expect(text.contains(#""format_version" : 1"#))
    }

    @Test func namesWhatIsWrong() {
        #expect(decodeError { $0["format_version"] = 2 }?.contains("format_version 2 is not supported") == true)
        #expect(decodeError { $0["format"] = "onnx" }?.contains(#""format" is "onnx""#) == true)
        #expect(decodeError { $0.removeValue(forKey: "estimator") }?.contains(#"missing field "estimator""#) == true)
        #expect(decodeError {
            var e = $0["estimator"] as! [String: Any]
            e["coefficients"] = [[1.0, 2.0]]
            $0["estimator"] = e
        }?.contains("estimator.coefficients[0] has 2 values; the preprocessing makes 6 columns") == true)
        #expect(decodeError {
            var e = $0["estimator"] as! [String: Any]
            e["link"] = "softmax"
            $0["estimator"] = e
        }?.contains("one margin per class") == true)
        #expect(decodeError {
            var p = $0["preprocessing"] as! [[String: Any]]
            p[0]["scale"] = 0
            $0["preprocessing"] = p
        }?.contains("non-zero \"scale\"") == true)
        #expect(decodeError {
            var p = $0["preprocessing"] as! [[String: Any]]
            p.removeLast()
            $0["preprocessing"] = p
        }?.contains(#"schema field "city" has no preprocessing step"#) == true)
        #expect(decodeError {
            var s = $0["schema"] as! [String: Any]
            var f = s["fields"] as! [[String: Any]]
            f[2]["values"] = ["a", "a"]
            s["fields"] = f
            $0["schema"] = s
        }?.contains("duplicates") == true)
        #expect(decodeError {
            var s = $0["schema"] as! [String: Any]
            var f = s["fields"] as! [[String: Any]]
            f[0]["type"] = "text"
            s["fields"] = f
            $0["schema"] = s
        } != nil)
        #expect(throws: ModelFormatError.self) { try ModelDocument.decode(Data("not json".utf8)) }
    }
}
