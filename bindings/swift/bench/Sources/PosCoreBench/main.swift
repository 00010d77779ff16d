// The same steps as core/engine/benches/checkout.rs (the Rust baseline of
// the same run, passed in as POS_BENCH_RUST_CHECKOUT_NS) and
// bindings/kotlin/bench/Bench.kt: status() p50 with nothing pending, with 1
// pending and with 10,000 pending; a trivial sync call (forwardingPaused)
// and a trivial async call (eventsDelivered); a whole offline checkout p50
// and each of its three calls. Prints BENCH lines for `cargo xtask bench`.
import Foundation

let serial = "VENDOR-SN-1"
let warmUp = 20

/// A key in memory and anchors in a dictionary: the bench measures the
/// engine, not a keychain.
final class MemoryKeys: KeyProvider, @unchecked Sendable {
    private let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) })
    private var anchors: [String: Data] = [:]
    private let lock = NSLock()
    func keyEncryptionKey() throws -> KeyMaterial { KeyMaterial(keyId: "kek-1", key: key) }
    func saveAnchor(storeId: String, anchor: Data) throws {
        lock.lock(); anchors[storeId] = anchor; lock.unlock()
    }
    func loadAnchor(storeId: String) throws -> Data? {
        lock.lock(); defer { lock.unlock() }
        return anchors[storeId]
    }
}

func env(_ name: String, _ def: Int) -> Int {
    ProcessInfo.processInfo.environment[name].flatMap { Int($0) } ?? def
}

func usd(_ cents: Int64) -> Money { Money(minorUnits: cents, currency: "USD") }

func card(_ n: Int) -> CardRead {
    let sealed = Data([9, 8, 7, 6, UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
    return CardRead(entryMode: .chip, network: .visa, last4: "4242", fingerprint: "fp-4242",
                    readerModel: "Square Terminal", sealedCardData: sealed, readerSerial: serial)
}

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// One offline checkout; the time of each of its three calls.
func checkout(_ engine: PosEngine, _ n: Int) async throws -> [UInt64] {
    let total = usd(500 + Int64(n % 50) * 37)
    var t = nanos()
    let order = try await engine.createOrder(order: NewOrder(orderId: nil, total: total, contact: nil))
    let create = nanos() - t
    t = nanos()
    let d = try await engine.beginCardPayment(request: CardPaymentRequest(
        orderId: order.id, paymentId: nil, amount: total, tip: nil,
        behaviour: .preferOnline, tender: .card))
    let begin = nanos() - t
    t = nanos()
    _ = try await engine.confirmCardPayment(paymentId: d.paymentId, card: card(n))
    return [create, begin, nanos() - t]
}

func p50(_ v: [UInt64]) -> UInt64 { v.sorted()[v.count / 2] }

func callP50<T>(_ calls: Int, _ f: () throws -> T) rethrows -> UInt64 {
    for _ in 0..<warmUp { _ = try f() }
    var times: [UInt64] = []
    times.reserveCapacity(calls)
    for _ in 0..<calls {
        let t = nanos()
        _ = try f()
        times.append(nanos() - t)
    }
    return p50(times)
}

func asyncP50(_ calls: Int, _ f: () async throws -> Void) async rethrows -> UInt64 {
    for _ in 0..<warmUp { try await f() }
    var times: [UInt64] = []
    times.reserveCapacity(calls)
    for _ in 0..<calls {
        let t = nanos()
        try await f()
        times.append(nanos() - t)
    }
    return p50(times)
}

func statusP50(_ engine: PosEngine, _ calls: Int) throws -> UInt64 {
    try callP50(calls) { try engine.status() }
}

func us(_ ns: UInt64) -> String { String(format: "%.1f µs", Double(ns) / 1000) }

let statusCalls = env("POS_BENCH_STATUS_CALLS", 2_000)
let checkouts = env("POS_BENCH_CHECKOUTS", 1_000)
let pending = max(env("POS_BENCH_PENDING", 10_000), checkouts + warmUp)
let rust = ProcessInfo.processInfo.environment["POS_BENCH_RUST_CHECKOUT_NS"].flatMap { UInt64($0) }
let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pos-swift-bench-\(getpid())")
try? FileManager.default.removeItem(at: dir)
let engine = try PosEngine(config: EngineConfig(dataDir: dir.path, deviceId: "till-1", currency: "USD",
                                                maxInFlight: nil, automaticForwarding: nil, compactEvery: nil, account: nil),
                           keys: MemoryKeys())
var policy = try policyPreset(preset: .squareTerminal, currencyCode: "USD")
policy.enabled = true
try await engine.setPolicy(policy: policy)
try engine.signIn(staff: StaffSession(staffId: "cashier-1", mayTakeOfflinePayments: true))
_ = try await engine.reportNetwork(reachable: true)
_ = try await engine.reportProbe(outcome: .healthy)
_ = try await engine.reportProbe(outcome: .healthy)
try await engine.rememberReader(info: ReaderInfo(model: "Square Terminal", serial: serial, firmware: "1.0", batteryPercent: 80))
_ = try await engine.reportNetwork(reachable: false)

let statusNone = try statusP50(engine, statusCalls)
let syncNone = callP50(statusCalls) { engine.forwardingPaused() }
let asyncNone = await asyncP50(statusCalls / 2) { await engine.eventsDelivered() }
_ = try await checkout(engine, 0)
let statusOne = try statusP50(engine, statusCalls)
var n = 1
for _ in 0..<warmUp { _ = try await checkout(engine, n); n += 1 }
var times: [UInt64] = []
var steps: [[UInt64]] = [[], [], []]
for _ in 0..<checkouts {
    let t = nanos()
    let step = try await checkout(engine, n)
    times.append(nanos() - t)
    for k in 0..<3 { steps[k].append(step[k]) }
    n += 1
}
let checkoutNs = p50(times)
let stepNs = steps.map { p50($0) }
while n < pending { _ = try await checkout(engine, n); n += 1 }
let pendingNow = try engine.status().pendingOfflinePayments
precondition(pendingNow == UInt64(pending))
let statusPending = try statusP50(engine, statusCalls / 2)
let syncPending = callP50(statusCalls) { engine.forwardingPaused() }
await engine.closeAndRelease()
try? FileManager.default.removeItem(at: dir)

print("checkout and status() from Swift through the FFI (release library)")
print("  status() p50, nothing pending: \(us(statusNone))")
print("  status() p50, 1 pending: \(us(statusOne))")
print("  forwardingPaused() p50 (sync, trivial), nothing / \(pending) pending: \(us(syncNone)) / \(us(syncPending))")
print("  eventsDelivered() p50 (async, trivial): \(us(asyncNone))")
print("  offline checkout p50 of \(checkouts): \(us(checkoutNs)) (create \(us(stepNs[0])), begin \(us(stepNs[1])), confirm \(us(stepNs[2])))")
print("  status() p50, \(pending) pending: \(us(statusPending))")
func rustStep(_ k: String) -> String {
    ProcessInfo.processInfo.environment["POS_BENCH_RUST_\(k)_NS"].flatMap { UInt64($0) }.map { us($0) } ?? "-"
}
print("BENCH figure=\"Swift: checkout calls p50 (create / begin / confirm)\" target=\"-\" " +
      "baseline=\"Rust \(rustStep("CREATE")) / \(rustStep("BEGIN")) / \(rustStep("CONFIRM"))\" " +
      "value=\"\(us(stepNs[0])) / \(us(stepNs[1])) / \(us(stepNs[2]))\" verdict=info")
print("BENCH figure=\"Swift: a trivial call p50, sync (forwardingPaused) / async (eventsDelivered)\" " +
      "target=\"-\" baseline=\"Rust async (block_on) \(rustStep("ASYNC"))\" " +
      "value=\"\(us(syncNone)) / \(us(asyncNone))\" verdict=info")
for (what, ns) in [("nothing pending", statusNone), ("1 pending", statusOne), ("\(pending) pending", statusPending)] {
    print("BENCH figure=\"Swift: status() p50, \(what)\" target=\"<= 20 µs\" baseline=\"-\" " +
          "value=\"\(us(ns))\" verdict=\(ns <= 20_000 ? "met" : "missed")")
}
let ratio = rust.map { Double(checkoutNs) / Double($0) }
let verdict = ratio.map { $0 <= 1.5 ? "met" : "missed" } ?? "info"
print("BENCH figure=\"Swift: offline checkout p50 (create, begin, confirm)\" target=\"<= 1.5 × Rust\" " +
      "baseline=\"\(rust.map { "Rust \(us($0))" } ?? "-")\" " +
      "value=\"\(us(checkoutNs))\(ratio.map { String(format: " = %.2f ×", $0) } ?? "")\" verdict=\(verdict)")
