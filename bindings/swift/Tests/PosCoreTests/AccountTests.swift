import Foundation
import XCTest
@testable import PosCore

/// Merchant accounts through the bindings (SPEC B7): binding, the guarded
/// switch, forwarding under each payment's own account.
final class AccountTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000
    let accountA = MerchantAccount(accountId: "acct_a", locationId: "loc_1")
    let accountB = MerchantAccount(accountId: "acct_b", locationId: "loc_2")

    func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

    func config(_ dir: URL, _ account: MerchantAccount?) -> EngineConfig {
        EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                     automaticForwarding: false, account: account)
    }

    func tempDir() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-account-\(UUID())")
    }

    /// Offline payments on, a cashier signed in, a reader remembered online, the network down, `processor` as the gateway.
    func goOffline(_ engine: PosEngine, with processor: SwiftProcessor) async throws {
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        try await engine.rememberVendorReader()
        _ = try await engine.reportNetwork(reachable: false)
        try engine.setGateway(gateway: processor)
    }

    func takeOffline(_ engine: PosEngine, _ cents: Int64) async throws -> String {
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(cents), contact: nil))
        let d = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd(cents), tip: nil,
            behaviour: .preferOnline, tender: .card))
        return try await engine.confirmCardPayment(paymentId: d.paymentId, card: vendorCard()).id
    }

    func testASwitchIsGuardedAndOldPaymentsStayUnderTheOldAccount() async throws {
        let dir = tempDir()
        let engine = try PosEngine.withTestClock(config: config(dir, accountA), keys: testKeys(for: dir.path),
                                                 clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let processor = SwiftProcessor()
        try await goOffline(engine, with: processor)
        XCTAssertEqual(try engine.status().account, accountA)
        let old = try await takeOffline(engine, 1_000)
        // Refused: the payment is pending; nothing changed.
        var atRisk: [Money] = []
        do {
            _ = try await engine.switchAccount(account: accountB, override: nil)
            XCTFail("expected a refusal")
        } catch let PosError.ActionRefused(_, pendingCount, money) {
            XCTAssertEqual(pendingCount, 1)
            XCTAssertEqual(money, [usd(1_000)])
            atRisk = money
        }
        XCTAssertEqual(try engine.status().account, accountA)
        // The switch names the new account: the generic guard refuses it.
        do {
            _ = try await engine.guardedAction(action: .switchAccount, override: nil)
            XCTFail("expected InvalidInput")
        } catch PosError.InvalidInput {}
        // A manager restates the money at risk: the switch happens.
        let outcome = try await engine.switchAccount(
            account: accountB,
            override: ActionOverride(staffId: "manager-1", reason: "till moves to the second shop",
                                     acknowledgedAtRisk: atRisk))
        guard case .overridden(let count, let risked) = outcome else { return XCTFail("unexpected \(outcome)") }
        XCTAssertEqual(count, 1)
        XCTAssertEqual(risked, [usd(1_000)])
        XCTAssertEqual(try engine.status().account, accountB)
        let new = try await takeOffline(engine, 2_000)
        // Each payment is forwarded under the account it was taken for.
        let report = try await engine.forwardNow()
        XCTAssertEqual(report.approved, 2)
        XCTAssertEqual(processor.requests, 2)
        let sent = processor.sentUnderAccounts()
        XCTAssertEqual(sent[old], .some(accountA))
        XCTAssertEqual(sent[new], .some(accountB))
        // The audit trail names both accounts.
        let audit = try engine.exportAuditCsv()
        let lines = audit.components(separatedBy: "\r\n")
        XCTAssertTrue(lines.contains { $0.contains("account_switched") && $0.contains("from=acct_a/loc_1; to=acct_b/loc_2") }, audit)
        XCTAssertTrue(lines.contains { $0.contains("override") && $0.contains("SwitchAccount") && $0.contains("manager-1") }, audit)
    }

    func testAStoreBoundToOneAccountDoesNotOpenForAnother() async throws {
        let dir = tempDir()
        let keys = testKeys(for: dir.path)
        let first = try PosEngine.withTestClock(config: config(dir, accountA), keys: keys, clock: TestClock(wallMs: t0))
        let status = try first.status()
        XCTAssertEqual(status.account, accountA)
        XCTAssertNotNil(status.storeSchema, "a store with files has a schema version")
        await first.closeAndRelease()
        XCTAssertThrowsError(try PosEngine.withTestClock(config: config(dir, accountB), keys: keys,
                                                         clock: TestClock(wallMs: t0))) {
            guard case let PosError.AccountMismatch(stored, configured) = $0 else { return XCTFail("unexpected \($0)") }
            XCTAssertEqual(stored, "acct_a/loc_1")
            XCTAssertEqual(configured, "acct_b/loc_2")
        }
        XCTAssertThrowsError(try PosEngine.withTestClock(
            config: config(dir, MerchantAccount(accountId: "", locationId: "loc_1")), keys: keys,
            clock: TestClock(wallMs: t0))) {
            guard case PosError.InvalidConfig = $0 else { return XCTFail("unexpected \($0)") }
        }
        // Without an account the store opens for its own.
        let reopened = try PosEngine.withTestClock(config: config(dir, nil), keys: keys, clock: TestClock(wallMs: t0))
        defer { reopened.close() }
        XCTAssertEqual(try reopened.status().account, accountA)
    }

    func testAForwardRefusedAccountMismatchBlocksForwardingNeverDeclines() async throws {
        let dir = tempDir()
        let engine = try PosEngine.withTestClock(config: config(dir, accountA), keys: testKeys(for: dir.path),
                                                 clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let recorder = Recorder()
        let sub = try engine.subscribe(listener: recorder)
        defer { sub.cancel() }
        let processor = SwiftProcessor()
        try await goOffline(engine, with: processor)
        let id = try await takeOffline(engine, 1_500)
        // The app's backend holds another account's credentials.
        processor.credentialsFor = accountB
        let report = try await engine.forwardNow()
        XCTAssertEqual(report.declined, 0)
        XCTAssertEqual(report.failed, 1)
        XCTAssertEqual(try engine.status().forwardingBlocked, .accountMismatch)
        let payment = try engine.listPayments().first { $0.id == id }
        XCTAssertNotEqual(payment?.status, .declined)
        XCTAssertNil(payment?.declineReason)
        // Events reach the listener on the engine's event thread: every one
        // of the round's is there after this.
        await engine.eventsDelivered()
        var blocked: [ForwardingBlockedReason] = []
        for event in recorder.drain() {
            if case .paymentDeclined = event { XCTFail("declined: \(event)") }
            if case .forwardingBlocked(let reason) = event { blocked.append(reason) }
        }
        XCTAssertEqual(blocked, [.accountMismatch])
        // With the payment's own account's credentials it goes through.
        processor.credentialsFor = accountA
        let retried = try await engine.forwardNow()
        XCTAssertEqual(retried.approved, 1)
        XCTAssertNil(try engine.status().forwardingBlocked)
        XCTAssertEqual(try engine.listPayments().first { $0.id == id }?.status, .approved)
    }
}
