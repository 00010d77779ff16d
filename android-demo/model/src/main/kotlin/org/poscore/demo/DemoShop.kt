package org.poscore.demo

import java.io.File
import java.time.ZoneId
import java.time.ZoneOffset
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.launch
import org.poscore.AppReaderTransport
import org.poscore.CardReader
import org.poscore.EngineConfig
import org.poscore.EntryMode
import org.poscore.KeyProvider
import org.poscore.PolicyPreset
import org.poscore.PosEngine
import org.poscore.ProbeOutcome
import org.poscore.ReaderLink
import org.poscore.ReaderListener
import org.poscore.SimulatedProcessor
import org.poscore.SimulatedRadio
import org.poscore.SimulatedReader
import org.poscore.TestClock
import org.poscore.policyPreset
import org.poscore.simulatorReaderAuthority
import org.poscore.simulatorTestCards

/**
 * Demo mode: the till with no hardware and no network, like `cargo xtask
 * demo`. A virtual clock ([TestClock]) that moves only when told, the
 * library's processor simulator on loopback (its status endpoint is probed
 * as the engine would; [setNetwork] false makes every probe unreachable),
 * and simulated card readers: one connected directly, and "Bluetooth"
 * readers reached through [AppReaderTransport] over the simulated radio,
 * the same path the app's BluetoothGatt glue takes (GattReaderLink.kt).
 *
 * The shop outlives [CashierModel]s: closing a model and starting a new one
 * on the same shop is a process restart (same folder, same keys, same
 * clock; the readers are reconnected on new links).
 */
class DemoShop(
    val dataDir: File,
    private val keys: KeyProvider,
    val preset: PolicyPreset = PolicyPreset.SQUARE_READER,
    seed: ULong = 2026uL,
    startMs: Long = OPENING_MS,
    override val zone: ZoneId = ZoneOffset.UTC,
) : CashierEnvironment, DemoControls, AutoCloseable {
    companion object {
        /** 2026-11-24 08:00 UTC, the shop opens (as in the CLI demo). */
        const val OPENING_MS = 1_795_507_200_000L
        const val DEVICE_ID = "demo-till-1"
        const val SIMULATED_ID = "sim:SIM-READER-1"
    }

    val clock = TestClock(startMs)
    val processor: SimulatedProcessor = SimulatedProcessor.start(seed)
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.IO)
    private val http = HttpStatusProbe(processor.baseUrl(), processor.token())
    private val cards = simulatorTestCards()
    private val readerModel = policyPreset(preset, "USD").offlineReaders.firstOrNull() ?: "Simulated Reader"

    override val currency = "USD"
    override var networkUp = true
        private set
    override var serviceDown = false
        private set
    override val testCards: List<String> = cards.map { "${it.description} (•••• ${it.pan.takeLast(4)})" }
    override val readerAuthorities = listOf(simulatorReaderAuthority())
    override val demo: DemoControls get() = this
    override val readers: ReaderDirectory = Readers()

    /** The demo's network is simulated: while it is down, nothing is reachable. */
    override val driver = StepDriver(ServiceProbe { if (!networkUp) ProbeOutcome.UNREACHABLE else http.probe() })

    override fun nowMs(): Long = clock.wallMs()

    override suspend fun openEngine(): PosEngine =
        // Forwarding, probes and expiry run in the StepDriver's wake-ups, not on timers;
        // one request at a time, so that the simulator's seeded faults hit the same payments every run.
        PosEngine.withTestClock(EngineConfig(dataDir.path, DEVICE_ID, currency, 1u, false), keys, clock)

    override suspend fun prepare(engine: PosEngine) {
        processor.attach(engine)
        // The first run sets the merchant's policy; later runs keep the stored one.
        if (simulatorReaderAuthority() !in engine.policy().readerAuthorities) {
            engine.setPolicy(policyPreset(preset, currency).copy(enabled = true, readerAuthorities = readerAuthorities))
        }
    }

    override fun setNetwork(up: Boolean) {
        networkUp = up
    }

    override fun setServiceDown(down: Boolean) {
        serviceDown = down
        processor.setOutage(down)
    }

    override fun advance(ms: Long) = clock.advanceMs(ms.coerceAtLeast(0).toULong())

    override fun presentCard(optionId: String, cardIndex: Int, entryMode: EntryMode) {
        val c = cards.getOrNull(cardIndex) ?: throw IllegalArgumentException("No test card $cardIndex.")
        val hw = hardware[optionId] ?: throw IllegalArgumentException("Reader $optionId is not connected.")
        hw.sim.presentCard(c.pan, c.expiry, c.network, entryMode)
    }

    /** The index of the first test card with [outcome] ("approve", "insufficient_funds", "stolen_card"...) and, optionally, these last four digits. */
    fun cardIndex(outcome: String, last4: String? = null): Int =
        cards.indexOfFirst { it.outcome == outcome && (last4 == null || it.pan.endsWith(last4)) }
            .also { require(it >= 0) { "no test card $outcome ${last4 ?: ""}" } }

    override fun close() {
        hardware.values.forEach { it.close() }
        hardware.clear()
        scope.cancel()
        processor.close()
        clock.close()
    }

    /** A simulated reader device, and the app-side transport when it is reached "over Bluetooth". */
    private class Hardware(val sim: SimulatedReader, val transport: AppReaderTransport?, val pump: Job?) {
        fun close() {
            pump?.cancel()
            transport?.close()
            sim.close()
        }
    }

    private val hardware = java.util.concurrent.ConcurrentHashMap<String, Hardware>()

    private inner class Readers : ReaderDirectory {
        override suspend fun scan(bluetoothAllowed: Boolean): List<ReaderOption> {
            val direct = ReaderOption(SIMULATED_ID, "Simulated reader SIM-READER-1", ReaderKind.SIMULATED)
            if (!bluetoothAllowed) return listOf(direct)
            // What a BLE scan filtered on the profile's service UUID would find, strongest first.
            val ble = listOf(
                ReaderOption("ble:SIM-BT-9", "$readerModel SIM-BT-9", ReaderKind.BLUETOOTH, -81),
                ReaderOption("ble:SIM-BT-7", "$readerModel SIM-BT-7", ReaderKind.BLUETOOTH, -58),
            ).sortedByDescending { it.rssi }
            return listOf(direct) + ble
        }

        override suspend fun connect(option: ReaderOption, listener: ReaderListener): CardReader {
            hardware.remove(option.id)?.close()
            val serial = option.id.substringAfter(':')
            return when (option.kind) {
                ReaderKind.SIMULATED -> {
                    val sim = SimulatedReader(readerModel, serial, 87u, processor.processorKey(), 185u)
                    hardware[option.id] = Hardware(sim, null, null)
                    sim.connect(listener)
                }
                ReaderKind.BLUETOOTH -> {
                    // BLE 4.0's smallest MTU: every message is split into 20-byte frames.
                    val sim = SimulatedReader(readerModel, serial, 64u, processor.processorKey(), 23u)
                    val radio = sim.radio()
                    val transport = AppReaderTransport(RadioLink(radio), 23u)
                    val pump = scope.launch {
                        // The notify characteristic's notifications, as GattReaderLink delivers them.
                        while (true) {
                            val frame = radio.receive() ?: break
                            transport.deliverFrame(frame)
                        }
                        transport.setConnected(false)
                    }
                    hardware[option.id] = Hardware(sim, transport, pump)
                    transport.connect(listener)
                }
            }
        }
    }

    /** Writes to the request characteristic, here the simulated radio. */
    private class RadioLink(private val radio: SimulatedRadio) : ReaderLink {
        override fun writeFrame(frame: ByteArray) = radio.send(frame)
    }
}
