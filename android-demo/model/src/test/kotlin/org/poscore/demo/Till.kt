package org.poscore.demo

import java.io.File
import java.nio.file.Files
import kotlinx.coroutines.runBlocking
import org.poscore.EntryMode
import org.poscore.PolicyPreset

/**
 * A till in demo mode for the tests: a [DemoShop] in a fresh folder and the
 * [CashierModel] on it, with the cashier's gestures as helpers. Every
 * helper goes through intents only, as the Compose layer would.
 */
internal class Till(preset: PolicyPreset = PolicyPreset.SQUARE_READER) : AutoCloseable {
    val root: File = Files.createTempDirectory("pos-android-demo").toFile()
    val keys = FileKeys(File(root, "keys"))
    val shop = DemoShop(File(root, "data"), keys, preset)
    var model = CashierModel(shop)
        private set

    val screen: CashierScreen get() = model.screen.value

    suspend fun send(intent: CashierIntent): CashierScreen {
        model.dispatch(intent)
        return screen
    }

    /** Opens the till, signs [cashier] in, picks and pairs the simulated reader. */
    suspend fun open(cashier: String = "alex", mayTakeOffline: Boolean = true): CashierScreen {
        model.start()
        send(CashierIntent.SignIn(cashier, mayTakeOffline))
        send(CashierIntent.ScanReaders)
        return send(CashierIntent.PickReader(DemoShop.SIMULATED_ID))
    }

    /** The app's process ends and starts again on the same shop (folder, keys, clock). */
    suspend fun restart(): CashierScreen {
        model.stop()
        model = CashierModel(shop)
        model.start()
        return screen
    }

    /** Moves the demo clock to [minutes] after 08:00 on the opening day (never backwards). */
    suspend fun at(minutes: Long): CashierScreen {
        val target = DemoShop.OPENING_MS + minutes * 60_000
        val now = shop.nowMs()
        if (target > now) send(CashierIntent.DemoAdvance(target - now))
        return screen
    }

    fun hm(h: Int, m: Int = 0): Long = ((h - 8) * 60 + m).toLong()

    fun card(outcome: String = "approve", last4: String? = null) = shop.cardIndex(outcome, last4)

    /** Puts [minor] in the cart (one keypad amount), with the customer's contact, and checks out. */
    suspend fun checkout(minor: Long, email: String? = null, phone: String? = null): CashierScreen {
        send(CashierIntent.NewSale)
        for (d in minor.toString()) send(CashierIntent.KeypadDigit(d - '0'))
        send(CashierIntent.AddKeypadAmount)
        if (email != null || phone != null) send(CashierIntent.SetContact(email, phone))
        return send(CashierIntent.Checkout)
    }

    /**
     * Pays [minor] (default: the balance) of the current order by card: the
     * cashier starts it, the screen asks for the card, the customer presents
     * test card [card]. Returns the screen once the payment is confirmed or refused.
     */
    suspend fun payCard(card: Int, minor: Long? = null, mode: EntryMode = EntryMode.CHIP): CashierScreen {
        send(CashierIntent.PayByCard(minor))
        return presentIfAsked(card, mode)
    }

    suspend fun presentIfAsked(card: Int, mode: EntryMode = EntryMode.CHIP): CashierScreen {
        if (screen.card is CardFlow.WaitingForCard) {
            send(CashierIntent.DemoPresentCard(card, mode))
            model.awaitIdle()
        }
        return screen
    }

    /** One whole sale: checkout and one card for the total. */
    suspend fun sell(minor: Long, card: Int, email: String? = null, phone: String? = null, mode: EntryMode = EntryMode.CHIP): CashierScreen {
        checkout(minor, email, phone)
        return payCard(card, null, mode)
    }

    override fun close() {
        runBlocking { runCatching { model.stop() } }
        shop.close()
        root.deleteRecursively()
    }
}

/** `till { ... }`: a fresh till for one test, closed after it. */
internal fun till(preset: PolicyPreset = PolicyPreset.SQUARE_READER, body: suspend Till.() -> Unit) {
    Till(preset).use { t -> runBlocking { t.body() } }
}
