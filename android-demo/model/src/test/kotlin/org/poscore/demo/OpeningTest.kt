package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.OrderStatus
import org.poscore.PaymentStatus

/** 08:00 to 09:00: the till opens online, readers are picked, online sales. */
class OpeningTest {
    @Test
    fun `the shop opens online with no banner, the cashier signs in and the reader pairs`() = till {
        model.start()
        assertEquals(Phase.SIGNED_OUT, screen.phase)
        assertNull(screen.banner, "online: no banner")
        assertEquals("Tue 24 Nov 08:00", screen.demo?.clockText)

        val s = open()
        assertEquals(Phase.READY, s.phase)
        assertEquals("alex", s.cashier)
        assertEquals(BluetoothAccess.NOT_REQUESTED, s.reader.bluetooth)
        assertEquals(listOf(DemoShop.SIMULATED_ID), s.reader.options.map { it.id }, "no Bluetooth reader before the permission")
        val r = s.reader.connected!!
        assertEquals("Square Reader", r.model)
        assertEquals("SIM-READER-1", r.serial)
        assertEquals(87, r.batteryPercent)
        assertTrue(r.offlineCapable, "the preset lists the Square Reader (R11)")
        assertTrue(s.settings.offlineEnabled)
        assertEquals("per order 100.00 USD · device no limit", s.settings.limitsText)
        assertEquals("chip, swipe", s.settings.entryModes)
        assertTrue(s.pending.rows.isEmpty())
        assertNull(s.forwarding)
        assertNull(s.error)
    }

    @Test
    fun `Bluetooth readers show once the permission is granted, strongest first, and pair over the app transport`() = till {
        open()
        var s = send(CashierIntent.BluetoothPermission(false))
        assertEquals(BluetoothAccess.DENIED, s.reader.bluetooth)
        assertEquals(listOf(ReaderKind.SIMULATED), s.reader.options.map { it.kind }, "refused: the simulated reader only")

        s = send(CashierIntent.BluetoothPermission(true))
        assertEquals(BluetoothAccess.GRANTED, s.reader.bluetooth)
        assertEquals(listOf(DemoShop.SIMULATED_ID, "ble:SIM-BT-7", "ble:SIM-BT-9"), s.reader.options.map { it.id })
        assertEquals(listOf(null, -58, -81), s.reader.options.map { it.rssi })

        s = send(CashierIntent.PickReader("ble:SIM-BT-7"))
        val r = s.reader.connected!!
        assertEquals(ReaderKind.BLUETOOTH, r.kind)
        assertEquals("SIM-BT-7", r.serial)
        assertEquals(64, r.batteryPercent)

        // Frames of 20 bytes through AppReaderTransport, online then offline.
        at(hm(8, 20))
        s = sell(1_250, card("approve", "4242"))
        assertEquals(CardFlow.Done(s.card.let { (it as CardFlow.Done).paymentId }, PaymentStatus.APPROVED, "Approved online: 12.50 USD on Visa •••• 4242"), s.card)
        networkDrops()
        at(hm(10, 35))
        s = sell(800, card("approve", "4444"))
        assertEquals(PaymentStatus.PENDING, (s.card as CardFlow.Done).status, "${s.card} ${s.error} ${s.refusal}")
        assertEquals(listOf("4444"), s.pending.rows.map { it.last4 })
    }

    @Test
    fun `a new reader is paired only online`() = till {
        model.start()
        send(CashierIntent.SignIn("alex", true))
        networkDrops()
        send(CashierIntent.BluetoothPermission(true))
        val s = send(CashierIntent.PickReader("ble:SIM-BT-9"))
        assertNull(s.reader.connected)
        assertEquals("A new reader can only be paired online: connect once, then it works offline too.", s.reader.error)
    }

    @Test
    fun `the morning's online sales are approved at once and never enter the pending list`() = till {
        open()
        at(hm(8, 20))
        var s = sell(1_250, card("approve", "4242"))
        val done = s.card as CardFlow.Done
        assertEquals(PaymentStatus.APPROVED, done.status)
        assertEquals("Approved online: 12.50 USD on Visa •••• 4242", done.text)
        val c = s.checkout!!
        assertEquals(OrderStatus.PAID, c.badge)
        assertEquals("Paid", c.badgeText)
        assertEquals(listOf("card 12.50 USD online"), c.tenders)
        assertTrue(c.complete)

        send(CashierIntent.NewSale)
        morning()
        s = screen
        assertTrue(s.pending.rows.isEmpty(), "${s.pending.rows}")
        assertNull(s.banner)
        assertNull(s.forwarding)
        assertNull(s.checkout, "new sale")

        checkout(420)
        s = send(CashierIntent.PayCash())
        assertEquals(listOf("cash 4.20 USD"), s.checkout!!.tenders)
        assertEquals("0.00 USD", s.checkout!!.balanceText)
        assertEquals(OrderStatus.PAID, s.checkout!!.badge)
    }
}
