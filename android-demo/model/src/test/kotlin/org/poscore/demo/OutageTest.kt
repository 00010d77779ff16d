package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.EntryMode
import org.poscore.Money
import org.poscore.OrderStatus
import org.poscore.PaymentStatus

/** 10:30 to 12:50: the outage, offline sales, split tender, refusals, the disruption. */
class OutageTest {
    @Test
    fun `a network outage shows its banner and what can still be taken offline`() = till {
        open()
        val s = networkDrops()
        val b = s.banner!!
        assertEquals(BannerKind.NETWORK_OUTAGE, b.kind)
        assertEquals("You are offline. Connect to the internet to take payments.", b.text)
        assertEquals("Card payments are stored offline, up to 100.00 USD per order, until 11:30.", b.offlineLine)
        assertEquals(DemoShop.OPENING_MS + hm(10, 30) * 60_000, b.sinceMs)
        // WorkManager wakes the app for the next probe.
        val wake = s.wakeUpAtMs!!
        assertTrue(wake > shop.nowMs() && wake < shop.nowMs() + 5 * 60_000, "next probe within minutes: $wake")
    }

    @Test
    fun `offline sales are stored with their time left and the session deadline`() = till {
        open()
        networkDrops()
        at(hm(10, 35))
        var s = sell(800, card("approve", "4242"))
        val first = s.card as CardFlow.Done
        assertEquals(PaymentStatus.PENDING, first.status)
        assertEquals("Stored offline (pending): 8.00 USD on Visa •••• 4242, forward by tomorrow 10:30", first.text)
        assertEquals(OrderStatus.PAYMENT_PENDING, s.checkout!!.badge)
        assertEquals("Payment pending", s.checkout!!.badgeText)
        send(CashierIntent.NewSale)

        val ids = offlineSales() + first.paymentId
        s = screen
        assertEquals(9, s.pending.rows.size)
        assertEquals(ids.toSet(), s.pending.rows.map { it.paymentId }.toSet())
        val row = s.pending.rows.single { it.paymentId == first.paymentId }
        assertEquals("8.00 USD", row.amountText)
        assertEquals("pending", row.statusText)
        // 11:10; the deadline is 24 h after the connection was lost (square-reader preset).
        assertEquals("23 h 20 min", row.timeLeftText)
        assertEquals("tomorrow 10:30", row.deadlineText)
        val session = s.pending.session!!
        assertEquals("tomorrow 10:30", session.deadlineText)
        assertEquals("23 h 20 min", session.timeLeftText)
        assertEquals("Offline payments accepted until 11:30", session.acceptanceText)
        assertEquals("215.00 USD", s.pending.atRiskText)
        assertNull(s.forwarding, "offline: nothing is forwarded")
    }

    @Test
    fun `a split order takes two cards and cash, and its badge says payment pending`() = till {
        open()
        networkDrops()
        at(hm(11, 12))
        var s = checkout(9_000, email = "sam@example.org")
        assertEquals("s***@e***.org", s.checkout!!.contactHint)
        s = payCard(card("approve", "4242"), 4_000)
        assertEquals("50.00 USD", s.checkout!!.balanceText)
        s = payCard(card("approve", "4444"), 3_000)
        assertEquals("20.00 USD", s.checkout!!.balanceText)
        s = send(CashierIntent.PayCash())
        val c = s.checkout!!
        assertEquals(
            listOf("card •••• 4242 40.00 USD offline (pending)", "card •••• 4444 30.00 USD offline (pending)", "cash 20.00 USD"),
            c.tenders,
        )
        assertEquals("0.00 USD", c.balanceText)
        assertTrue(c.complete)
        assertEquals(OrderStatus.PAYMENT_PENDING, c.badge)
        assertEquals(2, s.pending.rows.size)

        s = send(CashierIntent.RequestReceipt("sam@example.org", null))
        assertEquals(1, s.queuedReceipts)
        assertEquals(Notice(NoticeKind.INFO, "Receipt queued: it is sent when the service is back."), s.notices.last())
    }

    @Test
    fun `an order over the per-order limit is refused with rule R5 and its figures`() = till {
        open()
        networkDrops()
        val (overLimit, _) = refusals()
        val r = overLimit.refusal!!
        assertEquals("R5", r.rule)
        assertEquals("PerOrderLimit", r.kind)
        assertEquals("Refused offline [R5]: 150.00 USD on top of 0.00 USD would exceed the offline per-order limit of 100.00 USD", r.text)
        assertEquals("per-order limit 100.00 USD · already on this order 0.00 USD · this payment 150.00 USD", r.figures)
        assertEquals(CardFlow.Idle, overLimit.card)
        assertEquals("150.00 USD", overLimit.checkout!!.balanceText, "nothing taken")
        assertTrue(overLimit.pending.rows.isEmpty())

        // Split across cards: the second card would take the order over the limit.
        checkout(12_000)
        payCard(card("approve", "4242"), 6_000)
        val s = payCard(card("approve", "4444"), 5_000)
        assertEquals("per-order limit 100.00 USD · already on this order 60.00 USD · this payment 50.00 USD", s.refusal!!.figures)
        assertEquals(Money(6_000, "USD"), s.refusal!!.current)
        // The rest in cash.
        val paid = send(CashierIntent.PayCash())
        assertTrue(paid.checkout!!.complete)
        assertNull(paid.refusal)
    }

    @Test
    fun `contactless is refused offline by the preset with rule R9, chip then goes through`() = till {
        open()
        networkDrops()
        val (_, contactless) = refusals()
        val r = contactless.refusal!!
        assertEquals("R9", r.rule)
        assertEquals("EntryModeRefused", r.kind)
        assertEquals("Refused offline [R9]: contactless is not accepted offline", r.text)
        assertNull(r.figures)
        assertTrue(contactless.pending.rows.isEmpty(), "the refused payment is not stored")

        checkout(900)
        send(CashierIntent.PayByCard())
        assertTrue(screen.card is CardFlow.WaitingForCard)
        val s = presentIfAsked(card("approve", "4242"), EntryMode.CHIP)
        assertEquals(PaymentStatus.PENDING, (s.card as CardFlow.Done).status)
        assertNull(s.refusal)
    }

    @Test
    fun `the screen asks for the card with the amount and the offline route`() = till {
        open()
        networkDrops()
        checkout(1_850)
        send(CashierIntent.PayByCard())
        val w = screen.card as CardFlow.WaitingForCard
        assertEquals("18.50 USD", w.amountText)
        assertTrue(w.offline)
        assertEquals("network outage", w.offlineReason)
        assertEquals("Square Reader SIM-READER-1", w.readerName)
        send(CashierIntent.DemoPresentCard(card("approve", "0005")))
        model.awaitIdle()
        assertEquals("Stored offline (pending): 18.50 USD on Amex •••• 0005, forward by tomorrow 10:30", (screen.card as CardFlow.Done).text)
    }

    @Test
    fun `a service disruption has its own banner, different from the outage's`() = till {
        open()
        val outage = networkDrops().banner!!
        offlineSales()
        val s = serviceDownAtNoon()
        val b = s.banner!!
        assertEquals(BannerKind.SERVICE_DISRUPTION, b.kind)
        assertEquals("Service disruption: offline payments enabled.", b.text)
        assertNotEquals(outage.text, b.text)
        // The phone + reader profile takes offline payments for 1 h after the connection was lost.
        assertEquals("The offline window closed at 11:30: cash only until the connection is back.", b.offlineLine)
        assertEquals(8, s.pending.rows.size, "nothing forwarded while the service is down")
        assertNull(s.forwarding)
        assertEquals(1, s.notices.count { it.text == "The offline window closed: no more offline card payments in this outage" })
    }

    @Test
    fun `the payment service failing while online is detected by the probes`() = till {
        open()
        at(hm(12, 0))
        val s = send(CashierIntent.DemoSetServiceDown(true))
        val b = s.banner
        assertNotNull(b)
        assertEquals(BannerKind.SERVICE_DISRUPTION, b!!.kind)
        assertEquals("Card payments are stored offline, up to 100.00 USD per order, until 13:00.", b.offlineLine)
    }
}
