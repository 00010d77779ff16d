package org.poscore.demo

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.poscore.Money
import org.poscore.PaymentStatus
import org.poscore.PolicyPreset

/** Who may take offline payments (R12) and who may leave while payments are pending (R13). */
class PeopleTest {
    @Test
    fun `a cashier without the offline permission is refused with rule R12 (Shopify preset)`() = till(PolicyPreset.SHOPIFY_POS) {
        open()
        assertTrue(screen.settings.staffPermissionRequired)
        networkDrops()
        send(CashierIntent.SignIn("trainee-kim", false))
        assertEquals("trainee-kim", screen.cashier)
        var s = sell(600, card("approve", "4242"))
        val r = s.refusal!!
        assertEquals("R12", r.rule)
        assertEquals("StaffNotPermitted", r.kind)
        assertTrue(s.pending.rows.isEmpty())

        // A cashier with the permission takes the same order.
        send(CashierIntent.SignIn("alex", true))
        s = payCard(card("approve", "4242"))
        assertEquals(PaymentStatus.PENDING, (s.card as CardFlow.Done).status)
        assertNull(s.refusal)
    }

    @Test
    fun `logout is refused while payments are pending, a manager's override is audited and the payments stay`() = till {
        open()
        networkDrops()
        offlineSales()
        var s = send(CashierIntent.LogOut)
        assertEquals(
            LogoutPanel.Refused(
                8,
                listOf(Money(20_700, "USD")),
                "Cannot log out: 8 offline payments are not forwarded yet (207.00 USD at risk).",
                true,
            ),
            s.logout,
        )
        assertEquals(Phase.READY, s.phase, "still signed in")
        assertEquals("alex", s.cashier)

        s = send(CashierIntent.LogOutWithOverride("manager-sam", "end of shift"))
        assertEquals(
            LogoutPanel.Overridden(8, "Logged out by manager-sam with 8 payments pending (207.00 USD at risk); recorded in the audit log."),
            s.logout,
        )
        assertEquals(Phase.SIGNED_OUT, s.phase)
        assertNull(s.cashier)
        assertEquals(8, s.pending.rows.size, "stored payments survive a logout")
        val audit = send(CashierIntent.ExportAudit).audit!!.csv
        assertTrue(audit.lines().any { "manager-sam" in it && "end of shift" in it }, audit)

        // Forwarded after the next login, once the service is back (R13).
        send(CashierIntent.SignIn("alex", true))
        at(hm(12, 0))
        s = send(CashierIntent.DemoSetNetwork(true))
        assertTrue(s.pending.rows.isEmpty(), "${s.pending.rows}")
        assertEquals("8/8 207.00 USD of 207.00 USD", s.forwarding!!.text)
    }
}
