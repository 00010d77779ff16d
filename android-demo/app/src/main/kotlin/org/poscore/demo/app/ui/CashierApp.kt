// Not built on these machines (no Android SDK): reference code.
// Renders CashierScreen only; every decision is the model's (tested on the JVM).
package org.poscore.demo.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.filled.List
import androidx.compose.material.icons.filled.Settings
import androidx.compose.material.icons.filled.ShoppingCart
import androidx.compose.material.icons.filled.Warning
import androidx.compose.material3.Badge
import androidx.compose.material3.BadgedBox
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.Icon
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.NavigationBar
import androidx.compose.material3.NavigationBarItem
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import org.poscore.demo.AuditExport
import org.poscore.demo.CashierIntent
import org.poscore.demo.CashierScreen
import org.poscore.demo.Phase
import org.poscore.demo.Tab

/** The whole app: one screen value in, intents out. */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun CashierApp(
    screen: CashierScreen,
    send: (CashierIntent) -> Unit,
    requestBluetooth: () -> Unit,
    share: (AuditExport) -> Unit,
) {
    screen.audit?.let { audit -> LaunchedEffect(audit) { share(audit) } }

    when (screen.phase) {
        Phase.STARTING, Phase.CLOSED -> Box(Modifier.fillMaxSize(), contentAlignment = Alignment.Center) {
            CircularProgressIndicator()
        }
        Phase.BLOCKED -> BlockedScreen(screen.blockingError ?: "The payment store did not open.")
        Phase.SIGNED_OUT -> SignInScreen(screen, send)
        Phase.READY -> Scaffold(
            topBar = {
                Column {
                    TopAppBar(title = { Text("Till · ${screen.cashier ?: ""}") })
                    ConnectivityBanner(screen.banner)
                    screen.demo?.let { DemoControls(it, screen.reader.connected != null, send) }
                }
            },
            bottomBar = {
                NavigationBar {
                    NavigationBarItem(
                        selected = screen.tab == Tab.CHECKOUT,
                        onClick = { send(CashierIntent.ShowTab(Tab.CHECKOUT)) },
                        icon = { Icon(Icons.Default.ShoppingCart, contentDescription = null) },
                        label = { Text("Checkout") },
                    )
                    NavigationBarItem(
                        selected = screen.tab == Tab.PENDING,
                        onClick = { send(CashierIntent.ShowTab(Tab.PENDING)) },
                        icon = {
                            BadgedBox(badge = { if (screen.pending.rows.isNotEmpty()) Badge { Text("${screen.pending.rows.size}") } }) {
                                Icon(Icons.Default.List, contentDescription = null)
                            }
                        },
                        label = { Text("Pending") },
                    )
                    NavigationBarItem(
                        selected = screen.tab == Tab.DECLINES,
                        onClick = { send(CashierIntent.ShowTab(Tab.DECLINES)) },
                        icon = {
                            BadgedBox(badge = { if (screen.declines.isNotEmpty()) Badge { Text("${screen.declines.size}") } }) {
                                Icon(Icons.Default.Warning, contentDescription = null)
                            }
                        },
                        label = { Text("Declines") },
                    )
                    NavigationBarItem(
                        selected = screen.tab == Tab.SETTINGS,
                        onClick = { send(CashierIntent.ShowTab(Tab.SETTINGS)) },
                        icon = { Icon(Icons.Default.Settings, contentDescription = null) },
                        label = { Text("Settings") },
                    )
                }
            },
        ) { padding ->
            Column(
                Modifier.padding(padding).padding(12.dp).fillMaxWidth(),
                verticalArrangement = Arrangement.spacedBy(8.dp),
            ) {
                Messages(screen, send)
                when (screen.tab) {
                    Tab.CHECKOUT -> CheckoutScreen(screen, send, requestBluetooth)
                    Tab.PENDING -> PendingScreen(screen, send)
                    Tab.DECLINES -> DeclinesScreen(screen, send)
                    Tab.SETTINGS -> SettingsScreen(screen, send)
                }
            }
            CardDialog(screen.card, send)
            screen.logout?.let { LogoutDialog(it, send) }
        }
    }
}

@Composable
private fun BlockedScreen(message: String) {
    Box(Modifier.fillMaxSize().padding(24.dp), contentAlignment = Alignment.Center) {
        Text(message, style = MaterialTheme.typography.titleMedium)
    }
}
