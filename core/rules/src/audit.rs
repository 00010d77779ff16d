//! The audit journal (SPEC B12, R13): what happened to offline payments and
//! who did it, for reconciliation.
//!
//! Owns [`AuditEntry`] and its [`AuditKind`]s (entering and leaving offline
//! mode, who took each offline payment, refusals, overrides with the money at
//! risk, forwarding attempts, expiries, policy changes), the in-memory,
//! append-only [`AuditLog`] with strictly increasing, gap-free sequence
//! numbers, and a hand-written CSV export ([`export_csv`]). Entries derive
//! serde, so callers who want JSON serialise [`AuditLog::entries`] themselves.
//!
//! No entry holds card data or a customer contact: the types here cannot
//! carry them. The free-text fields (an override's reason, a policy summary)
//! are the app's words; the app must keep personal data out of them.
//! Tamper evidence (a MAC chain over the entries) is added by the store.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::account::MerchantAccount;
use crate::clock::Timestamp;
use crate::lifecycle::{DeclineReason, ForwardErrorKind, OrderId, PaymentId, StaffId};
use crate::money::Money;

/// Longest free-text field (reason, summary, rule id) accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 500;

/// Why the device went offline (R1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OfflineCause {
    /// The device has no internet.
    NetworkOutage,
    /// The internet works, the payment service does not.
    ServiceDisruption,
}

/// An action guarded while payments are pending (R13, B7), done anyway
/// through an explicit override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OverrideAction {
    /// A staff member logged out.
    Logout,
    /// The device switched to another location.
    SwitchLocation,
    /// The device switched to another merchant account.
    SwitchAccount,
    /// The local store was reset.
    ResetStore,
    /// The device was removed from the account.
    RemoveDevice,
    /// The library was downgraded.
    Downgrade,
}

/// How one forwarding attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// The processor approved the payment.
    Approved {
        /// The processor's reference for it.
        processor_ref: String,
    },
    /// The processor declined the payment.
    Declined {
        /// Why.
        reason: DeclineReason,
    },
    /// No decision: the attempt failed.
    Failed {
        /// Why.
        error: ForwardErrorKind,
    },
}

/// What an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditKind {
    /// The engine went offline and started accepting offline payments.
    EnteredOfflineMode {
        /// Network outage or service disruption.
        cause: OfflineCause,
    },
    /// The engine came back online.
    LeftOfflineMode,
    /// A card payment was taken offline and stored. The entry's actor, who
    /// took it, is required.
    OfflinePaymentTaken {
        /// The payment.
        payment_id: PaymentId,
        /// Its order.
        order_id: OrderId,
        /// Its amount (positive).
        amount: Money,
    },
    /// An offline card payment was refused by a rule.
    OfflinePaymentRefused {
        /// The refusing rule's id, as the rules name it.
        rule: String,
        /// The refused amount (positive).
        amount: Money,
    },
    /// A guarded action was done while payments were pending (R13). The
    /// entry's actor, who overrode, is required.
    Override {
        /// What was done.
        action: OverrideAction,
        /// The unforwarded amounts at risk, one per currency, each positive.
        money_at_risk: Vec<Money>,
        /// Why, in the staff member's words (no personal data).
        reason: String,
    },
    /// A forwarding attempt ended.
    ForwardAttempt {
        /// The payment.
        payment_id: PaymentId,
        /// Which attempt, from 1.
        attempt: u32,
        /// How it ended.
        outcome: ForwardOutcome,
    },
    /// A payment passed its forwarding deadline unforwarded (R8).
    PaymentExpired {
        /// The payment.
        payment_id: PaymentId,
        /// Its order.
        order_id: OrderId,
        /// Its amount, now counted as lost (positive).
        amount: Money,
        /// Whether the processor may hold it anyway (see
        /// [`crate::lifecycle::PaymentState::Expired`]).
        maybe_received: bool,
    },
    /// A merchant setting changed (offline payments on or off, a limit...).
    PolicyChanged {
        /// Which setting, e.g. `offline_enabled`.
        setting: String,
        /// The change, e.g. `false -> true` (no personal data).
        summary: String,
    },
    /// The processor's time corrected the trusted clock (B13). The entry's
    /// time is the trusted time right after the correction.
    ClockCorrected {
        /// How far trusted time was from the processor's, in ms, beyond the
        /// request's round trip: positive when the device was behind.
        error_ms: i64,
        /// How far the clock was moved, in ms (same sign, bounded per
        /// correction); a backward step holds the clock still that long.
        step_ms: i64,
    },
    /// A payment passed its forwarding deadline while an attempt may have
    /// reached the processor: its outcome is unknown until the processor is
    /// asked about it (see
    /// [`crate::lifecycle::PaymentState::OutcomeUnknown`]). Not counted lost.
    PaymentOutcomeUnknown {
        /// The payment.
        payment_id: PaymentId,
        /// Its order.
        order_id: OrderId,
        /// Its amount (positive).
        amount: Money,
    },
    /// The device switched merchant account or location (B7). Payments
    /// taken under `from` are still forwarded under `from` only.
    AccountSwitched {
        /// The account before (`None`: the device was not bound yet).
        from: Option<MerchantAccount>,
        /// The account after.
        to: MerchantAccount,
    },
    /// A card reader was remembered (paired, or paired again): a profile
    /// reader authenticated by its certificate, or a vendor SDK's reader on
    /// the vendor's word.
    ReaderPaired {
        /// Its serial.
        serial: String,
        /// The model R11 checks for it.
        model: String,
        /// Remembered as a vendor SDK's reader (its reads are not signed).
        vendor: bool,
    },
    /// A card reader was forgotten: it must be paired again, online.
    ReaderForgotten {
        /// Its serial.
        serial: String,
    },
    // New kinds go last: snapshots encode a kind by its position.
}

impl AuditKind {
    /// A stable `snake_case` name, for exports and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            AuditKind::EnteredOfflineMode { .. } => "entered_offline_mode",
            AuditKind::LeftOfflineMode => "left_offline_mode",
            AuditKind::OfflinePaymentTaken { .. } => "offline_payment_taken",
            AuditKind::OfflinePaymentRefused { .. } => "offline_payment_refused",
            AuditKind::Override { .. } => "override",
            AuditKind::ForwardAttempt { .. } => "forward_attempt",
            AuditKind::PaymentExpired { .. } => "payment_expired",
            AuditKind::PaymentOutcomeUnknown { .. } => "payment_outcome_unknown",
            AuditKind::PolicyChanged { .. } => "policy_changed",
            AuditKind::ClockCorrected { .. } => "clock_corrected",
            AuditKind::AccountSwitched { .. } => "account_switched",
            AuditKind::ReaderPaired { .. } => "reader_paired",
            AuditKind::ReaderForgotten { .. } => "reader_forgotten",
        }
    }

    /// Whether an entry of this kind must name its actor.
    fn needs_actor(&self) -> bool {
        matches!(
            self,
            AuditKind::OfflinePaymentTaken { .. } | AuditKind::Override { .. }
        )
    }

    fn validate(&self) -> Result<(), AuditError> {
        let positive = |field: &'static str, m: &Money| {
            if m.minor_units() > 0 {
                Ok(())
            } else {
                Err(AuditError::InvalidField {
                    field,
                    problem: "must be positive",
                })
            }
        };
        match self {
            AuditKind::EnteredOfflineMode { .. } | AuditKind::LeftOfflineMode => Ok(()),
            AuditKind::ReaderPaired { serial, model, .. } => {
                text("serial", serial)?;
                text("model", model)
            }
            AuditKind::ReaderForgotten { serial } => text("serial", serial),
            AuditKind::AccountSwitched { from, to } => {
                if to.is_valid() && from.as_ref().is_none_or(MerchantAccount::is_valid) {
                    Ok(())
                } else {
                    Err(AuditError::InvalidField {
                        field: "account",
                        problem: "must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    })
                }
            }
            AuditKind::OfflinePaymentTaken { amount, .. }
            | AuditKind::PaymentExpired { amount, .. }
            | AuditKind::PaymentOutcomeUnknown { amount, .. } => positive("amount", amount),
            AuditKind::OfflinePaymentRefused { rule, amount } => {
                text("rule", rule)?;
                positive("amount", amount)
            }
            AuditKind::Override {
                money_at_risk,
                reason,
                ..
            } => {
                text("reason", reason)?;
                if money_at_risk.is_empty() {
                    return Err(AuditError::InvalidField {
                        field: "money_at_risk",
                        problem: "must state the money at risk",
                    });
                }
                for (i, m) in money_at_risk.iter().enumerate() {
                    positive("money_at_risk", m)?;
                    if money_at_risk[..i]
                        .iter()
                        .any(|o| o.currency() == m.currency())
                    {
                        return Err(AuditError::InvalidField {
                            field: "money_at_risk",
                            problem: "has a currency twice",
                        });
                    }
                }
                Ok(())
            }
            AuditKind::ForwardAttempt { attempt, .. } => {
                if *attempt == 0 {
                    return Err(AuditError::InvalidField {
                        field: "attempt",
                        problem: "counts from 1",
                    });
                }
                Ok(())
            }
            AuditKind::PolicyChanged { setting, summary } => {
                text("setting", setting)?;
                text("summary", summary)
            }
            AuditKind::ClockCorrected { error_ms, step_ms } => {
                if *step_ms == 0 || step_ms.signum() != error_ms.signum() {
                    return Err(AuditError::InvalidField {
                        field: "step_ms",
                        problem: "must move towards the error",
                    });
                }
                Ok(())
            }
        }
    }
}

fn text(field: &'static str, s: &str) -> Result<(), AuditError> {
    if s.trim().is_empty() {
        return Err(AuditError::InvalidField {
            field,
            problem: "is empty",
        });
    }
    if s.chars().count() > MAX_TEXT_CHARS {
        return Err(AuditError::InvalidField {
            field,
            problem: "is longer than 500 characters",
        });
    }
    Ok(())
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the journal: consecutive, from 1.
    pub seq: u64,
    /// When it happened (trusted time).
    pub at: Timestamp,
    /// The staff member who did it, when one did.
    pub actor: Option<StaffId>,
    /// What happened.
    pub kind: AuditKind,
    /// The merchant account and location the device was under when it
    /// happened (`None` before the device was bound to one).
    #[serde(default)]
    pub account: Option<MerchantAccount>,
}

/// Why an entry was refused. The log is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// This kind of entry must say who did it.
    #[error("a {kind} entry must name its actor")]
    MissingActor {
        /// The entry's kind name.
        kind: &'static str,
    },
    /// A field is unusable.
    #[error("{field} {problem}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The entry is earlier than the last one: trusted time never goes back.
    #[error("entry time goes back from the previous entry")]
    TimeWentBack {
        /// The previous entry's time.
        last: Timestamp,
        /// The refused entry's time.
        at: Timestamp,
    },
    /// A restored journal has a missing, repeated or reordered entry.
    #[error("sequence broken: expected {expected}, found {found}")]
    SequenceBroken {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// No sequence number is left (after 2^64 − 1 entries).
    #[error("the journal has no sequence number left")]
    SequenceExhausted,
}

/// The append-only journal, in memory. Sequence numbers are assigned here,
/// consecutive from 1 (or from where a restored journal ends), and times
/// never go back, so a missing, repeated or reordered entry shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    /// The last sequence number given out (0 before the first).
    last_seq: u64,
}

impl AuditLog {
    /// An empty journal; its first entry gets sequence number 1.
    pub fn new() -> Self {
        AuditLog::default()
    }

    /// Rebuilds a journal from stored entries, checking each as
    /// [`AuditLog::append`] would (actor, fields, time never going back) and
    /// that the sequence numbers are consecutive, starting right after
    /// `pruned_through`: the last sequence number of entries already
    /// exported and deleted (0 if none ever were). So a journal whose head
    /// was pruned, or that was pruned entirely, keeps numbering where it was,
    /// and a missing first entry shows. Refused whole on the first problem.
    pub fn restore(pruned_through: u64, entries: Vec<AuditEntry>) -> Result<Self, AuditError> {
        let mut log = AuditLog {
            entries: Vec::with_capacity(entries.len()),
            last_seq: pruned_through,
        };
        for e in entries {
            let expected = log
                .last_seq
                .checked_add(1)
                .ok_or(AuditError::SequenceExhausted)?;
            if e.seq != expected {
                return Err(AuditError::SequenceBroken {
                    expected,
                    found: e.seq,
                });
            }
            log.check(e.at, e.actor.as_ref(), &e.kind)?;
            log.last_seq = e.seq;
            log.entries.push(e);
        }
        Ok(log)
    }

    fn check(
        &self,
        at: Timestamp,
        actor: Option<&StaffId>,
        kind: &AuditKind,
    ) -> Result<(), AuditError> {
        if kind.needs_actor() && actor.is_none() {
            return Err(AuditError::MissingActor { kind: kind.name() });
        }
        kind.validate()?;
        if let Some(last) = self.entries.last() {
            if at < last.at {
                return Err(AuditError::TimeWentBack { last: last.at, at });
            }
        }
        Ok(())
    }

    /// Appends an entry and returns it with its sequence number. `at` must
    /// not be earlier than the last entry's: take the trusted time while
    /// holding whatever serialises appends.
    pub fn append(
        &mut self,
        at: Timestamp,
        actor: Option<StaffId>,
        kind: AuditKind,
    ) -> Result<&AuditEntry, AuditError> {
        self.append_under(at, actor, kind, None)
    }

    /// [`AuditLog::append`], recording the merchant account the device was
    /// under.
    pub fn append_under(
        &mut self,
        at: Timestamp,
        actor: Option<StaffId>,
        kind: AuditKind,
        account: Option<MerchantAccount>,
    ) -> Result<&AuditEntry, AuditError> {
        if account.as_ref().is_some_and(|a| !a.is_valid()) {
            return Err(AuditError::InvalidField {
                field: "account",
                problem: "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            });
        }
        self.check(at, actor.as_ref(), &kind)?;
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(AuditError::SequenceExhausted)?;
        self.entries.push(AuditEntry {
            seq,
            at,
            actor,
            kind,
            account,
        });
        self.last_seq = seq;
        Ok(&self.entries[self.entries.len() - 1])
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// The entries after `seq` (all of them for 0), oldest first: what an
    /// exporter that already has everything up to `seq` still needs.
    pub fn entries_since(&self, seq: u64) -> &[AuditEntry] {
        let start = self.entries.partition_point(|e| e.seq <= seq);
        &self.entries[start..]
    }

    /// The last sequence number given out; 0 when nothing was ever appended.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Drops the entries up to `seq` from memory (they were archived: the
    /// store keeps them). Numbering goes on where it was.
    pub fn prune_through(&mut self, seq: u64) {
        let end = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.drain(..end);
    }
}

/// The columns of [`export_csv`], in order.
pub const CSV_HEADER: &str =
    "seq,at_ms,at_utc,actor,kind,payment_id,order_id,amount_minor,currency,attempt,outcome,detail,account";

/// `entries` as CSV (RFC 4180: CRLF line ends, fields quoted when needed),
/// with the [`CSV_HEADER`] line first. Text cells that a spreadsheet would
/// run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) are
/// prefixed with `'`. An override with several currencies at risk lists
/// them in `detail`.
pub fn export_csv(entries: &[AuditEntry]) -> String {
    let mut out = String::with_capacity(entries.len().saturating_add(1).saturating_mul(64));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for e in entries {
        let row = CsvRow::of(e);
        let at_utc =
            e.at.to_datetime()
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_default();
        let cells = [
            e.seq.to_string(),
            e.at.millis().to_string(),
            at_utc,
            text_cell(e.actor.as_ref().map_or("", |a| a.as_str())),
            e.kind.name().to_owned(),
            text_cell(row.payment_id.map_or("", |p| p.as_str())),
            text_cell(row.order_id.map_or("", |o| o.as_str())),
            row.amount
                .map_or(String::new(), |m| m.minor_units().to_string()),
            row.amount
                .map_or(String::new(), |m| m.currency().code().to_owned()),
            row.attempt.map_or(String::new(), |a| a.to_string()),
            text_cell(&row.outcome),
            text_cell(&row.detail),
            e.account.as_ref().map_or(String::new(), |a| a.to_string()),
        ];
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_quoted(&mut out, cell);
        }
        out.push_str("\r\n");
    }
    out
}

/// The kind-specific cells of one CSV row.
struct CsvRow<'a> {
    payment_id: Option<&'a PaymentId>,
    order_id: Option<&'a OrderId>,
    amount: Option<&'a Money>,
    attempt: Option<u32>,
    outcome: String,
    detail: String,
}

impl<'a> CsvRow<'a> {
    fn of(e: &'a AuditEntry) -> Self {
        let mut row = CsvRow {
            payment_id: None,
            order_id: None,
            amount: None,
            attempt: None,
            outcome: String::new(),
            detail: String::new(),
        };
        match &e.kind {
            AuditKind::EnteredOfflineMode { cause } => {
                row.detail = match cause {
                    OfflineCause::NetworkOutage => "cause=network_outage".into(),
                    OfflineCause::ServiceDisruption => "cause=service_disruption".into(),
                };
            }
            AuditKind::LeftOfflineMode => {}
            AuditKind::OfflinePaymentTaken {
                payment_id,
                order_id,
                amount,
            } => {
                row.payment_id = Some(payment_id);
                row.order_id = Some(order_id);
                row.amount = Some(amount);
            }
            AuditKind::OfflinePaymentRefused { rule, amount } => {
                row.amount = Some(amount);
                row.detail = format!("rule={rule}");
            }
            AuditKind::Override {
                action,
                money_at_risk,
                reason,
            } => {
                if let [single] = money_at_risk.as_slice() {
                    row.amount = Some(single);
                }
                let mut d = format!("action={action:?}; money_at_risk=");
                for (i, m) in money_at_risk.iter().enumerate() {
                    let sep = if i > 0 { " + " } else { "" };
                    // Writing to a String cannot fail.
                    let _ = write!(d, "{sep}{m}");
                }
                let _ = write!(d, "; reason={reason}");
                row.detail = d;
            }
            AuditKind::ForwardAttempt {
                payment_id,
                attempt,
                outcome,
            } => {
                row.payment_id = Some(payment_id);
                row.attempt = Some(*attempt);
                match outcome {
                    ForwardOutcome::Approved { processor_ref } => {
                        row.outcome = "approved".into();
                        row.detail = format!("processor_ref={processor_ref}");
                    }
                    ForwardOutcome::Declined { reason } => {
                        row.outcome = "declined".into();
                        row.detail = match reason {
                            DeclineReason::Other { code } => format!("reason=Other; code={code}"),
                            r => format!("reason={r:?}"),
                        };
                    }
                    ForwardOutcome::Failed { error } => {
                        row.outcome = "failed".into();
                        row.detail = format!("error={error:?}");
                    }
                }
            }
            AuditKind::PaymentExpired {
                payment_id,
                order_id,
                amount,
                maybe_received,
            } => {
                row.payment_id = Some(payment_id);
                row.order_id = Some(order_id);
                row.amount = Some(amount);
                row.detail = format!("maybe_received={maybe_received}");
            }
            AuditKind::PaymentOutcomeUnknown {
                payment_id,
                order_id,
                amount,
            } => {
                row.payment_id = Some(payment_id);
                row.order_id = Some(order_id);
                row.amount = Some(amount);
                row.detail = "check with the processor".into();
            }
            AuditKind::PolicyChanged { setting, summary } => {
                row.detail = format!("setting={setting}; {summary}");
            }
            AuditKind::ClockCorrected { error_ms, step_ms } => {
                row.detail = format!("error_ms={error_ms}; step_ms={step_ms}");
            }
            AuditKind::ReaderPaired {
                serial,
                model,
                vendor,
            } => {
                row.detail = format!("serial={serial}; model={model}; vendor={vendor}");
            }
            AuditKind::ReaderForgotten { serial } => {
                row.detail = format!("serial={serial}");
            }
            AuditKind::AccountSwitched { from, to } => {
                row.detail = format!(
                    "from={}; to={to}",
                    from.as_ref()
                        .map_or_else(|| "none".to_owned(), |f| f.to_string())
                );
            }
        }
        row
    }
}

/// Defuses spreadsheet formulas in a text cell.
fn text_cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

/// Appends `cell`, quoted (with `"` doubled) if it holds `,`, `"`, CR or LF.
fn push_quoted(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::parse("USD").expect("USD"))
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").expect("EUR"))
    }

    fn staff() -> Option<StaffId> {
        Some(StaffId::parse("staff_7").expect("valid"))
    }

    fn taken(amount: Money) -> AuditKind {
        AuditKind::OfflinePaymentTaken {
            payment_id: PaymentId::parse("pay_1").expect("valid"),
            order_id: OrderId::parse("ord_1").expect("valid"),
            amount,
        }
    }

    fn filled() -> AuditLog {
        let mut log = AuditLog::new();
        log.append(
            Timestamp(1_000),
            None,
            AuditKind::EnteredOfflineMode {
                cause: OfflineCause::ServiceDisruption,
            },
        )
        .expect("ok");
        log.append(Timestamp(2_000), staff(), taken(usd(1_250)))
            .expect("ok");
        log.append(Timestamp(2_000), None, AuditKind::LeftOfflineMode)
            .expect("ok");
        log
    }

    #[test]
    fn sequence_numbers_are_consecutive_from_one() {
        let log = filled();
        let seqs: Vec<u64> = log.entries().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn entries_since_returns_what_follows() {
        let log = filled();
        assert_eq!(log.entries_since(0).len(), 3);
        assert_eq!(log.entries_since(1)[0].seq, 2);
        assert!(log.entries_since(3).is_empty());
        assert!(log.entries_since(u64::MAX).is_empty());
        assert!(AuditLog::new().entries_since(0).is_empty());
    }

    #[test]
    fn refused_entries_leave_the_log_unchanged() {
        let mut log = filled();
        let before = log.clone();
        let refusals = [
            (Timestamp(1_999), None, AuditKind::LeftOfflineMode),
            (Timestamp(3_000), None, taken(usd(1))),
            (Timestamp(3_000), staff(), taken(usd(0))),
            (
                Timestamp(3_000),
                staff(),
                AuditKind::Override {
                    action: OverrideAction::Logout,
                    money_at_risk: vec![],
                    reason: "end of shift".into(),
                },
            ),
            (
                Timestamp(3_000),
                staff(),
                AuditKind::Override {
                    action: OverrideAction::Logout,
                    money_at_risk: vec![usd(1), usd(2)],
                    reason: "end of shift".into(),
                },
            ),
            (
                Timestamp(3_000),
                staff(),
                AuditKind::Override {
                    action: OverrideAction::ResetStore,
                    money_at_risk: vec![usd(1)],
                    reason: "  ".into(),
                },
            ),
            (
                Timestamp(3_000),
                None,
                AuditKind::OfflinePaymentRefused {
                    rule: "x".repeat(MAX_TEXT_CHARS + 1),
                    amount: usd(5),
                },
            ),
            (
                Timestamp(3_000),
                None,
                AuditKind::ForwardAttempt {
                    payment_id: PaymentId::parse("pay_1").expect("valid"),
                    attempt: 0,
                    outcome: ForwardOutcome::Failed {
                        error: ForwardErrorKind::NotSent,
                    },
                },
            ),
        ];
        for (at, actor, kind) in refusals {
            let name = kind.name();
            assert!(log.append(at, actor, kind).is_err(), "{name}");
        }
        assert_eq!(
            log.append(Timestamp(1), None, AuditKind::LeftOfflineMode),
            Err(AuditError::TimeWentBack {
                last: Timestamp(2_000),
                at: Timestamp(1)
            })
        );
        assert_eq!(
            log.append(Timestamp(5), None, taken(usd(1))),
            Err(AuditError::MissingActor {
                kind: "offline_payment_taken"
            })
        );
        assert_eq!(log, before);
    }

    #[test]
    fn restore_checks_the_sequence_and_the_time() {
        let log = filled();
        let entries = log.entries().to_vec();
        let restored = AuditLog::restore(0, entries.clone()).expect("intact");
        assert_eq!(restored, log);

        // Pruned head: continues from there.
        let mut tail = AuditLog::restore(1, entries[1..].to_vec()).expect("pruned head");
        assert_eq!(
            tail.append(Timestamp(9_000), None, AuditKind::LeftOfflineMode)
                .map(|e| e.seq),
            Ok(4)
        );
        // Pruned entirely: numbering does not restart at 1.
        let mut empty = AuditLog::restore(3, vec![]).expect("all pruned");
        assert_eq!(empty.last_seq(), 3);
        assert_eq!(
            empty
                .append(Timestamp(0), None, AuditKind::LeftOfflineMode)
                .map(|e| e.seq),
            Ok(4)
        );
        // A missing first entry shows.
        assert_eq!(
            AuditLog::restore(0, entries[1..].to_vec()),
            Err(AuditError::SequenceBroken {
                expected: 1,
                found: 2
            })
        );

        let mut gap = entries.clone();
        gap.remove(1);
        assert_eq!(
            AuditLog::restore(0, gap),
            Err(AuditError::SequenceBroken {
                expected: 2,
                found: 3
            })
        );
        let mut swapped = entries.clone();
        swapped.swap(0, 1);
        assert!(AuditLog::restore(0, swapped).is_err());
        let mut back_in_time = entries.clone();
        back_in_time[2].at = Timestamp(1_500);
        assert_eq!(
            AuditLog::restore(0, back_in_time),
            Err(AuditError::TimeWentBack {
                last: Timestamp(2_000),
                at: Timestamp(1_500)
            })
        );
        let mut no_actor = entries;
        no_actor[1].actor = None;
        assert!(matches!(
            AuditLog::restore(0, no_actor),
            Err(AuditError::MissingActor { .. })
        ));
    }

    #[test]
    fn sequence_exhaustion_is_an_error_not_a_wrap() {
        let mut log = AuditLog::restore(u64::MAX, vec![]).expect("valid");
        assert_eq!(
            log.append(Timestamp(0), None, AuditKind::LeftOfflineMode),
            Err(AuditError::SequenceExhausted)
        );
    }

    #[test]
    fn entries_round_trip_through_json() {
        let log = filled();
        let json = serde_json::to_string(log.entries()).expect("serialize");
        let back: Vec<AuditEntry> = serde_json::from_str(&json).expect("parse");
        assert_eq!(AuditLog::restore(0, back).expect("valid"), log);
    }

    #[test]
    fn csv_export_escapes_and_defuses() {
        let mut log = filled();
        log.append(
            Timestamp(3_000),
            staff(),
            AuditKind::Override {
                action: OverrideAction::Logout,
                money_at_risk: vec![usd(1_250), eur(300)],
                reason: "=HYPERLINK(\"x\"), shift \"end\"\nbye".into(),
            },
        )
        .expect("ok");
        log.append(
            Timestamp(4_000),
            None,
            AuditKind::ForwardAttempt {
                payment_id: PaymentId::parse("-pay").expect("valid"),
                attempt: 2,
                outcome: ForwardOutcome::Declined {
                    reason: DeclineReason::Other { code: "51".into() },
                },
            },
        )
        .expect("ok");
        let csv = export_csv(log.entries());
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "1,1000,1970-01-01T00:00:01.000Z,,entered_offline_mode,,,,,,,cause=service_disruption,"
        );
        assert_eq!(
            lines[2],
            "2,2000,1970-01-01T00:00:02.000Z,staff_7,offline_payment_taken,pay_1,ord_1,1250,USD,,,,"
        );
        // The reason's quotes are doubled, the cell quoted, its newline kept inside.
        assert_eq!(
            lines[4],
            "4,3000,1970-01-01T00:00:03.000Z,staff_7,override,,,,,,,\"action=Logout; \
             money_at_risk=12.50 USD + 3.00 EUR; reason==HYPERLINK(\"\"x\"\"), shift \"\"end\"\"\nbye\","
        );
        // A cell starting with '-' is defused.
        assert_eq!(
            lines[5],
            "5,4000,1970-01-01T00:00:04.000Z,,forward_attempt,'-pay,,,,2,declined,reason=Other; code=51,"
        );
        assert_eq!(lines[6], "");
        assert_eq!(lines.len(), 7);
        assert_eq!(text_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(text_cell("+1"), "'+1");
        assert_eq!(text_cell("plain"), "plain");
    }

    #[test]
    fn empty_export_is_just_the_header() {
        assert_eq!(export_csv(&[]), format!("{CSV_HEADER}\r\n"));
    }
}
