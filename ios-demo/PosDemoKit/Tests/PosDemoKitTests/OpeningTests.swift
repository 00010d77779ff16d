import XCTest
import PosCore
@testable import PosDemoKit

/// 08:00 to 09:00: the shop opens online, readers, the morning's sales.
final class OpeningTests: XCTestCase {
    func testTheShopOpensOnlineTheCashierSignsInAndTheReaderPairs() async throws {
        try await till { t in
            await t.model.start()
            var s = await t.screen
            XCTAssertEqual(s.phase, .signedOut)
            XCTAssertNil(s.banner, "online: no banner")
            XCTAssertEqual(s.demo?.clockText, "Tue 24 Nov 08:00")
            s = await t.open()
            XCTAssertEqual(s.phase, .ready)
            XCTAssertEqual(s.cashier, "alex")
            XCTAssertEqual(s.reader.options.map(\.id), [DemoShop.simulatedId], "no Bluetooth reader before the permission")
            let r = try XCTUnwrap(s.reader.connected, s.reader.error ?? "")
            XCTAssertEqual(r.model, "Square Reader")
            XCTAssertEqual(r.serial, "SIM-READER-1")
            XCTAssertEqual(r.batteryPercent, 87)
            XCTAssertTrue(r.offlineCapable, "the preset lists the Square Reader (R11)")
            XCTAssertTrue(s.settings.offlineEnabled)
            XCTAssertEqual(s.settings.limitsText, "per order 100.00 USD · device no limit")
            XCTAssertEqual(s.settings.entryModes, "chip, swipe")
            XCTAssertTrue(s.pending.rows.isEmpty)
            XCTAssertNil(s.forwarding)
            XCTAssertNil(s.error)
            XCTAssertNil(s.wakeUpAtMs, "online with nothing pending: nothing to wake for")
        }
    }

    func testBluetoothReadersShowOnceAllowedStrongestFirstAndPairOverTheAppTransport() async throws {
        try await till { t in
            await t.model.start()
            await t.send(.signIn(staffId: "alex", mayTakeOfflinePayments: true))
            var s = await t.send(.bluetoothPermission(granted: false))
            XCTAssertEqual(s.reader.bluetooth, .denied)
            XCTAssertEqual(s.reader.options.map(\.kind), [.simulated])
            s = await t.send(.bluetoothPermission(granted: true))
            XCTAssertEqual(s.reader.options.map(\.id), [DemoShop.simulatedId, "ble:SIM-BT-7", "ble:SIM-BT-9"])
            XCTAssertEqual(s.reader.options.map(\.rssi), [nil, -58, -81])
            s = await t.send(.pickReader(optionId: "ble:SIM-BT-7"))
            let r = try XCTUnwrap(s.reader.connected, s.reader.error ?? "")
            XCTAssertEqual(r.kind, .bluetooth)
            XCTAssertEqual(r.serial, "SIM-BT-7")
            XCTAssertEqual(r.batteryPercent, 64)
            // A sale through 20-byte frames, online then offline.
            s = await t.sell(1_250, t.card("approve", "4242"))
            XCTAssertEqual(s.card.done?.text, "Approved online: 12.50 USD on Visa •••• 4242")
            await t.send(.demoSetNetwork(up: false))
            s = await t.sell(900, t.card("approve", "4444"))
            XCTAssertEqual(s.card.done?.status, .pending, "\(s.card) \(s.error ?? "")")
            XCTAssertEqual(s.pending.rows.map(\.last4), ["4444"])
        }
    }

    func testANewReaderIsPairedOnlyOnline() async throws {
        try await till { t in
            await t.model.start()
            await t.send(.signIn(staffId: "alex", mayTakeOfflinePayments: true))
            await t.send(.demoSetNetwork(up: false))
            await t.send(.scanReaders)
            let s = await t.send(.pickReader(optionId: DemoShop.simulatedId))
            XCTAssertNil(s.reader.connected)
            XCTAssertEqual(s.reader.error, "A new reader can only be paired online: connect once, then it works offline too.")
        }
    }

    func testTheMorningsOnlineSalesAreApprovedAndNeverPending() async throws {
        try await till { t in
            await t.open()
            let s = await t.sell(1_250, t.card("approve", "4242"))
            let done = try XCTUnwrap(s.card.done)
            XCTAssertEqual(done.status, .approved)
            XCTAssertEqual(done.text, "Approved online: 12.50 USD on Visa •••• 4242")
            XCTAssertEqual(s.checkout?.badge, .paid)
            XCTAssertEqual(s.checkout?.badgeText, "Paid")
            XCTAssertEqual(s.checkout?.tenders, ["card 12.50 USD online"])
            XCTAssertTrue(s.pending.rows.isEmpty)
            try await t.morning()
            let after = await t.screen
            XCTAssertTrue(after.pending.rows.isEmpty)
            XCTAssertNil(after.checkout, "new sale")
        }
    }

    func testTheScreenStreamPublishesEachNewScreen() async throws {
        try await till { t in
            await t.open()
            var it = await t.model.screens().makeAsyncIterator()
            let first = await it.next()
            XCTAssertEqual(first?.phase, .ready)
            t.model.send(.keypadDigit(7))
            let next = await it.next()
            XCTAssertEqual(next?.cart.entry, "0.07")
            let v3 = await t.screen
            XCTAssertEqual(v3, next)
        }
    }
}
