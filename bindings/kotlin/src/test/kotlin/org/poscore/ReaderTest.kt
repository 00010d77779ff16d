package org.poscore

import java.util.concurrent.LinkedBlockingQueue
import kotlin.test.assertFailsWith
import kotlinx.coroutines.async
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** Reader events as they arrive, for the tests of this file. */
internal class Events : ReaderListener {
    val queue = LinkedBlockingQueue<ReaderEvent>()
    override fun onReaderEvent(event: ReaderEvent) { queue.add(event) }
    fun next(): ReaderEvent = queue.poll(10, java.util.concurrent.TimeUnit.SECONDS) ?: error("no reader event")
}

/** The simulated reader through the bindings: pair, take a card, lose the radio mid-message, reconnect. */
class ReaderTest {
    private val readerKey = ByteArray(32) { 7 }
    private val processorKey = ByteArray(32) { (it * 13 + 5).toByte() }

    @Test
    fun `pair and take a card at the smallest MTU`() = runBlocking<Unit> {
        val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-1", 64u, readerKey, processorKey, 23u)
        val events = Events()
        val reader = sim.connect(events)
        val info = reader.pair(readerKey, true, emptyList())
        assertEquals("Chipper 2X BT", info.model)
        assertEquals(64.toUByte(), info.batteryPercent)
        assertTrue(events.queue.poll() is ReaderEvent.Paired)
        sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CONTACTLESS)
        val card = reader.takeCard(Money(1_500, "USD"), listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
        assertEquals("4242", card.last4)
        assertEquals(EntryMode.CONTACTLESS, card.entryMode)
        assertTrue(!String(card.sealedCardData, Charsets.ISO_8859_1).contains("4242424242424242"))
        // A wrong key, and a new reader while offline, are refused.
        assertFailsWith<ReaderException.PairingFailed> { reader.pair(ByteArray(32) { 8 }, true, emptyList()) }
        assertFailsWith<ReaderException.NewReaderOffline> { reader.pair(readerKey, false, emptyList()) }
        assertEquals("SIM-KT-1", reader.pair(readerKey, false, listOf("SIM-KT-1")).serial)
    }

    @Test
    fun `a disconnect mid-message recovers and the card arrives once`() = runBlocking<Unit> {
        val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-2", 90u, readerKey, processorKey, 23u)
        val events = Events()
        val reader = sim.connect(events)
        reader.pair(readerKey, true, emptyList())
        sim.disconnectAfter(6u)
        sim.presentCard("5555555555554444", "1230", CardNetwork.MASTERCARD, EntryMode.CHIP)
        val first = withTimeoutOrNull(500) {
            runCatching { reader.takeCard(Money(900, "USD"), listOf(EntryMode.CHIP), true) }
        }
        assertTrue(first == null || first.isFailure, "the link was cut mid-message")
        assertEquals(1UL, reader.reconnect())
        val card = withTimeout(5_000) { reader.awaitCard() }
        assertEquals("4444", card.last4)
        val kinds = generateSequence { events.queue.poll() }.map { it::class.simpleName }.toList()
        assertTrue("Reconnected" in kinds, "$kinds")
        assertEquals(null, withTimeoutOrNull(200) { reader.awaitCard() }, "delivered once")
    }
}

/** Automatic reconnection, the battery, and a vendor reader SDK behind the engine. */
class ReaderLifecycleTest {
    private val readerKey = ByteArray(32) { 7 }
    private val processorKey = ByteArray(32) { (it * 13 + 5).toByte() }

    @Test
    fun `discover readers by signal strength, connect, pair and take a card`() = runBlocking<Unit> {
        val air = SimulatedAirspace()
        val near = SimulatedReader("Chipper 2X BT", "SIM-NEAR", 80u, readerKey, processorKey, 185u)
        val far = SimulatedReader("Chipper 2X BT", "SIM-FAR", 80u, readerKey, processorKey, 185u)
        air.advertiseReader("sim:far", "Reader far", -88, far)
        air.advertiseOther("hr:1", "Heart strap", -40, listOf("0000180d-0000-1000-8000-00805f9b34fb"))
        air.advertiseReader("sim:near", "Reader near", -52, near)
        val found = air.scan()
        assertEquals(listOf("sim:near", "sim:far"), found.map { it.id }, "readers only, strongest first")
        assertEquals((-52).toShort(), found.first().rssi)
        val events = Events()
        val reader = air.connect(found.first().id, events)
        assertEquals("SIM-NEAR", reader.pair(readerKey, true, emptyList()).serial)
        near.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CONTACTLESS)
        assertEquals("4242", reader.takeCard(Money(700, "USD"), listOf(EntryMode.CONTACTLESS), true).last4)
        assertFailsWith<ReaderException.InvalidInput> { air.connect("hr:1", events) }
    }

    @Test
    fun `the reader walks out of range mid-payment and reconnects by itself`() = runBlocking<Unit> {
        val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-3", 70u, readerKey, processorKey, 23u)
        val events = Events()
        val reader = sim.connect(events)
        reader.pair(readerKey, true, emptyList())
        assertTrue(events.next() is ReaderEvent.Paired)
        reader.reconnectAutomatically(ReconnectSettings(5u, 20u, 1_000u))
        sim.leaveRangeAfter(6u)
        sim.presentCard("5555555555554444", "1230", CardNetwork.MASTERCARD, EntryMode.CHIP)
        val payment = async(kotlinx.coroutines.Dispatchers.IO) {
            reader.takeCard(Money(900, "USD"), listOf(EntryMode.CHIP), true)
        }
        assertEquals(ReaderEvent.Disconnected, events.next())
        // Attempts fail while the reader is away...
        for (n in 1u..3u) assertEquals(ReaderEvent.Reconnecting(n), events.next())
        sim.setInRange(true)
        // ...and the first one after it is back succeeds; the payment goes on.
        var e = events.next()
        while (e is ReaderEvent.Reconnecting) e = events.next()
        assertTrue(e is ReaderEvent.Reconnected, "$e")
        assertEquals("4444", withTimeout(10_000) { payment.await() }.last4)
        assertFailsWith<ReaderException.InvalidInput> { reader.reconnectAutomatically(ReconnectSettings(5u, 1u, 3u)) }
    }

    @Test
    fun `a flat battery is reported and refuses payments`() = runBlocking<Unit> {
        val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-4", 50u, readerKey, processorKey, 185u)
        val events = Events()
        val reader = sim.connect(events)
        reader.pair(readerKey, true, emptyList())
        sim.setBattery(3u)
        sim.setLatencyMs(20u)
        assertEquals(3.toUByte(), reader.refreshInfo().batteryPercent)
        assertTrue(events.queue.any { it == ReaderEvent.LowBattery(3u) }, "${events.queue}")
        val refused = assertFailsWith<ReaderException.Refused> {
            reader.takeCard(Money(900, "USD"), listOf(EntryMode.CHIP), true)
        }
        assertEquals("battery_critical", refused.code)
    }

    /** A stand-in for a vendor SDK (its card data comes back already sealed by the vendor's reader). */
    private class Vendor(@Volatile var last4: String) : VendorCardReader {
        @Volatile var cancelled = 0
        /** When set, takeCard waits for the customer until cancel() (like a real SDK). */
        @Volatile var waitForCancel = false
        val waiting = java.util.concurrent.CountDownLatch(1)
        private val cancel = java.util.concurrent.CountDownLatch(1)
        override fun info() = ReaderInfo("Stripe M2", "STRIPE-M2-0042", "2.1.0", 88u)
        override fun takeCard(amount: Money, entryModes: List<EntryMode>, offline: Boolean): CardRead {
            if (waitForCancel) {
                waiting.countDown()
                cancel.await(10, java.util.concurrent.TimeUnit.SECONDS)
                throw ReaderException.Refused("cancelled")
            }
            return CardRead(EntryMode.CHIP, CardNetwork.VISA, last4, "fp-vendor-1", "Stripe M2", ByteArray(64) { 9 })
        }
        override fun cancel() { cancelled++; cancel.countDown() }
    }

    @Test
    fun `a vendor reader SDK plugs in behind the same rules and checks`() = runBlocking<Unit> {
        val vendor = Vendor("4242")
        val events = Events()
        val reader = CardReader.vendor(vendor, events)
        assertFailsWith<ReaderException.NewReaderOffline> { reader.pair(ByteArray(0), false, emptyList()) }
        assertEquals("STRIPE-M2-0042", reader.pair(ByteArray(0), true, emptyList()).serial)
        assertEquals("STRIPE-M2-0042", reader.pair(ByteArray(0), false, listOf("STRIPE-M2-0042")).serial)
        val card = reader.takeCard(Money(1_200, "USD"), listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
        assertEquals("4242", card.last4)
        assertEquals("Stripe M2", card.readerModel)
        // Bad data from the vendor SDK is a typed error, never a card.
        vendor.last4 = "42a2"
        assertFailsWith<ReaderException.Protocol> { reader.takeCard(Money(1_200, "USD"), listOf(EntryMode.CHIP), true) }
        vendor.last4 = "4242"
        assertFailsWith<ReaderException.Protocol> { reader.takeCard(Money(1_200, "USD"), listOf(EntryMode.CONTACTLESS), true) }
        // The cashier cancels while the vendor SDK waits for the card.
        vendor.waitForCancel = true
        val waiting = async(kotlinx.coroutines.Dispatchers.IO) {
            runCatching { reader.takeCard(Money(1_200, "USD"), listOf(EntryMode.CHIP), true) }
        }
        assertTrue(vendor.waiting.await(10, java.util.concurrent.TimeUnit.SECONDS), "the vendor SDK is waiting")
        reader.cancel()
        val refused = withTimeout(10_000) { waiting.await() }.exceptionOrNull()
        assertTrue(refused is ReaderException.Refused && refused.code == "cancelled", "$refused")
        assertEquals(1, vendor.cancelled)
        assertFailsWith<ReaderException.InvalidInput> { reader.reconnectAutomatically(defaultReconnectSettings()) }
    }
}

/** The reader profile over a transport the app drives (here, frames relayed to the simulated reader's radio). */
class AppTransportTest {
    @Test
    fun `an app-driven link carries pairing and a card`() = runBlocking<Unit> {
        val readerKey = ByteArray(32) { 7 }
        val sim = SimulatedReader("Wisepad 3", "SIM-KT-APP", 40u, readerKey, ByteArray(32) { (it * 13 + 5).toByte() }, 185u)
        val radio = sim.radio()
        // The app's Bluetooth code: writes go to the radio, notifications come back.
        val transport = AppReaderTransport(object : ReaderLink {
            override fun writeFrame(frame: ByteArray) = radio.send(frame)
        }, 185u)
        val pump = kotlinx.coroutines.GlobalScope.launch(kotlinx.coroutines.Dispatchers.IO) {
            while (true) {
                val frame = radio.receive() ?: break
                transport.deliverFrame(frame)
            }
        }
        val reader = transport.connect(object : ReaderListener { override fun onReaderEvent(event: ReaderEvent) {} })
        assertEquals("Wisepad 3", reader.pair(readerKey, true, emptyList()).model)
        sim.presentCard("4000000000009995", "1230", CardNetwork.VISA, EntryMode.CHIP)
        val card = reader.takeCard(Money(2_500, "USD"), listOf(EntryMode.CHIP), true)
        assertEquals("9995", card.last4)
        pump.cancel()
    }
}
