import ControlProtocol
import Foundation
import Scoring

/// One model document from a file, as the only version there is: `serve --model-file`, which a
/// container image runs with the model baked in (no registry, no SWITCHYARD_HOME models).
public final class ModelFile: ModelSource {
    public let version: ModelVersion
    private let document: ModelDocument

    /// `label` (`NAME@N`) names the version the file is in a registry, for responses and status;
    /// without it the file's own model name and version 1.
    public init(path: String, label: String?) throws(RegistryError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RegistryError(FileManager.default.fileExists(atPath: path) ? "cannot read the model file \(path)" : "no such model file: \(path)")
        }
        do {
            document = try ModelDocument.decode(data)
        } catch {
            throw RegistryError("\(path) is not a switchyard model document: \(error)", status: 400)
        }
        var name = document.metadata.name
        var number = 1
        if let label {
            let parts = label.split(separator: "@", maxSplits: 1)
            guard parts.count == 2, let n = Int(parts[1]), n >= 1, !parts[0].isEmpty else {
                throw RegistryError("--model with --model-file names the file's version as NAME@N (a whole number), got \"\(label)\"", status: 400)
            }
            (name, number) = (String(parts[0]), n)
        }
        version = ModelVersion(
            model: name, version: number, sha256: SHA256.hex([UInt8](data)), createdAt: document.metadata.created, createdBy: "file:\(path)",
            metrics: [:], aliases: [])
    }

    /// The file's version, whatever the alias or version asked for: a file is one version.
    public func resolve(_ reference: String) throws(RegistryError) -> ModelVersion {
        let name = reference.split(separator: "@", maxSplits: 1).first.map(String.init) ?? reference
        guard name == version.model else { throw RegistryError("this server serves only \(version.model) (from a file), not \(name)") }
        return version
    }

    public func document(_ version: ModelVersion) throws(RegistryError) -> ModelDocument {
        guard version.isSame(as: self.version) else { throw RegistryError("only \(self.version.reference) is served from the file") }
        return document
    }
}

/// API keys from a file an orchestrator mounts (a Kubernetes Secret), reread on every refresh so
/// a changed Secret takes effect within seconds. One key per line: `SCOPE KEY [NAME]`, where KEY is
/// the key itself or `sha256:HEX` of it (so the file need not hold the secret); blank lines and
/// lines starting with `#` are skipped.
public final class KeyFile: KeySource {
    public let path: String

    /// Reads the file once, so a mistake stops the start with the line that is wrong.
    public init(path: String) throws(RegistryError) {
        self.path = path
        _ = try activeKeys()
    }

    public func activeKeys() throws(RegistryError) -> [String: (id: String, scope: Scope)] {
        guard let data = FileManager.default.contents(atPath: path) else { throw RegistryError("cannot read the keys file \(path)") }
        return try Self.parse(String(decoding: data, as: UTF8.self), path: path)
    }

    static func parse(_ text: String, path: String) throws(RegistryError) -> [String: (id: String, scope: Scope)] {
        var keys: [String: (id: String, scope: Scope)] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            let at = "\(path), line \(index + 1)"
            guard fields.count >= 2 else { throw RegistryError("\(at): expected 'SCOPE KEY [NAME]'", status: 400) }
            guard let scope = Scope(rawValue: String(fields[0])) else {
                throw RegistryError("\(at): scope \"\(fields[0])\" is not one of read, predict, operate, admin", status: 400)
            }
            let key = fields[1]
            let hash: String
            if key.hasPrefix("sha256:") {
                hash = String(key.dropFirst(7)).lowercased()
                guard hash.count == 64, hash.allSatisfy(\.isHexDigit) else { throw RegistryError("\(at): sha256: must be followed by 64 hex digits", status: 400) }
            } else {
                guard key.count >= 16 else { throw RegistryError("\(at): a key must be at least 16 characters", status: 400) }
                hash = KeyStore.hash(String(key))
            }
            let id = fields.count > 2 ? fields[2...].joined(separator: " ") : "file-line-\(index + 1)"
            keys[hash] = (id, scope)
        }
        return keys
    }
}
