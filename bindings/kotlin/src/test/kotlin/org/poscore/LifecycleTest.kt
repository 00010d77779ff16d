package org.poscore

import java.nio.file.Files
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import kotlin.test.assertFailsWith

/** The app's lifecycle on the test clock: the wake-up time, going to the background and back. */
class LifecycleTest {
    private val t0 = 1_800_000_000_000L

    @Test
    fun `the wake-up time follows the work due and leaves probes out in the background`() = runBlocking {
        val config = EngineConfig(Files.createTempDirectory("pos-kt").toString(), "till-1", "USD")
        val clock = TestClock(t0)
        val engine = PosEngine.withTestClock(config, FileKeyProvider(java.io.File(config.dataDir + ".kek")), clock)
        engine.use {
            // Online with nothing pending: nothing to wake up for.
            engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
            engine.signIn(StaffSession("cashier-1", true))
            engine.rememberVendorReader()
            assertEquals(null, engine.status().nextWakeUpMs)
            // Offline with a payment pending: the next probe comes first.
            engine.reportNetwork(false)
            val order = engine.createOrder(NewOrder(null, Money(1_000, "USD"), null))
            val begun = engine.beginCardPayment(
                CardPaymentRequest(order.id, null, Money(1_000, "USD"), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
            )
            val payment = engine.confirmCardPayment(begun.paymentId, vendorCard())
            val probe = engine.status().nextWakeUpMs!!
            assertTrue(probe in (t0 + 1)..<payment.deadlineMs, "$probe")
            // In the background probes are paused: the wake-up is the next session warning.
            engine.onBackground()
            val warning = engine.status().nextWakeUpMs!!
            assertTrue(warning > probe && warning <= payment.deadlineMs, "$warning")
            clock.advanceMs((warning - 1 - clock.wallMs()).toULong())
            assertEquals(0u, engine.tick().warnings)
            clock.advanceMs(1u)
            assertEquals(1u, engine.tick().warnings, "a warning falls due at the wake-up time")
            // Back in the foreground the probe schedule counts again.
            engine.onForeground()
            assertTrue(engine.status().nextWakeUpMs!! < warning)
            engine.shutdown()
            assertFailsWith<PosException.Closed> { engine.onBackground() }
            assertFailsWith<PosException.Closed> { engine.onForeground() }
        }
        clock.close()
    }
}
