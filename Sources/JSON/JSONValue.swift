/// A parsed JSON value. Objects keep their members in document order, so a
/// record's fields can be matched against a schema without hashing.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The value as JSON text carries it (what `JSONWriter` writes): a non-finite number, which a
    /// parse can give for a literal such as `1e400`, is null; everything else is as it is.
    public var asWritten: JSONValue {
        switch self {
        case .number(let x) where !x.isFinite: return .null
        case .array(let items): return .array(items.map(\.asWritten))
        case .object(var object):
            object.values = object.values.map(\.asWritten)
            return .object(object)
        default: return self
        }
    }

    /// Parses one JSON document; whitespace may surround it, nothing else may follow it.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONError) -> JSONValue {
        let copy = ContiguousArray(bytes)
        return try copy.withUnsafeBytes { buffer in
            var parser = JSONParser(buffer)
            return Result { () throws(JSONError) in try parser.parseDocument() }
        }.get()
    }

    /// Parses one JSON document from text.
    public static func parse(_ text: String) throws(JSONError) -> JSONValue {
        var text = text
        return try text.withUTF8 { buffer in
            var parser = JSONParser(UnsafeRawBufferPointer(buffer))
            return Result { () throws(JSONError) in try parser.parseDocument() }
        }.get()
    }

    /// The member `key` of an object, or nil for a missing key or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let object) = self else { return nil }
        return object[key]
    }

    /// A short rendering for error messages: strings quoted, long values cut.
    public var excerpt: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return JSONWriter.numberText(n)
        case .string(let s):
            let cut = s.count > 40 ? String(s.prefix(40)) + "…" : s
            return "\"" + cut + "\""
        case .array(let a): return "an array of \(a.count)"
        case .object(let o): return "an object of \(o.count) fields"
        }
    }

    /// The JSON text of this value.
    public var jsonText: String {
        var writer = JSONWriter()
        writer.value(self)
        return writer.string
    }
}

/// A JSON object's members in document order. Lookups are linear: records have
/// tens of fields, where a scan beats hashing every key.
public struct JSONObject: Sendable, Equatable {
    public var keys: [String]
    public var values: [JSONValue]

    public init() {
        keys = []
        values = []
    }

    public init(_ members: KeyValuePairs<String, JSONValue>) {
        keys = members.map(\.key)
        values = members.map(\.value)
    }

    public var count: Int { keys.count }

    /// The last member named `key` (as JSON parsers conventionally resolve duplicates).
    public subscript(key: String) -> JSONValue? {
        get {
            var i = keys.count - 1
            while i >= 0 {
                if keys[i] == key { return values[i] }
                i -= 1
            }
            return nil
        }
        set {
            if let i = keys.lastIndex(of: key) {
                if let newValue { values[i] = newValue } else {
                    keys.remove(at: i)
                    values.remove(at: i)
                }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }

    /// Appends a member without looking for an existing one of the same name.
    public mutating func append(_ key: String, _ value: JSONValue) {
        keys.append(key)
        values.append(value)
    }
}

/// A JSON syntax error, with the byte offset where it was found.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var reason: String

    public init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }

    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}
