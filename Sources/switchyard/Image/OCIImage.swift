import ControlProtocol
import Foundation
import JSON
import Scoring

#if canImport(Glibc)
import Glibc
#endif

/// What goes into a serve image.
struct ImagePlan {
    /// The switchyard executable to ship.
    var binary: String
    /// The version resolved when the image was built (its labels).
    var model: ModelVersion
    /// The model document baked in as `/model/model.json`; nil when the entrypoint fetches the
    /// model from `registry` at start (and follows `reference` as it moves).
    var modelBytes: [UInt8]?
    /// What the entrypoint serves: `NAME@N` for a baked model, the reference given for a fetched one.
    var reference: String
    var registry: String?
    /// `NAME:TAG`, the archive's reference name.
    var tag: String
    /// Every file's time in the layer (seconds since 1970): fixed, so equal inputs give an equal digest.
    var epoch: Int
    /// The system's CA certificates, for the registry's TLS.
    var certificates = "/etc/ssl/certs/ca-certificates.crt"
}

/// An OCI image archive (the `oci-archive:` transport of skopeo, an OCI image layout in a tar),
/// written without a container engine: one uncompressed layer with the binary, exactly the shared
/// libraries it links (as the dynamic loader resolves them), CA certificates, a non-root user and
/// a writable SWITCHYARD_HOME.
enum OCIImage {
    static let user = TarWriter.Owner(uid: 10001, gid: 10001)
    static let home = "/var/lib/switchyard"
    static let binaryPath = "/usr/local/bin/switchyard"
    static let modelPath = "/model/model.json"

    struct Built {
        var manifestDigest: String
        var archiveBytes: Int
    }

    static func build(_ plan: ImagePlan, out: String, progress: (String) -> Void) throws -> Built {
        guard FileManager.default.isReadableFile(atPath: plan.certificates) else {
            throw CommandError("no CA certificates at \(plan.certificates): install them (apt-get install ca-certificates)")
        }
        let libraries = try sharedLibraries(of: plan.binary)
        progress("the binary links \(libraries.count) shared libraries (found by its loader)")

        var entries: [String: LayerEntry] = [:]
        func add(_ path: String, _ entry: LayerEntry) {
            var parent = (path as NSString).deletingLastPathComponent
            while parent != "/" && !parent.isEmpty {
                if entries[parent] == nil { entries[parent] = .directory(0o755, .root) }
                parent = (parent as NSString).deletingLastPathComponent
            }
            entries[path] = entry
        }
        add(binaryPath, .copy(plan.binary, 0o755))
        for library in libraries { add(library.path, .copy(library.file, 0o755)) }
        add("/etc/passwd", .bytes(Array("root:x:0:0:root:/root:/sbin/nologin\nswitchyard:x:10001:10001:switchyard:\(home):/sbin/nologin\n".utf8), 0o644))
        add("/etc/group", .bytes(Array("root:x:0:\nswitchyard:x:10001:\n".utf8), 0o644))
        add("/etc/nsswitch.conf", .bytes(Array("passwd: files\ngroup: files\nhosts: files dns\n".utf8), 0o644))
        add("/etc/ssl/certs/ca-certificates.crt", .copy(plan.certificates, 0o644))
        if let model = plan.modelBytes { add(modelPath, .bytes(model, 0o444)) }
        add(home, .directory(0o700, user))
        add("/tmp", .directory(0o1777, .root))
        for mountPoint in ["/proc", "/sys", "/dev"] { add(mountPoint, .directory(0o755, .root)) }

        let folder = (out as NSString).deletingLastPathComponent.isEmpty ? "." : (out as NSString).deletingLastPathComponent
        let layerFile = "\(folder)/.\((out as NSString).lastPathComponent).layer-\(getpid())"
        let partial = "\(folder)/.\((out as NSString).lastPathComponent).partial-\(getpid())"
        defer {
            unlink(layerFile)
            unlink(partial)
        }
        var layer = try TarWriter(path: layerFile, modified: plan.epoch)
        for path in entries.keys.sorted() {
            let name = String(path.dropFirst())  // relative to the root
            switch entries[path]! {
            case .directory(let mode, let owner): try layer.directory(name, mode: mode, owner: owner)
            case .bytes(let bytes, let mode): try layer.file(name, bytes: bytes, mode: mode)
            case .copy(let source, let mode): try layer.file(name, copying: source, mode: mode)
            }
        }
        let layerDigest = try layer.finish()
        progress("layer: \(entries.count) entries, \(layer.size / 1_048_576) MiB, sha256:\(layerDigest.prefix(12))")

        let config = json(configuration(plan, layerDigest: layerDigest))
        let configDigest = SHA256.hex(config)
        let manifest = json(.object(JSONObject(pairs: [
            ("schemaVersion", .number(2)),
            ("mediaType", .string("application/vnd.oci.image.manifest.v1+json")),
            ("config", descriptor("application/vnd.oci.image.config.v1+json", configDigest, config.count)),
            ("layers", .array([descriptor("application/vnd.oci.image.layer.v1.tar", layerDigest, layer.size)])),
            ("annotations", .object(JSONObject(pairs: labels(plan).map { ($0.0, .string($0.1)) }))),
        ])))
        let manifestDigest = SHA256.hex(manifest)
        var manifestDescriptor = descriptor("application/vnd.oci.image.manifest.v1+json", manifestDigest, manifest.count)
        if case .object(var o) = manifestDescriptor {
            o.append("annotations", .object(JSONObject(pairs: [("org.opencontainers.image.ref.name", .string(plan.tag))])))
            manifestDescriptor = .object(o)
        }
        let index = json(.object(JSONObject(pairs: [
            ("schemaVersion", .number(2)),
            ("mediaType", .string("application/vnd.oci.image.index.v1+json")),
            ("manifests", .array([manifestDescriptor])),
        ])))

        var archive = try TarWriter(path: partial, modified: plan.epoch)
        try archive.directory("blobs")
        try archive.directory("blobs/sha256")
        var blobs: [(String, LayerEntry)] = [(configDigest, .bytes(config, 0o644)), (layerDigest, .copy(layerFile, 0o644)), (manifestDigest, .bytes(manifest, 0o644))]
        blobs.sort { $0.0 < $1.0 }
        for (digest, blob) in blobs {
            switch blob {
            case .bytes(let bytes, _): try archive.file("blobs/sha256/\(digest)", bytes: bytes)
            case .copy(let source, _): try archive.file("blobs/sha256/\(digest)", copying: source)
            case .directory: break
            }
        }
        try archive.file("index.json", bytes: index)
        try archive.file("oci-layout", bytes: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        _ = try archive.finish()
        guard rename(partial, out) == 0 else { throw CommandError("cannot write \(out): \(String(cString: strerror(errno)))") }
        return Built(manifestDigest: manifestDigest, archiveBytes: archive.size)
    }

    private enum LayerEntry {
        case directory(Int, TarWriter.Owner)
        case bytes([UInt8], Int)
        /// A file's content, copied from a path on this machine.
        case copy(String, Int)
    }

    /// The entrypoint and its default arguments.
    static func entrypoint(_ plan: ImagePlan) -> [String] {
        plan.modelBytes != nil
            ? [binaryPath, "serve", "--model-file", modelPath, "--model", plan.model.reference]
            : [binaryPath, "serve", "--model", plan.reference]
    }

    static func labels(_ plan: ImagePlan) -> [(String, String)] {
        [
            ("org.opencontainers.image.title", "switchyard serve \(plan.model.model)"),
            ("org.opencontainers.image.version", version),
            ("io.switchyard.model.name", plan.model.model),
            ("io.switchyard.model.version", String(plan.model.version)),
            ("io.switchyard.model.sha256", plan.model.sha256),
            ("io.switchyard.model.serves", plan.reference),
            ("io.switchyard.model.source", plan.modelBytes != nil ? "baked:\(modelPath)" : "registry:\(plan.registry ?? "")"),
        ]
    }

    private static func configuration(_ plan: ImagePlan, layerDigest: String) -> JSONValue {
        var environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "SWITCHYARD_HOME=\(home)"]
        if plan.modelBytes == nil, let registry = plan.registry { environment.append("SWITCHYARD_REGISTRY=\(registry)") }
        let created = isoTimestamp(Date(timeIntervalSince1970: Double(plan.epoch)))
        return .object(JSONObject(pairs: [
            ("created", .string(created)),
            ("architecture", .string(architecture)),
            ("os", .string("linux")),
            ("config", .object(JSONObject(pairs: [
                ("User", .string("\(user.uid):\(user.gid)")),
                ("Env", .array(environment.map(JSONValue.string))),
                ("Entrypoint", .array(entrypoint(plan).map(JSONValue.string))),
                ("Cmd", .array(["--host", "0.0.0.0", "--port", "8080"].map(JSONValue.string))),
                ("ExposedPorts", .object(JSONObject(pairs: [("8080/tcp", .object(JSONObject()))]))),
                ("WorkingDir", .string(home)),
                ("Labels", .object(JSONObject(pairs: labels(plan).map { ($0.0, .string($0.1)) }))),
                ("StopSignal", .string("SIGTERM")),
            ]))),
            ("rootfs", .object(JSONObject(pairs: [("type", .string("layers")), ("diff_ids", .array([.string("sha256:\(layerDigest)")]))]))),
            ("history", .array([.object(JSONObject(pairs: [("created", .string(created)), ("created_by", .string("switchyard image build"))]))])),
        ]))
    }

    private static var architecture: String {
        #if arch(x86_64)
        "amd64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown"
        #endif
    }

    private static func descriptor(_ mediaType: String, _ digest: String, _ size: Int) -> JSONValue {
        .object(JSONObject(pairs: [("mediaType", .string(mediaType)), ("digest", .string("sha256:\(digest)")), ("size", .number(Double(size)))]))
    }

    private static func json(_ value: JSONValue) -> [UInt8] {
        var writer = JSONWriter()
        writer.value(value)
        return writer.bytes
    }

    // MARK: - Shared libraries

    /// The libraries `binary` loads, as its own dynamic loader resolves them (`LOADER --list`,
    /// what ldd runs), each with the path it is loaded from and the file holding it; the loader too.
    static func sharedLibraries(of binary: String) throws -> [(path: String, file: String)] {
        let loader = try interpreter(of: binary)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: loader)
        process.arguments = ["--list", binary]
        var environment = ProcessInfo.processInfo.environment
        for name in ["LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT"] { environment[name] = nil }  // the image's loader sees none
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let listing = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let problem = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CommandError("\(loader) --list \(binary) failed: \(problem)") }
        var found: [(path: String, file: String)] = [(loader, realPath(loader))]
        for line in listing.split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.contains("=> not found") { throw CommandError("\(binary) needs \(text.split(separator: " ")[0]), which this machine does not have") }
            let path: Substring
            if let arrow = text.range(of: " => ") {
                path = text[arrow.upperBound...].prefix { $0 != " " }
            } else {
                path = text.prefix { $0 != " " }
            }
            guard path.hasPrefix("/"), !found.contains(where: { $0.path == path }) else { continue }  // the vDSO has no file
            found.append((String(path), realPath(String(path))))
        }
        return found
    }

    private static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The ELF program interpreter (PT_INTERP) of a 64-bit little-endian executable.
    static func interpreter(of binary: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: binary) else { throw CommandError("cannot read \(binary)") }
        let bytes = [UInt8](data)
        func integer(_ offset: Int, _ width: Int) -> Int? {
            guard offset >= 0, width <= 8, offset <= bytes.count - width else { return nil }
            var value: UInt64 = 0
            for i in (0..<width).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
            return value > UInt64(Int.max) ? nil : Int(value)
        }
        guard bytes.count >= 64, bytes[0..<4].elementsEqual([0x7F, 0x45, 0x4C, 0x46]), bytes[4] == 2, bytes[5] == 1 else {
            throw CommandError("\(binary) is not a 64-bit little-endian ELF executable")
        }
        guard let table = integer(32, 8), let entrySize = integer(54, 2), let count = integer(56, 2), entrySize >= 56 else {
            throw CommandError("\(binary): unreadable ELF header")
        }
        for index in 0..<count {
            let (product, overflow) = index.multipliedReportingOverflow(by: entrySize)
            guard !overflow, case let (at, o2) = table.addingReportingOverflow(product), !o2 else { break }
            guard let type = integer(at, 4) else { break }
            if type == 3, let offset = integer(at + 8, 8), let size = integer(at + 32, 8), size > 1, offset <= bytes.count - size {
                return String(decoding: bytes[offset..<(offset + size - 1)], as: UTF8.self)  // NUL-terminated
            }
        }
        throw CommandError("\(binary) has no program interpreter: a static binary needs no libraries, but this builder expects a dynamic one")
    }
}

extension JSONObject {
    /// Members in the order given (an image's JSON is hashed, so its order is part of its digest).
    init(pairs: [(String, JSONValue)]) {
        self.init()
        for (key, value) in pairs { append(key, value) }
    }
}
