// swift-tools-version:5.9
// The Swift package of POS Core. `cargo xtask test` generates
// Sources/PosCoreFFI/{PosCoreFFI.h,module.modulemap} and
// Sources/PosCore/Generated/PosCore.swift from the Rust library, then runs
// `swift test` here. POS_FFI_LIB_DIR names the folder of libpos_ffi
// (default: the workspace's target/debug).
import Foundation
import PackageDescription

let libDir = ProcessInfo.processInfo.environment["POS_FFI_LIB_DIR"]
    ?? "\(Context.packageDirectory)/../../target/debug"

let package = Package(
    name: "PosCore",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [.library(name: "PosCore", targets: ["PosCore"])],
    targets: [
        .systemLibrary(name: "PosCoreFFI", path: "Sources/PosCoreFFI"),
        .target(
            name: "PosCore",
            dependencies: ["PosCoreFFI"],
            path: "Sources/PosCore",
            linkerSettings: [
                .linkedLibrary("pos_ffi"),
                .unsafeFlags(["-L", libDir, "-Xlinker", "-rpath", "-Xlinker", libDir]),
            ]
        ),
        .testTarget(name: "PosCoreTests", dependencies: ["PosCore"], path: "Tests/PosCoreTests"),
    ]
)
