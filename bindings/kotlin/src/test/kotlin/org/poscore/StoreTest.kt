package org.poscore

import java.io.File
import java.nio.file.Files
import kotlin.test.assertFailsWith
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The encrypted store through the bindings, with a Kotlin key provider. */
class StoreTest {
    private val t0 = 1_800_000_000_000L
    private val usd = { cents: Long -> Money(cents, "USD") }

    private suspend fun takeOnePayment(engine: PosEngine): String {
        engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
        engine.signIn(StaffSession("cashier-1", true))
        engine.reportNetwork(false)
        val order = engine.createOrder(NewOrder(null, usd(2_500), CustomerContact(null, "+15555550123")))
        val d = engine.beginCardPayment(
            CardPaymentRequest(order.id, null, usd(2_500), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        val card = CardRead(EntryMode.CHIP, CardNetwork.VISA, "4242", "fp-1", "Chipper 2X BT", byteArrayOf(9, 9, 9))
        return engine.confirmCardPayment(d.paymentId, card).id
    }

    @Test
    fun `payments survive closing and reopening the engine`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-store").toFile()
        val keys = FileKeyProvider(File(dir, "kek"))
        val config = EngineConfig(dir.path, "till-1", "USD")
        val id = PosEngine.withTestClock(config, keys, TestClock(t0)).use { takeOnePayment(it) }
        PosEngine.withTestClock(config, keys, TestClock(t0 + 60_000)).use { engine ->
            val payments = engine.listPayments()
            assertEquals(listOf(id), payments.map { it.id })
            assertEquals(PaymentStatus.PENDING, payments.single().status)
            assertTrue(engine.policy().enabled, "the policy is stored too")
        }
        // The phone number never reaches the database file in clear.
        val bytes = File(dir, "pos-core.sqlite").readBytes().toString(Charsets.ISO_8859_1)
        assertTrue(!bytes.contains("5555550123"))
    }

    @Test
    fun `a snapshot saved by compactStore reopens to the same payments`() = runBlocking<Unit> {
        val dir = Files.createTempDirectory("pos-kt-store").toFile()
        val keys = FileKeyProvider(File(dir, "kek"))
        val config = EngineConfig(dir.path, "till-1", "USD", compactEvery = 5uL)
        val before = PosEngine.withTestClock(config, keys, TestClock(t0)).use { engine ->
            takeOnePayment(engine)
            engine.compactStore()
            engine.listPayments()
        }
        PosEngine.withTestClock(config, keys, TestClock(t0 + 60_000)).use { engine ->
            assertEquals(before.map { it.copy(timeLeftMs = it.timeLeftMs - 60_000) }, engine.listPayments())
            assertEquals(1uL, engine.status().pendingOfflinePayments)
            engine.verifyStore()  // the whole journal replays to what was opened from the snapshot
        }
        assertFailsWith<PosException.InvalidConfig> {
            PosEngine.withTestClock(EngineConfig(dir.path, "till-1", "USD", compactEvery = 0uL), keys, TestClock(t0))
        }
    }

    @Test
    fun `a wrong key and a locked key raise their typed exceptions and keep the store`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-store").toFile()
        val config = EngineConfig(dir.path, "till-1", "USD")
        val keys = FileKeyProvider(File(dir, "kek"))
        PosEngine.withTestClock(config, keys, TestClock(t0)).use { takeOnePayment(it) }
        val other = FileKeyProvider(File(dir, "another-kek"))
        assertFailsWith<PosException.WrongKey> { PosEngine.withTestClock(config, other, TestClock(t0)) }
        keys.locked = true
        assertFailsWith<PosException.StoreLocked> { PosEngine.withTestClock(config, keys, TestClock(t0)) }
        keys.locked = false
        PosEngine.withTestClock(config, keys, TestClock(t0)).use { assertEquals(1, it.listPayments().size) }
    }
}
