// A program that depends on POS Core the way an app does: through the
// pos-core-jvm jar alone (plus kotlin-stdlib, kotlinx-coroutines-core and
// JNA). `cargo xtask test` (kotlin stage) and `cargo xtask package` compile
// and run it against the jar; neither gives it a library path, so JNA finds
// libpos_ffi.so inside the jar (`linux-x86-64/`). Not part of the library.
package com.example.till

import com.sun.jna.NativeLibrary
import java.nio.file.Files
import java.security.SecureRandom
import java.util.concurrent.ConcurrentHashMap
import kotlinx.coroutines.runBlocking
import org.poscore.EngineConfig
import org.poscore.KeyMaterial
import org.poscore.KeyProvider
import org.poscore.Money
import org.poscore.NewOrder
import org.poscore.OrderStatus
import org.poscore.PosEngine
import org.poscore.StaffSession

/** Keys held in memory for the life of the process: enough for this check. */
class MemoryKeys : KeyProvider {
    private val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
    private val anchors = ConcurrentHashMap<String, ByteArray>()

    override fun keyEncryptionKey() = KeyMaterial("consumer-kek", key.copyOf())

    override fun saveAnchor(storeId: String, anchor: ByteArray) {
        anchors[storeId] = anchor.copyOf()
    }

    override fun loadAnchor(storeId: String): ByteArray? = anchors[storeId]?.copyOf()
}

fun main() = runBlocking {
    val dir = Files.createTempDirectory("pos-consumer")
    try {
        PosEngine.open(EngineConfig(dir.toString(), "till-1", "USD"), MemoryKeys()).use { engine ->
            engine.signIn(StaffSession("cashier-1", mayTakeOfflinePayments = false))
            val connectivity = engine.reportNetwork(false) // the shop is offline
            val order = engine.createOrder(NewOrder(null, Money(1_250, "USD"), null))
            val paid = engine.addCash(order.id, Money(1_250, "USD"))
            val status = engine.status()
            println("consumer: engine ${status.version}, connectivity $connectivity")
            println("consumer: order ${paid.id} ${paid.status}, paid ${paid.paid.minorUnits} of ${paid.total.minorUnits} ${paid.total.currency}")
            // Where JNA loaded the library from (a copy it extracted from the jar).
            println("consumer: library ${NativeLibrary.getInstance("pos_ffi").file}")
            check(paid.status == OrderStatus.PAID) { "the cash order is ${paid.status}, not PAID" }
            engine.shutdown()
        }
        println("consumer: ok")
    } finally {
        dir.toFile().deleteRecursively()
    }
}
