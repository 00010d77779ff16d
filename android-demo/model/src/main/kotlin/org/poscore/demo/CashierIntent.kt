package org.poscore.demo

import org.poscore.EntryMode
import org.poscore.PolicyPreset

/** What the UI (and the platform glue) tells the model. Nothing else changes its state. */
sealed interface CashierIntent {
    // --- people -----------------------------------------------------------
    data class SignIn(val staffId: String, val mayTakeOfflinePayments: Boolean) : CashierIntent
    /** Guarded (R13): refused while payments are pending. */
    object LogOut : CashierIntent
    /** A manager lets the logout go ahead, restating the money at risk (audited). */
    data class LogOutWithOverride(val managerId: String, val reason: String) : CashierIntent
    object DismissLogout : CashierIntent

    // --- platform ---------------------------------------------------------
    /** From ConnectivityManager's network callback. */
    data class NetworkChanged(val reachable: Boolean) : CashierIntent
    /** ProcessLifecycleOwner ON_START. */
    object AppForeground : CashierIntent
    /** ProcessLifecycleOwner ON_STOP: the engine goes to the background (snapshot, anchor, probes paused), the next wake-up scheduled. */
    object AppBackground : CashierIntent
    /** A timer or WorkManager woke the app: let the engine probe, forward and expire. */
    object Wake : CashierIntent
    /** The result of the BLUETOOTH_SCAN / BLUETOOTH_CONNECT permission request. */
    data class BluetoothPermission(val granted: Boolean) : CashierIntent

    // --- navigation -------------------------------------------------------
    data class ShowTab(val tab: Tab) : CashierIntent

    // --- reader -----------------------------------------------------------
    object ScanReaders : CashierIntent
    data class PickReader(val optionId: String) : CashierIntent

    // --- cart -------------------------------------------------------------
    data class AddItem(val name: String, val unitMinor: Long) : CashierIntent
    data class RemoveLine(val index: Int) : CashierIntent
    data class KeypadDigit(val digit: Int) : CashierIntent
    object KeypadClear : CashierIntent
    /** Adds the keypad's amount to the cart as one line. */
    object AddKeypadAmount : CashierIntent
    data class SetContact(val email: String?, val phone: String?) : CashierIntent

    // --- checkout ---------------------------------------------------------
    /** Turns the cart into an order (with the contact, if any). */
    object Checkout : CashierIntent
    /** Pays [amountMinor] (default: the balance) by card with the connected reader. */
    data class PayByCard(val amountMinor: Long? = null) : CashierIntent
    object CancelCard : CashierIntent
    /** Pays [amountMinor] (default: the balance) in cash: the rest of a split payment. */
    data class PayCash(val amountMinor: Long? = null) : CashierIntent
    data class RequestReceipt(val email: String?, val phone: String?) : CashierIntent
    /** Clears the finished (or abandoned) order and the cart. */
    object NewSale : CashierIntent
    object DismissMessages : CashierIntent

    // --- after the outage -------------------------------------------------
    /** Collects a declined payment's amount again, online, with the reader. */
    data class CollectAgain(val paymentId: String) : CashierIntent
    object ForwardNow : CashierIntent

    // --- settings ---------------------------------------------------------
    data class SetOfflineEnabled(val enabled: Boolean) : CashierIntent
    data class SetPreset(val preset: PolicyPreset) : CashierIntent
    /** Per-order limit (R5) and device limit (R6) in the shop's currency, minor units; null device: none. */
    data class SetLimits(val perOrderMinor: Long, val deviceMinor: Long?) : CashierIntent
    object ExportAudit : CashierIntent

    // --- demo mode only (DemoShop): the world around the till ----------------
    data class DemoSetNetwork(val up: Boolean) : CashierIntent
    data class DemoSetServiceDown(val down: Boolean) : CashierIntent
    data class DemoAdvance(val ms: Long) : CashierIntent
    /** The customer presents test card [cardIndex] (of DemoPanel.testCards) on the connected reader. */
    data class DemoPresentCard(val cardIndex: Int, val entryMode: EntryMode = EntryMode.CHIP) : CashierIntent
}
