import Foundation
import XCTest

@testable import PosCore

/// The app's lifecycle on the test clock: the wake-up time, going to the
/// background and back.
final class LifecycleTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000

    func testTheWakeUpTimeFollowsTheWorkDueAndLeavesProbesOutInTheBackground() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-\(UUID().uuidString)").path
        let config = EngineConfig(dataDir: dir, deviceId: "till-1", currency: "USD")
        let clock = TestClock(wallMs: t0)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: dir), clock: clock)
        // Online with nothing pending: nothing to wake up for.
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        try await engine.rememberVendorReader()
        XCTAssertNil(try engine.status().nextWakeUpMs)
        // Offline with a payment pending: the next probe comes first.
        _ = try await engine.reportNetwork(reachable: false)
        let amount = Money(minorUnits: 1_000, currency: "USD")
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: amount, contact: nil))
        let begun = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: amount, tip: nil,
            behaviour: .preferOnline, tender: .card))
        let payment = try await engine.confirmCardPayment(paymentId: begun.paymentId, card: vendorCard())
        let probe = try XCTUnwrap(try engine.status().nextWakeUpMs)
        XCTAssertGreaterThan(probe, t0)
        XCTAssertLessThan(probe, payment.deadlineMs)
        // In the background probes are paused: the wake-up is the next session warning.
        try await engine.onBackground()
        let warning = try XCTUnwrap(try engine.status().nextWakeUpMs)
        XCTAssertGreaterThan(warning, probe)
        XCTAssertLessThanOrEqual(warning, payment.deadlineMs)
        clock.advanceMs(ms: UInt64(warning - 1 - clock.wallMs()))
        let before = try await engine.tick()
        XCTAssertEqual(before.warnings, 0)
        clock.advanceMs(ms: 1)
        let at = try await engine.tick()
        XCTAssertEqual(at.warnings, 1, "a warning falls due at the wake-up time")
        // Back in the foreground the probe schedule counts again.
        try engine.onForeground()
        XCTAssertLessThan(try XCTUnwrap(try engine.status().nextWakeUpMs), warning)
        engine.close()
        do {
            try await engine.onBackground()
            XCTFail("onBackground after close")
        } catch PosError.Closed {}
        do {
            try engine.onForeground()
            XCTFail("onForeground after close")
        } catch PosError.Closed {}
    }
}
