package org.poscore

import java.io.File
import java.nio.file.Files
import java.util.concurrent.LinkedBlockingQueue
import kotlin.test.assertFailsWith
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** Merchant accounts through the bindings (SPEC B7): binding, the guarded switch, forwarding under each payment's own account. */
class AccountTest {
    private val t0 = 1_800_000_000_000L
    private val accountA = MerchantAccount("acct_a", "loc_1")
    private val accountB = MerchantAccount("acct_b", "loc_2")
    private fun usd(cents: Long) = Money(cents, "USD")

    private fun config(dir: String, account: MerchantAccount?) =
        EngineConfig(dir, "till-1", "USD", automaticForwarding = false, account = account)

    /** Offline payments on, a cashier signed in, a reader remembered online, the network down, [processor] as the gateway. */
    private suspend fun PosEngine.offlineWith(processor: KotlinProcessor) {
        setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
        signIn(StaffSession("cashier-1", true))
        rememberVendorReader()
        reportNetwork(false)
        setGateway(processor)
    }

    private suspend fun PosEngine.takeOffline(cents: Long): String {
        val order = createOrder(NewOrder(null, usd(cents), null))
        val d = beginCardPayment(
            CardPaymentRequest(order.id, null, usd(cents), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        return confirmCardPayment(d.paymentId, vendorCard()).id
    }

    @Test
    fun `a switch is refused while payments are pending, overridden it keeps old payments under the old account`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-account").toString()
        PosEngine.withTestClock(config(dir, accountA), FileKeyProvider(File("$dir.kek")), TestClock(t0)).use { engine ->
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            assertEquals(accountA, engine.status().account)
            val old = engine.takeOffline(1_000)
            // Refused: the payment is pending; nothing changed.
            val refused = assertFailsWith<PosException.ActionRefused> { engine.switchAccount(accountB, null) }
            assertEquals(1UL, refused.pendingCount)
            assertEquals(listOf(usd(1_000)), refused.atRisk)
            assertEquals(accountA, engine.status().account)
            // The switch names the new account: the generic guard refuses it.
            assertFailsWith<PosException.InvalidInput> { engine.guardedAction(GuardedAction.SWITCH_ACCOUNT, null) }
            assertFailsWith<PosException.InvalidInput> { engine.switchAccount(MerchantAccount("acct b", "loc_2"), null) }
            // A manager restates the money at risk: the switch happens.
            val outcome = engine.switchAccount(accountB, ActionOverride("manager-1", "till moves to the second shop", refused.atRisk))
            assertEquals(GuardOutcome.Overridden(1UL, listOf(usd(1_000))), outcome)
            assertEquals(accountB, engine.status().account)
            val new = engine.takeOffline(2_000)
            // Each payment is forwarded under the account it was taken for.
            val report = engine.forwardNow()
            assertEquals(2UL, report.approved)
            assertEquals(2, processor.sentUnder.size)
            assertEquals(mapOf(old to accountA, new to accountB), processor.sentUnder.toMap())
            // The audit trail names both accounts.
            val audit = engine.exportAuditCsv()
            assertTrue(audit.lines().any { "account_switched" in it && "from=acct_a/loc_1; to=acct_b/loc_2" in it }, audit)
            assertTrue(audit.lines().any { "override" in it && "SwitchAccount" in it && "manager-1" in it }, audit)
            engine.shutdown()
        }
    }

    @Test
    fun `a store bound to one account does not open for another`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-account").toString()
        val keys = FileKeyProvider(File("$dir.kek"))
        PosEngine.withTestClock(config(dir, accountA), keys, TestClock(t0)).use { engine ->
            val status = engine.status()
            assertEquals(accountA, status.account)
            assertNotNull(status.storeSchema, "a store with files has a schema version")
            engine.closeAndRelease()
        }
        val e = assertFailsWith<PosException.AccountMismatch> {
            PosEngine.withTestClock(config(dir, accountB), keys, TestClock(t0))
        }
        assertEquals("acct_a/loc_1", e.stored)
        assertEquals("acct_b/loc_2", e.configured)
        assertFailsWith<PosException.InvalidConfig> {
            PosEngine.withTestClock(config(dir, MerchantAccount("", "loc_1")), keys, TestClock(t0))
        }
        // Without an account the store opens for its own.
        PosEngine.withTestClock(config(dir, null), keys, TestClock(t0)).use { engine ->
            assertEquals(accountA, engine.status().account)
            engine.shutdown()
        }
    }

    @Test
    fun `a forward refused account_mismatch blocks forwarding, never a decline`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-account").toString()
        PosEngine.withTestClock(config(dir, accountA), FileKeyProvider(File("$dir.kek")), TestClock(t0)).use { engine ->
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) { events.add(event) }
            })
            val processor = KotlinProcessor()
            engine.offlineWith(processor)
            val id = engine.takeOffline(1_500)
            // The app's backend holds another account's credentials.
            processor.credentialsFor = accountB
            val report = engine.forwardNow()
            assertEquals(0UL, report.declined)
            assertEquals(1UL, report.failed)
            assertEquals(ForwardingBlockedReason.ACCOUNT_MISMATCH, engine.status().forwardingBlocked)
            val payment = engine.listPayments().single { it.id == id }
            assertTrue(payment.status != PaymentStatus.DECLINED && payment.declineReason == null, "$payment")
            // Events reach the listener on the engine's event thread: every one of the round's is there after this.
            engine.eventsDelivered()
            val seen = generateSequence { events.poll() }.toList()
            assertTrue(seen.none { it is PosEvent.PaymentDeclined }, "$seen")
            assertEquals(listOf(ForwardingBlockedReason.ACCOUNT_MISMATCH), seen.filterIsInstance<PosEvent.ForwardingBlocked>().map { it.reason }, "$seen")
            // With the payment's own account's credentials it goes through.
            processor.credentialsFor = accountA
            assertEquals(1UL, engine.forwardNow().approved)
            assertEquals(null, engine.status().forwardingBlocked)
            assertEquals(PaymentStatus.APPROVED, engine.listPayments().single { it.id == id }.status)
            sub.cancel()
            engine.shutdown()
        }
    }
}
