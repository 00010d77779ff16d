#if canImport(SwiftUI)
// Compiled only where SwiftUI exists (Xcode, a Mac): never on these Linux
// machines, where `cargo xtask test` builds the rest of PosDemoKit. Kept
// thin and mechanical: each view renders a part of `CashierScreen` and sends
// `CashierIntent`s; every decision is in `CashierModel`.
import PosCore
import SwiftUI

/// Holds the latest screen for SwiftUI, fed by the model's `screens()` stream.
@MainActor
public final class CashierViewModel: ObservableObject {
    @Published public private(set) var screen = CashierScreen()
    public let model: CashierModel
    private var feed: Task<Void, Never>?

    public init(model: CashierModel) {
        self.model = model
        feed = Task { [weak self] in
            for await s in await model.screens() { self?.screen = s }
        }
    }

    deinit { feed?.cancel() }

    public func send(_ intent: CashierIntent) { model.send(intent) }
}

public struct CashierRootView: View {
    @ObservedObject var vm: CashierViewModel

    public init(vm: CashierViewModel) { self.vm = vm }

    public var body: some View {
        let s = vm.screen
        switch s.phase {
        case .starting: ProgressView("Opening the payment store…")
        case .blocked: Text(s.blockingError ?? "The payment store did not open.").padding()
        case .closed: Text("Closed")
        case .signedOut: SignInView(vm: vm)
        case .ready:
            VStack(spacing: 0) {
                if let b = s.banner { BannerView(banner: b) }
                TabView(selection: Binding(get: { s.tab }, set: { vm.send(.showTab($0)) })) {
                    CheckoutView(vm: vm).tabItem { Label("Checkout", systemImage: "cart") }.tag(Tab.checkout)
                    PendingView(screen: s).tabItem { Label("Pending", systemImage: "clock") }.tag(Tab.pending)
                    DeclinesView(vm: vm).tabItem { Label("Declines", systemImage: "exclamationmark.triangle") }.tag(Tab.declines)
                    SettingsView(vm: vm).tabItem { Label("Settings", systemImage: "gear") }.tag(Tab.settings)
                }
            }
        }
    }
}

struct BannerView: View {
    let banner: Banner
    var body: some View {
        VStack(alignment: .leading) {
            Text(banner.text).bold()
            Text(banner.offlineLine).font(.footnote)
        }
        .frame(maxWidth: .infinity, alignment: .leading)
        .padding()
        .background(banner.kind == .networkOutage ? Color.orange : Color.yellow)
    }
}

struct SignInView: View {
    @ObservedObject var vm: CashierViewModel
    @State private var staffId = ""
    var body: some View {
        Form {
            TextField("Staff id", text: $staffId)
            Button("Sign in") { vm.send(.signIn(staffId: staffId, mayTakeOfflinePayments: true)) }
            Section("Pending") { PendingRows(rows: vm.screen.pending.rows) }
        }
    }
}

struct CheckoutView: View {
    @ObservedObject var vm: CashierViewModel
    var body: some View {
        let s = vm.screen
        List {
            Section("Reader") {
                if let r = s.reader.connected {
                    Text("\(r.model) \(r.serial) · \(r.batteryPercent) %")
                } else {
                    Button("Find readers") { vm.send(.scanReaders) }
                    if s.reader.bluetooth == .notRequested {
                        Button("Allow Bluetooth to find readers") { vm.send(.bluetoothPermission(granted: true)) }
                    }
                    ForEach(s.reader.options) { o in Button(o.name) { vm.send(.pickReader(optionId: o.id)) } }
                }
                if let e = s.reader.error { Text(e).foregroundColor(.red) }
                if let st = s.reader.status { Text(st).font(.footnote) }
            }
            Section("Sale") {
                ForEach(Array(s.cart.lines.enumerated()), id: \.offset) { _, l in
                    HStack { Text("\(l.quantity) × \(l.name)"); Spacer(); Text(l.lineTotalText) }
                }
                Text(s.cart.entry).font(.largeTitle)
                LazyVGrid(columns: Array(repeating: GridItem(), count: 3)) {
                    ForEach([1, 2, 3, 4, 5, 6, 7, 8, 9, 0], id: \.self) { d in
                        Button("\(d)") { vm.send(.keypadDigit(d)) }.buttonStyle(.bordered)
                    }
                    Button("C") { vm.send(.keypadClear) }.buttonStyle(.bordered)
                    Button("Add") { vm.send(.addKeypadAmount) }.buttonStyle(.borderedProminent)
                }
                Button("Checkout \(s.cart.totalText)") { vm.send(.checkout) }
            }
            if let c = s.checkout {
                Section("Order · \(c.badgeText)") {
                    Text("Total \(c.totalText) · paid \(c.paidText) · due \(c.balanceText)")
                    ForEach(c.tenders, id: \.self) { Text($0).font(.footnote) }
                    if !c.complete {
                        Button("Card") { vm.send(.payByCard()) }
                        Button("Cash") { vm.send(.payCash()) }
                    } else {
                        Button("New sale") { vm.send(.newSale) }
                    }
                }
            }
            switch s.card {
            case .idle: EmptyView()
            case let .waitingForCard(w):
                Section("Present the card") {
                    Text("\(w.amountText) on \(w.readerName)")
                    if w.offline { Text("Offline (\(w.offlineReason ?? "")): stored and forwarded later").font(.footnote) }
                    Button("Cancel") { vm.send(.cancelCard) }
                }
            case let .done(d): Section { Text(d.text) }
            }
            if let r = s.refusal {
                Section { Text(r.text).foregroundColor(.red); if let f = r.figures { Text(f).font(.footnote) } }
            }
            if let e = s.error { Section { Text(e).foregroundColor(.red) } }
            ForEach(Array(s.notices.enumerated()), id: \.offset) { _, n in Text(n.text).font(.footnote) }
        }
    }
}

struct PendingRows: View {
    let rows: [PendingRow]
    var body: some View {
        ForEach(rows, id: \.paymentId) { r in
            HStack {
                Text("•••• \(r.last4) \(r.amountText)")
                Spacer()
                Text("\(r.statusText) · \(r.timeLeftText) left")
            }
        }
    }
}

struct PendingView: View {
    let screen: CashierScreen
    var body: some View {
        List {
            if let f = screen.forwarding { ProgressView(f.text, value: f.fraction) }
            if let d = screen.pending.session {
                Text("Forward by \(d.deadlineText) (\(d.timeLeftText))")
                if let a = d.acceptanceText { Text(a).font(.footnote) }
            }
            Text("At risk: \(screen.pending.atRiskText)")
            PendingRows(rows: screen.pending.rows)
            ForEach(screen.expired, id: \.paymentId) { Text($0.text).foregroundColor(.red) }
            if screen.queuedReceipts > 0 { Text("\(screen.queuedReceipts) receipts queued") }
        }
    }
}

struct DeclinesView: View {
    @ObservedObject var vm: CashierViewModel
    var body: some View {
        List(vm.screen.declines, id: \.paymentId) { d in
            VStack(alignment: .leading) {
                Text("\(d.amountDueText) · \(d.reason)")
                Text(d.contact ?? d.contactHint ?? "no contact captured").font(.footnote)
                Button("Collect again") { vm.send(.collectAgain(paymentId: d.paymentId)) }
            }
        }
    }
}

struct SettingsView: View {
    @ObservedObject var vm: CashierViewModel
    var body: some View {
        let s = vm.screen
        Form {
            Toggle("Offline card payments", isOn: Binding(get: { s.settings.offlineEnabled }, set: { vm.send(.setOfflineEnabled($0)) }))
            Text(s.settings.limitsText)
            Text("Entry modes offline: \(s.settings.entryModes)")
            Button("Log out") { vm.send(.logOut) }
            if case let .refused(_, _, text, overrideAllowed)? = s.logout {
                Text(text).foregroundColor(.red)
                if overrideAllowed { Button("Manager override") { vm.send(.logOutWithOverride(managerId: "manager", reason: "end of shift")) } }
            }
            Button("Export audit log") { vm.send(.exportAudit) }
            if let a = s.audit { ShareLink(item: a.csv) { Text("Share \(a.fileName) (\(a.rows) rows)") } }
            if let d = s.demo {
                Section("Demo · \(d.clockText)") {
                    Toggle("Network", isOn: Binding(get: { d.networkUp }, set: { vm.send(.demoSetNetwork(up: $0)) }))
                    Toggle("Payment service down", isOn: Binding(get: { d.serviceDown }, set: { vm.send(.demoSetServiceDown($0)) }))
                    Button("+ 10 min") { vm.send(.demoAdvance(ms: 600_000)) }
                    ForEach(Array(d.testCards.enumerated()), id: \.offset) { i, c in
                        Button("Present: \(c)") { vm.send(.demoPresentCard(cardIndex: i)) }
                    }
                }
            }
        }
    }
}
#endif
