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
