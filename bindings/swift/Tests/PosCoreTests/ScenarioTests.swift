import Foundation
import XCTest
@testable import PosCore

// The Swift runner of the scenario suite (docs/scenarios.md): plays each
// `tests/scenarios/*.json` (or `$POS_SCENARIOS/*.json`; `POS_SCENARIO=<name>`
// for one) on the generated Swift API only, checks each step's `expect`, and
// compares the transcript with `golden/<name>.txt`, which the Rust runner
// (tests/scenarios/run.rs, the reference) writes. Line for line the same as
// the Rust and Kotlin runners.
//
// One XCTest case per scenario: `cargo xtask test` writes
// `ScenarioCases.generated.swift` (not in git) with a `test_<name>` method per
// JSON file of the folder before building, and `scenarioCases`, the names it
// wrote. A scenario file without its method fails every scenario case.

final class ScenarioTests: XCTestCase {
    /// The scenarios' folder: `$POS_SCENARIOS`, else the repository's `tests/scenarios`.
    static var folder: URL {
        if let dir = ProcessInfo.processInfo.environment["POS_SCENARIOS"], !dir.isEmpty {
            return URL(fileURLWithPath: dir, isDirectory: true)
        }
        // This file is bindings/swift/Tests/PosCoreTests/ScenarioTests.swift.
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<5 { root.deleteLastPathComponent() }
        return root.appendingPathComponent("tests/scenarios", isDirectory: true)
    }

    /// `POS_SCENARIO`, when set: the only scenario to play.
    static var only: String? {
        ProcessInfo.processInfo.environment["POS_SCENARIO"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The scenarios to play: the folder's `*.json` (only `POS_SCENARIO`'s when set), sorted.
    static func scenarioNames() throws -> [String] {
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        return files.filter { $0.hasSuffix(".json") }
            .map { String($0.dropLast(5)) }
            .filter { only == nil || $0 == only }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Plays one scenario (what each generated `test_<name>` calls).
    func play(_ name: String) async throws {
        if let only = Self.only, only != name {
            throw XCTSkip("POS_SCENARIO=\(only)")
        }
        // Every scenario file must have its test case (none is skipped silently).
        let wanted = try Self.scenarioNames()
        let missing = wanted.filter { !scenarioCases.contains($0) }
        if !missing.isEmpty {
            let message = "scenario files without a test case (run `cargo xtask test --only swift` to regenerate "
                + "ScenarioCases.generated.swift): \(missing.joined(separator: ", "))"
            print("scenario \(name): FAILED\n\(message)")
            XCTFail(message)
            return
        }
        do {
            let steps = try await ScenarioRun.playFile(folder: Self.folder, name: name)
            print("scenario \(name): ok (\(steps) steps)")
        } catch {
            // A ScenarioFailure, or an error of the set-up (which fails the scenario too).
            print("scenario \(name): FAILED\n\(error)")
            XCTFail("scenario \(name): \(error)")
        }
    }
}

/// Why a scenario failed: a step the runner could not play, an `expect` not
/// met, or a transcript that differs from the golden one.
struct ScenarioFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Collects the engine's events for the `events` step.
final class ScenarioEvents: EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var queue: [PosEvent] = []

    func onEvent(event: PosEvent) {
        lock.lock()
        queue.append(event)
        lock.unlock()
    }

    /// Everything received so far, in order; the queue is emptied.
    func drain() -> [PosEvent] {
        lock.lock()
        defer { lock.unlock() }
        let all = queue
        queue.removeAll()
        return all
    }
}

/// The scenario's other sales channel (R18), as the Rust runner's: the
/// cursor is the number of changes made so far; from scratch it gives every
/// order, after a cursor the orders changed since and the ids removed since;
/// one page, ordered by id; throws `Unavailable` while `down`. Counts its
/// fetches.
final class WebShop: OrderSource, @unchecked Sendable {
    private let lock = NSLock()
    private var version: Int64 = 0
    /// id to (the order, or nil once removed; the version that changed it)
    private var orders: [String: (RemoteOrder?, Int64)] = [:]
    private var isDown = false
    private var fetchCount: Int64 = 0

    func fetchSince(cursor: String?) throws -> OrderBatch {
        lock.lock()
        defer { lock.unlock() }
        fetchCount += 1
        if isDown { throw InboxError.Unavailable(reason: "the web shop is down") }
        var since: Int64?
        if let c = cursor {
            guard let v = Int64(c) else { throw InboxError.Source(reason: "bad cursor") }
            since = v
        }
        var out: [RemoteOrder] = []
        var removed: [String] = []
        // By id, byte for byte, as Rust's BTreeMap orders them.
        for id in orders.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            guard let (order, changed) = orders[id] else { continue }
            if let since {
                if changed > since {
                    if let order { out.append(order) } else { removed.append(id) }
                }
            } else if let order {
                out.append(order)
            }
        }
        return OrderBatch(orders: out, removedIds: removed, nextCursor: String(version), hasMore: false)
    }

    func change(_ id: String, _ order: RemoteOrder?) {
        lock.lock()
        defer { lock.unlock() }
        version += 1
        orders[id] = (order, version)
    }

    func setDown(_ down: Bool) {
        lock.lock()
        isDown = down
        lock.unlock()
    }

    var fetches: Int64 {
        lock.lock()
        defer { lock.unlock() }
        return fetchCount
    }
}

/// The reader's events are not part of a transcript.
final class IgnoredReaderEvents: ReaderListener, @unchecked Sendable {
    func onReaderEvent(event: ReaderEvent) {}
}

private let deviceId = "till-1"
private let readerSerial = "SIM-READER-1"
private let runsLock = NSLock()
private var runs = 0

// MARK: - Reading a step's fields, as run.rs does

private func int(_ v: JSON, _ field: String) throws -> Int64 {
    guard let n = v[field].int64 else { throw ScenarioFailure("\"\(field)\" must be an integer") }
    return n
}

private func text(_ v: JSON, _ field: String) throws -> String {
    guard let s = v[field].string else { throw ScenarioFailure("\"\(field)\" must be a string") }
    return s
}

private func optText(_ v: JSON, _ field: String) throws -> String? {
    switch v[field] {
    case .null: return nil
    case .string(let s): return s
    default: throw ScenarioFailure("\"\(field)\" must be a string")
    }
}

/// One scenario being played: the engine, the processor simulator, the
/// paired simulated reader, the events received, and the payment aliases.
final class ScenarioRun {
    let parent: URL
    let dir: String
    let keys: FileKeyProvider
    let clock: TestClock
    let currency: String
    let staff: StaffSession
    var engine: PosEngine
    let sim: SimulatedProcessor
    let simReader: SimulatedReader
    let reader: CardReader
    let events = ScenarioEvents()
    let web = WebShop()
    var subscription: Subscription?
    /// Payment id to alias (`p1`, `p2`, … in the order the engine gave the ids).
    var aliases: [String: String] = [:]
    /// The scenario's order names to the engine's order ids.
    var orders: [String: String] = [:]

    private init(parent: URL, dir: String, keys: FileKeyProvider, clock: TestClock, currency: String,
                 staff: StaffSession, engine: PosEngine, sim: SimulatedProcessor,
                 simReader: SimulatedReader, reader: CardReader) {
        self.parent = parent
        self.dir = dir
        self.keys = keys
        self.clock = clock
        self.currency = currency
        self.staff = staff
        self.engine = engine
        self.sim = sim
        self.simReader = simReader
        self.reader = reader
    }

    /// Plays `<folder>/<name>.json`; returns its number of steps.
    static func playFile(folder: URL, name: String) async throws -> Int {
        let file = folder.appendingPathComponent(name + ".json")
        let data: Data
        do { data = try Data(contentsOf: file) } catch { throw ScenarioFailure("\(file.path): \(error)") }
        guard String(data: data, encoding: .utf8) != nil else { throw ScenarioFailure("not JSON: not UTF-8") }
        let scenario: JSON
        do { scenario = try JSON.parse(data) } catch { throw ScenarioFailure("not JSON: \(error)") }
        guard let given = scenario["name"].string, Render.same(given, name) else {
            throw ScenarioFailure("its \"name\" must be \"\(name)\", the file's name")
        }
        guard let steps = scenario["steps"].array else { throw ScenarioFailure("\"steps\" must be an array") }
        let run = try await ScenarioRun.start(name: name, setup: scenario["setup"])
        var transcript: [String] = []
        var problems: [String] = []
        do {
            for (i, step) in steps.enumerated() {
                let (line, result): (String, String)
                do {
                    (line, result) = try await run.step(step)
                } catch {
                    throw ScenarioFailure("step \(i + 1): \(error)")
                }
                if let want = step.get("expect") {
                    guard let want = want.string else {
                        throw ScenarioFailure("step \(i + 1): expect must be a string")
                    }
                    if !Render.same(want, result) {
                        problems.append("step \(i + 1) `\(line)`: expected `\(want)`, got `\(result)`")
                    }
                }
                transcript.append("\(line) -> \(result)")
            }
        } catch {
            await run.finish()
            throw error
        }
        await run.finish()
        let golden = folder.appendingPathComponent("golden").appendingPathComponent(name + ".txt")
        let text = transcript.joined(separator: "\n") + "\n"
        if let want = try? String(contentsOf: golden, encoding: .utf8) {
            if !Render.same(want, text) { problems.append(Render.diff(want, text)) }
        } else {
            problems.append("no golden transcript \(golden.path) (the Rust runner writes it: "
                + "POS_SCENARIOS_BLESS=1 cargo test -p pos-scenarios)")
        }
        if !problems.isEmpty { throw ScenarioFailure(problems.joined(separator: "\n")) }
        return steps.count
    }

    /// The setup of docs/scenarios.md, in run.rs's order.
    static func start(name: String, setup: JSON) async throws -> ScenarioRun {
        let known: Set<String> = ["preset", "currency", "offline", "limits", "tips", "staff", "seed", "start",
                                  "readerModel", "forcedOffline", "tapToPay"]
        if let fields = setup.sortedFields {
            if let (k, _) = fields.first(where: { !known.contains($0.0) }) {
                throw ScenarioFailure("unknown setup field \"\(Render.printable(k))\"")
            }
        } else if !setup.isNull {
            throw ScenarioFailure("\"setup\" must be an object")
        }
        let currency = try optText(setup, "currency") ?? "USD"
        let n: Int = {
            runsLock.lock()
            defer { runsLock.unlock() }
            runs += 1
            return runs
        }()
        let parent = FileManager.default.temporaryDirectory
            .appendingPathComponent("pos-swift-scenario-\(ProcessInfo.processInfo.processIdentifier)-\(n)-\(name)")
        try? FileManager.default.removeItem(at: parent)
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        var engine: PosEngine?
        do {
            return try await start(setup: setup, parent: parent, currency: currency, opened: &engine)
        } catch {
            await engine?.closeAndRelease()
            try? FileManager.default.removeItem(at: parent)
            throw error
        }
    }

    /// The rest of `start`, in `parent`; `opened` is the engine once open.
    private static func start(setup: JSON, parent: URL, currency: String,
                              opened: inout PosEngine?) async throws -> ScenarioRun {
        let dir = parent.appendingPathComponent("data").path
        // The key file (and the anchors beside it) outside the data folder.
        let keys = FileKeyProvider(parent.appendingPathComponent("keys.kek"))
        let clock = TestClock(wallMs: setup["start"].int64 ?? 1_800_000_000_000)
        let sim = try SimulatedProcessor.start(seed: setup["seed"].uint64 ?? 1)
        let engine = try open(dir: dir, keys: keys, clock: clock, currency: currency)
        opened = engine
        // The policy: the preset, edited, trusting the simulator's readers.
        let preset: PolicyPreset
        switch try optText(setup, "preset") ?? "shopify-pos" {
        case "shopify-pos": preset = .shopifyPos
        case "square-reader": preset = .squareReader
        case "square-terminal": preset = .squareTerminal
        case let other: throw ScenarioFailure("unknown preset \"\(Render.printable(other))\"")
        }
        var policy = try policyPreset(preset: preset, currencyCode: currency)
        policy.enabled = setup["offline"].bool ?? true
        if let tips = setup["tips"].bool { policy.tipsAllowed = tips }
        if let tap = setup["tapToPay"].bool { policy.tapToPayOnPhone = tap }
        if let forced = setup["forcedOffline"].bool { policy.offlineWhenForced = forced }
        if let limits = setup.get("limits") {
            guard let i = policy.limits.firstIndex(where: { $0.currency == currency }) else {
                throw ScenarioFailure("the preset has no limits for this currency")
            }
            guard let fields = limits.sortedFields else { throw ScenarioFailure("\"limits\" must be an object") }
            for (k, v) in fields {
                switch k {
                case "perPayment": policy.limits[i].perPayment = v.int64
                case "perOrder":
                    guard let n = v.int64 else { throw ScenarioFailure("perOrder must be an integer") }
                    policy.limits[i].perOrder = n
                case "device": policy.limits[i].deviceAmount = v.int64
                default: throw ScenarioFailure("unknown limit \"\(Render.printable(k))\"")
                }
            }
        }
        let authority = simulatorReaderAuthority()
        if !policy.readerAuthorities.contains(authority) { policy.readerAuthorities.append(authority) }
        let model = try optText(setup, "readerModel") ?? policy.offlineReaders.first ?? ""
        try await engine.setPolicy(policy: policy)
        try sim.attach(engine: engine)
        try await goOnline(engine)
        let simReader = try SimulatedReader(model: model, serial: readerSerial, batteryPercent: 80,
                                            processorKey: sim.processorKey(), mtu: 185)
        let reader = try await simReader.connect(listener: IgnoredReaderEvents())
        _ = try await reader.pair(engine: engine)
        let staffSetup = setup["staff"]
        let staff = StaffSession(staffId: try optText(staffSetup, "id") ?? "cashier-1",
                                 mayTakeOfflinePayments: staffSetup["offline"].bool ?? true)
        try engine.signIn(staff: staff)
        let run = ScenarioRun(parent: parent, dir: dir, keys: keys, clock: clock, currency: currency, staff: staff,
                              engine: engine, sim: sim, simReader: simReader, reader: reader)
        try run.engine.setOrderSource(source: run.web)
        try run.subscribe()
        // The transcript starts after the setup: its events are dropped.
        await run.engine.eventsDelivered()
        _ = run.events.drain()
        return run
    }

    static func open(dir: String, keys: FileKeyProvider, clock: TestClock, currency: String) throws -> PosEngine {
        // Forwarded by `forward` steps only, one request at a time: the
        // simulator's seeded faults then hit the same requests in every run.
        let config = EngineConfig(dataDir: dir, deviceId: deviceId, currency: currency,
                                  maxInFlight: 1, automaticForwarding: false)
        return try PosEngine.withTestClock(config: config, keys: keys, clock: clock)
    }

    static func goOnline(_ engine: PosEngine) async throws {
        _ = try await engine.reportNetwork(reachable: true)
        _ = try await engine.reportProbe(outcome: .healthy)
        let state = try await engine.reportProbe(outcome: .healthy)
        guard case .online = state else {
            throw ScenarioFailure("not online after two healthy probes: \(state)")
        }
    }

    func subscribe() throws {
        subscription = try engine.subscribe(listener: events)
    }

    func finish() async {
        subscription?.cancel()
        await engine.closeAndRelease()
        try? FileManager.default.removeItem(at: parent)
    }

    /// `n` minor units of the setup's currency.
    func amount(_ n: Int64) -> Money { Money(minorUnits: n, currency: currency) }

    /// The amount in the step's `currency` (default: the setup's); the FFI
    /// refuses an unknown code with `InvalidInput` where it is used.
    func moneyIn(_ step: JSON, _ n: Int64) throws -> Money {
        Money(minorUnits: n, currency: try optText(step, "currency") ?? currency)
    }

    func alias(_ id: String) -> String {
        if let a = aliases[id] { return a }
        let a = "p\(aliases.count + 1)"
        aliases[id] = a
        return a
    }

    func aliasOf(_ id: String) -> String { aliases[id] ?? "p?" }

    /// The engine's id of the step's `order`; an unknown name gives an id
    /// no order has (`ord_` and 32 zeros, as run.rs's `OrderId::from_random([0; 16])`).
    func orderId(_ v: JSON) throws -> String {
        let name = try text(v, "order")
        return orders[name] ?? "ord_" + String(repeating: "0", count: 32)
    }

    // MARK: - Steps

    func step(_ step: JSON) async throws -> (String, String) {
        let verb = try text(step, "do")
        switch verb {
        case "network":
            guard let b = step["reachable"].bool else { throw ScenarioFailure("\"reachable\" must be a boolean") }
            return ("network \(b)", try await result { Render.connectivity(try await self.engine.reportNetwork(reachable: b)) })
        case "probe":
            let o = try text(step, "outcome")
            let outcome: ProbeOutcome
            switch o {
            case "healthy": outcome = .healthy
            case "unhealthy": outcome = .unhealthy
            case "unreachable": outcome = .unreachable
            default: throw ScenarioFailure("unknown probe outcome \"\(Render.printable(o))\"")
            }
            return ("probe \(o)", try await result { Render.connectivity(try await self.engine.reportProbe(outcome: outcome)) })
        case "advance":
            let ms = try int(step, "ms")
            clock.advanceMs(ms: UInt64(max(ms, 0)))
            engine.nudgeForwarding()
            return ("advance \(ms)", "ok")
        case "order":
            let id = try text(step, "id")
            let total = try int(step, "total")
            let email = try optText(step, "email")
            let phone = try optText(step, "phone")
            let amount = try moneyIn(step, total)
            let r = try await result {
                let contact = (email == nil && phone == nil) ? nil : try CustomerContact(email: email, phone: phone)
                let o = try await self.engine.createOrder(order: NewOrder(orderId: id, total: amount, contact: contact))
                self.orders[id] = o.id
                return "ok"
            }
            return ("order \(Render.printable(id)) \(total)", r)
        case "card":
            let amount = try int(step, "amount")
            let line = "card \(try text(step, "order")) \(amount)"
            return (line, try await card(step, amount))
        case "cash":
            let order = try orderId(step)
            let amount = try int(step, "amount")
            let m = try moneyIn(step, amount)
            let r = try await result { Render.balance(try await self.engine.addCash(orderId: order, amount: m)) }
            return ("cash \(try text(step, "order")) \(amount)", r)
        case "order-status":
            let id = try text(step, "id")
            guard let order = orders[id] else { throw ScenarioFailure("no order \"\(Render.printable(id))\" in this scenario") }
            return ("order-status \(id)", try await result { Render.balance(try self.engine.order(orderId: order)) })
        case "guard":
            let action = try text(step, "action")
            let a: GuardedAction
            switch action {
            case "logout": a = .logOut
            case "switch-location": a = .switchLocation
            case "reset-store": a = .resetStore
            case "remove-device": a = .removeDevice
            default: throw ScenarioFailure("unknown guarded action \"\(Render.printable(action))\"")
            }
            var over: ActionOverride?
            if let reason = try optText(step, "override") {
                // The money at risk as the app shows it: the pending amount
                // of each currency with payments pending (run.rs reads the
                // same figures from `exposure()`).
                let status: EngineStatus
                do { status = try engine.status() } catch { throw ScenarioFailure("\(error)") }
                let atRisk = status.totals.filter { $0.pendingCount > 0 }.map { $0.pendingAmount }
                over = ActionOverride(staffId: staff.staffId, reason: reason, acknowledgedAtRisk: atRisk)
            }
            let r = try await result {
                switch try await self.engine.guardedAction(action: a, override: over) {
                case .allowed: return "allowed"
                case .overridden: return "allowed-with-override"
                }
            }
            return ("guard \(action)", r)
        case "forward":
            return ("forward", try await result {
                let f = try await self.engine.forwardNow()
                return "attempted=\(f.attempts) approved=\(f.approved) declined=\(f.declined) "
                    + "failed=\(f.failed) unknown=\(f.outcomeUnknown)"
            })
        case "confirm":
            let name = try text(step, "payment")
            let id = aliases.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
                .first { $0.value == name }?.key ?? name
            return ("confirm \(name)", try await confirmAgain(id))
        case "close":
            engine.close()
            return ("close", "ok")
        case "receipt":
            let order = try orderId(step)
            let email = try optText(step, "email")
            let phone = try optText(step, "phone")
            let line = "receipt \(try text(step, "order")) \(email != nil ? "email" : "sms")"
            if (email == nil) == (phone == nil) {
                throw ScenarioFailure("a receipt step names an \"email\" or a \"phone\"")
            }
            return (line, try await result {
                let channel: ReceiptChannel = email != nil
                    ? .email(recipient: try CustomerContact(email: email, phone: nil))
                    : .sms(recipient: try CustomerContact(email: nil, phone: phone))
                _ = try await self.engine.requestReceipt(orderId: order, channel: channel)
                return "queued=\(try self.engine.queuedReceiptCount())"
            })
        case "receipts":
            return ("receipts", try await result { "queued=\(try self.engine.queuedReceiptCount())" })
        case "audit":
            return ("audit", try await result {
                let csv = try self.engine.exportAuditCsv()
                let lines = csv.split(whereSeparator: \.isNewline).dropFirst()
                return lines.map { line -> String in
                    let cells = line.split(separator: ",", omittingEmptySubsequences: false)
                    return cells.count > 4 ? String(cells[4]) : "?"
                }.joined(separator: " ")
            })
        case "wall":
            let ms = try int(step, "ms")
            clock.setWallMs(wallMs: clock.wallMs() + ms)
            engine.nudgeForwarding()
            return ("wall \(ms)", "ok")
        case "network-change":
            return ("network-change", try await result {
                try self.engine.mayChangeNetworkWhileOffline() ? "allowed" : "refused"
            })
        case "pause":
            return ("pause", try await result { try self.engine.pauseForwarding(); return "ok" })
        case "resume":
            return ("resume", try await result { try self.engine.resumeForwarding(); return "ok" })
        case "tick":
            return ("tick", try await result {
                let t = try await self.engine.tick()
                return "expired=\(t.expiredPaymentIds.count) unknown=\(t.outcomeUnknownPaymentIds.count)"
            })
        case "status":
            return ("status", try await result { Render.statusLine(try self.engine.status(), self.currency) })
        case "payments":
            return ("payments", try await result {
                let items = try self.engine.listPayments().map { p -> (String, String) in
                    let a = self.aliasOf(p.id)
                    return (a, "\(a):\(Render.upperSnake(p.status))")
                }
                return Render.joinedByAlias(items)
            })
        case "processor":
            if let b = step["outage"].bool {
                sim.setOutage(on: b)
                return ("processor outage \(b)", "ok")
            }
            let fault = try text(step, "fault")
            // run.rs: `as_u64().map(|r| r as u32)`.
            let rate = step["rate"].uint64.map { UInt32(truncatingIfNeeded: $0) }
            let r: String
            if fault == "none" {
                sim.clearFaults()
                r = "ok"
            } else {
                r = try await result { try self.sim.setFault(mode: fault, ratePerMille: rate); return "ok" }
            }
            return ("processor fault \(fault)", r)
        case "ledger":
            let items = sim.ledger().map { c -> (String, String) in
                let a = aliasOf(c.paymentId)
                return (a, "\(a):\(c.outcome):\(Render.money(c.amount))")
            }
            return ("ledger", Render.joinedByAlias(items))
        case "events":
            await engine.eventsDelivered()
            let items = events.drain().compactMap { event($0) }
            return ("events", items.isEmpty ? "none" : items.joined(separator: "; "))
        case "lock":
            guard let b = step["locked"].bool else { throw ScenarioFailure("\"locked\" must be a boolean") }
            keys.locked = b
            return ("lock \(b)", "ok")
        case "reopen":
            subscription?.cancel()
            subscription = nil
            await engine.closeAndRelease()
            do {
                engine = try ScenarioRun.open(dir: dir, keys: keys, clock: clock, currency: currency)
            } catch let e as PosError {
                // The shut-down engine stays: later steps see `error Closed`.
                return ("reopen", Render.error(e))
            }
            try sim.attach(engine: engine)
            try engine.setOrderSource(source: web)
            try engine.signIn(staff: staff)
            try subscribe()
            await engine.eventsDelivered()
            // The new subscription's snapshot is not a step's event.
            _ = events.drain()
            return ("reopen", "ok")
        case "web-order":
            let id = try text(step, "id")
            let channel = try optText(step, "channel") ?? "web"
            let total = try int(step, "total")
            web.change(id, RemoteOrder(id: id, channel: channel, placedAtMs: clock.wallMs(),
                                       total: Money(minorUnits: total, currency: currency)))
            return ("web-order \(id) \(total)", "ok")
        case "web-remove":
            let id = try text(step, "id")
            web.change(id, nil)
            return ("web-remove \(id)", "ok")
        case "web-down":
            guard let b = step["down"].bool else { throw ScenarioFailure("\"down\" must be a boolean") }
            web.setDown(b)
            return ("web-down \(b)", "ok")
        case "web-fetches":
            return ("web-fetches", "fetches=\(web.fetches)")
        case "inbox-refresh":
            return ("inbox-refresh", try await result {
                switch try await engine.refreshInbox() {
                case .offline: return "offline"
                case .alreadyRefreshing: return "already-refreshing"
                case .discarded: return "discarded"
                case let .updated(added, updated, removed, more):
                    return "added=\(added) updated=\(updated) removed=\(removed) more=\(more)"
                }
            })
        case "inbox":
            return ("inbox", try await result {
                switch try engine.inbox() {
                case .hidden: return "hidden"
                case .syncing: return "syncing"
                case let .ready(orders):
                    if orders.isEmpty { return "ready none" }
                    return "ready " + orders.map { "\($0.id):\($0.channel):\($0.total.minorUnits)" }
                        .joined(separator: " ")
                }
            })
        default:
            throw ScenarioFailure("unknown step \"\(Render.printable(verb))\"")
        }
    }

    /// `begin`, the card read (by the simulated reader, or a Tap to Pay read
    /// the app makes itself), `confirm`.
    func card(_ step: JSON, _ amount: Int64) async throws -> String {
        let order = try orderId(step)
        let tip = step["tip"].int64.map { self.amount($0) }
        let behaviour: OfflineBehaviour
        switch try optText(step, "behaviour") ?? "prefer-online" {
        case "prefer-online": behaviour = .preferOnline
        case "require-online": behaviour = .requireOnline
        case "force-offline": behaviour = .forceOffline
        case let other: throw ScenarioFailure("unknown behaviour \"\(Render.printable(other))\"")
        }
        let entry: EntryMode
        switch try optText(step, "entry") ?? "chip" {
        case "chip": entry = .chip
        case "contactless": entry = .contactless
        case "swipe": entry = .swipe
        case "manual": entry = .manual
        case let other: throw ScenarioFailure("unknown entry mode \"\(Render.printable(other))\"")
        }
        let cardName = try optText(step, "card") ?? "approve"
        guard let testCard = simulatorTestCards().first(where: { c in
            c.outcome == "approve" ? (cardName == "approve" && c.pan.hasSuffix("4242")) : c.outcome == cardName
        }) else { throw ScenarioFailure("no test card \"\(Render.printable(cardName))\"") }
        let network: CardNetwork
        switch try optText(step, "network") {
        case nil: network = testCard.network
        case "visa"?: network = .visa
        case "mastercard"?: network = .mastercard
        case "amex"?: network = .amex
        case let other?: throw ScenarioFailure("unknown network \"\(Render.printable(other))\"")
        }
        let tender: TenderKind
        switch try optText(step, "tender") ?? "card" {
        case "card": tender = .card
        case "gift-card": tender = .giftCard
        case "bnpl": tender = .buyNowPayLater
        case let other: throw ScenarioFailure("unknown tender \"\(Render.printable(other))\"")
        }
        let m = try moneyIn(step, amount)
        let decision: PaymentDecision
        do {
            decision = try await engine.beginCardPayment(request: CardPaymentRequest(
                orderId: order, paymentId: nil, amount: m, tip: tip, behaviour: behaviour, tender: tender))
        } catch let e as PosError {
            return Render.error(e)
        }
        let a = alias(decision.paymentId)
        let read: CardRead
        switch try optText(step, "reader") ?? "sim" {
        case "sim":
            read = try await readCard(decision.challenge, testCard, network, entry)
        case "phone":
            // A Tap to Pay read the app makes itself, through the platform's SDK.
            read = CardRead(entryMode: entry, network: network, last4: String(testCard.pan.suffix(4)),
                            fingerprint: nil, readerModel: "Tap to Pay",
                            sealedCardData: Data(repeating: 0x70, count: 32), readerSerial: nil,
                            readerSignature: nil, tapToPayOnPhone: true)
        case let other:
            throw ScenarioFailure("unknown reader \"\(Render.printable(other))\"")
        }
        return try await result {
            let p = try await self.engine.confirmCardPayment(paymentId: decision.paymentId, card: read)
            return "\(a) \(Render.upperSnake(p.status))"
        }
    }

    /// The simulated reader reads `card` for `challenge`.
    func readCard(_ challenge: CardChallenge, _ card: SimulatedTestCard, _ network: CardNetwork,
                  _ entry: EntryMode) async throws -> CardRead {
        simReader.presentCard(pan: card.pan, expiry: card.expiry, network: network, entryMode: entry)
        do {
            return try await reader.takeCard(challenge: challenge,
                                             entryModes: [.chip, .contactless, .swipe, .manual], offline: true)
        } catch {
            throw ScenarioFailure("the simulated reader failed: \(error)")
        }
    }

    /// Reads a card again for a payment already begun (or confirmed, or
    /// unknown) and confirms it: what an app does when it confirms twice.
    func confirmAgain(_ id: String) async throws -> String {
        let challenge: CardChallenge
        do {
            challenge = try engine.cardChallenge(paymentId: id)
        } catch let e as PosError {
            return Render.error(e)
        }
        let testCard = simulatorTestCards()[0]
        simReader.presentCard(pan: testCard.pan, expiry: testCard.expiry, network: testCard.network, entryMode: .chip)
        let read: CardRead
        do {
            read = try await reader.takeCard(challenge: challenge, entryModes: [.chip], offline: true)
        } catch {
            throw ScenarioFailure("the simulated reader failed: \(error)")
        }
        return try await result {
            let p = try await self.engine.confirmCardPayment(paymentId: id, card: read)
            return "\(self.alias(p.id)) \(Render.upperSnake(p.status))"
        }
    }

    /// An event as a transcript shows it; nil for those left out.
    func event(_ e: PosEvent) -> String? {
        switch e {
        case .connectivityChanged(_, let to, _, _):
            return "ConnectivityChanged \(Render.connectivity(to))"
        case .paymentStateChanged(let id, _, let status, _):
            return "PaymentStateChanged \(alias(id)) \(Render.upperSnake(status))"
        case .paymentDeclined(let notice):
            return "PaymentDeclined \(alias(notice.paymentId)) \(Render.declineCode(notice.reason))"
        case .paymentExpired(let id, _, _):
            return "PaymentExpired \(alias(id))"
        case .paymentOutcomeUnknown(let id, _, _):
            return "PaymentOutcomeUnknown \(alias(id))"
        case .sessionWarning:
            return "SessionWarning"
        case .limitNear:
            return "LimitNear"
        case .forwardingBlocked:
            return "ForwardingBlocked"
        case .forwardingUnblocked:
            return "ForwardingUnblocked"
        case .snapshot, .forwardingProgress, .anchorSaveFailed, .storeVerificationFailed, .closed:
            return nil
        }
    }
}

// MARK: - Rendering, as run.rs renders

/// The step's result, or the line of the `PosError` it threw; any other
/// error fails the scenario.
private func result(_ body: () async throws -> String) async throws -> String {
    do {
        return try await body()
    } catch let e as PosError {
        return Render.error(e)
    }
}

/// How run.rs renders results, events and figures.
enum Render {
    /// `refused <rule> <kind>[ limit=<m>][ current=<m>][ attempted=<m>]`, or `error <Variant>`.
    static func error(_ e: PosError) -> String {
        if case .Refused(let rule, let kind, _, let limit, let current, let attempted) = e {
            var s = "refused \(rule) \(kind)"
            for (k, v) in [("limit", limit), ("current", current), ("attempted", attempted)] {
                if let m = v { s += " \(k)=\(money(m))" }
            }
            return s
        }
        return "error \(variant(e))"
    }

    /// The variant's name, as the FFI's `PosError` calls it.
    static func variant(_ e: PosError) -> String {
        switch e {
        case .InvalidConfig: return "InvalidConfig"
        case .InvalidInput: return "InvalidInput"
        case .InvalidPolicy: return "InvalidPolicy"
        case .Refused: return "Refused"
        case .OnlineRequired: return "OnlineRequired"
        case .RouteChanged: return "RouteChanged"
        case .OnlineUnavailable: return "OnlineUnavailable"
        case .DuplicatePayment: return "DuplicatePayment"
        case .ReaderNotPaired: return "ReaderNotPaired"
        case .CardReadMismatch: return "CardReadMismatch"
        case .AccountMismatch: return "AccountMismatch"
        case .NotFound: return "NotFound"
        case .NotSignedIn: return "NotSignedIn"
        case .ActionRefused: return "ActionRefused"
        case .InvalidTransition: return "InvalidTransition"
        case .StoreLocked: return "StoreLocked"
        case .WrongKey: return "WrongKey"
        case .StoreIntegrity: return "StoreIntegrity"
        case .Storage: return "Storage"
        case .Closed: return "Closed"
        case .OrderSourceFailed: return "OrderSourceFailed"
        case .Internal: return "Internal"
        case .Callback: return "Callback"
        }
    }

    /// The processor's wire code of a decline reason (`gateway::wire::decline_code`).
    static func declineCode(_ r: DeclineReason) -> String {
        switch r {
        case .insufficientFunds: return "insufficient_funds"
        case .lostCard: return "lost_card"
        case .stolenCard: return "stolen_card"
        case .expiredCard: return "expired_card"
        case .doNotHonour: return "do_not_honour"
        case .processingError: return "processing_error"
        case .other(let code): return code
        case .replayed: return "replayed"
        case .mismatch: return "mismatch"
        }
    }

    /// Byte for byte, as Rust compares (Swift's `==` equates canonically equivalent strings).
    static func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    static func money(_ m: Money) -> String { "\(m.minorUnits) \(m.currency)" }

    static func balance(_ o: OrderView) -> String { "balance \(money(o.balance)) \(upperSnake(o.status))" }

    static func connectivity(_ c: ConnectivityStatus) -> String {
        switch c {
        case .unknown: return "UNKNOWN"
        case .online: return "ONLINE"
        case .networkOutage: return "NETWORK_OUTAGE"
        case .serviceDisruption: return "SERVICE_DISRUPTION"
        }
    }

    /// A Swift enum case's name in upper snake case: `failedToForward` → `FAILED_TO_FORWARD`.
    static func upperSnake(_ value: Any) -> String {
        var out = ""
        for (i, c) in String(describing: value).unicodeScalars.enumerated() {
            if i > 0, ("A"..."Z").contains(c) { out += "_" }
            out += String(c).uppercased()
        }
        return out
    }

    static func statusLine(_ s: EngineStatus, _ currency: String) -> String {
        let figures: [String]
        if let t = s.totals.first(where: { $0.currency == currency }) {
            figures = ["\(t.pendingCount)/\(money(t.pendingAmount))", "\(t.approvedCount)/\(money(t.approvedAmount))",
                       "\(t.declinedCount)/\(money(t.declinedAmount))", "\(t.expiredCount)/\(money(t.expiredAmount))"]
        } else {
            figures = Array(repeating: "0/0 \(currency)", count: 4)
        }
        return "\(connectivity(s.connectivity)) pending=\(figures[0]) approved=\(figures[1]) "
            + "declined=\(figures[2]) expired=\(figures[3])"
    }

    /// Items ordered by alias (`p2` before `p10`; stable), space-separated, or `none`.
    static func joinedByAlias(_ items: [(String, String)]) -> String {
        let sorted = items.enumerated().sorted { x, y in
            let (a, b) = (x.element.0, y.element.0)
            if a.utf8.count != b.utf8.count { return a.utf8.count < b.utf8.count }
            if !same(a, b) { return Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }
            return x.offset < y.offset
        }
        return sorted.isEmpty ? "none" : sorted.map { $0.element.1 }.joined(separator: " ")
    }

    /// A string as a transcript shows it: control characters as `\xNN`.
    static func printable(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            if c.value < 0x20 {
                out += "\\x" + (c.value < 0x10 ? "0" : "") + String(c.value, radix: 16)
            } else {
                out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func diff(_ want: String, _ got: String) -> String {
        // Rust's `str::lines`: split on \n, a trailing \r dropped, no last empty line.
        func lines(_ s: String) -> [String] {
            var l = s.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false)
                .map { String(String.UnicodeScalarView($0)) }
            if l.last == "" { l.removeLast() }
            return l.map { $0.unicodeScalars.last == "\r" ? String($0.unicodeScalars.dropLast()) : $0 }
        }
        let (w, g) = (lines(want), lines(got))
        for i in 0..<max(w.count, g.count) {
            let a = i < w.count ? w[i] : nil
            let b = i < g.count ? g[i] : nil
            if a.map({ Array($0.utf8) }) != b.map({ Array($0.utf8) }) {
                return "transcript differs from the golden at line \(i + 1):\n  golden: \(a ?? "<end>")\n  got:    \(b ?? "<end>")"
            }
        }
        return "transcript differs from the golden"
    }
}
