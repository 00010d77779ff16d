import Foundation
import XCTest
@testable import PosCore

/// The README's Swift example, compiled and run by the harness.
final class ReadmeExampleTests: XCTestCase {
    func testTheReadmeExampleRuns() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-readme-\(UUID())").path
        let gateway = SwiftProcessor() // your PaymentGateway (or engine.useHttpGateway(...))
        // Your reader vendor's authority and your connected reader: here the simulated ones.
        let readerAuthority = simulatorReaderAuthority()
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-README-SW", batteryPercent: 80,
                                      processorKey: testProcessorKey, mtu: 185)
        sim.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .chip)
        let reader = try await sim.connect(listener: ReaderEvents())
        // README-SWIFT-BEGIN
        let engine = try PosEngine(config: EngineConfig(dataDir: dir, deviceId: "till-1", currency: "USD"),
                                   keys: FileKeyProvider(URL(fileURLWithPath: dir + ".kek")))
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        policy.readerAuthorities = [readerAuthority]
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "alex", mayTakeOfflinePayments: true))
        try engine.setGateway(gateway: gateway) // the engine probes it: online once the service answers healthy
        while true { if case .online = try engine.status().connectivity { break }; try await Task.sleep(nanoseconds: 100_000_000) }
        _ = try await reader.pair(engine: engine) // authenticates the reader and remembers it (a new reader only online)
        _ = try await engine.reportNetwork(reachable: false) // from NWPathMonitor: offline
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: Money(minorUnits: 4_250, currency: "USD"),
                                                                 contact: try CustomerContact(email: "ana@example.com", phone: nil)))
        let decision = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: Money(minorUnits: 4_250, currency: "USD"), tip: nil,
            behaviour: .preferOnline, tender: .card))
        // The reader seals the card for the processor, bound to this payment's challenge, and signs it.
        let card = try await reader.takeCard(challenge: decision.challenge, entryModes: [.chip, .contactless], offline: true)
        let payment = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card) // durable now
        print("\(payment.status) until \(payment.deadlineMs)") // pending until the deadline
        _ = try await engine.reportNetwork(reachable: true) // back online: forwarding starts by itself, or now:
        let report = try await engine.forwardNow()
        print("approved \(report.approved), declined \(report.declined)")
        engine.close()
        // README-SWIFT-END
        XCTAssertEqual(gateway.charges.count, 1) // by the driver or by forwardNow, once
        XCTAssertEqual(payment.last4, "4242")
    }
}
