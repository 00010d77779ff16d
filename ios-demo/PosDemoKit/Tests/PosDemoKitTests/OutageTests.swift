import XCTest
import PosCore
@testable import PosDemoKit

/// 10:30 to 12:50: the outage, offline sales, split tender, refusals, the disruption.
final class OutageTests: XCTestCase {
    func testANetworkOutageShowsItsBannerAndWhatCanStillBeTakenOffline() async throws {
        try await till { t in
            await t.open()
            let s = await t.networkDrops()
            let b = try XCTUnwrap(s.banner)
            XCTAssertEqual(b.kind, .networkOutage)
            XCTAssertEqual(b.text, "You are offline. Connect to the internet to take payments.")
            XCTAssertEqual(b.offlineLine, "Card payments are stored offline, up to 100.00 USD per order, until 11:30.")
            XCTAssertEqual(b.sinceMs, DemoShop.openingMs + t.hm(10, 30) * 60_000)
            // The BGTask is scheduled for the next probe.
            let wake = try XCTUnwrap(s.wakeUpAtMs)
            XCTAssertTrue(wake > t.shop.nowMs() && wake < t.shop.nowMs() + 5 * 60_000, "next probe within minutes: \(wake)")
        }
    }

    func testOfflineSalesAreStoredWithTheirTimeLeftAndTheSessionDeadline() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            await t.at(t.hm(10, 35))
            var s = await t.sell(800, t.card("approve", "4242"))
            let first = try XCTUnwrap(s.card.done)
            XCTAssertEqual(first.status, .pending)
            XCTAssertEqual(first.text, "Stored offline (pending): 8.00 USD on Visa •••• 4242, forward by tomorrow 10:30")
            XCTAssertEqual(s.checkout?.badge, .paymentPending)
            XCTAssertEqual(s.checkout?.badgeText, "Payment pending")
            await t.send(.newSale)

            let ids = try await t.offlineSales() + [first.paymentId]
            s = await t.screen
            XCTAssertEqual(s.pending.rows.count, 9)
            XCTAssertEqual(Set(s.pending.rows.map(\.paymentId)), Set(ids))
            let row = try XCTUnwrap(s.pending.rows.first { $0.paymentId == first.paymentId })
            XCTAssertEqual(row.amountText, "8.00 USD")
            XCTAssertEqual(row.statusText, "pending")
            // 11:10; the deadline is 24 h after the connection was lost (square-reader preset).
            XCTAssertEqual(row.timeLeftText, "23 h 20 min")
            XCTAssertEqual(row.deadlineText, "tomorrow 10:30")
            let session = try XCTUnwrap(s.pending.session)
            XCTAssertEqual(session.deadlineText, "tomorrow 10:30")
            XCTAssertEqual(session.timeLeftText, "23 h 20 min")
            XCTAssertEqual(session.acceptanceText, "Offline payments accepted until 11:30")
            XCTAssertEqual(s.pending.atRiskText, "215.00 USD")
            XCTAssertNil(s.forwarding, "offline: nothing is forwarded")
        }
    }

    func testASplitOrderTakesTwoCardsAndCashAndItsBadgeSaysPaymentPending() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            await t.at(t.hm(11, 12))
            var s = await t.checkout(9_000, email: "sam@example.org")
            XCTAssertEqual(s.checkout?.contactHint, "s***@e***.org")
            s = await t.payCard(t.card("approve", "4242"), 4_000)
            XCTAssertEqual(s.checkout?.balanceText, "50.00 USD")
            s = await t.payCard(t.card("approve", "4444"), 3_000)
            XCTAssertEqual(s.checkout?.balanceText, "20.00 USD")
            s = await t.send(.payCash())
            let c = try XCTUnwrap(s.checkout)
            XCTAssertEqual(c.tenders, ["card •••• 4242 40.00 USD offline (pending)", "card •••• 4444 30.00 USD offline (pending)", "cash 20.00 USD"])
            XCTAssertEqual(c.balanceText, "0.00 USD")
            XCTAssertTrue(c.complete)
            XCTAssertEqual(c.badge, .paymentPending)
            XCTAssertEqual(s.pending.rows.count, 2)

            s = await t.send(.requestReceipt(email: "sam@example.org", phone: nil))
            XCTAssertEqual(s.queuedReceipts, 1)
            XCTAssertEqual(s.notices.last, Notice(.info, "Receipt queued: it is sent when the service is back."))
        }
    }

    func testAnOrderOverThePerOrderLimitIsRefusedWithRuleR5AndItsFigures() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            let (overLimit, _) = await t.refusals()
            let r = try XCTUnwrap(overLimit.refusal)
            XCTAssertEqual(r.rule, "R5")
            XCTAssertEqual(r.kind, "PerOrderLimit")
            XCTAssertEqual(r.text, "Refused offline [R5]: 150.00 USD on top of 0.00 USD would exceed the offline per-order limit of 100.00 USD")
            XCTAssertEqual(r.figures, "per-order limit 100.00 USD · already on this order 0.00 USD · this payment 150.00 USD")
            XCTAssertEqual(overLimit.card, .idle)
            XCTAssertEqual(overLimit.checkout?.balanceText, "150.00 USD", "nothing taken")
            XCTAssertTrue(overLimit.pending.rows.isEmpty)

            // Split across cards: the second card would take the order over the limit.
            await t.checkout(12_000)
            await t.payCard(t.card("approve", "4242"), 6_000)
            let s = await t.payCard(t.card("approve", "4444"), 5_000)
            XCTAssertEqual(s.refusal?.figures, "per-order limit 100.00 USD · already on this order 60.00 USD · this payment 50.00 USD")
            XCTAssertEqual(s.refusal?.current, Money(minorUnits: 6_000, currency: "USD"))
            let paid = await t.send(.payCash())
            XCTAssertEqual(paid.checkout?.complete, true)
            XCTAssertNil(paid.refusal)
        }
    }

    func testContactlessIsRefusedOfflineWithRuleR9AndChipThenGoesThrough() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            let (_, contactless) = await t.refusals()
            let r = try XCTUnwrap(contactless.refusal)
            XCTAssertEqual(r.rule, "R9")
            XCTAssertEqual(r.kind, "EntryModeRefused")
            XCTAssertEqual(r.text, "Refused offline [R9]: contactless is not accepted offline")
            XCTAssertNil(r.figures)
            XCTAssertTrue(contactless.pending.rows.isEmpty, "the refused payment is not stored")

            await t.checkout(900)
            await t.send(.payByCard())
            let v1 = await t.screen.card.waiting
            let w = try XCTUnwrap(v1)
            XCTAssertEqual(w.amountText, "9.00 USD")
            XCTAssertTrue(w.offline)
            XCTAssertEqual(w.offlineReason, "network outage")
            XCTAssertEqual(w.readerName, "Square Reader SIM-READER-1")
            let s = await t.presentIfAsked(t.card("approve", "0005"))
            XCTAssertEqual(s.card.done?.text, "Stored offline (pending): 9.00 USD on Amex •••• 0005, forward by tomorrow 10:30")
            XCTAssertNil(s.refusal)
        }
    }

    func testTheLogoutIsRefusedWithTheMoneyAtRiskAndAManagerMayOverride() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            _ = try await t.offlineSales()
            var s = await t.send(.logOut)
            guard case let .refused(count, atRisk, text, overrideAllowed)? = s.logout else {
                return XCTFail("not refused: \(String(describing: s.logout))")
            }
            XCTAssertEqual(count, 8)
            XCTAssertEqual(atRisk, [Money(minorUnits: 20_700, currency: "USD")])
            XCTAssertEqual(text, "Cannot log out: 8 offline payments are not forwarded yet (207.00 USD at risk).")
            XCTAssertEqual(s.phase, .ready, "still signed in")
            if overrideAllowed {
                s = await t.send(.logOutWithOverride(managerId: "mgr-1", reason: "end of shift"))
                XCTAssertEqual(s.logout, .overridden(pendingCount: 8, text: "Logged out by mgr-1 with 8 payments pending (207.00 USD at risk); recorded in the audit log."))
                XCTAssertEqual(s.phase, .signedOut)
                XCTAssertEqual(s.pending.rows.count, 8, "nothing is lost")
            }
        }
    }

    func testAServiceDisruptionHasItsOwnBannerDifferentFromTheOutages() async throws {
        try await till { t in
            await t.open()
            let v2 = await t.networkDrops().banner
            let outage = try XCTUnwrap(v2)
            _ = try await t.offlineSales()
            let s = await t.serviceDownAtNoon()
            let b = try XCTUnwrap(s.banner)
            XCTAssertEqual(b.kind, .serviceDisruption)
            XCTAssertEqual(b.text, "Service disruption: offline payments enabled.")
            XCTAssertNotEqual(outage.text, b.text)
            XCTAssertEqual(b.offlineLine, "The offline window closed at 11:30: cash only until the connection is back.")
            XCTAssertEqual(s.pending.rows.count, 8, "nothing forwarded while the service is down")
            XCTAssertNil(s.forwarding)
            XCTAssertEqual(s.notices.filter { $0.text == "The offline window closed: no more offline card payments in this outage" }.count, 1)
        }
    }
}
