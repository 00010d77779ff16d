// Not built on these machines (no Xcode): reference code.
//
// A reader-profile reader (docs/reader-profile.md) over CoreBluetooth, for
// the library's `AppReaderTransport`: `writeFrame` writes one frame to the
// request characteristic without response (one at a time, waiting for
// `peripheralIsReady(toSendWriteWithoutResponse:)`), notifications of the
// notify characteristic go to `deliverFrame`, the connection state to
// `setConnected`. The transport's MTU is the peripheral's
// `maximumWriteValueLength(for: .withoutResponse)` + 3. Demo mode takes the
// same library path with the simulated radio (PosDemoKit/DemoShop.swift).
// Info.plist needs NSBluetoothAlwaysUsageDescription.
import CoreBluetooth
import PosCore
import PosDemoKit

/// The profile's UUIDs (docs/reader-profile.md); fill in from there.
enum ReaderProfile {
    static let service = CBUUID(string: "READER-PROFILE-SERVICE-UUID")
    static let request = CBUUID(string: "READER-PROFILE-REQUEST-UUID")
    static let notify = CBUUID(string: "READER-PROFILE-NOTIFY-UUID")
}

final class CoreBluetoothReaderLink: NSObject, ReaderLink, CBPeripheralDelegate, @unchecked Sendable {
    let peripheral: CBPeripheral
    private var request: CBCharacteristic?
    private(set) var transport: AppReaderTransport?
    private let ready = DispatchSemaphore(value: 0)
    private let characteristicsFound = DispatchSemaphore(value: 0)

    init(peripheral: CBPeripheral) {
        self.peripheral = peripheral
        super.init()
        peripheral.delegate = self
    }

    /// Discovers the profile's characteristics and makes the transport (off the main thread).
    func open() throws -> AppReaderTransport {
        peripheral.discoverServices([ReaderProfile.service])
        characteristicsFound.wait()
        let mtu = UInt16(peripheral.maximumWriteValueLength(for: .withoutResponse) + 3)
        let t = try AppReaderTransport(link: self, mtu: mtu)
        transport = t
        t.setConnected(connected: true)
        return t
    }

    // ReaderLink: called on the library's threads; one write without response at a time.
    func writeFrame(frame: Data) throws {
        guard let request, peripheral.state == .connected else { throw ReaderError.Disconnected }
        while !peripheral.canSendWriteWithoutResponse { ready.wait() }
        peripheral.writeValue(frame, for: request, type: .withoutResponse)
    }

    func peripheralIsReady(toSendWriteWithoutResponse peripheral: CBPeripheral) { ready.signal() }

    func peripheral(_ p: CBPeripheral, didDiscoverServices error: Error?) {
        for s in p.services ?? [] where s.uuid == ReaderProfile.service {
            p.discoverCharacteristics([ReaderProfile.request, ReaderProfile.notify], for: s)
        }
    }

    func peripheral(_ p: CBPeripheral, didDiscoverCharacteristicsFor s: CBService, error: Error?) {
        for c in s.characteristics ?? [] {
            if c.uuid == ReaderProfile.request { request = c }
            if c.uuid == ReaderProfile.notify { p.setNotifyValue(true, for: c) }
        }
        characteristicsFound.signal()
    }

    func peripheral(_ p: CBPeripheral, didUpdateValueFor c: CBCharacteristic, error: Error?) {
        if c.uuid == ReaderProfile.notify, let v = c.value { transport?.deliverFrame(frame: v) }
    }

    /// From the central's didDisconnectPeripheral.
    func disconnected() { transport?.setConnected(connected: false) }
}

/// The picker's readers: a scan filtered on the profile's service UUID, strongest first.
final class CoreBluetoothReaderDirectory: NSObject, ReaderDirectory, CBCentralManagerDelegate, @unchecked Sendable {
    private lazy var central = CBCentralManager(delegate: self, queue: DispatchQueue(label: "pos-ble"))
    private var found: [UUID: (CBPeripheral, Int)] = [:]
    private var links: [UUID: CoreBluetoothReaderLink] = [:]
    private var connecting: [UUID: CheckedContinuation<Void, Error>] = [:]

    func scan(bluetoothAllowed: Bool) async throws -> [ReaderOption] {
        guard bluetoothAllowed, central.state == .poweredOn else { return [] }
        central.scanForPeripherals(withServices: [ReaderProfile.service])
        try await Task.sleep(nanoseconds: 3_000_000_000)
        central.stopScan()
        return found.values.sorted { $0.1 > $1.1 }.map { p, rssi in
            ReaderOption(id: "ble:\(p.identifier)", name: p.name ?? "Reader", kind: .bluetooth, rssi: rssi)
        }
    }

    func connect(option: ReaderOption, listener: ReaderListener) async throws -> CardReader {
        guard let id = UUID(uuidString: String(option.id.dropFirst(4))), let (p, _) = found[id] else {
            throw ReaderError.Disconnected
        }
        try await withCheckedThrowingContinuation { connecting[id] = $0; central.connect(p) }
        let link = CoreBluetoothReaderLink(peripheral: p)
        links[id] = link
        return try await link.open().connect(listener: listener)
    }

    func centralManagerDidUpdateState(_ central: CBCentralManager) {}

    func centralManager(_ c: CBCentralManager, didDiscover p: CBPeripheral, advertisementData: [String: Any], rssi: NSNumber) {
        found[p.identifier] = (p, rssi.intValue)
    }

    func centralManager(_ c: CBCentralManager, didConnect p: CBPeripheral) {
        connecting.removeValue(forKey: p.identifier)?.resume()
    }

    func centralManager(_ c: CBCentralManager, didFailToConnect p: CBPeripheral, error: Error?) {
        connecting.removeValue(forKey: p.identifier)?.resume(throwing: ReaderError.Disconnected)
    }

    func centralManager(_ c: CBCentralManager, didDisconnectPeripheral p: CBPeripheral, error: Error?) {
        links[p.identifier]?.disconnected()
    }
}
