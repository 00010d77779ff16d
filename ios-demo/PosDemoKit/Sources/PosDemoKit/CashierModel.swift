import Foundation
import PosCore

/// The cashier app's state and decisions, in plain Swift: the SwiftUI layer
/// renders `screen` (or iterates `screens()`) and calls `send`; the platform
/// glue sends the network, lifecycle, permission and wake-up intents.
/// Intents run one at a time, in order; after each one (and after each
/// engine event) the screen is rebuilt from the engine's state, so a new
/// process shows the same pending list, declines and expiries.
///
/// Nothing here needs Apple frameworks: the same actor runs in the iOS app
/// and in the Linux XCTest run of `cargo xtask test`, against the real
/// library. The Android app's model (android-demo/model) has the same design.
public actor CashierModel {
    private let env: CashierEnvironment
    /// What the app shows now.
    public private(set) var screen: CashierScreen
    private var watchers: [UUID: AsyncStream<CashierScreen>.Continuation] = [:]
    /// The last queued piece of work: intents, card results and event refreshes run after it.
    private var tail: Task<Void, Never>?

    private var engine: PosEngine?
    private var subscription: Subscription?
    private let events = Inbox<PosEvent>()
    private let readerEvents = Inbox<ReaderEvent>()
    private var closed = false
    /// A network report that came before the engine was open.
    private var earlyNetwork: Bool?

    // What only this process knows.
    private var phaseOverride: Phase? = .starting
    private var blockingError: String?
    private var tab: Tab = .checkout
    private var bluetooth: BluetoothAccess = .notRequested
    private var readerOptions: [ReaderOption] = []
    private var reader: CardReader?
    private var connected: ConnectedReader?
    private var readerStatus: String?
    private var readerError: String?
    private struct Line { var name: String; var unitMinor: Int64; var quantity: Int }
    private var cart: [Line] = []
    private var digits = ""
    private var contactEmail: String?
    private var contactPhone: String?
    private var orderId: String?
    private var card: CardFlow = .idle
    private var cardTask: Task<Void, Never>?
    private var cancelRequested = false
    private var refusal: RefusalNotice?
    private var error: String?
    private var logout: LogoutPanel?
    private var notices: [Notice] = []
    private var audit: AuditExport?
    private var preset: PolicyPreset?
    /// The engine's own banner texts (`connectivityChanged.banner`), by kind.
    private var bannerTexts: [BannerKind: String] = [:]
    /// Full contacts from decline events (the store shows only a masked hint).
    private var declineContacts: [String: String] = [:]
    /// The backlog the forwarding bar measures: every payment seen unsettled since the last fully settled one.
    private var backlog: [(id: String, amount: Money)] = []

    public init(env: CashierEnvironment) {
        self.env = env
        var s = CashierScreen()
        s.demo = CashierModel.demoPanel(env)
        screen = s
    }

    // MARK: public API

    /// The screen as it changes: the current one first, then each new one.
    public func screens() -> AsyncStream<CashierScreen> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<CashierScreen>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.yield(screen)
        if closed { continuation.finish() } else { watchers[id] = continuation }
        continuation.onTermination = { [weak self] _ in Task { await self?.unwatch(id) } }
        return stream
    }

    private func unwatch(_ id: UUID) { watchers[id] = nil }

    /// Opens the engine (a new process does the same: same folder, same pending list).
    public func start() async { await enqueue { await self.open() }.value }

    /// Handles `intent` and rebuilds the screen; returns when both are done.
    @discardableResult
    public func dispatch(_ intent: CashierIntent) async -> CashierScreen {
        await enqueue { await self.run(intent) }.value
        return screen
    }

    /// For the UI: fire and forget.
    public nonisolated func send(_ intent: CashierIntent) {
        Task { await self.dispatch(intent) }
    }

    /// Waits until the card in progress (if any) is read and confirmed or given up.
    public func awaitIdle() async { await cardTask?.value }

    /// Closes the engine and the reader link (the app's process ends).
    public func stop() async {
        await enqueue {
            self.closed = true
            self.cardTask?.cancel()
            self.reader?.cancel()
            self.subscription?.cancel()
            self.subscription = nil
            self.reader = nil
            if let e = self.engine {
                await e.closeAndRelease()
                e.close()
            }
            self.engine = nil
            self.phaseOverride = .closed
            var s = self.screen
            s.phase = .closed
            self.publish(s)
            self.watchers.values.forEach { $0.finish() }
            self.watchers.removeAll()
        }.value
    }

    @discardableResult
    private func enqueue(_ work: @escaping () async -> Void) -> Task<Void, Never> {
        let previous = tail
        let task = Task { await previous?.value; await work() }
        tail = task
        return task
    }

    private func publish(_ s: CashierScreen) {
        screen = s
        for c in watchers.values { c.yield(s) }
    }

    /// An engine event came (on the engine's events thread): one refresh for a burst.
    fileprivate func eventArrived() {
        enqueue {
            self.events.refreshDone()
            if !self.closed { await self.refresh() }
        }
    }

    private func open() async {
        guard engine == nil, !closed else { return }
        do {
            let e = try await env.openEngine()
            engine = e
            subscription = try e.subscribe(listener: EngineListener(model: self, inbox: events))
            try await env.prepare(engine: e)
            phaseOverride = nil
            if let up = env.demo?.networkUp ?? earlyNetwork { _ = try await e.reportNetwork(reachable: up) }
            try await env.driver.wake(engine: e)
        } catch let x as PosError {
            phaseOverride = .blocked
            blockingError = openError(x)
        } catch {
            phaseOverride = .blocked
            blockingError = "The payment store did not open: \(error)"
        }
        await refresh()
    }

    private func run(_ intent: CashierIntent) async {
        do {
            try await handle(intent)
        } catch let x as PosError {
            shown(x)
        } catch let x as ReaderError {
            error = readerProblem(x)
        } catch let x as CashierProblem {
            error = x.message
        } catch {
            self.error = "\(error)"
        }
        await refresh()
    }

    // MARK: intents

    private func need() throws -> PosEngine {
        guard let e = engine else { throw CashierProblem("The payment store is not open.") }
        return e
    }

    private func require(_ ok: Bool, _ message: String) throws {
        if !ok { throw CashierProblem(message) }
    }

    private func demoControls() throws -> DemoControls {
        guard let d = env.demo else { throw CashierProblem("Not in demo mode.") }
        return d
    }

    private var cardInProgress: Bool { card.waiting != nil }

    private func handle(_ intent: CashierIntent) async throws {
        switch intent {
        case let .signIn(staffId, may):
            try need().signIn(staff: StaffSession(staffId: staffId, mayTakeOfflinePayments: may))
            logout = nil
        case .logOut:
            try await logOut(nil)
        case let .logOutWithOverride(managerId, reason):
            var atRisk = currentAtRisk()
            if case let .refused(_, refusedAtRisk, _, _)? = logout { atRisk = refusedAtRisk }
            try await logOut(ActionOverride(staffId: managerId, reason: reason, acknowledgedAtRisk: atRisk))
        case .dismissLogout:
            logout = nil

        // The platform may speak before the engine is open: the last
        // network report is kept for the open, the rest waits for it.
        case let .networkChanged(reachable):
            if let e = engine {
                _ = try await e.reportNetwork(reachable: reachable)
                try await env.driver.wake(engine: e)
            } else {
                earlyNetwork = reachable
            }
        case .appForeground:
            if let e = engine {
                try e.onForeground()
                try await env.driver.wake(engine: e)
            }
        case .wake:
            if let e = engine { try await env.driver.wake(engine: e) }
        case .appBackground:
            // A snapshot the next start opens from, the rollback anchor saved, probes paused.
            try await engine?.onBackground()
        case let .bluetoothPermission(granted):
            bluetooth = granted ? .granted : .denied
            readerOptions = try await env.readers.scan(bluetoothAllowed: bluetooth == .granted)

        case let .showTab(t):
            tab = t

        case .scanReaders:
            readerOptions = try await env.readers.scan(bluetoothAllowed: bluetooth == .granted)
        case let .pickReader(optionId):
            try await pickReader(optionId)

        case let .addItem(name, unitMinor):
            try require(unitMinor > 0, "An item needs a price.")
            if let i = cart.firstIndex(where: { $0.name == name && $0.unitMinor == unitMinor }) {
                cart[i].quantity += 1
            } else {
                cart.append(Line(name: name, unitMinor: unitMinor, quantity: 1))
            }
        case let .removeLine(index):
            if cart.indices.contains(index) { cart.remove(at: index) }
        case let .keypadDigit(d):
            try require((0...9).contains(d), "Not a digit.")
            if digits.count < 9 && !(digits.isEmpty && d == 0) { digits += String(d) }
        case .keypadClear:
            digits = ""
        case .addKeypadAmount:
            let minor = Int64(digits) ?? 0
            try require(minor > 0, "Type an amount first.")
            cart.append(Line(name: "Amount", unitMinor: minor, quantity: 1))
            digits = ""
        case let .setContact(email, phone):
            contactEmail = email.flatMap(Self.nonBlank)
            contactPhone = phone.flatMap(Self.nonBlank)

        case .checkout:
            try await checkout()
        case let .payByCard(amountMinor):
            try await payByCard(amountMinor)
        case .cancelCard:
            if cardInProgress {
                cancelRequested = true
                reader?.cancel()
            }
        case let .payCash(amountMinor):
            let e = try need()
            guard let order = orderId else { throw CashierProblem("Check out the cart first.") }
            let balance = try e.order(orderId: order).balance
            _ = try await e.addCash(orderId: order, amount: Money(minorUnits: amountMinor ?? balance.minorUnits, currency: env.currency))
            refusal = nil
        case let .requestReceipt(email, phone):
            try await requestReceipt(email, phone)
        case .newSale:
            try require(!cardInProgress, "A card payment is in progress.")
            cart.removeAll()
            digits = ""
            contactEmail = nil
            contactPhone = nil
            orderId = nil
            card = .idle
            refusal = nil
            error = nil
        case .dismissMessages:
            refusal = nil
            error = nil
            notices.removeAll()
            audit = nil
            if card.done != nil { card = .idle }

        case let .collectAgain(paymentId):
            try await collectAgain(paymentId)
        case .forwardNow:
            let e = try need()
            guard case .online = try e.status().connectivity else {
                throw CashierProblem("Offline: payments are forwarded as soon as the service is back.")
            }
            _ = try await e.forwardNow()

        case let .setOfflineEnabled(on):
            let e = try need()
            var p = try e.policy()
            p.enabled = on
            try await e.setPolicy(policy: p)
        case let .setPreset(next):
            let e = try need()
            let now = try e.policy()
            var p = try policyPreset(preset: next, currencyCode: env.currency)
            p.enabled = now.enabled
            var authorities = now.readerAuthorities
            for a in env.readerAuthorities where !authorities.contains(a) { authorities.append(a) }
            p.readerAuthorities = authorities
            try await e.setPolicy(policy: p)
            preset = next
        case let .setLimits(perOrderMinor, deviceMinor):
            let e = try need()
            var p = try e.policy()
            var limits = p.limits.first { $0.currency == env.currency }
                ?? CurrencyLimits(currency: env.currency, perPayment: nil, perOrder: perOrderMinor, deviceAmount: deviceMinor,
                                  deviceCount: nil, perCard: nil, warnPercent: 80)
            limits.perOrder = perOrderMinor
            limits.deviceAmount = deviceMinor
            p.limits = p.limits.filter { $0.currency != env.currency } + [limits]
            try await e.setPolicy(policy: p)
        case .exportAudit:
            let e = try need()
            let csv = try e.exportAuditCsv()
            let stamp = Fmt.formatter("yyyyMMdd-HHmm", env.timeZone).string(from: Fmt.date(env.nowMs()))
            let rows = csv.split(whereSeparator: \.isNewline).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.count - 1
            audit = AuditExport(csv: csv, rows: rows, fileName: "poscore-audit-\(try e.status().deviceId)-\(stamp).csv")

        case let .demoSetNetwork(up):
            let demo = try demoControls()
            let e = try need()
            demo.setNetwork(up: up)
            _ = try await e.reportNetwork(reachable: up)
            try await env.driver.wake(engine: e)
        case let .demoSetServiceDown(down):
            let demo = try demoControls()
            let e = try need()
            demo.setServiceDown(down)
            try await env.driver.wake(engine: e)
        case let .demoAdvance(ms):
            let demo = try demoControls()
            let e = try need()
            demo.advance(ms: ms)
            try await env.driver.wake(engine: e)
        case let .demoPresentCard(cardIndex, entryMode):
            let demo = try demoControls()
            guard let r = connected else { throw CashierProblem("Pick a reader first.") }
            try demo.presentCard(optionId: r.optionId, cardIndex: cardIndex, entryMode: entryMode)
        }
    }

    private static func nonBlank(_ s: String) -> String? {
        let t = s.trimmingCharacters(in: .whitespaces)
        return t.isEmpty ? nil : t
    }

    private func logOut(_ override: ActionOverride?) async throws {
        let e = try need()
        do {
            switch try await e.guardedAction(action: .logOut, override: override) {
            case .allowed:
                logout = nil
            case let .overridden(pendingCount, atRisk):
                logout = .overridden(
                    pendingCount: pendingCount,
                    text: "Logged out by \(override?.staffId ?? "a manager") with \(pendingCount) payments pending "
                        + "(\(Fmt.moneys(atRisk)) at risk); recorded in the audit log.")
            }
            // The cashier's sale in progress goes with them.
            cart.removeAll()
            orderId = nil
            card = .idle
        } catch let PosError.ActionRefused(_, pendingCount, atRisk) {
            logout = .refused(
                pendingCount: pendingCount, atRisk: atRisk,
                text: "Cannot log out: \(pendingCount) offline payments are not forwarded yet (\(Fmt.moneys(atRisk)) at risk).",
                overrideAllowed: try e.policy().pendingOverrideAllowed)
        }
    }

    private func pickReader(_ optionId: String) async throws {
        let e = try need()
        guard let option = readerOptions.first(where: { $0.id == optionId }) else {
            throw CashierProblem("No reader \(optionId): scan again.")
        }
        reader?.cancel()
        reader = nil
        connected = nil
        readerStatus = nil
        readerError = nil
        let r = try await env.readers.connect(option: option, listener: ReaderEvents(inbox: readerEvents))
        let info: ReaderInfo
        do {
            info = try await r.pair(engine: e)
        } catch let x as ReaderError {
            readerError = readerProblem(x)
            return
        }
        // The simulated radios reconnect by themselves; an app transport reports its own state.
        try? r.reconnectAutomatically(settings: defaultReconnectSettings())
        reader = r
        connected = ConnectedReader(
            optionId: option.id, kind: option.kind, model: info.model, serial: info.serial, firmware: info.firmware,
            batteryPercent: Int(info.batteryPercent), offlineCapable: try e.readerMayTakeOfflinePayments(model: info.model))
    }

    private func checkout() async throws {
        let e = try need()
        try require(!cardInProgress, "A card payment is in progress.")
        try require(orderId == nil, "This sale is already checked out.")
        let total = cart.reduce(Int64(0)) { $0 + $1.unitMinor * Int64($1.quantity) }
        try require(total > 0, "The cart is empty.")
        let contact = contactEmail == nil && contactPhone == nil
            ? nil : try CustomerContact(email: contactEmail, phone: contactPhone)
        orderId = try await e.createOrder(order: NewOrder(orderId: nil, total: Money(minorUnits: total, currency: env.currency), contact: contact)).id
        refusal = nil
        error = nil
    }

    private func payByCard(_ amountMinor: Int64?) async throws {
        let e = try need()
        guard let order = orderId else { throw CashierProblem("Check out the cart first.") }
        try require(!cardInProgress, "A card payment is in progress.")
        guard reader != nil else { throw CashierProblem("Pick a card reader first.") }
        let amount = Money(minorUnits: try amountMinor ?? e.order(orderId: order).balance.minorUnits, currency: env.currency)
        refusal = nil
        error = nil
        let decision = try await e.beginCardPayment(request: CardPaymentRequest(
            orderId: order, paymentId: nil, amount: amount, tip: nil, behaviour: .preferOnline, tender: .card))
        waitForCard(decision, amount, collecting: false)
    }

    private func collectAgain(_ paymentId: String) async throws {
        let e = try need()
        try require(!cardInProgress, "A card payment is in progress.")
        guard reader != nil else { throw CashierProblem("Pick a card reader first.") }
        guard let p = try e.listPayments().first(where: { $0.id == paymentId && $0.status == .declined }) else {
            throw CashierProblem("No declined payment \(paymentId).")
        }
        let balance = try e.order(orderId: p.orderId).balance
        refusal = nil
        error = nil
        do {
            // An online card payment for what the order still owes (R17, B9).
            let decision = try await e.beginBalancePayment(orderId: p.orderId)
            waitForCard(decision, balance, collecting: true)
        } catch PosError.OnlineRequired {
            error = "Collecting a declined payment needs the connection: try again once online."
        }
    }

    /// Shows "present the card" and reads it in the background; confirming waits for this model's turn.
    private func waitForCard(_ decision: PaymentDecision, _ amount: Money, collecting: Bool) {
        guard let r = reader, let e = engine else { return }
        var offline = false
        var reason: String?
        if case let .offline(why) = decision.route {
            offline = true
            reason = Fmt.offlineReason(why)
        }
        card = .waitingForCard(WaitingForCard(
            paymentId: decision.paymentId, amount: amount, amountText: Fmt.money(amount), offline: offline,
            offlineReason: reason, readerName: connected.map { "\($0.model) \($0.serial)" } ?? "reader", collecting: collecting))
        cancelRequested = false
        // Every entry mode is offered to the customer: the engine, not the
        // reader, refuses what the policy does not take offline (with its rule).
        let modes: [EntryMode] = [.chip, .contactless, .swipe, .manual]
        cardTask = Task {
            let read: Result<CardRead, Error>
            do {
                read = .success(try await r.takeCard(challenge: decision.challenge, entryModes: modes, offline: offline))
            } catch {
                read = .failure(error)
            }
            await self.enqueue {
                if self.engine === e {
                    await self.finishCard(e, decision, read)
                    await self.refresh()
                }
            }.value
        }
    }

    private func finishCard(_ e: PosEngine, _ decision: PaymentDecision, _ read: Result<CardRead, Error>) async {
        let id = decision.paymentId
        let cardRead: CardRead
        switch read {
        case let .success(c):
            cardRead = c
        case let .failure(x):
            try? await e.cancelCardPayment(paymentId: id)
            card = .idle
            if !cancelRequested {
                error = (x as? ReaderError).map(readerProblem) ?? "The card was not read: \(x)"
            }
            return
        }
        do {
            let p = try await e.confirmCardPayment(paymentId: id, card: cardRead)
            card = .done(CardDone(paymentId: p.id, status: p.status, text: doneText(p, decision.route)))
        } catch {
            try? await e.cancelCardPayment(paymentId: id)
            card = .idle
            if let x = error as? PosError { shown(x) } else { self.error = "\(error)" }
        }
    }

    private func doneText(_ p: PaymentView, _ route: PaymentRoute) -> String {
        let c = "\(Fmt.network(p.network)) •••• \(p.last4)"
        switch p.status {
        case .approved:
            return "Approved\(route == .online ? " online" : ""): \(Fmt.money(p.amount)) on \(c)"
        case .declined:
            return "Declined (\(p.declineReason.map(Fmt.decline) ?? "declined")): ask for another card"
        case .pending:
            return "Stored offline (pending): \(Fmt.money(p.amount)) on \(c), forward by \(Fmt.clock(p.deadlineMs, now: env.nowMs(), zone: env.timeZone))"
        default:
            return "\(Fmt.status(p.status)): \(Fmt.money(p.amount)) on \(c)"
        }
    }

    private func requestReceipt(_ email: String?, _ phone: String?) async throws {
        let e = try need()
        guard let order = orderId else { throw CashierProblem("No sale to send a receipt for.") }
        let contact = try CustomerContact(email: email.flatMap(Self.nonBlank), phone: phone.flatMap(Self.nonBlank))
        let channel: ReceiptChannel = contact.email() != nil ? .email(recipient: contact) : .sms(recipient: contact)
        _ = try await e.requestReceipt(orderId: order, channel: channel)
        var online = false
        if case .online = try e.status().connectivity { online = true }
        notices.append(Notice(.info, online ? "Receipt on its way." : "Receipt queued: it is sent when the service is back."))
    }

    // MARK: errors

    private func shown(_ e: PosError) {
        switch e {
        case let .Refused(rule, kind, detail, limit, current, attempted):
            refusal = refusalNotice(rule, kind, detail, limit, current, attempted)
        case .OnlineRequired: error = "This payment needs the payment service, which cannot be reached."
        case .NotSignedIn: error = "Sign in first."
        case .ReaderNotPaired: error = "This card was not read by a paired reader: pair the reader again."
        case let .InvalidInput(reason): error = "Invalid input: \(reason)"
        case let .InvalidPolicy(reason): error = "These settings are not valid: \(reason)"
        case let .ActionRefused(detail, _, _): error = detail
        case .StoreLocked: error = "The phone is locked: unlock it to reach the payment store."
        default: error = "\(e)"
        }
    }

    private func refusalNotice(_ rule: String, _ kind: String, _ detail: String, _ limit: Money?, _ current: Money?,
                               _ attempted: Money?) -> RefusalNotice {
        let labels: (String, String, String)
        switch kind {
        case "PerOrderLimit": labels = ("per-order limit", "already on this order", "this payment")
        case "DeviceAmountLimit": labels = ("device limit", "already stored on this device", "this payment")
        case "PerPaymentLimit": labels = ("per-payment limit", "current", "this payment")
        default: labels = ("limit", "current", "attempted")
        }
        let parts = [
            limit.map { "\(labels.0) \(Fmt.money($0))" },
            current.map { "\(labels.1) \(Fmt.money($0))" },
            attempted.map { "\(labels.2) \(Fmt.money($0))" },
        ].compactMap { $0 }
        return RefusalNotice(rule: rule, kind: kind, text: "Refused offline [\(rule)]: \(detail)", limit: limit,
                             current: current, attempted: attempted,
                             figures: parts.isEmpty ? nil : parts.joined(separator: " · "))
    }

    private func readerProblem(_ e: ReaderError) -> String {
        switch e {
        case .NewReaderOffline: return "A new reader can only be paired online: connect once, then it works offline too."
        case .UntrustedReader: return "This reader's certificate is not from a trusted maker."
        case .Timeout: return "The reader did not answer in time."
        case .Disconnected: return "The reader is disconnected."
        case let .Refused(code): return "The reader refused: \(code)"
        case let .PairingFailed(detail): return "Pairing failed: \(detail)"
        default: return "Reader problem: \(e)"
        }
    }

    private func openError(_ e: PosError) -> String {
        switch e {
        case .StoreLocked: return "The phone is locked: unlock it to open the payment store. Nothing is lost."
        case .WrongKey: return "This device's key does not open the payment store. Do not delete the app: contact support."
        case let .StoreIntegrity(reason, _, _):
            return "The payment store cannot be trusted (\(reason)). It is kept as it is: do not delete the app, contact support."
        case let .AccountMismatch(stored, configured): return "The payment store belongs to \(stored), not \(configured)."
        default: return "The payment store did not open: \(e)"
        }
    }

    // MARK: the screen

    private func currentAtRisk() -> [Money] {
        ((try? engine?.status().totals) ?? []).filter { $0.pendingCount > 0 }.map { $0.pendingAmount }
    }

    private static func demoPanel(_ env: CashierEnvironment) -> DemoPanel? {
        env.demo.map { d in
            DemoPanel(clockText: Fmt.day(env.nowMs(), zone: env.timeZone), networkUp: d.networkUp,
                      serviceDown: d.serviceDown, testCards: d.testCards)
        }
    }

    private func drainEvents() {
        for ev in events.drain() {
            switch ev {
            case let .connectivityChanged(_, to, _, banner):
                var kind: BannerKind?
                if case .networkOutage = to { kind = .networkOutage }
                if case .serviceDisruption = to { kind = .serviceDisruption }
                if let kind, let banner { bannerTexts[kind] = banner }
            case let .paymentDeclined(n):
                var who: String?
                if let c = n.contact {
                    if let full = c.email() ?? c.phone() { declineContacts[n.paymentId] = full }
                    who = c.hint()
                }
                notices.append(Notice(.decline, "Declined (\(Fmt.decline(n.reason))): collect \(Fmt.money(n.amountDue)) "
                    + (who.map { "from \($0)" } ?? "(no contact captured)")))
            case let .paymentExpired(_, _, amount):
                notices.append(Notice(.expiry, "A payment passed its forwarding deadline: \(Fmt.money(amount)) lost"))
            case let .paymentOutcomeUnknown(_, _, amount):
                notices.append(Notice(.warning, "\(Fmt.money(amount)): the processor may have it; waiting for its answer"))
            case let .sessionWarning(kind, thresholdMs, _, _):
                let text: String
                switch kind {
                case "deadline_approaching":
                    text = "Forwarding deadline in \(thresholdMs.map { Fmt.duration(Int64($0)) } ?? "a short while") or less: reconnect to forward"
                case "acceptance_window_closed":
                    text = "The offline window closed: no more offline card payments in this outage"
                default:
                    text = "Offline payments: \(kind.replacingOccurrences(of: "_", with: " "))"
                }
                notices.append(Notice(.warning, text))
            case let .limitNear(_, warnPercent, total, limit, _, _):
                var text = "Offline total near the device limit (\(warnPercent) %)"
                if let total, let limit { text += ": \(Fmt.money(total)) of \(Fmt.money(limit))" }
                notices.append(Notice(.warning, text))
            case let .forwardingBlocked(reason):
                notices.append(Notice(.problem, "Forwarding is blocked (\(reason)): payments wait"))
            case .forwardingUnblocked:
                notices.append(Notice(.info, "Forwarding resumed"))
            case let .anchorSaveFailed(_, behind):
                notices.append(Notice(.problem, "The store's rollback anchor was not saved (\(behind) records behind)"))
            case let .storeVerificationFailed(reason):
                notices.append(Notice(.problem, "The store failed its check: \(reason)"))
            default:
                break
            }
            if notices.count > 20 { notices.removeFirst(notices.count - 20) }
        }
        for ev in readerEvents.drain() {
            switch ev {
            case .paired, .reconnected: readerStatus = nil
            case .disconnected: readerStatus = "Reader disconnected"
            case let .reconnecting(attempt): readerStatus = "Reconnecting to the reader (attempt \(attempt))"
            case let .reconnectFailed(attempts): readerStatus = "Reader lost after \(attempts) attempts: pick it again"
            case let .lowBattery(percent):
                readerStatus = "Reader battery low: \(percent) %"
                connected?.batteryPercent = Int(percent)
            }
        }
    }

    private func refresh() async {
        guard let e = engine else {
            drainEvents()
            var s = CashierScreen()
            s.phase = phaseOverride ?? .starting
            s.blockingError = blockingError
            s.demo = Self.demoPanel(env)
            publish(s)
            return
        }
        await e.eventsDelivered()
        drainEvents()
        do {
            publish(try build(e))
        } catch {
            var s = screen
            s.error = "The screen could not be refreshed: \(error)"
            publish(s)
        }
    }

    private func build(_ e: PosEngine) throws -> CashierScreen {
        let now = env.nowMs()
        let status = try e.status()
        let policy = try e.policy()
        let payments = try e.listPayments()
        // A new preset may list other reader models (R11).
        if let c = connected { connected?.offlineCapable = try e.readerMayTakeOfflinePayments(model: c.model) }
        var s = CashierScreen()
        s.phase = phaseOverride ?? (status.signedIn == nil ? .signedOut : .ready)
        s.blockingError = blockingError
        s.tab = tab
        s.cashier = status.signedIn
        s.banner = banner(status, policy, now)
        s.reader = ReaderPanel(bluetooth: bluetooth, options: readerOptions, connected: connected, status: readerStatus, error: readerError)
        s.cart = cartPanel()
        s.checkout = try orderId.map { try checkoutPanel(e, $0, payments) }
        s.card = card
        s.refusal = refusal
        s.error = error
        s.pending = pendingPanel(status, payments, now)
        s.forwarding = forwardingBar(status, payments)
        s.declines = try declines(e, payments)
        s.expired = payments.filter { $0.status == .expired }.map {
            ExpiredRow(paymentId: $0.id, orderId: $0.orderId, amount: $0.amount,
                       text: "\(Fmt.money($0.amount)) lost: not forwarded before \(Fmt.clock($0.deadlineMs, now: now, zone: env.timeZone))")
        }
        s.queuedReceipts = Int(try e.queuedReceiptCount())
        s.settings = settingsPanel(policy)
        s.logout = logout
        s.notices = notices
        s.audit = audit
        s.wakeUpAtMs = wakeUpAt(status)
        s.demo = Self.demoPanel(env)
        return s
    }

    private func banner(_ status: EngineStatus, _ policy: OfflinePolicy, _ now: Int64) -> Banner? {
        let kind: BannerKind
        let since: Int64
        switch status.connectivity {
        case let .networkOutage(s): kind = .networkOutage; since = s
        case let .serviceDisruption(s): kind = .serviceDisruption; since = s
        default: return nil
        }
        // The engine's default texts (pos-rules Banner::default_text), for a
        // state this process has no event for (it started in it).
        let text = bannerTexts[kind] ?? (kind == .networkOutage
            ? "You are offline. Connect to the internet to take payments."
            : "Service disruption: offline payments enabled.")
        let causeAllowed = kind == .networkOutage ? policy.offlineOnNetworkOutage : policy.offlineOnServiceDisruption
        let closes = status.acceptanceClosesAtMs
        let perOrder = policy.limits.first { $0.currency == env.currency }?.perOrder
        let line: String
        if !policy.enabled {
            line = "Offline card payments are off: cash only until the connection is back."
        } else if !causeAllowed {
            line = "Offline card payments are not allowed in this kind of outage: cash only."
        } else if let closes, now >= closes {
            line = "The offline window closed at \(Fmt.clock(closes, now: now, zone: env.timeZone)): cash only until the connection is back."
        } else {
            var l = "Card payments are stored offline"
            if let perOrder { l += ", up to \(Fmt.money(Money(minorUnits: perOrder, currency: env.currency))) per order" }
            if let closes { l += ", until \(Fmt.clock(closes, now: now, zone: env.timeZone))" }
            line = l + "."
        }
        return Banner(kind: kind, text: text, offlineLine: line, sinceMs: since)
    }

    private func cartPanel() -> CartPanel {
        let total = cart.reduce(Int64(0)) { $0 + $1.unitMinor * Int64($1.quantity) }
        let money = { (m: Int64) in Money(minorUnits: m, currency: self.env.currency) }
        return CartPanel(
            lines: cart.map { CartLine(name: $0.name, unit: money($0.unitMinor), quantity: $0.quantity,
                                       lineTotalText: Fmt.money(money($0.unitMinor * Int64($0.quantity)))) },
            total: cart.isEmpty ? nil : money(total),
            totalText: cart.isEmpty ? "" : Fmt.money(money(total)),
            entry: Fmt.entry(digits, env.currency),
            contactEmail: contactEmail,
            contactPhone: contactPhone)
    }

    private func checkoutPanel(_ e: PosEngine, _ id: String, _ payments: [PaymentView]) throws -> CheckoutPanel {
        let o = try e.order(orderId: id)
        let byId = Dictionary(payments.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let tenders: [String] = o.tenders.map { t in
            switch t {
            case let .cash(amount): return "cash \(Fmt.money(amount))"
            case let .offlineCard(paymentId, amount):
                let p = byId[paymentId]
                return "card\(p.map { " •••• \($0.last4)" } ?? "") \(Fmt.money(amount)) offline (\(p.map { Fmt.status($0.status) } ?? "stored"))"
            case let .onlineCard(_, amount): return "card \(Fmt.money(amount)) online"
            }
        }
        return CheckoutPanel(
            orderId: o.id, total: o.total, paid: o.paid, balance: o.balance, totalText: Fmt.money(o.total),
            paidText: Fmt.money(o.paid), balanceText: Fmt.money(o.balance), badge: o.status, badgeText: Fmt.badge(o.status),
            tenders: tenders, contactHint: o.contactHint, complete: o.balance.minorUnits == 0)
    }

    private func unsettled(_ s: PaymentStatus) -> Bool {
        s == .pending || s == .forwarding || s == .failedToForward || s == .outcomeUnknown
    }

    private func pendingPanel(_ status: EngineStatus, _ payments: [PaymentView], _ now: Int64) -> PendingPanel {
        let zone = env.timeZone
        let rows = payments.filter { unsettled($0.status) }.map { p in
            PendingRow(paymentId: p.id, orderId: p.orderId, amount: p.amount, amountText: Fmt.money(p.amount), last4: p.last4,
                       status: p.status, statusText: Fmt.status(p.status), timeLeftMs: p.timeLeftMs,
                       timeLeftText: Fmt.duration(p.timeLeftMs), deadlineMs: p.deadlineMs,
                       deadlineText: Fmt.clock(p.deadlineMs, now: now, zone: zone))
        }
        let atRisk = status.totals.filter { $0.pendingCount > 0 }.map { $0.pendingAmount }
        var session: SessionDeadline?
        if !rows.isEmpty, let deadline = status.nextDeadlineMs {
            let left = status.timeLeftMs ?? (deadline - now)
            let closes = status.acceptanceClosesAtMs
            session = SessionDeadline(
                deadlineMs: deadline, deadlineText: Fmt.clock(deadline, now: now, zone: zone), timeLeftMs: left,
                timeLeftText: Fmt.duration(left), acceptanceClosesAtMs: closes,
                acceptanceText: closes.map {
                    now < $0 ? "Offline payments accepted until \(Fmt.clock($0, now: now, zone: zone))"
                        : "Offline acceptance closed at \(Fmt.clock($0, now: now, zone: zone))"
                })
        }
        return PendingPanel(rows: rows, atRisk: atRisk, atRiskText: Fmt.moneys(atRisk), session: session)
    }

    private func forwardingBar(_ status: EngineStatus, _ payments: [PaymentView]) -> ForwardingBar? {
        let byId = Dictionary(payments.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let settledId = { (id: String) in byId[id].map { !self.unsettled($0.status) } ?? true }
        let open = payments.filter { unsettled($0.status) }
        // A new backlog starts with the first unsettled payment after a fully settled one.
        if backlog.allSatisfy({ settledId($0.id) }) && open.contains(where: { p in !backlog.contains { $0.id == p.id } }) {
            backlog.removeAll()
        }
        for p in open where !backlog.contains(where: { $0.id == p.id }) { backlog.append((p.id, p.amount)) }
        guard !backlog.isEmpty, case .online = status.connectivity else { return nil }
        let mine = { (m: Money) in m.currency == self.env.currency ? m.minorUnits : 0 }
        let done = backlog.filter { settledId($0.id) }
        let amountDone = Money(minorUnits: done.reduce(0) { $0 + mine($1.amount) }, currency: env.currency)
        let amountTotal = Money(minorUnits: backlog.reduce(0) { $0 + mine($1.amount) }, currency: env.currency)
        return ForwardingBar(
            done: done.count, total: backlog.count, amountDone: amountDone, amountTotal: amountTotal,
            fraction: Double(done.count) / Double(backlog.count),
            text: "\(done.count)/\(backlog.count) \(Fmt.money(amountDone)) of \(Fmt.money(amountTotal))",
            finished: done.count == backlog.count)
    }

    private func declines(_ e: PosEngine, _ payments: [PaymentView]) throws -> [DeclineRow] {
        try payments.filter { $0.status == .declined }.compactMap { p in
            let o = try e.order(orderId: p.orderId)
            guard o.balance.minorUnits > 0 else { return nil }
            let due = Money(minorUnits: min(o.balance.minorUnits, p.amount.minorUnits), currency: o.balance.currency)
            return DeclineRow(paymentId: p.id, orderId: p.orderId, amountDue: due, amountDueText: Fmt.money(due),
                              reason: p.declineReason.map(Fmt.decline) ?? "declined", contactHint: o.contactHint,
                              contact: declineContacts[p.id])
        }
    }

    private func settingsPanel(_ p: OfflinePolicy) -> SettingsPanel {
        let l = p.limits.first { $0.currency == env.currency }
        let perOrder = l.map { Money(minorUnits: $0.perOrder, currency: env.currency) }
        let device = l?.deviceAmount.map { Money(minorUnits: $0, currency: env.currency) }
        let text = perOrder.map { "per order \(Fmt.money($0)) · device \(device.map(Fmt.money) ?? "no limit")" }
            ?? "no limits for \(env.currency): offline payments are refused"
        return SettingsPanel(
            offlineEnabled: p.enabled, preset: preset, perOrderLimit: perOrder, deviceLimit: device, limitsText: text,
            staffPermissionRequired: p.staffPermissionRequired,
            entryModes: p.allowedEntryModes.map(Fmt.entryMode).joined(separator: ", "))
    }

    /// When to wake the app if it is not running: the engine's next wake-up
    /// (a retry, a deadline, a probe while offline, a session warning).
    private func wakeUpAt(_ status: EngineStatus) -> Int64? {
        status.nextWakeUpMs
    }
}

/// A queue filled on the library's threads and drained by the model.
final class Inbox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    private var refreshQueued = false

    func add(_ item: T) { lock.lock(); items.append(item); lock.unlock() }

    func drain() -> [T] {
        lock.lock(); defer { lock.unlock() }
        let all = items
        items.removeAll()
        return all
    }

    /// True for the first event of a burst: that one queues a refresh.
    func claimRefresh() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if refreshQueued { return false }
        refreshQueued = true
        return true
    }

    func refreshDone() { lock.lock(); refreshQueued = false; lock.unlock() }
}

/// The engine's events (on its `pos-core-events` thread): kept for the next
/// refresh; events the cashier did not cause (forwarding, expiry) reach the
/// screen on their own.
private final class EngineListener: EventListener, @unchecked Sendable {
    weak var model: CashierModel?
    let inbox: Inbox<PosEvent>

    init(model: CashierModel, inbox: Inbox<PosEvent>) {
        self.model = model
        self.inbox = inbox
    }

    func onEvent(event: PosEvent) {
        inbox.add(event)
        if inbox.claimRefresh(), let model {
            Task { await model.eventArrived() }
        }
    }
}

private final class ReaderEvents: ReaderListener, @unchecked Sendable {
    let inbox: Inbox<ReaderEvent>
    init(inbox: Inbox<ReaderEvent>) { self.inbox = inbox }
    func onReaderEvent(event: ReaderEvent) { inbox.add(event) }
}
