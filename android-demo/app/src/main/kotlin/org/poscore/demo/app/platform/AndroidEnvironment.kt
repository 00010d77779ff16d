// Not built on these machines (no Android SDK): reference code.
// The interface it implements (CashierEnvironment) is exercised on the JVM by DemoShop.
package org.poscore.demo.app.platform

import android.content.Context
import java.io.File
import java.time.ZoneId
import java.util.UUID
import org.poscore.EngineConfig
import org.poscore.GatewayException
import org.poscore.MerchantAccount
import org.poscore.PosEngine
import org.poscore.TokenProvider
import org.poscore.demo.CashierEnvironment
import org.poscore.demo.DemoControls
import org.poscore.demo.EngineDriver
import org.poscore.demo.ForwardingDriver
import org.poscore.demo.ReaderDirectory
import org.poscore.demo.app.BuildConfig

/**
 * A real shop: the store in the app's files (no backup), its key from the
 * Android Keystore, the built-in HTTP gateway, the engine's own forwarding
 * driver (probes, forwarding, expiry on its timers), Bluetooth readers.
 */
class AndroidEnvironment(private val context: Context) : CashierEnvironment {
    override val currency = "USD"
    override val zone: ZoneId = ZoneId.systemDefault()
    override val readers: ReaderDirectory = BleReaderDirectory(context)
    override val driver: ForwardingDriver = EngineDriver
    override val readerAuthorities: List<String> = listOf(BuildConfig.READER_AUTHORITY).filter { it.isNotEmpty() }
    override val demo: DemoControls? = null
    val tokens = SessionTokens()

    override fun nowMs(): Long = System.currentTimeMillis()

    override suspend fun openEngine(): PosEngine =
        // `open` is the suspending form of the constructor: it does not block the caller's thread.
        PosEngine.open(
            EngineConfig(File(context.filesDir, "poscore").path, deviceId(), currency),
            KeystoreKeyProvider(context),
        )

    override suspend fun prepare(engine: PosEngine) {
        engine.useHttpGateway(BuildConfig.GATEWAY_URL, tokens, false)
        // The merchant's policy comes from the back office (setPolicy); offline stays off until then (R4).
    }

    /** 1-64 of [A-Za-z0-9._-], chosen once per installation. */
    private fun deviceId(): String {
        val prefs = context.getSharedPreferences("poscore", Context.MODE_PRIVATE)
        return prefs.getString("device-id", null) ?: ("till-" + UUID.randomUUID().toString().replace("-", "").take(16))
            .also { prefs.edit().putString("device-id", it).commit() }
    }
}

/**
 * The processor's credentials for the engine's gateway, set by the app's own
 * login to the merchant's back office. A cached token lets the engine
 * forward after an offline start (B10).
 */
class SessionTokens : TokenProvider {
    @Volatile var current: String? = null

    override fun token(account: MerchantAccount?): String =
        current ?: throw GatewayException.Unauthorized("no back-office session")

    override fun invalidate() {
        current = null
    }
}
