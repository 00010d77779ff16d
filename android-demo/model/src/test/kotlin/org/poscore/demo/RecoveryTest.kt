package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.Money
import org.poscore.OrderStatus
import org.poscore.PaymentStatus

/** 12:50 and after: forwarding, declines collected again, a payment lost at its deadline. */
class RecoveryTest {
    @Test
    fun `when the service returns the backlog is forwarded as one bar and declines are listed with the contact`() = till {
        val ids = untilRecovery()
        val s = screen
        assertNull(s.banner, "online again")
        assertTrue(s.pending.rows.isEmpty(), "${s.pending.rows}")
        assertEquals(
            ForwardingBar(10, 10, Money(27_700, "USD"), Money(27_700, "USD"), 1.0, "10/10 277.00 USD of 277.00 USD", true),
            s.forwarding,
        )
        val declined = s.declines.sortedBy { it.amountDue.minorUnits }
        assertEquals(
            listOf(
                DeclineRow(ids[1], declined[0].orderId, Money(1_325, "USD"), "13.25 USD", "insufficient funds", "j***@e***.com", "jane.doe@example.com"),
                DeclineRow(ids[4], declined[1].orderId, Money(2_800, "USD"), "28.00 USD", "stolen card", "+***23", "+14155550123"),
            ),
            declined,
        )
        val declines = s.notices.filter { it.kind == NoticeKind.DECLINE }.map { it.text }
        assertEquals(
            listOf("Declined (insufficient funds): collect 13.25 USD from j***@e***.com", "Declined (stolen card): collect 28.00 USD from +***23"),
            declines.sorted(),
        )
        assertEquals(0, s.queuedReceipts, "the receipt queued offline went out")
        // The processor's ledger agrees: each offline payment once, as the screen says.
        assertEquals(
            mapOf("approved" to 8, "insufficient_funds" to 1, "stolen_card" to 1),
            shop.processor.ledger().filter { !it.online }.groupingBy { it.outcome }.eachCount(),
        )
    }

    @Test
    fun `a flaky service leaves part of the backlog and the bar measures the whole backlog, not one round`() = till {
        open()
        networkDrops()
        offlineSales()
        at(hm(12, 0))
        shop.processor.setFault("5xx", 500u)
        var s = send(CashierIntent.DemoSetNetwork(true))
        val bar = s.forwarding!!
        assertEquals(8, bar.total)
        assertTrue(bar.done in 1..7, "some of the first round failed: ${bar.text}")
        assertEquals(bar.done, 8 - s.pending.rows.size)
        assertTrue(!bar.finished)
        assertEquals(8 - bar.done, s.pending.rows.count { it.status == PaymentStatus.FAILED_TO_FORWARD })

        // The retries (after their back-off) finish it: still out of the same 8.
        shop.processor.clearFaults()
        s = send(CashierIntent.DemoAdvance(5 * 60_000))
        assertEquals("8/8 207.00 USD of 207.00 USD", s.forwarding!!.text)
        assertTrue(s.forwarding!!.finished)
    }

    @Test
    fun `a declined payment is collected again online and leaves the list`() = till {
        val ids = untilRecovery()
        send(CashierIntent.CollectAgain(ids[1]))
        val w = screen.card as CardFlow.WaitingForCard
        assertTrue(w.collecting)
        assertTrue(!w.offline, "collected online")
        assertEquals("13.25 USD", w.amountText)
        val s = presentIfAsked(card("approve", "4242"))
        assertEquals("Approved online: 13.25 USD on Visa •••• 4242", (s.card as CardFlow.Done).text)
        assertEquals(listOf(ids[4]), s.declines.map { it.paymentId })

        // Offline, collecting again is refused in words.
        at(hm(14, 0))
        send(CashierIntent.DemoSetNetwork(false))
        val offline = send(CashierIntent.CollectAgain(ids[4]))
        assertEquals("Collecting a declined payment needs the connection: try again once online.", offline.error)
        assertEquals(CardFlow.Done((s.card as CardFlow.Done).paymentId, PaymentStatus.APPROVED, "Approved online: 13.25 USD on Visa •••• 4242"), offline.card)
    }

    @Test
    fun `a payment not forwarded before its deadline is shown as lost`() = till {
        untilRecovery()
        // 18:00: the connection drops again, one more offline sale, and the shop stays offline overnight.
        at(hm(18, 0))
        send(CashierIntent.DemoSetNetwork(false))
        at(hm(18, 5))
        var s = sell(1_500, card("approve", "4242"))
        assertEquals(OrderStatus.PAYMENT_PENDING, s.checkout!!.badge)
        val id = (s.card as CardFlow.Done).paymentId
        send(CashierIntent.NewSale)
        assertEquals("tomorrow 18:00", screen.pending.rows.single().deadlineText)

        // The next day at 17:50: 10 minutes left, warnings given.
        s = at(24 * 60 + hm(17, 50))
        val row = s.pending.rows.single()
        assertEquals("10 min", row.timeLeftText)
        assertEquals("18:00", row.deadlineText)
        assertTrue(s.notices.any { it.text == "Forwarding deadline in 15 min or less: reconnect to forward" }, "${s.notices}")

        // 18:01: lost.
        s = at(24 * 60 + hm(18, 1))
        assertTrue(s.pending.rows.isEmpty())
        assertEquals(listOf(ExpiredRow(id, s.expired.single().orderId, Money(1_500, "USD"), "15.00 USD lost: not forwarded before 18:00")), s.expired)
        assertEquals(Notice(NoticeKind.EXPIRY, "A payment passed its forwarding deadline: 15.00 USD lost"), s.notices.last { it.kind == NoticeKind.EXPIRY })

        // Back online, it is never forwarded.
        s = send(CashierIntent.DemoSetNetwork(true))
        assertEquals(1, s.expired.size)
        assertTrue(shop.processor.ledger().none { it.paymentId == id })
    }
}
