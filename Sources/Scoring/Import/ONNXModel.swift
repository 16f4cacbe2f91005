/// A reader of the protocol buffers wire format over one byte array, for ONNX files: varints,
/// 32- and 64-bit fixed values and length-delimited fields (strings, bytes, sub-messages and
/// packed repeated numbers). Every length is checked against the bytes left before anything is
/// read or sized by it, so any input ends in a value or an error naming the byte.
struct ProtobufReader {
    let data: [UInt8]
    private(set) var position: Int
    let end: Int

    init(_ data: [UInt8]) {
        self.init(data, data.startIndex..<data.endIndex)
    }

    init(_ data: [UInt8], _ range: Range<Int>) {
        self.data = data
        position = range.lowerBound
        end = range.upperBound
    }

    enum Wire: Int {
        case varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5
    }

    func error(_ what: String) -> ModelFormatError {
        ModelFormatError("not an ONNX model (protobuf): \(what) at byte \(position)")
    }

    /// The next field's number and wire type, or nil at the end of the message.
    mutating func field() throws(ModelFormatError) -> (number: Int, wire: Wire)? {
        guard position < end else { return nil }
        let key = try varint()
        guard let wire = Wire(rawValue: Int(key & 7)) else { throw error("wire type \(key & 7) (groups and unknown types are not ONNX)") }
        let number = key >> 3
        guard number > 0, number < 1 << 29 else { throw error("field number \(number)") }
        return (Int(number), wire)
    }

    mutating func varint() throws(ModelFormatError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw error("a varint cut short") }
            let byte = data[position]
            position += 1
            guard shift < 64 else { throw error("a varint longer than 10 bytes") }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func fixed(_ count: Int) throws(ModelFormatError) -> UInt64 {
        guard end - position >= count else { throw error("a \(count * 8)-bit value cut short") }
        var value: UInt64 = 0
        for i in 0..<count { value |= UInt64(data[position + i]) << (8 * UInt64(i)) }
        position += count
        return value
    }

    /// A length-delimited field's bytes, as a range of `data`.
    mutating func bytes() throws(ModelFormatError) -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(end - position) else { throw error("a length of \(length) bytes, with \(end - position) left") }
        let range = position..<(position + Int(length))
        position = range.upperBound
        return range
    }

    mutating func string() throws(ModelFormatError) -> String {
        let range = try bytes()
        return String(decoding: data[range], as: UTF8.self)
    }

    mutating func message() throws(ModelFormatError) -> ProtobufReader {
        ProtobufReader(data, try bytes())
    }

    mutating func skip(_ wire: Wire) throws(ModelFormatError) {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64: _ = try fixed(8)
        case .fixed32: _ = try fixed(4)
        case .bytes: _ = try bytes()
        }
    }

    /// A repeated 64-bit integer field's value(s): one varint, or a packed run of them.
    mutating func int64s(_ wire: Wire, into out: inout [Int64]) throws(ModelFormatError) {
        if wire == .varint { return out.append(Int64(bitPattern: try varint())) }
        guard wire == .bytes else { throw error("an integer field with wire type \(wire.rawValue)") }
        var packed = try message()
        while packed.position < packed.end { out.append(Int64(bitPattern: try packed.varint())) }
    }

    /// A repeated float field's value(s), widened to Double exactly.
    mutating func floats(_ wire: Wire, into out: inout [Double]) throws(ModelFormatError) {
        if wire == .fixed32 { return out.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: try fixed(4))))) }
        guard wire == .bytes else { throw error("a float field with wire type \(wire.rawValue)") }
        var packed = try message()
        guard (packed.end - packed.position) % 4 == 0 else { throw packed.error("packed floats of \(packed.end - packed.position) bytes") }
        while packed.position < packed.end { out.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: try packed.fixed(4))))) }
    }

    mutating func doubles(_ wire: Wire, into out: inout [Double]) throws(ModelFormatError) {
        if wire == .fixed64 { return out.append(Double(bitPattern: try fixed(8))) }
        guard wire == .bytes else { throw error("a double field with wire type \(wire.rawValue)") }
        var packed = try message()
        guard (packed.end - packed.position) % 8 == 0 else { throw packed.error("packed doubles of \(packed.end - packed.position) bytes") }
        while packed.position < packed.end { out.append(Double(bitPattern: try packed.fixed(8))) }
    }
}

/// The parts of an ONNX model (onnx.proto3) an import reads: the graph's inputs, nodes and
/// initializers, and the operator sets. Subgraphs, documentation, metadata and training info are
/// skipped.
struct ONNXModel {
    /// TensorProto.DataType values.
    enum ElementType: Int {
        case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, string = 8, bool = 9, float16 = 10,
            double = 11, uint32 = 12, uint64 = 13
    }

    struct Tensor {
        var name = ""
        var dims: [Int64] = []
        var type = 0
        /// Float and double data, widened to Double.
        var numbers: [Double] = []
        var integers: [Int64] = []
        var strings: [String] = []
    }

    struct Attribute {
        var name = ""
        var float: Double?
        var int: Int64?
        var string: String?
        var tensor: Tensor?
        var floats: [Double] = []
        var ints: [Int64] = []
        var strings: [String] = []
    }

    struct Node {
        var inputs: [String] = []
        var outputs: [String] = []
        var name = ""
        var op = ""
        var domain = ""
        var attributes: [String: Attribute] = [:]
    }

    struct ValueInfo {
        var name = ""
        var type = 0
        /// nil for a symbolic (named) dimension such as the batch size.
        var dims: [Int64?] = []
    }

    var irVersion: Int64 = 0
    var producer = ""
    var producerVersion = ""
    /// Operator set version by domain ("" is the default domain, ai.onnx).
    var opsets: [String: Int64] = [:]
    var nodes: [Node] = []
    var initializers: [String: Tensor] = [:]
    var inputs: [ValueInfo] = []
    var outputs: [ValueInfo] = []

    init(_ bytes: [UInt8]) throws(ModelFormatError) {
        var reader = ProtobufReader(bytes)
        var sawGraph = false
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, .varint): irVersion = Int64(bitPattern: try reader.varint())
            case (2, .bytes): producer = try reader.string()
            case (3, .bytes): producerVersion = try reader.string()
            case (7, .bytes):
                sawGraph = true
                try readGraph(try reader.message())
            case (8, .bytes):
                var opset = try reader.message()
                var domain = "", version: Int64 = 0
                while let (n, w) = try opset.field() {
                    switch (n, w) {
                    case (1, .bytes): domain = try opset.string()
                    case (2, .varint): version = Int64(bitPattern: try opset.varint())
                    default: try opset.skip(w)
                    }
                }
                opsets[domain == "ai.onnx" ? "" : domain] = version
            default: try reader.skip(wire)
            }
        }
        guard sawGraph else {
            throw ModelFormatError("not an ONNX model: it has no graph (save it with onnx.save_model or the converter's SerializeToString)")
        }
    }

    private mutating func readGraph(_ message: ProtobufReader) throws(ModelFormatError) {
        var graph = message
        while let (number, wire) = try graph.field() {
            switch (number, wire) {
            case (1, .bytes): nodes.append(try Self.node(try graph.message()))
            case (5, .bytes):
                let tensor = try Self.tensor(try graph.message())
                initializers[tensor.name] = tensor
            case (11, .bytes): inputs.append(try Self.valueInfo(try graph.message()))
            case (12, .bytes): outputs.append(try Self.valueInfo(try graph.message()))
            default: try graph.skip(wire)
            }
        }
        // Older files list initializers among the inputs too: those are not inputs.
        inputs.removeAll { initializers[$0.name] != nil }
    }

    private static func node(_ message: ProtobufReader) throws(ModelFormatError) -> Node {
        var reader = message
        var node = Node()
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, .bytes): node.inputs.append(try reader.string())
            case (2, .bytes): node.outputs.append(try reader.string())
            case (3, .bytes): node.name = try reader.string()
            case (4, .bytes): node.op = try reader.string()
            case (7, .bytes): node.domain = try reader.string()
            case (5, .bytes):
                let attribute = try Self.attribute(try reader.message())
                node.attributes[attribute.name] = attribute
            default: try reader.skip(wire)
            }
        }
        if node.domain == "ai.onnx" { node.domain = "" }
        return node
    }

    private static func attribute(_ message: ProtobufReader) throws(ModelFormatError) -> Attribute {
        var reader = message
        var a = Attribute()
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, .bytes): a.name = try reader.string()
            case (2, .fixed32): a.float = Double(Float(bitPattern: UInt32(truncatingIfNeeded: try reader.fixed(4))))
            case (3, .varint): a.int = Int64(bitPattern: try reader.varint())
            case (4, .bytes): a.string = try reader.string()
            case (5, .bytes): a.tensor = try Self.tensor(try reader.message())
            case (7, _): try reader.floats(wire, into: &a.floats)
            case (8, _): try reader.int64s(wire, into: &a.ints)
            case (9, .bytes): a.strings.append(try reader.string())
            default: try reader.skip(wire)  // subgraphs, sparse tensors, type protos, the type tag
            }
        }
        return a
    }

    private static func tensor(_ message: ProtobufReader) throws(ModelFormatError) -> Tensor {
        var reader = message
        var t = Tensor()
        var raw: Range<Int>?
        var int32s: [Int64] = []
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, _): try reader.int64s(wire, into: &t.dims)
            case (2, .varint): t.type = Int(truncatingIfNeeded: try reader.varint())
            case (4, _): try reader.floats(wire, into: &t.numbers)
            case (5, _): try reader.int64s(wire, into: &int32s)
            case (6, .bytes): t.strings.append(try reader.string())
            case (7, _): try reader.int64s(wire, into: &t.integers)
            case (8, .bytes): t.name = try reader.string()
            case (9, .bytes): raw = try reader.bytes()
            case (10, _): try reader.doubles(wire, into: &t.numbers)
            default: try reader.skip(wire)
            }
        }
        if t.integers.isEmpty { t.integers = int32s.map { Int64(Int32(truncatingIfNeeded: $0)) } }
        if let raw {
            // raw_data: little-endian values of the element type.
            var bytes = ProtobufReader(reader.data, raw)
            switch ElementType(rawValue: t.type) {
            case .float?:
                guard raw.count % 4 == 0 else { throw bytes.error("raw float data of \(raw.count) bytes") }
                for _ in 0..<(raw.count / 4) { t.numbers.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: try bytes.fixed(4))))) }
            case .double?:
                guard raw.count % 8 == 0 else { throw bytes.error("raw double data of \(raw.count) bytes") }
                for _ in 0..<(raw.count / 8) { t.numbers.append(Double(bitPattern: try bytes.fixed(8))) }
            case .int64?:
                guard raw.count % 8 == 0 else { throw bytes.error("raw int64 data of \(raw.count) bytes") }
                for _ in 0..<(raw.count / 8) { t.integers.append(Int64(bitPattern: try bytes.fixed(8))) }
            case .int32?:
                guard raw.count % 4 == 0 else { throw bytes.error("raw int32 data of \(raw.count) bytes") }
                for _ in 0..<(raw.count / 4) { t.integers.append(Int64(Int32(truncatingIfNeeded: try bytes.fixed(4)))) }
            default:
                throw ModelFormatError("tensor \"\(t.name)\": raw data of element type \(t.type) is not read by this import")
            }
        }
        return t
    }

    private static func valueInfo(_ message: ProtobufReader) throws(ModelFormatError) -> ValueInfo {
        var reader = message
        var info = ValueInfo()
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, .bytes): info.name = try reader.string()
            case (2, .bytes):
                // TypeProto.tensor_type (1): elem_type (1), shape (2) of dims (1) with dim_value (1) or dim_param (2).
                var type = try reader.message()
                while let (n, w) = try type.field() {
                    guard n == 1, w == .bytes else {
                        try type.skip(w)
                        continue
                    }
                    var tensor = try type.message()
                    while let (tn, tw) = try tensor.field() {
                        switch (tn, tw) {
                        case (1, .varint): info.type = Int(truncatingIfNeeded: try tensor.varint())
                        case (2, .bytes):
                            var shape = try tensor.message()
                            while let (sn, sw) = try shape.field() {
                                guard sn == 1, sw == .bytes else {
                                    try shape.skip(sw)
                                    continue
                                }
                                var dim = try shape.message()
                                var value: Int64?
                                while let (dn, dw) = try dim.field() {
                                    if dn == 1, dw == .varint { value = Int64(bitPattern: try dim.varint()) } else { try dim.skip(dw) }
                                }
                                info.dims.append(value)
                            }
                        default: try tensor.skip(tw)
                        }
                    }
                }
            default: try reader.skip(wire)
            }
        }
        return info
    }
}
