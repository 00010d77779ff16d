package org.poscore

import java.io.File
import java.nio.file.Files
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
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
        engine.rememberVendorReader()
        engine.reportNetwork(false)
        val order = engine.createOrder(NewOrder(null, usd(2_500), CustomerContact(null, "+15555550123")))
        val d = engine.beginCardPayment(
            CardPaymentRequest(order.id, null, usd(2_500), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        val card = vendorCard("4242")
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

    private val storeFiles = listOf("pos-core.sqlite", "pos-core.sqlite-wal", "pos-core.sqlite-shm")

    /** Copies the store's files that exist from one folder to another. */
    private fun copyStore(from: File, to: File) {
        to.mkdirs()
        for (name in storeFiles) {
            File(to, name).delete()
            val f = File(from, name)
            if (f.exists()) f.copyTo(File(to, name))
        }
    }

    /** The figures of a store refused as rolled back: the last record it holds, the last one written. */
    private fun rolledBack(e: PosException.StoreIntegrity): Pair<Long, Long> {
        assertTrue("rolled back" in e.reason, e.reason)
        val found = checkNotNull(e.recordsFound) { "not a rollback: ${e.reason}" }
        val written = checkNotNull(e.recordsWritten) { "not a rollback: ${e.reason}" }
        return found.toLong() to written.toLong()
    }

    private fun fileBytes(dir: File) = storeFiles.map { File(dir, it) }.filter { it.exists() }.associate { it.name to it.readBytes().toList() }

    @Test
    fun `an older copy of the store is refused as rolled back, with the figures`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-rollback").toFile()
        val data = File(dir, "data")
        val keys = FileKeyProvider(File(dir, "keys/kek").also { it.parentFile.mkdirs() })
        val config = EngineConfig(data.path, "till-1", "USD")
        // Each session releases the files before they are copied.
        PosEngine.withTestClock(config, keys, TestClock(t0)).use { takeOnePayment(it); it.closeAndRelease() }
        val backup = File(dir, "backup")
        copyStore(data, backup)
        PosEngine.withTestClock(config, keys, TestClock(t0 + 60_000)).use { takeOnePayment(it); it.closeAndRelease() }
        copyStore(backup, data)
        val before = fileBytes(data)
        val e = assertFailsWith<PosException.StoreIntegrity> {
            PosEngine.withTestClock(config, keys, TestClock(t0 + 120_000))
        }
        val (found, expected) = rolledBack(e)
        assertTrue(found in 1 until expected, "${e.reason}")
        assertEquals(before, fileBytes(data), "the refused store is kept as it is")
        // Still refused on the next try: the anchor was not moved back.
        assertEquals(found to expected, rolledBack(assertFailsWith<PosException.StoreIntegrity> { PosEngine.withTestClock(config, keys, TestClock(t0)) }))
    }

    @Test
    fun `a store that lost its -wal is refused as rolled back`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-wal").toFile()
        val data = File(dir, "data")
        val keys = FileKeyProvider(File(dir, "keys/kek").also { it.parentFile.mkdirs() })
        val config = EngineConfig(data.path, "till-1", "USD")
        val crash = File(dir, "crash")
        PosEngine.withTestClock(config, keys, TestClock(t0)).use { engine ->
            takeOnePayment(engine)
            // While it runs, the latest records are in the log beside the file.
            assertTrue(File(data, "pos-core.sqlite-wal").length() > 0)
            copyStore(data, crash)
            engine.closeAndRelease()
        }
        // The image of the running store, with its -wal deleted.
        assertTrue(File(crash, "pos-core.sqlite-wal").delete())
        File(crash, "pos-core.sqlite-shm").delete()
        copyStore(crash, data)
        val e = assertFailsWith<PosException.StoreIntegrity> {
            PosEngine.withTestClock(config, keys, TestClock(t0 + 60_000))
        }
        val (found, expected) = rolledBack(e)
        assertTrue(found < expected, "${e.reason}")
    }

    @Test
    fun `a failed anchor save is an event and shows in the status`() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-anchor").toFile()
        val keys = FileKeyProvider(File(dir, "kek"))
        val config = EngineConfig(File(dir, "data").path, "till-1", "USD")
        PosEngine.withTestClock(config, keys, TestClock(t0)).use { engine ->
            val ok = engine.status().anchor
            assertTrue(ok != null && !ok.failing && ok.lastSavedAtMs == t0, "$ok")
            val events = LinkedBlockingQueue<PosEvent>()
            val sub = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) = events.put(event)
            })
            keys.failAnchorSaves = true
            takeOnePayment(engine)
            var failed: PosEvent? = null
            while (failed !is PosEvent.AnchorSaveFailed) {
                failed = checkNotNull(events.poll(30, TimeUnit.SECONDS)) { "no AnchorSaveFailed event" }
            }
            assertTrue(failed.reason.contains("anchor write refused") && failed.behind > 0uL, "$failed")
            val anchor = checkNotNull(engine.status().anchor)
            assertTrue(anchor.failing && anchor.failures >= 1uL && anchor.lastSavedAtMs == t0, "$anchor")
            sub.cancel()
            keys.failAnchorSaves = false
        }
    }
}
