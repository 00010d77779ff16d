// Not built on these machines (no Xcode): reference code.
//
// The app's entry point: one CashierModel for the process, demo mode (the
// library's simulators, FileKeys in Application Support) or live mode
// (Keychain, the HTTP gateway, CoreBluetooth readers). NWPathMonitor becomes
// `.networkChanged`, scenePhase becomes `.appForeground` / `.appBackground`
// (the store is compacted, the BGTask rescheduled from `wakeUpAtMs`).
import Network
import PosCore
import UIKit
import PosDemoKit
import SwiftUI

@main
struct PosDemoApp: App {
    @Environment(\.scenePhase) private var scenePhase
    @StateObject private var vm: CashierViewModel
    private let path = NWPathMonitor()

    init() {
        let support = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        let env: CashierEnvironment
        #if DEMO
        env = try! DemoShop(dataDir: support.appendingPathComponent("pos-demo"),
                            keys: FileKeys(dir: support.appendingPathComponent("pos-demo-keys")))
        #else
        env = LiveEnvironment(dataDir: support.appendingPathComponent("pos"))
        #endif
        let model = CashierModel(env: env)
        _vm = StateObject(wrappedValue: CashierViewModel(model: model))
        // Engine opening blocks a thread until the store is open: never on the main thread.
        Task.detached { await model.start() }
        path.pathUpdateHandler = { p in model.send(.networkChanged(reachable: p.status == .satisfied)) }
        path.start(queue: DispatchQueue(label: "pos-path"))
        BackgroundForwarding.register(model: model)
    }

    var body: some Scene {
        WindowGroup { CashierRootView(vm: vm) }
            .onChange(of: scenePhase) { phase in
                switch phase {
                case .active: vm.send(.appForeground)
                case .background:
                    vm.send(.appBackground)
                    BackgroundForwarding.schedule(atMs: vm.screen.wakeUpAtMs)
                default: break
                }
            }
    }
}

/// Production: the Keychain, the HTTP gateway, CoreBluetooth readers and the engine's own forwarding.
final class LiveEnvironment: CashierEnvironment, @unchecked Sendable {
    let dataDir: URL
    let currency = "USD"
    let timeZone = TimeZone.current
    let readers: ReaderDirectory = CoreBluetoothReaderDirectory()
    let driver: ForwardingDriver = EngineDriver()
    let readerAuthorities = [Bundle.main.object(forInfoDictionaryKey: "READER_AUTHORITY") as! String]
    let demo: DemoControls? = nil

    init(dataDir: URL) { self.dataDir = dataDir }

    func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func openEngine() async throws -> PosEngine {
        try await PosEngine.open(
            config: EngineConfig(dataDir: dataDir.path, deviceId: UIDevice.current.identifierForVendor!.uuidString, currency: currency),
            keys: KeychainKeyProvider())
    }

    func prepare(engine: PosEngine) async throws {
        let url = Bundle.main.object(forInfoDictionaryKey: "GATEWAY_URL") as! String
        try engine.useHttpGateway(baseUrl: url, tokens: AppTokens(), allowPlainHttp: false)
    }
}

/// The processor's credentials for the account a request is sent under, from
/// the merchant's backend (here: a bearer token in the Keychain, set at enrolment).
final class AppTokens: TokenProvider, @unchecked Sendable {
    func token(account: MerchantAccount?) throws -> String {
        guard let t = KeychainTokens.read(account: account?.accountId) else {
            throw PosError.Callback(reason: "no token for this account")
        }
        return t
    }

    func invalidate() throws { KeychainTokens.drop() }
}
