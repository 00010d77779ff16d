package org.poscore.demo

import java.time.ZoneId
import java.time.ZoneOffset
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.poscore.Money

/** How the screen writes money, time left and deadlines. */
class FormatTest {
    @Test
    fun `money, durations and clock times read as the cashier expects`() {
        assertEquals("12.50 USD", Fmt.money(Money(1_250, "USD")))
        assertEquals("0.05 EUR", Fmt.money(Money(5, "EUR")))
        assertEquals("1500 JPY", Fmt.money(Money(1_500, "JPY")))
        assertEquals("12.345 KWD", Fmt.money(Money(12_345, "KWD")))
        assertEquals("0.00", Fmt.entry("", "USD"))
        assertEquals("12.50", Fmt.entry("1250", "USD"))

        assertEquals("23 h 56 min", Fmt.duration((23 * 60 + 56) * 60_000L + 59_999))
        assertEquals("1 h", Fmt.duration(3_600_000))
        assertEquals("45 min", Fmt.duration(45 * 60_000L))
        assertEquals("under 1 min", Fmt.duration(59_000))
        assertEquals("2 d 3 h", Fmt.duration((51 * 60 + 10) * 60_000L))
        assertEquals("passed", Fmt.duration(0))

        val now = DemoShop.OPENING_MS // Tue 24 Nov 2026 08:00 UTC
        val utc: ZoneId = ZoneOffset.UTC
        assertEquals("10:30", Fmt.clock(now + 150 * 60_000L, now, utc))
        assertEquals("tomorrow 10:30", Fmt.clock(now + (24 * 60 + 150) * 60_000L, now, utc))
        assertEquals("Thu 26 Nov 08:00", Fmt.clock(now + 48 * 3_600_000L, now, utc))
        // Shown in the shop's zone: 08:00 UTC is 09:00 in Paris.
        assertEquals("09:00", Fmt.clock(now, now, ZoneId.of("Europe/Paris")))
    }
}
