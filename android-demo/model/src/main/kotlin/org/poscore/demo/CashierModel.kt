package org.poscore.demo

import java.time.Instant
import java.time.format.DateTimeFormatter
import java.util.Locale
import java.util.concurrent.ConcurrentLinkedQueue
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import org.poscore.ActionOverride
import org.poscore.CardPaymentRequest
import org.poscore.CardRead
import org.poscore.CardReader
import org.poscore.ConnectivityStatus
import org.poscore.CurrencyLimits
import org.poscore.CustomerContact
import org.poscore.EngineStatus
import org.poscore.EntryMode
import org.poscore.EventListener
import org.poscore.GuardOutcome
import org.poscore.GuardedAction
import org.poscore.Money
import org.poscore.NewOrder
import org.poscore.OfflineBehaviour
import org.poscore.OfflinePolicy
import org.poscore.PaymentDecision
import org.poscore.PaymentRoute
import org.poscore.PaymentStatus
import org.poscore.PaymentView
import org.poscore.PosEngine
import org.poscore.PosEvent
import org.poscore.PosException
import org.poscore.ReaderEvent
import org.poscore.ReaderException
import org.poscore.ReaderListener
import org.poscore.ReceiptChannel
import org.poscore.StaffSession
import org.poscore.Subscription
import org.poscore.Tender
import org.poscore.TenderKind
import org.poscore.defaultReconnectSettings
import org.poscore.policyPreset

/**
 * The cashier app's state and decisions, in plain Kotlin: the Compose layer
 * renders [screen] and calls [send]; the platform glue sends the network,
 * lifecycle, permission and wake-up intents. Intents are handled one at a
 * time; after each one (and after each engine event) the screen is rebuilt
 * from the engine's state, so a new process shows the same pending list,
 * declines and expiries as the one before it.
 *
 * Nothing here touches Android: the same class runs in the app and in the
 * JVM tests of `cargo xtask test`, against the real library.
 */
class CashierModel(private val env: CashierEnvironment) {
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    private val mutex = Mutex()
    private val _screen = MutableStateFlow(CashierScreen(demo = demoPanel()))

    /** What the app shows. */
    val screen: StateFlow<CashierScreen> = _screen.asStateFlow()

    private var engine: PosEngine? = null
    private var subscription: Subscription? = null
    private val events = ConcurrentLinkedQueue<PosEvent>()
    private val readerEvents = ConcurrentLinkedQueue<ReaderEvent>()
    @Volatile private var closed = false
    /** A network report that came before the engine was open. */
    private var earlyNetwork: Boolean? = null
    private val refreshQueued = java.util.concurrent.atomic.AtomicBoolean(false)

    // What only this process knows.
    private var phaseOverride: Phase? = Phase.STARTING
    private var blockingError: String? = null
    private var tab = Tab.CHECKOUT
    private var bluetooth = BluetoothAccess.NOT_REQUESTED
    private var readerOptions = emptyList<ReaderOption>()
    private var reader: CardReader? = null
    private var connected: ConnectedReader? = null
    private var readerStatus: String? = null
    private var readerError: String? = null
    private data class Line(val name: String, val unitMinor: Long, var quantity: Int)
    private val cart = mutableListOf<Line>()
    private var digits = ""
    private var contactEmail: String? = null
    private var contactPhone: String? = null
    private var orderId: String? = null
    private var card: CardFlow = CardFlow.Idle
    private var cardJob: Job? = null
    private var cancelRequested = false
    private var refusal: RefusalNotice? = null
    private var error: String? = null
    private var logout: LogoutPanel? = null
    private val notices = ArrayList<Notice>()
    private var audit: AuditExport? = null
    private var preset: org.poscore.PolicyPreset? = null
    /** The engine's own banner texts (ConnectivityChanged.banner), by kind. */
    private val bannerTexts = HashMap<BannerKind, String>()
    /** Full contacts from decline events (the store shows only a masked hint). */
    private val declineContacts = HashMap<String, String>()
    /** The backlog the forwarding bar measures: every payment seen unsettled since the last fully settled one. */
    private val backlog = LinkedHashMap<String, Money>()

    // --- public API -------------------------------------------------------

    /** Opens the engine (a new process does the same: same folder, same pending list). */
    suspend fun start() = mutex.withLock {
        if (engine != null || closed) return@withLock
        try {
            val e = env.openEngine()
            engine = e
            subscription = e.subscribe(object : EventListener {
                override fun onEvent(event: PosEvent) {
                    events.add(event)
                    // Events the cashier did not cause (automatic forwarding, expiry)
                    // reach the screen on their own; a burst makes one refresh.
                    if (!closed && refreshQueued.compareAndSet(false, true)) {
                        scope.launch {
                            mutex.withLock {
                                refreshQueued.set(false)
                                if (!closed) refresh()
                            }
                        }
                    }
                }
            })
            env.prepare(e)
            phaseOverride = null
            (env.demo?.networkUp ?: earlyNetwork)?.let { e.reportNetwork(it) }
            env.driver.wake(e)
        } catch (e: PosException) {
            phaseOverride = Phase.BLOCKED
            blockingError = openError(e)
        }
        refresh()
    }

    /** Handles [intent] and rebuilds the screen; returns when both are done. */
    suspend fun dispatch(intent: CashierIntent) {
        mutex.withLock {
            try {
                handle(intent)
            } catch (e: PosException) {
                shown(e)
            } catch (e: ReaderException) {
                error = readerProblem(e)
            } catch (e: IllegalArgumentException) {
                error = e.message
            }
            refresh()
        }
    }

    /** For the UI: fire and forget. */
    fun send(intent: CashierIntent): Job = scope.launch { dispatch(intent) }

    /** Waits until the card in progress (if any) is read and confirmed or given up. */
    suspend fun awaitIdle() {
        cardJob?.join()
    }

    /** Closes the engine and the reader link (the app's process ends). */
    suspend fun stop() {
        mutex.withLock {
            closed = true
            cardJob?.cancel()
            subscription?.cancel()
            subscription?.close()
            subscription = null
            reader?.close()
            reader = null
            engine?.let {
                try {
                    it.closeAndRelease()
                } finally {
                    it.close()
                }
            }
            engine = null
            phaseOverride = Phase.CLOSED
            _screen.value = _screen.value.copy(phase = Phase.CLOSED)
        }
        scope.cancel()
    }

    // --- intents ----------------------------------------------------------

    private fun need(): PosEngine = engine ?: throw IllegalArgumentException("The payment store is not open.")

    private suspend fun handle(intent: CashierIntent) {
        when (intent) {
            is CashierIntent.SignIn -> {
                need().signIn(StaffSession(intent.staffId, intent.mayTakeOfflinePayments))
                logout = null
            }
            CashierIntent.LogOut -> logOut(null)
            is CashierIntent.LogOutWithOverride -> {
                val atRisk = (logout as? LogoutPanel.Refused)?.atRisk ?: currentAtRisk()
                logOut(ActionOverride(intent.managerId, intent.reason, atRisk))
            }
            CashierIntent.DismissLogout -> logout = null

            // The platform may speak before the engine is open: the last
            // network report is kept for the open, the rest waits for it.
            is CashierIntent.NetworkChanged -> engine?.let {
                it.reportNetwork(intent.reachable)
                env.driver.wake(it)
            } ?: run { earlyNetwork = intent.reachable }
            CashierIntent.AppForeground -> engine?.let {
                it.onForeground()
                env.driver.wake(it)
            }
            CashierIntent.Wake -> engine?.let { env.driver.wake(it) }
            // A snapshot the next start opens from, the rollback anchor saved, probes paused.
            CashierIntent.AppBackground -> engine?.onBackground()
            is CashierIntent.BluetoothPermission -> {
                bluetooth = if (intent.granted) BluetoothAccess.GRANTED else BluetoothAccess.DENIED
                readerOptions = env.readers.scan(bluetooth == BluetoothAccess.GRANTED)
            }

            is CashierIntent.ShowTab -> tab = intent.tab

            CashierIntent.ScanReaders -> readerOptions = env.readers.scan(bluetooth == BluetoothAccess.GRANTED)
            is CashierIntent.PickReader -> pickReader(intent.optionId)

            is CashierIntent.AddItem -> {
                require(intent.unitMinor > 0) { "An item needs a price." }
                val same = cart.firstOrNull { it.name == intent.name && it.unitMinor == intent.unitMinor }
                if (same != null) same.quantity++ else cart.add(Line(intent.name, intent.unitMinor, 1))
            }
            is CashierIntent.RemoveLine -> if (intent.index in cart.indices) cart.removeAt(intent.index)
            is CashierIntent.KeypadDigit -> {
                require(intent.digit in 0..9) { "Not a digit." }
                if (digits.length < 9 && !(digits.isEmpty() && intent.digit == 0)) digits += intent.digit
            }
            CashierIntent.KeypadClear -> digits = ""
            CashierIntent.AddKeypadAmount -> {
                val minor = digits.ifEmpty { "0" }.toLong()
                require(minor > 0) { "Type an amount first." }
                cart.add(Line("Amount", minor, 1))
                digits = ""
            }
            is CashierIntent.SetContact -> {
                contactEmail = intent.email?.trim()?.ifEmpty { null }
                contactPhone = intent.phone?.trim()?.ifEmpty { null }
            }

            CashierIntent.Checkout -> checkout()
            is CashierIntent.PayByCard -> payByCard(intent.amountMinor)
            CashierIntent.CancelCard -> {
                if (card is CardFlow.WaitingForCard) {
                    cancelRequested = true
                    reader?.cancel()
                }
            }
            is CashierIntent.PayCash -> {
                val order = orderId ?: throw IllegalArgumentException("Check out the cart first.")
                val balance = need().order(order).balance
                need().addCash(order, Money(intent.amountMinor ?: balance.minorUnits, env.currency))
                refusal = null
            }
            is CashierIntent.RequestReceipt -> requestReceipt(intent.email, intent.phone)
            CashierIntent.NewSale -> {
                require(card !is CardFlow.WaitingForCard) { "A card payment is in progress." }
                cart.clear()
                digits = ""
                contactEmail = null
                contactPhone = null
                orderId = null
                card = CardFlow.Idle
                refusal = null
                error = null
            }
            CashierIntent.DismissMessages -> {
                refusal = null
                error = null
                notices.clear()
                audit = null
                if (card is CardFlow.Done) card = CardFlow.Idle
            }

            is CashierIntent.CollectAgain -> collectAgain(intent.paymentId)
            CashierIntent.ForwardNow -> {
                val e = need()
                require(e.status().connectivity is ConnectivityStatus.Online) {
                    "Offline: payments are forwarded as soon as the service is back."
                }
                e.forwardNow()
            }

            is CashierIntent.SetOfflineEnabled -> need().let { it.setPolicy(it.policy().copy(enabled = intent.enabled)) }
            is CashierIntent.SetPreset -> {
                val e = need()
                val now = e.policy()
                val next = policyPreset(intent.preset, env.currency)
                e.setPolicy(
                    next.copy(
                        enabled = now.enabled,
                        readerAuthorities = (now.readerAuthorities + env.readerAuthorities).distinct(),
                    ),
                )
                preset = intent.preset
            }
            is CashierIntent.SetLimits -> need().let { e ->
                val p = e.policy()
                val old = p.limits.firstOrNull { it.currency == env.currency }
                val updated = old?.copy(perOrder = intent.perOrderMinor, deviceAmount = intent.deviceMinor)
                    ?: CurrencyLimits(env.currency, null, intent.perOrderMinor, intent.deviceMinor, null, null, 80u)
                e.setPolicy(p.copy(limits = p.limits.filter { it.currency != env.currency } + updated))
            }
            CashierIntent.ExportAudit -> {
                val e = need()
                val csv = e.exportAuditCsv()
                val stamp = DateTimeFormatter.ofPattern("yyyyMMdd-HHmm", Locale.ENGLISH)
                    .format(Instant.ofEpochMilli(env.nowMs()).atZone(env.zone))
                audit = AuditExport(csv, csv.lines().count { it.isNotBlank() } - 1, "poscore-audit-${e.status().deviceId}-$stamp.csv")
            }

            is CashierIntent.DemoSetNetwork -> {
                val demo = env.demo ?: throw IllegalArgumentException("Not in demo mode.")
                demo.setNetwork(intent.up)
                need().reportNetwork(intent.up)
                env.driver.wake(need())
            }
            is CashierIntent.DemoSetServiceDown -> {
                val demo = env.demo ?: throw IllegalArgumentException("Not in demo mode.")
                demo.setServiceDown(intent.down)
                env.driver.wake(need())
            }
            is CashierIntent.DemoAdvance -> {
                val demo = env.demo ?: throw IllegalArgumentException("Not in demo mode.")
                demo.advance(intent.ms)
                env.driver.wake(need())
            }
            is CashierIntent.DemoPresentCard -> {
                val demo = env.demo ?: throw IllegalArgumentException("Not in demo mode.")
                val r = connected ?: throw IllegalArgumentException("Pick a reader first.")
                demo.presentCard(r.optionId, intent.cardIndex, intent.entryMode)
            }
        }
    }

    private suspend fun logOut(override: ActionOverride?) {
        val e = need()
        try {
            when (val outcome = e.guardedAction(GuardedAction.LOG_OUT, override)) {
                is GuardOutcome.Allowed -> logout = null
                is GuardOutcome.Overridden -> logout = LogoutPanel.Overridden(
                    outcome.pendingCount.toLong(),
                    "Logged out by ${override?.staffId} with ${outcome.pendingCount} payments pending " +
                        "(${Fmt.moneys(outcome.atRisk)} at risk); recorded in the audit log.",
                )
            }
            // The cashier's sale in progress goes with them.
            cart.clear()
            orderId = null
            card = CardFlow.Idle
        } catch (x: PosException.ActionRefused) {
            logout = LogoutPanel.Refused(
                x.pendingCount.toLong(),
                x.atRisk,
                "Cannot log out: ${x.pendingCount} offline payments are not forwarded yet (${Fmt.moneys(x.atRisk)} at risk).",
                e.policy().pendingOverrideAllowed,
            )
        }
    }

    private suspend fun pickReader(optionId: String) {
        val e = need()
        val option = readerOptions.firstOrNull { it.id == optionId }
            ?: throw IllegalArgumentException("No reader $optionId: scan again.")
        reader?.close()
        reader = null
        connected = null
        readerStatus = null
        readerError = null
        val r = env.readers.connect(option, object : ReaderListener {
            override fun onReaderEvent(event: ReaderEvent) {
                readerEvents.add(event)
            }
        })
        val info = try {
            r.pair(e)
        } catch (x: ReaderException) {
            r.close()
            readerError = readerProblem(x)
            return
        }
        // The simulated and btleplug radios reconnect by themselves; an app transport reports its own state.
        runCatching { r.reconnectAutomatically(defaultReconnectSettings()) }
        reader = r
        connected = ConnectedReader(
            option.id,
            option.kind,
            info.model,
            info.serial,
            info.firmware,
            info.batteryPercent.toInt(),
            e.readerMayTakeOfflinePayments(info.model),
        )
    }

    private suspend fun checkout() {
        val e = need()
        require(card !is CardFlow.WaitingForCard) { "A card payment is in progress." }
        require(orderId == null) { "This sale is already checked out." }
        val total = cart.sumOf { it.unitMinor * it.quantity }
        require(total > 0) { "The cart is empty." }
        val contact = if (contactEmail == null && contactPhone == null) null else CustomerContact(contactEmail, contactPhone)
        try {
            orderId = e.createOrder(NewOrder(null, Money(total, env.currency), contact)).id
        } finally {
            contact?.close()
        }
        refusal = null
        error = null
    }

    private suspend fun payByCard(amountMinor: Long?) {
        val e = need()
        val order = orderId ?: throw IllegalArgumentException("Check out the cart first.")
        require(card !is CardFlow.WaitingForCard) { "A card payment is in progress." }
        if (reader == null) throw IllegalArgumentException("Pick a card reader first.")
        val amount = Money(amountMinor ?: e.order(order).balance.minorUnits, env.currency)
        refusal = null
        error = null
        val decision = e.beginCardPayment(
            CardPaymentRequest(order, null, amount, null, OfflineBehaviour.PREFER_ONLINE, TenderKind.CARD),
        )
        waitForCard(decision, amount, collecting = false)
    }

    private suspend fun collectAgain(paymentId: String) {
        val e = need()
        require(card !is CardFlow.WaitingForCard) { "A card payment is in progress." }
        if (reader == null) throw IllegalArgumentException("Pick a card reader first.")
        val p = e.listPayments().firstOrNull { it.id == paymentId && it.status == PaymentStatus.DECLINED }
            ?: throw IllegalArgumentException("No declined payment $paymentId.")
        val balance = e.order(p.orderId).balance
        refusal = null
        error = null
        try {
            // An online card payment for what the order still owes (R17, B9).
            val decision = e.beginBalancePayment(p.orderId)
            waitForCard(decision, balance, collecting = true)
        } catch (x: PosException.OnlineRequired) {
            error = "Collecting a declined payment needs the connection: try again once online."
        }
    }

    /** Shows "present the card" and reads it in the background; confirming waits for this model's turn. */
    private fun waitForCard(decision: PaymentDecision, amount: Money, collecting: Boolean) {
        val r = reader ?: return
        val e = need()
        val offline = decision.route is PaymentRoute.Offline
        card = CardFlow.WaitingForCard(
            decision.paymentId,
            amount,
            Fmt.money(amount),
            offline,
            (decision.route as? PaymentRoute.Offline)?.let { Fmt.offlineReason(it.reason) },
            connected?.let { "${it.model} ${it.serial}" } ?: "reader",
            collecting,
        )
        cancelRequested = false
        // Every entry mode is offered to the customer: the engine, not the
        // reader, refuses what the policy does not take offline (with its rule).
        val modes = listOf(EntryMode.CHIP, EntryMode.CONTACTLESS, EntryMode.SWIPE, EntryMode.MANUAL)
        cardJob = scope.launch {
            val read = runCatching { r.takeCard(decision.challenge, modes, offline) }
            mutex.withLock {
                if (engine === e) {
                    finishCard(e, decision, read)
                    refresh()
                }
            }
        }
    }

    private suspend fun finishCard(e: PosEngine, decision: PaymentDecision, read: Result<CardRead>) {
        val id = decision.paymentId
        val cardRead = read.getOrElse { x ->
            runCatching { e.cancelCardPayment(id) }
            card = CardFlow.Idle
            if (!cancelRequested) error = (x as? ReaderException)?.let { readerProblem(it) } ?: "The card was not read: $x"
            return
        }
        try {
            val p = e.confirmCardPayment(id, cardRead)
            card = CardFlow.Done(p.id, p.status, doneText(p, decision.route))
        } catch (x: PosException) {
            runCatching { e.cancelCardPayment(id) }
            card = CardFlow.Idle
            shown(x)
        }
    }

    private fun doneText(p: PaymentView, route: PaymentRoute): String {
        val c = "${p.network.name.lowercase().replaceFirstChar { it.uppercase() }} •••• ${p.last4}"
        return when (p.status) {
            PaymentStatus.APPROVED -> "Approved${if (route is PaymentRoute.Online) " online" else ""}: ${Fmt.money(p.amount)} on $c"
            PaymentStatus.DECLINED -> "Declined (${p.declineReason?.let { Fmt.decline(it) } ?: "declined"}): ask for another card"
            PaymentStatus.PENDING ->
                "Stored offline (pending): ${Fmt.money(p.amount)} on $c, forward by ${Fmt.clock(p.deadlineMs, env.nowMs(), env.zone)}"
            else -> "${Fmt.status(p.status)}: ${Fmt.money(p.amount)} on $c"
        }
    }

    private suspend fun requestReceipt(email: String?, phone: String?) {
        val e = need()
        val order = orderId ?: throw IllegalArgumentException("No sale to send a receipt for.")
        val contact = CustomerContact(email?.ifBlank { null }, phone?.ifBlank { null })
        val channel = if (contact.email() != null) ReceiptChannel.Email(contact) else ReceiptChannel.Sms(contact)
        try {
            e.requestReceipt(order, channel)
        } finally {
            contact.close()
        }
        val online = e.status().connectivity is ConnectivityStatus.Online
        notices += Notice(NoticeKind.INFO, if (online) "Receipt on its way." else "Receipt queued: it is sent when the service is back.")
    }

    // --- errors -----------------------------------------------------------

    private fun shown(e: PosException) {
        when (e) {
            is PosException.Refused -> refusal = refusalNotice(e)
            is PosException.OnlineRequired -> error = "This payment needs the payment service, which cannot be reached."
            is PosException.NotSignedIn -> error = "Sign in first."
            is PosException.ReaderNotPaired -> error = "This card was not read by a paired reader: pair the reader again."
            is PosException.InvalidInput -> error = "Invalid input: ${e.reason}"
            is PosException.InvalidPolicy -> error = "These settings are not valid: ${e.reason}"
            is PosException.ActionRefused -> error = e.detail
            is PosException.StoreLocked -> error = "The phone is locked: unlock it to reach the payment store."
            else -> error = e.message ?: e.toString()
        }
    }

    private fun refusalNotice(e: PosException.Refused): RefusalNotice {
        val (limitLabel, currentLabel, attemptedLabel) = when (e.kind) {
            "PerOrderLimit" -> Triple("per-order limit", "already on this order", "this payment")
            "DeviceAmountLimit" -> Triple("device limit", "already stored on this device", "this payment")
            "PerPaymentLimit" -> Triple("per-payment limit", "current", "this payment")
            else -> Triple("limit", "current", "attempted")
        }
        val parts = listOfNotNull(
            e.limit?.let { "$limitLabel ${Fmt.money(it)}" },
            e.current?.let { "$currentLabel ${Fmt.money(it)}" },
            e.attempted?.let { "$attemptedLabel ${Fmt.money(it)}" },
        )
        return RefusalNotice(
            e.rule,
            e.kind,
            "Refused offline [${e.rule}]: ${e.detail}",
            e.limit,
            e.current,
            e.attempted,
            parts.takeIf { it.isNotEmpty() }?.joinToString(" · "),
        )
    }

    private fun readerProblem(e: ReaderException): String = when (e) {
        is ReaderException.NewReaderOffline -> "A new reader can only be paired online: connect once, then it works offline too."
        is ReaderException.UntrustedReader -> "This reader's certificate is not from a trusted maker."
        is ReaderException.Timeout -> "The reader did not answer in time."
        is ReaderException.Disconnected -> "The reader is disconnected."
        is ReaderException.Refused -> "The reader refused: ${e.code}"
        is ReaderException.PairingFailed -> "Pairing failed: ${e.detail}"
        else -> "Reader problem: ${e.message ?: e.toString()}"
    }

    private fun openError(e: PosException): String = when (e) {
        is PosException.StoreLocked -> "The phone is locked: unlock it to open the payment store. Nothing is lost."
        is PosException.WrongKey -> "This device's key does not open the payment store. Do not clear the app's data: contact support."
        is PosException.StoreIntegrity ->
            "The payment store cannot be trusted (${e.reason}). It is kept as it is: do not clear the app's data, contact support."
        is PosException.AccountMismatch -> "The payment store belongs to ${e.stored}, not ${e.configured}."
        else -> "The payment store did not open: ${e.message ?: e}"
    }

    // --- the screen -------------------------------------------------------

    private fun currentAtRisk(): List<Money> =
        engine?.status()?.totals?.filter { it.pendingCount > 0u }?.map { it.pendingAmount } ?: emptyList()

    private fun demoPanel(): DemoPanel? = env.demo?.let { d ->
        DemoPanel(
            DateTimeFormatter.ofPattern("EEE d MMM HH:mm", Locale.ENGLISH).format(Instant.ofEpochMilli(env.nowMs()).atZone(env.zone)),
            d.networkUp,
            d.serviceDown,
            d.testCards,
        )
    }

    private fun drainEvents() {
        while (true) {
            when (val ev = events.poll() ?: break) {
                is PosEvent.ConnectivityChanged -> {
                    val kind = when (ev.to) {
                        is ConnectivityStatus.NetworkOutage -> BannerKind.NETWORK_OUTAGE
                        is ConnectivityStatus.ServiceDisruption -> BannerKind.SERVICE_DISRUPTION
                        else -> null
                    }
                    val text = ev.banner
                    if (kind != null && text != null) bannerTexts[kind] = text
                }
                is PosEvent.PaymentDeclined -> {
                    val n = ev.notice
                    val who = n.contact?.let { c -> (c.email() ?: c.phone())?.also { declineContacts[n.paymentId] = it }; c.hint() }
                    notices += Notice(
                        NoticeKind.DECLINE,
                        "Declined (${Fmt.decline(n.reason)}): collect ${Fmt.money(n.amountDue)} " +
                            (who?.let { "from $it" } ?: "(no contact captured)"),
                    )
                }
                is PosEvent.PaymentExpired -> notices += Notice(
                    NoticeKind.EXPIRY,
                    "A payment passed its forwarding deadline: ${Fmt.money(ev.amount)} lost",
                )
                is PosEvent.PaymentOutcomeUnknown -> notices += Notice(
                    NoticeKind.WARNING,
                    "${Fmt.money(ev.amount)}: the processor may have it; waiting for its answer",
                )
                is PosEvent.SessionWarning -> notices += Notice(
                    NoticeKind.WARNING,
                    when (ev.kind) {
                        "deadline_approaching" ->
                            "Forwarding deadline in ${ev.thresholdMs?.let { Fmt.duration(it.toLong()) } ?: "a short while"} or less: reconnect to forward"
                        "acceptance_window_closed" -> "The offline window closed: no more offline card payments in this outage"
                        else -> "Offline payments: ${ev.kind.replace('_', ' ')}"
                    },
                )
                is PosEvent.LimitNear -> notices += Notice(
                    NoticeKind.WARNING,
                    "Offline total near the device limit (${ev.warnPercent} %)" +
                        (ev.total?.let { t -> ev.limit?.let { l -> ": ${Fmt.money(t)} of ${Fmt.money(l)}" } } ?: ""),
                )
                is PosEvent.ForwardingBlocked -> notices += Notice(
                    NoticeKind.PROBLEM,
                    "Forwarding is blocked (${ev.reason.name.lowercase().replace('_', ' ')}): payments wait",
                )
                is PosEvent.ForwardingUnblocked -> notices += Notice(NoticeKind.INFO, "Forwarding resumed")
                is PosEvent.AnchorSaveFailed -> notices += Notice(
                    NoticeKind.PROBLEM,
                    "The store's rollback anchor was not saved (${ev.behind} records behind)",
                )
                is PosEvent.StoreVerificationFailed -> notices += Notice(NoticeKind.PROBLEM, "The store failed its check: ${ev.reason}")
                else -> Unit
            }
            if (notices.size > 20) notices.subList(0, notices.size - 20).clear()
        }
        while (true) {
            when (val ev = readerEvents.poll() ?: break) {
                is ReaderEvent.Paired -> readerStatus = null
                is ReaderEvent.Disconnected -> readerStatus = "Reader disconnected"
                is ReaderEvent.Reconnecting -> readerStatus = "Reconnecting to the reader (attempt ${ev.attempt})"
                is ReaderEvent.Reconnected -> readerStatus = null
                is ReaderEvent.ReconnectFailed -> readerStatus = "Reader lost after ${ev.attempts} attempts: pick it again"
                is ReaderEvent.LowBattery -> {
                    readerStatus = "Reader battery low: ${ev.percent} %"
                    connected = connected?.copy(batteryPercent = ev.percent.toInt())
                }
            }
        }
    }

    private suspend fun refresh() {
        val e = engine
        if (e == null) {
            drainEvents()
            _screen.value = CashierScreen(
                phase = phaseOverride ?: Phase.STARTING,
                blockingError = blockingError,
                demo = demoPanel(),
            )
            return
        }
        e.eventsDelivered()
        drainEvents()
        val now = env.nowMs()
        val status = e.status()
        val policy = e.policy()
        val payments = e.listPayments()
        // A new preset may list other reader models (R11).
        connected = connected?.let { it.copy(offlineCapable = e.readerMayTakeOfflinePayments(it.model)) }
        _screen.value = CashierScreen(
            phase = phaseOverride ?: if (status.signedIn == null) Phase.SIGNED_OUT else Phase.READY,
            blockingError = blockingError,
            tab = tab,
            cashier = status.signedIn,
            banner = banner(status, policy, now),
            reader = ReaderPanel(bluetooth, readerOptions, connected, readerStatus, readerError),
            cart = cartPanel(),
            checkout = orderId?.let { checkoutPanel(e, it, payments) },
            card = card,
            refusal = refusal,
            error = error,
            pending = pendingPanel(status, payments, now),
            forwarding = forwardingBar(status, payments),
            declines = declines(e, payments),
            expired = payments.filter { it.status == PaymentStatus.EXPIRED }.map {
                ExpiredRow(it.id, it.orderId, it.amount, "${Fmt.money(it.amount)} lost: not forwarded before ${Fmt.clock(it.deadlineMs, now, env.zone)}")
            },
            queuedReceipts = e.queuedReceiptCount().toInt(),
            settings = settingsPanel(policy),
            logout = logout,
            notices = notices.toList(),
            audit = audit,
            wakeUpAtMs = wakeUpAt(status),
            demo = demoPanel(),
        )
    }

    private fun banner(status: EngineStatus, policy: OfflinePolicy, now: Long): Banner? {
        val (kind, since) = when (val c = status.connectivity) {
            is ConnectivityStatus.NetworkOutage -> BannerKind.NETWORK_OUTAGE to c.sinceMs
            is ConnectivityStatus.ServiceDisruption -> BannerKind.SERVICE_DISRUPTION to c.sinceMs
            else -> return null
        }
        val text = bannerTexts[kind] ?: when (kind) {
            // The engine's default texts (pos-rules Banner::default_text), for a
            // state this process has no event for (it started in it).
            BannerKind.NETWORK_OUTAGE -> "You are offline. Connect to the internet to take payments."
            BannerKind.SERVICE_DISRUPTION -> "Service disruption: offline payments enabled."
        }
        val causeAllowed = when (kind) {
            BannerKind.NETWORK_OUTAGE -> policy.offlineOnNetworkOutage
            BannerKind.SERVICE_DISRUPTION -> policy.offlineOnServiceDisruption
        }
        val closes = status.acceptanceClosesAtMs
        val perOrder = policy.limits.firstOrNull { it.currency == env.currency }?.perOrder
        val line = when {
            !policy.enabled -> "Offline card payments are off: cash only until the connection is back."
            !causeAllowed -> "Offline card payments are not allowed in this kind of outage: cash only."
            closes != null && now >= closes ->
                "The offline window closed at ${Fmt.clock(closes, now, env.zone)}: cash only until the connection is back."
            else -> buildString {
                append("Card payments are stored offline")
                if (perOrder != null) append(", up to ${Fmt.money(Money(perOrder, env.currency))} per order")
                if (closes != null) append(", until ${Fmt.clock(closes, now, env.zone)}")
                append('.')
            }
        }
        return Banner(kind, text, line, since)
    }

    private fun cartPanel(): CartPanel {
        val total = cart.sumOf { it.unitMinor * it.quantity }
        return CartPanel(
            cart.map { CartLine(it.name, Money(it.unitMinor, env.currency), it.quantity, Fmt.money(Money(it.unitMinor * it.quantity, env.currency))) },
            if (cart.isEmpty()) null else Money(total, env.currency),
            if (cart.isEmpty()) "" else Fmt.money(Money(total, env.currency)),
            Fmt.entry(digits, env.currency),
            contactEmail,
            contactPhone,
        )
    }

    private fun checkoutPanel(e: PosEngine, id: String, payments: List<PaymentView>): CheckoutPanel {
        val o = e.order(id)
        val byId = payments.associateBy { it.id }
        val tenders = o.tenders.map { t ->
            when (t) {
                is Tender.Cash -> "cash ${Fmt.money(t.amount)}"
                is Tender.OfflineCard -> {
                    val p = byId[t.paymentId]
                    "card${p?.let { " •••• ${it.last4}" } ?: ""} ${Fmt.money(t.amount)} offline (${p?.let { Fmt.status(it.status) } ?: "stored"})"
                }
                is Tender.OnlineCard -> "card ${Fmt.money(t.amount)} online"
            }
        }
        return CheckoutPanel(
            o.id,
            o.total,
            o.paid,
            o.balance,
            Fmt.money(o.total),
            Fmt.money(o.paid),
            Fmt.money(o.balance),
            o.status,
            Fmt.badge(o.status),
            tenders,
            o.contactHint,
            o.balance.minorUnits == 0L,
        )
    }

    private fun unsettled(s: PaymentStatus) =
        s == PaymentStatus.PENDING || s == PaymentStatus.FORWARDING || s == PaymentStatus.FAILED_TO_FORWARD || s == PaymentStatus.OUTCOME_UNKNOWN

    private fun pendingPanel(status: EngineStatus, payments: List<PaymentView>, now: Long): PendingPanel {
        val rows = payments.filter { unsettled(it.status) }.map { p ->
            PendingRow(
                p.id,
                p.orderId,
                p.amount,
                Fmt.money(p.amount),
                p.last4,
                p.status,
                Fmt.status(p.status),
                p.timeLeftMs,
                Fmt.duration(p.timeLeftMs),
                p.deadlineMs,
                Fmt.clock(p.deadlineMs, now, env.zone),
            )
        }
        val atRisk = status.totals.filter { it.pendingCount > 0u }.map { it.pendingAmount }
        val deadline = status.nextDeadlineMs
        val session = if (rows.isEmpty() || deadline == null) {
            null
        } else {
            val left = status.timeLeftMs ?: (deadline - now)
            val closes = status.acceptanceClosesAtMs
            SessionDeadline(
                deadline,
                Fmt.clock(deadline, now, env.zone),
                left,
                Fmt.duration(left),
                closes,
                closes?.let {
                    if (now < it) "Offline payments accepted until ${Fmt.clock(it, now, env.zone)}"
                    else "Offline acceptance closed at ${Fmt.clock(it, now, env.zone)}"
                },
            )
        }
        return PendingPanel(rows, atRisk, Fmt.moneys(atRisk), session)
    }

    private fun forwardingBar(status: EngineStatus, payments: List<PaymentView>): ForwardingBar? {
        val byId = payments.associateBy { it.id }
        val open = payments.filter { unsettled(it.status) }
        val settled = backlog.keys.all { id -> byId[id]?.let { !unsettled(it.status) } ?: true }
        // A new backlog starts with the first unsettled payment after a fully settled one.
        if (settled && open.any { it.id !in backlog }) backlog.clear()
        for (p in open) backlog[p.id] = p.amount
        if (backlog.isEmpty() || status.connectivity !is ConnectivityStatus.Online) return null
        val done = backlog.keys.filter { id -> byId[id]?.let { !unsettled(it.status) } ?: true }
        val mine = { m: Money -> if (m.currency == env.currency) m.minorUnits else 0L }
        val amountDone = Money(done.sumOf { mine(backlog.getValue(it)) }, env.currency)
        val amountTotal = Money(backlog.values.sumOf(mine), env.currency)
        return ForwardingBar(
            done.size,
            backlog.size,
            amountDone,
            amountTotal,
            done.size.toDouble() / backlog.size,
            "${done.size}/${backlog.size} ${Fmt.money(amountDone)} of ${Fmt.money(amountTotal)}",
            done.size == backlog.size,
        )
    }

    private fun declines(e: PosEngine, payments: List<PaymentView>): List<DeclineRow> =
        payments.filter { it.status == PaymentStatus.DECLINED }.mapNotNull { p ->
            val o = e.order(p.orderId)
            if (o.balance.minorUnits <= 0L) return@mapNotNull null
            val due = Money(minOf(o.balance.minorUnits, p.amount.minorUnits), o.balance.currency)
            DeclineRow(
                p.id,
                p.orderId,
                due,
                Fmt.money(due),
                p.declineReason?.let { Fmt.decline(it) } ?: "declined",
                o.contactHint,
                declineContacts[p.id],
            )
        }

    private fun settingsPanel(p: OfflinePolicy): SettingsPanel {
        val l = p.limits.firstOrNull { it.currency == env.currency }
        val perOrder = l?.let { Money(it.perOrder, env.currency) }
        val device = l?.deviceAmount?.let { Money(it, env.currency) }
        return SettingsPanel(
            p.enabled,
            preset,
            perOrder,
            device,
            if (l == null) "no limits for ${env.currency}: offline payments are refused"
            else "per order ${Fmt.money(perOrder!!)} · device ${device?.let { Fmt.money(it) } ?: "no limit"}",
            p.staffPermissionRequired,
            p.allowedEntryModes.joinToString(", ") { it.name.lowercase() },
        )
    }

    /**
     * When to wake the app if it is not running: the engine's next wake-up
     * (a retry, a deadline, a probe while offline, a session warning).
     */
    private fun wakeUpAt(status: EngineStatus): Long? = status.nextWakeUpMs
}
