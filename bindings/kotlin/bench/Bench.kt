// The FFI cost measured from Kotlin: `cargo xtask bench` compiles this main
// with the generated bindings of the release library and runs it on the JVM.
// The same steps as core/engine/benches/checkout.rs (the Rust baseline of the
// same run, passed in as POS_BENCH_RUST_CHECKOUT_NS and the other
// POS_BENCH_RUST_* values): status() p50 with nothing pending, with 1 pending
// and with 10,000 pending; a trivial sync call (forwardingPaused) and a
// trivial async call (eventsDelivered); a whole offline checkout p50 and
// each of its three calls. Prints BENCH lines for the table.
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
import org.poscore.uniffiRustFutureContinuationCallbackImpl

private const val SERIAL = "VENDOR-SN-1"

// The JVM compiles a method only after thousands of calls: the status()
// figures are taken after this many untimed calls (and at least a second of
// them), the checkout after
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

/** One offline checkout; the time of each of its three calls. */
private suspend fun PosEngine.checkout(n: Int): LongArray {
    val total = usd(500L + (n % 50) * 37L)
    var t = System.nanoTime()
    val order = createOrder(NewOrder(null, total, null))
    val create = System.nanoTime() - t
    t = System.nanoTime()
    val d = beginCardPayment(CardPaymentRequest(order.id, null, total, null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD))
    val begin = System.nanoTime() - t
    t = System.nanoTime()
    confirmCardPayment(d.paymentId, card(n))
    return longArrayOf(create, begin, System.nanoTime() - t)
}

private fun p50(v: LongArray): Long = v.sorted()[v.size / 2]

/**
 * [CHECKOUT_WARM_UP] untimed checkouts, then [count] timed ones, numbered
 * from [first]: the p50 of the whole checkout and of each of its three calls.
 */
private suspend fun PosEngine.timedCheckouts(first: Int, count: Int): Pair<Long, List<Long>> {
    var n = first
    repeat(CHECKOUT_WARM_UP) { checkout(n++) }
    val steps = Array(3) { LongArray(count) }
    val times = LongArray(count) { i ->
        val t = System.nanoTime()
        val step = checkout(n++)
        val total = System.nanoTime() - t
        for (k in 0 until 3) steps[k][i] = step[k]
        total
    }
    return p50(times) to steps.map { p50(it) }
}

private inline fun callP50(calls: Int, f: () -> Any?): Long {
    // At least STATUS_WARM_UP calls and one second: a fast call needs the
    // time, not only the count, for the compiler to finish with it.
    val warm = System.nanoTime() + 1_000_000_000L
    var warmed = 0
    while (warmed < STATUS_WARM_UP || System.nanoTime() < warm) {
        f()
        warmed++
    }
    val times = LongArray(calls) {
        val t = System.nanoTime()
        f()
        System.nanoTime() - t
    }
    return p50(times)
}

private fun statusP50(engine: PosEngine, calls: Int): Long = callP50(calls) { engine.status() }

/** CPU ticks used so far by each thread of this process, by "tid name", from /proc. */
private fun threadTicks(): Map<String, Long> =
    (java.io.File("/proc/self/task").listFiles() ?: emptyArray()).mapNotNull { task ->
        runCatching {
            val stat = java.io.File(task, "stat").readText()
            val name = stat.substring(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
            val f = stat.substring(stat.lastIndexOf(')') + 2).split(' ')
            "${task.name} $name" to (f[11].toLong() + f[12].toLong())
        }.getOrNull()
    }.toMap()

/** The threads that used the most CPU between two [threadTicks], as "name ticks" (1 tick = 10 ms). */
private fun busiest(before: Map<String, Long>, after: Map<String, Long>): String =
    after.map { (k, v) -> k to v - (before[k] ?: 0L) }.filter { it.second > 0 }
        .sortedByDescending { it.second }.take(6).joinToString { "${it.first} ${it.second}" }

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
    val syncNone = callP50(statusCalls) { engine.forwardingPaused() }
    val asyncNone = callP50(statusCalls / 2) { runBlocking { engine.eventsDelivered() } }
    engine.checkout(0)
    val statusOne = statusP50(engine, statusCalls)
    var n = 1
    val (checkout, perCall) = engine.timedCheckouts(n, checkouts)
    n += CHECKOUT_WARM_UP + checkouts
    val (create, begin, confirm) = perCall
    val asyncInLoop = callP50(statusCalls / 2) { engine.eventsDelivered() }
    // The same checkouts once the future continuation callback keeps the
    // native threads that call it attached to the JVM (JNA detaches a
    // foreign thread after each callback by default, and attaches it again,
    // as a new java.lang.Thread, at the next one).
    com.sun.jna.Native.setCallbackThreadInitializer(
        uniffiRustFutureContinuationCallbackImpl,
        com.sun.jna.CallbackThreadInitializer(true, false, "pos-core-ffi-callback"),
    )
    val (attached, attachedPerCall) = engine.timedCheckouts(n, checkouts)
    n += CHECKOUT_WARM_UP + checkouts
    val (aCreate, aBegin, aConfirm) = attachedPerCall
    val asyncAttached = callP50(statusCalls / 2) { engine.eventsDelivered() }
    while (n < pending) engine.checkout(n++)
    check(engine.status().pendingOfflinePayments == pending.toULong())
    var ticks = threadTicks()
    val statusPending = statusP50(engine, statusCalls / 2)
    val syncPending = callP50(statusCalls) { engine.forwardingPaused() }
    val busyAfterCheckouts = busiest(ticks, threadTicks())
    Thread.sleep(2_000)
    ticks = threadTicks()
    val statusPendingAfterSleep = statusP50(engine, statusCalls / 2)
    val syncPendingAfterSleep = callP50(statusCalls) { engine.forwardingPaused() }
    val busyAfterSleep = busiest(ticks, threadTicks())
    System.gc()
    val statusPendingAfterGc = statusP50(engine, statusCalls / 2)
    engine.closeAndRelease()
    engine.close()
    dir.deleteRecursively()

    println("checkout and status() from Kotlin through the FFI (release library, JNA)")
    println("  status() p50, nothing pending: ${us(statusNone)}")
    println("  status() p50, 1 pending: ${us(statusOne)}")
    println("  forwardingPaused() p50 (sync, trivial), nothing / $pending pending: ${us(syncNone)} / ${us(syncPending)}")
    println("  eventsDelivered() p50 (async, trivial), its own runBlocking / in the caller's coroutine: ${us(asyncNone)} / ${us(asyncInLoop)}")
    println("  offline checkout p50 of $checkouts: ${us(checkout)} (create ${us(create)}, begin ${us(begin)}, confirm ${us(confirm)})")
    println("  status() p50, $pending pending: ${us(statusPending)}; 2 s later: ${us(statusPendingAfterSleep)}; after System.gc(): ${us(statusPendingAfterGc)}")
    println("  forwardingPaused() p50, $pending pending, 2 s later: ${us(syncPendingAfterSleep)}")
    println("  busiest threads (CPU ticks) over the status() calls right after the checkouts: $busyAfterCheckouts")
    println("  the same, 2 s later: $busyAfterSleep")
    val rustStep = { k: String -> System.getenv("POS_BENCH_RUST_${k}_NS")?.toLongOrNull()?.let { us(it) } ?: "-" }
    println(
        "BENCH figure=\"Kotlin: checkout calls p50 (create / begin / confirm)\" target=\"-\" " +
            "baseline=\"Rust ${rustStep("CREATE")} / ${rustStep("BEGIN")} / ${rustStep("CONFIRM")}\" " +
            "value=\"${us(create)} / ${us(begin)} / ${us(confirm)}\" verdict=info",
    )
    println(
        "BENCH figure=\"Kotlin: a trivial call p50, sync (forwardingPaused) / async (eventsDelivered, in the caller's coroutine)\" " +
            "target=\"-\" baseline=\"Rust async (block_on) ${rustStep("ASYNC")}\" " +
            "value=\"${us(syncNone)} / ${us(asyncInLoop)}\" verdict=info",
    )
    for ((what, ns) in listOf("nothing pending" to statusNone, "1 pending" to statusOne, "$pending pending" to statusPending)) {
        println(
            "BENCH figure=\"Kotlin: status() p50, $what\" target=\"<= 20 µs\" baseline=\"-\" " +
                "value=\"${us(ns)}\" verdict=${if (ns <= 20_000) "met" else "missed"}",
        )
    }
    println("  offline checkout p50, callback threads kept attached: ${us(attached)} (create ${us(aCreate)}, begin ${us(aBegin)}, confirm ${us(aConfirm)}); eventsDelivered() ${us(asyncAttached)}")
    val aRatio = rust?.let { attached.toDouble() / it }
    println(
        "BENCH figure=\"Kotlin: offline checkout p50, callback threads kept attached to the JVM (CallbackThreadInitializer, set by this bench)\" " +
            "target=\"<= 1.5 × Rust\" baseline=\"${rust?.let { "Rust ${us(it)}" } ?: "-"}\" " +
            "value=\"${us(attached)}${aRatio?.let { String.format(" = %.2f ×", it) } ?: ""} (create ${us(aCreate)} / begin ${us(aBegin)} / confirm ${us(aConfirm)}; eventsDelivered ${us(asyncAttached)})\" " +
            "verdict=${when { aRatio == null -> "info"; aRatio <= 1.5 -> "met"; else -> "missed" }}",
    )
    val ratio = rust?.let { checkout.toDouble() / it }
    println(
        "BENCH figure=\"Kotlin: offline checkout p50 (create, begin, confirm)\" target=\"<= 1.5 × Rust\" " +
            "baseline=\"${rust?.let { "Rust ${us(it)}" } ?: "-"}\" " +
            "value=\"${us(checkout)}${ratio?.let { String.format(" = %.2f ×", it) } ?: ""}\" " +
            "verdict=${when { ratio == null -> "info"; ratio <= 1.5 -> "met"; else -> "missed" }}",
    )
}
