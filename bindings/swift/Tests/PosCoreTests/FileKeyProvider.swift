import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import PosCore

/// A file-backed stand-in for the iOS Keychain, for tests on Linux: a random
/// 256-bit key in a file, and each store's rollback anchor in a file beside
/// it (`<key file>.anchor-<store id>`), replaced atomically. Keep the key
/// file outside the engine's data folder, or a copy of that folder rolls the
/// anchor back with the store. A real app keeps both in the Keychain (see
/// bindings/swift/README.md). `locked = true` plays a locked device;
/// `failAnchorSaves = true` a keychain that refuses writes.
final class FileKeyProvider: KeyProvider, @unchecked Sendable {
    let url: URL
    var locked = false
    var failAnchorSaves = false
    private let lock = NSLock()

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

    private func anchorPath(_ storeId: String) throws -> String {
        let hex = storeId.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
        guard hex, !storeId.isEmpty, storeId.count <= 64 else {
            throw KeyProviderError.Failed(reason: "invalid store id for an anchor")
        }
        return url.path + ".anchor-" + storeId
    }

    /// Temp file, fsync, rename over the old anchor, fsync the folder.
    func saveAnchor(storeId: String, anchor: Data) throws {
        lock.lock()
        defer { lock.unlock() }
        if locked { throw KeyProviderError.Unavailable }
        if failAnchorSaves { throw KeyProviderError.Failed(reason: "anchor write refused") }
        let target = try anchorPath(storeId)
        let tmp = target + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw KeyProviderError.Failed(reason: "cannot create the anchor file (errno \(errno))") }
        let written = anchor.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count }
        let synced = written && fsync(fd) == 0
        close(fd)
        guard synced, rename(tmp, target) == 0 else {
            throw KeyProviderError.Failed(reason: "cannot write the anchor file (errno \(errno))")
        }
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 {
            _ = fsync(dir)
            close(dir)
        }
    }

    /// Nil only when no anchor file exists; any other failure throws.
    func loadAnchor(storeId: String) throws -> Data? {
        lock.lock()
        defer { lock.unlock() }
        if locked { throw KeyProviderError.Unavailable }
        let path = try anchorPath(storeId)
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw KeyProviderError.Failed(reason: "cannot open the anchor file (errno \(errno))")
        }
        close(fd)
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KeyProviderError.Failed(reason: "cannot read the anchor file")
        }
    }
}

func testKeys(for dataDir: String) -> FileKeyProvider {
    FileKeyProvider(URL(fileURLWithPath: dataDir + ".kek"))
}
