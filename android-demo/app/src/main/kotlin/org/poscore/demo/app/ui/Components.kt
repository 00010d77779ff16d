// Not built on these machines (no Android SDK): reference code.
// Renders CashierScreen only; every decision is the model's (tested on the JVM).
package org.poscore.demo.app.ui

import androidx.compose.foundation.background
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.AlertDialog
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.Checkbox
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.unit.dp
import org.poscore.demo.Banner
import org.poscore.demo.BannerKind
import org.poscore.demo.CardFlow
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierScreen
import org.poscore.demo.LogoutPanel
import org.poscore.demo.NoticeKind
import org.poscore.demo.RefusalNotice

/** R1: a different banner (colour and text) for a network outage and a service disruption; none online. */
@Composable
fun ConnectivityBanner(banner: Banner?) {
    if (banner == null) return
    val colour = when (banner.kind) {
        BannerKind.NETWORK_OUTAGE -> Color(0xFFB3261E)
        BannerKind.SERVICE_DISRUPTION -> Color(0xFFE8A317)
    }
    Column(Modifier.fillMaxWidth().background(colour).padding(12.dp)) {
        Text(banner.text, color = Color.White, style = MaterialTheme.typography.titleSmall)
        Text(banner.offlineLine, color = Color.White, style = MaterialTheme.typography.bodySmall)
    }
}

@Composable
fun SignInScreen(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    var staff by remember { mutableStateOf("") }
    var offline by remember { mutableStateOf(true) }
    Column(Modifier.fillMaxSize().padding(24.dp), verticalArrangement = Arrangement.spacedBy(12.dp)) {
        ConnectivityBanner(screen.banner)
        Text("Sign in", style = MaterialTheme.typography.headlineSmall)
        OutlinedTextField(staff, { staff = it }, label = { Text("Staff id") })
        Row(verticalAlignment = Alignment.CenterVertically) {
            Checkbox(offline, { offline = it })
            Text("May accept offline card payments")
        }
        Button(onClick = { send(CashierIntent.SignIn(staff.trim(), offline)) }, enabled = staff.isNotBlank()) { Text("Sign in") }
        screen.logout?.let { if (it is LogoutPanel.Overridden) Text(it.text) }
        // What is waiting survives logouts and restarts: show it before anyone signs in.
        if (screen.pending.rows.isNotEmpty()) {
            Text("${screen.pending.rows.size} offline payments waiting (${screen.pending.atRiskText})")
            screen.pending.session?.let { Text("Forward by ${it.deadlineText} (${it.timeLeftText} left)") }
        }
        screen.error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
    }
}

/** The last refusal (rule and figures), the last error, and the engine's notices. */
@Composable
fun Messages(screen: CashierScreen, send: (CashierIntent) -> Unit) {
    screen.refusal?.let { RefusalCard(it) }
    screen.error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
    for (n in screen.notices.takeLast(3)) {
        val colour = when (n.kind) {
            NoticeKind.DECLINE, NoticeKind.EXPIRY, NoticeKind.PROBLEM -> MaterialTheme.colorScheme.error
            NoticeKind.WARNING -> Color(0xFF8A5A00)
            NoticeKind.INFO -> MaterialTheme.colorScheme.onSurface
        }
        Text(n.text, color = colour, style = MaterialTheme.typography.bodySmall)
    }
    if (screen.refusal != null || screen.error != null || screen.notices.isNotEmpty()) {
        TextButton(onClick = { send(CashierIntent.DismissMessages) }) { Text("Dismiss") }
    }
}

@Composable
fun RefusalCard(r: RefusalNotice) {
    Card(colors = CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.errorContainer)) {
        Column(Modifier.padding(12.dp)) {
            Text(r.text, style = MaterialTheme.typography.titleSmall)
            r.figures?.let { Text(it, style = MaterialTheme.typography.bodyMedium) }
        }
    }
}

/** "Present the card" while the reader waits; the outcome once it is confirmed. */
@Composable
fun CardDialog(card: CardFlow, send: (CashierIntent) -> Unit) {
    when (card) {
        is CardFlow.Idle -> Unit
        is CardFlow.WaitingForCard -> AlertDialog(
            onDismissRequest = {},
            title = { Text(if (card.collecting) "Collect ${card.amountText}" else "Card payment ${card.amountText}") },
            text = {
                Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
                    Text("Ask the customer to insert, tap or swipe on ${card.readerName}.")
                    Text(
                        if (card.offline) "Offline (${card.offlineReason}): stored now, forwarded when the service is back."
                        else "Online: authorised now.",
                    )
                    CircularProgressIndicator()
                }
            },
            confirmButton = {},
            dismissButton = { TextButton(onClick = { send(CashierIntent.CancelCard) }) { Text("Cancel") } },
        )
        is CardFlow.Done -> AlertDialog(
            onDismissRequest = { send(CashierIntent.DismissMessages) },
            title = { Text(card.status.name.lowercase().replaceFirstChar { it.uppercase() }) },
            text = { Text(card.text) },
            confirmButton = { TextButton(onClick = { send(CashierIntent.DismissMessages) }) { Text("OK") } },
        )
    }
}

/** R13: refused while payments are pending; a manager may override, restating the money at risk. */
@Composable
fun LogoutDialog(panel: LogoutPanel, send: (CashierIntent) -> Unit) {
    var manager by remember { mutableStateOf("") }
    var reason by remember { mutableStateOf("") }
    when (panel) {
        is LogoutPanel.Refused -> AlertDialog(
            onDismissRequest = { send(CashierIntent.DismissLogout) },
            title = { Text("Cannot log out") },
            text = {
                Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
                    Text(panel.text)
                    if (panel.overrideAllowed) {
                        Spacer(Modifier.height(4.dp))
                        Text("A manager may log out anyway; it is recorded in the audit log.")
                        OutlinedTextField(manager, { manager = it }, label = { Text("Manager id") })
                        OutlinedTextField(reason, { reason = it }, label = { Text("Reason") })
                    }
                }
            },
            confirmButton = {
                if (panel.overrideAllowed) {
                    TextButton(
                        onClick = { send(CashierIntent.LogOutWithOverride(manager.trim(), reason.trim())) },
                        enabled = manager.isNotBlank() && reason.isNotBlank(),
                    ) { Text("Override") }
                }
            },
            dismissButton = { TextButton(onClick = { send(CashierIntent.DismissLogout) }) { Text("Stay signed in") } },
        )
        is LogoutPanel.Overridden -> Unit // shown on the sign-in screen
    }
}
