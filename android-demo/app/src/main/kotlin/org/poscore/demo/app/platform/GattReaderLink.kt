// Not built on these machines (no Android SDK): reference code.
// It has never talked to a radio. What is verified here is the same path with the
// simulated radio in place of BluetoothGatt: DemoShop's "Bluetooth" readers go through
// AppReaderTransport + a ReaderLink, at MTU 23, in the model's tests on the JVM.
package org.poscore.demo.app.platform

import android.annotation.SuppressLint
import android.bluetooth.BluetoothDevice
import android.bluetooth.BluetoothGatt
import android.bluetooth.BluetoothGattCallback
import android.bluetooth.BluetoothGattCharacteristic
import android.bluetooth.BluetoothGattDescriptor
import android.bluetooth.BluetoothManager
import android.bluetooth.BluetoothProfile
import android.bluetooth.le.ScanCallback
import android.bluetooth.le.ScanFilter
import android.bluetooth.le.ScanResult
import android.bluetooth.le.ScanSettings
import android.content.Context
import android.os.Build
import android.os.ParcelUuid
import java.util.UUID
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.Semaphore
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.delay
import kotlinx.coroutines.withTimeout
import org.poscore.AppReaderTransport
import org.poscore.CardReader
import org.poscore.ReaderException
import org.poscore.ReaderLink
import org.poscore.ReaderListener
import org.poscore.demo.ReaderDirectory
import org.poscore.demo.ReaderKind
import org.poscore.demo.ReaderOption

/** The reader profile's GATT service (docs/reader-profile.md, "GATT"). */
object ReaderProfile {
    val SERVICE: UUID = UUID.fromString("7c1e0001-5a3b-4c8e-9f2d-6b0a1c2d3e4f")
    /** Phone to reader: write without response. */
    val REQUEST: UUID = UUID.fromString("7c1e0002-5a3b-4c8e-9f2d-6b0a1c2d3e4f")
    /** Reader to phone: notify. */
    val NOTIFY: UUID = UUID.fromString("7c1e0003-5a3b-4c8e-9f2d-6b0a1c2d3e4f")
    val CCCD: UUID = UUID.fromString("00002902-0000-1000-8000-00805f9b34fb")
}

/**
 * The reader profile over Android's BluetoothGatt: every frame the library
 * writes goes to the request characteristic (write without response, one at
 * a time: Android allows one GATT operation in flight), every notification
 * of the notify characteristic goes to [AppReaderTransport.deliverFrame],
 * and the connection state to [AppReaderTransport.setConnected]. The library
 * does the rest (framing at the MTU, the authenticated handshake, sealing,
 * acknowledgements, reassembly, card checks).
 *
 * Permissions (BLUETOOTH_CONNECT on API 31+) are checked by the app's
 * permission flow before the model lets the cashier pick a Bluetooth reader.
 */
@SuppressLint("MissingPermission")
class GattReaderLink(private val context: Context, private val device: BluetoothDevice) : ReaderLink {
    @Volatile private var gatt: BluetoothGatt? = null
    @Volatile private var request: BluetoothGattCharacteristic? = null
    @Volatile private var transport: AppReaderTransport? = null
    private var mtu = 23
    private var ready = CompletableDeferred<Int>()
    /** Released by onCharacteristicWrite: one write in flight. */
    private val writeSlot = Semaphore(1)

    /** Connects, negotiates the MTU, subscribes to notifications, then runs the profile's version check. */
    suspend fun open(listener: ReaderListener): CardReader {
        gatt = device.connectGatt(context, false, callback, BluetoothDevice.TRANSPORT_LE)
        val negotiated = withTimeout(20_000) { ready.await() }
        val t = AppReaderTransport(this, negotiated.toUShort())
        transport = t
        t.setConnected(true)
        return t.connect(listener)
    }

    fun close() {
        gatt?.disconnect()
        gatt?.close()
        gatt = null
        transport?.setConnected(false)
    }

    /** Called on the library's worker threads; blocking until the stack takes the frame is fine. */
    override fun writeFrame(frame: ByteArray) {
        val g = gatt ?: throw ReaderException.Disconnected()
        val c = request ?: throw ReaderException.Disconnected()
        if (!writeSlot.tryAcquire(5, TimeUnit.SECONDS)) throw ReaderException.Timeout()
        val ok = if (Build.VERSION.SDK_INT >= 33) {
            g.writeCharacteristic(c, frame, BluetoothGattCharacteristic.WRITE_TYPE_NO_RESPONSE) == 0 // BluetoothStatusCodes.SUCCESS
        } else {
            @Suppress("DEPRECATION")
            run {
                c.writeType = BluetoothGattCharacteristic.WRITE_TYPE_NO_RESPONSE
                c.value = frame
                g.writeCharacteristic(c)
            }
        }
        if (!ok) {
            writeSlot.release()
            throw ReaderException.Disconnected()
        }
    }

    private val callback = object : BluetoothGattCallback() {
        override fun onConnectionStateChange(g: BluetoothGatt, status: Int, newState: Int) {
            when (newState) {
                BluetoothProfile.STATE_CONNECTED -> g.requestMtu(517)
                BluetoothProfile.STATE_DISCONNECTED -> {
                    request = null
                    writeSlot.release()
                    // The library reports Disconnected to the reader's listener and,
                    // once setConnected(true) comes back, resumes the payment in progress.
                    transport?.setConnected(false)
                    if (!ready.isCompleted) ready.completeExceptionally(ReaderException.Disconnected())
                }
            }
        }

        override fun onMtuChanged(g: BluetoothGatt, newMtu: Int, status: Int) {
            mtu = if (status == BluetoothGatt.GATT_SUCCESS) newMtu else 23
            g.discoverServices()
        }

        override fun onServicesDiscovered(g: BluetoothGatt, status: Int) {
            val service = g.getService(ReaderProfile.SERVICE)
            val req = service?.getCharacteristic(ReaderProfile.REQUEST)
            val notify = service?.getCharacteristic(ReaderProfile.NOTIFY)
            if (req == null || notify == null) {
                ready.completeExceptionally(ReaderException.Protocol("not a POS Core reader profile device"))
                return
            }
            request = req
            g.setCharacteristicNotification(notify, true)
            val cccd = notify.getDescriptor(ReaderProfile.CCCD)
            if (Build.VERSION.SDK_INT >= 33) {
                g.writeDescriptor(cccd, BluetoothGattDescriptor.ENABLE_NOTIFICATION_VALUE)
            } else {
                @Suppress("DEPRECATION")
                run {
                    cccd.value = BluetoothGattDescriptor.ENABLE_NOTIFICATION_VALUE
                    g.writeDescriptor(cccd)
                }
            }
        }

        override fun onDescriptorWrite(g: BluetoothGatt, d: BluetoothGattDescriptor, status: Int) {
            if (d.uuid != ReaderProfile.CCCD) return
            if (ready.isCompleted) {
                // A reconnection of a link already open: frames flow again.
                transport?.setConnected(true)
            } else {
                ready.complete(mtu)
            }
        }

        override fun onCharacteristicWrite(g: BluetoothGatt, c: BluetoothGattCharacteristic, status: Int) {
            writeSlot.release()
        }

        // API 33+.
        override fun onCharacteristicChanged(g: BluetoothGatt, c: BluetoothGattCharacteristic, value: ByteArray) {
            if (c.uuid == ReaderProfile.NOTIFY) transport?.deliverFrame(value.copyOf())
        }

        // API 26-32.
        @Deprecated("Deprecated in API 33")
        override fun onCharacteristicChanged(g: BluetoothGatt, c: BluetoothGattCharacteristic) {
            @Suppress("DEPRECATION")
            if (c.uuid == ReaderProfile.NOTIFY) transport?.deliverFrame(c.value.copyOf())
        }
    }
}

/**
 * The picker's Bluetooth readers: a short LE scan filtered on the profile's
 * service UUID (BlueZ and some Android stacks merge filters across apps, so
 * results are filtered again here), strongest signal first.
 */
@SuppressLint("MissingPermission")
class BleReaderDirectory(private val context: Context) : ReaderDirectory {
    private val manager = context.getSystemService(BluetoothManager::class.java)
    private val links = ConcurrentHashMap<String, GattReaderLink>()

    override suspend fun scan(bluetoothAllowed: Boolean): List<ReaderOption> {
        val scanner = manager?.adapter?.bluetoothLeScanner
        if (!bluetoothAllowed || scanner == null) return emptyList()
        val found = ConcurrentHashMap<String, ReaderOption>()
        val cb = object : ScanCallback() {
            override fun onScanResult(callbackType: Int, result: ScanResult) {
                val uuids = result.scanRecord?.serviceUuids.orEmpty()
                if (ParcelUuid(ReaderProfile.SERVICE) !in uuids) return
                val address = result.device.address
                found[address] = ReaderOption(
                    "ble:$address",
                    result.scanRecord?.deviceName ?: result.device.name ?: address,
                    ReaderKind.BLUETOOTH,
                    result.rssi,
                )
            }
        }
        val filters = listOf(ScanFilter.Builder().setServiceUuid(ParcelUuid(ReaderProfile.SERVICE)).build())
        val settings = ScanSettings.Builder().setScanMode(ScanSettings.SCAN_MODE_LOW_LATENCY).build()
        scanner.startScan(filters, settings, cb)
        try {
            delay(4_000)
        } finally {
            scanner.stopScan(cb)
        }
        return found.values.sortedByDescending { it.rssi ?: Int.MIN_VALUE }
    }

    override suspend fun connect(option: ReaderOption, listener: ReaderListener): CardReader {
        val address = option.id.removePrefix("ble:")
        links.remove(address)?.close()
        val device = manager.adapter.getRemoteDevice(address)
        val link = GattReaderLink(context, device)
        links[address] = link
        return link.open(listener)
    }
}
