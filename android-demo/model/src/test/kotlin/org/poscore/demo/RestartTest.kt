package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.PaymentStatus

/** The app's process ends in the middle of the outage; the phone is locked; the app goes to the background. */
class RestartTest {
    @Test
    fun `after a process restart in the outage the model reopens the engine and shows the same pending list`() = till {
        open()
        networkDrops()
        offlineSales()
        splitOrder()
        val before = screen
        assertEquals(10, before.pending.rows.size)

        val after = restart()
        assertEquals(Phase.SIGNED_OUT, after.phase, "a new process: nobody signed in")
        assertEquals(before.pending, after.pending, "same rows, amounts, time left, session deadline")
        // Still the outage banner, with the same text and offline line (the session's
        // window is stored); the engine's `since` restarts with the new process's first report.
        assertEquals(before.banner!!.copy(sinceMs = 0), after.banner!!.copy(sinceMs = 0))
        assertNull(after.reader.connected, "the reader link is new")
        assertNull(after.checkout)
        assertEquals(1, after.queuedReceipts, "the queued receipt survived")

        // The cashier signs in and picks the reader: remembered, it pairs offline.
        send(CashierIntent.SignIn("alex", true))
        send(CashierIntent.ScanReaders)
        val s = send(CashierIntent.PickReader(DemoShop.SIMULATED_ID))
        assertNotNull(s.reader.connected, "${s.reader.error}")
        at(hm(11, 20))
        val sale = sell(1_000, card("approve", "4444"))
        assertEquals(PaymentStatus.PENDING, (sale.card as CardFlow.Done).status)
        assertEquals(11, sale.pending.rows.size)

        // And the rest of the day goes on from there.
        serviceDownAtNoon()
        val back = serviceBack()
        assertEquals("11/11 287.00 USD of 287.00 USD", back.forwarding!!.text)
        assertEquals(2, back.declines.size)
    }

    @Test
    fun `going to the background compacts the store, the next start opens from it, wake-ups follow the engine`() = till {
        open()
        assertNull(screen.wakeUpAtMs, "online with nothing pending: nothing to wake for")
        networkDrops()
        offlineSales()
        val s = send(CashierIntent.AppBackground)
        assertNull(s.error)
        val wake = s.wakeUpAtMs!!
        assertTrue(wake > shop.nowMs(), "in the background: the next session warning or deadline, later")
        assertTrue(wake <= s.pending.session!!.deadlineMs)
        val before = s.pending
        restart()
        assertEquals(before, screen.pending)
        assertNull(send(CashierIntent.AppForeground).error)
    }

    @Test
    fun `a locked phone blocks the start with a typed message and loses nothing`() = till {
        open()
        networkDrops()
        at(hm(10, 35))
        sell(800, card("approve", "4242"))
        model.stop()
        keys.locked = true
        val blocked = restart()
        assertEquals(Phase.BLOCKED, blocked.phase)
        assertEquals("The phone is locked: unlock it to open the payment store. Nothing is lost.", blocked.blockingError)
        assertTrue(blocked.pending.rows.isEmpty())

        keys.locked = false
        val open = restart()
        assertEquals(Phase.SIGNED_OUT, open.phase)
        assertNull(open.blockingError)
        assertEquals(listOf("8.00 USD"), open.pending.rows.map { it.amountText })
    }
}

/** The platform's first network report can come before the engine is open (PosApplication.onCreate). */
class EarlyNetworkTest {
    /** The demo shop without its demo switches: the model takes the platform's reports, as in production. */
    private class Platform(shop: DemoShop) : CashierEnvironment by shop {
        override val demo: DemoControls? = null
    }

    @Test
    fun `a network report sent before the engine opens is kept for the open, not shown as an error`() = till {
        shop.setNetwork(false)
        val m = CashierModel(Platform(shop))
        try {
            m.dispatch(CashierIntent.NetworkChanged(false))
            m.dispatch(CashierIntent.AppForeground)
            assertNull(m.screen.value.error)
            assertEquals(Phase.STARTING, m.screen.value.phase)
            m.start()
            val s = m.screen.value
            assertNull(s.error)
            assertEquals(BannerKind.NETWORK_OUTAGE, s.banner?.kind)
            assertNull(s.demo)
        } finally {
            m.stop()
        }
    }
}
