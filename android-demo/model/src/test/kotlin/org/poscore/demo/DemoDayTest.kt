package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.Money
import org.poscore.OrderStatus
import org.poscore.PaymentStatus

/**
 * The CLI demo's whole day (demo/src/lib.rs `script`) on the till, with the
 * app's process restarted in the middle of the outage, checking the screen
 * the cashier sees at each step. Where the CLI makes one payment fail until
 * its deadline (a per-payment fault the FFI's simulator does not offer), the
 * till loses a payment taken in an evening outage that lasts the night.
 */
class DemoDayTest {
    @Test
    fun `the shop's day, end to end, with a restart in the middle`() = till {
        // 08:00 the shop opens.
        assertEquals(Phase.READY, open().phase)
        morning()
        assertTrue(screen.pending.rows.isEmpty())

        // 10:30 the network drops.
        assertEquals(BannerKind.NETWORK_OUTAGE, networkDrops().banner?.kind)
        val ids = offlineSales()
        assertEquals(8, screen.pending.rows.size)
        assertEquals(OrderStatus.PAYMENT_PENDING, splitOrder().checkout!!.badge)
        send(CashierIntent.NewSale)
        val (r5, r9) = refusals()
        assertEquals("R5", r5.refusal?.rule)
        assertEquals("R9", r9.refusal?.rule)
        val logout = send(CashierIntent.LogOut).logout as LogoutPanel.Refused
        assertEquals("Cannot log out: 10 offline payments are not forwarded yet (277.00 USD at risk).", logout.text)
        send(CashierIntent.DismissLogout)

        // 11:15 the app is killed and started again: the same pending list.
        at(hm(11, 15))
        val before = screen.pending
        assertEquals(before, restart().pending)
        send(CashierIntent.SignIn("alex", true))
        send(CashierIntent.ScanReaders)
        send(CashierIntent.PickReader(DemoShop.SIMULATED_ID))

        // 12:00 internet back, payment service down.
        assertEquals(BannerKind.SERVICE_DISRUPTION, serviceDownAtNoon().banner?.kind)
        assertEquals(10, screen.pending.rows.size)

        // 12:50 the service is back: forwarding, declines.
        val back = serviceBack()
        assertNull(back.banner)
        assertEquals("10/10 277.00 USD of 277.00 USD", back.forwarding?.text)
        assertEquals(setOf(ids[1], ids[4]), back.declines.map { it.paymentId }.toSet())
        assertEquals(0, back.queuedReceipts)

        // The insufficient-funds customer comes back and pays online.
        send(CashierIntent.CollectAgain(ids[1]))
        val collected = presentIfAsked(card("approve", "4444"))
        assertEquals(PaymentStatus.APPROVED, (collected.card as CardFlow.Done).status)
        assertEquals(listOf(ids[4]), collected.declines.map { it.paymentId })

        // 18:00 the connection drops again; one sale; the shop stays offline overnight.
        at(hm(18, 0))
        send(CashierIntent.DemoSetNetwork(false))
        send(CashierIntent.NewSale)
        val evening = (sell(1_850, card("approve", "0005")).card as CardFlow.Done).paymentId
        val lost = at(24 * 60 + hm(18, 1))
        assertEquals(listOf(Money(1_850, "USD")), lost.expired.map { it.amount })
        assertTrue(lost.pending.rows.isEmpty())

        // Closing: the processor's ledger and the screen agree.
        val ledger = shop.processor.ledger()
        assertEquals(4, ledger.count { it.online && it.outcome == "approved" }, "three morning sales and the collected decline")
        assertEquals(8, ledger.count { !it.online && it.outcome == "approved" })
        assertTrue(ledger.none { it.paymentId == evening }, "the lost payment was never charged")
        val audit = send(CashierIntent.ExportAudit).audit!!
        assertTrue(audit.rows > 30, "${audit.rows} audit rows")
    }
}
