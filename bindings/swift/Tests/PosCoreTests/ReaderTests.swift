import Foundation
import XCTest
@testable import PosCore

final class ReaderEvents: ReaderListener, @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [ReaderEvent] = []
    func onReaderEvent(event: ReaderEvent) { lock.lock(); seen.append(event); lock.unlock() }
    var events: [ReaderEvent] { lock.lock(); defer { lock.unlock() }; return seen }
}

/// The simulated reader through the bindings: pair and take a card.
final class ReaderTests: XCTestCase {
    let processorKey = testProcessorKey

    func testPairAndTakeACard() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-1", batteryPercent: 55,
                                      processorKey: processorKey, mtu: 185)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        let info = try await reader.pair(engine: engine)
        XCTAssertEqual(info.serial, "SIM-SW-1")
        XCTAssertEqual(try engine.rememberedReaders().map { $0.serial }, ["SIM-SW-1"], "remembered by the pairing")
        sim.presentCard(pan: "378282246310005", expiry: "1230", network: .amex, entryMode: .chip)
        let card = try await reader.takeCard(challenge: handChallenge(2_000), entryModes: [.chip], offline: true)
        XCTAssertEqual(card.last4, "0005")
        XCTAssertEqual(card.network, .amex)
        XCTAssertEqual(card.readerSerial, "SIM-SW-1")
        XCTAssertEqual(card.readerSignature?.count, 64, "signed by the reader (Ed25519)")
        let rejected = reader.rejectedMessages()
        XCTAssertEqual(rejected, 0)
        XCTAssertTrue(events.events.contains { if case .paired = $0 { return true } else { return false } })
    }
}

/// Reader trust through the engine: pairing authenticates the reader against
/// the policy's authorities and remembers it, a card is bound to its
/// payment's challenge, and the engine refuses reads that are replayed,
/// altered or from no paired reader.
final class ReaderTrustTests: XCTestCase {
    func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

    /// Creates an order of `cents` and begins its card payment.
    func begin(_ engine: PosEngine, _ cents: Int64) async throws -> PaymentDecision {
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(cents), contact: nil))
        return try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd(cents), tip: nil, behaviour: .preferOnline, tender: .card))
    }

    func testASimulatedReaderPairsThroughTheEngineANewOneOnlyOnline() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        let first = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-TRUST-1", batteryPercent: 80,
                                        processorKey: testProcessorKey, mtu: 185)
        let info = try await first.connect(listener: ReaderEvents()).pair(engine: engine)
        XCTAssertEqual(info.serial, "SIM-SW-TRUST-1")
        let remembered = try engine.rememberedReaders()
        XCTAssertEqual(remembered.map { $0.serial }, ["SIM-SW-TRUST-1"])
        XCTAssertEqual(remembered.first?.model, "Chipper 2X BT", "the certificate's model")
        _ = try await engine.reportNetwork(reachable: false)
        // Offline: a reader the engine does not know is refused...
        let stranger = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-TRUST-2", batteryPercent: 80,
                                           processorKey: testProcessorKey, mtu: 185)
        do {
            _ = try await stranger.connect(listener: ReaderEvents()).pair(engine: engine)
            XCTFail("a new reader paired offline")
        } catch ReaderError.NewReaderOffline {}
        XCTAssertEqual(try engine.rememberedReaders().map { $0.serial }, ["SIM-SW-TRUST-1"])
        // ...and the remembered one pairs again on a new connection.
        let again = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-TRUST-1", batteryPercent: 75,
                                        processorKey: testProcessorKey, mtu: 185)
        let paired = try await again.connect(listener: ReaderEvents()).pair(engine: engine)
        XCTAssertEqual(paired.serial, "SIM-SW-TRUST-1")
        // The profile's readers are remembered by pairing, never by a vendor record.
        try await engine.goOnline()
        do {
            try await engine.rememberReader(info: ReaderInfo(model: "Chipper 2X BT", serial: "SIM-SW-TRUST-1",
                                                             firmware: "9.9", batteryPercent: 50))
            XCTFail("a vendor record replaced a paired reader")
        } catch PosError.InvalidInput {}
    }

    func testAReaderWhoseAuthorityThePolicyDoesNotListIsUntrusted() async throws {
        let engine = try await onlineEngine(try shopifyPolicy(trustSimulator: false))
        defer { engine.close() }
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-UNTRUSTED", batteryPercent: 80,
                                      processorKey: testProcessorKey, mtu: 185)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        do {
            _ = try await reader.pair(engine: engine)
            XCTFail("an untrusted reader paired")
        } catch ReaderError.UntrustedReader {}
        XCTAssertTrue(try engine.rememberedReaders().isEmpty)
        XCTAssertFalse(events.events.contains { if case .paired = $0 { return true } else { return false } })
        // Unauthenticated, the reader takes no card.
        do {
            _ = try await reader.takeCard(challenge: handChallenge(900), entryModes: [.chip], offline: true)
            XCTFail("an unpaired reader took a card")
        } catch ReaderError.NotPaired {}
    }

    func testTakeCardBeforePairIsRefused() async throws {
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-UNPAIRED", batteryPercent: 80,
                                      processorKey: testProcessorKey, mtu: 185)
        let reader = try await sim.connect(listener: ReaderEvents())
        sim.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .chip)
        do {
            _ = try await reader.takeCard(challenge: handChallenge(900), entryModes: [.chip], offline: true)
            XCTFail("an unpaired reader took a card")
        } catch ReaderError.NotPaired {}
    }

    func testACardTakenForThePaymentsChallengeIsConfirmedOfflineAndItsReplayIsRefused() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-PAY", batteryPercent: 80,
                                      processorKey: testProcessorKey, mtu: 185)
        let reader = try await sim.connect(listener: ReaderEvents())
        _ = try await reader.pair(engine: engine)
        _ = try await engine.reportNetwork(reachable: false)
        // The reader pairs again on every connection, offline too.
        _ = try await reader.pair(engine: engine)
        let decision = try await begin(engine, 2_000)
        guard case .offline = decision.route else { return XCTFail("unexpected route \(decision.route)") }
        let challenge = decision.challenge
        XCTAssertEqual(challenge.paymentId, decision.paymentId)
        XCTAssertEqual(challenge.deviceId, "till-1")
        XCTAssertEqual(challenge.amount, usd(2_000))
        XCTAssertEqual(challenge.nonce.count, 16)
        XCTAssertEqual(try engine.cardChallenge(paymentId: decision.paymentId), challenge, "the same challenge")
        sim.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .chip)
        let card = try await reader.takeCard(challenge: challenge, entryModes: [.chip, .contactless], offline: true)
        let taken = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card)
        XCTAssertEqual(taken.status, .pending)
        XCTAssertEqual(taken.last4, "4242")
        // The same read confirmed again for its own payment is that payment (idempotent)...
        let same = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card)
        XCTAssertEqual(same.id, taken.id)
        // ...for a second payment it is refused: it was bound to the first.
        let second = try await begin(engine, 2_000)
        do {
            _ = try await engine.confirmCardPayment(paymentId: second.paymentId, card: card)
            XCTFail("a replayed card read was taken")
        } catch PosError.CardReadMismatch(let field) {
            XCTAssertEqual(field, "payment_id")
        }
        // A summary changed after the reader signed it is refused too.
        sim.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .chip)
        let fresh = try await reader.takeCard(challenge: second.challenge, entryModes: [.chip], offline: true)
        var altered = fresh
        altered.last4 = "1881"
        do {
            _ = try await engine.confirmCardPayment(paymentId: second.paymentId, card: altered)
            XCTFail("an altered card read was taken")
        } catch PosError.CardReadMismatch(let field) {
            XCTAssertEqual(field, "last4")
        }
        // Signed data that is not the reader's signature is not the paired reader's.
        var forged = fresh
        var signature = try XCTUnwrap(fresh.readerSignature)
        signature[signature.startIndex] ^= 1
        forged.readerSignature = signature
        do {
            _ = try await engine.confirmCardPayment(paymentId: second.paymentId, card: forged)
            XCTFail("a forged signature was taken")
        } catch PosError.ReaderNotPaired {}
        XCTAssertEqual(try engine.listPayments().map { $0.id }, [taken.id], "nothing else was taken")
        // The genuine read for the second payment is accepted.
        let accepted = try await engine.confirmCardPayment(paymentId: second.paymentId, card: fresh)
        XCTAssertEqual(accepted.status, .pending)
        let rejected = reader.rejectedMessages()
        XCTAssertEqual(rejected, 0)
    }

    func testAHandMadeCardReadFromNoPairedReaderIsRefused() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-HAND", batteryPercent: 80,
                                      processorKey: testProcessorKey, mtu: 185)
        _ = try await sim.connect(listener: ReaderEvents()).pair(engine: engine)
        _ = try await engine.reportNetwork(reachable: false)
        let decision = try await begin(engine, 1_000)
        // No serial, a serial no reader of this device has, and a paired
        // profile reader's serial without its signature.
        for serial in [nil, "SIM-SW-NOBODY", "SIM-SW-HAND"] as [String?] {
            do {
                _ = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: vendorCard(serial: serial))
                XCTFail("a card from no paired reader was taken (\(String(describing: serial)))")
            } catch PosError.ReaderNotPaired(let reason) {
                if serial == nil { XCTAssertTrue(reason.contains("serial"), reason) }
            }
        }
        XCTAssertTrue(try engine.listPayments().isEmpty)
    }
}

/// A stand-in for a vendor SDK (its card data comes back already sealed by the vendor's reader).
final class StandInVendorReader: VendorCardReader, @unchecked Sendable {
    private let lock = NSLock()
    private var last4Value = "4242"
    private var amountValue: Money?
    private(set) var cancelled = 0
    var last4: String {
        get { lock.lock(); defer { lock.unlock() }; return last4Value }
        set { lock.lock(); last4Value = newValue; lock.unlock() }
    }
    /// The amount of the last takeCard (the vendor gets the challenge's amount).
    var lastAmount: Money? { lock.lock(); defer { lock.unlock() }; return amountValue }
    func info() throws -> ReaderInfo {
        ReaderInfo(model: "Stripe M2", serial: "STRIPE-M2-0042", firmware: "2.1.0", batteryPercent: 88)
    }
    func takeCard(amount: Money, entryModes: [EntryMode], offline: Bool) throws -> CardRead {
        lock.lock(); amountValue = amount; lock.unlock()
        return CardRead(entryMode: .chip, network: .visa, last4: last4, fingerprint: "fp-vendor-1",
                        readerModel: "Stripe M2", sealedCardData: Data(repeating: 9, count: 64))
    }
    func cancel() { lock.lock(); cancelled += 1; lock.unlock() }
}

/// Automatic reconnection, the battery, and a vendor reader SDK.
final class ReaderLifecycleTests: XCTestCase {
    let processorKey = testProcessorKey

    /// Waits (up to a minute: only a bound on a hang) until `events` holds
    /// one matching `match`.
    func waitFor(_ events: ReaderEvents, _ match: (ReaderEvent) -> Bool) async throws {
        for _ in 0..<6_000 {
            if events.events.contains(where: match) { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTFail("no such reader event in \(events.events)")
    }

    func testDiscoverReadersBySignalStrengthThenPairAndTakeACard() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        let air = SimulatedAirspace()
        let near = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-NEAR", batteryPercent: 80,
                                       processorKey: processorKey, mtu: 185)
        let far = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-FAR", batteryPercent: 80,
                                      processorKey: processorKey, mtu: 185)
        air.advertiseReader(id: "sim:far", name: "Reader far", rssi: -88, reader: far)
        air.advertiseOther(id: "hr:1", name: "Heart strap", rssi: -40, services: ["0000180d-0000-1000-8000-00805f9b34fb"])
        air.advertiseReader(id: "sim:near", name: "Reader near", rssi: -52, reader: near)
        let found = air.scan()
        XCTAssertEqual(found.map { $0.id }, ["sim:near", "sim:far"])
        let reader = try await air.connect(id: found[0].id, listener: ReaderEvents())
        let info = try await reader.pair(engine: engine)
        XCTAssertEqual(info.serial, "SIM-SW-NEAR")
        near.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .contactless)
        let card = try await reader.takeCard(challenge: handChallenge(700), entryModes: [.contactless], offline: true)
        XCTAssertEqual(card.last4, "4242")
    }

    func testTheReaderWalksOutOfRangeAndReconnectsByItself() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-3", batteryPercent: 70,
                                      processorKey: processorKey, mtu: 23)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        _ = try await reader.pair(engine: engine)
        try reader.reconnectAutomatically(settings: ReconnectSettings(firstDelayMs: 5, maxDelayMs: 20, maxAttempts: 1_000))
        sim.leaveRangeAfter(frames: 6)
        sim.presentCard(pan: "5555555555554444", expiry: "1230", network: .mastercard, entryMode: .chip)
        let payment = Task {
            try await reader.takeCard(challenge: handChallenge(900), entryModes: [.chip], offline: true)
        }
        try await waitFor(events) { $0 == .reconnecting(attempt: 3) }
        sim.setInRange(inRange: true)
        let card = try await payment.value
        XCTAssertEqual(card.last4, "4444")
        try await waitFor(events) { if case .reconnected = $0 { return true } else { return false } }
        XCTAssertTrue(events.events.contains(.disconnected))
    }

    func testAFlatBatteryIsReportedAndRefusesPayments() async throws {
        let engine = try await onlineEngine()
        defer { engine.close() }
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-4", batteryPercent: 50,
                                      processorKey: processorKey, mtu: 185)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        _ = try await reader.pair(engine: engine)
        sim.setBattery(percent: 3)
        let info = try await reader.refreshInfo()
        XCTAssertEqual(info.batteryPercent, 3)
        XCTAssertTrue(events.events.contains(.lowBattery(percent: 3)))
        do {
            _ = try await reader.takeCard(challenge: handChallenge(900), entryModes: [.chip], offline: true)
            XCTFail("a flat reader took a payment")
        } catch ReaderError.Refused(let code) {
            XCTAssertEqual(code, "battery_critical")
        }
    }

    func testAVendorReaderPlugsInBehindTheSameChecks() async throws {
        var policy = try shopifyPolicy()
        policy.offlineReaders.append("Stripe M2")
        let engine = try await onlineEngine(policy)
        defer { engine.close() }
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        let vendor = StandInVendorReader()
        let reader = CardReader.vendor(reader: vendor, listener: ReaderEvents())
        // A new vendor reader is remembered only online; then offline too.
        _ = try await engine.reportNetwork(reachable: false)
        do {
            _ = try await reader.pair(engine: engine)
            XCTFail("a new reader paired offline")
        } catch ReaderError.NewReaderOffline {}
        try await engine.goOnline()
        let info = try await reader.pair(engine: engine)
        XCTAssertEqual(info.serial, "STRIPE-M2-0042")
        _ = try await engine.reportNetwork(reachable: false)
        _ = try await reader.pair(engine: engine)
        // Offline, the vendor's read carries the serial it reported, and no signature.
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: Money(minorUnits: 1_200, currency: "USD"), contact: nil))
        let decision = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: Money(minorUnits: 1_200, currency: "USD"), tip: nil,
            behaviour: .preferOnline, tender: .card))
        let card = try await reader.takeCard(challenge: decision.challenge, entryModes: [.chip], offline: true)
        XCTAssertEqual(vendor.lastAmount, Money(minorUnits: 1_200, currency: "USD"))
        XCTAssertEqual(card.readerModel, "Stripe M2")
        XCTAssertEqual(card.readerSerial, "STRIPE-M2-0042")
        XCTAssertNil(card.readerSignature)
        let taken = try await engine.confirmCardPayment(paymentId: decision.paymentId, card: card)
        XCTAssertEqual(taken.status, .pending)
        vendor.last4 = "42a2"
        do {
            _ = try await reader.takeCard(challenge: handChallenge(1_200), entryModes: [.chip], offline: true)
            XCTFail("bad vendor data became a card")
        } catch ReaderError.Protocol {}
        reader.cancel()
        XCTAssertEqual(vendor.cancelled, 1)
    }
}
