package org.poscore

import java.util.concurrent.LinkedBlockingQueue
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test

/**
 * `BleCentral` (btleplug's real Linux backend) through a pos-ffi built with
 * `--features ble`, against the BlueZ double run as a process
 * (`target/debug/bluez-double`, default options: one reader, model
 * "Chipper 2X BT", certified by the simulator's reader authority, sealing to
 * [testProcessorKey], cards waiting to be tapped; a heart-rate strap that
 * BlueZ reports too). `DBUS_SYSTEM_BUS_ADDRESS` must name the double's bus
 * (the line it prints): without it the test fails, it never skips.
 */
class BleCentralTest {
    /** Reader events as they arrive. */
    private class Events : ReaderListener {
        val queue = LinkedBlockingQueue<ReaderEvent>()
        override fun onReaderEvent(event: ReaderEvent) { queue.add(event) }
    }

    private fun usd(cents: Long) = Money(cents, "USD")

    @Test
    fun `scan, connect, pair and take a card for a begun payment over btleplug`() = runBlocking<Unit> {
        val bus = System.getenv("DBUS_SYSTEM_BUS_ADDRESS")
        if (bus.isNullOrBlank()) {
            fail<Unit>("DBUS_SYSTEM_BUS_ADDRESS must name the BlueZ double's bus: start target/debug/bluez-double and export the line it prints")
        }
        withTimeout(60_000) {
            onlineEngine().use { engine ->
                engine.signIn(StaffSession("cashier-1", true))
                BleCentral.firstAdapter().use { central ->
                    val found = central.scan(1u)
                    assertEquals(1, found.size, "only the reader, not the strap: $found")
                    assertEquals("Chipper 2X BT", found[0].name)
                    assertNotNull(found[0].rssi, "the RSSI, read while scanning")

                    val events = Events()
                    central.connect(found[0].id, events).use { reader ->
                        // Online: a new reader is paired (and remembered) only online.
                        val info = reader.pair(engine)
                        assertEquals("Chipper 2X BT", info.model)
                        assertTrue(events.queue.poll() is ReaderEvent.Paired)
                        assertEquals(listOf(info.serial), engine.rememberedReaders().map { it.serial }, "remembered by the pairing")

                        // Offline: the payment is taken on the reader's word and stored.
                        engine.reportNetwork(false)
                        val order = engine.createOrder(NewOrder(null, usd(2_000), null))
                        val decision = engine.beginCardPayment(
                            CardPaymentRequest(order.id, null, usd(2_000), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
                        )
                        assertTrue(decision.route is PaymentRoute.Offline, "${decision.route}")
                        val card = reader.takeCard(decision.challenge, listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
                        assertEquals("4242", card.last4)
                        assertEquals(CardNetwork.VISA, card.network)
                        assertEquals(info.serial, card.readerSerial)
                        assertEquals(64, card.readerSignature?.size, "signed by the reader (Ed25519)")
                        assertTrue(!String(card.sealedCardData, Charsets.ISO_8859_1).contains("4242424242424242"))

                        val taken = engine.confirmCardPayment(decision.paymentId, card)
                        assertEquals(PaymentStatus.PENDING, taken.status)
                        assertEquals("4242", taken.last4)
                        assertEquals(listOf(taken.id), engine.listPayments().map { it.id }, "stored")
                        assertEquals(0UL, reader.rejectedMessages())
                    }
                }
                engine.shutdown()
            }
        }
    }
}
