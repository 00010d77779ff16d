import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PosCore

/// What the model needs from the world around it. The iOS app supplies one
/// over the Keychain, the HTTP gateway and CoreBluetooth (ios-demo/App, not
/// built here); `DemoShop` one over the library's simulators.
public protocol CashierEnvironment: AnyObject, Sendable {
    /// The shop's currency (ISO 4217).
    var currency: String { get }
    /// For deadlines shown as clock times.
    var timeZone: TimeZone { get }
    var readers: ReaderDirectory { get }
    var driver: ForwardingDriver { get }
    /// Reader authorities the shop trusts; kept when the cashier picks another preset.
    var readerAuthorities: [String] { get }
    /// The demo's switches; nil outside demo mode.
    var demo: DemoControls? { get }
    /// The wall clock the engine runs on, ms since the epoch.
    func nowMs() -> Int64
    /// Opens the engine on the app's data folder (called again after a process restart).
    func openEngine() async throws -> PosEngine
    /// After every open: the gateway, and the first run's policy.
    func prepare(engine: PosEngine) async throws
}

/// Who runs forwarding, probes and expiry between the cashier's actions.
public protocol ForwardingDriver: Sendable {
    func wake(engine: PosEngine) async throws
}

/// Production: the engine's own driver (`automaticForwarding`, the default);
/// a wake-up only makes it re-read the clock now.
public struct EngineDriver: ForwardingDriver {
    public init() {}
    public func wake(engine: PosEngine) async throws { engine.nudgeForwarding() }
}

/// Demo and tests: the engine runs with `automaticForwarding = false` and
/// each wake-up probes the service twice (the engine's hysteresis wants two
/// probes of a kind), forwards everything due once online, expires what
/// passed its deadline otherwise. Deterministic: no timer.
public struct StepDriver: ForwardingDriver {
    let probe: @Sendable () async -> ProbeOutcome
    let probesPerWake: Int

    public init(probesPerWake: Int = 2, probe: @escaping @Sendable () async -> ProbeOutcome) {
        self.probe = probe
        self.probesPerWake = probesPerWake
    }

    public func wake(engine: PosEngine) async throws {
        for _ in 0..<probesPerWake { _ = try await engine.reportProbe(outcome: await probe()) }
        if case .online = try engine.status().connectivity, !engine.forwardingPaused() {
            _ = try await engine.forwardNow()
        } else {
            _ = try await engine.tick()
        }
    }
}

/// `GET <baseUrl>/v1/status` with a bearer token (docs/gateway-openapi.yaml):
/// `available` is healthy, `disrupted` or an error status unhealthy, no
/// answer unreachable. What the built-in HTTP gateway's probe does.
public final class HttpStatusProbe: @unchecked Sendable {
    let url: URL
    let token: String
    let session: URLSession

    public init(baseUrl: String, token: String, timeout: TimeInterval = 2) {
        var base = baseUrl
        while base.hasSuffix("/") { base.removeLast() }
        url = URL(string: base + "/v1/status")!
        self.token = token
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        session = URLSession(configuration: config)
    }

    public func probe() async -> ProbeOutcome {
        var request = URLRequest(url: url)
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        return await withCheckedContinuation { (done: CheckedContinuation<ProbeOutcome, Never>) in
            session.dataTask(with: request) { data, response, error in
                guard error == nil, let http = response as? HTTPURLResponse else { return done.resume(returning: .unreachable) }
                guard http.statusCode == 200, let data, let body = String(data: data, encoding: .utf8) else {
                    return done.resume(returning: .unhealthy)
                }
                let available = body.range(of: #""status"\s*:\s*"available""#, options: .regularExpression) != nil
                done.resume(returning: available ? .healthy : .unhealthy)
            }.resume()
        }
    }
}

/// Where the picker's readers come from.
public protocol ReaderDirectory: Sendable {
    /// The readers to offer; Bluetooth ones only when `bluetoothAllowed`.
    func scan(bluetoothAllowed: Bool) async throws -> [ReaderOption]
    /// Connects to one (not yet paired: the model pairs it with the engine).
    func connect(option: ReaderOption, listener: ReaderListener) async throws -> CardReader
}

/// The demo's world around the till: a network, a payment service, a clock and a customer with test cards.
public protocol DemoControls: AnyObject, Sendable {
    var networkUp: Bool { get }
    var serviceDown: Bool { get }
    /// Test card descriptions, in the order `.demoPresentCard` indexes them.
    var testCards: [String] { get }
    func setNetwork(up: Bool)
    func setServiceDown(_ down: Bool)
    func advance(ms: Int64)
    /// The customer presents a test card on the reader behind `optionId`.
    func presentCard(optionId: String, cardIndex: Int, entryMode: EntryMode) throws
}

/// A model error in words (an intent that cannot be done now).
public struct CashierProblem: Error, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
}
