// The FFI cost measured from Kotlin: `cargo xtask bench` compiles this main
// with the generated bindings of the release library and runs it on the JVM.
// The same steps as core/engine/benches/checkout.rs (the Rust baseline of the
// same run, passed in as POS_BENCH_RUST_CHECKOUT_NS): status() p50 with
// nothing pending, a whole offline checkout p50, status() p50 with 10,000
// pending. Prints BENCH lines for the table.
package org.poscore.bench

import java.nio.file.Files
import java.security.SecureRandom
import java.util.concurrent.ConcurrentHashMap
import kotlinx.coroutines.runBlocking
import org.poscore.CardNetwork
import org.poscore.CardPaymentRequest
import org.poscore.CardRead
import org.poscore.ConnectivityStatus
import org.poscore.EngineConfig
import org.poscore.EntryMode
import org.poscore.KeyMaterial
import org.poscore.KeyProvider
import org.poscore.Money
import org.poscore.NewOrder
import org.poscore.OfflineBehaviour
import org.poscore.PolicyPreset
import org.poscore.PosEngine
import org.poscore.ProbeOutcome
import org.poscore.ReaderInfo
import org.poscore.StaffSession
import org.poscore.TenderKind
import org.poscore.policyPreset

private const val SERIAL = "VENDOR-SN-1"

// The JVM compiles a method only after thousands of calls: the status()
// figures are taken after this many untimed calls, the checkout after
// CHECKOUT_WARM_UP untimed checkouts, so that they measure compiled code,
// as on a phone whose runtime compiled the app ahead of time.
private const val STATUS_WARM_UP = 20_000
private const val CHECKOUT_WARM_UP = 300

/** A key in memory and anchors in a map: the bench measures the engine, not a keystore. */
private class MemoryKeys : KeyProvider {
    private val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
    private val anchors = ConcurrentHashMap<String, ByteArray>()
    override fun keyEncryptionKey() = KeyMaterial("kek-1", key)
    override fun saveAnchor(storeId: String, anchor: ByteArray) { anchors[storeId] = anchor }
    override fun loadAnchor(storeId: String): ByteArray? = anchors[storeId]
}

private fun env(name: String, default: Int) = System.getenv(name)?.toIntOrNull() ?: default

private fun usd(cents: Long) = Money(cents, "USD")

private fun card(n: Int) = CardRead(
    EntryMode.CHIP, CardNetwork.VISA, "4242", "fp-4242", "Square Terminal",
    byteArrayOf(9, 8, 7, 6, (n shr 24).toByte(), (n shr 16).toByte(), (n shr 8).toByte(), n.toByte()),
    readerSerial = SERIAL,
)

private suspend fun PosEngine.checkout(n: Int) {
    val total = usd(500L + (n % 50) * 37L)
    val order = createOrder(NewOrder(null, total, null))
    val d = beginCardPayment(CardPaymentRequest(order.id, null, total, null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD))
    confirmCardPayment(d.paymentId, card(n))
}

private fun p50(v: LongArray): Long = v.sorted()[v.size / 2]

private fun statusP50(engine: PosEngine, calls: Int): Long {
    repeat(STATUS_WARM_UP) { engine.status() }
    val times = LongArray(calls) {
        val t = System.nanoTime()
        engine.status()
        System.nanoTime() - t
    }
    return p50(times)
}

private fun us(ns: Long) = String.format("%.1f µs", ns / 1000.0)

fun main() = runBlocking {
    val statusCalls = env("POS_BENCH_STATUS_CALLS", 2_000)
    val checkouts = env("POS_BENCH_CHECKOUTS", 1_000)
    val pending = maxOf(env("POS_BENCH_PENDING", 10_000), checkouts + CHECKOUT_WARM_UP)
    val rust = System.getenv("POS_BENCH_RUST_CHECKOUT_NS")?.toLongOrNull()
    val dir = Files.createTempDirectory("pos-kt-bench").toFile()
    val engine = PosEngine(EngineConfig(dir.path, "till-1", "USD"), MemoryKeys())
    engine.setPolicy(policyPreset(PolicyPreset.SQUARE_TERMINAL, "USD").copy(enabled = true))
    engine.signIn(StaffSession("cashier-1", true))
    engine.reportNetwork(true)
    engine.reportProbe(ProbeOutcome.HEALTHY)
    check(engine.reportProbe(ProbeOutcome.HEALTHY) is ConnectivityStatus.Online)
    engine.rememberReader(ReaderInfo("Square Terminal", SERIAL, "1.0", 80u))
    engine.reportNetwork(false)

    val statusNone = statusP50(engine, statusCalls)
    var n = 0
    repeat(CHECKOUT_WARM_UP) { engine.checkout(n++) }
    val times = LongArray(checkouts) {
        val t = System.nanoTime()
        engine.checkout(n++)
        System.nanoTime() - t
    }
    val checkout = p50(times)
    while (n < pending) engine.checkout(n++)
    check(engine.status().pendingOfflinePayments == pending.toULong())
    val statusPending = statusP50(engine, statusCalls / 2)
    engine.closeAndRelease()
    engine.close()
    dir.deleteRecursively()

    println("checkout and status() from Kotlin through the FFI (release library, JNA)")
    println("  status() p50, nothing pending: ${us(statusNone)}")
    println("  offline checkout p50 of $checkouts: ${us(checkout)}")
    println("  status() p50, $pending pending: ${us(statusPending)}")
    for ((what, ns) in listOf("nothing pending" to statusNone, "$pending pending" to statusPending)) {
        println(
            "BENCH figure=\"Kotlin: status() p50, $what\" target=\"<= 20 µs\" baseline=\"-\" " +
                "value=\"${us(ns)}\" verdict=${if (ns <= 20_000) "met" else "missed"}",
        )
    }
    val ratio = rust?.let { checkout.toDouble() / it }
    println(
        "BENCH figure=\"Kotlin: offline checkout p50 (create, begin, confirm)\" target=\"<= 1.5 × Rust\" " +
            "baseline=\"${rust?.let { "Rust ${us(it)}" } ?: "-"}\" " +
            "value=\"${us(checkout)}${ratio?.let { String.format(" = %.2f ×", it) } ?: ""}\" " +
            "verdict=${when { ratio == null -> "info"; ratio <= 1.5 -> "met"; else -> "missed" }}",
    )
}
