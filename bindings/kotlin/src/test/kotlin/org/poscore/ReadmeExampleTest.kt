package org.poscore

import java.io.File
import java.nio.file.Files
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test

/** The README's Kotlin example, compiled and run by the harness. */
class ReadmeExampleTest {
    @Test
    fun `the README example runs`() = runBlocking {
        val dir = Files.createTempDirectory("pos-readme").toString()
        val gateway = KotlinProcessor() // your PaymentGateway (or engine.useHttpGateway(...))
        // Your reader vendor's authority and your connected reader: here the simulated ones.
        val readerAuthority = simulatorReaderAuthority()
        val sim = SimulatedReader("Chipper 2X BT", "SIM-README-KT", 80u, testProcessorKey, 185u)
        sim.presentCard("4242424242424242", "1230", CardNetwork.VISA, EntryMode.CHIP)
        val reader = sim.connect(Events())
        // README-KOTLIN-BEGIN
        val engine = PosEngine(EngineConfig(dir, "till-1", "USD"), FileKeyProvider(File("$dir.kek")))
        engine.setPolicy(policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(enabled = true, readerAuthorities = listOf(readerAuthority)))
        engine.signIn(StaffSession("alex", mayTakeOfflinePayments = true))
        engine.setGateway(gateway) // the engine probes it: online once the service answers healthy
        while (engine.status().connectivity !is ConnectivityStatus.Online) delay(100)
        reader.pair(engine) // authenticates the reader and remembers it (a new reader only online)
        engine.reportNetwork(false) // from ConnectivityManager: the shop is offline
        val order = engine.createOrder(NewOrder(null, Money(4_250, "USD"), CustomerContact("ana@example.com", null)))
        val decision = engine.beginCardPayment(
            CardPaymentRequest(order.id, null, Money(4_250, "USD"), null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        // The reader seals the card for the processor, bound to this payment's challenge, and signs it.
        val card = reader.takeCard(decision.challenge, listOf(EntryMode.CHIP, EntryMode.CONTACTLESS), offline = true)
        val payment = engine.confirmCardPayment(decision.paymentId, card) // durable when it returns
        println("${payment.status} until ${payment.deadlineMs}") // PENDING until the deadline
        engine.reportNetwork(true) // back online: forwarding starts by itself, or now:
        val report = engine.forwardNow()
        println("approved ${report.approved}, declined ${report.declined}")
        engine.shutdown()
        // README-KOTLIN-END
        assertEquals(1, gateway.charges.size) // by the driver or by forwardNow, once
        assertEquals("4242", payment.last4)
    }
}
