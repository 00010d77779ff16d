package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.PaymentStatus
import org.poscore.PolicyPreset

/** Settings (offline on/off, preset, limits) and the audit export. */
class SettingsTest {
    @Test
    fun `with offline payments turned off the banner says cash only and a card is refused with rule R4`() = till {
        open()
        var s = send(CashierIntent.SetOfflineEnabled(false))
        assertFalse(s.settings.offlineEnabled)
        s = networkDrops()
        assertEquals("Offline card payments are off: cash only until the connection is back.", s.banner!!.offlineLine)
        at(hm(10, 35))
        s = sell(800, card("approve", "4242"))
        assertEquals("R4", s.refusal!!.rule)
        assertEquals("OfflineDisabled", s.refusal!!.kind)
        assertTrue(s.pending.rows.isEmpty())

        // Back on: the same order goes through; turning it off again keeps what is stored.
        send(CashierIntent.SetOfflineEnabled(true))
        s = payCard(card("approve", "4242"))
        assertEquals(PaymentStatus.PENDING, (s.card as CardFlow.Done).status)
        s = send(CashierIntent.SetOfflineEnabled(false))
        assertEquals(1, s.pending.rows.size, "R4: turning offline payments off never discards stored ones")
    }

    @Test
    fun `edited limits are enforced with their figures, per order (R5) and per device (R6)`() = till {
        open()
        var s = send(CashierIntent.SetLimits(5_000, 10_000))
        assertEquals("per order 50.00 USD · device 100.00 USD", s.settings.limitsText)
        networkDrops()
        at(hm(10, 35))
        s = sell(6_000, card("approve", "4242"))
        assertEquals("per-order limit 50.00 USD · already on this order 0.00 USD · this payment 60.00 USD", s.refusal!!.figures)
        send(CashierIntent.NewSale)
        sell(4_000, card("approve", "4242"))
        sell(4_000, card("approve", "4444"))
        s = sell(3_000, card("approve", "0005"))
        val r = s.refusal!!
        assertEquals("R6", r.rule)
        assertEquals("DeviceAmountLimit", r.kind)
        assertEquals("device limit 100.00 USD · already stored on this device 80.00 USD · this payment 30.00 USD", r.figures)
        assertEquals(2, s.pending.rows.size)

        // An invalid setting is refused in words and changes nothing.
        s = send(CashierIntent.SetLimits(0, null))
        assertTrue(s.error!!.startsWith("These settings are not valid"), s.error)
        assertEquals("per order 50.00 USD · device 100.00 USD", s.settings.limitsText)
    }

    @Test
    fun `another preset keeps offline on and the trusted readers, and its reader list applies (R11)`() = till {
        open()
        val s = send(CashierIntent.SetPreset(PolicyPreset.SHOPIFY_POS))
        assertEquals(PolicyPreset.SHOPIFY_POS, s.settings.preset)
        assertTrue(s.settings.offlineEnabled)
        assertTrue(s.settings.staffPermissionRequired)
        assertEquals("chip, contactless", s.settings.entryModes)
        assertEquals("per order 100.00 USD · device 5000.00 USD", s.settings.limitsText)
        assertFalse(s.reader.connected!!.offlineCapable, "Shopify's offline readers do not include the Square Reader")
        networkDrops()
        at(hm(10, 35))
        val refused = sell(800, card("approve", "4242"))
        assertEquals("R11", refused.refusal!!.rule)
    }

    @Test
    fun `the audit export has the day's events and never card numbers or contacts`() = till {
        open()
        networkDrops()
        offlineSales()
        splitOrder()
        send(CashierIntent.LogOut)
        val s = send(CashierIntent.ExportAudit)
        val a = s.audit!!
        assertEquals("poscore-audit-demo-till-1-20261124-1112.csv", a.fileName)
        val lines = a.csv.lines().filter { it.isNotBlank() }
        assertTrue(lines[0].startsWith("seq,at_ms,at_utc,actor,kind,payment_id,order_id,amount_minor,currency"), lines[0])
        assertEquals(lines.size - 1, a.rows)
        for (kind in listOf("policy_changed", "reader_paired", "entered_offline_mode")) {
            assertTrue(lines.any { ",$kind," in it }, "$kind in\n${a.csv}")
        }
        assertTrue(lines.count { ",alex," in it } >= 10, "who took each offline payment")
        for (secret in listOf("4242424242424242", "4000000000009995", "jane.doe", "example.com", "+14155550123", "sam@")) {
            assertFalse(secret in a.csv, "$secret in the export")
        }
        assertNull(s.error)
    }
}
