package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.poscore.EntryMode
import org.poscore.PaymentStatus

// The CLI demo's day (demo/src/lib.rs, `script`) as a cashier plays it on
// the till, in phases the tests replay up to the point they check.

/** The offline sales' amounts: 8 + (i * 5) % 40 dollars and 25 * (i % 4) cents, as in the CLI. */
internal val offlineAmounts = (0 until 8).map { i -> (8 + (i * 5L) % 40) * 100 + 25 * (i % 4) }

/** 08:20, 08:40, 09:00: three online card sales; then a cash sale. */
internal suspend fun Till.morning() {
    val cards = listOf(card("approve", "4242"), card("approve", "4444"), card("approve", "0005"))
    for (i in 0 until 3) {
        at(hm(8, 20 + 20 * i))
        val s = sell((12 + 7 * i) * 100L + 50, cards[i])
        assertEquals(PaymentStatus.APPROVED, (s.card as CardFlow.Done).status, "online sale $i: ${s.card} ${s.error} ${s.refusal}")
    }
    checkout(420)
    send(CashierIntent.PayCash())
    send(CashierIntent.NewSale)
}

/** 10:30: the shop's internet connection drops. */
internal suspend fun Till.networkDrops(): CashierScreen {
    at(hm(10, 30))
    return send(CashierIntent.DemoSetNetwork(false))
}

/**
 * 10:35 to 11:10, one every 5 minutes: 8 offline sales; the second on a card
 * the processor will decline for insufficient funds (email captured), the
 * fifth on a stolen card (phone captured). Returns the payment ids.
 */
internal suspend fun Till.offlineSales(): List<String> {
    val approve = listOf(card("approve", "4242"), card("approve", "4444"), card("approve", "0005"))
    return offlineAmounts.mapIndexed { i, amount ->
        at(hm(10, 35 + 5 * i))
        val s = when (i) {
            1 -> sell(amount, card("insufficient_funds"), email = "jane.doe@example.com")
            4 -> sell(amount, card("stolen_card"), phone = "+14155550123")
            else -> sell(amount, approve[i % approve.size])
        }
        val done = s.card as? CardFlow.Done ?: error("offline sale $i: ${s.card} ${s.error} ${s.refusal}")
        assertEquals(PaymentStatus.PENDING, done.status)
        done.paymentId
    }
}

/** 11:12: a 90.00 order split across two cards and cash; its receipt by email is queued. */
internal suspend fun Till.splitOrder(): CashierScreen {
    at(hm(11, 12))
    checkout(9_000, email = "sam@example.org")
    payCard(card("approve", "4242"), 4_000)
    payCard(card("approve", "4444"), 3_000)
    send(CashierIntent.PayCash())
    return send(CashierIntent.RequestReceipt("sam@example.org", null))
}

/** 11:13: an order over the per-order limit, then contactless (refused offline by the Square presets). */
internal suspend fun Till.refusals(): Pair<CashierScreen, CashierScreen> {
    at(hm(11, 13))
    val overLimit = sell(15_000, card("approve", "4242"))
    send(CashierIntent.NewSale)
    val contactless = sell(900, card("approve", "4242"), mode = EntryMode.CONTACTLESS)
    send(CashierIntent.NewSale)
    return overLimit to contactless
}

/** 12:00: the internet is back, but the payment service is down. */
internal suspend fun Till.serviceDownAtNoon(): CashierScreen {
    at(hm(12, 0))
    send(CashierIntent.DemoSetServiceDown(true))
    return send(CashierIntent.DemoSetNetwork(true))
}

/** 12:50: the payment service is back; forwarding runs by itself. */
internal suspend fun Till.serviceBack(): CashierScreen {
    at(hm(12, 50))
    return send(CashierIntent.DemoSetServiceDown(false))
}

/** The day up to the recovery: outage, offline sales, split order, refusals, disruption, service back. */
internal suspend fun Till.untilRecovery(): List<String> {
    open()
    networkDrops()
    val ids = offlineSales()
    splitOrder()
    send(CashierIntent.NewSale)
    refusals()
    serviceDownAtNoon()
    serviceBack()
    return ids
}
