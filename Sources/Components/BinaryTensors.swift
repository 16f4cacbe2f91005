import ControlProtocol
import HTTP
import JSON

/// The binary tensor data extension of the Open Inference Protocol (Triton, KServe): a request
/// whose `Inference-Header-Content-Length` header says how long its JSON part is; the bytes after
/// it are the data of the inputs that carry `parameters.binary_data_size`, one after another in
/// input order, little-endian, row-major, BOOL one byte (0 or 1), BYTES each element a 4-byte
/// little-endian length and its bytes.
///
/// A binary request is rewritten into the plain JSON request it stands for (each binary input
/// gains its `data`), so both forms are read, checked and scored by one decoder. Every size is
/// checked against the bytes actually there before anything is sized by it.
enum BinaryTensors {
    /// Bytes per element of each fixed-size datatype.
    static func width(_ datatype: String) -> Int? {
        switch datatype {
        case "BOOL", "UINT8", "INT8": 1
        case "UINT16", "INT16", "FP16", "BF16": 2
        case "UINT32", "INT32", "FP32": 4
        case "UINT64", "INT64", "FP64": 8
        default: nil
        }
    }

    /// The length of the JSON part, from the header's text.
    static func headerLength(_ text: String, bodyCount: Int) throws(HTTPError) -> Int {
        let trimmed = text.utf8.drop { $0 == 0x20 }.prefix { $0 != 0x20 }
        guard !trimmed.isEmpty, trimmed.count <= 19, trimmed.allSatisfy({ $0 &- 0x30 < 10 }),
              let n = Int(String(decoding: trimmed, as: UTF8.self)), n <= bodyCount else {
            throw HTTPError(400, "Inference-Header-Content-Length: expected the size of the JSON part in bytes, from 0 to the body's \(bodyCount), got \"\(text.prefix(40))\"")
        }
        return n
    }

    /// The JSON request `body` stands for: its JSON part with each binary input's data written in.
    static func jsonRequest(_ body: UnsafeRawBufferPointer, headerLength: Int) throws(HTTPError) -> [UInt8] {
        let header = UnsafeRawBufferPointer(rebasing: body[0..<headerLength])
        let binary = UnsafeRawBufferPointer(rebasing: body[headerLength...])
        var tape = JSONTape()
        do { try tape.parse(header) } catch {
            throw HTTPError(400, "the JSON part of the request (its first \(headerLength) bytes, per Inference-Header-Content-Length) is not JSON: \(error)")
        }
        guard tape.kind(tape.root) == .object else { throw HTTPError(400, "the JSON part of the request must be an object") }
        guard let inputs = tape.member(tape.root, "inputs"), tape.kind(inputs) == .array else {
            throw HTTPError(400, #"expected "inputs": a list of tensors ({"name", "shape", "datatype", "data" or parameters.binary_data_size})"#)
        }
        var w = JSONWriter()
        w.reserveCapacity(headerLength + binary.count * 4)
        w.raw("{")
        // Everything but the inputs as it was sent (id, outputs, parameters).
        if copyMembers(tape, tape.root, except: ["inputs"], into: &w) { w.raw(",") }
        w.raw(#""inputs":["#)
        var used = 0
        var index = 0
        var failure: HTTPError?
        tape.forEachElement(inputs) { input in
            guard failure == nil else { return }
            defer { index += 1 }
            do throws(HTTPError) {
                if index > 0 { w.raw(",") }
                try rewrite(tape, input, index: index, binary: binary, used: &used, into: &w)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        guard used == binary.count else {
            throw HTTPError(400, "the binary part has \(binary.count) bytes after the JSON part, but the inputs' binary_data_size add up to \(used)")
        }
        w.raw("]}")
        return w.bytes
    }

    /// One input: as sent when it has no binary data; else its members but `parameters`, and `data`.
    private static func rewrite(_ tape: JSONTape, _ input: Int, index: Int, binary: UnsafeRawBufferPointer, used: inout Int, into w: inout JSONWriter) throws(HTTPError) {
        guard tape.kind(input) == .object else { throw HTTPError(400, "inputs[\(index)]: expected an object") }
        let name = tape.member(input, "name").flatMap { tape.string($0) } ?? "inputs[\(index)]"
        guard let parameters = tape.member(input, "parameters"), tape.kind(parameters) == .object,
              let sizeNode = tape.member(parameters, "binary_data_size") else {
            w.raw(tape.text(input))
            return
        }
        guard let size = tape.number(sizeNode), size >= 0, size == size.rounded(), size <= Double(binary.count - used) else {
            throw HTTPError(400, "input \"\(name)\": binary_data_size must be a whole number of bytes within the \(binary.count - used) left after the JSON part")
        }
        let bytes = UnsafeRawBufferPointer(rebasing: binary[used..<(used + Int(size))])
        used += Int(size)
        guard let typeNode = tape.member(input, "datatype"), let datatype = tape.string(typeNode) else {
            throw HTTPError(400, "input \"\(name)\": missing \"datatype\"")
        }
        guard let shapeNode = tape.member(input, "shape"), tape.kind(shapeNode) == .array else {
            throw HTTPError(400, "input \"\(name)\": \"shape\" must be a list of non-negative integers")
        }
        var count = 1
        var valid = true
        tape.forEachElement(shapeNode) { dim in
            guard valid, let n = tape.number(dim), n >= 0, n == n.rounded(), n < 1e9 else { valid = false; return }
            let (p, overflow) = count.multipliedReportingOverflow(by: Int(n))
            if overflow || p > binary.count * 8 + 8 { valid = false } else { count = p }  // no tensor has more elements than bits
        }
        guard valid else { throw HTTPError(400, "input \"\(name)\": \"shape\" must be a list of non-negative integers that fits its binary data") }

        w.raw("{")
        if copyMembers(tape, input, except: ["parameters", "data"], into: &w) { w.raw(",") }
        w.raw(#""data":["#)
        if datatype == "BYTES" {
            try elementsOfBytes(bytes, count: count, name: name, into: &w)
        } else if let width = width(datatype) {
            guard count.multipliedReportingOverflow(by: width) == (bytes.count, false) else {
                throw HTTPError(400, "input \"\(name)\": shape holds \(count) \(datatype) values, \(count) × \(width) bytes, but binary_data_size is \(bytes.count)")
            }
            for i in 0..<count {
                if i > 0 { w.raw(",") }
                try element(bytes, at: i * width, datatype: datatype, index: i, name: name, into: &w)
            }
        } else {
            throw HTTPError(400, "input \"\(name)\": datatype \"\(datatype.prefix(40))\" is not one of BOOL, UINT8…UINT64, INT8…INT64, FP16, BF16, FP32, FP64, BYTES")
        }
        w.raw("]}")
    }

    /// Writes an object's members but `except`, as they were sent; whether it wrote any.
    private static func copyMembers(_ tape: JSONTape, _ object: Int, except: Set<String>, into w: inout JSONWriter) -> Bool {
        var wrote = false
        tape.forEachMember(object) { key, value in
            guard let name = tape.string(key), !except.contains(name) else { return }
            if wrote { w.raw(",") }
            wrote = true
            w.raw(tape.text(key))
            w.raw(":")
            w.raw(tape.text(value))
        }
        return wrote
    }

    /// BYTES: each element a 4-byte little-endian length and that many bytes, written as a JSON string.
    private static func elementsOfBytes(_ bytes: UnsafeRawBufferPointer, count: Int, name: String, into w: inout JSONWriter) throws(HTTPError) {
        var at = 0
        for i in 0..<count {
            guard bytes.count - at >= 4 else {
                throw HTTPError(400, "input \"\(name)\": BYTES element \(i) of \(count): its 4-byte length is cut off at byte \(at) of \(bytes.count)")
            }
            let length = Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
            at += 4
            guard length <= bytes.count - at else {
                throw HTTPError(400, "input \"\(name)\": BYTES element \(i) says \(length) bytes, only \(bytes.count - at) are left")
            }
            let element = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + length)])
            guard let text = String(validating: element, as: UTF8.self) else {
                throw HTTPError(400, "input \"\(name)\": BYTES element \(i) is not UTF-8 text")
            }
            if i > 0 { w.raw(",") }
            w.string(text)
            at += length
        }
        guard at == bytes.count else {
            throw HTTPError(400, "input \"\(name)\": \(bytes.count - at) bytes left over after its \(count) BYTES elements")
        }
    }

    /// One fixed-size element, little-endian, as a JSON value.
    private static func element(_ bytes: UnsafeRawBufferPointer, at offset: Int, datatype: String, index: Int, name: String, into w: inout JSONWriter) throws(HTTPError) {
        func unsigned(_ width: Int) -> UInt64 {
            var v: UInt64 = 0
            for k in (0..<width).reversed() { v = v << 8 | UInt64(bytes[offset + k]) }
            return v
        }
        func finite(_ x: Double) throws(HTTPError) {
            guard x.isFinite else { throw HTTPError(400, "input \"\(name)\": element \(index) is \(x), which has no JSON form and is no input value") }
            w.number(x)
        }
        switch datatype {
        case "BOOL":
            let b = bytes[offset]
            guard b <= 1 else { throw HTTPError(400, "input \"\(name)\": BOOL element \(index) is the byte \(b); expected 0 or 1") }
            w.raw(b == 1 ? "true" : "false")
        case "UINT8", "UINT16", "UINT32", "UINT64":
            w.raw(String(unsigned(width(datatype)!)))
        case "INT8": w.integer(Int(Int8(truncatingIfNeeded: unsigned(1))))
        case "INT16": w.integer(Int(Int16(truncatingIfNeeded: unsigned(2))))
        case "INT32": w.integer(Int(Int32(truncatingIfNeeded: unsigned(4))))
        case "INT64": w.integer(Int(Int64(bitPattern: unsigned(8))))
        case "FP16": try finite(Double(Float16(bitPattern: UInt16(unsigned(2)))))
        case "BF16": try finite(Double(Float(bitPattern: UInt32(unsigned(2)) << 16)))
        case "FP32": try finite(Double(Float(bitPattern: UInt32(unsigned(4)))))
        default: try finite(Double(bitPattern: unsigned(8)))  // FP64
        }
    }

    /// The response's binary part: a tensor's data in the extension's layout.
    static func append(_ values: [Double], to tail: inout [UInt8]) {
        tail.reserveCapacity(tail.count + values.count * 8)
        for v in values {
            let bits = v.bitPattern
            for k in 0..<8 { tail.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))) }
        }
    }

    static func append(bytes element: String, to tail: inout [UInt8]) {
        let count = UInt32(truncatingIfNeeded: element.utf8.count)
        for k in 0..<4 { tail.append(UInt8(truncatingIfNeeded: count >> (8 * UInt32(k)))) }
        tail.append(contentsOf: element.utf8)
    }
}
