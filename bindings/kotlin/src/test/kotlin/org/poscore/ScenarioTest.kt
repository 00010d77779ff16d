package org.poscore

import java.io.File
import java.nio.file.Files
import java.util.concurrent.ConcurrentLinkedQueue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.TestFactory

/**
 * The Kotlin runner of the scenario suite (docs/scenarios.md): plays every
 * `.json` file of tests/scenarios (or of `$POS_SCENARIOS`; `POS_SCENARIO=<name>`
 * plays one) on the generated bindings only, checks each step's `expect`
 * and compares the transcript with `golden/<name>.txt`, which the Rust
 * runner (tests/scenarios/run.rs, the reference) writes. One JUnit dynamic
 * test and one printed line per scenario.
 */
class ScenarioTest {
    @TestFactory
    fun scenarios(): List<DynamicTest> {
        val dir = scenarioDir()
        val only = System.getenv("POS_SCENARIO")
        val files = dir.listFiles()
            ?.filter { it.name.endsWith(".json") && it.name.length > ".json".length }
            ?.filter { only == null || it.name.removeSuffix(".json") == only }
            ?.sortedBy { it.name }
        if (files.isNullOrEmpty()) {
            val why = if (files == null) "cannot read ${dir.path}" else "no scenario in ${dir.path}"
            return listOf(DynamicTest.dynamicTest("scenarios") {
                println(why)
                throw AssertionError(why)
            })
        }
        return files.map { file ->
            val name = file.name.removeSuffix(".json")
            DynamicTest.dynamicTest(name) {
                val outcome = try {
                    Result.success(runBlocking { playFile(file, dir, name) })
                } catch (e: ScenarioFailure) {
                    Result.failure(e)
                } catch (e: Exception) {
                    Result.failure(ScenarioFailure("$e"))
                }
                outcome.fold(
                    { steps -> println("scenario $name: ok ($steps steps)") },
                    { e ->
                        println("scenario $name: FAILED\n${e.message}")
                        System.out.flush()
                        throw AssertionError("scenario $name: ${e.message}")
                    },
                )
                System.out.flush()
            }
        }
    }
}

/** `$POS_SCENARIOS`, else `-Dpos.scenarios` (set by `cargo xtask test`), else the nearest `tests/scenarios` above the working folder. */
private fun scenarioDir(): File {
    System.getenv("POS_SCENARIOS")?.let { return File(it) }
    System.getProperty("pos.scenarios")?.let { return File(it) }
    var d: File? = File("").absoluteFile
    while (d != null) {
        val c = File(d, "tests/scenarios")
        if (c.isDirectory) return c
        d = d.parentFile
    }
    return File("tests/scenarios")
}

/** What fails a scenario: a step the runner cannot play, or a difference. */
private class ScenarioFailure(message: String) : Exception(message)

private fun fail(message: String): Nothing = throw ScenarioFailure(message)

private const val DEVICE = "till-1"
private const val READER_SERIAL = "SIM-READER-1"

private suspend fun playFile(file: File, dir: File, name: String): Int {
    val text = try {
        file.readText(Charsets.UTF_8)
    } catch (e: Exception) {
        fail("$e")
    }
    val scenario = try {
        Json.parse(text)
    } catch (e: JsonException) {
        fail("not JSON: ${e.message}")
    }
    if (scenario["name"].asString != name) fail("its \"name\" must be \"$name\", the file's name")
    val steps = scenario["steps"].asArray ?: fail("\"steps\" must be an array")
    val run = ScenarioRun.start(name, scenario["setup"])
    val transcript = ArrayList<String>()
    val problems = ArrayList<String>()
    try {
        for ((i, step) in steps.withIndex()) {
            val (line, result) = try {
                run.step(step)
            } catch (e: ScenarioFailure) {
                fail("step ${i + 1}: ${e.message}")
            }
            step.getOrNull("expect")?.let { want ->
                val w = want.asString ?: fail("step ${i + 1}: expect must be a string")
                if (w != result) problems.add("step ${i + 1} `$line`: expected `$w`, got `$result`")
            }
            transcript.add("$line -> $result")
        }
    } finally {
        run.finish()
    }
    val golden = File(File(dir, "golden"), "$name.txt")
    val got = transcript.joinToString("\n") + "\n"
    val want = try {
        golden.readText(Charsets.UTF_8)
    } catch (e: Exception) {
        null
    }
    when {
        want == null -> problems.add("no golden transcript ${golden.path} (the Rust runner writes it: POS_SCENARIOS_BLESS=1)")
        want != got -> problems.add(diff(want, got))
    }
    if (problems.isNotEmpty()) fail(problems.joinToString("\n"))
    return steps.size
}

/** Rust's `str::lines`: split at `\n`, no last empty line, a trailing `\r` dropped. */
private fun lines(s: String): List<String> {
    if (s.isEmpty()) return emptyList()
    val parts = s.split("\n").toMutableList()
    if (s.endsWith("\n")) parts.removeAt(parts.size - 1)
    return parts.map { it.removeSuffix("\r") }
}

private fun diff(want: String, got: String): String {
    val w = lines(want)
    val g = lines(got)
    for (i in 0 until maxOf(w.size, g.size)) {
        val a = w.getOrNull(i)
        val b = g.getOrNull(i)
        if (a != b) {
            return "transcript differs from the golden at line ${i + 1}:\n  golden: ${a ?: "<end>"}\n  got:    ${b ?: "<end>"}"
        }
    }
    return "transcript differs from the golden"
}

// --- reading a step (as serde_json's Value reads in run.rs) ---------------

private fun int(v: Json, field: String): Long = v[field].asLong ?: fail("\"$field\" must be an integer")

private fun text(v: Json, field: String): String = v[field].asString ?: fail("\"$field\" must be a string")

private fun optText(v: Json, field: String): String? = when (val x = v[field]) {
    is Json.Null -> null
    is Json.Str -> x.value
    else -> fail("\"$field\" must be a string")
}

// --- rendering ---------------------------------------------------------------

/** A string as a transcript shows it: control characters as `\xNN`. */
private fun printable(s: String): String = buildString {
    for (c in s) {
        if (c.code < 0x20) append("\\x%02x".format(c.code)) else append(c)
    }
}

/** Ordered by alias: `p2` before `p10`. */
private val byAlias = compareBy<Pair<String, String>>({ it.first.length }, { it.first })

private fun money(m: Money) = "${m.minorUnits} ${m.currency}"

/** `refused <rule> <kind>[ limit=..][ current=..][ attempted=..]`, or `error <Variant>`. */
private fun error(e: PosException): String = when (e) {
    is PosException.Refused -> buildString {
        append("refused ${e.rule} ${e.kind}")
        for ((k, m) in listOf("limit" to e.limit, "current" to e.current, "attempted" to e.attempted)) {
            if (m != null) append(" $k=${money(m)}")
        }
    }
    else -> "error ${e::class.simpleName}"
}

/** The line of a call that may fail with a `PosException`. */
private inline fun result(block: () -> String): String = try {
    block()
} catch (e: PosException) {
    error(e)
}

private fun connectivity(c: ConnectivityStatus): String = when (c) {
    is ConnectivityStatus.Unknown -> "UNKNOWN"
    is ConnectivityStatus.Online -> "ONLINE"
    is ConnectivityStatus.NetworkOutage -> "NETWORK_OUTAGE"
    is ConnectivityStatus.ServiceDisruption -> "SERVICE_DISRUPTION"
}

/** The processor's wire code of a decline reason (`insufficient_funds`, `do_not_honour`, ...). */
private fun declineCode(r: DeclineReason): String = when (r) {
    is DeclineReason.Other -> r.code
    else -> (r::class.simpleName ?: "").replace(Regex("(?<=.)([A-Z])"), "_$1").lowercase()
}

private fun statusLine(s: EngineStatus, currency: String): String {
    val t = s.totals.firstOrNull { it.currency == currency }
    val (p, a, d, e) = if (t != null) {
        listOf(
            "${t.pendingCount}/${money(t.pendingAmount)}",
            "${t.approvedCount}/${money(t.approvedAmount)}",
            "${t.declinedCount}/${money(t.declinedAmount)}",
            "${t.expiredCount}/${money(t.expiredAmount)}",
        )
    } else {
        List(4) { "0/0 $currency" }
    }
    return "${connectivity(s.connectivity)} pending=$p approved=$a declined=$d expired=$e"
}

// --- one scenario's world ----------------------------------------------------

private class Collect(private val queue: ConcurrentLinkedQueue<PosEvent>) : EventListener {
    override fun onEvent(event: PosEvent) {
        queue.add(event)
    }
}

private object IgnoreReaderEvents : ReaderListener {
    override fun onReaderEvent(event: ReaderEvent) {}
}

/** The engine's folder and the key file (with its anchors) beside it. */
private fun removeFiles(dir: File) {
    dir.deleteRecursively()
    dir.parentFile?.listFiles { f -> f.name.startsWith(dir.name + ".kek") }?.forEach { it.delete() }
}

private val allEntryModes = listOf(EntryMode.CHIP, EntryMode.CONTACTLESS, EntryMode.SWIPE, EntryMode.MANUAL)

/**
 * The scenario's other sales channel (R18), as the Rust runner's: the cursor
 * is the number of changes made so far; from scratch it gives every order,
 * after a cursor the orders changed since and the ids removed since; one page,
 * ordered by id; throws `Unavailable` while [down]. Counts its fetches.
 */
private class WebShop : OrderSource {
    var version = 0L
    /** id -> (the order, or null once removed; the version that changed it) */
    val orders = java.util.TreeMap<String, Pair<RemoteOrder?, Long>>()
    var down = false
    var fetches = 0L

    @Synchronized
    override fun fetchSince(cursor: String?): OrderBatch {
        fetches += 1
        if (down) throw InboxException.Unavailable("the web shop is down")
        val since = cursor?.let { it.toLongOrNull() ?: throw InboxException.Source("bad cursor \"$it\"") }
        val out = ArrayList<RemoteOrder>()
        val removed = ArrayList<String>()
        for ((id, entry) in orders) {
            val (order, changed) = entry
            when {
                since == null -> order?.let { out.add(it) }
                changed > since -> if (order != null) out.add(order) else removed.add(id)
            }
        }
        return OrderBatch(out, removed, version.toString(), false)
    }

    @Synchronized
    fun change(id: String, order: RemoteOrder?) {
        version += 1
        orders[id] = order to version
    }
}

private class ScenarioRun(
    val dir: File,
    val keys: FileKeyProvider,
    val clock: TestClock,
    val currency: String,
    val staff: StaffSession,
    var engine: PosEngine,
    val processor: SimulatedProcessor,
    val simReader: SimulatedReader,
    val reader: CardReader,
) {
    val events = ConcurrentLinkedQueue<PosEvent>()
    val web = WebShop()
    var subscription: Subscription? = null
    /** Payment id -> `p1`, `p2`, ... in the order the engine gave the ids. */
    val aliases = HashMap<String, String>()
    /** The scenario's order names -> the engine's order ids. */
    val orders = HashMap<String, String>()

    companion object {
        private val known = setOf(
            "preset", "currency", "offline", "limits", "tips", "staff", "seed", "start", "readerModel", "forcedOffline", "tapToPay",
        )

        suspend fun start(name: String, setup: Json): ScenarioRun {
            when (setup) {
                is Json.Obj -> setup.fields.keys.firstOrNull { it !in known }?.let { fail("unknown setup field \"$it\"") }
                is Json.Null -> {}
                else -> fail("\"setup\" must be an object")
            }
            val currency = optText(setup, "currency") ?: "USD"
            val dir = Files.createTempDirectory("pos-kt-scenario-$name-").toFile()
            val keys = FileKeyProvider(File(dir.path + ".kek"))
            val clock = TestClock(setup["start"].asLong ?: 1_800_000_000_000L)
            val processor = SimulatedProcessor.start(setup["seed"].asULong ?: 1uL)
            val engine = try {
                open(dir, keys, clock, currency)
            } catch (e: Exception) {
                processor.close()
                clock.close()
                removeFiles(dir)
                throw e
            }
            try {
                return startOn(setup, dir, keys, clock, currency, engine, processor)
            } catch (e: Exception) {
                runCatching { engine.closeAndRelease() }
                engine.close()
                processor.close()
                clock.close()
                removeFiles(dir)
                throw e
            }
        }

        private suspend fun startOn(
            setup: Json,
            dir: File,
            keys: FileKeyProvider,
            clock: TestClock,
            currency: String,
            engine: PosEngine,
            processor: SimulatedProcessor,
        ): ScenarioRun {
            // The policy: the preset, edited, trusting the simulator's readers.
            val preset = when (val p = optText(setup, "preset") ?: "shopify-pos") {
                "shopify-pos" -> PolicyPreset.SHOPIFY_POS
                "square-reader" -> PolicyPreset.SQUARE_READER
                "square-terminal" -> PolicyPreset.SQUARE_TERMINAL
                else -> fail("unknown preset \"$p\"")
            }
            var policy = policyPreset(preset, currency)
            policy = policy.copy(enabled = setup["offline"].asBool ?: true)
            setup["tips"].asBool?.let { policy = policy.copy(tipsAllowed = it) }
            setup["forcedOffline"].asBool?.let { policy = policy.copy(offlineWhenForced = it) }
            setup["tapToPay"].asBool?.let { policy = policy.copy(tapToPayOnPhone = it) }
            setup.getOrNull("limits")?.let { limits ->
                val at = policy.limits.indexOfFirst { it.currency == currency }
                if (at < 0) fail("the preset has no limits for this currency")
                var l = policy.limits[at]
                for ((k, v) in limits.asObject ?: fail("\"limits\" must be an object")) {
                    l = when (k) {
                        "perPayment" -> l.copy(perPayment = v.asLong)
                        "perOrder" -> l.copy(perOrder = v.asLong ?: fail("perOrder must be an integer"))
                        "device" -> l.copy(deviceAmount = v.asLong)
                        else -> fail("unknown limit \"$k\"")
                    }
                }
                policy = policy.copy(limits = policy.limits.toMutableList().also { it[at] = l })
            }
            policy = policy.copy(readerAuthorities = (policy.readerAuthorities + simulatorReaderAuthority()).distinct())
            val model = optText(setup, "readerModel") ?: policy.offlineReaders.firstOrNull() ?: ""
            engine.setPolicy(policy)
            processor.attach(engine)
            goOnline(engine)
            val simReader = SimulatedReader(model, READER_SERIAL, 80u, processor.processorKey(), 185u)
            val reader = simReader.connect(IgnoreReaderEvents)
            reader.pair(engine)
            val staffV = setup["staff"]
            val staff = StaffSession(optText(staffV, "id") ?: "cashier-1", staffV["offline"].asBool ?: true)
            engine.signIn(staff)
            val run = ScenarioRun(dir, keys, clock, currency, staff, engine, processor, simReader, reader)
            run.engine.setOrderSource(run.web)
            run.subscribe()
            // The transcript starts after the setup: its events are dropped.
            run.engine.eventsDelivered()
            run.events.clear()
            return run
        }

        fun open(dir: File, keys: FileKeyProvider, clock: TestClock, currency: String): PosEngine =
            // Forwarded by `forward` steps only, one request at a time: the
            // simulator's seeded faults then hit the same requests in every run.
            PosEngine.withTestClock(
                EngineConfig(dir.path, DEVICE, currency, maxInFlight = 1u, automaticForwarding = false),
                keys,
                clock,
            )

        suspend fun goOnline(engine: PosEngine) {
            engine.reportNetwork(true)
            engine.reportProbe(ProbeOutcome.HEALTHY)
            val s = engine.reportProbe(ProbeOutcome.HEALTHY)
            if (s !is ConnectivityStatus.Online) fail("not online after two healthy probes: $s")
        }
    }

    fun subscribe() {
        subscription = engine.subscribe(Collect(events))
    }

    suspend fun finish() {
        subscription?.cancel()
        subscription?.close()
        try {
            engine.closeAndRelease()
        } finally {
            engine.close()
            reader.close()
            simReader.close()
            processor.close()
            clock.close()
            removeFiles(dir)
        }
    }

    fun alias(id: String): String = aliases.getOrPut(id) { "p${aliases.size + 1}" }

    fun aliasOf(id: String): String = aliases[id] ?: "p?"

    fun orderId(v: Json): String {
        val name = text(v, "order")
        return orders[name] ?: ("ord_" + "00".repeat(16))
    }

    /** `amount` in the step's `currency` (default: the setup's). */
    fun moneyIn(step: Json, amount: Long): Money = Money(amount, optText(step, "currency") ?: currency)

    /** The money at risk as the engine shows it (`exposure().at_risk`): each currency's pending total. */
    fun atRisk(): List<Money> = try {
        engine.status().totals.filter { it.pendingCount > 0u }.map { it.pendingAmount }
    } catch (e: PosException) {
        fail("$e")
    }

    suspend fun step(step: Json): Pair<String, String> {
        return when (val verb = text(step, "do")) {
            "network" -> {
                val b = step["reachable"].asBool ?: fail("\"reachable\" must be a boolean")
                "network $b" to result { connectivity(engine.reportNetwork(b)) }
            }
            "probe" -> {
                val o = text(step, "outcome")
                val outcome = when (o) {
                    "healthy" -> ProbeOutcome.HEALTHY
                    "unhealthy" -> ProbeOutcome.UNHEALTHY
                    "unreachable" -> ProbeOutcome.UNREACHABLE
                    else -> fail("unknown probe outcome \"$o\"")
                }
                "probe $o" to result { connectivity(engine.reportProbe(outcome)) }
            }
            "advance" -> {
                val ms = int(step, "ms")
                clock.advanceMs(maxOf(ms, 0L).toULong())
                engine.nudgeForwarding()
                "advance $ms" to "ok"
            }
            "order" -> {
                val id = text(step, "id")
                val total = int(step, "total")
                val email = optText(step, "email")
                val phone = optText(step, "phone")
                val code = optText(step, "currency")
                val r = result {
                    val contact = if (email == null && phone == null) null else CustomerContact(email, phone)
                    try {
                        val o = engine.createOrder(NewOrder(id, Money(total, code ?: currency), contact))
                        orders[id] = o.id
                        "ok"
                    } finally {
                        contact?.close()
                    }
                }
                "order ${printable(id)} $total" to r
            }
            "card" -> {
                val amount = int(step, "amount")
                val line = "card ${text(step, "order")} $amount"
                line to card(step, amount)
            }
            "cash" -> {
                val order = orderId(step)
                val amount = int(step, "amount")
                val m = moneyIn(step, amount)
                val r = result {
                    val o = engine.addCash(order, m)
                    "balance ${money(o.balance)} ${o.status.name}"
                }
                "cash ${text(step, "order")} $amount" to r
            }
            "order-status" -> {
                val id = text(step, "id")
                val order = orders[id] ?: fail("no order \"$id\" in this scenario")
                "order-status $id" to result {
                    val o = engine.order(order)
                    "balance ${money(o.balance)} ${o.status.name}"
                }
            }
            "guard" -> {
                val action = text(step, "action")
                val a = when (action) {
                    "logout" -> GuardedAction.LOG_OUT
                    "switch-location" -> GuardedAction.SWITCH_LOCATION
                    "reset-store" -> GuardedAction.RESET_STORE
                    "remove-device" -> GuardedAction.REMOVE_DEVICE
                    else -> fail("unknown guarded action \"$action\"")
                }
                val over = optText(step, "override")?.let { reason -> ActionOverride(staff.staffId, reason, atRisk()) }
                "guard $action" to result {
                    when (engine.guardedAction(a, over)) {
                        is GuardOutcome.Allowed -> "allowed"
                        is GuardOutcome.Overridden -> "allowed-with-override"
                    }
                }
            }
            "forward" -> "forward" to result {
                val f = engine.forwardNow()
                "attempted=${f.attempts} approved=${f.approved} declined=${f.declined} failed=${f.failed} unknown=${f.outcomeUnknown}"
            }
            "confirm" -> {
                val name = text(step, "payment")
                val id = aliases.entries.sortedBy { it.key }.firstOrNull { it.value == name }?.key ?: name
                "confirm $name" to confirmAgain(id)
            }
            "close" -> {
                engine.shutdown()
                "close" to "ok"
            }
            "receipt" -> {
                val order = orderId(step)
                val email = optText(step, "email")
                val phone = optText(step, "phone")
                val line = "receipt ${text(step, "order")} ${if (email != null) "email" else "sms"}"
                line to result {
                    val channel = when {
                        email != null && phone == null -> ReceiptChannel.Email(CustomerContact(email, null))
                        phone != null && email == null -> ReceiptChannel.Sms(CustomerContact(null, phone))
                        else -> fail("a receipt step names an \"email\" or a \"phone\"")
                    }
                    engine.requestReceipt(order, channel)
                    "queued=${engine.queuedReceiptCount()}"
                }
            }
            "receipts" -> "receipts" to result { "queued=${engine.queuedReceiptCount()}" }
            "audit" -> "audit" to result {
                engine.exportAuditCsv().split("\r\n", "\n").drop(1).filter { it.isNotEmpty() }
                    .joinToString(" ") { it.split(",").getOrElse(4) { "?" } }
            }
            "wall" -> {
                val ms = int(step, "ms")
                clock.setWallMs(clock.wallMs() + ms)
                engine.nudgeForwarding()
                "wall $ms" to "ok"
            }
            "network-change" -> "network-change" to result {
                if (engine.mayChangeNetworkWhileOffline()) "allowed" else "refused"
            }
            "pause" -> "pause" to result {
                engine.pauseForwarding()
                "ok"
            }
            "resume" -> "resume" to result {
                engine.resumeForwarding()
                "ok"
            }
            "tick" -> "tick" to result {
                val t = engine.tick()
                "expired=${t.expiredPaymentIds.size} unknown=${t.outcomeUnknownPaymentIds.size}"
            }
            "status" -> "status" to result { statusLine(engine.status(), currency) }
            "payments" -> {
                val line = result {
                    val items = engine.listPayments()
                        .map { p -> aliasOf(p.id).let { it to "$it:${p.status.name}" } }
                        .sortedWith(byAlias)
                    if (items.isEmpty()) "none" else items.joinToString(" ") { it.second }
                }
                "payments" to line
            }
            "processor" -> {
                val outage = step["outage"].asBool
                if (outage != null) {
                    processor.setOutage(outage)
                    "processor outage $outage" to "ok"
                } else {
                    val fault = text(step, "fault")
                    val rate = step["rate"].asULong?.toUInt()
                    val r = if (fault == "none") {
                        processor.clearFaults()
                        "ok"
                    } else {
                        result {
                            processor.setFault(fault, rate)
                            "ok"
                        }
                    }
                    "processor fault $fault" to r
                }
            }
            "ledger" -> {
                val items = processor.ledger()
                    .map { c -> aliasOf(c.paymentId).let { it to "$it:${c.outcome}:${money(c.amount)}" } }
                    .sortedWith(byAlias)
                "ledger" to (if (items.isEmpty()) "none" else items.joinToString(" ") { it.second })
            }
            "events" -> {
                engine.eventsDelivered()
                val items = ArrayList<String>()
                while (true) {
                    val e = events.poll() ?: break
                    event(e)?.let { items.add(it) }
                }
                "events" to (if (items.isEmpty()) "none" else items.joinToString("; "))
            }
            "lock" -> {
                val b = step["locked"].asBool ?: fail("\"locked\" must be a boolean")
                keys.locked = b
                "lock $b" to "ok"
            }
            "reopen" -> {
                subscription?.cancel()
                subscription?.close()
                subscription = null
                engine.closeAndRelease()
                val reopened = try {
                    open(dir, keys, clock, currency)
                } catch (e: PosException) {
                    // The shut-down engine stays: later steps see `error Closed`.
                    return "reopen" to error(e)
                }
                engine.close()
                engine = reopened
                processor.attach(engine)
                engine.setOrderSource(web)
                engine.signIn(staff)
                subscribe()
                engine.eventsDelivered()
                // The new subscription's snapshot is not a step's event.
                events.clear()
                "reopen" to "ok"
            }
            "web-order" -> {
                val id = text(step, "id")
                val channel = optText(step, "channel") ?: "web"
                val total = int(step, "total")
                web.change(id, RemoteOrder(id, channel, clock.wallMs(), Money(total, currency)))
                "web-order $id $total" to "ok"
            }
            "web-remove" -> {
                val id = text(step, "id")
                web.change(id, null)
                "web-remove $id" to "ok"
            }
            "web-down" -> {
                val b = step["down"].asBool ?: fail("\"down\" must be a boolean")
                synchronized(web) { web.down = b }
                "web-down $b" to "ok"
            }
            "web-fetches" -> "web-fetches" to "fetches=${synchronized(web) { web.fetches }}"
            "inbox-refresh" -> "inbox-refresh" to result {
                when (val o = engine.refreshInbox()) {
                    is RefreshOutcome.Offline -> "offline"
                    is RefreshOutcome.AlreadyRefreshing -> "already-refreshing"
                    is RefreshOutcome.Discarded -> "discarded"
                    is RefreshOutcome.Updated ->
                        "added=${o.added} updated=${o.updated} removed=${o.removed} more=${o.morePending}"
                }
            }
            "inbox" -> "inbox" to result {
                when (val v = engine.inbox()) {
                    is InboxView.Hidden -> "hidden"
                    is InboxView.Syncing -> "syncing"
                    is InboxView.Ready ->
                        if (v.orders.isEmpty()) "ready none"
                        else "ready " + v.orders.joinToString(" ") { "${it.id}:${it.channel}:${it.total.minorUnits}" }
                }
            }
            else -> fail("unknown step \"$verb\"")
        }
    }

    suspend fun card(step: Json, amount: Long): String {
        val order = orderId(step)
        val tip = step["tip"].asLong?.let { Money(it, currency) }
        val behaviour = when (val b = optText(step, "behaviour") ?: "prefer-online") {
            "prefer-online" -> OfflineBehaviour.PREFER_ONLINE
            "require-online" -> OfflineBehaviour.REQUIRE_ONLINE
            "force-offline" -> OfflineBehaviour.FORCE_OFFLINE
            else -> fail("unknown behaviour \"$b\"")
        }
        val entry = when (val e = optText(step, "entry") ?: "chip") {
            "chip" -> EntryMode.CHIP
            "contactless" -> EntryMode.CONTACTLESS
            "swipe" -> EntryMode.SWIPE
            "manual" -> EntryMode.MANUAL
            else -> fail("unknown entry mode \"$e\"")
        }
        val cardName = optText(step, "card") ?: "approve"
        val card = simulatorTestCards().firstOrNull { c ->
            if (c.outcome == "approve") cardName == "approve" && c.pan.endsWith("4242") else c.outcome == cardName
        } ?: fail("no test card \"$cardName\"")
        val network = when (val n = optText(step, "network")) {
            null -> card.network
            "visa" -> CardNetwork.VISA
            "mastercard" -> CardNetwork.MASTERCARD
            "amex" -> CardNetwork.AMEX
            else -> fail("unknown network \"$n\"")
        }
        val tender = when (val t = optText(step, "tender") ?: "card") {
            "card" -> TenderKind.CARD
            "gift-card" -> TenderKind.GIFT_CARD
            "bnpl" -> TenderKind.BUY_NOW_PAY_LATER
            else -> fail("unknown tender \"$t\"")
        }
        val money = moneyIn(step, amount)
        val decision = try {
            engine.beginCardPayment(CardPaymentRequest(order, null, money, tip, behaviour, tender))
        } catch (e: PosException) {
            return error(e)
        }
        val alias = alias(decision.paymentId)
        val read = when (val r = optText(step, "reader") ?: "sim") {
            "sim" -> {
                simReader.presentCard(card.pan, card.expiry, network, entry)
                try {
                    reader.takeCard(decision.challenge, allEntryModes, true)
                } catch (e: ReaderException) {
                    fail("the simulated reader failed: $e")
                }
            }
            // Tap to Pay on the phone: the app's own read, naming no reader.
            "phone" -> CardRead(
                entry, network, card.pan.takeLast(4), null, "Tap to Pay", ByteArray(32) { 0x70 },
                readerSerial = null, readerSignature = null, tapToPayOnPhone = true,
            )
            else -> fail("unknown reader \"$r\"")
        }
        return result {
            val p = engine.confirmCardPayment(decision.paymentId, read)
            "$alias ${p.status.name}"
        }
    }

    /** Reads a card again for a payment already begun (or confirmed, or unknown) and confirms it. */
    suspend fun confirmAgain(id: String): String {
        val challenge = try {
            engine.cardChallenge(id)
        } catch (e: PosException) {
            return error(e)
        }
        val card = simulatorTestCards()[0]
        simReader.presentCard(card.pan, card.expiry, card.network, EntryMode.CHIP)
        val read = try {
            reader.takeCard(challenge, listOf(EntryMode.CHIP), true)
        } catch (e: ReaderException) {
            fail("the simulated reader failed: $e")
        }
        return result {
            val p = engine.confirmCardPayment(id, read)
            "${alias(p.id)} ${p.status.name}"
        }
    }

    fun event(e: PosEvent): String? = when (e) {
        is PosEvent.ConnectivityChanged -> "ConnectivityChanged ${connectivity(e.to)}"
        is PosEvent.PaymentStateChanged -> "PaymentStateChanged ${alias(e.paymentId)} ${e.status.name}"
        is PosEvent.PaymentDeclined -> "PaymentDeclined ${alias(e.notice.paymentId)} ${declineCode(e.notice.reason)}"
        is PosEvent.PaymentExpired -> "PaymentExpired ${alias(e.paymentId)}"
        is PosEvent.PaymentOutcomeUnknown -> "PaymentOutcomeUnknown ${alias(e.paymentId)}"
        is PosEvent.SessionWarning -> "SessionWarning"
        is PosEvent.LimitNear -> "LimitNear"
        is PosEvent.ForwardingBlocked -> "ForwardingBlocked"
        is PosEvent.ForwardingUnblocked -> "ForwardingUnblocked"
        else -> null
    }
}
