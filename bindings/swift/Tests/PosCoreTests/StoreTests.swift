import Foundation
import XCTest
@testable import PosCore

/// The encrypted store through the bindings, with a Swift key provider.
final class StoreTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000

    func takeOnePayment(_ engine: PosEngine) async throws -> String {
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        _ = try await engine.reportNetwork(reachable: false)
        let usd = Money(minorUnits: 2_500, currency: "USD")
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd, contact: nil))
        let d = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd, tip: nil, behaviour: .preferOnline, tender: .card))
        let card = CardRead(entryMode: .chip, network: .visa, last4: "4242", fingerprint: "fp-1",
                            readerModel: "Chipper 2X BT", sealedCardData: Data([9, 9, 9]))
        return try await engine.confirmCardPayment(paymentId: d.paymentId, card: card).id
    }

    func testPaymentsSurviveReopeningAndKeysAreChecked() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-store-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD")
        let keys = testKeys(for: dir.path)
        var engine: PosEngine? = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
        let id = try await takeOnePayment(engine!)
        try await engine!.compactStore()  // the next open starts from this snapshot
        engine!.close()
        engine = nil  // frees the native engine and its store

        let other = FileKeyProvider(dir.appendingPathExtension("other"))
        XCTAssertThrowsError(try PosEngine.withTestClock(config: config, keys: other, clock: TestClock(wallMs: t0))) {
            guard case PosError.WrongKey = $0 else { return XCTFail("unexpected \($0)") }
        }
        keys.locked = true
        XCTAssertThrowsError(try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))) {
            guard case PosError.StoreLocked = $0 else { return XCTFail("unexpected \($0)") }
        }
        keys.locked = false
        let reopened = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
        defer { reopened.close() }
        XCTAssertEqual(try reopened.listPayments().map { $0.id }, [id])
    }
}
