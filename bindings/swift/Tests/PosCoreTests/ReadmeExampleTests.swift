import Foundation
import XCTest
@testable import PosCore

/// The README's Swift example, compiled and run by the harness.
final class ReadmeExampleTests: XCTestCase {
    func testTheReadmeExampleRuns() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-readme-\(UUID())").path
        let gateway = SwiftProcessor() // your PaymentGateway (or engine.useHttpGateway(...))
        // README-SWIFT-BEGIN
        let engine = try PosEngine(config: EngineConfig(dataDir: dir, deviceId: "till-1", currency: "USD"),
                                   keys: FileKeyProvider(URL(fileURLWithPath: dir + ".kek")))
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "alex", mayTakeOfflinePayments: true))
        try engine.setGateway(gateway: gateway)
        _ = try await engine.reportNetwork(reachable: false) // from NWPathMonitor: offline
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: Money(minorUnits: 4_250, currency: "USD"),
                                                                 contact: try CustomerContact(email: "ana@example.com", phone: nil)))
        let decision = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: Money(minorUnits: 4_250, currency: "USD"), tip: nil,
            behaviour: .preferOnline, tender: .card))
        // `card` is what the reader returned: sealed for the processor, last 4, entry mode.
        let card = CardRead(entryMode: .chip, network: .visa, last4: "4242", fingerprint: "fp-1",
                            readerModel: "Chipper 2X BT", sealedCardData: Data([1, 2, 3]))
        let payment = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card) // durable now
        print("\(payment.status) until \(payment.deadlineMs)") // pending until the deadline
        _ = try await engine.reportNetwork(reachable: true) // back online: forwarding starts by itself, or now:
        let report = try await engine.forwardNow()
        print("approved \(report.approved), declined \(report.declined)")
        engine.close()
        // README-SWIFT-END
        XCTAssertEqual(gateway.charges.count, 1) // by the driver or by forwardNow, once
    }
}
