import Foundation
import XCTest
@testable import PosCore

/// A processor written in Swift (the foreign PaymentGateway), idempotent on
/// the payment id: the engine forwards through it, exactly once per payment.
final class SwiftProcessor: PaymentGateway, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var charges: [String: GatewayDecision] = [:]
    private(set) var requests = 0
    var loseFirstAnswer: Set<String> = []
    /// Payment ids declined as card data sealed for another payment (`mismatch`).
    var declineMismatch: Set<String> = []
    /// The payment each card data was first charged for: sent for another payment, it is a replay.
    private var cardDataUsedBy: [Data: String] = [:]
    /// Ids a lookup found unknown: refused from then on.
    private(set) var closed: Set<String> = []
    /// While set, decided answers wait here before they leave (a slow processor).
    var gate: DispatchSemaphore?
    private(set) var held = 0
    /// Each request's payment id and the merchant account it was sent under, in order.
    private(set) var sentUnder: [(String, MerchantAccount?)] = []
    /// While set, the only account the credentials are for: a request under another is refused `account_mismatch`.
    var credentialsFor: MerchantAccount?

    private func decide(_ p: GatewayPayment) throws -> GatewayDecision {
        lock.lock()
        requests += 1
        sentUnder.append((p.paymentId, p.account))
        if let only = credentialsFor, only != p.account {
            lock.unlock()
            throw GatewayError.AccountMismatch(detail: "sent under another account")
        }
        if closed.contains(p.paymentId) {
            lock.unlock()
            throw GatewayError.Rejected(detail: "closed")
        }
        let d: GatewayDecision
        if let known = charges[p.paymentId] {
            d = known
        } else if declineMismatch.contains(p.paymentId) {
            d = .declined(reason: .mismatch)
        } else if let firstUse = cardDataUsedBy[p.cardData], firstUse != p.paymentId {
            d = .declined(reason: .replayed)
        } else {
            cardDataUsedBy[p.cardData] = p.paymentId
            d = p.last4 == "0002"
                ? .declined(reason: .insufficientFunds)
                : .approved(processorRef: "sw_\(p.paymentId)")
        }
        charges[p.paymentId] = d
        let lose = loseFirstAnswer.remove(p.paymentId) != nil
        let gate = self.gate
        if gate != nil { held += 1 }
        lock.unlock()
        if let gate {
            _ = gate.wait(timeout: .now() + 30)
            gate.signal()
        }
        if lose {
            throw GatewayError.NoAnswer(detail: "answer lost")
        }
        return d
    }

    func sentUnderAccounts() -> [String: MerchantAccount?] {
        lock.lock()
        defer { lock.unlock() }
        return Dictionary(sentUnder, uniquingKeysWith: { _, last in last })
    }

    func heldCount() -> Int {
        lock.lock()
        defer { lock.unlock() }
        return held
    }

    func paymentStatus(deviceId: String, paymentId: String, account: MerchantAccount?) throws -> PaymentLookup {
        lock.lock()
        defer { lock.unlock() }
        if let d = charges[paymentId] { return .decided(decision: d) }
        closed.insert(paymentId)
        return .notFound
    }

    func authorize(payment: GatewayPayment) throws -> GatewayDecision { try decide(payment) }
    func forward(payment: GatewayPayment) throws -> GatewayDecision { try decide(payment) }
    func status() throws -> ServiceStatusAnswer { ServiceStatusAnswer(status: .available, processorTimeMs: nil) }
    func deliverReceipt(receipt: GatewayReceipt) throws {}
}

final class ForwardingTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000

    func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

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

    func testForwardingThroughASwiftGatewayReportsDeclines() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-fwd-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                  maxInFlight: 4, automaticForwarding: false)
        let clock = TestClock(wallMs: t0)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir), clock: clock)
        defer { engine.close() }
        let processor = SwiftProcessor()
        try await goOffline(engine, with: processor)
        var ids: [String] = []
        for (i, last4) in ["4242", "4242", "0002"].enumerated() {
            let order = try await engine.createOrder(order: NewOrder(
                orderId: nil, total: usd(1_000 + Int64(i)),
                contact: try CustomerContact(email: "c\(i)@example.com", phone: nil)))
            let d = try await engine.beginCardPayment(request: CardPaymentRequest(
                orderId: order.id, paymentId: nil, amount: usd(1_000 + Int64(i)), tip: nil,
                behaviour: .preferOnline, tender: .card))
            let card = vendorCard(last4: last4)
            ids.append(try await engine.confirmCardPayment(paymentId: d.paymentId, card: card).id)
        }
        processor.loseFirstAnswer.insert(ids[0])
        let first = try await engine.forwardNow()
        XCTAssertEqual(first.attempts, 3)
        XCTAssertEqual(first.approved, 1)
        XCTAssertEqual(first.declined, 1)
        XCTAssertEqual(first.failed, 1)
        clock.advanceMs(ms: 10_000)
        let second = try await engine.forwardNow()
        XCTAssertEqual(second.approved, 1)
        XCTAssertEqual(processor.charges.count, 3, "one charge per payment")
        XCTAssertEqual(processor.requests, 4)
        let states = Dictionary(uniqueKeysWithValues: try engine.listPayments().map { ($0.id, $0.status) })
        XCTAssertEqual(states[ids[0]], .approved)
        XCTAssertEqual(states[ids[2]], .declined)
    }

    func testSettledHistoryLeavesMemoryAndStaysReadableFromTheStore() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-history-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                  maxInFlight: 4, automaticForwarding: false,
                                  settledInMemory: 1, auditInMemory: 2)
        let clock = TestClock(wallMs: t0)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir),
                                                 clock: clock)
        defer { engine.close() }
        try await goOffline(engine, with: SwiftProcessor())
        var ids: [String] = []
        for i in 1...3 {
            // A second apart: the most recent order is the one held.
            clock.advanceMs(ms: 1_000)
            let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(1_000 + Int64(i)), contact: nil))
            let d = try await engine.beginCardPayment(request: CardPaymentRequest(
                orderId: order.id, paymentId: nil, amount: usd(1_000 + Int64(i)), tip: nil,
                behaviour: .preferOnline, tender: .card))
            ids.append(try await engine.confirmCardPayment(paymentId: d.paymentId, card: vendorCard(last4: "4242")).id)
        }
        // Back online: the offline session ends (its payments count against its per-card limit until then).
        _ = try await engine.reportNetwork(reachable: true)
        _ = try await engine.reportProbe(outcome: .healthy)
        let online = try await engine.reportProbe(outcome: .healthy)
        guard case .online = online else { return XCTFail("\(online)") }
        let report = try await engine.forwardNow()
        XCTAssertEqual(report.approved, 3)
        let fullCsv = try engine.exportAuditCsv()
        try await engine.compactStore()
        // One settled order is held; the other two are read back from the store.
        XCTAssertEqual(try engine.listPayments().map { $0.id }, [ids[2]])
        let all = try await engine.paymentHistory()
        XCTAssertEqual(Set(all.map { $0.id }), Set(ids))
        XCTAssertTrue(all.allSatisfy { $0.status == .approved })
        XCTAssertEqual(try engine.status().totals.first?.approvedCount, 3)
        let heldLines = try engine.exportAuditCsv().split(whereSeparator: { $0.isNewline }).count
        XCTAssertEqual(heldLines, 3, "header + 2 entries")
        let history = try await engine.exportAuditHistoryCsv()
        XCTAssertEqual(history, fullCsv)
    }

    func testACancelledForwardNowStillRecordsEveryAnswer() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-cancel-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                  maxInFlight: 3, automaticForwarding: false)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir),
                                                 clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let processor = SwiftProcessor()
        try await goOffline(engine, with: processor)
        var ids: [String] = []
        for i in 0..<5 {
            let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(500 + Int64(i)), contact: nil))
            let d = try await engine.beginCardPayment(request: CardPaymentRequest(
                orderId: order.id, paymentId: nil, amount: usd(500 + Int64(i)), tip: nil,
                behaviour: .preferOnline, tender: .card))
            let card = vendorCard(last4: "4242")
            ids.append(try await engine.confirmCardPayment(paymentId: d.paymentId, card: card).id)
        }
        // A slow processor: three payments charged, their answers on the way...
        let gate = DispatchSemaphore(value: 0)
        processor.gate = gate
        let task = Task { try await engine.forwardNow() }
        let until = Date().addingTimeInterval(30)
        while processor.heldCount() < 3 && Date() < until { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(processor.heldCount(), 3)
        // ...when the Swift task is cancelled. (UniFFI's Swift bindings let
        // the call run to its end; the processor's answers go out now.)
        task.cancel()
        processor.gate = nil
        gate.signal()
        _ = try? await task.value
        // The next round waits for the cancelled one and settles the rest.
        _ = try await engine.forwardNow()
        let states = Dictionary(uniqueKeysWithValues: try engine.listPayments().map { ($0.id, $0.status) })
        for id in ids { XCTAssertEqual(states[id], .approved, id) }
        XCTAssertEqual(processor.charges.count, 5, "one charge per payment")
        XCTAssertEqual(processor.requests, 5, "every answer recorded: nothing asked twice")
    }

    func testAVendorCardReadSentForASecondPaymentIsDeclinedReplayedByTheProcessor() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-replay-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                  maxInFlight: 1, automaticForwarding: false)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir),
                                                 clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let processor = SwiftProcessor()
        try await goOffline(engine, with: processor)
        // A vendor reader's read is not bound to its payment on the device (its
        // trust comes from the vendor SDK): the engine takes the same read twice...
        let card = vendorCard(last4: "4242")
        var ids: [String] = []
        for i in 0..<2 {
            let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(1_000 + Int64(i)), contact: nil))
            let d = try await engine.beginCardPayment(request: CardPaymentRequest(
                orderId: order.id, paymentId: nil, amount: usd(1_000 + Int64(i)), tip: nil,
                behaviour: .preferOnline, tender: .card))
            ids.append(try await engine.confirmCardPayment(paymentId: d.paymentId, card: card).id)
        }
        // ...and the processor declines the replay.
        let report = try await engine.forwardNow()
        XCTAssertEqual(report.approved, 1)
        XCTAssertEqual(report.declined, 1)
        let payments = try engine.listPayments().filter { ids.contains($0.id) }
        XCTAssertEqual(Set(payments.map { $0.status }), [.approved, .declined])
        XCTAssertEqual(payments.first { $0.status == .declined }?.declineReason, .replayed)
        // The processor's "mismatch" (card data sealed for another payment) comes back the same way.
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(700), contact: nil))
        let d = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd(700), tip: nil, behaviour: .preferOnline, tender: .card))
        let third = try await engine.confirmCardPayment(paymentId: d.paymentId, card: vendorCard(last4: "1881")).id
        processor.declineMismatch.insert(third)
        let last = try await engine.forwardNow()
        XCTAssertEqual(last.declined, 1)
        XCTAssertEqual(try engine.listPayments().first { $0.id == third }?.declineReason, .mismatch)
    }
}
