package org.poscore

import java.util.concurrent.LinkedBlockingQueue
import kotlin.test.assertFailsWith
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The simulated reader through the bindings: pair, take a card, lose the radio mid-message, reconnect. */
class ReaderTest {
    private val readerKey = ByteArray(32) { 7 }
    private val processorKey = ByteArray(32) { (it * 13 + 5).toByte() }

    private class Events : ReaderListener {
        val queue = LinkedBlockingQueue<ReaderEvent>()
        override fun onReaderEvent(event: ReaderEvent) { queue.add(event) }
    }

    @Test
    fun `pair and take a card at the smallest MTU`() = runBlocking {
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
    fun `a disconnect mid-message recovers and the card arrives once`() = runBlocking {
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

/** The reader profile over a transport the app drives (here, frames relayed to the simulated reader's radio). */
class AppTransportTest {
    @Test
    fun `an app-driven link carries pairing and a card`() = runBlocking {
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
