package org.poscore.demo

import java.math.BigDecimal
import java.time.Instant
import java.time.ZoneId
import java.time.format.DateTimeFormatter
import java.time.temporal.ChronoUnit
import java.util.Locale
import org.poscore.ConnectivityStatus
import org.poscore.DeclineReason
import org.poscore.Money
import org.poscore.OfflineReason
import org.poscore.OrderStatus
import org.poscore.PaymentStatus

/** How the screen writes money, durations and times (English, like the CLI demo). */
object Fmt {
    fun fractionDigits(currency: String): Int =
        runCatching { java.util.Currency.getInstance(currency).defaultFractionDigits }.getOrDefault(2).coerceAtLeast(0)

    /** `12.50 USD`, `1500 JPY`. */
    fun money(m: Money): String = "${BigDecimal.valueOf(m.minorUnits, fractionDigits(m.currency)).toPlainString()} ${m.currency}"

    fun moneys(ms: List<Money>): String = if (ms.isEmpty()) "nothing" else ms.joinToString(" + ") { money(it) }

    /** The keypad's digits as an amount: "1250" in USD is `12.50`. */
    fun entry(digits: String, currency: String): String =
        BigDecimal.valueOf(digits.ifEmpty { "0" }.toLong(), fractionDigits(currency)).toPlainString()

    /** `23 h 56 min`, `45 min`, `under 1 min`, `2 d 3 h`; `passed` at or below zero. */
    fun duration(ms: Long): String {
        if (ms <= 0) return "passed"
        val minutes = ms / 60_000
        val days = minutes / (24 * 60)
        val hours = (minutes / 60) % 24
        val mins = minutes % 60
        return when {
            minutes == 0L -> "under 1 min"
            days > 0 -> if (hours > 0) "$days d $hours h" else "$days d"
            hours > 0 -> if (mins > 0) "$hours h $mins min" else "$hours h"
            else -> "$mins min"
        }
    }

    private val hm = DateTimeFormatter.ofPattern("HH:mm", Locale.ENGLISH)
    private val dayHm = DateTimeFormatter.ofPattern("EEE d MMM HH:mm", Locale.ENGLISH)

    /** `10:30` today, `tomorrow 10:30`, else `Thu 26 Nov 10:30`, in [zone] relative to [nowMs]. */
    fun clock(atMs: Long, nowMs: Long, zone: ZoneId): String {
        val at = Instant.ofEpochMilli(atMs).atZone(zone)
        val days = ChronoUnit.DAYS.between(Instant.ofEpochMilli(nowMs).atZone(zone).toLocalDate(), at.toLocalDate())
        return when (days) {
            0L -> at.format(hm)
            1L -> "tomorrow ${at.format(hm)}"
            else -> at.format(dayHm)
        }
    }

    fun status(s: PaymentStatus): String = when (s) {
        PaymentStatus.PENDING -> "pending"
        PaymentStatus.FORWARDING -> "forwarding"
        PaymentStatus.FAILED_TO_FORWARD -> "retrying"
        PaymentStatus.APPROVED -> "approved"
        PaymentStatus.DECLINED -> "declined"
        PaymentStatus.EXPIRED -> "expired"
        PaymentStatus.OUTCOME_UNKNOWN -> "waiting for the processor's answer"
    }

    /** The order badge (R15). */
    fun badge(s: OrderStatus): String = when (s) {
        OrderStatus.PAYMENT_PENDING -> "Payment pending"
        OrderStatus.PAID -> "Paid"
        OrderStatus.CARD_DECLINED -> "Card declined"
        OrderStatus.EXPIRED -> "Expired"
    }

    fun decline(r: DeclineReason): String = when (r) {
        is DeclineReason.InsufficientFunds -> "insufficient funds"
        is DeclineReason.LostCard -> "lost card"
        is DeclineReason.StolenCard -> "stolen card"
        is DeclineReason.ExpiredCard -> "expired card"
        is DeclineReason.DoNotHonour -> "do not honour"
        is DeclineReason.ProcessingError -> "processing error"
        is DeclineReason.Replayed -> "card read used twice"
        is DeclineReason.Mismatch -> "card read made for another payment"
        is DeclineReason.Other -> r.code
    }

    fun offlineReason(r: OfflineReason): String = when (r) {
        OfflineReason.NETWORK_OUTAGE -> "network outage"
        OfflineReason.SERVICE_DISRUPTION -> "service disruption"
        OfflineReason.FORCED_OFFLINE -> "forced offline"
    }

    fun connectivity(c: ConnectivityStatus): String = when (c) {
        is ConnectivityStatus.Unknown -> "checking the connection"
        is ConnectivityStatus.Online -> "online"
        is ConnectivityStatus.NetworkOutage -> "network outage"
        is ConnectivityStatus.ServiceDisruption -> "service disruption"
    }
}
