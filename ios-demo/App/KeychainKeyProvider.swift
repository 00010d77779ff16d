// Not built on these machines (no Xcode): reference code.
//
// The FFI `KeyProvider` over the iOS Keychain: the key-encryption key is
// readable only while the device is unlocked (a locked phone throws
// `KeyProviderError.Unavailable`, i.e. `PosError.StoreLocked`, and nothing is
// lost); each store's rollback anchor is its own Keychain item, replaced
// atomically by SecItemUpdate, readable after the first unlock so that saves
// made in a pocket succeed (the bytes are MACed, not secret). `loadAnchor`
// returns nil only for errSecItemNotFound: any other failure throws, so a read
// error never looks like "no anchor". ThisDeviceOnly: neither item goes into a
// backup or to another device. See bindings/swift/README.md.
import Foundation
import PosCore
import Security

final class KeychainKeyProvider: KeyProvider, @unchecked Sendable {
    private let service = "org.poscore"

    func keyEncryptionKey() throws -> KeyMaterial {
        var read: [String: Any] = [kSecClass as String: kSecClassGenericPassword, kSecAttrService as String: service,
                                   kSecAttrAccount as String: "kek-1", kSecReturnData as String: true]
        var item: CFTypeRef?
        switch SecItemCopyMatching(read as CFDictionary, &item) {
        case errSecSuccess:
            guard let key = item as? Data else { throw KeyProviderError.Failed(reason: "key item has no data") }
            return KeyMaterial(keyId: "keychain-1", key: key)
        case errSecInteractionNotAllowed:
            throw KeyProviderError.Unavailable
        case errSecItemNotFound:
            var key = Data(count: 32)
            let ok = key.withUnsafeMutableBytes { SecRandomCopyBytes(kSecRandomDefault, 32, $0.baseAddress!) }
            guard ok == errSecSuccess else { throw KeyProviderError.Failed(reason: "no randomness") }
            read.removeValue(forKey: kSecReturnData as String)
            read[kSecValueData as String] = key
            read[kSecAttrAccessible as String] = kSecAttrAccessibleWhenUnlockedThisDeviceOnly
            guard SecItemAdd(read as CFDictionary, nil) == errSecSuccess else {
                throw KeyProviderError.Failed(reason: "keychain add failed")
            }
            return KeyMaterial(keyId: "keychain-1", key: key)
        case let status:
            throw KeyProviderError.Failed(reason: "keychain status \(status)")
        }
    }

    private func anchorQuery(_ storeId: String) -> [String: Any] {
        [kSecClass as String: kSecClassGenericPassword, kSecAttrService as String: service + ".anchor",
         kSecAttrAccount as String: storeId]
    }

    func saveAnchor(storeId: String, anchor: Data) throws {
        var status = SecItemUpdate(anchorQuery(storeId) as CFDictionary, [kSecValueData as String: anchor] as CFDictionary)
        if status == errSecItemNotFound {
            var add = anchorQuery(storeId)
            add[kSecValueData as String] = anchor
            add[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
            status = SecItemAdd(add as CFDictionary, nil)
        }
        switch status {
        case errSecSuccess: return
        case errSecInteractionNotAllowed: throw KeyProviderError.Unavailable
        default: throw KeyProviderError.Failed(reason: "keychain status \(status) saving the anchor")
        }
    }

    func loadAnchor(storeId: String) throws -> Data? {
        var read = anchorQuery(storeId)
        read[kSecReturnData as String] = true
        var item: CFTypeRef?
        switch SecItemCopyMatching(read as CFDictionary, &item) {
        case errSecSuccess:
            guard let data = item as? Data else { throw KeyProviderError.Failed(reason: "anchor item has no data") }
            return data
        case errSecItemNotFound: return nil
        case errSecInteractionNotAllowed: throw KeyProviderError.Unavailable
        case let status: throw KeyProviderError.Failed(reason: "keychain status \(status) reading the anchor")
        }
    }
}

/// The gateway's bearer tokens (PosDemoApp.swift's AppTokens), one Keychain item per account.
enum KeychainTokens {
    static func read(account: String?) -> String? {
        let q: [String: Any] = [kSecClass as String: kSecClassGenericPassword, kSecAttrService as String: "org.poscore.token",
                                kSecAttrAccount as String: account ?? "default", kSecReturnData as String: true]
        var item: CFTypeRef?
        guard SecItemCopyMatching(q as CFDictionary, &item) == errSecSuccess, let d = item as? Data else { return nil }
        return String(data: d, encoding: .utf8)
    }

    /// The processor refused the cached token: the app enrols again for a new one.
    static func drop() {}
}
