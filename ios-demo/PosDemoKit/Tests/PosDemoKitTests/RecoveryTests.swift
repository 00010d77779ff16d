import XCTest
import PosCore
@testable import PosDemoKit

/// 12:50 and after: forwarding, declines collected again, a payment lost at its deadline.
final class RecoveryTests: XCTestCase {
    func testWhenTheServiceReturnsTheBacklogIsForwardedAsOneBarAndDeclinesAreListedWithTheContact() async throws {
        try await till { t in
            let ids = try await t.untilRecovery()
            let s = await t.screen
            XCTAssertNil(s.banner, "online again")
            XCTAssertTrue(s.pending.rows.isEmpty, "\(s.pending.rows)")
            XCTAssertEqual(s.forwarding, ForwardingBar(
                done: 10, total: 10, amountDone: Money(minorUnits: 27_700, currency: "USD"),
                amountTotal: Money(minorUnits: 27_700, currency: "USD"), fraction: 1.0,
                text: "10/10 277.00 USD of 277.00 USD", finished: true))
            let declined = s.declines.sorted { $0.amountDue.minorUnits < $1.amountDue.minorUnits }
            XCTAssertEqual(declined, [
                DeclineRow(paymentId: ids[1], orderId: declined.first?.orderId ?? "", amountDue: Money(minorUnits: 1_325, currency: "USD"),
                           amountDueText: "13.25 USD", reason: "insufficient funds", contactHint: "j***@e***.com", contact: "jane.doe@example.com"),
                DeclineRow(paymentId: ids[4], orderId: declined.last?.orderId ?? "", amountDue: Money(minorUnits: 2_800, currency: "USD"),
                           amountDueText: "28.00 USD", reason: "stolen card", contactHint: "+***23", contact: "+14155550123"),
            ])
            XCTAssertEqual(s.notices.filter { $0.kind == .decline }.map(\.text).sorted(), [
                "Declined (insufficient funds): collect 13.25 USD from j***@e***.com",
                "Declined (stolen card): collect 28.00 USD from +***23",
            ])
            XCTAssertEqual(s.queuedReceipts, 0, "the receipt queued offline went out")
            // The processor's ledger agrees: each offline payment once, as the screen says.
            let offline = t.shop.processor.ledger().filter { !$0.online }
            XCTAssertEqual(Dictionary(grouping: offline, by: \.outcome).mapValues(\.count),
                           ["approved": 8, "insufficient_funds": 1, "stolen_card": 1])
        }
    }

    func testAFlakyServiceLeavesPartOfTheBacklogAndTheBarMeasuresTheWholeBacklog() async throws {
        try await till { t in
            await t.open()
            await t.networkDrops()
            _ = try await t.offlineSales()
            await t.at(t.hm(12, 0))
            try t.shop.processor.setFault(mode: "5xx", ratePerMille: 500)
            var s = await t.send(.demoSetNetwork(up: true))
            let bar = try XCTUnwrap(s.forwarding)
            XCTAssertEqual(bar.total, 8)
            XCTAssertTrue((1...7).contains(bar.done), "some of the first round failed: \(bar.text)")
            XCTAssertEqual(bar.done, 8 - s.pending.rows.count)
            XCTAssertFalse(bar.finished)
            XCTAssertEqual(s.pending.rows.filter { $0.status == .failedToForward }.count, 8 - bar.done)

            // The retries (after their back-off) finish it: still out of the same 8.
            t.shop.processor.clearFaults()
            s = await t.send(.demoAdvance(ms: 5 * 60_000))
            XCTAssertEqual(s.forwarding?.text, "8/8 207.00 USD of 207.00 USD")
            XCTAssertEqual(s.forwarding?.finished, true)
        }
    }

    func testADeclinedPaymentIsCollectedAgainOnlineAndLeavesTheList() async throws {
        try await till { t in
            let ids = try await t.untilRecovery()
            await t.send(.collectAgain(paymentId: ids[1]))
            let v17 = await t.screen.card.waiting
            let w = try XCTUnwrap(v17)
            XCTAssertTrue(w.collecting)
            XCTAssertFalse(w.offline, "collected online")
            XCTAssertEqual(w.amountText, "13.25 USD")
            let s = await t.presentIfAsked(t.card("approve", "4242"))
            XCTAssertEqual(s.card.done?.text, "Approved online: 13.25 USD on Visa •••• 4242")
            XCTAssertEqual(s.declines.map(\.paymentId), [ids[4]])

            // Offline, collecting again is refused in words.
            await t.at(t.hm(14, 0))
            await t.send(.demoSetNetwork(up: false))
            let offline = await t.send(.collectAgain(paymentId: ids[4]))
            XCTAssertEqual(offline.error, "Collecting a declined payment needs the connection: try again once online.")
            XCTAssertEqual(offline.card, s.card, "the last sale's result stays on screen")
        }
    }

    func testAPaymentNotForwardedBeforeItsDeadlineIsShownAsLost() async throws {
        try await till { t in
            _ = try await t.untilRecovery()
            // 18:00: the connection drops again, one more offline sale, and the shop stays offline overnight.
            await t.at(t.hm(18, 0))
            await t.send(.demoSetNetwork(up: false))
            await t.at(t.hm(18, 5))
            var s = await t.sell(1_500, t.card("approve", "4242"))
            XCTAssertEqual(s.checkout?.badge, .paymentPending)
            let id = try XCTUnwrap(s.card.done?.paymentId)
            await t.send(.newSale)
            let v18 = await t.screen.pending.rows.map(\.deadlineText)
            XCTAssertEqual(v18, ["tomorrow 18:00"])

            // The next day at 17:50: 10 minutes left, warnings given.
            s = await t.at(24 * 60 + t.hm(17, 50))
            XCTAssertEqual(s.pending.rows.map(\.timeLeftText), ["10 min"])
            XCTAssertEqual(s.pending.rows.map(\.deadlineText), ["18:00"])
            XCTAssertTrue(s.notices.contains { $0.text == "Forwarding deadline in 15 min or less: reconnect to forward" }, "\(s.notices)")

            // 18:01: lost.
            s = await t.at(24 * 60 + t.hm(18, 1))
            XCTAssertTrue(s.pending.rows.isEmpty)
            XCTAssertEqual(s.expired, [ExpiredRow(paymentId: id, orderId: s.expired.first?.orderId ?? "",
                                                  amount: Money(minorUnits: 1_500, currency: "USD"),
                                                  text: "15.00 USD lost: not forwarded before 18:00")])
            XCTAssertEqual(s.notices.last { $0.kind == .expiry }, Notice(.expiry, "A payment passed its forwarding deadline: 15.00 USD lost"))

            // Back online, it is never forwarded.
            s = await t.send(.demoSetNetwork(up: true))
            XCTAssertEqual(s.expired.count, 1)
            XCTAssertFalse(t.shop.processor.ledger().contains { $0.paymentId == id })
        }
    }
}
