import Foundation
import XCTest
import PosCore
@testable import PosDemoKit

/// A till in demo mode for the tests: a `DemoShop` in a fresh folder and the
/// `CashierModel` on it, with the cashier's gestures as helpers. Every helper
/// goes through intents only, as the SwiftUI layer would.
final class Till {
    let root: URL
    let keys: FileKeys
    let shop: DemoShop
    private(set) var model: CashierModel

    init(preset: PolicyPreset = .squareReader) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("pos-ios-demo-\(UUID())")
        keys = FileKeys(dir: root.appendingPathComponent("keys"))
        shop = try DemoShop(dataDir: root.appendingPathComponent("data"), keys: keys, preset: preset)
        model = CashierModel(env: shop)
    }

    var screen: CashierScreen { get async { await model.screen } }

    @discardableResult
    func send(_ intent: CashierIntent) async -> CashierScreen { await model.dispatch(intent) }

    /// Opens the till, signs `cashier` in, picks and pairs the simulated reader.
    @discardableResult
    func open(_ cashier: String = "alex", mayTakeOffline: Bool = true) async -> CashierScreen {
        await model.start()
        await send(.signIn(staffId: cashier, mayTakeOfflinePayments: mayTakeOffline))
        await send(.scanReaders)
        return await send(.pickReader(optionId: DemoShop.simulatedId))
    }

    /// The app's process ends and starts again on the same shop (folder, keys, clock).
    @discardableResult
    func restart() async -> CashierScreen {
        await model.stop()
        model = CashierModel(env: shop)
        await model.start()
        return await screen
    }

    /// Moves the demo clock to `minutes` after 08:00 on the opening day (never backwards).
    @discardableResult
    func at(_ minutes: Int64) async -> CashierScreen {
        let target = DemoShop.openingMs + minutes * 60_000
        let now = shop.nowMs()
        if target > now { await send(.demoAdvance(ms: target - now)) }
        return await screen
    }

    func hm(_ h: Int64, _ m: Int64 = 0) -> Int64 { (h - 8) * 60 + m }

    func card(_ outcome: String = "approve", _ last4: String? = nil) -> Int { shop.cardIndex(outcome, last4: last4) }

    /// Puts `minor` in the cart (one keypad amount), with the customer's contact, and checks out.
    @discardableResult
    func checkout(_ minor: Int64, email: String? = nil, phone: String? = nil) async -> CashierScreen {
        await send(.newSale)
        for d in String(minor) { await send(.keypadDigit(Int(String(d))!)) }
        await send(.addKeypadAmount)
        if email != nil || phone != nil { await send(.setContact(email: email, phone: phone)) }
        return await send(.checkout)
    }

    /// Pays `minor` (nil: the balance) by card: the screen asks for the card, the customer presents test card `card`.
    @discardableResult
    func payCard(_ card: Int, _ minor: Int64? = nil, mode: EntryMode = .chip) async -> CashierScreen {
        await send(.payByCard(amountMinor: minor))
        return await presentIfAsked(card, mode: mode)
    }

    @discardableResult
    func presentIfAsked(_ card: Int, mode: EntryMode = .chip) async -> CashierScreen {
        if await screen.card.waiting != nil {
            await send(.demoPresentCard(cardIndex: card, entryMode: mode))
            await model.awaitIdle()
        }
        return await screen
    }

    /// One whole sale: checkout and one card for the total.
    @discardableResult
    func sell(_ minor: Int64, _ card: Int, email: String? = nil, phone: String? = nil, mode: EntryMode = .chip) async -> CashierScreen {
        await checkout(minor, email: email, phone: phone)
        return await payCard(card, nil, mode: mode)
    }

    func close() async {
        await model.stop()
        shop.close()
        try? FileManager.default.removeItem(at: root)
    }
}

/// A fresh till for one test, closed after it.
func till(preset: PolicyPreset = .squareReader, _ body: (Till) async throws -> Void) async throws {
    let t = try Till(preset: preset)
    do {
        try await body(t)
    } catch {
        await t.close()
        throw error
    }
    await t.close()
}

/// The offline sales' amounts: 8 + (i * 5) % 40 dollars and 25 * (i % 4) cents, as in the CLI.
let offlineAmounts: [Int64] = (0..<8).map { (i: Int) -> Int64 in
    let dollars: Int64 = 8 + Int64(i * 5 % 40)
    let cents: Int64 = 25 * Int64(i % 4)
    return dollars * 100 + cents
}

struct UnexpectedScreen: Error, CustomStringConvertible {
    let description: String
}

// The CLI demo's day (demo/src/lib.rs, `script`) as a cashier plays it on the till.
extension Till {
    /// 08:20, 08:40, 09:00: three online card sales; then a cash sale.
    func morning() async throws {
        let cards = [card("approve", "4242"), card("approve", "4444"), card("approve", "0005")]
        for i in 0..<3 {
            await at(hm(8, 20 + 20 * Int64(i)))
            let s = await sell((12 + 7 * Int64(i)) * 100 + 50, cards[i])
            guard s.card.done?.status == .approved else { throw UnexpectedScreen(description: "online sale \(i): \(s.card) \(s.error ?? "")") }
        }
        await checkout(420)
        await send(.payCash())
        await send(.newSale)
    }

    /// 10:30: the shop's internet connection drops.
    @discardableResult
    func networkDrops() async -> CashierScreen {
        await at(hm(10, 30))
        return await send(.demoSetNetwork(up: false))
    }

    /// 10:35 to 11:10: 8 offline sales; the second declines later for insufficient funds
    /// (email captured), the fifth on a stolen card (phone captured). Returns the payment ids.
    func offlineSales() async throws -> [String] {
        let approve = [card("approve", "4242"), card("approve", "4444"), card("approve", "0005")]
        var ids: [String] = []
        for (i, amount) in offlineAmounts.enumerated() {
            await at(hm(10, 35 + 5 * Int64(i)))
            let s: CashierScreen
            switch i {
            case 1: s = await sell(amount, card("insufficient_funds"), email: "jane.doe@example.com")
            case 4: s = await sell(amount, card("stolen_card"), phone: "+14155550123")
            default: s = await sell(amount, approve[i % approve.count])
            }
            guard let done = s.card.done, done.status == .pending else {
                throw UnexpectedScreen(description: "offline sale \(i): \(s.card) \(s.error ?? "") \(String(describing: s.refusal))")
            }
            ids.append(done.paymentId)
        }
        return ids
    }

    /// 11:12: a 90.00 order split across two cards and cash; its receipt by email is queued.
    @discardableResult
    func splitOrder() async -> CashierScreen {
        await at(hm(11, 12))
        await checkout(9_000, email: "sam@example.org")
        await payCard(card("approve", "4242"), 4_000)
        await payCard(card("approve", "4444"), 3_000)
        await send(.payCash())
        return await send(.requestReceipt(email: "sam@example.org", phone: nil))
    }

    /// 11:13: an order over the per-order limit, then contactless (refused offline by the Square presets).
    func refusals() async -> (CashierScreen, CashierScreen) {
        await at(hm(11, 13))
        let overLimit = await sell(15_000, card("approve", "4242"))
        await send(.newSale)
        let contactless = await sell(900, card("approve", "4242"), mode: .contactless)
        await send(.newSale)
        return (overLimit, contactless)
    }

    /// 12:00: the internet is back, but the payment service is down.
    @discardableResult
    func serviceDownAtNoon() async -> CashierScreen {
        await at(hm(12, 0))
        await send(.demoSetServiceDown(true))
        return await send(.demoSetNetwork(up: true))
    }

    /// 12:50: the payment service is back; forwarding runs by itself.
    @discardableResult
    func serviceBack() async -> CashierScreen {
        await at(hm(12, 50))
        return await send(.demoSetServiceDown(false))
    }

    /// The day up to the recovery.
    func untilRecovery() async throws -> [String] {
        await open()
        await networkDrops()
        let ids = try await offlineSales()
        await splitOrder()
        await send(.newSale)
        _ = await refusals()
        await serviceDownAtNoon()
        await serviceBack()
        return ids
    }
}
