// Not built on these machines (no Android SDK): reference code.
// The logic it drives (CashierModel) is compiled and tested on the JVM by `cargo xtask test`.
package org.poscore.demo.app

import android.app.Application
import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import java.io.File
import java.time.ZoneId
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.launch
import org.poscore.demo.CashierEnvironment
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierModel
import org.poscore.demo.DemoShop
import org.poscore.demo.app.platform.AndroidEnvironment
import org.poscore.demo.app.platform.ForwardingWorker
import org.poscore.demo.app.platform.KeystoreKeyProvider

/**
 * One CashierModel per process, shared by the activity and the WorkManager
 * worker. The platform's signals become intents: the network callback
 * (NetworkChanged), the process lifecycle (AppForeground / AppBackground,
 * which also schedules the next wake-up).
 */
class PosApplication : Application() {
    lateinit var model: CashierModel
        private set
    private var demoShop: DemoShop? = null
    private val appScope = CoroutineScope(SupervisorJob() + Dispatchers.Default)

    override fun onCreate() {
        super.onCreate()
        model = CashierModel(environment())
        // The engine opens off the main thread; the screen shows STARTING until then.
        appScope.launch { model.start() }
        watchNetwork()
        ProcessLifecycleOwner.get().lifecycle.addObserver(object : DefaultLifecycleObserver {
            override fun onStart(owner: LifecycleOwner) {
                model.send(CashierIntent.AppForeground)
            }

            override fun onStop(owner: LifecycleOwner) {
                appScope.launch {
                    model.dispatch(CashierIntent.AppBackground) // snapshot, anchor, probes paused
                    demoShop?.let { saveDemoClock(it.nowMs()) }
                    val screen = model.screen.value
                    ForwardingWorker.schedule(this@PosApplication, screen.wakeUpAtMs, screen.pending.rows.isNotEmpty())
                }
            }
        })
    }

    private fun environment(): CashierEnvironment =
        if (BuildConfig.DEMO_MODE) {
            // The demo's virtual clock goes on from where the last process left it.
            DemoShop(
                File(filesDir, "demo-store"),
                KeystoreKeyProvider(this, "demo"),
                startMs = getSharedPreferences("demo", Context.MODE_PRIVATE).getLong("clock", DemoShop.OPENING_MS),
                zone = ZoneId.systemDefault(),
            ).also { demoShop = it }
        } else {
            AndroidEnvironment(this)
        }

    private fun saveDemoClock(ms: Long) {
        getSharedPreferences("demo", Context.MODE_PRIVATE).edit().putLong("clock", ms).apply()
    }

    /** ConnectivityManager's default network: validated internet or not (the engine's R1 input). */
    private fun watchNetwork() {
        if (BuildConfig.DEMO_MODE) return // the demo's network is a switch on screen
        val cm = getSystemService(ConnectivityManager::class.java)
        val request = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .build()
        cm.registerNetworkCallback(request, object : ConnectivityManager.NetworkCallback() {
            override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {
                model.send(CashierIntent.NetworkChanged(caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)))
            }

            override fun onLost(network: Network) {
                val active = cm.activeNetwork?.let { cm.getNetworkCapabilities(it) }
                model.send(CashierIntent.NetworkChanged(active?.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED) == true))
            }

            override fun onUnavailable() {
                model.send(CashierIntent.NetworkChanged(false))
            }
        })
        // The state at start, before any callback.
        val now = cm.activeNetwork?.let { cm.getNetworkCapabilities(it) }
        model.send(CashierIntent.NetworkChanged(now?.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED) == true))
    }
}
