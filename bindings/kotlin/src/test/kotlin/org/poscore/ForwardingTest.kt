package org.poscore

import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertFailsWith
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/**
 * A processor written in Kotlin (the foreign PaymentGateway), idempotent on
 * the payment id: the engine forwards through it, exactly once per payment.
 */
class KotlinProcessor : PaymentGateway {
    val charges = ConcurrentHashMap<String, GatewayDecision>()
    val requests = AtomicInteger()
    val declineLast4 = "0002"
    /** Payment ids whose first answer is lost after the charge. */
    val loseFirstAnswer = ConcurrentHashMap.newKeySet<String>()
    /** Payment ids whose every answer is lost after the charge. */
    val loseEveryAnswer = ConcurrentHashMap.newKeySet<String>()

    /** Payment ids declined as card data sealed for another payment (`Mismatch`). */
    val declineMismatch = ConcurrentHashMap.newKeySet<String>()

    /** Ids a lookup found unknown: refused from then on. */
    val closed = ConcurrentHashMap.newKeySet<String>()
    /** While set, decided answers wait here before they leave (a slow processor). */
    @Volatile var gate: java.util.concurrent.CountDownLatch? = null
    val held = AtomicInteger()

    /** The payment each card data was first charged for: sent for another payment, it is a replay. */
    val cardDataUsedBy = ConcurrentHashMap<String, String>()

    /** Each request's payment id and the merchant account it was sent under, in order. */
    val sentUnder = java.util.concurrent.CopyOnWriteArrayList<Pair<String, MerchantAccount?>>()
    /** While set, the only account the credentials are for: a request under another is refused `account_mismatch`. */
    @Volatile var credentialsFor: MerchantAccount? = null

    private fun decide(p: GatewayPayment): GatewayDecision {
        requests.incrementAndGet()
        sentUnder.add(p.paymentId to p.account)
        credentialsFor?.let { if (it != p.account) throw GatewayException.AccountMismatch("sent under ${p.account}") }
        if (p.paymentId in closed) throw GatewayException.Rejected("closed")
        val d = charges.computeIfAbsent(p.paymentId) {
            val firstUse = cardDataUsedBy.putIfAbsent(java.util.Base64.getEncoder().encodeToString(p.cardData), p.paymentId)
            when {
                p.paymentId in declineMismatch -> GatewayDecision.Declined(DeclineReason.Mismatch)
                firstUse != null && firstUse != p.paymentId -> GatewayDecision.Declined(DeclineReason.Replayed)
                p.last4 == declineLast4 -> GatewayDecision.Declined(DeclineReason.InsufficientFunds)
                else -> GatewayDecision.Approved("kt_${p.paymentId}")
            }
        }
        gate?.let { held.incrementAndGet(); it.await(30, TimeUnit.SECONDS); held.decrementAndGet() }
        if (loseFirstAnswer.remove(p.paymentId) || p.paymentId in loseEveryAnswer) {
            throw GatewayException.NoAnswer("answer lost")
        }
        return d
    }

    override fun paymentStatus(deviceId: String, paymentId: String, account: MerchantAccount?): PaymentLookup =
        charges[paymentId]?.let { PaymentLookup.Decided(it) }
            ?: PaymentLookup.NotFound.also { closed.add(paymentId) }

    override fun authorize(payment: GatewayPayment) = decide(payment)
    override fun forward(payment: GatewayPayment) = decide(payment)
    override fun status() = ServiceStatusAnswer(ServiceStatus.AVAILABLE, null)
    val receipts = java.util.concurrent.CopyOnWriteArrayList<GatewayReceipt>()
    override fun deliverReceipt(receipt: GatewayReceipt) { receipts.add(receipt) }
}

class ForwardingTest {
    private val t0 = 1_800_000_000_000L
    private fun usd(cents: Long) = Money(cents, "USD")

    private fun card(last4: String) = vendorCard(last4)

    /** Offline payments on, a cashier signed in, a reader remembered online, the network down, [processor] as the gateway. */
    private suspend fun PosEngine.offlineWith(processor: KotlinProcessor) {
        setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
        signIn(StaffSession("cashier-1", true))
        rememberVendorReader()
        reportNetwork(false)
        setGateway(processor)
    }

    /** Takes one offline payment of [cents] on a new order; returns its id. */
    private suspend fun PosEngine.takeOffline(cents: Long, last4: String = "4242"): String {
        val order = createOrder(NewOrder(null, usd(cents), null))
        val d = beginCardPayment(
            CardPaymentRequest(order.id, null, usd(cents), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        return confirmCardPayment(d.paymentId, card(last4)).id
    }

    @Test
    fun `stored payments are forwarded through a Kotlin gateway, declines reported`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-fwd").toString()
        val config = EngineConfig(dir, "till-1", "USD", 4u, false)
        val clock = TestClock(t0)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), clock).use { engine ->
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) { events.add(event) }
            })
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            val ids = mutableListOf<String>()
            for ((i, last4) in listOf("4242", "4242", "0002").withIndex()) {
                val order = engine.createOrder(NewOrder(null, usd(1_000L + i), CustomerContact("c$i@example.com", null)))
                val d = engine.beginCardPayment(
                    CardPaymentRequest(order.id, null, usd(1_000L + i), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
                )
                ids += engine.confirmCardPayment(d.paymentId, card(last4)).id
            }
            engine.requestReceipt(engine.listPayments().first { it.id == ids[1] }.orderId, ReceiptChannel.Email(CustomerContact("c1@example.com", null)))
            processor.loseFirstAnswer.add(ids[0])
            val first = engine.forwardNow()
            assertEquals(3UL, first.attempts)
            assertEquals(1UL, first.approved)
            assertEquals(1UL, first.declined)
            assertEquals(1UL, first.failed)
            // The lost answer is retried with the same id after its back-off.
            clock.advanceMs(10_000u)
            val second = engine.forwardNow()
            assertEquals(1UL, second.approved)
            assertEquals(3, processor.charges.size, "one charge per payment")
            // The receipt queued offline reached the gateway; its record never prints the address.
            val receipt = processor.receipts.single()
            assertEquals("c1@example.com", receipt.recipient.email())
            assertTrue("example.com" !in receipt.toString(), receipt.toString())
            assertEquals(4, processor.requests.get())
            val states = engine.listPayments().associate { it.id to it.status }
            assertEquals(PaymentStatus.APPROVED, states[ids[0]])
            assertEquals(PaymentStatus.DECLINED, states[ids[2]])
            // The decline event carries the contact and the amount due. Events reach the listener on the
            // engine's event thread: every one of the rounds' is there after eventsDelivered().
            engine.eventsDelivered()
            val seen = generateSequence { events.poll() }.toList()
            val declined = seen.filterIsInstance<PosEvent.PaymentDeclined>().singleOrNull()
            assertNotNull(declined, "$seen")
            assertEquals(usd(1_002), declined!!.notice.amountDue)
            assertEquals("c2@example.com", declined.notice.contact!!.email())
            assertTrue(seen.any { it is PosEvent.ForwardingProgress && it.finished }, "$seen")
            // The amount due is collected online; offline that is refused.
            assertFailsWith<PosException.OnlineRequired> { engine.beginBalancePayment(declined.notice.orderId) }
            sub.cancel()
            engine.shutdown()
        }
    }

    @Test
    fun `settled history leaves memory and stays readable from the store`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-history").toString()
        val config = EngineConfig(dir, "till-1", "USD", 4u, false, settledInMemory = 1u, auditInMemory = 2u)
        val clock = TestClock(t0)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), clock).use { engine ->
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            // A second apart: the most recent order is the one held.
            val ids = (1..3).map { clock.advanceMs(1_000u); engine.takeOffline(1_000L + it) }
            // Back online: the offline session ends (its payments count against its per-card limit until then).
            engine.reportNetwork(true)
            engine.reportProbe(ProbeOutcome.HEALTHY)
            val online = engine.reportProbe(ProbeOutcome.HEALTHY)
            assertTrue(online is ConnectivityStatus.Online, "$online")
            assertEquals(3UL, engine.forwardNow().approved)
            val fullCsv = engine.exportAuditCsv()
            engine.compactStore()
            // One settled order is held; the other two are read back from the store.
            assertEquals(listOf(ids[2]), engine.listPayments().map { it.id })
            val all = engine.paymentHistory()
            assertEquals(ids.toSet(), all.map { it.id }.toSet())
            assertTrue(all.all { it.status == PaymentStatus.APPROVED }, "$all")
            assertEquals(3U, engine.status().totals.single().approvedCount)
            assertEquals(3, engine.exportAuditCsv().lines().filter { it.isNotEmpty() }.size, "header + 2 entries")
            assertEquals(fullCsv, engine.exportAuditHistoryCsv())
            engine.shutdown()
        }
    }

    @Test
    fun `a cancelled forwardNow still records every answer, each payment charged once`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-cancel").toString()
        val config = EngineConfig(dir, "till-1", "USD", 3u, false)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), TestClock(t0)).use { engine ->
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            val ids = (0 until 5).map { i -> engine.takeOffline(500L + i) }
            // A slow processor: three payments charged, their answers on the way...
            val gate = java.util.concurrent.CountDownLatch(1)
            processor.gate = gate
            val job = launch(kotlinx.coroutines.Dispatchers.Default) { engine.forwardNow() }
            val until = System.nanoTime() + 30_000_000_000L
            while (processor.held.get() < 3 && System.nanoTime() < until) Thread.sleep(1)
            assertEquals(3, processor.held.get())
            // ...when the coroutine is cancelled.
            job.cancelAndJoin()
            assertTrue(job.isCancelled)
            processor.gate = null
            gate.countDown()
            // The next round waits for the cancelled one and settles the rest.
            engine.forwardNow()
            val states = engine.listPayments().associate { it.id to it.status }
            for (id in ids) assertEquals(PaymentStatus.APPROVED, states[id], id)
            assertEquals(5, processor.charges.size, "one charge per payment")
            assertEquals(5, processor.requests.get(), "every answer recorded: nothing asked twice")
            engine.shutdown()
        }
    }

    @Test
    fun `a payment the processor may hold is never expired, its outcome is unknown until the processor says`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-unknown").toString()
        val config = EngineConfig(dir, "till-1", "USD", 2u, false)
        val clock = TestClock(t0)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), clock).use { engine ->
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) { events.add(event) }
            })
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            val id = engine.takeOffline(4_200)
            val order = engine.listPayments().single().orderId
            // Charged at the processor, every answer lost on the way back.
            processor.loseEveryAnswer.add(id)
            engine.forwardNow()
            // A week later the deadline has passed: not expired, unknown.
            clock.advanceMs(7UL * 24UL * 3_600_000UL)
            val tick = engine.tick()
            assertTrue(tick.expiredPaymentIds.isEmpty())
            assertEquals(listOf(id), tick.outcomeUnknownPaymentIds)
            assertEquals(PaymentStatus.OUTCOME_UNKNOWN, engine.listPayments().single().status)
            val totals = engine.status().totals.single()
            assertEquals(1u, totals.unknownCount)
            assertEquals(0u, totals.expiredCount)
            assertEquals(usd(0), engine.order(order).balance, "not due again: the customer may have paid")
            engine.eventsDelivered()
            val seen = generateSequence { events.poll() }.toList()
            assertEquals(id, seen.filterIsInstance<PosEvent.PaymentOutcomeUnknown>().singleOrNull()?.paymentId, "$seen")
            // The next round asks the Kotlin gateway about the id: approved.
            val round = engine.forwardNow()
            assertEquals(1UL, round.approved)
            assertEquals(0UL, round.outcomeUnknown)
            assertEquals(PaymentStatus.APPROVED, engine.listPayments().single().status)
            sub.cancel()
            engine.shutdown()
        }
    }

    @Test
    fun `a vendor card read sent for a second payment is declined replayed by the processor`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-replay").toString()
        val config = EngineConfig(dir, "till-1", "USD", 1u, false)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), TestClock(t0)).use { engine ->
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            // A vendor reader's read is not bound to its payment on the device (its
            // trust comes from the vendor SDK): the engine takes the same read twice...
            val card = card("4242")
            val ids = (0 until 2).map { i ->
                val order = engine.createOrder(NewOrder(null, usd(1_000L + i), null))
                val d = engine.beginCardPayment(
                    CardPaymentRequest(order.id, null, usd(1_000L + i), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
                )
                engine.confirmCardPayment(d.paymentId, card).id
            }
            // ...and the processor declines the replay.
            val report = engine.forwardNow()
            assertEquals(1UL, report.approved)
            assertEquals(1UL, report.declined)
            val payments = engine.listPayments().filter { it.id in ids }
            assertEquals(setOf(PaymentStatus.APPROVED, PaymentStatus.DECLINED), payments.map { it.status }.toSet())
            assertEquals(DeclineReason.Replayed, payments.single { it.status == PaymentStatus.DECLINED }.declineReason)
            // The processor's "mismatch" (card data sealed for another payment) comes back the same way.
            val third = engine.takeOffline(700, "1881")
            processor.declineMismatch.add(third)
            assertEquals(1UL, engine.forwardNow().declined)
            assertEquals(DeclineReason.Mismatch, engine.listPayments().single { it.id == third }.declineReason)
            engine.shutdown()
        }
    }

    @Test
    fun `pause and resume are visible, forward now lifts the pause`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-pause").toString()
        val config = EngineConfig(dir, "till-1", "USD", null, false)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), TestClock(t0)).use { engine ->
            engine.setGateway(KotlinProcessor())
            // Readers: a new one is remembered only online (R11 list empty by default).
            assertFailsWith<PosException.OnlineRequired> {
                engine.rememberReader(ReaderInfo("Chipper 2X BT", "SN-1", "1.0", 50u))
            }
            assertTrue(engine.rememberedReaders().isEmpty())
            assertTrue(!engine.readerMayTakeOfflinePayments("Chipper 2X BT"))
            engine.pauseForwarding()
            assertTrue(engine.forwardingPaused())
            engine.resumeForwarding()
            assertTrue(!engine.forwardingPaused())
            engine.pauseForwarding()
            engine.forwardNow()
            assertTrue(!engine.forwardingPaused())
            engine.shutdown()
        }
    }
}
