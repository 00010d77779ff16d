// swift-tools-version:5.9
// The iOS cashier demo's app model (PosDemoKit), over the repository's
// PosCore package (bindings/swift, by relative path). `cargo xtask test`
// builds and tests it on Linux Swift against the real library; the SwiftUI
// views under Sources/PosDemoKit/SwiftUI are compiled only where SwiftUI
// exists (`#if canImport(SwiftUI)`). The Xcode app is ios-demo/App.
import PackageDescription

let package = Package(
    name: "PosDemoKit",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [.library(name: "PosDemoKit", targets: ["PosDemoKit"])],
    dependencies: [.package(name: "PosCore", path: "../../bindings/swift")],
    targets: [
        .target(
            name: "PosDemoKit",
            dependencies: [.product(name: "PosCore", package: "PosCore")],
            path: "Sources/PosDemoKit"
        ),
        .testTarget(name: "PosDemoKitTests", dependencies: ["PosDemoKit"], path: "Tests/PosDemoKitTests"),
    ]
)
