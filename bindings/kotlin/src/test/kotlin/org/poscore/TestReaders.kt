package org.poscore

import java.nio.file.Files
import java.util.concurrent.atomic.AtomicInteger

// Helpers the tests share to bring an engine online and to get card reads
// from a reader the engine remembers (card reads come only from paired readers).

/** The processor's X25519 public key the simulated readers seal card data to (a test key). */
internal val testProcessorKey = ByteArray(32) { (it * 13 + 5).toByte() }

/** The Shopify preset turned on; with [trustSimulator] it lists the simulator's reader authority. */
internal fun shopifyPolicy(trustSimulator: Boolean = true): OfflinePolicy =
    policyPreset(PolicyPreset.SHOPIFY_POS, "USD").copy(
        enabled = true,
        readerAuthorities = if (trustSimulator) listOf(simulatorReaderAuthority()) else emptyList(),
    )

/** Online as the app brings it: the network is reachable and two status probes answer healthy (R2). */
internal suspend fun PosEngine.goOnline() {
    reportNetwork(true)
    reportProbe(ProbeOutcome.HEALTHY)
    val state = reportProbe(ProbeOutcome.HEALTHY)
    check(state is ConnectivityStatus.Online) { "not online: $state" }
}

/** An engine on a test clock with [policy], online (a new reader pairs only online). */
internal suspend fun onlineEngine(policy: OfflinePolicy = shopifyPolicy(), t0: Long = 1_800_000_000_000L): PosEngine {
    val dir = Files.createTempDirectory("pos-kt-reader").toString()
    val engine = PosEngine.withTestClock(EngineConfig(dir, "till-1", "USD"), FileKeyProvider(java.io.File("$dir.kek")), TestClock(t0))
    engine.setPolicy(policy)
    engine.goOnline()
    return engine
}

/** The serial of the vendor SDK's reader the tests remember (vendor route: no signature). */
internal const val VENDOR_SERIAL = "VENDOR-SN-1"

/**
 * Remembers a vendor SDK's reader as the app does: online first (a new
 * reader only online), then `rememberReader` with what the vendor reports.
 * The engine stays online; the caller goes offline.
 */
internal suspend fun PosEngine.rememberVendorReader(serial: String = VENDOR_SERIAL, model: String = "Chipper 2X BT") {
    goOnline()
    rememberReader(ReaderInfo(model, serial, "1.0", 80u))
}

private val sealedCounter = AtomicInteger()

/**
 * A card read as a vendor SDK's reader returns it: its serial, no signature,
 * and card data sealed by the vendor (unique per read, as real sealed data is).
 */
internal fun vendorCard(
    last4: String = "4242",
    mode: EntryMode = EntryMode.CHIP,
    serial: String? = VENDOR_SERIAL,
): CardRead {
    val n = sealedCounter.incrementAndGet()
    val sealed = byteArrayOf(9, 8, 7, 6, (n shr 24).toByte(), (n shr 16).toByte(), (n shr 8).toByte(), n.toByte())
    return CardRead(mode, CardNetwork.VISA, last4, "fp-$last4", "Chipper 2X BT", sealed, readerSerial = serial)
}

/** A challenge made by hand, for reader tests that confirm nothing. */
internal fun handChallenge(cents: Long, paymentId: String = "pay_" + "0123456789abcdef".repeat(2)) =
    CardChallenge(paymentId, "till-1", Money(cents, "USD"), ByteArray(16) { (it + 1).toByte() })
