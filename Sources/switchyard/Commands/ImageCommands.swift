import Components
import ControlProtocol
import Foundation
import Registry
import Telemetry

#if canImport(Glibc)
import Glibc
#endif

let imageBuildCommand = Command(
    words: ["image", "build"],
    summary: "Write an OCI image archive of a serve with a model, without a container engine",
    options: [
        Option(name: "out", value: "FILE.tar", help: "the archive to write (written whole or not at all)", required: true),
        Option(name: "model", value: "NAME@ALIAS", help: "the model; its version now is baked in as a file", required: true),
        Option(name: "fetch", help: "bake nothing: the entrypoint fetches the model from --registry at start and follows the alias"),
        Option(name: "tag", value: "NAME:TAG", help: "the image's reference name in the archive", defaultValue: "switchyard-MODEL:VERSION, or :ALIAS with --fetch"),
        Option(name: "binary", value: "FILE", help: "the switchyard executable to ship", defaultValue: "this one; build it with -c release"),
        Option(name: "epoch", value: "SECONDS", help: "every file's time in the image, so equal inputs give an equal digest", defaultValue: "$SOURCE_DATE_EPOCH or 0"),
    ] + registryOptions,
    details: """
        The archive is an OCI image layout in a tar (skopeo's oci-archive: transport) with one layer:
        the binary, exactly the shared libraries it links (as its dynamic loader resolves them),
        CA certificates, a user 'switchyard' (10001) and SWITCHYARD_HOME=/var/lib/switchyard. The
        entrypoint runs 'switchyard serve' on the baked-in /model/model.json (or, with --fetch, on
        the model from SWITCHYARD_REGISTRY, with the key in SWITCHYARD_KEY); its default arguments
        are '--host 0.0.0.0 --port 8080'. Off loopback a serve needs keys: mount a keys file and add
        '--keys-file FILE' (see 'switchyard deploy k8s'). Labels name the model, version and sha256.

        Examples:
          switchyard image build --model credit@production --out credit.tar
          skopeo copy oci-archive:credit.tar docker://registry.example.com/credit:3
        """,
    run: { args in
        let out = try args.require("out")
        let reference = try args.require("model")
        let fetch = args.flag("fetch")
        let access = try registryAccess(args, events: EventLog())
        if fetch && access.client == nil {
            throw UsageError("--fetch needs --registry URL (or SWITCHYARD_REGISTRY): the image fetches the model from it at start")
        }
        let version = try registryCall { () throws(RegistryError) in try access.store.resolve(reference) }
        let bytes = fetch ? nil : try registryCall { () throws(RegistryError) in try access.store.artifact(sha256: version.sha256) }
        let binary = args.string("binary").flatMap { $0.hasPrefix("this one") ? nil : $0 }
            ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let epochText = args.string("epoch").flatMap { $0.hasPrefix("$SOURCE_DATE_EPOCH") ? nil : $0 }
            ?? ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"] ?? "0"
        guard let epoch = Int(epochText), epoch >= 0, epoch < 8_589_934_592 else {
            throw UsageError("--epoch (or SOURCE_DATE_EPOCH) must be whole seconds since 1970, got \"\(epochText)\"")
        }
        let tag = args.string("tag").flatMap { $0.contains("MODEL") ? nil : $0 } ?? defaultImage(version, reference: reference, fetched: fetch)
        guard tag.range(of: #"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"#, options: .regularExpression) != nil else {
            throw UsageError("--tag must look like NAME:TAG (letters, digits, . _ - /), got \"\(tag)\"")
        }
        let plan = ImagePlan(
            binary: binary, model: version, modelBytes: bytes, reference: fetch ? reference : version.reference,
            registry: access.client?.url, tag: tag, epoch: epoch)
        writeError("building \(tag): " + (fetch ? "its serve fetches \(reference) from \(access.client?.url ?? "") at start" : "baking in \(version.reference) (sha256 \(version.sha256.prefix(12)))"))
        let built = try OCIImage.build(plan, out: out) { writeError("  " + $0) }
        print("wrote \(out): \(tag), \(built.archiveBytes / 1_048_576) MiB, manifest sha256:\(built.manifestDigest)")
        print("  serves \(plan.reference)\(fetch ? " from the registry" : " (sha256 \(version.sha256))"); entrypoint \(OCIImage.entrypoint(plan).joined(separator: " "))")
        print("  push it: skopeo copy oci-archive:\(out) docker://REGISTRY/\(tag)")
        return Exit.ok
    })

let deployK8sCommand = Command(
    words: ["deploy", "k8s"],
    summary: "Print a Kubernetes Deployment, Service and PodDisruptionBudget for a serve image",
    options: [
        Option(name: "model", value: "NAME@ALIAS", help: "the model the image serves", required: true),
        Option(name: "replicas", value: "N", help: "serve replicas", defaultValue: "2"),
        Option(name: "image", value: "IMAGE", help: "the image ('switchyard image build', pushed)", defaultValue: "what image build names it"),
        Option(name: "drain-delay", value: "SECONDS", help: "how long a stopping pod keeps accepting while not ready", defaultValue: "5"),
        Option(name: "drain-timeout", value: "SECONDS", help: "how long requests in flight get to finish", defaultValue: "10"),
    ] + registryOptions,
    details: """
        The pods follow the drain: on SIGTERM a serve answers /readyz with 503, keeps accepting for
        --drain-delay while the Service takes it out of rotation, then lets requests in flight finish
        within --drain-timeout; terminationGracePeriodSeconds covers both. Rolling updates add one
        pod before removing one (maxUnavailable 0) and the PodDisruptionBudget keeps all but one up.
        Without --registry the image's baked-in model is served and keys come from a Secret
        mounted as a keys file; with it, the pods fetch the model and follow the alias, with the
        key in the Secret 'switchyard-registry-key'.

        Example:
          switchyard deploy k8s --model credit@production --replicas 3 --image registry.example.com/credit:3 | kubectl apply -f -
        """,
    run: { args in
        let reference = try args.require("model")
        let replicas = try args.integer("replicas", range: 1...1000) ?? 2
        let delay = Int(try args.seconds("drain-delay", zeroAllowed: true) ?? 5)
        let timeout = Int(try args.seconds("drain-timeout", zeroAllowed: true) ?? 10)
        let access = try registryAccess(args, events: EventLog())
        let version = try registryCall { () throws(RegistryError) in try access.store.resolve(reference) }
        let image = args.string("image").flatMap { $0.hasPrefix("what image build") ? nil : $0 }
            ?? defaultImage(version, reference: reference, fetched: access.client != nil)
        print(kubernetesManifests(
            model: version, reference: reference, replicas: replicas, image: image, registry: access.client?.url, delay: delay, timeout: timeout),
            terminator: "")
        return Exit.ok
    })

/// `switchyard-NAME:VERSION` for a baked model; `switchyard-NAME:ALIAS` for one fetched at start.
func defaultImage(_ version: ModelVersion, reference: String, fetched: Bool) -> String {
    let alias = reference.split(separator: "@", maxSplits: 1).dropFirst().first.map(String.init) ?? "production"
    return "switchyard-\(version.model):" + (fetched ? alias : String(version.version))
}

/// A Deployment, Service and PodDisruptionBudget for `image`, wired to the serve's probes and drain.
func kubernetesManifests(model: ModelVersion, reference: String, replicas: Int, image: String, registry: String?, delay: Int, timeout: Int) -> String {
    let name = "switchyard-" + model.model.lowercased().map { $0.isLetter || $0.isNumber ? String($0) : "-" }.joined()
    let keysSecret = "\(name)-keys"
    let labels = "{app.kubernetes.io/name: \(name), app.kubernetes.io/part-of: switchyard}"
    var arguments = ["--host", "0.0.0.0", "--port", "8080", "--drain-delay", "\(delay)", "--drain-timeout", "\(timeout)"]
    var lines: [String] = []
    if let registry {
        lines += [
            "# The pods (an image built with 'switchyard image build --fetch') fetch \(reference) from \(registry)",
            "# and follow it as it moves; callers' keys are the registry's.",
            "# Their key (scope operate) comes from a Secret:",
            "#   kubectl create secret generic switchyard-registry-key --from-literal=key=$(switchyard keys create --scope operate --name k8s)",
        ]
    } else {
        arguments += ["--keys-file", "/etc/switchyard/keys"]
        lines += [
            "# The image serves its baked-in \(model.reference) (sha256 \(model.sha256)).",
            "# Callers' keys come from a Secret holding a keys file ('SCOPE KEY [NAME]' per line), reread every 2 s:",
            "#   kubectl create secret generic \(keysSecret) --from-literal=keys=\"predict $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n') my-app\"",
        ]
    }
    lines += [
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata:",
        "  name: \(name)",
        "  labels: \(labels)",
        "  annotations: {switchyard.io/model: \"\(model.reference)\", switchyard.io/sha256: \"\(model.sha256)\"}",
        "spec:",
        "  replicas: \(replicas)",
        "  selector:",
        "    matchLabels: {app.kubernetes.io/name: \(name)}",
        "  strategy:",
        "    type: RollingUpdate",
        "    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}",
        "  template:",
        "    metadata:",
        "      labels: \(labels)",
        "    spec:",
        "      terminationGracePeriodSeconds: \(delay + timeout + 5)",
        "      securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001}",
        "      containers:",
        "        - name: serve",
        "          image: \(image)",
        "          args: [\(arguments.map { "\"\($0)\"" }.joined(separator: ", "))]",
        "          ports:",
        "            - {name: http, containerPort: 8080}",
    ]
    if let registry {
        lines += [
            "          env:",
            "            - {name: SWITCHYARD_REGISTRY, value: \"\(registry)\"}",
            "            - name: SWITCHYARD_KEY",
            "              valueFrom: {secretKeyRef: {name: switchyard-registry-key, key: key}}",
        ]
    }
    lines += [
        "          readinessProbe:",
        "            httpGet: {path: /readyz, port: http}",
        "            periodSeconds: 2",
        "            failureThreshold: 1",
        "          livenessProbe:",
        "            httpGet: {path: /healthz, port: http}",
        "            periodSeconds: 10",
        "            failureThreshold: 3",
        "          resources:",
        "            requests: {cpu: 500m, memory: 128Mi}",
        "            limits: {memory: 512Mi}",
        "          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}",
        "          volumeMounts:",
        "            - {name: home, mountPath: /var/lib/switchyard}",
    ]
    if registry == nil { lines.append("            - {name: keys, mountPath: /etc/switchyard, readOnly: true}") }
    lines += [
        "      volumes:",
        "        - {name: home, emptyDir: {}}",
    ]
    if registry == nil { lines.append("        - {name: keys, secret: {secretName: \(keysSecret)}}") }
    lines += [
        "---",
        "apiVersion: v1",
        "kind: Service",
        "metadata:",
        "  name: \(name)",
        "  labels: \(labels)",
        "spec:",
        "  selector: {app.kubernetes.io/name: \(name)}",
        "  ports:",
        "    - {name: http, port: 80, targetPort: http}",
        "---",
        "apiVersion: policy/v1",
        "kind: PodDisruptionBudget",
        "metadata:",
        "  name: \(name)",
        "spec:",
        "  maxUnavailable: 1",
        "  selector:",
        "    matchLabels: {app.kubernetes.io/name: \(name)}",
    ]
    return lines.joined(separator: "\n") + "\n"
}
