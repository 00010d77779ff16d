package org.poscore

import java.io.File
import java.nio.file.Files
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test

/** The README's Kotlin example, compiled and run by the harness. */
class ReadmeExampleTest {
    @Test
    fun `the README example runs`() = runBlocking {
        val dir = Files.createTempDirectory("pos-readme").toString()
        val gateway = KotlinProcessor() // your PaymentGateway (or engine.useHttpGateway(...))
        // README-KOTLIN-BEGIN
        val engine = PosEngine(EngineConfig(dir, "till-1", "USD"), FileKeyProvider(File("$dir.kek")))
        engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true))
        engine.signIn(StaffSession("alex", mayTakeOfflinePayments = true))
        engine.setGateway(gateway)
        engine.reportNetwork(false) // from ConnectivityManager: the shop is offline
        val order = engine.createOrder(NewOrder(null, Money(4_250, "USD"), CustomerContact("ana@example.com", null)))
        val decision = engine.beginCardPayment(
            CardPaymentRequest(order.id, null, Money(4_250, "USD"), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        // `card` is what the reader returned: sealed for the processor, last 4, entry mode.
        val card = CardRead(EntryMode.CHIP, CardNetwork.VISA, "4242", "fp-1", "Chipper 2X BT", byteArrayOf(1, 2, 3))
        val payment = engine.confirmCardPayment(decision.paymentId, card) // durable when it returns
        println("${payment.status} until ${payment.deadlineMs}") // PENDING until the deadline
        engine.reportNetwork(true) // back online: forwarding starts by itself, or now:
        val report = engine.forwardNow()
        println("approved ${report.approved}, declined ${report.declined}")
        engine.shutdown()
        // README-KOTLIN-END
        assertEquals(1, gateway.charges.size) // by the driver or by forwardNow, once
    }
}
