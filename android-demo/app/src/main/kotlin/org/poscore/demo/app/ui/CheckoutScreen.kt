// Not built on these machines (no Android SDK): reference code.
// Renders CashierScreen only; every decision is the model's (tested on the JVM).
package org.poscore.demo.app.ui

import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import org.poscore.demo.BluetoothAccess
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierScreen
import org.poscore.demo.ReaderKind
import org.poscore.demo.ReaderPanel

/** A few catalogue items, for the demo's cart. */
private val catalogue = listOf("Coffee" to 350L, "Croissant" to 280L, "Sandwich" to 850L, "Gift box" to 2_500L)

@Composable
fun CheckoutScreen(screen: CashierScreen, send: (CashierIntent) -> Unit, requestBluetooth: () -> Unit) {
    Column(Modifier.verticalScroll(rememberScrollState()), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        ReaderPicker(screen.reader, send, requestBluetooth)
        val checkout = screen.checkout
        if (checkout == null) {
            Cart(screen, send)
        } else {
            Card {
                Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(6.dp)) {
                    Text("Order ${checkout.totalText}", style = MaterialTheme.typography.titleMedium)
                    Text("Badge: ${checkout.badgeText}")
                    checkout.tenders.forEach { Text("· $it") }
                    checkout.contactHint?.let { Text("Customer: $it") }
                    Text("Left to pay: ${checkout.balanceText}", style = MaterialTheme.typography.titleSmall)
                    if (!checkout.complete) {
                        // Split tender: a card for part (the keypad's amount), the rest by card or cash.
                        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                            Button(onClick = { send(CashierIntent.PayByCard()) }, enabled = screen.reader.connected != null) {
                                Text("Card ${checkout.balanceText}")
                            }
                            OutlinedButton(onClick = { send(CashierIntent.PayCash()) }) { Text("Cash ${checkout.balanceText}") }
                        }
                        Keypad(screen.cart.entry, send)
                        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                            val part = entryMinor(screen.cart.entry)
                            OutlinedButton(onClick = { send(CashierIntent.PayByCard(part)) }, enabled = part > 0 && screen.reader.connected != null) {
                                Text("Card ${screen.cart.entry}")
                            }
                            OutlinedButton(onClick = { send(CashierIntent.PayCash(part)) }, enabled = part > 0) {
                                Text("Cash ${screen.cart.entry}")
                            }
                        }
                    } else {
                        ReceiptRow(send)
                    }
                    TextButton(onClick = { send(CashierIntent.NewSale) }) { Text(if (checkout.complete) "New sale" else "Abandon sale") }
                }
            }
        }
        Text("${screen.queuedReceipts} receipts waiting for the connection", style = MaterialTheme.typography.bodySmall)
    }
}

private fun entryMinor(entry: String): Long = entry.replace(".", "").toLongOrNull() ?: 0L

@Composable
private fun Cart(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    val cart = screen.cart
    Card {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(6.dp)) {
            Row(horizontalArrangement = Arrangement.spacedBy(6.dp)) {
                for ((name, price) in catalogue) {
                    OutlinedButton(onClick = { send(CashierIntent.AddItem(name, price)) }) { Text(name) }
                }
            }
            Keypad(cart.entry, send)
            TextButton(onClick = { send(CashierIntent.AddKeypadAmount) }) { Text("Add ${cart.entry}") }
            HorizontalDivider()
            cart.lines.forEachIndexed { i, line ->
                Row(Modifier.fillMaxWidth().clickable { send(CashierIntent.RemoveLine(i)) }) {
                    Text("${line.quantity} × ${line.name}", Modifier.weight(1f))
                    Text(line.lineTotalText)
                }
            }
            if (cart.lines.isNotEmpty()) Text("Total ${cart.totalText}", style = MaterialTheme.typography.titleMedium)
            ContactFields(cart.contactEmail, cart.contactPhone, send)
            Button(onClick = { send(CashierIntent.Checkout) }, enabled = cart.lines.isNotEmpty()) { Text("Checkout") }
        }
    }
}

/** R17: the customer's contact, so a declined payment can be collected later. */
@Composable
private fun ContactFields(email: String?, phone: String?, send: (CashierIntent) -> Unit) {
    var e by remember(email) { mutableStateOf(email ?: "") }
    var p by remember(phone) { mutableStateOf(phone ?: "") }
    Row(horizontalArrangement = Arrangement.spacedBy(6.dp)) {
        OutlinedTextField(e, { e = it; send(CashierIntent.SetContact(it, p)) }, label = { Text("Customer email") }, modifier = Modifier.weight(1f))
        OutlinedTextField(p, { p = it; send(CashierIntent.SetContact(e, it)) }, label = { Text("or phone") }, modifier = Modifier.weight(1f))
    }
}

@Composable
private fun ReceiptRow(send: (CashierIntent) -> Unit) {
    var to by remember { mutableStateOf("") }
    Row(horizontalArrangement = Arrangement.spacedBy(6.dp)) {
        OutlinedTextField(to, { to = it }, label = { Text("Receipt to email or phone") }, modifier = Modifier.weight(1f))
        TextButton(onClick = {
            val email = to.takeIf { '@' in it }
            send(CashierIntent.RequestReceipt(email, if (email == null) to else null))
        }) { Text("Send") }
    }
}

@Composable
private fun Keypad(entry: String, send: (CashierIntent) -> Unit) {
    Column {
        Text(entry, style = MaterialTheme.typography.headlineMedium)
        for (row in listOf(listOf(1, 2, 3), listOf(4, 5, 6), listOf(7, 8, 9), listOf(-1, 0, -2))) {
            Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
                for (d in row) {
                    when (d) {
                        -1 -> TextButton(onClick = { send(CashierIntent.KeypadClear) }) { Text("C") }
                        -2 -> Unit
                        else -> OutlinedButton(onClick = { send(CashierIntent.KeypadDigit(d)) }) { Text("$d") }
                    }
                }
            }
        }
    }
}

/** The reader picker: the simulated reader (demo), Bluetooth readers once the permission is granted. */
@Composable
private fun ReaderPicker(reader: ReaderPanel, send: (CashierIntent) -> Unit, requestBluetooth: () -> Unit) {
    Card {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            val c = reader.connected
            if (c != null) {
                Text("Reader: ${c.model} ${c.serial} · battery ${c.batteryPercent} % · firmware ${c.firmware}")
                if (!c.offlineCapable) Text("This model cannot take offline payments (R11).", color = MaterialTheme.colorScheme.error)
            } else {
                Text("No card reader", style = MaterialTheme.typography.titleSmall)
            }
            reader.status?.let { Text(it) }
            reader.error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
            when (reader.bluetooth) {
                BluetoothAccess.NOT_REQUESTED -> TextButton(onClick = requestBluetooth) { Text("Allow Bluetooth to find readers") }
                BluetoothAccess.DENIED -> Text("Bluetooth refused: allow it in the system settings to use a Bluetooth reader.")
                BluetoothAccess.GRANTED -> Unit
            }
            TextButton(onClick = { send(CashierIntent.ScanReaders) }) { Text("Find readers") }
            for (o in reader.options) {
                val kind = if (o.kind == ReaderKind.SIMULATED) "simulated" else "Bluetooth ${o.rssi ?: ""} dBm"
                OutlinedButton(onClick = { send(CashierIntent.PickReader(o.id)) }, modifier = Modifier.fillMaxWidth()) {
                    Text("${o.name} ($kind)")
                }
            }
        }
    }
}
