package org.poscore

import java.nio.file.Files
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.test.assertFailsWith
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The offline rules through the bindings: split tender, limits with figures, refusals, events. */
class CheckoutTest {
    private val t0 = 1_800_000_000_000L

    private fun usd(cents: Long) = Money(cents, "USD")

    /** A card read by the vendor reader remembered in [offlineEngine]. */
    private fun card(mode: EntryMode = EntryMode.CHIP, last4: String = "4242") = vendorCard(last4, mode)

    /** An engine on a test clock, Shopify preset turned on, a cashier signed in, a reader remembered online, network down. */
    private fun offlineEngine(): PosEngine = runBlocking {
        val config = EngineConfig(Files.createTempDirectory("pos-kt").toString(), "till-1", "USD")
        val engine = PosEngine.withTestClock(config, FileKeyProvider(java.io.File(config.dataDir + ".kek")), TestClock(t0))
        engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
        engine.signIn(StaffSession("cashier-1", true))
        engine.rememberVendorReader()
        val state = engine.reportNetwork(false)
        assertTrue(state is ConnectivityStatus.NetworkOutage, "$state")
        engine
    }

    private suspend fun PosEngine.payByCard(orderId: String, cents: Long, card: CardRead = card()): PaymentView {
        val decision = beginCardPayment(
            CardPaymentRequest(orderId, null, usd(cents), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        val route = decision.route
        assertTrue(route is PaymentRoute.Offline, "$route")
        return confirmCardPayment(decision.paymentId, card)
    }

    @Test
    fun `split tender paid by two cards and cash offline`() = runBlocking {
        offlineEngine().use { engine ->
            val order = engine.createOrder(NewOrder(null, usd(12_000), CustomerContact("ana@example.com", null)))
            val first = engine.payByCard(order.id, 6_000, card(last4 = "4242"))
            val second = engine.payByCard(order.id, 4_000, card(last4 = "1881"))
            assertEquals(PaymentStatus.PENDING, first.status)
            assertEquals(PaymentStatus.PENDING, second.status)
            // The deadline of the phone profile: 24 h after the connection was lost.
            assertEquals(t0 + 24 * 3_600_000L, first.deadlineMs)
            val paid = engine.addCash(order.id, usd(2_000))
            assertEquals(0L, paid.balance.minorUnits)
            assertEquals(3, paid.tenders.size)
            assertEquals(OrderStatus.PAYMENT_PENDING, paid.status)
            assertTrue(paid.contactHint!!.contains("***"), paid.contactHint)
            val status = engine.status()
            assertEquals(2UL, status.pendingOfflinePayments)
            assertEquals(10_000L, status.totals.single().pendingAmount.minorUnits)
            assertEquals(2, engine.listPayments().size)
            // The audit trail names who took each payment, and never the contact.
            val audit = engine.exportAuditCsv()
            assertTrue(audit.contains(first.id) && audit.contains("cashier-1"), audit)
            assertTrue(!audit.contains("ana@example.com"), audit)
            engine.shutdown()
        }
    }

    @Test
    fun `an over-limit card carries the rule and the figures`() = runBlocking {
        offlineEngine().use { engine ->
            val order = engine.createOrder(NewOrder(null, usd(15_000), null))
            engine.payByCard(order.id, 6_000)
            // 60 + 50 = 110 > the 100 per-order limit (R5).
            val e = assertFailsWith<PosException.Refused> { engine.payByCard(order.id, 5_000) }
            assertEquals("R5", e.rule)
            assertEquals("PerOrderLimit", e.kind)
            assertEquals(usd(10_000), e.limit)
            assertEquals(usd(6_000), e.current)
            assertEquals(usd(5_000), e.attempted)
            // Nothing was taken for the refused card.
            assertEquals(1, engine.listPayments().size)
            engine.shutdown()
        }
    }

    @Test
    fun `a refused entry mode fails at confirmation and takes nothing`() = runBlocking {
        offlineEngine().use { engine ->
            val order = engine.createOrder(NewOrder(null, usd(2_000), null))
            val e = assertFailsWith<PosException.Refused> { engine.payByCard(order.id, 2_000, card(EntryMode.SWIPE)) }
            assertEquals("EntryModeRefused", e.kind)
            assertTrue(engine.listPayments().isEmpty())
            engine.shutdown()
        }
    }

    @Test
    fun `a cashier without the permission is refused`() = runBlocking {
        offlineEngine().use { engine ->
            engine.signIn(StaffSession("trainee-2", false))
            val order = engine.createOrder(NewOrder(null, usd(1_000), null))
            val e = assertFailsWith<PosException.Refused> { engine.payByCard(order.id, 1_000) }
            assertEquals("R12", e.rule)
            engine.shutdown()
        }
    }

    @Test
    fun `logout is refused while payments are pending`() = runBlocking {
        offlineEngine().use { engine ->
            val order = engine.createOrder(NewOrder(null, usd(1_000), null))
            engine.payByCard(order.id, 1_000)
            val e = assertFailsWith<PosException.ActionRefused> { engine.guardedAction(GuardedAction.LOG_OUT, null) }
            assertEquals(1UL, e.pendingCount)
            assertEquals(listOf(usd(1_000)), e.atRisk)
            val ok = engine.guardedAction(
                GuardedAction.LOG_OUT,
                ActionOverride("manager-1", "end of shift", listOf(usd(1_000))),
            )
            assertTrue(ok is GuardOutcome.Overridden, "$ok")
            engine.shutdown()
        }
    }

    @Test
    fun `connectivity and payment events arrive`() = runBlocking {
        val config = EngineConfig(Files.createTempDirectory("pos-kt").toString(), "till-1", "USD")
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File(config.dataDir + ".kek")), TestClock(t0)).use { engine ->
            engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
            engine.signIn(StaffSession("cashier-1", true))
            engine.rememberVendorReader()
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) = events.put(event)
            })
            assertTrue(events.poll(30, TimeUnit.SECONDS) is PosEvent.Snapshot)
            engine.reportNetwork(false)
            val change = events.poll(30, TimeUnit.SECONDS)
            assertTrue(change is PosEvent.ConnectivityChanged && change.to is ConnectivityStatus.NetworkOutage, "$change")
            val order = engine.createOrder(NewOrder(null, usd(1_000), null))
            val taken = engine.payByCard(order.id, 1_000)
            val stored = events.poll(30, TimeUnit.SECONDS)
            assertTrue(stored is PosEvent.PaymentStateChanged && stored.paymentId == taken.id, "$stored")
            sub.cancel()
            engine.shutdown()
        }
    }

    @Test
    fun `a receipt channel never prints the address or number`() {
        val contact = CustomerContact("ana@example.com", "+14155550123")
        val email = ReceiptChannel.Email(contact)
        val sms = ReceiptChannel.Sms(contact)
        for (channel in listOf(email, sms)) {
            assertTrue(!channel.toString().contains("ana@example.com"), "$channel")
            assertTrue(!channel.toString().contains("4155550123"), "$channel")
        }
        assertEquals("ana@example.com", email.recipient.email())
    }

    @Test
    fun `a receipt channel without the matching address is refused`() = runBlocking {
        offlineEngine().use { engine ->
            val order = engine.createOrder(NewOrder(null, usd(1_000), null))
            assertFailsWith<PosException.InvalidInput> {
                engine.requestReceipt(order.id, ReceiptChannel.Sms(CustomerContact("ana@example.com", null)))
            }
            assertFailsWith<PosException.InvalidInput> {
                engine.requestReceipt(order.id, ReceiptChannel.Email(CustomerContact(null, "+14155550123")))
            }
            assertEquals(0uL, engine.queuedReceiptCount())
            engine.requestReceipt(order.id, ReceiptChannel.Sms(CustomerContact(null, "+14155550123")))
            assertEquals(1uL, engine.queuedReceiptCount())
            engine.shutdown()
        }
    }

    @Test
    fun `a decline carries the contact and the amount due, and never prints the contact`() = runBlocking {
        offlineEngine().use { engine ->
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) = events.put(event)
            })
            val processor = KotlinProcessor()
            val order = engine.createOrder(NewOrder(null, usd(3_000), CustomerContact("ana@example.com", null)))
            // The processor declines this card (insufficient funds) when the payment is forwarded.
            engine.payByCard(order.id, 3_000, card(last4 = processor.declineLast4))
            engine.setGateway(processor)
            engine.forwardNow()
            // Events reach the listener on the engine's event thread: every one so far is there after this.
            engine.eventsDelivered()
            val seen = generateSequence { events.poll() }.toList()
            for (e in seen) assertTrue(!e.toString().contains("ana@example.com"), "$e")
            val declined = seen.filterIsInstance<PosEvent.PaymentDeclined>().singleOrNull()
            assertTrue(declined != null, "$seen")
            val notice = declined!!.notice
            assertEquals(usd(3_000), notice.amountDue)
            assertEquals("ana@example.com", notice.contact!!.email())
            assertTrue(notice.contact!!.hint().contains("***"))
            assertEquals(OrderStatus.CARD_DECLINED, engine.order(order.id).status)
            sub.cancel()
            engine.shutdown()
        }
    }
}
