// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "switchyard",
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
    ],
    targets: [
        // MARK: - System libraries and C shims
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CNcurses",
            pkgConfig: "ncursesw",
            providers: [.apt(["libncurses-dev"])]
        ),
        .target(name: "CSystem"),

        // MARK: - Layers (dependencies point down only; see shared/DESIGN.md)
        .target(name: "JSON", swiftSettings: strict),
        .target(name: "Scoring", dependencies: ["JSON", "CSystem"], swiftSettings: strict),
        .target(name: "Telemetry", dependencies: ["CSystem"], swiftSettings: strict),
        .target(name: "HTTP", dependencies: ["CSystem"], swiftSettings: strict),
        .target(name: "Registry", dependencies: ["JSON", "Scoring", "CSQLite"], swiftSettings: strict),
        .target(
            name: "Components",
            dependencies: ["JSON", "Scoring", "Registry", "HTTP", "Telemetry", "CSystem"],
            swiftSettings: strict
        ),
        .target(
            name: "Console",
            dependencies: ["JSON", "Scoring", "Registry", "HTTP", "CNcurses", "CSystem"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: ["JSON", "Scoring", "Registry", "HTTP", "Telemetry", "Components", "Console", "CSystem"],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .testTarget(name: "ScoringTests", dependencies: ["JSON", "Scoring"], swiftSettings: strict),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP"], swiftSettings: strict),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry"], swiftSettings: strict),
        .testTarget(
            name: "ComponentsTests",
            dependencies: ["Components", "HTTP", "JSON", "Registry", "Scoring", "Telemetry"],
            swiftSettings: strict
        ),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "Scoring"], swiftSettings: strict),
        .testTarget(name: "ConsoleTests", dependencies: ["Console", "JSON", "Scoring", "HTTP", "Registry"], swiftSettings: strict),
        .testTarget(
            name: "CLITests",
            dependencies: ["switchyard", "JSON", "Scoring", "HTTP", "CSystem"],
            swiftSettings: strict
        ),
    ]
)
