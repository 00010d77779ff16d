import Foundation
@testable import PosCore

/// A file-backed stand-in for the iOS Keychain, for tests on Linux: a random
/// 256-bit key in a file. A real app keeps it in the Keychain (see
/// bindings/swift/README.md). `locked = true` plays a locked device.
final class FileKeyProvider: KeyProvider, @unchecked Sendable {
    let url: URL
    var locked = false

    init(_ url: URL) { self.url = url }

    func keyEncryptionKey() throws -> KeyMaterial {
        if locked { throw KeyProviderError.Unavailable }
        if !FileManager.default.fileExists(atPath: url.path) {
            var key = Data(count: 32)
            for i in 0..<32 { key[i] = UInt8.random(in: 0...255) }
            try key.write(to: url)
        }
        return KeyMaterial(keyId: "kek-1", key: try Data(contentsOf: url))
    }
}

func testKeys(for dataDir: String) -> FileKeyProvider {
    FileKeyProvider(URL(fileURLWithPath: dataDir + ".kek"))
}
