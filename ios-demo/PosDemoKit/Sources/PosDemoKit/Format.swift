import Foundation
import PosCore

/// How the screen writes money, durations and times (English, like the CLI demo and the Android app).
public enum Fmt {
    public static func fractionDigits(_ currency: String) -> Int {
        switch currency {
        case "JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG": return 0
        case "BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD": return 3
        default: return 2
        }
    }

    /// `12.50 USD`, `1500 JPY`.
    public static func money(_ m: Money) -> String { "\(decimal(m.minorUnits, fractionDigits(m.currency))) \(m.currency)" }

    public static func moneys(_ ms: [Money]) -> String { ms.isEmpty ? "nothing" : ms.map(money).joined(separator: " + ") }

    /// The keypad's digits as an amount: "1250" in USD is `12.50`.
    public static func entry(_ digits: String, _ currency: String) -> String {
        decimal(Int64(digits) ?? 0, fractionDigits(currency))
    }

    static func decimal(_ minor: Int64, _ digits: Int) -> String {
        guard digits > 0 else { return String(minor) }
        var scale: Int64 = 1
        for _ in 0..<digits { scale *= 10 }
        let sign = minor < 0 ? "-" : ""
        let a = minor.magnitude
        let frac = String(a % UInt64(scale))
        return "\(sign)\(a / UInt64(scale)).\(String(repeating: "0", count: digits - frac.count))\(frac)"
    }

    /// `23 h 56 min`, `45 min`, `under 1 min`, `2 d 3 h`; `passed` at or below zero.
    public static func duration(_ ms: Int64) -> String {
        if ms <= 0 { return "passed" }
        let minutes = ms / 60_000
        let days = minutes / (24 * 60)
        let hours = (minutes / 60) % 24
        let mins = minutes % 60
        if minutes == 0 { return "under 1 min" }
        if days > 0 { return hours > 0 ? "\(days) d \(hours) h" : "\(days) d" }
        if hours > 0 { return mins > 0 ? "\(hours) h \(mins) min" : "\(hours) h" }
        return "\(mins) min"
    }

    static func formatter(_ pattern: String, _ zone: TimeZone) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = zone
        f.dateFormat = pattern
        return f
    }

    static func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

    /// `10:30` today, `tomorrow 10:30`, else `Thu 26 Nov 10:30`, in `zone` relative to `nowMs`.
    public static func clock(_ atMs: Int64, now nowMs: Int64, zone: TimeZone) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = zone
        let days = cal.dateComponents([.day], from: cal.startOfDay(for: date(nowMs)), to: cal.startOfDay(for: date(atMs))).day ?? 0
        let hm = formatter("HH:mm", zone).string(from: date(atMs))
        switch days {
        case 0: return hm
        case 1: return "tomorrow \(hm)"
        default: return formatter("EEE d MMM HH:mm", zone).string(from: date(atMs))
        }
    }

    /// `Tue 24 Nov 08:00`.
    public static func day(_ ms: Int64, zone: TimeZone) -> String { formatter("EEE d MMM HH:mm", zone).string(from: date(ms)) }

    public static func status(_ s: PaymentStatus) -> String {
        switch s {
        case .pending: return "pending"
        case .forwarding: return "forwarding"
        case .failedToForward: return "retrying"
        case .approved: return "approved"
        case .declined: return "declined"
        case .expired: return "expired"
        case .outcomeUnknown: return "waiting for the processor's answer"
        }
    }

    /// The order badge (R15).
    public static func badge(_ s: OrderStatus) -> String {
        switch s {
        case .paymentPending: return "Payment pending"
        case .paid: return "Paid"
        case .cardDeclined: return "Card declined"
        case .expired: return "Expired"
        }
    }

    public static func decline(_ r: DeclineReason) -> String {
        switch r {
        case .insufficientFunds: return "insufficient funds"
        case .lostCard: return "lost card"
        case .stolenCard: return "stolen card"
        case .expiredCard: return "expired card"
        case .doNotHonour: return "do not honour"
        case .processingError: return "processing error"
        case .replayed: return "card read used twice"
        case .mismatch: return "card read made for another payment"
        case let .other(code): return code
        }
    }

    public static func offlineReason(_ r: OfflineReason) -> String {
        switch r {
        case .networkOutage: return "network outage"
        case .serviceDisruption: return "service disruption"
        case .forcedOffline: return "forced offline"
        }
    }

    public static func network(_ n: CardNetwork) -> String {
        switch n {
        case .visa: return "Visa"
        case .mastercard: return "Mastercard"
        case .amex: return "Amex"
        case .discover: return "Discover"
        case .jcb: return "Jcb"
        case .unionPay: return "Unionpay"
        case .interac: return "Interac"
        case .eftpos: return "Eftpos"
        case .other: return "Other"
        }
    }

    public static func entryMode(_ m: EntryMode) -> String {
        switch m {
        case .chip: return "chip"
        case .contactless: return "contactless"
        case .swipe: return "swipe"
        case .manual: return "manual"
        }
    }
}
