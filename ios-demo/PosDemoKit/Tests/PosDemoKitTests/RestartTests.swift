import XCTest
import PosCore
@testable import PosDemoKit

/// The app's process ends in the middle of the outage; the phone is locked; the app goes to the background.
final class RestartTests: XCTestCase {
    func testAfterAProcessRestartInTheOutageTheModelReopensTheEngineAndShowsTheSamePendingList() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            _ = try await t.offlineSales()
            await t.splitOrder()
            let before = await t.screen
            XCTAssertEqual(before.pending.rows.count, 10)

            let after = await t.restart()
            XCTAssertEqual(after.phase, .signedOut, "a new process: nobody signed in")
            XCTAssertEqual(after.pending, before.pending, "same rows, amounts, time left, session deadline")
            // Still the outage banner, with the same text and offline line (the session's
            // window is stored); the engine's `since` restarts with the new process's first report.
            var b1 = try XCTUnwrap(before.banner), b2 = try XCTUnwrap(after.banner)
            b1.sinceMs = 0
            b2.sinceMs = 0
            XCTAssertEqual(b2, b1)
            XCTAssertNil(after.reader.connected, "the reader link is new")
            XCTAssertNil(after.checkout)
            XCTAssertEqual(after.queuedReceipts, 1, "the queued receipt survived")

            // The cashier signs in and picks the reader: remembered, it pairs offline.
            await t.send(.signIn(staffId: "alex", mayTakeOfflinePayments: true))
            await t.send(.scanReaders)
            let s = await t.send(.pickReader(optionId: DemoShop.simulatedId))
            XCTAssertNotNil(s.reader.connected, s.reader.error ?? "")
            await t.at(t.hm(11, 20))
            let sale = await t.sell(1_000, t.card("approve", "4444"))
            XCTAssertEqual(sale.card.done?.status, .pending)
            XCTAssertEqual(sale.pending.rows.count, 11)

            // And the rest of the day goes on from there.
            await t.serviceDownAtNoon()
            let back = await t.serviceBack()
            XCTAssertEqual(back.forwarding?.text, "11/11 287.00 USD of 287.00 USD")
            XCTAssertEqual(back.declines.count, 2)
        }
    }

    func testGoingToTheBackgroundCompactsTheStoreAndWakeUpsFollowTheEngine() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            _ = try await t.offlineSales()
            let s = await t.send(.appBackground)
            XCTAssertNil(s.error)
            let wake = try XCTUnwrap(s.wakeUpAtMs)
            XCTAssertTrue(wake > t.shop.nowMs(), "in the background: the next session warning or deadline, later")
            XCTAssertTrue(wake <= (s.pending.session?.deadlineMs ?? 0))
            let before = s.pending
            await t.restart()
            let v4 = await t.screen.pending
            XCTAssertEqual(v4, before)
            let v5 = await t.send(.appForeground).error
            XCTAssertNil(v5)
        }
    }

    func testALockedPhoneBlocksTheStartWithATypedMessageAndLosesNothing() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            await t.at(t.hm(10, 35))
            await t.sell(800, t.card("approve", "4242"))
            t.keys.locked = true
            let blocked = await t.restart()
            XCTAssertEqual(blocked.phase, .blocked)
            XCTAssertEqual(blocked.blockingError, "The phone is locked: unlock it to open the payment store. Nothing is lost.")
            XCTAssertTrue(blocked.pending.rows.isEmpty)

            t.keys.locked = false
            let open = await t.restart()
            XCTAssertEqual(open.phase, .signedOut)
            XCTAssertNil(open.blockingError)
            XCTAssertEqual(open.pending.rows.map(\.amountText), ["8.00 USD"])
        }
    }
}

/// The CLI demo's whole day on the till, with the app's process restarted in the middle of the outage.
final class DemoDayTests: XCTestCase {
    func testTheShopsDayEndToEndWithARestartInTheMiddle() async throws {
        try await till { t in
            // 08:00 the shop opens.
            let v6 = await t.open().phase
            XCTAssertEqual(v6, .ready)
            try await t.morning()
            let v7 = await t.screen.pending.rows.isEmpty
            XCTAssertTrue(v7)

            // 10:30 the network drops.
            let v8 = await t.networkDrops().banner?.kind
            XCTAssertEqual(v8, .networkOutage)
            let ids = try await t.offlineSales()
            let v9 = await t.screen.pending.rows.count
            XCTAssertEqual(v9, 8)
            let v10 = await t.splitOrder().checkout?.badge
            XCTAssertEqual(v10, .paymentPending)
            await t.send(.newSale)
            let (r5, r9) = await t.refusals()
            XCTAssertEqual(r5.refusal?.rule, "R5")
            XCTAssertEqual(r9.refusal?.rule, "R9")
            let v11 = await t.send(.logOut).logout
            guard case let .refused(_, _, text, _)? = v11 else { return XCTFail("logout not refused") }
            XCTAssertEqual(text, "Cannot log out: 10 offline payments are not forwarded yet (277.00 USD at risk).")
            await t.send(.dismissLogout)

            // 11:15 the app is killed and started again: the same pending list.
            await t.at(t.hm(11, 15))
            let before = await t.screen.pending
            let v12 = await t.restart().pending
            XCTAssertEqual(v12, before)
            await t.send(.signIn(staffId: "alex", mayTakeOfflinePayments: true))
            await t.send(.scanReaders)
            await t.send(.pickReader(optionId: DemoShop.simulatedId))

            // 12:00 internet back, payment service down.
            let v13 = await t.serviceDownAtNoon().banner?.kind
            XCTAssertEqual(v13, .serviceDisruption)
            let v14 = await t.screen.pending.rows.count
            XCTAssertEqual(v14, 10)

            // 12:50 the service is back: forwarding, declines.
            let back = await t.serviceBack()
            XCTAssertNil(back.banner)
            XCTAssertEqual(back.forwarding?.text, "10/10 277.00 USD of 277.00 USD")
            XCTAssertEqual(Set(back.declines.map(\.paymentId)), [ids[1], ids[4]])
            XCTAssertEqual(back.queuedReceipts, 0)

            // The insufficient-funds customer comes back and pays online.
            await t.send(.collectAgain(paymentId: ids[1]))
            let collected = await t.presentIfAsked(t.card("approve", "4444"))
            XCTAssertEqual(collected.card.done?.status, .approved)
            XCTAssertEqual(collected.declines.map(\.paymentId), [ids[4]])

            // 18:00 the connection drops again; one sale; the shop stays offline overnight.
            await t.at(t.hm(18, 0))
            await t.send(.demoSetNetwork(up: false))
            await t.send(.newSale)
            let v15 = await t.sell(1_850, t.card("approve", "0005")).card.done?.paymentId
            let evening = try XCTUnwrap(v15)
            let lost = await t.at(24 * 60 + t.hm(18, 1))
            XCTAssertEqual(lost.expired.map(\.amount), [Money(minorUnits: 1_850, currency: "USD")])
            XCTAssertTrue(lost.pending.rows.isEmpty)

            // Closing: the processor's ledger and the screen agree.
            let ledger = t.shop.processor.ledger()
            XCTAssertEqual(ledger.filter { $0.online && $0.outcome == "approved" }.count, 4, "three morning sales and the collected decline")
            XCTAssertEqual(ledger.filter { !$0.online && $0.outcome == "approved" }.count, 8)
            XCTAssertFalse(ledger.contains { $0.paymentId == evening }, "the lost payment was never charged")
            let v16 = await t.send(.exportAudit).audit
            let audit = try XCTUnwrap(v16)
            XCTAssertTrue(audit.rows > 30, "\(audit.rows) audit rows")
        }
    }
}
