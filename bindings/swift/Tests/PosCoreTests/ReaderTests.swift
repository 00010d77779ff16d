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
    let readerKey = Data(repeating: 7, count: 32)
    let processorKey = Data((0..<32).map { UInt8(($0 * 13 + 5) & 0xff) })

    func testPairAndTakeACard() async throws {
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-1", batteryPercent: 55,
                                      readerKey: readerKey, processorKey: processorKey, mtu: 185)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        let info = try await reader.pair(readerKey: readerKey, online: true, remembered: [])
        XCTAssertEqual(info.serial, "SIM-SW-1")
        sim.presentCard(pan: "378282246310005", expiry: "1230", network: .amex, entryMode: .chip)
        let card = try await reader.takeCard(amount: Money(minorUnits: 2_000, currency: "USD"),
                                             entryModes: [.chip], offline: true)
        XCTAssertEqual(card.last4, "0005")
        XCTAssertEqual(card.network, .amex)
        do {
            _ = try await reader.pair(readerKey: Data(repeating: 8, count: 32), online: true, remembered: [])
            XCTFail("a wrong key paired")
        } catch ReaderError.PairingFailed {}
        XCTAssertTrue(events.events.contains { if case .paired = $0 { return true } else { return false } })
    }
}

/// A stand-in for a vendor SDK (its card data comes back already sealed by the vendor's reader).
final class StandInVendorReader: VendorCardReader, @unchecked Sendable {
    private let lock = NSLock()
    private var last4Value = "4242"
    private(set) var cancelled = 0
    var last4: String {
        get { lock.lock(); defer { lock.unlock() }; return last4Value }
        set { lock.lock(); last4Value = newValue; lock.unlock() }
    }
    func info() throws -> ReaderInfo {
        ReaderInfo(model: "Stripe M2", serial: "STRIPE-M2-0042", firmware: "2.1.0", batteryPercent: 88)
    }
    func takeCard(amount: Money, entryModes: [EntryMode], offline: Bool) throws -> CardRead {
        CardRead(entryMode: .chip, network: .visa, last4: last4, fingerprint: "fp-vendor-1",
                 readerModel: "Stripe M2", sealedCardData: Data(repeating: 9, count: 64))
    }
    func cancel() { lock.lock(); cancelled += 1; lock.unlock() }
}

/// Automatic reconnection, the battery, and a vendor reader SDK.
final class ReaderLifecycleTests: XCTestCase {
    let readerKey = Data(repeating: 7, count: 32)
    let processorKey = Data((0..<32).map { UInt8(($0 * 13 + 5) & 0xff) })

    /// Waits (event-driven, up to 10 s) until `events` holds one matching `match`.
    func waitFor(_ events: ReaderEvents, _ match: (ReaderEvent) -> Bool) async throws {
        for _ in 0..<1_000 {
            if events.events.contains(where: match) { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTFail("no such reader event in \(events.events)")
    }

    func testDiscoverReadersBySignalStrengthThenPairAndTakeACard() async throws {
        let air = SimulatedAirspace()
        let near = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-NEAR", batteryPercent: 80,
                                       readerKey: readerKey, processorKey: processorKey, mtu: 185)
        let far = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-FAR", batteryPercent: 80,
                                      readerKey: readerKey, processorKey: processorKey, mtu: 185)
        air.advertiseReader(id: "sim:far", name: "Reader far", rssi: -88, reader: far)
        air.advertiseOther(id: "hr:1", name: "Heart strap", rssi: -40, services: ["0000180d-0000-1000-8000-00805f9b34fb"])
        air.advertiseReader(id: "sim:near", name: "Reader near", rssi: -52, reader: near)
        let found = air.scan()
        XCTAssertEqual(found.map { $0.id }, ["sim:near", "sim:far"])
        let reader = try await air.connect(id: found[0].id, listener: ReaderEvents())
        let info = try await reader.pair(readerKey: readerKey, online: true, remembered: [])
        XCTAssertEqual(info.serial, "SIM-SW-NEAR")
        near.presentCard(pan: "4242424242424242", expiry: "1230", network: .visa, entryMode: .contactless)
        let card = try await reader.takeCard(amount: Money(minorUnits: 700, currency: "USD"), entryModes: [.contactless], offline: true)
        XCTAssertEqual(card.last4, "4242")
    }

    func testTheReaderWalksOutOfRangeAndReconnectsByItself() async throws {
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-3", batteryPercent: 70,
                                      readerKey: readerKey, processorKey: processorKey, mtu: 23)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        _ = try await reader.pair(readerKey: readerKey, online: true, remembered: [])
        try reader.reconnectAutomatically(settings: ReconnectSettings(firstDelayMs: 5, maxDelayMs: 20, maxAttempts: 1_000))
        sim.leaveRangeAfter(frames: 6)
        sim.presentCard(pan: "5555555555554444", expiry: "1230", network: .mastercard, entryMode: .chip)
        let payment = Task {
            try await reader.takeCard(amount: Money(minorUnits: 900, currency: "USD"), entryModes: [.chip], offline: true)
        }
        try await waitFor(events) { $0 == .reconnecting(attempt: 3) }
        sim.setInRange(inRange: true)
        let card = try await payment.value
        XCTAssertEqual(card.last4, "4444")
        try await waitFor(events) { if case .reconnected = $0 { return true } else { return false } }
        XCTAssertTrue(events.events.contains(.disconnected))
    }

    func testAFlatBatteryIsReportedAndRefusesPayments() async throws {
        let sim = try SimulatedReader(model: "Chipper 2X BT", serial: "SIM-SW-4", batteryPercent: 50,
                                      readerKey: readerKey, processorKey: processorKey, mtu: 185)
        let events = ReaderEvents()
        let reader = try await sim.connect(listener: events)
        _ = try await reader.pair(readerKey: readerKey, online: true, remembered: [])
        sim.setBattery(percent: 3)
        let info = try await reader.refreshInfo()
        XCTAssertEqual(info.batteryPercent, 3)
        XCTAssertTrue(events.events.contains(.lowBattery(percent: 3)))
        do {
            _ = try await reader.takeCard(amount: Money(minorUnits: 900, currency: "USD"), entryModes: [.chip], offline: true)
            XCTFail("a flat reader took a payment")
        } catch ReaderError.Refused(let code) {
            XCTAssertEqual(code, "battery_critical")
        }
    }

    func testAVendorReaderPlugsInBehindTheSameChecks() async throws {
        let vendor = StandInVendorReader()
        let reader = CardReader.vendor(reader: vendor, listener: ReaderEvents())
        do {
            _ = try await reader.pair(readerKey: Data(), online: false, remembered: [])
            XCTFail("a new reader paired offline")
        } catch ReaderError.NewReaderOffline {}
        let info = try await reader.pair(readerKey: Data(), online: true, remembered: [])
        XCTAssertEqual(info.serial, "STRIPE-M2-0042")
        let card = try await reader.takeCard(amount: Money(minorUnits: 1_200, currency: "USD"), entryModes: [.chip], offline: true)
        XCTAssertEqual(card.readerModel, "Stripe M2")
        vendor.last4 = "42a2"
        do {
            _ = try await reader.takeCard(amount: Money(minorUnits: 1_200, currency: "USD"), entryModes: [.chip], offline: true)
            XCTFail("bad vendor data became a card")
        } catch ReaderError.Protocol {}
        reader.cancel()
        XCTAssertEqual(vendor.cancelled, 1)
    }
}
