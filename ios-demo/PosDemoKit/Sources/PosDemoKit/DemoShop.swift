import Foundation
import PosCore

/// Demo mode: the till with no hardware and no network, like `cargo xtask
/// demo`. A virtual clock (`TestClock`) that moves only when told, the
/// library's processor simulator on loopback (its status endpoint probed as
/// the engine would; with the network off every probe is unreachable), and
/// simulated card readers: one connected directly, and "Bluetooth" readers
/// reached through `AppReaderTransport` over the simulated radio, the path
/// the app's CoreBluetooth glue takes (App/CoreBluetoothReaderLink.swift).
///
/// The shop outlives `CashierModel`s: stopping a model and starting a new one
/// on the same shop is a process restart (same folder, keys and clock).
public final class DemoShop: CashierEnvironment, DemoControls, @unchecked Sendable {
    /// 2026-11-24 08:00 UTC, the shop opens (as in the CLI demo).
    public static let openingMs: Int64 = 1_795_507_200_000
    public static let deviceId = "demo-till-1"
    public static let simulatedId = "sim:SIM-READER-1"

    public let dataDir: URL
    public let keys: KeyProvider
    public let preset: PolicyPreset
    public let clock: TestClock
    public let processor: SimulatedProcessor
    public let currency = "USD"
    public let timeZone: TimeZone
    public let readerAuthorities = [simulatorReaderAuthority()]
    public let testCards: [String]
    public var readers: ReaderDirectory { Readers(shop: self) }
    public var demo: DemoControls? { self }
    public private(set) lazy var driver: ForwardingDriver = {
        let http = HttpStatusProbe(baseUrl: processor.baseUrl(), token: processor.token())
        return StepDriver { [weak self] in
            guard let self, self.networkUp else { return .unreachable }
            return await http.probe()
        }
    }()

    private let cards: [SimulatedTestCard]
    private let readerModel: String
    private let lock = NSLock()
    private var _networkUp = true
    private var _serviceDown = false
    private var hardware: [String: Hardware] = [:]

    public init(dataDir: URL, keys: KeyProvider, preset: PolicyPreset = .squareReader, seed: UInt64 = 2026,
                startMs: Int64 = DemoShop.openingMs, timeZone: TimeZone = TimeZone(identifier: "UTC")!) throws {
        self.dataDir = dataDir
        self.keys = keys
        self.preset = preset
        self.timeZone = timeZone
        clock = TestClock(wallMs: startMs)
        processor = try SimulatedProcessor.start(seed: seed)
        cards = simulatorTestCards()
        testCards = cards.map { "\($0.description) (•••• \($0.pan.suffix(4)))" }
        readerModel = (try? policyPreset(preset: preset, currencyCode: "USD").offlineReaders.first) ?? nil ?? "Simulated Reader"
    }

    public var networkUp: Bool { lock.lock(); defer { lock.unlock() }; return _networkUp }
    public var serviceDown: Bool { lock.lock(); defer { lock.unlock() }; return _serviceDown }

    public func nowMs() -> Int64 { clock.wallMs() }

    public func openEngine() async throws -> PosEngine {
        // Forwarding, probes and expiry run in the StepDriver's wake-ups, not on timers;
        // one request at a time, so that the simulator's seeded faults hit the same payments every run.
        let config = EngineConfig(dataDir: dataDir.path, deviceId: DemoShop.deviceId, currency: currency,
                                  maxInFlight: 1, automaticForwarding: false)
        return try PosEngine.withTestClock(config: config, keys: keys, clock: clock)
    }

    public func prepare(engine: PosEngine) async throws {
        try processor.attach(engine: engine)
        // The first run sets the merchant's policy; later runs keep the stored one.
        if !(try engine.policy().readerAuthorities.contains(simulatorReaderAuthority())) {
            var policy = try policyPreset(preset: preset, currencyCode: currency)
            policy.enabled = true
            policy.readerAuthorities = readerAuthorities
            try await engine.setPolicy(policy: policy)
        }
    }

    public func setNetwork(up: Bool) { lock.lock(); _networkUp = up; lock.unlock() }

    public func setServiceDown(_ down: Bool) {
        lock.lock(); _serviceDown = down; lock.unlock()
        processor.setOutage(on: down)
    }

    public func advance(ms: Int64) { clock.advanceMs(ms: UInt64(max(ms, 0))) }

    public func presentCard(optionId: String, cardIndex: Int, entryMode: EntryMode) throws {
        guard cards.indices.contains(cardIndex) else { throw CashierProblem("No test card \(cardIndex).") }
        lock.lock()
        let hw = hardware[optionId]
        lock.unlock()
        guard let hw else { throw CashierProblem("Reader \(optionId) is not connected.") }
        let c = cards[cardIndex]
        hw.sim.presentCard(pan: c.pan, expiry: c.expiry, network: c.network, entryMode: entryMode)
    }

    /// The index of the first test card with `outcome` ("approve", "insufficient_funds", "stolen_card"...) and, optionally, these last four digits.
    public func cardIndex(_ outcome: String, last4: String? = nil) -> Int {
        guard let i = cards.firstIndex(where: { $0.outcome == outcome && (last4 == nil || $0.pan.hasSuffix(last4!)) }) else {
            preconditionFailure("no test card \(outcome) \(last4 ?? "")")
        }
        return i
    }

    public func close() {
        lock.lock()
        let all = hardware.values
        hardware.removeAll()
        lock.unlock()
        all.forEach { $0.close() }
        // The processor's server and the clock go with the last reference (no close() in Swift).
    }

    /// A simulated reader device, and the app-side transport when it is reached "over Bluetooth".
    final class Hardware: @unchecked Sendable {
        let sim: SimulatedReader
        let transport: AppReaderTransport?
        let pump: Task<Void, Never>?
        init(sim: SimulatedReader, transport: AppReaderTransport?, pump: Task<Void, Never>?) {
            self.sim = sim; self.transport = transport; self.pump = pump
        }
        func close() {
            pump?.cancel()
            transport?.setConnected(connected: false)
        }
    }

    fileprivate func replace(_ id: String, with hw: Hardware?) {
        lock.lock()
        let old = hardware[id]
        hardware[id] = hw
        lock.unlock()
        if let old, old !== hw { old.close() }
    }

    fileprivate var model: String { readerModel }

    private struct Readers: ReaderDirectory {
        let shop: DemoShop

        func scan(bluetoothAllowed: Bool) async throws -> [ReaderOption] {
            let direct = ReaderOption(id: DemoShop.simulatedId, name: "Simulated reader SIM-READER-1", kind: .simulated)
            guard bluetoothAllowed else { return [direct] }
            // What a CoreBluetooth scan filtered on the profile's service UUID would find, strongest first.
            let ble = [
                ReaderOption(id: "ble:SIM-BT-9", name: "\(shop.model) SIM-BT-9", kind: .bluetooth, rssi: -81),
                ReaderOption(id: "ble:SIM-BT-7", name: "\(shop.model) SIM-BT-7", kind: .bluetooth, rssi: -58),
            ].sorted { ($0.rssi ?? 0) > ($1.rssi ?? 0) }
            return [direct] + ble
        }

        func connect(option: ReaderOption, listener: ReaderListener) async throws -> CardReader {
            shop.replace(option.id, with: nil)
            let serial = String(option.id.split(separator: ":", maxSplits: 1).last ?? "")
            switch option.kind {
            case .simulated:
                let sim = try SimulatedReader(model: shop.model, serial: serial, batteryPercent: 87,
                                              processorKey: shop.processor.processorKey(), mtu: 185)
                shop.replace(option.id, with: Hardware(sim: sim, transport: nil, pump: nil))
                return try await sim.connect(listener: listener)
            case .bluetooth:
                // BLE 4.0's smallest MTU: every message is split into 20-byte frames.
                let sim = try SimulatedReader(model: shop.model, serial: serial, batteryPercent: 64,
                                              processorKey: shop.processor.processorKey(), mtu: 23)
                let radio = try sim.radio()
                let transport = try AppReaderTransport(link: RadioLink(radio: radio), mtu: 23)
                // The notify characteristic's notifications, as CoreBluetoothReaderLink delivers them.
                let pump = Task.detached {
                    while !Task.isCancelled, let frame = await radio.receive() {
                        transport.deliverFrame(frame: frame)
                    }
                    transport.setConnected(connected: false)
                }
                shop.replace(option.id, with: Hardware(sim: sim, transport: transport, pump: pump))
                return try await transport.connect(listener: listener)
            }
        }
    }

    /// Writes to the request characteristic, here the simulated radio.
    private final class RadioLink: ReaderLink, @unchecked Sendable {
        let radio: SimulatedRadio
        init(radio: SimulatedRadio) { self.radio = radio }
        func writeFrame(frame: Data) throws { try radio.send(frame: frame) }
    }
}
