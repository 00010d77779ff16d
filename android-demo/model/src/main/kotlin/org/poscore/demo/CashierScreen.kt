package org.poscore.demo

import org.poscore.Money
import org.poscore.OrderStatus
import org.poscore.PaymentStatus
import org.poscore.PolicyPreset

/**
 * Everything the cashier app shows, as one immutable value: the Compose
 * layer renders it and nothing else. [CashierModel] rebuilds it after every
 * intent and every engine event, from the engine's own state (pending list,
 * declines, expiries, deadlines) plus what only this process knows (the
 * cart, the card in progress, the last refusal, notices).
 */
data class CashierScreen(
    val phase: Phase = Phase.STARTING,
    /** Why the engine did not open (store locked, wrong key, integrity): shown full screen. */
    val blockingError: String? = null,
    val tab: Tab = Tab.CHECKOUT,
    val cashier: String? = null,
    /** Null: no banner (online, or not known yet). */
    val banner: Banner? = null,
    val reader: ReaderPanel = ReaderPanel(),
    val cart: CartPanel = CartPanel(),
    /** The order being paid, once the cart went to checkout. */
    val checkout: CheckoutPanel? = null,
    val card: CardFlow = CardFlow.Idle,
    /** The last payment refused offline, with its rule and figures. */
    val refusal: RefusalNotice? = null,
    /** Any other error of the last action, in words. */
    val error: String? = null,
    val pending: PendingPanel = PendingPanel(),
    /** One bar for the whole backlog being forwarded; null while offline or with nothing to forward. */
    val forwarding: ForwardingBar? = null,
    /** Declined offline payments whose amount is still owed. */
    val declines: List<DeclineRow> = emptyList(),
    /** Offline payments that passed their forwarding deadline: money lost. */
    val expired: List<ExpiredRow> = emptyList(),
    val queuedReceipts: Int = 0,
    val settings: SettingsPanel = SettingsPanel(),
    /** Set while a logout (or its override) is being decided. */
    val logout: LogoutPanel? = null,
    /** What the engine told the cashier (declines, expiries, deadline warnings...), oldest first. */
    val notices: List<Notice> = emptyList(),
    val audit: AuditExport? = null,
    /** When the app should be woken to let the engine probe or expire (WorkManager), ms since the epoch. */
    val wakeUpAtMs: Long? = null,
    /** The demo's switches (network, payment service, clock, test cards); null outside demo mode. */
    val demo: DemoPanel? = null,
)

enum class Phase {
    /** The engine is opening. */
    STARTING,
    /** Open, nobody signed in: sign-in screen (the pending list stays visible). */
    SIGNED_OUT,
    /** A cashier is signed in. */
    READY,
    /** The engine could not open; [CashierScreen.blockingError] says why. Nothing was deleted. */
    BLOCKED,
    /** The model was closed. */
    CLOSED,
}

enum class Tab { CHECKOUT, PENDING, DECLINES, SETTINGS }

enum class BannerKind { NETWORK_OUTAGE, SERVICE_DISRUPTION }

/** The connectivity banner (R1): a different text for a network outage and a service disruption. */
data class Banner(
    val kind: BannerKind,
    val text: String,
    /** Whether card payments can be taken offline in this state, and within what. */
    val offlineLine: String,
    val sinceMs: Long,
)

enum class ReaderKind { SIMULATED, BLUETOOTH }

/** A reader the picker offers. */
data class ReaderOption(val id: String, val name: String, val kind: ReaderKind, val rssi: Int? = null)

enum class BluetoothAccess {
    /** Not asked yet: the picker shows "Allow Bluetooth to find readers". */
    NOT_REQUESTED,
    GRANTED,
    /** Refused: Bluetooth readers are hidden; the simulated reader (demo) still works. */
    DENIED,
}

data class ConnectedReader(
    val optionId: String,
    val kind: ReaderKind,
    val model: String,
    val serial: String,
    val firmware: String,
    val batteryPercent: Int,
    /** Whether the policy lets this model take offline payments (R11). */
    val offlineCapable: Boolean,
)

data class ReaderPanel(
    val bluetooth: BluetoothAccess = BluetoothAccess.NOT_REQUESTED,
    val options: List<ReaderOption> = emptyList(),
    val connected: ConnectedReader? = null,
    /** "Reconnecting (attempt 2)", "Battery low: 12 %"... */
    val status: String? = null,
    val error: String? = null,
)

data class CartLine(val name: String, val unit: Money, val quantity: Int, val lineTotalText: String)

data class CartPanel(
    val lines: List<CartLine> = emptyList(),
    val total: Money? = null,
    val totalText: String = "",
    /** The keypad's amount being typed, as shown ("12.50"). */
    val entry: String = "0.00",
    /** The customer's contact captured for this sale (R17), as the cashier typed it. */
    val contactEmail: String? = null,
    val contactPhone: String? = null,
)

data class CheckoutPanel(
    val orderId: String,
    val total: Money,
    val paid: Money,
    val balance: Money,
    val totalText: String,
    val paidText: String,
    val balanceText: String,
    /** The order badge (R15): payment pending, paid, card declined, expired. */
    val badge: OrderStatus,
    val badgeText: String,
    /** "card •••• 4242 40.00 USD (offline)", "cash 20.00 USD"... */
    val tenders: List<String>,
    val contactHint: String?,
    /** Nothing left to pay: the sale is done (receipt, new sale). */
    val complete: Boolean,
)

/** A card payment in progress with the reader. */
sealed interface CardFlow {
    object Idle : CardFlow

    data class WaitingForCard(
        val paymentId: String,
        val amount: Money,
        val amountText: String,
        /** Taken offline (stored, forwarded later) or authorised online now. */
        val offline: Boolean,
        /** "network outage", "service disruption"; null online. */
        val offlineReason: String?,
        val readerName: String,
        /** Collecting a declined payment's amount again (online only). */
        val collecting: Boolean = false,
    ) : CardFlow

    data class Done(
        val paymentId: String,
        val status: PaymentStatus,
        /** "Approved online: Visa •••• 4242", "Stored offline (pending), forward by tomorrow 10:30"... */
        val text: String,
    ) : CardFlow
}

/** A payment refused offline, with the rule that refused it and its figures. */
data class RefusalNotice(
    val rule: String,
    val kind: String,
    /** "Refused offline [R5]: 150.00 USD on top of 0.00 USD would exceed ..." */
    val text: String,
    val limit: Money?,
    val current: Money?,
    val attempted: Money?,
    /** "limit 100.00 USD · already on this order 0.00 USD · this payment 150.00 USD", or null. */
    val figures: String?,
)

data class PendingRow(
    val paymentId: String,
    val orderId: String,
    val amount: Money,
    val amountText: String,
    val last4: String,
    val status: PaymentStatus,
    val statusText: String,
    val timeLeftMs: Long,
    val timeLeftText: String,
    val deadlineMs: Long,
    val deadlineText: String,
)

data class SessionDeadline(
    val deadlineMs: Long,
    val deadlineText: String,
    val timeLeftMs: Long,
    val timeLeftText: String,
    /** When offline payments stop being accepted in this outage (R7), if it is still ahead or just passed. */
    val acceptanceClosesAtMs: Long?,
    val acceptanceText: String?,
)

data class PendingPanel(
    val rows: List<PendingRow> = emptyList(),
    /** Per currency, "277.00 USD". */
    val atRisk: List<Money> = emptyList(),
    val atRiskText: String = "",
    val session: SessionDeadline? = null,
)

data class ForwardingBar(
    val done: Int,
    val total: Int,
    val amountDone: Money,
    val amountTotal: Money,
    /** 0.0 to 1.0. */
    val fraction: Double,
    /** "9/10 258.50 USD of 277.00 USD" */
    val text: String,
    val finished: Boolean,
)

data class DeclineRow(
    val paymentId: String,
    val orderId: String,
    val amountDue: Money,
    val amountDueText: String,
    val reason: String,
    /** The contact captured at the sale, masked ("j***@e***.com"); null when none was captured. */
    val contactHint: String?,
    /** The full contact from the decline event, while this process has it (to call or email the customer). */
    val contact: String?,
)

data class ExpiredRow(val paymentId: String, val orderId: String, val amount: Money, val text: String)

data class SettingsPanel(
    val offlineEnabled: Boolean = false,
    /** The preset the policy was last set from in this app, if any. */
    val preset: PolicyPreset? = null,
    val perOrderLimit: Money? = null,
    val deviceLimit: Money? = null,
    val limitsText: String = "",
    val staffPermissionRequired: Boolean = false,
    val entryModes: String = "",
)

sealed interface LogoutPanel {
    /** Refused (R13): payments are pending. A manager may override, restating the money at risk. */
    data class Refused(
        val pendingCount: Long,
        val atRisk: List<Money>,
        val text: String,
        val overrideAllowed: Boolean,
    ) : LogoutPanel

    /** Allowed with an override, audited. */
    data class Overridden(val pendingCount: Long, val text: String) : LogoutPanel
}

enum class NoticeKind { DECLINE, EXPIRY, WARNING, INFO, PROBLEM }

data class Notice(val kind: NoticeKind, val text: String)

data class AuditExport(val csv: String, val rows: Int, val fileName: String)

data class DemoPanel(
    val clockText: String,
    val networkUp: Boolean,
    val serviceDown: Boolean,
    /** The simulator's test cards ("Visa, approves", "declines: insufficient funds"...). */
    val testCards: List<String>,
)
