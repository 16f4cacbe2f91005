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
            name: "CPostgres",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
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
        .target(name: "ControlProtocol", dependencies: ["JSON", "Scoring", "HTTP"], swiftSettings: strict),
        .target(name: "Registry", dependencies: ["ControlProtocol", "JSON", "Scoring", "CSQLite", "CPostgres", "CSystem"], swiftSettings: strict),
        .target(
            name: "Components",
            dependencies: ["ControlProtocol", "JSON", "Scoring", "Registry", "HTTP", "Telemetry", "CSystem"],
            swiftSettings: strict
        ),
        .target(
            name: "Console",
            dependencies: ["ControlProtocol", "JSON", "Scoring", "HTTP", "CNcurses", "CSystem"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: ["ControlProtocol", "JSON", "Scoring", "Registry", "HTTP", "Telemetry", "Components", "Console", "CSystem"],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .testTarget(name: "ScoringTests", dependencies: ["JSON", "Scoring"], swiftSettings: strict),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP"], swiftSettings: strict),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry"], swiftSettings: strict),
        .testTarget(
            name: "ComponentsTests",
            dependencies: ["Components", "ControlProtocol", "HTTP", "JSON", "Registry", "Scoring", "Telemetry"],
            swiftSettings: strict
        ),
        .testTarget(name: "RegistryTests", dependencies: ["ControlProtocol", "Registry", "Scoring", "CSystem", "TestSupport"], swiftSettings: strict),
        // A PostgreSQL server of a test's own (RegistryTests, CLITests).
        .target(name: "TestSupport", dependencies: ["ControlProtocol", "Registry"], path: "Tests/Support", swiftSettings: strict),
        .testTarget(
            name: "ConsoleTests",
            dependencies: ["Console", "Components", "ControlProtocol", "JSON", "Scoring", "HTTP", "Registry", "Telemetry"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["switchyard", "ControlProtocol", "JSON", "Scoring", "HTTP", "CSystem", "TestSupport"],
            swiftSettings: strict
        ),
    ]
)
