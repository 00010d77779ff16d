import Foundation
import XCTest
@testable import PosCore

// Helpers the tests share to bring an engine online and to get card reads
// from a reader the engine remembers (card reads come only from paired readers).

/// The processor's X25519 public key the simulated readers seal card data to (a test key).
let testProcessorKey = Data((0..<32).map { UInt8(($0 * 13 + 5) & 0xff) })

/// The Shopify preset turned on; with `trustSimulator` it lists the simulator's reader authority.
func shopifyPolicy(trustSimulator: Bool = true) throws -> OfflinePolicy {
    var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
    policy.enabled = true
    policy.readerAuthorities = trustSimulator ? [simulatorReaderAuthority()] : []
    return policy
}

struct NotOnline: Error { let state: ConnectivityStatus }

extension PosEngine {
    /// Online as the app brings it: the network is reachable and two status probes answer healthy (R2).
    func goOnline() async throws {
        _ = try await reportNetwork(reachable: true)
        _ = try await reportProbe(outcome: .healthy)
        let state = try await reportProbe(outcome: .healthy)
        guard case .online = state else { throw NotOnline(state: state) }
    }

    /// Remembers a vendor SDK's reader as the app does: online first (a new
    /// reader only online), then `rememberReader` with what the vendor
    /// reports. The engine stays online; the caller goes offline.
    func rememberVendorReader(serial: String = vendorSerial, model: String = "Chipper 2X BT") async throws {
        try await goOnline()
        try await rememberReader(info: ReaderInfo(model: model, serial: serial, firmware: "1.0", batteryPercent: 80))
    }
}

/// An engine on a test clock with `policy`, online (a new reader pairs only online).
func onlineEngine(_ policy: OfflinePolicy? = nil, t0: Int64 = 1_800_000_000_000) async throws -> PosEngine {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-reader-\(UUID())")
    let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD")
    let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir), clock: TestClock(wallMs: t0))
    try await engine.setPolicy(policy: policy ?? shopifyPolicy())
    try await engine.goOnline()
    return engine
}

/// The serial of the vendor SDK's reader the tests remember (vendor route: no signature).
let vendorSerial = "VENDOR-SN-1"

private let sealedLock = NSLock()
private var sealedCounter: UInt32 = 0

/// A card read as a vendor SDK's reader returns it: its serial, no
/// signature, and card data sealed by the vendor (unique per read, as real
/// sealed data is).
func vendorCard(last4: String = "4242", mode: EntryMode = .chip, serial: String? = vendorSerial) -> CardRead {
    sealedLock.lock()
    sealedCounter += 1
    let n = sealedCounter
    sealedLock.unlock()
    let sealed = Data([9, 8, 7, 6, UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
    return CardRead(entryMode: mode, network: .visa, last4: last4, fingerprint: "fp-\(last4)",
                    readerModel: "Chipper 2X BT", sealedCardData: sealed, readerSerial: serial)
}

/// A challenge made by hand, for reader tests that confirm nothing.
func handChallenge(_ cents: Int64, paymentId: String = "pay_" + String(repeating: "0123456789abcdef", count: 2)) -> CardChallenge {
    CardChallenge(paymentId: paymentId, deviceId: "till-1", amount: Money(minorUnits: cents, currency: "USD"),
                  nonce: Data((1...16).map { UInt8($0) }))
}
