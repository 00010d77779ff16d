// Not built on these machines (no Android SDK): reference code.
// Renders CashierScreen only; every decision is the model's (tested on the JVM).
package org.poscore.demo.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierScreen
import org.poscore.demo.DemoPanel
import org.poscore.EntryMode

/** R19, B4, B5: the pending list with time left, the session deadline, the forwarding bar, the lost payments. */
@Composable
fun PendingScreen(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    val p = screen.pending
    Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
        screen.forwarding?.let { bar ->
            Card {
                Column(Modifier.padding(12.dp)) {
                    Text(if (bar.finished) "Everything forwarded" else "Forwarding", style = MaterialTheme.typography.titleSmall)
                    // One bar for the whole backlog since the outage, not for one round.
                    LinearProgressIndicator(progress = { bar.fraction.toFloat() }, modifier = Modifier.fillMaxWidth())
                    Text(bar.text)
                }
            }
        }
        p.session?.let { s ->
            Card {
                Column(Modifier.padding(12.dp)) {
                    Text("Forward by ${s.deadlineText}: ${s.timeLeftText} left", style = MaterialTheme.typography.titleSmall)
                    s.acceptanceText?.let { Text(it) }
                    Text("At risk: ${p.atRiskText}")
                }
            }
        }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("${p.rows.size} waiting", Modifier.padding(top = 12.dp))
            if (screen.banner == null && p.rows.isNotEmpty()) {
                Button(onClick = { send(CashierIntent.ForwardNow) }) { Text("Forward now") }
            }
        }
        LazyColumn(verticalArrangement = Arrangement.spacedBy(4.dp)) {
            items(p.rows, key = { it.paymentId }) { row ->
                Row(Modifier.fillMaxWidth()) {
                    Column(Modifier.weight(1f)) {
                        Text("${row.amountText} · •••• ${row.last4}")
                        Text(row.statusText, style = MaterialTheme.typography.bodySmall)
                    }
                    Column {
                        Text(row.timeLeftText)
                        Text("by ${row.deadlineText}", style = MaterialTheme.typography.bodySmall)
                    }
                }
            }
            items(screen.expired, key = { it.paymentId }) { row ->
                Text(row.text, color = MaterialTheme.colorScheme.error)
            }
        }
    }
}

/** R17, B9: declined offline payments, the customer's contact, collected again online. */
@Composable
fun DeclinesScreen(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    if (screen.declines.isEmpty()) {
        Text("No declined payment to collect.")
        return
    }
    LazyColumn(verticalArrangement = Arrangement.spacedBy(8.dp)) {
        items(screen.declines, key = { it.paymentId }) { d ->
            Card {
                Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
                    Text("Collect ${d.amountDueText}", style = MaterialTheme.typography.titleSmall)
                    Text("Declined: ${d.reason}")
                    Text("Customer: ${d.contact ?: d.contactHint ?: "no contact captured"}")
                    OutlinedButton(
                        onClick = { send(CashierIntent.CollectAgain(d.paymentId)) },
                        enabled = screen.banner == null && screen.reader.connected != null,
                    ) { Text("Collect again by card (online)") }
                }
            }
        }
    }
}

/** Demo mode's world: the network, the payment service, the clock, and the customer's card. */
@Composable
fun DemoControls(demo: DemoPanel, readerConnected: Boolean, send: (CashierIntent) -> Unit) {
    Card {
        Column(Modifier.padding(8.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text("Demo · ${demo.clockText}", style = MaterialTheme.typography.labelLarge)
            Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
                OutlinedButton(onClick = { send(CashierIntent.DemoSetNetwork(!demo.networkUp)) }) {
                    Text(if (demo.networkUp) "Cut the network" else "Network back")
                }
                OutlinedButton(onClick = { send(CashierIntent.DemoSetServiceDown(!demo.serviceDown)) }) {
                    Text(if (demo.serviceDown) "Service back" else "Service down")
                }
            }
            Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
                for ((label, ms) in listOf("+5 min" to 300_000L, "+1 h" to 3_600_000L, "+1 day" to 86_400_000L)) {
                    OutlinedButton(onClick = { send(CashierIntent.DemoAdvance(ms)) }) { Text(label) }
                }
            }
            if (readerConnected) {
                Text("Customer presents:", style = MaterialTheme.typography.labelMedium)
                demo.testCards.forEachIndexed { i, card ->
                    Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
                        Text(card, Modifier.weight(1f), style = MaterialTheme.typography.bodySmall)
                        for (mode in listOf(EntryMode.CHIP, EntryMode.CONTACTLESS)) {
                            OutlinedButton(onClick = { send(CashierIntent.DemoPresentCard(i, mode)) }) {
                                Text(mode.name.lowercase())
                            }
                        }
                    }
                }
            }
        }
    }
}
