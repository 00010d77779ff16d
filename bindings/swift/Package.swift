// swift-tools-version:5.9
// The Swift package of POS Core.
//
// On Linux (what `cargo xtask test` runs; Apple platforms are not built
// here): `cargo xtask test` generates Sources/PosCoreFFI/{PosCoreFFI.h,
// module.modulemap} and Sources/PosCore/Generated/PosCore.swift from the
// Rust library, then runs `swift test` here. PosCoreFFI is a system-library
// target linked with `-L` and an rpath to POS_FFI_LIB_DIR (default: the
// workspace's target/debug): unsafe flags, so on Linux this package works
// as a root package or a local one (`path:`), not as a remote dependency.
//
// On Apple platforms (NOT BUILT HERE: no macOS or Xcode on these machines):
// PosCoreFFI is the binary target PosCoreFFI.xcframework, made by
// `cargo xtask xcframework` on a Mac (docs/packaging.md): the local copy
// beside this file when there is one, else the release zip at
// `xcframeworkURL` with `xcframeworkChecksum`. No unsafe flags, so SwiftPM
// accepts the package as a remote dependency (from a repository whose root
// is this folder, with Sources/PosCore/Generated/PosCore.swift committed in
// the release). PrivacyInfo.xcprivacy is bundled as a resource.
import Foundation
import PackageDescription

/// The release's PosCoreFFI.xcframework.zip and its checksum
/// (`cargo xtask xcframework` prints it; `swift package compute-checksum`).
let xcframeworkURL = "https://example.invalid/pos-core/releases/0.1.0/PosCoreFFI.xcframework.zip"
let xcframeworkChecksum = "0000000000000000000000000000000000000000000000000000000000000000"

#if os(Linux)
let libDir = ProcessInfo.processInfo.environment["POS_FFI_LIB_DIR"]
    ?? "\(Context.packageDirectory)/../../target/debug"
let ffiTarget: Target = .systemLibrary(name: "PosCoreFFI", path: "Sources/PosCoreFFI")
let coreLinkerSettings: [LinkerSetting] = [
    .linkedLibrary("pos_ffi"),
    .unsafeFlags(["-L", libDir, "-Xlinker", "-rpath", "-Xlinker", libDir]),
]
let coreResources: [Resource] = []
// Apple's privacy manifest means nothing here.
let coreExclude = ["PrivacyInfo.xcprivacy"]
#else
let localXCFramework = "PosCoreFFI.xcframework"
let ffiTarget: Target =
    FileManager.default.fileExists(atPath: "\(Context.packageDirectory)/\(localXCFramework)")
    ? .binaryTarget(name: "PosCoreFFI", path: localXCFramework)
    : .binaryTarget(name: "PosCoreFFI", url: xcframeworkURL, checksum: xcframeworkChecksum)
let coreLinkerSettings: [LinkerSetting] = []
let coreResources: [Resource] = [.copy("PrivacyInfo.xcprivacy")]
let coreExclude: [String] = []
#endif

let package = Package(
    name: "PosCore",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [.library(name: "PosCore", targets: ["PosCore"])],
    targets: [
        ffiTarget,
        .target(
            name: "PosCore",
            dependencies: ["PosCoreFFI"],
            path: "Sources/PosCore",
            exclude: coreExclude,
            resources: coreResources,
            linkerSettings: coreLinkerSettings
        ),
        .testTarget(name: "PosCoreTests", dependencies: ["PosCore"], path: "Tests/PosCoreTests"),
    ]
)
