package org.poscore.demo

import java.io.IOException
import java.net.HttpURLConnection
import java.net.URI
import java.time.ZoneId
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import org.poscore.CardReader
import org.poscore.ConnectivityStatus
import org.poscore.EntryMode
import org.poscore.PosEngine
import org.poscore.ProbeOutcome
import org.poscore.ReaderListener

/**
 * What the model needs from the world around it. The Android app supplies
 * one over the Keystore, the HTTP gateway and BluetoothGatt
 * (app/.../AndroidEnvironment.kt, not built here); [DemoShop] one over the
 * library's simulators, with no hardware and no network.
 */
interface CashierEnvironment {
    /** The shop's currency (ISO 4217). */
    val currency: String
    /** For deadlines shown as clock times. */
    val zone: ZoneId
    val readers: ReaderDirectory
    val driver: ForwardingDriver
    /** Reader authorities the shop trusts; kept when the cashier picks another preset. */
    val readerAuthorities: List<String>
    /** The demo's switches; null outside demo mode. */
    val demo: DemoControls?

    /** The wall clock the engine runs on, ms since the epoch. */
    fun nowMs(): Long

    /** Opens the engine on the app's data folder (called again after a process restart). */
    suspend fun openEngine(): PosEngine

    /** After every open: the gateway, and the first run's policy. */
    suspend fun prepare(engine: PosEngine)
}

/** Who runs forwarding, probes and expiry between the cashier's actions. */
fun interface ForwardingDriver {
    suspend fun wake(engine: PosEngine)
}

/**
 * Production: the engine's own driver (`automaticForwarding`, the default)
 * probes the service, forwards when it is back and expires payments; a
 * wake-up only makes it re-read the clock now.
 */
object EngineDriver : ForwardingDriver {
    override suspend fun wake(engine: PosEngine) = engine.nudgeForwarding()
}

/**
 * Demo and tests: the engine runs with `automaticForwarding = false` and
 * each wake-up does, at once, what the engine's driver would do over a
 * few seconds: probe the service (twice: the engine's hysteresis wants two
 * probes of a kind to change state; online too, so that a service going
 * down is seen), forward everything due once online, expire what passed
 * its deadline otherwise. Deterministic: no timer.
 */
class StepDriver(private val probe: ServiceProbe, private val probesPerWake: Int = 2) : ForwardingDriver {
    override suspend fun wake(engine: PosEngine) {
        repeat(probesPerWake) { engine.reportProbe(probe.probe()) }
        if (engine.status().connectivity is ConnectivityStatus.Online && !engine.forwardingPaused()) {
            engine.forwardNow()
        } else {
            engine.tick()
        }
    }
}

/** One status probe of the payment service (SPEC R2). */
fun interface ServiceProbe {
    suspend fun probe(): ProbeOutcome
}

/**
 * `GET <baseUrl>/v1/status` with a bearer token (docs/gateway-openapi.yaml):
 * `available` is healthy, `disrupted` or an error status unhealthy, no
 * answer unreachable. What the built-in HTTP gateway's probe does.
 */
class HttpStatusProbe(private val baseUrl: String, private val token: String, private val timeoutMs: Int = 2_000) : ServiceProbe {
    override suspend fun probe(): ProbeOutcome = withContext(Dispatchers.IO) {
        try {
            val c = URI("${baseUrl.trimEnd('/')}/v1/status").toURL().openConnection() as HttpURLConnection
            c.connectTimeout = timeoutMs
            c.readTimeout = timeoutMs
            c.setRequestProperty("Authorization", "Bearer $token")
            try {
                if (c.responseCode != 200) return@withContext ProbeOutcome.UNHEALTHY
                val body = c.inputStream.use { it.readBytes().toString(Charsets.UTF_8) }
                if (Regex("\"status\"\\s*:\\s*\"available\"").containsMatchIn(body)) {
                    ProbeOutcome.HEALTHY
                } else {
                    ProbeOutcome.UNHEALTHY
                }
            } finally {
                c.disconnect()
            }
        } catch (e: IOException) {
            ProbeOutcome.UNREACHABLE
        }
    }
}

/** Where the picker's readers come from. */
interface ReaderDirectory {
    /** The readers to offer; Bluetooth ones only when [bluetoothAllowed]. */
    suspend fun scan(bluetoothAllowed: Boolean): List<ReaderOption>

    /** Connects to one (not yet paired: the model pairs it with the engine). */
    suspend fun connect(option: ReaderOption, listener: ReaderListener): CardReader
}

/** The demo's world around the till: a network, a payment service, a clock and a customer with test cards. */
interface DemoControls {
    val networkUp: Boolean
    val serviceDown: Boolean
    /** Test card descriptions, in the order DemoPresentCard indexes them. */
    val testCards: List<String>

    fun setNetwork(up: Boolean)
    fun setServiceDown(down: Boolean)
    fun advance(ms: Long)
    /** The customer presents a test card on the reader behind [optionId]. */
    fun presentCard(optionId: String, cardIndex: Int, entryMode: EntryMode)
}
