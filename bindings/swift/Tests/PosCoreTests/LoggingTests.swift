import Foundation
import XCTest
@testable import PosCore

/// Collects every record it is given.
final class CollectingLogSink: LogSink, @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [LogRecord] = []

    func log(record: LogRecord) {
        lock.lock()
        collected.append(record)
        lock.unlock()
    }

    var records: [LogRecord] {
        lock.lock()
        defer { lock.unlock() }
        return collected
    }
}

/// The log bridge through the bindings: records arrive at the chosen level,
/// none below it, none once the sink is cleared.
final class LoggingTests: XCTestCase {
    func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

    /// Opens an engine, takes one payment offline and forwards it through a Swift gateway.
    func aPaymentTakenAndForwarded() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-log-\(UUID())")
        let config = EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                  maxInFlight: 4, automaticForwarding: false)
        let engine = try PosEngine.withTestClock(config: config, keys: testKeys(for: config.dataDir),
                                                 clock: TestClock(wallMs: 1_800_000_000_000))
        defer { engine.close() }
        var policy = try policyPreset(preset: .shopifyPos, currencyCode: "USD")
        policy.enabled = true
        try await engine.setPolicy(policy: policy)
        try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
        try await engine.rememberVendorReader()
        _ = try await engine.reportNetwork(reachable: false)
        try engine.setGateway(gateway: SwiftProcessor())
        let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: usd(1_250), contact: nil))
        let d = try await engine.beginCardPayment(request: CardPaymentRequest(
            orderId: order.id, paymentId: nil, amount: usd(1_250), tip: nil,
            behaviour: .preferOnline, tender: .card))
        _ = try await engine.confirmCardPayment(paymentId: d.paymentId, card: vendorCard())
        let report = try await engine.forwardNow()
        XCTAssertEqual(report.approved, 1)
    }

    func has(_ records: [LogRecord], _ target: String, _ message: String) -> Bool {
        records.contains { $0.target.hasPrefix(target) && $0.message.hasPrefix(message) }
    }

    func testRecordsArriveAtTheChosenLevelNoneBelowItAndNoneOnceCleared() async throws {
        // At trace the same steps log below info too (each forwarding attempt).
        let all = CollectingLogSink()
        setLogSink(minLevel: .trace, sink: all)
        do {
            try await aPaymentTakenAndForwarded()
        } catch {
            setLogSink(minLevel: .trace, sink: nil)
            throw error
        }
        XCTAssertTrue(all.records.contains { $0.level == .debug }, "\(all.records)")

        // Replaced, not cleared first: the new sink alone gets what follows.
        let info = CollectingLogSink()
        setLogSink(minLevel: .info, sink: info)
        do {
            try await aPaymentTakenAndForwarded()
        } catch {
            setLogSink(minLevel: .info, sink: nil)
            throw error
        }
        setLogSink(minLevel: .info, sink: nil)
        let records = info.records
        XCTAssertTrue(has(records, "pos_store", "store opened"), "\(records)")
        XCTAssertTrue(has(records, "pos_core", "engine opened"), "\(records)")
        XCTAssertTrue(has(records, "pos_core", "connectivity changed"), "\(records)")
        XCTAssertTrue(has(records, "pos_core", "offline payment stored"), "\(records)")
        XCTAssertTrue(has(records, "pos_core", "forwarding round finished"), "\(records)")
        let below = records.filter { $0.level == .debug || $0.level == .trace }
        XCTAssertTrue(below.isEmpty, "\(below)")

        // Cleared: nothing more arrives.
        let seen = info.records.count
        try await aPaymentTakenAndForwarded()
        XCTAssertEqual(info.records.count, seen)
        XCTAssertEqual(all.records.filter { $0.message.hasPrefix("store opened") }.count, 1,
                       "the first sink, replaced, got its run only")
    }
}
