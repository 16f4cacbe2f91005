import Foundation
import JSON
import Scoring
import Synchronization
import Testing

@testable import Components
@testable import HTTP

/// The binary tensor data extension (issue 16 item 2): requests tritonclient's HTTP client sent,
/// captured byte for byte by fixtures/triton/capture.py, are replayed to a serve, and its answers
/// (binary or JSON, as each asked) equal the embedded scorer's exactly.
@Suite struct BinaryTensorTests {
    static let folder = fixtures.appendingPathComponent("triton")

    /// A response split into its outputs: each output's JSON and, when it came binary, its bytes.
    struct Answer {
        var status: Int
        var outputs: [String: (json: JSONValue, binary: [UInt8]?)] = [:]
    }

    static func answer(_ response: HTTPClient.Response) throws -> Answer {
        var result = Answer(status: response.status)
        let headerLength = response.headers["Inference-Header-Content-Length"].flatMap { Int($0) } ?? response.body.count
        let json = try JSONValue.parse(Array(response.body[0..<headerLength]))
        var tail = response.body[headerLength...]
        guard case .array(let outputs)? = json["outputs"] else { return result }
        for output in outputs {
            guard case .string(let name)? = output["name"] else { continue }
            if case .number(let size)? = output["parameters"]?["binary_data_size"] {
                result.outputs[name] = (output, Array(tail.prefix(Int(size))))
                tail = tail.dropFirst(Int(size))
            } else {
                result.outputs[name] = (output, nil)
            }
        }
        #expect(tail.isEmpty, "nothing after the last binary output")
        return result
    }

    @Test(arguments: ["fp64-binary", "fp32-int64-binary", "mixed-json-binary"])
    func replayedTritonclientRequestsGetTheEmbeddedScorersAnswers(_ name: String) throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        let cases = try JSONValue.parse(Array(try Data(contentsOf: Self.folder.appendingPathComponent("cases.json"))))
        guard case .array(let records)? = cases[name]?["records"], case .array(let binaryOutputs)? = cases[name]?["binary_outputs"] else {
            Issue.record("cases.json has no \(name)")
            return
        }
        let raw = try Data(contentsOf: Self.folder.appendingPathComponent("\(name).http"))
        let client = f.client()
        try client.sendRaw(Array(raw))
        let answer = try Self.answer(try client.readResponse())
        #expect(answer.status == 200)
        let scorer = try Scorer(f.documents[1]!)
        let expected = try records.map { try scorer.predict(json: $0) }

        let probability = try #require(answer.outputs["probability"])
        let probabilities: [Double]
        if let bytes = probability.binary {
            #expect(binaryOutputs.contains(.string("probability")))
            probabilities = stride(from: 0, to: bytes.count, by: 8).map { at in
                Double(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) })
            }
        } else {
            #expect(!binaryOutputs.contains(.string("probability")))
            probabilities = numbers(probability.json["data"])
        }
        #expect(probabilities == expected.flatMap(\.probabilities))

        let label = try #require(answer.outputs["label"])
        var labels: [String] = []
        if let bytes = label.binary {
            #expect(binaryOutputs.contains(.string("label")))
            var at = 0
            while at + 4 <= bytes.count {
                let length = Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
                labels.append(String(decoding: bytes[(at + 4)..<(at + 4 + length)], as: UTF8.self))
                at += 4 + length
            }
        } else if case .array(let values)? = label.json["data"] {
            labels = values.compactMap { if case .string(let s) = $0 { s } else { nil } }
        }
        #expect(labels == expected.map(\.label))
    }

    /// Whether tritonclient's HTTP client can run here (CI replays its captured requests instead).
    static let clientMissing: String? = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import tritonclient.http, numpy"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "python3 is not installed" }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "tritonclient[http] and numpy are not installed (pip install \"tritonclient[http]\" numpy)"
    }()

    /// The real client against a live serve: what it decodes equals the embedded scorer's answers.
    @Test(.enabled(if: BinaryTensorTests.clientMissing == nil, Comment(rawValue: BinaryTensorTests.clientMissing ?? "")))
    func tritonclientGetsTheEmbeddedScorersAnswers() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.folder.appendingPathComponent("live.py").path, "127.0.0.1:\(f.port)"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let printed = out.fileHandleForReading.readDataToEndOfFile()
        let problem = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(problem)")
        guard case .object(let cases) = try JSONValue.parse(Array(printed)) else { return }
        #expect(cases.count == 3)
        let scorer = try Scorer(f.documents[1]!)
        for (name, result) in zip(cases.keys, cases.values) {
            guard case .array(let records)? = result["records"] else { continue }
            let expected = try records.map { try scorer.predict(json: $0) }
            #expect(numbers(result["probability"]) == expected.flatMap(\.probabilities), "\(name)")
            #expect(result["label"] == .array(expected.map { .string($0.label) }), "\(name)")
        }
    }

    /// Bad binary requests get a 400 that says what is wrong, and the server lives on.
    @Test func malformedBinaryRequestsGetA400NamingTheProblem() throws {
        let f = try ServeFixture(open: true)
        defer { f.stop() }
        func send(_ json: String, _ binary: [UInt8], headerLength: String? = nil) throws -> HTTPClient.Response {
            let body = Array(json.utf8) + binary
            return try f.client().request("POST", "/v2/models/credit/infer",
                                          headers: [("Inference-Header-Content-Length", headerLength ?? String(json.utf8.count))], body: body)
        }
        let amount = #"{"inputs":[{"name":"amount","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#
        let cases: [(HTTPClient.Response, String)] = [
            (try send(amount, [UInt8](repeating: 0, count: 8)), "binary_data_size must be a whole number of bytes within the 8 left"),
            (try send(amount, [UInt8](repeating: 0, count: 24)), "the inputs' binary_data_size add up to 16"),
            (try send(amount, [UInt8](repeating: 0, count: 16), headerLength: "99999"), "Inference-Header-Content-Length: expected the size"),
            (try send(amount, [UInt8](repeating: 0, count: 16), headerLength: "-1"), "Inference-Header-Content-Length"),
            (try send(#"{"inputs":[{"name":"amount","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#, [UInt8](repeating: 0, count: 16)),
             "shape holds 3 FP64 values, 3 × 8 bytes, but binary_data_size is 16"),
            (try send(#"{"inputs":[{"name":"region","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#, [9, 0, 0, 0, 0x65, 0x61]),
             "BYTES element 0 says 9 bytes, only 2 are left"),
            (try send(#"{"inputs":[{"name":"region","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#, [2, 0, 0, 0, 0xFF, 0xFE]),
             "BYTES element 0 is not UTF-8 text"),
            (try send(#"{"inputs":[{"name":"amount","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#, [0, 0, 0xC0, 0x7F]),
             "element 0 is nan"),
            (try send(#"{"inputs":[{"name":"amount","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}}]}"#, [7]),
             "BOOL element 0 is the byte 7"),
            (try send(#"{"inputs":[{"name":"amount","shape":[1],"datatype":"COMPLEX","parameters":{"binary_data_size":1}}]}"#, [7]),
             #"datatype \"COMPLEX\" is not one of"#),
            (try send("[1,", [1, 2, 3]), "the JSON part of the request (its first 3 bytes"),
        ]
        for (response, message) in cases {
            #expect(response.status == 400 && response.text.contains(message), "\(message): \(response.status) \(response.text)")
        }
        // A category sent as binary FP64 is checked against the model's metadata like JSON is.
        let wrongType = try send(#"{"inputs":[{"name":"region","shape":[1],"datatype":"FP64","parameters":{"binary_data_size":8}}]}"#, [UInt8](repeating: 0, count: 8))
        #expect(wrongType.status == 400 && wrongType.text.contains("does not fit a category field"), "\(wrongType.text)")
        #expect(try f.get("/healthz").status == 200)
    }
}
