import Foundation
import XCTest
@testable import PosCore

/// The offline rules through the bindings: split tender, limits with figures, refusals, events.
final class CheckoutTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000

    func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

    /// A card read by the vendor reader remembered in `offlineEngine`.
    func card(_ mode: EntryMode = .chip, last4: String = "4242") -> CardRead {
        vendorCard(last4: last4, mode: mode)
    }

    func offlineEngine() async throws -> PosEngine {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD")
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir), clock: TestClock(wallMs: t0))
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        try await engine.rememberVendorReader()
        let state = try await engine.reportNetwork(reachable: false)
        guard case .networkOutage = state else { throw XCTSkip("unexpected \(state)") }
        return engine
    }

    func payByCard(_ engine: PosEngine, _ orderId: String, _ cents: Int64, _ card: CardRead) async throws -> PaymentView {
        let decision = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: orderId, paymentId: nil, amount: usd(cents), tip: nil,
            behaviour: .preferOnline, tender: .card))
        guard case .offline = decision.route else {
            XCTFail("unexpected route \(decision.route)")
            return try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card)
        }
        return try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card)
    }

    func testSplitTenderTwoCardsAndCash() async throws {
        let engine = try await offlineEngine()
        defer { engine.close() }
        let order = try await engine.createOrder(order: NewOrder(
            orderId: nil, total: usd(12_000), contact: try CustomerContact(email: "ana@example.com", phone: nil)))
        let first = try await payByCard(engine, order.id, 6_000, card(last4: "4242"))
        _ = try await payByCard(engine, order.id, 4_000, card(last4: "1881"))
        XCTAssertEqual(first.status, .pending)
        XCTAssertEqual(first.deadlineMs, t0 + 24 * 3_600_000)
        let paid = try await engine.addCash(orderId: order.id, amount: usd(2_000))
        XCTAssertEqual(paid.balance.minorUnits, 0)
        XCTAssertEqual(paid.tenders.count, 3)
        XCTAssertEqual(paid.status, .paymentPending)
        let status = try engine.status()
        XCTAssertEqual(status.pendingOfflinePayments, 2)
        XCTAssertEqual(status.totals.first?.pendingAmount.minorUnits, 10_000)
    }

    func testOverLimitCarriesTheFigures() async throws {
        let engine = try await offlineEngine()
        defer { engine.close() }
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(15_000), contact: nil))
        _ = try await payByCard(engine, order.id, 6_000, card())
        do {
            _ = try await payByCard(engine, order.id, 5_000, card(last4: "1111"))
            XCTFail("expected a refusal")
        } catch let PosError.Refused(rule, kind, _, limit, current, attempted) {
            XCTAssertEqual(rule, "R5")
            XCTAssertEqual(kind, "PerOrderLimit")
            XCTAssertEqual(limit, usd(10_000))
            XCTAssertEqual(current, usd(6_000))
            XCTAssertEqual(attempted, usd(5_000))
        }
        XCTAssertEqual(try engine.listPayments().count, 1)
    }

    func testRefusedEntryModeTakesNothing() async throws {
        let engine = try await offlineEngine()
        defer { engine.close() }
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(2_000), contact: nil))
        do {
            _ = try await payByCard(engine, order.id, 2_000, card(.swipe))
            XCTFail("expected a refusal")
        } catch let PosError.Refused(_, kind, _, _, _, _) {
            XCTAssertEqual(kind, "EntryModeRefused")
        }
        XCTAssertTrue(try engine.listPayments().isEmpty)
    }

    func testConnectivityEventArrives() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-\(UUID())")
        let engine = try PosEngine.withTestClock(
            config: EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD"),
            keys: testKeys(for: dir.path), clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let recorder = Recorder()
        let sub = try engine.subscribe(listener: recorder)
        defer { sub.cancel() }
        guard let (first, _) = recorder.next(), case .snapshot = first else { return XCTFail("no snapshot") }
        _ = try await engine.reportNetwork(reachable: false)
        guard let (change, _) = recorder.next(),
              case .connectivityChanged(_, let to, let atMs, let banner) = change else {
            return XCTFail("no change")
        }
        guard case .networkOutage(let since) = to else { return XCTFail("unexpected \(to)") }
        XCTAssertEqual(since, t0)
        XCTAssertEqual(atMs, t0)
        XCTAssertNotNil(banner)
    }
}
