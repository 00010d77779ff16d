import PosCore

/// Everything the cashier app shows, as one value: the SwiftUI layer renders
/// it and nothing else. The same shape as the Android model's CashierScreen
/// (android-demo/model/.../CashierScreen.kt), so both apps show the same
/// thing. `CashierModel` rebuilds it after every intent and engine event
/// from the engine's own state, plus what only this process knows (the cart,
/// the card in progress, the last refusal, notices).
public struct CashierScreen: Equatable, Sendable {
    public var phase: Phase = .starting
    /// Why the engine did not open (store locked, wrong key, integrity): shown full screen.
    public var blockingError: String? = nil
    public var tab: Tab = .checkout
    public var cashier: String? = nil
    /// Nil: no banner (online, or not known yet).
    public var banner: Banner? = nil
    public var reader = ReaderPanel()
    public var cart = CartPanel()
    /// The order being paid, once the cart went to checkout.
    public var checkout: CheckoutPanel? = nil
    public var card: CardFlow = .idle
    /// The last payment refused offline, with its rule and figures.
    public var refusal: RefusalNotice? = nil
    /// Any other error of the last action, in words.
    public var error: String? = nil
    public var pending = PendingPanel()
    /// One bar for the whole backlog being forwarded; nil while offline or with nothing to forward.
    public var forwarding: ForwardingBar? = nil
    /// Declined offline payments whose amount is still owed.
    public var declines: [DeclineRow] = []
    /// Offline payments that passed their forwarding deadline: money lost.
    public var expired: [ExpiredRow] = []
    public var queuedReceipts: Int = 0
    public var settings = SettingsPanel()
    public var logout: LogoutPanel? = nil
    /// What the engine told the cashier, oldest first (at most 20).
    public var notices: [Notice] = []
    public var audit: AuditExport? = nil
    /// When to wake the app (BGTaskScheduler's earliestBeginDate), ms since the epoch.
    public var wakeUpAtMs: Int64? = nil
    /// The demo's switches; nil outside demo mode.
    public var demo: DemoPanel? = nil

    public init() {}
}

public enum Phase: Equatable, Sendable {
    case starting, signedOut, ready, blocked, closed
}

public enum Tab: Equatable, Sendable { case checkout, pending, declines, settings }

public enum BannerKind: Equatable, Sendable { case networkOutage, serviceDisruption }

/// The connectivity banner (R1): a different text for a network outage and a service disruption.
public struct Banner: Equatable, Sendable {
    public var kind: BannerKind
    public var text: String
    /// Whether card payments can be taken offline in this state, and within what.
    public var offlineLine: String
    public var sinceMs: Int64
}

public enum ReaderKind: Equatable, Sendable { case simulated, bluetooth }

public struct ReaderOption: Equatable, Sendable, Identifiable {
    public var id: String
    public var name: String
    public var kind: ReaderKind
    public var rssi: Int? = nil
}

public enum BluetoothAccess: Equatable, Sendable { case notRequested, granted, denied }

public struct ConnectedReader: Equatable, Sendable {
    public var optionId: String
    public var kind: ReaderKind
    public var model: String
    public var serial: String
    public var firmware: String
    public var batteryPercent: Int
    /// Whether the policy lets this model take offline payments (R11).
    public var offlineCapable: Bool
}

public struct ReaderPanel: Equatable, Sendable {
    public var bluetooth: BluetoothAccess = .notRequested
    public var options: [ReaderOption] = []
    public var connected: ConnectedReader? = nil
    public var status: String? = nil
    public var error: String? = nil
}

public struct CartLine: Equatable, Sendable {
    public var name: String
    public var unit: Money
    public var quantity: Int
    public var lineTotalText: String
}

public struct CartPanel: Equatable, Sendable {
    public var lines: [CartLine] = []
    public var total: Money? = nil
    public var totalText: String = ""
    /// The keypad's amount being typed, as shown ("12.50").
    public var entry: String = "0.00"
    public var contactEmail: String? = nil
    public var contactPhone: String? = nil
}

public struct CheckoutPanel: Equatable, Sendable {
    public var orderId: String
    public var total: Money
    public var paid: Money
    public var balance: Money
    public var totalText: String
    public var paidText: String
    public var balanceText: String
    /// The order badge (R15).
    public var badge: OrderStatus
    public var badgeText: String
    /// "card •••• 4242 40.00 USD offline (pending)", "cash 20.00 USD"...
    public var tenders: [String]
    public var contactHint: String?
    public var complete: Bool
}

/// A card payment in progress with the reader.
public enum CardFlow: Equatable, Sendable {
    case idle
    case waitingForCard(WaitingForCard)
    case done(CardDone)

    public var waiting: WaitingForCard? { if case let .waitingForCard(w) = self { return w }; return nil }
    public var done: CardDone? { if case let .done(d) = self { return d }; return nil }
}

public struct WaitingForCard: Equatable, Sendable {
    public var paymentId: String
    public var amount: Money
    public var amountText: String
    public var offline: Bool
    /// "network outage", "service disruption"; nil online.
    public var offlineReason: String?
    public var readerName: String
    /// Collecting a declined payment's amount again (online only).
    public var collecting: Bool
}

public struct CardDone: Equatable, Sendable {
    public var paymentId: String
    public var status: PaymentStatus
    /// "Approved online: 12.50 USD on Visa •••• 4242", "Stored offline (pending): ..."
    public var text: String
}

/// A payment refused offline, with the rule that refused it and its figures.
public struct RefusalNotice: Equatable, Sendable {
    public var rule: String
    public var kind: String
    public var text: String
    public var limit: Money?
    public var current: Money?
    public var attempted: Money?
    /// "per-order limit 100.00 USD · already on this order 0.00 USD · this payment 150.00 USD", or nil.
    public var figures: String?
}

public struct PendingRow: Equatable, Sendable {
    public var paymentId: String
    public var orderId: String
    public var amount: Money
    public var amountText: String
    public var last4: String
    public var status: PaymentStatus
    public var statusText: String
    public var timeLeftMs: Int64
    public var timeLeftText: String
    public var deadlineMs: Int64
    public var deadlineText: String
}

public struct SessionDeadline: Equatable, Sendable {
    public var deadlineMs: Int64
    public var deadlineText: String
    public var timeLeftMs: Int64
    public var timeLeftText: String
    public var acceptanceClosesAtMs: Int64?
    public var acceptanceText: String?
}

public struct PendingPanel: Equatable, Sendable {
    public var rows: [PendingRow] = []
    public var atRisk: [Money] = []
    public var atRiskText: String = ""
    public var session: SessionDeadline? = nil
}

public struct ForwardingBar: Equatable, Sendable {
    public var done: Int
    public var total: Int
    public var amountDone: Money
    public var amountTotal: Money
    public var fraction: Double
    /// "9/10 258.50 USD of 277.00 USD"
    public var text: String
    public var finished: Bool
}

public struct DeclineRow: Equatable, Sendable {
    public var paymentId: String
    public var orderId: String
    public var amountDue: Money
    public var amountDueText: String
    public var reason: String
    /// The contact captured at the sale, masked; nil when none was captured.
    public var contactHint: String?
    /// The full contact from the decline event, while this process has it.
    public var contact: String?
}

public struct ExpiredRow: Equatable, Sendable {
    public var paymentId: String
    public var orderId: String
    public var amount: Money
    public var text: String
}

public struct SettingsPanel: Equatable, Sendable {
    public var offlineEnabled: Bool = false
    public var preset: PolicyPreset? = nil
    public var perOrderLimit: Money? = nil
    public var deviceLimit: Money? = nil
    public var limitsText: String = ""
    public var staffPermissionRequired: Bool = false
    public var entryModes: String = ""
}

public enum LogoutPanel: Equatable, Sendable {
    /// Refused (R13): payments are pending. A manager may override, restating the money at risk.
    case refused(pendingCount: UInt64, atRisk: [Money], text: String, overrideAllowed: Bool)
    /// Allowed with an override, audited.
    case overridden(pendingCount: UInt64, text: String)
}

public enum NoticeKind: Equatable, Sendable { case decline, expiry, warning, info, problem }

public struct Notice: Equatable, Sendable {
    public var kind: NoticeKind
    public var text: String
    public init(_ kind: NoticeKind, _ text: String) { self.kind = kind; self.text = text }
}

public struct AuditExport: Equatable, Sendable {
    public var csv: String
    public var rows: Int
    public var fileName: String
}

public struct DemoPanel: Equatable, Sendable {
    public var clockText: String
    public var networkUp: Bool
    public var serviceDown: Bool
    public var testCards: [String]
}
