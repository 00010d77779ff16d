import Foundation
import XCTest
@testable import PosCore

final class Recorder: EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [(PosEvent, Bool)] = []
    let arrived = DispatchSemaphore(value: 0)

    func onEvent(event: PosEvent) {
        lock.lock()
        events.append((event, Thread.isMainThread))
        lock.unlock()
        arrived.signal()
    }

    func next() -> (PosEvent, Bool)? {
        guard arrived.wait(timeout: .now() + 30) == .success else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return events.removeFirst()
    }

    /// Every event received and not yet taken, without waiting: after
    /// `eventsDelivered()`, every event emitted before it.
    func drain() -> [PosEvent] {
        lock.lock()
        let taken = events
        events.removeAll()
        lock.unlock()
        for _ in taken { _ = arrived.wait(timeout: .now()) }
        return taken.map { $0.0 }
    }
}

final class EngineTests: XCTestCase {
    func makeEngine(_ config: EngineConfig) throws -> PosEngine {
        try PosEngine(config: config, keys: testKeys(for: config.dataDir))
    }

    func config(deviceId: String = "till-1", currency: String = "USD") -> EngineConfig {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-\(UUID())")
        return EngineConfig(dataDir: dir.path, deviceId: deviceId, currency: currency)
    }

    func testOpenIsAsyncAndReopensTheSameStore() async throws {
        let cfg = config()
        let engine = try await PosEngine.open(config: cfg, keys: testKeys(for: cfg.dataDir))
        XCTAssertEqual(try engine.status().deviceId, "till-1")
        await engine.closeAndRelease()
        let again = try await PosEngine.open(config: cfg, keys: testKeys(for: cfg.dataDir))
        XCTAssertEqual(try again.status().pendingOfflinePayments, 0)
        again.close()
        do {
            _ = try await PosEngine.open(config: config(deviceId: ""), keys: testKeys(for: cfg.dataDir))
            XCTFail("a bad configuration opened")
        } catch PosError.InvalidConfig {
        }
    }

    func testBadConfigurationThrowsTypedErrors() {
        XCTAssertThrowsError(try makeEngine(config(deviceId: ""))) { error in
            guard case PosError.InvalidConfig(let reason) = error else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertTrue(reason.contains("device_id"), reason)
        }
        XCTAssertThrowsError(try makeEngine(config(currency: "XYZ"))) { error in
            guard case PosError.InvalidConfig = error else { return XCTFail("unexpected \(error)") }
        }
    }

    func testStatusStartsUnknownAndEmpty() throws {
        let engine = try makeEngine(config())
        defer { engine.close() }
        let status = try engine.status()
        XCTAssertFalse(status.version.isEmpty)
        XCTAssertEqual(status.deviceId, "till-1")
        XCTAssertEqual(status.currency, "USD")
        XCTAssertEqual(status.connectivity, .unknown)
        XCTAssertEqual(status.pendingOfflinePayments, 0)
    }

    func testAsyncCallFromSwiftConcurrency() async throws {
        let engine = try makeEngine(config())
        defer { engine.close() }
        let state = try await engine.reportNetwork(reachable: false)
        guard case .networkOutage = state else { return XCTFail("unexpected \(state)") }
        XCTAssertEqual(try engine.status().connectivity, state)
    }

    func testEightConcurrentAsyncCalls() async throws {
        let engine = try makeEngine(config())
        defer { engine.close() }
        let results = try await withThrowingTaskGroup(of: ConnectivityStatus.self) { group in
            for i in 0..<8 {
                group.addTask { try await engine.reportNetwork(reachable: i % 2 == 0) }
            }
            var all: [ConnectivityStatus] = []
            for try await r in group { all.append(r) }
            return all
        }
        XCTAssertEqual(results.count, 8)
    }

    func testEventsArriveOffTheCallerThread() async throws {
        let engine = try makeEngine(config())
        defer { engine.close() }
        let recorder = Recorder()
        let subscription = try engine.subscribe(listener: recorder)
        defer { subscription.cancel() }
        guard let (first, onMain) = recorder.next() else { return XCTFail("no snapshot") }
        guard case .snapshot = first else { return XCTFail("unexpected \(first)") }
        XCTAssertFalse(onMain)
        _ = try await engine.reportNetwork(reachable: false)
        guard let (change, _) = recorder.next() else { return XCTFail("no change event") }
        guard case .connectivityChanged(let from, let to, _, let banner) = change else {
            return XCTFail("unexpected \(change)")
        }
        XCTAssertEqual(from, .unknown)
        guard case .networkOutage = to else { return XCTFail("unexpected \(to)") }
        XCTAssertNotNil(banner)
    }

    func testEventStreamFinishesAfterClose() async throws {
        let engine = try makeEngine(config())
        let stream = try engine.events()
        _ = try await engine.reportNetwork(reachable: false)
        engine.close()
        var kinds: [String] = []
        for await event in stream {
            switch event {
            case .snapshot: kinds.append("snapshot")
            case .connectivityChanged: kinds.append("changed")
            case .closed: kinds.append("closed")
            default: kinds.append("other")
            }
        }
        XCTAssertEqual(kinds, ["snapshot", "changed", "closed"])
    }

    func testCloseIsIdempotentAndLaterCallsThrowClosed() async throws {
        let engine = try makeEngine(config())
        engine.close()
        engine.close()
        XCTAssertThrowsError(try engine.status()) { error in
            guard case PosError.Closed = error else { return XCTFail("unexpected \(error)") }
        }
        do {
            _ = try await engine.reportNetwork(reachable: true)
            XCTFail("expected Closed")
        } catch PosError.Closed {
        }
    }
}
