// swift-tools-version:5.9
// The FFI cost measured from Swift: a bench program, not a test. Run by
// `cargo xtask bench` (xtask/src/bench.rs), which writes the generated
// bindings of the release library into Sources/PosCoreFFI and
// Sources/PosCoreBench/Generated (not in git), builds this package with
// `swift build -c release` and runs it. A package of its own, so that the
// bench neither touches ../Package.swift nor the bindings generated there
// from the debug library. Linux only (unsafe flags: -L and an rpath to
// POS_FFI_LIB_DIR, default the workspace's target/release).
import Foundation
import PackageDescription

let libDir = ProcessInfo.processInfo.environment["POS_FFI_LIB_DIR"]
    ?? "\(Context.packageDirectory)/../../../target/release"

let package = Package(
    name: "PosCoreBench",
    targets: [
        .systemLibrary(name: "PosCoreFFI", path: "Sources/PosCoreFFI"),
        .executableTarget(
            name: "PosCoreBench",
            dependencies: ["PosCoreFFI"],
            path: "Sources/PosCoreBench",
            linkerSettings: [
                .linkedLibrary("pos_ffi"),
                .unsafeFlags(["-L", libDir, "-Xlinker", "-rpath", "-Xlinker", libDir]),
            ]
        ),
    ]
)
