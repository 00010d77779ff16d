import Foundation
import PosCore

/// Demo mode on Linux and in the simulator only: a random key in a file and
/// each store's rollback anchor beside it, replaced atomically. Keep `dir`
/// outside the engine's data folder. The iOS app uses KeychainKeyProvider
/// (ios-demo/App/KeychainKeyProvider.swift) in every mode. `locked` plays a
/// locked phone.
public final class FileKeys: KeyProvider, @unchecked Sendable {
    private let dir: URL
    private let lock = NSLock()
    private var _locked: Bool

    public init(dir: URL, locked: Bool = false) {
        self.dir = dir
        _locked = locked
    }

    public var locked: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _locked }
        set { lock.lock(); _locked = newValue; lock.unlock() }
    }

    public func keyEncryptionKey() throws -> KeyMaterial {
        lock.lock(); defer { lock.unlock() }
        if _locked { throw KeyProviderError.Unavailable }
        let file = dir.appendingPathComponent("kek")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: file.path) {
                var rng = SystemRandomNumberGenerator()
                try Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }).write(to: file, options: .atomic)
            }
            return KeyMaterial(keyId: "demo-file-1", key: try Data(contentsOf: file))
        } catch {
            throw KeyProviderError.Failed(reason: "key file: \(type(of: error))")
        }
    }

    private func anchorFile(_ storeId: String) throws -> URL {
        let hex = !storeId.isEmpty && storeId.count <= 64
            && storeId.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
        guard hex else { throw KeyProviderError.Failed(reason: "invalid store id") }
        return dir.appendingPathComponent("anchor-\(storeId)")
    }

    public func saveAnchor(storeId: String, anchor: Data) throws {
        lock.lock(); defer { lock.unlock() }
        if _locked { throw KeyProviderError.Unavailable }
        let target = try anchorFile(storeId)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try anchor.write(to: target, options: .atomic)  // a temporary file renamed over the old one
        } catch {
            throw KeyProviderError.Failed(reason: "anchor write failed")
        }
    }

    public func loadAnchor(storeId: String) throws -> Data? {
        lock.lock(); defer { lock.unlock() }
        if _locked { throw KeyProviderError.Unavailable }
        let file = try anchorFile(storeId)
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        do { return try Data(contentsOf: file) } catch { throw KeyProviderError.Failed(reason: "anchor read failed") }
    }
}
