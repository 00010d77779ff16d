package org.poscore

import java.nio.file.Files
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import kotlin.test.assertFailsWith

class EngineTest {
    private val dir = Files.createTempDirectory("pos-kt").toFile()
    private val keys = FileKeyProvider(java.io.File(dir, "kek"))

    private fun config(deviceId: String = "till-1", currency: String = "USD") =
        EngineConfig(Files.createTempDirectory(dir.toPath(), "engine").toString(), deviceId, currency)

    @Test
    fun `bad configuration fails with a typed exception`() {
        val empty = assertFailsWith<PosException.InvalidConfig> { PosEngine(config(deviceId = ""), keys) }
        assertTrue(empty.reason.contains("device_id"), empty.reason)
        val currency = assertFailsWith<PosException.InvalidConfig> { PosEngine(config(currency = "XYZ"), keys) }
        assertTrue(currency.reason.contains("XYZ"), currency.reason)
    }

    @Test
    fun `open suspends instead of blocking, and reopens the same store`() = runBlocking {
        val cfg = config()
        PosEngine.open(cfg, keys).use { engine ->
            assertEquals("till-1", engine.status().deviceId)
            engine.closeAndRelease()
        }
        // The same store again, and a bad configuration as a typed exception.
        PosEngine.open(cfg, keys).use { engine -> assertEquals(0UL, engine.status().pendingOfflinePayments) }
        assertFailsWith<PosException.InvalidConfig> { PosEngine.open(config(deviceId = ""), keys) }
        Unit
    }

    @Test
    fun `status reports version, unknown connectivity and no payments`() {
        PosEngine(config(), keys).use { engine ->
            val status = engine.status()
            assertTrue(status.version.isNotEmpty())
            assertEquals("till-1", status.deviceId)
            assertEquals("USD", status.currency)
            assertEquals(ConnectivityStatus.Unknown, status.connectivity)
            assertEquals(0UL, status.pendingOfflinePayments)
        }
    }

    @Test
    fun `async call works from a coroutine`() = runBlocking {
        PosEngine(config(), keys).use { engine ->
            val state = engine.reportNetwork(false)
            assertTrue(state is ConnectivityStatus.NetworkOutage, "$state")
            assertEquals(state, engine.status().connectivity)
        }
    }

    @Test
    fun `eight concurrent async calls all complete`() = runBlocking {
        PosEngine(config(), keys).use { engine ->
            val results = (1..8).map { i ->
                async(Dispatchers.Default) { engine.reportNetwork(i % 2 == 0) }
            }.awaitAll()
            assertEquals(8, results.size)
            val final = engine.status().connectivity
            assertTrue(final is ConnectivityStatus.Online || final is ConnectivityStatus.NetworkOutage, "$final")
        }
    }

    @Test
    fun `events arrive off the caller thread`() = runBlocking {
        PosEngine(config(), keys).use { engine ->
            val events = LinkedBlockingQueue<Pair<PosEvent, Thread>>()
            val subscription = engine.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) {
                    events.put(event to Thread.currentThread())
                }
            })
            val (first, thread) = events.poll(30, TimeUnit.SECONDS)!!
            assertTrue(first is PosEvent.Snapshot, "$first")
            assertNotEquals(Thread.currentThread(), thread)
            engine.reportNetwork(false)
            val (change, _) = events.poll(30, TimeUnit.SECONDS)!!
            change as PosEvent.ConnectivityChanged
            assertEquals(ConnectivityStatus.Unknown, change.from)
            assertTrue(change.to is ConnectivityStatus.NetworkOutage)
            assertTrue(change.banner!!.isNotEmpty())
            subscription.cancel()
            subscription.close()
        }
    }

    @Test
    fun `events flow completes after shutdown`() = runBlocking {
        val engine = PosEngine(config(), keys)
        val subscribed = CompletableDeferred<Unit>()
        val collected = async(Dispatchers.Default) {
            engine.events().onEach { if (it is PosEvent.Snapshot) subscribed.complete(Unit) }.toList()
        }
        subscribed.await()
        engine.reportNetwork(false)
        engine.shutdown()
        val got = collected.await()
        assertEquals(3, got.size, "$got")
        assertTrue(got[0] is PosEvent.Snapshot, "$got")
        assertTrue(got[1] is PosEvent.ConnectivityChanged, "$got")
        assertEquals(PosEvent.Closed, got[2])
        engine.close()
    }

    @Test
    fun `shutdown is idempotent and later calls fail with a typed exception`() = runBlocking {
        val engine = PosEngine(config(), keys)
        engine.shutdown()
        engine.shutdown()
        assertFailsWith<PosException.Closed> { engine.status() }
        assertFailsWith<PosException.Closed> { runBlocking { engine.reportNetwork(true) } }
        // Kotlin's own close() frees the native handle; it is idempotent too.
        engine.close()
        engine.close()
        assertFailsWith<IllegalStateException> { engine.status() }
        Unit
    }

    /**
     * A lone UTF-16 surrogate cannot be encoded as UTF-8: the generated code throws
     * `MalformedInputException` before the call reaches Rust. It is a programming error,
     * not a `PosException`, and the engine is unchanged and usable.
     */
    @Test
    fun `a lone surrogate in a string throws MalformedInputException, not a PosException`() {
        PosEngine(config(), keys).use { engine ->
            // A CharacterCodingException (java.nio), which PosException is not.
            assertFailsWith<java.nio.charset.MalformedInputException> {
                engine.signIn(StaffSession("cashier-\uD800", true))
            }
            assertEquals(null, engine.status().signedIn)
            engine.signIn(StaffSession("cashier-1", true))
            assertEquals("cashier-1", engine.status().signedIn)
        }
    }
}
