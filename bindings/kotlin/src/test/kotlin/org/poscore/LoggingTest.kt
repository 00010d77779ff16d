package org.poscore

import java.nio.file.Files
import java.util.concurrent.ConcurrentLinkedQueue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The log bridge through the bindings: records arrive at the chosen level, none below it, none once cleared. */
class LoggingTest {
    private class Collect : LogSink {
        val records = ConcurrentLinkedQueue<LogRecord>()
        override fun log(record: LogRecord) { records.add(record) }
    }

    private fun usd(cents: Long) = Money(cents, "USD")

    /** Opens an engine, takes one payment offline and forwards it through a Kotlin gateway. */
    private fun aPaymentTakenAndForwarded() = runBlocking {
        val dir = Files.createTempDirectory("pos-kt-log").toString()
        val config = EngineConfig(dir, "till-1", "USD", 4u, false)
        PosEngine.withTestClock(config, FileKeyProvider(java.io.File("$dir.kek")), TestClock(1_800_000_000_000L)).use { engine ->
            engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
            engine.signIn(StaffSession("cashier-1", true))
            engine.rememberVendorReader()
            engine.reportNetwork(false)
            engine.setGateway(KotlinProcessor())
            val order = engine.createOrder(NewOrder(null, usd(1_250), null))
            val d = engine.beginCardPayment(
                CardPaymentRequest(order.id, null, usd(1_250), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
            )
            engine.confirmCardPayment(d.paymentId, vendorCard())
            assertEquals(1UL, engine.forwardNow().approved)
            engine.shutdown()
        }
    }

    private fun Collection<LogRecord>.has(target: String, message: String) =
        any { it.target.startsWith(target) && it.message.startsWith(message) }

    @Test
    fun `records arrive at the chosen level and none below it, and none once the sink is cleared`() {
        // At TRACE the same steps log below INFO too (each forwarding attempt).
        val all = Collect()
        setLogSink(LogLevel.TRACE, all)
        try {
            aPaymentTakenAndForwarded()
        } catch (e: Throwable) {
            setLogSink(LogLevel.TRACE, null)
            throw e
        }
        assertTrue(all.records.any { it.level == LogLevel.DEBUG }, "${all.records}")

        // Replaced, not cleared first: the new sink alone gets what follows.
        val info = Collect()
        setLogSink(LogLevel.INFO, info)
        try {
            aPaymentTakenAndForwarded()
        } finally {
            setLogSink(LogLevel.INFO, null)
        }
        val records = info.records.toList()
        assertTrue(records.has("pos_store", "store opened"), "$records")
        assertTrue(records.has("pos_core", "engine opened"), "$records")
        assertTrue(records.has("pos_core", "connectivity changed"), "$records")
        assertTrue(records.has("pos_core", "offline payment stored"), "$records")
        assertTrue(records.has("pos_core", "forwarding round finished"), "$records")
        val below = records.filter { it.level == LogLevel.DEBUG || it.level == LogLevel.TRACE }
        assertTrue(below.isEmpty(), "$below")

        // Cleared: nothing more arrives.
        val seen = info.records.size
        aPaymentTakenAndForwarded()
        assertEquals(seen, info.records.size)
        assertEquals(1, all.records.count { it.message.startsWith("store opened") }, "the first sink, replaced, got its run only")
    }
}
