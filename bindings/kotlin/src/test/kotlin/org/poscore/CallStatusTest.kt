package org.poscore

import java.nio.file.Files
import java.util.concurrent.Callable
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import kotlin.test.assertFailsWith

/**
 * The generated bindings reuse each thread's call statuses (ADR 0016):
 * whatever one call leaves in its status must never reach another call,
 * on the same thread, inside a callback, or on another thread.
 */
class CallStatusTest {
    private val dir = Files.createTempDirectory("pos-kt-status").toFile()

    /** An unknown code of three capital letters (no ISO 4217 code starts with "QQ" to "QZ"). */
    private fun code(second: Int, third: Int) = "Q${'Q' + second % 10}${'A' + third % 26}"

    /** A refused call whose error names `code`, so that a stale error shows. */
    private fun refused(code: String) {
        val e = assertFailsWith<PosException.InvalidInput> { policyPreset(PolicyPreset.SQUARE_READER, code) }
        assertTrue(e.reason.contains(code), "the error of another call: ${e.reason}")
    }

    @Test
    fun `a call after a refused one on the same thread succeeds, and each error is its own`() {
        repeat(500) { i ->
            refused(code(9, i))
            assertEquals("USD", policyPreset(PolicyPreset.SQUARE_READER, "USD").limits.single().currency)
            assertEquals(20u, defaultReconnectSettings().maxAttempts)
        }
    }

    @Test
    fun `a refused call inside a callback does not fail the call that made the callback`() {
        val caller = Thread.currentThread()
        val seen = mutableListOf<Thread>()
        val failures = mutableListOf<Throwable>()
        val file = FileKeyProvider(java.io.File(dir, "kek"))
        val keys = object : KeyProvider by file {
            override fun keyEncryptionKey(): KeyMaterial {
                seen += Thread.currentThread()
                // A call into Rust from inside the engine's open, refused. An
                // assertion error thrown here is no Exception: the generated
                // callback code would not catch it, and Rust would see the
                // callback succeed without a result.
                runCatching { refused(code(7, 0)) }.exceptionOrNull()?.let { failures += it }
                return file.keyEncryptionKey()
            }
        }
        val config = EngineConfig(Files.createTempDirectory(dir.toPath(), "engine").toString(), "till-1", "USD")
        PosEngine(config, keys).use { engine ->
            assertEquals(0UL, engine.status().pendingOfflinePayments)
        }
        failures.firstOrNull()?.let { throw it }
        // The callback ran on the thread whose call was under way.
        assertTrue(seen.isNotEmpty())
        seen.forEach { assertSame(caller, it) }
    }

    @Test
    fun `a thread's calls reuse one call status`() {
        // The pool the generated bindings carry (ADR 0016): a thread's list
        // of free statuses, by reflection (it is internal to the bindings).
        val pool = Class.forName("org.poscore.UniffiCallStatusPool")
        val instance = pool.getDeclaredField("INSTANCE").get(null)
        val field = pool.getDeclaredField("free").apply { isAccessible = true }
        val free = (field.get(instance) as ThreadLocal<*>).get() as List<*>
        // A refused call holds two at once: lifting its error frees the
        // error's buffer with a call of its own.
        refused(code(8, 0))
        val first = free.toList()
        assertTrue(first.isNotEmpty())
        repeat(10) { i ->
            policyPreset(PolicyPreset.SQUARE_READER, "USD")
            refused(code(8, i))
        }
        // The same statuses, not new ones.
        assertEquals(first.size, free.size)
        first.forEach { s -> assertTrue(free.any { it === s }, "a status was replaced") }
    }

    /** A stress test: four threads, each alternating refused and good calls. */
    @Test
    fun `threads calling at once never see each other's errors`() {
        val pool = Executors.newFixedThreadPool(4)
        try {
            val work = (0 until 4).map { t ->
                Callable {
                    repeat(300) { i ->
                        refused(code(t, i))
                        policyPreset(PolicyPreset.SQUARE_TERMINAL, "USD")
                    }
                }
            }
            pool.invokeAll(work).forEach { it.get(120, TimeUnit.SECONDS) }
        } finally {
            pool.shutdownNow()
        }
    }
}
