// Not built on these machines (no Android SDK): reference code.
// What it calls (CashierIntent.Wake, CashierScreen.wakeUpAtMs) is tested on the JVM.
package org.poscore.demo.app.platform

import android.content.Context
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import java.util.concurrent.TimeUnit
import org.poscore.demo.CashierIntent
import org.poscore.demo.app.PosApplication

/**
 * Wakes the app when the engine next has something to do while the app is
 * in the background or killed: a probe of the payment service (so stored
 * payments are forwarded soon after it is back, R3) or a payment's
 * deadline (so it is expired and reported, R8).
 *
 * When: `CashierScreen.wakeUpAtMs`, which the model takes from the engine's
 * `status().nextWakeUpMs`: a retry, a deadline or a session warning, never
 * before the processor's Retry-After (in the background the engine leaves
 * probes out). While payments are pending, a second request runs as soon as
 * a network is back, so they are forwarded then rather than at the next
 * warning.
 *
 * The engine's clock is its trusted clock (ms since the epoch), not
 * `System.currentTimeMillis()`; the small difference only shifts a wake-up.
 * WorkManager may defer work in Doze: a deadline can pass before the wake-up,
 * which the engine handles the same way at the next start (the payment expires).
 */
class ForwardingWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val app = applicationContext as PosApplication
        app.model.start() // no-op when the process already opened the engine
        // Probes resume for this run, then the engine goes back to the background.
        app.model.dispatch(CashierIntent.AppForeground)
        app.model.dispatch(CashierIntent.Wake)
        app.model.dispatch(CashierIntent.AppBackground)
        val screen = app.model.screen.value
        schedule(applicationContext, screen.wakeUpAtMs, screen.pending.rows.isNotEmpty())
        return Result.success()
    }

    companion object {
        private const val NAME = "poscore-wake-up"
        private const val NETWORK_BACK = "poscore-network-back"

        /**
         * Replaces the pending wake-up with one at [atMs] (none when null) and,
         * while payments are [pending], one that runs once a network is back.
         */
        fun schedule(context: Context, atMs: Long?, pending: Boolean) {
            val work = WorkManager.getInstance(context)
            if (pending) {
                work.enqueueUniqueWork(
                    NETWORK_BACK,
                    ExistingWorkPolicy.KEEP,
                    OneTimeWorkRequestBuilder<ForwardingWorker>()
                        .setConstraints(Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build())
                        .build(),
                )
            } else {
                work.cancelUniqueWork(NETWORK_BACK)
            }
            if (atMs == null) {
                work.cancelUniqueWork(NAME)
                return
            }
            val delay = (atMs - System.currentTimeMillis()).coerceAtLeast(0)
            work.enqueueUniqueWork(
                NAME,
                ExistingWorkPolicy.REPLACE,
                // No network constraint: an expiry must happen offline too.
                OneTimeWorkRequestBuilder<ForwardingWorker>()
                    .setInitialDelay(delay, TimeUnit.MILLISECONDS)
                    .build(),
            )
        }
    }
}
