// Not built on these machines (no Android SDK): reference code.
// The screen it renders (CashierScreen) and the intents it sends are the model's,
// compiled and tested on the JVM by `cargo xtask test`.
package org.poscore.demo.app

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.material3.MaterialTheme
import androidx.compose.runtime.getValue
import androidx.core.content.ContextCompat
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import org.poscore.demo.AuditExport
import org.poscore.demo.BluetoothAccess
import org.poscore.demo.CashierIntent
import org.poscore.demo.app.ui.CashierApp

/**
 * The only activity: renders the model's screen and sends its intents. The
 * one decision it makes is Android's own: asking for the Bluetooth
 * permissions when the cashier wants Bluetooth readers, and sharing the
 * audit export.
 */
class MainActivity : ComponentActivity() {
    private val model get() = (application as PosApplication).model

    private val bluetooth = registerForActivityResult(ActivityResultContracts.RequestMultiplePermissions()) { result ->
        model.send(CashierIntent.BluetoothPermission(result.isNotEmpty() && result.values.all { it }))
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // Already granted (an earlier run): the picker lists Bluetooth readers at once.
        if (model.screen.value.reader.bluetooth == BluetoothAccess.NOT_REQUESTED && bluetoothPermissions().all(::granted)) {
            model.send(CashierIntent.BluetoothPermission(true))
        }
        setContent {
            val screen by model.screen.collectAsStateWithLifecycle()
            MaterialTheme {
                CashierApp(
                    screen = screen,
                    send = { model.send(it) },
                    requestBluetooth = { bluetooth.launch(bluetoothPermissions()) },
                    share = ::share,
                )
            }
        }
    }

    private fun granted(permission: String) =
        ContextCompat.checkSelfPermission(this, permission) == PackageManager.PERMISSION_GRANTED

    /** API 31+: BLUETOOTH_SCAN + BLUETOOTH_CONNECT. API 26-30: a BLE scan needs the location permission. */
    private fun bluetoothPermissions(): Array<String> =
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            arrayOf(Manifest.permission.BLUETOOTH_SCAN, Manifest.permission.BLUETOOTH_CONNECT)
        } else {
            arrayOf(Manifest.permission.ACCESS_FINE_LOCATION)
        }

    /** The audit CSV to the share sheet (mail, drive...): ids, amounts, staff; never card data or contacts. */
    private fun share(audit: AuditExport) {
        val send = Intent(Intent.ACTION_SEND).apply {
            type = "text/csv"
            putExtra(Intent.EXTRA_SUBJECT, audit.fileName)
            putExtra(Intent.EXTRA_TEXT, audit.csv)
        }
        startActivity(Intent.createChooser(send, audit.fileName))
    }
}
