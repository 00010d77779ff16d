import Foundation
import XCTest
@testable import PosCore

/// The encrypted store through the bindings, with a Swift key provider.
final class StoreTests: XCTestCase {
    let t0: Int64 = 1_800_000_000_000

    func takeOnePayment(_ engine: PosEngine) async throws -> String {
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        try await engine.rememberVendorReader()
        _ = try await engine.reportNetwork(reachable: false)
        let usd = Money(minorUnits: 2_500, currency: "USD")
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd, contact: nil))
        let d = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd, tip: nil, behaviour: .preferOnline, tender: .card))
        let card = vendorCard(last4: "4242")
        return try await engine.confirmCardPayment(paymentId: d.paymentId, card: card).id
    }

    func testPaymentsSurviveReopeningAndKeysAreChecked() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-store-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD")
        let keys = testKeys(for: dir.path)
        var engine: PosEngine? = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
        let id = try await takeOnePayment(engine!)
        try await engine!.compactStore()  // the next open starts from this snapshot
        engine!.close()
        engine = nil  // frees the native engine and its store

        let other = FileKeyProvider(dir.appendingPathExtension("other"))
        XCTAssertThrowsError(try PosEngine.withTestClock(config: config, keys: other, clock: TestClock(wallMs: t0))) {
            guard case PosError.WrongKey = $0 else { return XCTFail("unexpected \($0)") }
        }
        keys.locked = true
        XCTAssertThrowsError(try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))) {
            guard case PosError.StoreLocked = $0 else { return XCTFail("unexpected \($0)") }
        }
        keys.locked = false
        let reopened = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
        defer { reopened.close() }
        XCTAssertEqual(try reopened.listPayments().map { $0.id }, [id])
    }

    let storeFiles = ["pos-core.sqlite", "pos-core.sqlite-wal", "pos-core.sqlite-shm"]

    /// Copies the store's files that exist from one folder to another.
    func copyStore(from: URL, to: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: to, withIntermediateDirectories: true)
        for name in storeFiles {
            try? fm.removeItem(at: to.appendingPathComponent(name))
            if fm.fileExists(atPath: from.appendingPathComponent(name).path) {
                try fm.copyItem(at: from.appendingPathComponent(name), to: to.appendingPathComponent(name))
            }
        }
    }

    /// Opens, takes one payment, closes and frees the engine.
    func session(_ config: EngineConfig, _ keys: FileKeyProvider, at wallMs: Int64,
                 _ body: ((PosEngine) throws -> Void)? = nil) async throws {
        var engine: PosEngine? = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: wallMs))
        _ = try await takeOnePayment(engine!)
        try body?(engine!)
        // The files are copied next: released, not only closed.
        await engine!.closeAndRelease()
        engine = nil
    }

    /// The figures of a store refused as rolled back: the last record it
    /// holds and the last one its anchor says was written.
    func rolledBack(_ config: EngineConfig, _ keys: FileKeyProvider) -> (found: Int, expected: Int)? {
        do {
            let engine = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
            engine.close()
            XCTFail("the store opened")
        } catch PosError.StoreIntegrity(let reason, let found, let written) {
            XCTAssertTrue(reason.contains("rolled back"), reason)
            guard let found, let written else {
                XCTFail("no rollback figures: \(reason)")
                return nil
            }
            return (Int(found), Int(written))
        } catch {
            XCTFail("unexpected \(error)")
        }
        return nil
    }

    func tempDir(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-\(name)-\(UUID())")
    }

    func testAnOlderCopyOfTheStoreIsRefusedAsRolledBackWithTheFigures() async throws {
        let dir = tempDir("rollback")
        let data = dir.appendingPathComponent("data"), backup = dir.appendingPathComponent("backup")
        let keyDir = dir.appendingPathComponent("keys")
        try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
        let keys = FileKeyProvider(keyDir.appendingPathComponent("kek"))
        let config = EngineConfig(dataDir: data.path, deviceId: "till-1", currency: "USD")
        try await session(config, keys, at: t0)
        try copyStore(from: data, to: backup)
        try await session(config, keys, at: t0 + 60_000)
        try copyStore(from: backup, to: data)
        let before = try Data(contentsOf: data.appendingPathComponent("pos-core.sqlite"))
        guard let figures = rolledBack(config, keys) else { return }
        let (found, expected) = figures
        XCTAssertTrue(found >= 1 && found < expected, "\(found) \(expected)")
        XCTAssertEqual(try Data(contentsOf: data.appendingPathComponent("pos-core.sqlite")), before, "kept as it is")
        // Still refused on the next try: the anchor was not moved back.
        XCTAssertTrue(rolledBack(config, keys).map { $0.found == found && $0.expected == expected } ?? false)
    }

    func testAStoreThatLostItsWalIsRefusedAsRolledBack() async throws {
        let dir = tempDir("wal")
        let data = dir.appendingPathComponent("data"), crash = dir.appendingPathComponent("crash")
        let keyDir = dir.appendingPathComponent("keys")
        try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
        let keys = FileKeyProvider(keyDir.appendingPathComponent("kek"))
        let config = EngineConfig(dataDir: data.path, deviceId: "till-1", currency: "USD")
        try await session(config, keys, at: t0) { _ in
            // While it runs, the latest records are in the log beside the file.
            let wal = try FileManager.default.attributesOfItem(atPath: data.appendingPathComponent("pos-core.sqlite-wal").path)
            XCTAssertGreaterThan((wal[.size] as? NSNumber)?.intValue ?? 0, 0)
            try self.copyStore(from: data, to: crash)
        }
        // The image of the running store, with its -wal deleted.
        try FileManager.default.removeItem(at: crash.appendingPathComponent("pos-core.sqlite-wal"))
        try? FileManager.default.removeItem(at: crash.appendingPathComponent("pos-core.sqlite-shm"))
        try copyStore(from: crash, to: data)
        guard let figures = rolledBack(config, keys) else { return }
        let (found, expected) = figures
        XCTAssertLessThan(found, expected)
    }

    func testAFailedAnchorSaveIsAnEventAndShowsInTheStatus() async throws {
        let dir = tempDir("anchor")
        let keys = FileKeyProvider(URL(fileURLWithPath: dir.path + ".kek"))
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD")
        let engine = try PosEngine.withTestClock(config: config, keys: keys, clock: TestClock(wallMs: t0))
        defer { engine.close() }
        let ok = try engine.status().anchor
        XCTAssertEqual(ok?.failing, false)
        XCTAssertEqual(ok?.lastSavedAtMs, t0)
        let stream = try engine.events()
        keys.failAnchorSaves = true
        _ = try await takeOnePayment(engine)
        var failed: (String, UInt64)?
        for await event in stream {
            if case .anchorSaveFailed(let reason, let behind) = event {
                failed = (reason, behind)
                break
            }
        }
        XCTAssertTrue(failed?.0.contains("anchor write refused") ?? false, "\(String(describing: failed))")
        XCTAssertGreaterThan(failed?.1 ?? 0, 0)
        let anchor = try engine.status().anchor
        XCTAssertEqual(anchor?.failing, true)
        XCTAssertEqual(anchor?.lastSavedAtMs, t0)
        keys.failAnchorSaves = false
    }
}
