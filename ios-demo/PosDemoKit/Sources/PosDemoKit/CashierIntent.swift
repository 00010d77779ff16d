import PosCore

/// What the UI (and the platform glue) tells the model. Nothing else changes its state.
public enum CashierIntent: Sendable {
    // people
    case signIn(staffId: String, mayTakeOfflinePayments: Bool)
    /// Guarded (R13): refused while payments are pending.
    case logOut
    /// A manager lets the logout go ahead, restating the money at risk (audited).
    case logOutWithOverride(managerId: String, reason: String)
    case dismissLogout

    // platform
    /// From NWPathMonitor.
    case networkChanged(reachable: Bool)
    /// scenePhase == .active.
    case appForeground
    /// scenePhase == .background: the engine goes to the background (snapshot,
    /// anchor, probes paused), the next wake-up scheduled.
    case appBackground
    /// A BGTask or a timer woke the app: let the engine probe, forward and expire.
    case wake
    /// CBManager's authorization, once asked.
    case bluetoothPermission(granted: Bool)

    // navigation
    case showTab(Tab)

    // reader
    case scanReaders
    case pickReader(optionId: String)

    // cart
    case addItem(name: String, unitMinor: Int64)
    case removeLine(index: Int)
    case keypadDigit(Int)
    case keypadClear
    /// Adds the keypad's amount to the cart as one line.
    case addKeypadAmount
    case setContact(email: String?, phone: String?)

    // checkout
    case checkout
    /// Pays `amountMinor` (nil: the balance) by card with the connected reader.
    case payByCard(amountMinor: Int64? = nil)
    case cancelCard
    /// Pays `amountMinor` (nil: the balance) in cash.
    case payCash(amountMinor: Int64? = nil)
    case requestReceipt(email: String?, phone: String?)
    case newSale
    case dismissMessages

    // after the outage
    case collectAgain(paymentId: String)
    case forwardNow

    // settings
    case setOfflineEnabled(Bool)
    case setPreset(PolicyPreset)
    case setLimits(perOrderMinor: Int64, deviceMinor: Int64?)
    case exportAudit

    // demo mode only (DemoShop): the world around the till
    case demoSetNetwork(up: Bool)
    case demoSetServiceDown(Bool)
    case demoAdvance(ms: Int64)
    /// The customer presents test card `cardIndex` on the connected reader.
    case demoPresentCard(cardIndex: Int, entryMode: EntryMode = .chip)
}
