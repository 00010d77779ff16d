package org.poscore

import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import kotlin.test.assertFailsWith
import kotlinx.coroutines.async
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** Reader events as they arrive, for the tests of this file. */
internal class Events : ReaderListener {
    val queue = LinkedBlockingQueue<ReaderEvent>()
    override fun onReaderEvent(event: ReaderEvent) { queue.add(event) }
    fun next(): ReaderEvent = queue.poll(60, java.util.concurrent.TimeUnit.SECONDS) ?: error("no reader event")
}

/** The simulated reader through the bindings: pair, take a card, lose the radio mid-message, reconnect. */
class ReaderTest {
    private val processorKey = testProcessorKey

    @Test
    fun `pair and take a card at the smallest MTU`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-1", 64u, processorKey, 23u)
            val events = Events()
            val reader = sim.connect(events)
            val info = reader.pair(engine)
            assertEquals("Chipper 2X BT", info.model)
            assertEquals(64.toUByte(), info.batteryPercent)
            assertTrue(events.queue.poll() is ReaderEvent.Paired)
            assertEquals(listOf("SIM-KT-1"), engine.rememberedReaders().map { it.serial }, "remembered by the pairing")
            sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CONTACTLESS)
            val card = reader.takeCard(handChallenge(1_500), listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
            assertEquals("4242", card.last4)
            assertEquals(EntryMode.CONTACTLESS, card.entryMode)
            assertEquals("SIM-KT-1", card.readerSerial)
            assertEquals(64, card.readerSignature?.size, "signed by the reader (Ed25519)")
            assertTrue(!String(card.sealedCardData, Charsets.ISO_8859_1).contains("4242424242424242"))
            assertEquals(0UL, reader.rejectedMessages())
            engine.shutdown()
        }
    }

    @Test
    fun `a disconnect mid-message recovers and the card arrives once`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-2", 90u, processorKey, 23u)
            val events = Events()
            val reader = sim.connect(events)
            reader.pair(engine)
            sim.disconnectAfter(6u)
            sim.presentCard("5555555555554444", "1230", CardNetwork.MASTERCARD, EntryMode.CHIP)
            val first = withTimeoutOrNull(500) {
                runCatching { reader.takeCard(handChallenge(900), listOf(EntryMode.CHIP), true) }
            }
            assertTrue(first == null || first.isFailure, "the link was cut mid-message")
            assertEquals(1UL, reader.reconnect())
            val card = withTimeout(60_000) { reader.awaitCard() }
            assertEquals("4444", card.last4)
            val kinds = generateSequence { events.queue.poll() }.map { it::class.simpleName }.toList()
            assertTrue("Reconnected" in kinds, "$kinds")
            assertEquals(null, withTimeoutOrNull(200) { reader.awaitCard() }, "delivered once")
            engine.shutdown()
        }
    }
}

/**
 * Reader trust through the engine: pairing authenticates the reader against
 * the policy's authorities and remembers it, a card is bound to its payment's
 * challenge, and the engine refuses reads that are replayed, altered or from
 * no paired reader.
 */
class ReaderTrustTest {
    private val t0 = 1_800_000_000_000L
    private fun usd(cents: Long) = Money(cents, "USD")

    /** Creates an order of [cents] and begins its card payment. */
    private suspend fun PosEngine.begin(cents: Long): PaymentDecision {
        val order = createOrder(NewOrder(null, usd(cents), null))
        return beginCardPayment(
            CardPaymentRequest(order.id, null, usd(cents), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
    }

    @Test
    fun `a simulated reader pairs through the engine, a new one only online, a remembered one offline too`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val first = SimulatedReader("Chipper 2X BT", "SIM-KT-TRUST-1", 80u, testProcessorKey, 185u)
            val info = first.connect(Events()).pair(engine)
            assertEquals("SIM-KT-TRUST-1", info.serial)
            val remembered = engine.rememberedReaders().single()
            assertEquals("SIM-KT-TRUST-1", remembered.serial)
            assertEquals("Chipper 2X BT", remembered.model, "the certificate's model")
            assertEquals("sim-1.0", remembered.firmware)
            engine.reportNetwork(false)
            // Offline: a reader the engine does not know is refused...
            val stranger = SimulatedReader("Chipper 2X BT", "SIM-KT-TRUST-2", 80u, testProcessorKey, 185u)
            assertFailsWith<ReaderException.NewReaderOffline> { stranger.connect(Events()).pair(engine) }
            assertEquals(listOf("SIM-KT-TRUST-1"), engine.rememberedReaders().map { it.serial })
            // ...and the remembered one pairs again on a new connection.
            val again = SimulatedReader("Chipper 2X BT", "SIM-KT-TRUST-1", 75u, testProcessorKey, 185u)
            assertEquals("SIM-KT-TRUST-1", again.connect(Events()).pair(engine).serial)
            // The profile's readers are remembered by pairing, never by a vendor record.
            engine.goOnline()
            assertFailsWith<PosException.InvalidInput> {
                engine.rememberReader(ReaderInfo("Chipper 2X BT", "SIM-KT-TRUST-1", "9.9", 50u))
            }
            engine.shutdown()
        }
    }

    @Test
    fun `a reader whose authority the policy does not list is untrusted`() = runBlocking<Unit> {
        onlineEngine(shopifyPolicy(trustSimulator = false)).use { engine ->
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-UNTRUSTED", 80u, testProcessorKey, 185u)
            val events = Events()
            val reader = sim.connect(events)
            assertFailsWith<ReaderException.UntrustedReader> { reader.pair(engine) }
            assertTrue(engine.rememberedReaders().isEmpty())
            assertTrue(events.queue.none { it is ReaderEvent.Paired }, "${events.queue}")
            // Unauthenticated, the reader takes no card.
            assertFailsWith<ReaderException.NotPaired> {
                reader.takeCard(handChallenge(900), listOf(EntryMode.CHIP), true)
            }
            engine.shutdown()
        }
    }

    @Test
    fun `takeCard before pair is refused`() = runBlocking<Unit> {
        val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-UNPAIRED", 80u, testProcessorKey, 185u)
        val reader = sim.connect(Events())
        sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CHIP)
        assertFailsWith<ReaderException.NotPaired> { reader.takeCard(handChallenge(900), listOf(EntryMode.CHIP), true) }
    }

    @Test
    fun `a card taken for the payment's challenge is confirmed offline, its replay is refused`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            engine.signIn(StaffSession("cashier-1", true))
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-PAY", 80u, testProcessorKey, 185u)
            val reader = sim.connect(Events())
            reader.pair(engine)
            engine.reportNetwork(false)
            // The reader pairs again on every connection, offline too.
            reader.pair(engine)
            val decision = engine.begin(2_000)
            assertTrue(decision.route is PaymentRoute.Offline, "${decision.route}")
            val challenge = decision.challenge
            assertEquals(decision.paymentId, challenge.paymentId)
            assertEquals("till-1", challenge.deviceId)
            assertEquals(usd(2_000), challenge.amount)
            assertEquals(16, challenge.nonce.size)
            val again = engine.cardChallenge(decision.paymentId)
            assertEquals(challenge.paymentId, again.paymentId)
            assertArrayEquals(challenge.nonce, again.nonce, "the same challenge")
            sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CHIP)
            val card = reader.takeCard(challenge, listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
            val taken = engine.confirmCardPayment(decision.paymentId, card)
            assertEquals(PaymentStatus.PENDING, taken.status)
            assertEquals("4242", taken.last4)
            // The same read confirmed again for its own payment is that payment (idempotent)...
            assertEquals(taken.id, engine.confirmCardPayment(decision.paymentId, card).id)
            // ...for a second payment it is refused: it was bound to the first.
            val second = engine.begin(2_000)
            val replay = assertFailsWith<PosException.CardReadMismatch> { engine.confirmCardPayment(second.paymentId, card) }
            assertEquals("payment_id", replay.field)
            // A summary changed after the reader signed it is refused too.
            sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CHIP)
            val fresh = reader.takeCard(second.challenge, listOf(EntryMode.CHIP), true)
            val altered = assertFailsWith<PosException.CardReadMismatch> {
                engine.confirmCardPayment(second.paymentId, fresh.copy(last4 = "1881"))
            }
            assertEquals("last4", altered.field)
            // Signed data that is not the reader's signature is not the paired reader's.
            val sig = fresh.readerSignature!!.copyOf().also { it[0] = (it[0].toInt() xor 1).toByte() }
            assertFailsWith<PosException.ReaderNotPaired> {
                engine.confirmCardPayment(second.paymentId, fresh.copy(readerSignature = sig))
            }
            assertEquals(listOf(taken.id), engine.listPayments().map { it.id }, "nothing else was taken")
            // The genuine read for the second payment is accepted.
            assertEquals(PaymentStatus.PENDING, engine.confirmCardPayment(second.paymentId, fresh).status)
            assertEquals(0UL, reader.rejectedMessages())
            engine.shutdown()
        }
    }

    @Test
    fun `a hand-made card read from no paired reader is refused`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            engine.signIn(StaffSession("cashier-1", true))
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-HAND", 80u, testProcessorKey, 185u)
            sim.connect(Events()).pair(engine)
            engine.reportNetwork(false)
            val decision = engine.begin(1_000)
            val noSerial = assertFailsWith<PosException.ReaderNotPaired> {
                engine.confirmCardPayment(decision.paymentId, vendorCard(serial = null))
            }
            assertTrue(noSerial.reason.contains("serial"), noSerial.reason)
            // A serial no reader of this device has...
            assertFailsWith<PosException.ReaderNotPaired> {
                engine.confirmCardPayment(decision.paymentId, vendorCard(serial = "SIM-KT-NOBODY"))
            }
            // ...and a paired profile reader's serial without its signature.
            assertFailsWith<PosException.ReaderNotPaired> {
                engine.confirmCardPayment(decision.paymentId, vendorCard(serial = "SIM-KT-HAND"))
            }
            assertTrue(engine.listPayments().isEmpty())
            engine.shutdown()
        }
    }
}

/** Automatic reconnection, the battery, and a vendor reader SDK behind the engine. */
class ReaderLifecycleTest {
    private val processorKey = testProcessorKey

    @Test
    fun `discover readers by signal strength, connect, pair and take a card`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val air = SimulatedAirspace()
            val near = SimulatedReader("Chipper 2X BT", "SIM-NEAR", 80u, processorKey, 185u)
            val far = SimulatedReader("Chipper 2X BT", "SIM-FAR", 80u, processorKey, 185u)
            air.advertiseReader("sim:far", "Reader far", -88, far)
            air.advertiseOther("hr:1", "Heart strap", -40, listOf("0000180d-0000-1000-8000-00805f9b34fb"))
            air.advertiseReader("sim:near", "Reader near", -52, near)
            val found = air.scan()
            assertEquals(listOf("sim:near", "sim:far"), found.map { it.id }, "readers only, strongest first")
            assertEquals((-52).toShort(), found.first().rssi)
            val events = Events()
            val reader = air.connect(found.first().id, events)
            assertEquals("SIM-NEAR", reader.pair(engine).serial)
            near.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CONTACTLESS)
            assertEquals("4242", reader.takeCard(handChallenge(700), listOf(EntryMode.CONTACTLESS), true).last4)
            assertFailsWith<ReaderException.InvalidInput> { air.connect("hr:1", events) }
            engine.shutdown()
        }
    }

    @Test
    fun `the reader walks out of range mid-payment and reconnects by itself`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-3", 70u, processorKey, 23u)
            val events = Events()
            val reader = sim.connect(events)
            reader.pair(engine)
            assertTrue(events.next() is ReaderEvent.Paired)
            reader.reconnectAutomatically(ReconnectSettings(5u, 20u, 1_000u))
            sim.leaveRangeAfter(6u)
            sim.presentCard("5555555555554444", "1230", CardNetwork.MASTERCARD, EntryMode.CHIP)
            val payment = async(kotlinx.coroutines.Dispatchers.IO) {
                reader.takeCard(handChallenge(900), listOf(EntryMode.CHIP), true)
            }
            assertEquals(ReaderEvent.Disconnected, events.next())
            // Attempts fail while the reader is away...
            for (n in 1u..3u) assertEquals(ReaderEvent.Reconnecting(n), events.next())
            sim.setInRange(true)
            // ...and the first one after it is back succeeds; the payment goes on.
            var e = events.next()
            while (e is ReaderEvent.Reconnecting) e = events.next()
            assertTrue(e is ReaderEvent.Reconnected, "$e")
            assertEquals("4444", withTimeout(60_000) { payment.await() }.last4)
            assertFailsWith<ReaderException.InvalidInput> { reader.reconnectAutomatically(ReconnectSettings(5u, 1u, 3u)) }
            engine.shutdown()
        }
    }

    @Test
    fun `a flat battery is reported and refuses payments`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val sim = SimulatedReader("Chipper 2X BT", "SIM-KT-4", 50u, processorKey, 185u)
            val events = Events()
            val reader = sim.connect(events)
            reader.pair(engine)
            sim.setBattery(3u)
            sim.setLatencyMs(20u)
            assertEquals(3.toUByte(), reader.refreshInfo().batteryPercent)
            assertTrue(events.queue.any { it == ReaderEvent.LowBattery(3u) }, "${events.queue}")
            val refused = assertFailsWith<ReaderException.Refused> {
                reader.takeCard(handChallenge(900), listOf(EntryMode.CHIP), true)
            }
            assertEquals("battery_critical", refused.code)
            engine.shutdown()
        }
    }

    /** A stand-in for a vendor SDK (its card data comes back already sealed by the vendor's reader). */
    private class Vendor(@Volatile var last4: String) : VendorCardReader {
        @Volatile var cancelled = 0
        /** When set, takeCard waits for the customer until cancel() (like a real SDK). */
        @Volatile var waitForCancel = false
        /** The amount of the last takeCard (the vendor gets the challenge's amount). */
        @Volatile var lastAmount: Money? = null
        val waiting = java.util.concurrent.CountDownLatch(1)
        private val cancel = java.util.concurrent.CountDownLatch(1)
        override fun info() = ReaderInfo("Stripe M2", "STRIPE-M2-0042", "2.1.0", 88u)
        override fun takeCard(amount: Money, entryModes: List<EntryMode>, offline: Boolean): CardRead {
            lastAmount = amount
            if (waitForCancel) {
                waiting.countDown()
                cancel.await(60, java.util.concurrent.TimeUnit.SECONDS)
                throw ReaderException.Refused("cancelled")
            }
            return CardRead(EntryMode.CHIP, CardNetwork.VISA, last4, "fp-vendor-1", "Stripe M2", ByteArray(64) { 9 })
        }
        override fun cancel() { cancelled++; cancel.countDown() }
    }

    @Test
    fun `a vendor reader SDK plugs in behind the same rules and checks`() = runBlocking<Unit> {
        val policy = shopifyPolicy().let { it.copy(offlineReaders = it.offlineReaders + "Stripe M2") }
        onlineEngine(policy).use { engine ->
            engine.signIn(StaffSession("cashier-1", true))
            val vendor = Vendor("4242")
            val events = Events()
            val reader = CardReader.vendor(vendor, events)
            // A new vendor reader is remembered only online; then offline too.
            engine.reportNetwork(false)
            assertFailsWith<ReaderException.NewReaderOffline> { reader.pair(engine) }
            engine.goOnline()
            assertEquals("STRIPE-M2-0042", reader.pair(engine).serial)
            engine.reportNetwork(false)
            assertEquals("STRIPE-M2-0042", reader.pair(engine).serial)
            assertEquals(listOf("STRIPE-M2-0042"), engine.rememberedReaders().map { it.serial })
            // Offline, the vendor's read carries the serial it reported, and no signature.
            val order = engine.createOrder(NewOrder(null, Money(1_200, "USD"), null))
            val decision = engine.beginCardPayment(
                CardPaymentRequest(order.id, null, Money(1_200, "USD"), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
            )
            val card = reader.takeCard(decision.challenge, listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), true)
            assertEquals(Money(1_200, "USD"), vendor.lastAmount)
            assertEquals("4242", card.last4)
            assertEquals("Stripe M2", card.readerModel)
            assertEquals("STRIPE-M2-0042", card.readerSerial)
            assertNull(card.readerSignature)
            assertEquals(PaymentStatus.PENDING, engine.confirmCardPayment(decision.paymentId, card).status)
            // Bad data from the vendor SDK is a typed error, never a card.
            val challenge = handChallenge(1_200)
            vendor.last4 = "42a2"
            assertFailsWith<ReaderException.Protocol> { reader.takeCard(challenge, listOf(EntryMode.CHIP), true) }
            vendor.last4 = "4242"
            assertFailsWith<ReaderException.Protocol> { reader.takeCard(challenge, listOf(EntryMode.CONTACTLESS), true) }
            // The cashier cancels while the vendor SDK waits for the card.
            vendor.waitForCancel = true
            val waiting = async(kotlinx.coroutines.Dispatchers.IO) {
                runCatching { reader.takeCard(challenge, listOf(EntryMode.CHIP), true) }
            }
            assertTrue(vendor.waiting.await(60, java.util.concurrent.TimeUnit.SECONDS), "the vendor SDK is waiting")
            reader.cancel()
            val refused = withTimeout(60_000) { waiting.await() }.exceptionOrNull()
            assertTrue(refused is ReaderException.Refused && refused.code == "cancelled", "$refused")
            assertEquals(1, vendor.cancelled)
            assertFailsWith<ReaderException.InvalidInput> { reader.reconnectAutomatically(defaultReconnectSettings()) }
            assertEquals(0UL, reader.rejectedMessages())
            engine.shutdown()
        }
    }
}

/** The reader profile over a transport the app drives (here, frames relayed to the simulated reader's radio). */
class AppTransportTest {
    @Test
    fun `an app-driven link carries pairing and a card, and refuses replayed frames`() = runBlocking<Unit> {
        onlineEngine().use { engine ->
            val sim = SimulatedReader("Wisepad 3", "SIM-KT-APP", 40u, testProcessorKey, 185u)
            val radio = sim.radio()
            // The app's Bluetooth code: writes go to the radio, notifications come back.
            val transport = AppReaderTransport(object : ReaderLink {
                override fun writeFrame(frame: ByteArray) = radio.send(frame)
            }, 185u)
            val heard = CopyOnWriteArrayList<ByteArray>()
            val pump = kotlinx.coroutines.GlobalScope.launch(kotlinx.coroutines.Dispatchers.IO) {
                while (true) {
                    val frame = radio.receive() ?: break
                    heard.add(frame)
                    transport.deliverFrame(frame)
                }
            }
            val reader = transport.connect(object : ReaderListener { override fun onReaderEvent(event: ReaderEvent) {} })
            assertEquals("Wisepad 3", reader.pair(engine).model)
            sim.presentCard("4000000000009995", "1230", CardNetwork.VISA, EntryMode.CHIP)
            val card = reader.takeCard(handChallenge(2_500), listOf(EntryMode.CHIP), true)
            assertEquals("9995", card.last4)
            assertEquals(0UL, reader.rejectedMessages())
            // Someone replays what the reader sent: the secure link refuses every frame of it.
            for (frame in heard.toList()) transport.deliverFrame(frame)
            assertEquals("Wisepad 3", reader.refreshInfo().model, "the link still works")
            val rejected = reader.rejectedMessages()
            assertTrue(rejected > 0UL, "$rejected")
            assertNotNull(card.readerSignature)
            pump.cancel()
            engine.shutdown()
        }
    }
}
