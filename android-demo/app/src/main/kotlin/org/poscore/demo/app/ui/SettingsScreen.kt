// Not built on these machines (no Android SDK): reference code.
// Renders CashierScreen only; every decision is the model's (tested on the JVM).
package org.poscore.demo.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.FilterChip
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import org.poscore.PolicyPreset
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierScreen

/** R4-R6, R12, R13, B12: offline on/off, preset, limits, logout, audit export. */
@Composable
fun SettingsScreen(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    val s = screen.settings
    Column(verticalArrangement = Arrangement.spacedBy(12.dp)) {
        Card {
            Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
                Row(verticalAlignment = Alignment.CenterVertically) {
                    Text("Offline card payments", Modifier.weight(1f))
                    Switch(checked = s.offlineEnabled, onCheckedChange = { send(CashierIntent.SetOfflineEnabled(it)) })
                }
                Text("Turning them off never discards stored payments.", style = MaterialTheme.typography.bodySmall)
                Row(horizontalArrangement = Arrangement.spacedBy(6.dp)) {
                    for ((preset, label) in listOf(
                        PolicyPreset.SQUARE_READER to "Phone + reader",
                        PolicyPreset.SQUARE_TERMINAL to "Terminal",
                        PolicyPreset.SHOPIFY_POS to "Shopify POS",
                    )) {
                        FilterChip(selected = s.preset == preset, onClick = { send(CashierIntent.SetPreset(preset)) }, label = { Text(label) })
                    }
                }
                Text("Limits: ${s.limitsText}")
                Text("Offline entry modes: ${s.entryModes}")
                if (s.staffPermissionRequired) Text("Cashiers need the offline permission (R12).")
                LimitsEditor(send)
            }
        }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(onClick = { send(CashierIntent.LogOut) }) { Text("Log out ${screen.cashier ?: ""}") }
            OutlinedButton(onClick = { send(CashierIntent.ExportAudit) }) { Text("Export audit log") }
        }
    }
}

@Composable
private fun LimitsEditor(send: (CashierIntent) -> Unit) {
    var perOrder by remember { mutableStateOf("") }
    var device by remember { mutableStateOf("") }
    Row(horizontalArrangement = Arrangement.spacedBy(6.dp), verticalAlignment = Alignment.CenterVertically) {
        OutlinedTextField(perOrder, { perOrder = it }, label = { Text("Per order (cents)") }, modifier = Modifier.weight(1f))
        OutlinedTextField(device, { device = it }, label = { Text("Device (cents)") }, modifier = Modifier.weight(1f))
        OutlinedButton(
            onClick = { send(CashierIntent.SetLimits(perOrder.toLong(), device.toLongOrNull())) },
            enabled = perOrder.toLongOrNull() != null,
        ) { Text("Set") }
    }
}
