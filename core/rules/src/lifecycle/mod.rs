//! The life of one offline payment and what hangs off it (SPEC section 4,
//! R8, R15–R17, B2, B9).
//!
//! Owns:
//! - the stable identifiers [`PaymentId`], [`OrderId`] and [`StaffId`] (B2);
//! - the payment state machine: [`PaymentState`], its events
//!   [`PaymentEvent`] and its one transition function [`PaymentState::apply`]
//!   (pending → forwarding → approved | declined | expired, with
//!   failed-to-forward retries in between);
//! - the order badge [`OrderStatus`] and [`order_status`] (R15);
//! - the customer's contact details, [`EmailAddress`], [`PhoneNumber`] and
//!   [`CustomerContact`] (R17), the queued [`ReceiptRequest`] (R16) and the
//!   [`DeclineNotice`] (R17, B9).
//!
//! Everything here is pure and serde-serialisable: the store persists it, the
//! engine drives it. Contact details never appear in clear in `Debug`,
//! `Display` or an error message; only [`EmailAddress::reveal`] and
//! [`PhoneNumber::reveal`] (for the code that actually sends a receipt) and
//! serialisation (for the encrypted store) give them out. No type here holds
//! card data.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::money::{Money, MoneyError};

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

/// Longest identifier accepted from the app.
pub const ID_MAX_CHARS: usize = 64;

/// Why an identifier supplied by the app was refused. The refused value is
/// never echoed: an app might pass personal data where an id is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("{what} is empty")]
    Empty {
        /// Which identifier, e.g. `"payment id"`.
        what: &'static str,
    },
    /// The identifier is longer than [`ID_MAX_CHARS`].
    #[error("{what} is {chars} characters long; at most 64 are allowed")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// Its length in characters.
        chars: usize,
    },
    /// The identifier holds a character outside `A-Z a-z 0-9 _ -`.
    #[error("{what} has a character other than A-Z a-z 0-9 _ - at position {position}")]
    InvalidCharacter {
        /// Which identifier.
        what: &'static str,
        /// Zero-based position of the first bad character.
        position: usize,
    },
}

/// The bytes an identifier may hold: `A-Z a-z 0-9 _ -`.
const ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

fn validate_id(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    // Byte by byte (this runs for every identifier a snapshot holds): the
    // first byte refused is ASCII or starts a multi-byte character, and
    // every byte before it is ASCII, so its index is also its position in
    // characters.
    if let Some(position) = s.bytes().position(|b| !ID_BYTES[usize::from(b)]) {
        return Err(IdError::InvalidCharacter { what, position });
    }
    // Only ASCII is left, so bytes and characters are the same count.
    if s.len() > ID_MAX_CHARS {
        return Err(IdError::TooLong {
            what,
            chars: s.len(),
        });
    }
    Ok(())
}

/// `prefix` followed by the 32 lowercase hex digits of `bytes`.
fn hex_id(prefix: &str, bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        // Written as a string without a copy; read with the same check as
        // `parse`, from a borrowed string when the format allows it.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).map_err(E::custom)
                    }
                    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<$name, E> {
                        $name::try_from(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl $name {
            /// Validates an identifier supplied by the app: 1 to 64
            /// characters of `A-Z a-z 0-9 _ -`. Deserialisation applies the
            /// same check.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_id($what, s)?;
                Ok($name(s.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                validate_id($what, &s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

string_id!(
    /// The stable identifier of one card payment, chosen once at creation
    /// (B2) and used for the online attempt and for every forwarding retry,
    /// so that the processor can deduplicate: one tap is charged at most once.
    ///
    /// Either the app's own idempotency key ([`PaymentId::parse`]) or
    /// generated from 128 random bits ([`PaymentId::from_random`]).
    PaymentId,
    "payment id"
);

string_id!(
    /// The identifier of one order (a sale that one or more tenders pay).
    OrderId,
    "order id"
);

string_id!(
    /// The identifier of a staff member, as the app knows them (R12, B12).
    /// Use an opaque id, not a name or an email address.
    StaffId,
    "staff id"
);

impl PaymentId {
    /// A new id, `pay_` followed by 32 lowercase hex digits.
    ///
    /// `bytes` must come from a cryptographically secure random generator
    /// (the platform's, through the app): two payments given the same bytes
    /// get the same id, and the processor would treat the second as a retry
    /// of the first.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        PaymentId(hex_id("pay_", bytes))
    }
}

impl OrderId {
    /// A new id, `ord_` followed by 32 lowercase hex digits. `bytes` must be
    /// random, as for [`PaymentId::from_random`].
    pub fn from_random(bytes: [u8; 16]) -> Self {
        OrderId(hex_id("ord_", bytes))
    }
}

// ---------------------------------------------------------------------------
// The payment state machine
// ---------------------------------------------------------------------------

/// Why the processor refused a card payment (B9).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeclineReason {
    /// Not enough money or credit on the account.
    InsufficientFunds,
    /// The card was reported lost.
    LostCard,
    /// The card was reported stolen.
    StolenCard,
    /// The card is past its expiry date.
    ExpiredCard,
    /// The issuer refused without saying why.
    DoNotHonour,
    /// The processor or issuer could not process the payment.
    ProcessingError,
    /// Any other reason, with the processor's code.
    Other {
        /// The processor's decline code, as it sent it.
        code: String,
    },
    /// The sealed card data was already used: the processor has seen its
    /// reader counter (for that reader) or its ephemeral key before, on
    /// another payment. Wire code `replayed`.
    Replayed,
    /// The sealed card data does not belong to this request: it is bound
    /// to another payment id, device, amount, currency, entry mode, network
    /// or last four digits, it is bound to nothing (version 1), or it does
    /// not open (changed bytes). Wire code `mismatch`.
    Mismatch,
}

/// Why one forwarding attempt failed without a decision from the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForwardErrorKind {
    /// The request was never sent: no route, DNS, connection or TLS
    /// handshake failure. The processor cannot have seen it.
    NotSent,
    /// The request was sent but no answer came back (timeout, connection
    /// lost, app killed during the attempt). The processor may have
    /// processed it; the retry, with the same [`PaymentId`], finds out.
    NoAnswer,
    /// The processor answered that it cannot process the request now
    /// (HTTP 5xx, rate limit, maintenance). It may have been partly processed.
    ServiceUnavailable,
    /// The processor refused the request itself, not the card (credentials,
    /// malformed request, unknown merchant). Retrying the same request gives
    /// the same answer until the app fixes the cause.
    Rejected,
}

impl ForwardErrorKind {
    /// Whether an automatic retry may succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ForwardErrorKind::Rejected)
    }

    /// Whether the processor may have received (and even approved) the
    /// payment although no decision reached us.
    pub fn may_have_reached_processor(self) -> bool {
        matches!(
            self,
            ForwardErrorKind::NoAnswer | ForwardErrorKind::ServiceUnavailable
        )
    }
}

/// A payment's forwarding deadline (R8): at and after this instant it is
/// never forwarded again. A distinct type so that "now" and "deadline",
/// both timestamps, cannot be swapped at a call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Deadline(pub Timestamp);

impl Deadline {
    /// True at and after the deadline: "expires 24 h after" means that at
    /// exactly 24 h the payment is already expired.
    pub fn is_passed(self, now: Timestamp) -> bool {
        now >= self.0
    }
}

/// Where an offline payment is in its life (SPEC section 4). Persisted by
/// the store before each network step (B2).
///
/// ```text
/// Pending ──StartForwarding──▶ Forwarding ──Approved──▶ Approved
///    │                          │  ▲   └────Declined──▶ Declined
///    │                ForwardFailed  StartForwarding
///    │                          ▼  │
///    │                     FailedToForward ──Approved / Declined (late answer)
///    │                          │
///    └──DeadlineReached─────────┴──DeadlineReached──▶ Expired
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    /// Taken offline and stored; never sent to the processor.
    Pending,
    /// An attempt to forward is in flight. Entered (and made durable) before
    /// the request leaves, so that a crash during the attempt is seen at the
    /// next start: the engine then records
    /// `ForwardFailed { error: NoAnswer, .. }` and retries with the same id.
    Forwarding {
        /// Which attempt this is, from 1.
        attempt: u32,
        /// When it started.
        started_at: Timestamp,
        /// Whether an earlier attempt may have reached the processor.
        maybe_received: bool,
    },
    /// The last attempt failed without a decision; the payment waits for
    /// the next one.
    FailedToForward {
        /// How many attempts were made.
        attempts: u32,
        /// Why the last one failed.
        last_error: ForwardErrorKind,
        /// When the scheduler plans the next attempt; `None` when it does not
        /// retry on its own (a non-retryable error: only "forward now" or the
        /// deadline moves the payment on). Advisory: "forward now" (B5) may
        /// start an attempt earlier.
        next_retry_at: Option<Timestamp>,
        /// Whether some attempt may have reached the processor.
        maybe_received: bool,
    },
    /// Final. The processor approved the payment: the money was taken.
    Approved {
        /// When the approval was recorded.
        at: Timestamp,
        /// The processor's reference for the payment.
        processor_ref: String,
    },
    /// Final. The processor declined the payment: the amount is due from the
    /// customer (B9).
    Declined {
        /// When the decline was recorded.
        at: Timestamp,
        /// Why the processor declined.
        reason: DeclineReason,
    },
    /// Final. The forwarding deadline passed before a decision (R8): never
    /// forwarded again; the amount counts as lost.
    Expired {
        /// When the expiry was recorded.
        at: Timestamp,
        /// How many forwarding attempts were made.
        attempts: u32,
        /// Whether some attempt may have reached the processor. When true the
        /// processor may hold an approval whose answer was lost: reconcile
        /// with it before collecting the amount from the customer again.
        maybe_received: bool,
    },
    /// The forwarding deadline passed while some attempt may have reached
    /// the processor, and no answer says what it decided: "unknown, check
    /// with the processor". Never forwarded again (R8) and not counted as
    /// lost: the engine asks the processor about this id
    /// ([`crate::gateway::Gateway::payment_status`]) whenever it can reach
    /// it. Its answer decides: an approval or a decline is final, and only
    /// "not found" expires the payment.
    OutcomeUnknown {
        /// When the deadline was found passed.
        since: Timestamp,
        /// How many forwarding attempts were made.
        attempts: u32,
    },
    // New states go last: snapshots encode a state by its position.
}

/// The kind of a [`PaymentState`], without its data: for lists, badges and
/// error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// See [`PaymentState::Pending`].
    Pending,
    /// See [`PaymentState::Forwarding`].
    Forwarding,
    /// See [`PaymentState::FailedToForward`].
    FailedToForward,
    /// See [`PaymentState::Approved`].
    Approved,
    /// See [`PaymentState::Declined`].
    Declined,
    /// See [`PaymentState::Expired`].
    Expired,
    /// See [`PaymentState::OutcomeUnknown`].
    OutcomeUnknown,
}

impl PaymentStatus {
    /// Approved, declined and expired payments never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStatus::Approved | PaymentStatus::Declined | PaymentStatus::Expired
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Forwarding => "forwarding",
            PaymentStatus::FailedToForward => "failed to forward",
            PaymentStatus::Approved => "approved",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Expired => "expired",
            PaymentStatus::OutcomeUnknown => "unknown, check with the processor",
        })
    }
}

/// What can happen to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    /// The forwarder is about to send the payment (record it before sending).
    StartForwarding,
    /// The attempt in flight ended without a decision.
    ForwardFailed {
        /// Why it failed.
        error: ForwardErrorKind,
        /// When the scheduler will retry; `None` for no automatic retry.
        next_retry_at: Option<Timestamp>,
    },
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
    /// The forwarding deadline has passed.
    DeadlineReached,
    /// The processor, asked about this id after the deadline, has no record
    /// of it (and will refuse it from now on): it never took the money.
    NotFoundAtProcessor,
}

/// The kind of a [`PaymentEvent`], without its data, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentEventKind {
    /// See [`PaymentEvent::StartForwarding`].
    StartForwarding,
    /// See [`PaymentEvent::ForwardFailed`].
    ForwardFailed,
    /// See [`PaymentEvent::Approved`].
    Approved,
    /// See [`PaymentEvent::Declined`].
    Declined,
    /// See [`PaymentEvent::DeadlineReached`].
    DeadlineReached,
    /// See [`PaymentEvent::NotFoundAtProcessor`].
    NotFoundAtProcessor,
}

impl fmt::Display for PaymentEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaymentEventKind::StartForwarding => "start forwarding",
            PaymentEventKind::ForwardFailed => "forward failed",
            PaymentEventKind::Approved => "approved",
            PaymentEventKind::Declined => "declined",
            PaymentEventKind::DeadlineReached => "deadline reached",
            PaymentEventKind::NotFoundAtProcessor => "not found at the processor",
        })
    }
}

impl PaymentEvent {
    /// The kind of this event.
    pub fn kind(&self) -> PaymentEventKind {
        match self {
            PaymentEvent::StartForwarding => PaymentEventKind::StartForwarding,
            PaymentEvent::ForwardFailed { .. } => PaymentEventKind::ForwardFailed,
            PaymentEvent::Approved { .. } => PaymentEventKind::Approved,
            PaymentEvent::Declined { .. } => PaymentEventKind::Declined,
            PaymentEvent::DeadlineReached => PaymentEventKind::DeadlineReached,
            PaymentEvent::NotFoundAtProcessor => PaymentEventKind::NotFoundAtProcessor,
        }
    }
}

/// Why an event was not applied. In every case the payment's state is
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The payment already has exactly this final outcome (a repeated answer
    /// or a repeated deadline): nothing to do, and nothing was done twice.
    #[error("duplicate: the payment is already {status}")]
    Duplicate {
        /// The payment's (final) status.
        status: PaymentStatus,
    },
    /// A final payment was given a different outcome (a second approval with
    /// another reference, an approval after a decline or after expiry...).
    /// Never applied: the processor and this record disagree and must be
    /// reconciled, as it may mean a double charge or money taken after the
    /// amount was counted lost.
    #[error("conflicting outcome: the payment is {status}, but {reported} was reported")]
    ConflictingOutcome {
        /// The payment's (final) status.
        status: PaymentStatus,
        /// The outcome that was reported.
        reported: PaymentEventKind,
    },
    /// A final payment never moves again.
    #[error("the payment is {status}, which is final; {event} ignored")]
    AlreadyFinal {
        /// The payment's (final) status.
        status: PaymentStatus,
        /// The event refused.
        event: PaymentEventKind,
    },
    /// Forwarding was asked for at or after the deadline (R8).
    #[error("the forwarding deadline has passed; the payment may not be forwarded")]
    DeadlinePassed {
        /// The payment's deadline.
        deadline: Timestamp,
        /// The time of the request.
        now: Timestamp,
    },
    /// The deadline was reported before it came.
    #[error("the forwarding deadline has not passed yet")]
    DeadlineNotReached {
        /// The payment's deadline.
        deadline: Timestamp,
        /// The time of the report.
        now: Timestamp,
    },
    /// The event cannot happen in this state; `why` says why.
    #[error("{event} is not allowed while the payment is {status}: {why}")]
    NotAllowed {
        /// The payment's status.
        status: PaymentStatus,
        /// The event refused.
        event: PaymentEventKind,
        /// The explanation.
        why: &'static str,
    },
}

impl PaymentState {
    /// The kind of this state.
    pub fn status(&self) -> PaymentStatus {
        match self {
            PaymentState::Pending => PaymentStatus::Pending,
            PaymentState::Forwarding { .. } => PaymentStatus::Forwarding,
            PaymentState::FailedToForward { .. } => PaymentStatus::FailedToForward,
            PaymentState::Approved { .. } => PaymentStatus::Approved,
            PaymentState::Declined { .. } => PaymentStatus::Declined,
            PaymentState::Expired { .. } => PaymentStatus::Expired,
            PaymentState::OutcomeUnknown { .. } => PaymentStatus::OutcomeUnknown,
        }
    }

    /// Approved, declined and expired payments never change again.
    pub fn is_final(&self) -> bool {
        self.status().is_final()
    }

    /// How many forwarding attempts were started (the one in flight
    /// included); `None` once the processor has decided, as the count is not
    /// kept then (the audit journal has every attempt).
    pub fn attempts(&self) -> Option<u32> {
        match self {
            PaymentState::Pending => Some(0),
            PaymentState::Forwarding { attempt, .. } => Some(*attempt),
            PaymentState::FailedToForward { attempts, .. }
            | PaymentState::OutcomeUnknown { attempts, .. }
            | PaymentState::Expired { attempts, .. } => Some(*attempts),
            PaymentState::Approved { .. } | PaymentState::Declined { .. } => None,
        }
    }

    /// The one transition function. Returns the next state, or why `event`
    /// cannot be applied (the current state then stands).
    ///
    /// `deadline` is this payment's forwarding deadline and `now` the
    /// trusted time. The rules:
    /// - a final state (approved, declined, expired) never changes: the same
    ///   outcome again is a [`TransitionError::Duplicate`], another outcome
    ///   a [`TransitionError::ConflictingOutcome`];
    /// - forwarding never starts at or after the deadline (R8);
    /// - only one attempt is in flight at a time (B2);
    /// - expiry happens only from `Pending` or `FailedToForward`, never while
    ///   an attempt is in flight: the request may already be at the
    ///   processor, so its answer decides. If that answer, arriving after the
    ///   deadline, is an approval, the money was taken and the payment is
    ///   `Approved`, not `Expired`; a decline is `Declined`; a failure
    ///   brings it to `FailedToForward`;
    /// - the deadline expires a payment no attempt can have reached; one
    ///   that some attempt may have reached becomes `OutcomeUnknown`, and
    ///   only the processor's answer about that id moves it on: approved,
    ///   declined, or "not found" (expired);
    /// - a processor decision is accepted only for an attempt that may have
    ///   reached the processor: the one in flight, or, from
    ///   `FailedToForward`, an earlier one whose answer was lost (a late
    ///   answer or a status query).
    pub fn apply(
        &self,
        event: PaymentEvent,
        deadline: Deadline,
        now: Timestamp,
    ) -> Result<PaymentState, TransitionError> {
        let status = self.status();
        let kind = event.kind();
        let not_allowed = |why: &'static str| TransitionError::NotAllowed {
            status,
            event: kind,
            why,
        };
        let start = |attempts_so_far: u32, maybe_received: bool| {
            if deadline.is_passed(now) {
                return Err(TransitionError::DeadlinePassed {
                    deadline: deadline.0,
                    now,
                });
            }
            Ok(PaymentState::Forwarding {
                // Four billion attempts cannot happen; saturate rather than wrap.
                attempt: attempts_so_far.saturating_add(1),
                started_at: now,
                maybe_received,
            })
        };
        let expire = |attempts: u32, maybe_received: bool| {
            if !deadline.is_passed(now) {
                return Err(TransitionError::DeadlineNotReached {
                    deadline: deadline.0,
                    now,
                });
            }
            if maybe_received {
                return Ok(PaymentState::OutcomeUnknown {
                    since: now,
                    attempts,
                });
            }
            Ok(PaymentState::Expired {
                at: now,
                attempts,
                maybe_received: false,
            })
        };
        let not_found_before_deadline = || {
            not_allowed(
                "\"not found\" decides only for a payment whose deadline passed with its \
                 outcome unknown; before that the same id is simply forwarded again",
            )
        };

        match self {
            PaymentState::Pending => match event {
                PaymentEvent::StartForwarding => start(0, false),
                PaymentEvent::DeadlineReached => expire(0, false),
                PaymentEvent::ForwardFailed { .. } => Err(not_allowed("no attempt is in flight")),
                PaymentEvent::NotFoundAtProcessor => Err(not_found_before_deadline()),
                PaymentEvent::Approved { .. } | PaymentEvent::Declined { .. } => Err(not_allowed(
                    "the payment was never sent, so the processor cannot have decided",
                )),
            },

            PaymentState::Forwarding {
                attempt,
                maybe_received,
                ..
            } => match event {
                PaymentEvent::StartForwarding => Err(not_allowed(
                    "an attempt is already in flight; record its outcome first so that \
                     the payment is never sent twice at once",
                )),
                PaymentEvent::ForwardFailed {
                    error,
                    next_retry_at,
                } => Ok(PaymentState::FailedToForward {
                    attempts: *attempt,
                    last_error: error,
                    next_retry_at,
                    maybe_received: *maybe_received || error.may_have_reached_processor(),
                }),
                // Accepted even after the deadline: the answer decides.
                PaymentEvent::Approved { processor_ref } => Ok(PaymentState::Approved {
                    at: now,
                    processor_ref,
                }),
                PaymentEvent::Declined { reason } => Ok(PaymentState::Declined { at: now, reason }),
                PaymentEvent::DeadlineReached => Err(not_allowed(
                    "an attempt is in flight and may already be at the processor; \
                     its answer decides (record it, or its failure, first)",
                )),
                PaymentEvent::NotFoundAtProcessor => {
                    Err(not_allowed("an attempt is in flight; its answer decides"))
                }
            },

            PaymentState::FailedToForward {
                attempts,
                maybe_received,
                ..
            } => match event {
                PaymentEvent::StartForwarding => start(*attempts, *maybe_received),
                PaymentEvent::DeadlineReached => expire(*attempts, *maybe_received),
                PaymentEvent::ForwardFailed { .. } => Err(not_allowed("no attempt is in flight")),
                PaymentEvent::NotFoundAtProcessor => Err(not_found_before_deadline()),
                // A late answer, or a status query, about an earlier attempt.
                PaymentEvent::Approved { processor_ref } if *maybe_received => {
                    Ok(PaymentState::Approved {
                        at: now,
                        processor_ref,
                    })
                }
                PaymentEvent::Declined { reason } if *maybe_received => {
                    Ok(PaymentState::Declined { at: now, reason })
                }
                PaymentEvent::Approved { .. } | PaymentEvent::Declined { .. } => Err(not_allowed(
                    "no attempt can have reached the processor, so it cannot have decided",
                )),
            },

            PaymentState::Approved { processor_ref, .. } => match event {
                PaymentEvent::Approved {
                    processor_ref: reported,
                } if reported == *processor_ref => Err(TransitionError::Duplicate { status }),
                PaymentEvent::Approved { .. } | PaymentEvent::Declined { .. } => {
                    Err(TransitionError::ConflictingOutcome {
                        status,
                        reported: kind,
                    })
                }
                // The processor decided, and now says it never saw the id:
                // the two disagree and must be reconciled.
                PaymentEvent::NotFoundAtProcessor => Err(TransitionError::ConflictingOutcome {
                    status,
                    reported: kind,
                }),
                PaymentEvent::StartForwarding
                | PaymentEvent::ForwardFailed { .. }
                | PaymentEvent::DeadlineReached => Err(TransitionError::AlreadyFinal {
                    status,
                    event: kind,
                }),
            },

            PaymentState::Declined { reason, .. } => match event {
                PaymentEvent::Declined { reason: reported } if reported == *reason => {
                    Err(TransitionError::Duplicate { status })
                }
                PaymentEvent::Approved { .. } | PaymentEvent::Declined { .. } => {
                    Err(TransitionError::ConflictingOutcome {
                        status,
                        reported: kind,
                    })
                }
                PaymentEvent::NotFoundAtProcessor => Err(TransitionError::ConflictingOutcome {
                    status,
                    reported: kind,
                }),
                PaymentEvent::StartForwarding
                | PaymentEvent::ForwardFailed { .. }
                | PaymentEvent::DeadlineReached => Err(TransitionError::AlreadyFinal {
                    status,
                    event: kind,
                }),
            },

            PaymentState::OutcomeUnknown { .. } => match event {
                PaymentEvent::Approved { processor_ref } => Ok(PaymentState::Approved {
                    at: now,
                    processor_ref,
                }),
                PaymentEvent::Declined { reason } => Ok(PaymentState::Declined { at: now, reason }),
                PaymentEvent::NotFoundAtProcessor => Ok(PaymentState::Expired {
                    at: now,
                    attempts: self.attempts().unwrap_or(0),
                    maybe_received: false,
                }),
                PaymentEvent::DeadlineReached => Err(not_allowed(
                    "the deadline has already passed; the processor's answer decides",
                )),
                PaymentEvent::StartForwarding => Err(TransitionError::DeadlinePassed {
                    deadline: deadline.0,
                    now,
                }),
                PaymentEvent::ForwardFailed { .. } => Err(not_allowed("no attempt is in flight")),
            },

            PaymentState::Expired { .. } => match event {
                PaymentEvent::DeadlineReached | PaymentEvent::NotFoundAtProcessor => {
                    Err(TransitionError::Duplicate { status })
                }
                PaymentEvent::Approved { .. } | PaymentEvent::Declined { .. } => {
                    Err(TransitionError::ConflictingOutcome {
                        status,
                        reported: kind,
                    })
                }
                PaymentEvent::StartForwarding | PaymentEvent::ForwardFailed { .. } => {
                    Err(TransitionError::AlreadyFinal {
                        status,
                        event: kind,
                    })
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Order badge (R15)
// ---------------------------------------------------------------------------

/// The badge an offline order shows (R15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// At least one card payment has no decision yet (or the order has no
    /// tender at all).
    PaymentPending,
    /// Every tender is paid: cash at once, every card approved.
    Paid,
    /// At least one card payment was declined.
    CardDeclined,
    /// At least one card payment expired, and none was declined.
    Expired,
}

/// One tender of an order, as the badge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TenderView {
    /// Cash: paid when tendered.
    Cash,
    /// A card payment in the given state.
    Card(PaymentStatus),
}

/// The badge of an order paid by `tenders` (R15).
///
/// Precedence, first match wins:
/// 1. `CardDeclined` if any card was declined: the processor's definite
///    answer, with a reason and a contact to collect from (B9); shown as
///    soon as it is known, even while other cards are still pending;
/// 2. `Expired` if any card expired (and none was declined);
/// 3. `Paid` if there is at least one tender and every card is approved;
/// 4. otherwise `PaymentPending`.
///
/// Whether the tenders add up to the order's total is checkout's business,
/// not the badge's.
pub fn order_status(tenders: &[TenderView]) -> OrderStatus {
    let cards = || {
        tenders.iter().filter_map(|t| match t {
            TenderView::Card(s) => Some(*s),
            TenderView::Cash => None,
        })
    };
    if cards().any(|s| s == PaymentStatus::Declined) {
        OrderStatus::CardDeclined
    } else if cards().any(|s| s == PaymentStatus::Expired) {
        OrderStatus::Expired
    } else if !tenders.is_empty() && cards().all(|s| s == PaymentStatus::Approved) {
        OrderStatus::Paid
    } else {
        OrderStatus::PaymentPending
    }
}

// ---------------------------------------------------------------------------
// Contact details (R16, R17)
// ---------------------------------------------------------------------------

/// Why a contact detail was refused. The refused value is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// The email address does not have the shape of one.
    #[error("invalid email address: {problem}")]
    InvalidEmail {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The phone number is not an international (E.164) number.
    #[error("invalid phone number: {problem}")]
    InvalidPhone {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A customer contact was made with neither an email nor a phone.
    #[error("a customer contact needs an email address or a phone number")]
    Empty,
}

const EMAIL_MAX_CHARS: usize = 254;
const EMAIL_LOCAL_MAX_CHARS: usize = 64;
const DOMAIN_MAX_CHARS: usize = 253;
const DOMAIN_LABEL_MAX_CHARS: usize = 63;
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";

/// An email address whose shape was checked. Never shown in clear by
/// `Debug` or `Display`; see [`EmailAddress::reveal`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks the shape `local@domain.tld` (surrounding spaces are trimmed):
    /// one `@`; a local part of 1–64 letters, digits and
    /// ``!#$%&'*+/=?^_`{|}~.-`` with no leading, trailing or double dot; a
    /// domain of at least two dot-separated labels of letters, digits and
    /// inner hyphens, with a top-level label that is not all digits.
    /// Quoted local parts and address literals are not accepted.
    pub fn parse(s: &str) -> Result<Self, ContactError> {
        let bad = |problem| Err(ContactError::InvalidEmail { problem });
        let s = s.trim();
        if s.is_empty() {
            return bad("empty");
        }
        if s.chars().count() > EMAIL_MAX_CHARS {
            return bad("longer than 254 characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return bad("no @");
        };
        if domain.contains('@') {
            return bad("more than one @");
        }
        if local.is_empty() || local.chars().count() > EMAIL_LOCAL_MAX_CHARS {
            return bad("the part before @ must be 1 to 64 characters");
        }
        if !local
            .chars()
            .all(|c| c.is_alphanumeric() || LOCAL_SPECIALS.contains(c))
        {
            return bad("the part before @ has a character not allowed there");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("the part before @ has a misplaced dot");
        }
        if domain.chars().count() > DOMAIN_MAX_CHARS {
            return bad("the domain is longer than 253 characters");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return bad("the domain needs a dot");
        }
        for label in &labels {
            if label.is_empty() || label.chars().count() > DOMAIN_LABEL_MAX_CHARS {
                return bad("a domain label is empty or longer than 63 characters");
            }
            if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
                return bad("the domain has a character not allowed there");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("a domain label starts or ends with a hyphen");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return bad("the top-level domain is all digits");
        }
        Ok(EmailAddress(s.to_owned()))
    }

    /// The address in clear: only for the code that sends the receipt or
    /// contacts the customer. Never log it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// A masked hint for the app's UI, e.g. `j***@e***.com` for
    /// `jane@example.com`.
    pub fn hint(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or(("", ""));
        let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        let tld = domain.rsplit('.').next().unwrap_or("");
        format!("{}***@{}***.{}", first(local), first(domain), tld)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(<redacted>)")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted email>")
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ContactError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

const PHONE_MIN_DIGITS: usize = 7;
const PHONE_MAX_DIGITS: usize = 15;

/// A phone number in international (E.164) form, `+` then 7–15 digits.
/// Never shown in clear by `Debug` or `Display`; see [`PhoneNumber::reveal`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Checks and normalises an international number: a leading `+`, then
    /// 7 to 15 digits, the first not `0`; spaces, `-`, `.`, `(` and `)` are
    /// allowed between digits and removed. National numbers (without the
    /// country code) are refused: the app, which knows the shop's country,
    /// adds it.
    pub fn parse(s: &str) -> Result<Self, ContactError> {
        let bad = |problem| Err(ContactError::InvalidPhone { problem });
        let s = s.trim();
        let Some(rest) = s.strip_prefix('+') else {
            return bad("must start with + and the country code");
        };
        let mut digits = String::with_capacity(PHONE_MAX_DIGITS + 1);
        digits.push('+');
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if !matches!(c, ' ' | '-' | '.' | '(' | ')') {
                return bad("has a character other than digits and separators");
            }
        }
        let n = digits.len() - 1;
        if !(PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&n) {
            return bad("must have 7 to 15 digits");
        }
        if digits.as_bytes().get(1) == Some(&b'0') {
            return bad("a country code never starts with 0");
        }
        Ok(PhoneNumber(digits))
    }

    /// The number in clear, `+` and digits: only for the code that sends the
    /// text message or contacts the customer. Never log it.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// A masked hint for the app's UI: the last two digits, e.g. `+***78`.
    pub fn hint(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .skip(self.0.len().saturating_sub(2))
            .collect();
        format!("+***{tail}")
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(<redacted>)")
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted phone>")
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ContactError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PhoneNumber::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// How to reach the customer of an offline order, to collect a declined
/// payment later (R17). Holds an email, a phone, or both; never empty.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ContactRecord", into = "ContactRecord")]
pub struct CustomerContact {
    email: Option<EmailAddress>,
    phone: Option<PhoneNumber>,
}

/// The serialised form of [`CustomerContact`], checked on the way in.
#[derive(Serialize, Deserialize)]
struct ContactRecord {
    email: Option<EmailAddress>,
    phone: Option<PhoneNumber>,
}

impl CustomerContact {
    /// A contact with at least one of `email` and `phone`.
    pub fn new(
        email: Option<EmailAddress>,
        phone: Option<PhoneNumber>,
    ) -> Result<Self, ContactError> {
        if email.is_none() && phone.is_none() {
            return Err(ContactError::Empty);
        }
        Ok(CustomerContact { email, phone })
    }

    /// Parses raw values from the app; empty or blank strings count as absent.
    pub fn parse(email: Option<&str>, phone: Option<&str>) -> Result<Self, ContactError> {
        fn present(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.trim().is_empty())
        }
        let email = present(email).map(EmailAddress::parse).transpose()?;
        let phone = present(phone).map(PhoneNumber::parse).transpose()?;
        CustomerContact::new(email, phone)
    }

    /// The email address, if captured.
    pub fn email(&self) -> Option<&EmailAddress> {
        self.email.as_ref()
    }

    /// The phone number, if captured.
    pub fn phone(&self) -> Option<&PhoneNumber> {
        self.phone.as_ref()
    }
}

impl TryFrom<ContactRecord> for CustomerContact {
    type Error = ContactError;
    fn try_from(r: ContactRecord) -> Result<Self, Self::Error> {
        CustomerContact::new(r.email, r.phone)
    }
}

impl From<CustomerContact> for ContactRecord {
    fn from(c: CustomerContact) -> Self {
        ContactRecord {
            email: c.email,
            phone: c.phone,
        }
    }
}

impl fmt::Debug for CustomerContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerContact")
            .field("email", &self.email)
            .field("phone", &self.phone)
            .finish()
    }
}

impl fmt::Display for CustomerContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.email, &self.phone) {
            (Some(_), Some(_)) => f.write_str("<redacted email and phone>"),
            (Some(_), None) => f.write_str("<redacted email>"),
            (None, _) => f.write_str("<redacted phone>"),
        }
    }
}

// ---------------------------------------------------------------------------
// Receipts (R16)
// ---------------------------------------------------------------------------

/// Where a receipt goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptChannel {
    /// By email.
    Email(EmailAddress),
    /// By text message.
    Sms(PhoneNumber),
}

/// Where a receipt request is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptState {
    /// Waiting to be sent (offline, or a transient failure).
    Queued {
        /// How many sends failed transiently so far.
        attempts: u32,
    },
    /// Final. Handed to the email or SMS service.
    Sent {
        /// When.
        at: Timestamp,
    },
    /// Final. Refused for good (bounced address, unreachable number); a new
    /// request with corrected details is a new [`ReceiptRequest`].
    Failed {
        /// When.
        at: Timestamp,
        /// How many sends were tried.
        attempts: u32,
    },
}

/// The outcome of one attempt to send a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptEvent {
    /// The email or SMS service accepted it.
    Delivered,
    /// It could not be sent now; try again later (still offline, timeout...).
    TransientFailure,
    /// It can never be sent as requested.
    PermanentFailure,
}

/// Why a receipt event was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The request is already sent or failed; sending again would send the
    /// customer a second receipt.
    #[error("the receipt request is already final")]
    AlreadyFinal,
}

impl ReceiptState {
    /// The receipt transition function: `Queued` moves on, `Sent` and
    /// `Failed` are final.
    pub fn apply(&self, event: ReceiptEvent, now: Timestamp) -> Result<ReceiptState, ReceiptError> {
        match self {
            ReceiptState::Queued { attempts } => Ok(match event {
                ReceiptEvent::Delivered => ReceiptState::Sent { at: now },
                ReceiptEvent::TransientFailure => ReceiptState::Queued {
                    attempts: attempts.saturating_add(1),
                },
                ReceiptEvent::PermanentFailure => ReceiptState::Failed {
                    at: now,
                    attempts: attempts.saturating_add(1),
                },
            }),
            ReceiptState::Sent { .. } | ReceiptState::Failed { .. } => {
                Err(ReceiptError::AlreadyFinal)
            }
        }
    }
}

/// A receipt the customer asked for, kept until it is sent (R16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRequest {
    /// The order the receipt is for.
    pub order_id: OrderId,
    /// Where to send it. Redacted in `Debug`.
    pub channel: ReceiptChannel,
    /// When the customer asked.
    pub requested_at: Timestamp,
    /// Where the request is.
    pub state: ReceiptState,
    /// The merchant account it was requested under: delivered under it.
    #[serde(default)]
    pub account: Option<crate::account::MerchantAccount>,
}

impl ReceiptRequest {
    /// A new request, queued.
    pub fn queue(order_id: OrderId, channel: ReceiptChannel, requested_at: Timestamp) -> Self {
        ReceiptRequest {
            order_id,
            channel,
            requested_at,
            state: ReceiptState::Queued { attempts: 0 },
            account: None,
        }
    }

    /// Records the outcome of a send, through [`ReceiptState::apply`].
    pub fn record(&mut self, event: ReceiptEvent, now: Timestamp) -> Result<(), ReceiptError> {
        self.state = self.state.apply(event, now)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Declines (R17, B9)
// ---------------------------------------------------------------------------

/// What the app needs to collect a declined offline payment (R17, B9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclineNotice {
    /// The declined payment.
    pub payment_id: PaymentId,
    /// Its order.
    pub order_id: OrderId,
    /// What the customer still owes: the declined payment's amount.
    pub amount_due: Money,
    /// Why the processor declined.
    pub reason: DeclineReason,
    /// The contact captured with the order, if any. Redacted in `Debug`.
    pub contact: Option<CustomerContact>,
}

impl DeclineNotice {
    /// The notice for a payment of `amount` in state `state`: `Ok(None)`
    /// unless the payment is declined; an error if `amount` is not positive.
    pub fn for_payment(
        payment_id: PaymentId,
        order_id: OrderId,
        amount: Money,
        state: &PaymentState,
        contact: Option<CustomerContact>,
    ) -> Result<Option<DeclineNotice>, MoneyError> {
        let amount_due = Money::positive(amount.minor_units(), amount.currency())?;
        let PaymentState::Declined { reason, .. } = state else {
            return Ok(None);
        };
        Ok(Some(DeclineNotice {
            payment_id,
            order_id,
            amount_due,
            reason: reason.clone(),
            contact,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;

    /// `PaymentState` as the previous release encoded it in snapshots
    /// (postcard stores a variant by its position).
    #[derive(Serialize)]
    enum PreviousPaymentState {
        Pending,
        Forwarding {
            attempt: u32,
            started_at: Timestamp,
            maybe_received: bool,
        },
        FailedToForward {
            attempts: u32,
            last_error: ForwardErrorKind,
            next_retry_at: Option<Timestamp>,
            maybe_received: bool,
        },
        Approved {
            at: Timestamp,
            processor_ref: String,
        },
        Declined {
            at: Timestamp,
            reason: DeclineReason,
        },
        Expired {
            at: Timestamp,
            attempts: u32,
            maybe_received: bool,
        },
    }

    #[test]
    fn a_snapshot_of_the_previous_release_decodes_to_the_same_states() {
        let at = Timestamp(1_800_000_000_000);
        let pairs = [
            (
                PreviousPaymentState::Expired {
                    at,
                    attempts: 3,
                    maybe_received: true,
                },
                PaymentState::Expired {
                    at,
                    attempts: 3,
                    maybe_received: true,
                },
            ),
            (
                PreviousPaymentState::Declined {
                    at,
                    reason: DeclineReason::LostCard,
                },
                PaymentState::Declined {
                    at,
                    reason: DeclineReason::LostCard,
                },
            ),
            (
                PreviousPaymentState::FailedToForward {
                    attempts: 1,
                    last_error: ForwardErrorKind::NoAnswer,
                    next_retry_at: Some(at),
                    maybe_received: true,
                },
                PaymentState::FailedToForward {
                    attempts: 1,
                    last_error: ForwardErrorKind::NoAnswer,
                    next_retry_at: Some(at),
                    maybe_received: true,
                },
            ),
            (PreviousPaymentState::Pending, PaymentState::Pending),
            (
                PreviousPaymentState::Forwarding {
                    attempt: 2,
                    started_at: at,
                    maybe_received: true,
                },
                PaymentState::Forwarding {
                    attempt: 2,
                    started_at: at,
                    maybe_received: true,
                },
            ),
            (
                PreviousPaymentState::Approved {
                    at,
                    processor_ref: "ch_1".into(),
                },
                PaymentState::Approved {
                    at,
                    processor_ref: "ch_1".into(),
                },
            ),
        ];
        for (old, new) in pairs {
            let bytes = postcard::to_allocvec(&old).unwrap();
            assert_eq!(postcard::from_bytes::<PaymentState>(&bytes).unwrap(), new);
        }
    }

    const T0: Timestamp = Timestamp(1_800_000_000_000);
    const DEADLINE: Deadline = Deadline(Timestamp(1_800_000_000_000 + 86_400_000));

    fn before() -> Timestamp {
        Timestamp(DEADLINE.0 .0 - 1)
    }

    fn after() -> Timestamp {
        Timestamp(DEADLINE.0 .0 + 1)
    }

    fn approved(r: &str) -> PaymentEvent {
        PaymentEvent::Approved {
            processor_ref: r.to_owned(),
        }
    }

    fn declined(reason: DeclineReason) -> PaymentEvent {
        PaymentEvent::Declined { reason }
    }

    fn failed(error: ForwardErrorKind) -> PaymentEvent {
        PaymentEvent::ForwardFailed {
            error,
            next_retry_at: Some(T0.plus(std::time::Duration::from_secs(30))),
        }
    }

    fn forwarding(attempt: u32, maybe_received: bool) -> PaymentState {
        PaymentState::Forwarding {
            attempt,
            started_at: T0,
            maybe_received,
        }
    }

    fn failed_state(attempts: u32, maybe_received: bool) -> PaymentState {
        PaymentState::FailedToForward {
            attempts,
            last_error: if maybe_received {
                ForwardErrorKind::NoAnswer
            } else {
                ForwardErrorKind::NotSent
            },
            next_retry_at: None,
            maybe_received,
        }
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::parse("USD").expect("USD"))
    }

    // --- identifiers -----------------------------------------------------

    #[test]
    fn app_keys_are_validated() {
        assert_eq!(
            PaymentId::parse("order-42_card-1").map(|p| p.to_string()),
            Ok("order-42_card-1".to_owned())
        );
        assert!(PaymentId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            PaymentId::parse(""),
            Err(IdError::Empty { what: "payment id" })
        );
        assert_eq!(
            PaymentId::parse(&"a".repeat(65)),
            Err(IdError::TooLong {
                what: "payment id",
                chars: 65
            })
        );
        for (bad, position) in [("a b", 1), ("é", 0), ("x/y", 1), ("a.b", 1), ("ok\n", 2)] {
            assert_eq!(
                OrderId::parse(bad),
                Err(IdError::InvalidCharacter {
                    what: "order id",
                    position
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn id_errors_do_not_echo_the_value() {
        let err = StaffId::parse("jane.doe@example.com").expect_err("refused");
        assert!(!err.to_string().contains("jane"));
        assert!(!format!("{err:?}").contains("jane"));
    }

    #[test]
    fn random_ids_are_prefixed_lowercase_hex() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0xAB;
        bytes[15] = 0x01;
        let id = PaymentId::from_random(bytes);
        assert_eq!(id.as_str(), "pay_ab000000000000000000000000000001");
        assert_eq!(id.as_str().len(), 36);
        assert!(PaymentId::parse(id.as_str()).is_ok(), "valid as a key too");
        assert_eq!(
            OrderId::from_random([0xff; 16]).as_str(),
            format!("ord_{}", "f".repeat(32))
        );
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let id = PaymentId::parse("k1").expect("valid");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, r#""k1""#);
        assert_eq!(serde_json::from_str::<PaymentId>(&json).expect("parse"), id);
        assert!(serde_json::from_str::<PaymentId>(r#""no spaces""#).is_err());
        assert!(serde_json::from_str::<StaffId>(r#""""#).is_err());
    }

    // --- allowed transitions ---------------------------------------------

    #[test]
    fn pending_starts_forwarding_before_the_deadline() {
        assert_eq!(
            PaymentState::Pending.apply(PaymentEvent::StartForwarding, DEADLINE, before()),
            Ok(PaymentState::Forwarding {
                attempt: 1,
                started_at: before(),
                maybe_received: false
            })
        );
    }

    #[test]
    fn pending_expires_at_the_deadline() {
        assert_eq!(
            PaymentState::Pending.apply(PaymentEvent::DeadlineReached, DEADLINE, DEADLINE.0),
            Ok(PaymentState::Expired {
                at: DEADLINE.0,
                attempts: 0,
                maybe_received: false
            })
        );
    }

    #[test]
    fn forwarding_is_decided_by_the_processor() {
        let s = forwarding(1, false);
        assert_eq!(
            s.apply(approved("ch_1"), DEADLINE, T0),
            Ok(PaymentState::Approved {
                at: T0,
                processor_ref: "ch_1".into()
            })
        );
        assert_eq!(
            s.apply(declined(DeclineReason::StolenCard), DEADLINE, T0),
            Ok(PaymentState::Declined {
                at: T0,
                reason: DeclineReason::StolenCard
            })
        );
    }

    #[test]
    fn an_answer_after_the_deadline_still_decides() {
        // The money was taken: an approval after the deadline is an approval.
        let s = forwarding(3, false);
        assert_eq!(
            s.apply(approved("ch_1"), DEADLINE, after())
                .map(|s| s.status()),
            Ok(PaymentStatus::Approved)
        );
        assert_eq!(
            s.apply(declined(DeclineReason::DoNotHonour), DEADLINE, after())
                .map(|s| s.status()),
            Ok(PaymentStatus::Declined)
        );
        // A failure after the deadline: the processor may hold the payment,
        // so the deadline makes its outcome unknown, never lost.
        let f = s
            .apply(failed(ForwardErrorKind::NoAnswer), DEADLINE, after())
            .expect("failure recorded");
        assert_eq!(
            f.apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
            Ok(PaymentState::OutcomeUnknown {
                since: after(),
                attempts: 3,
            })
        );
    }

    #[test]
    fn a_failed_attempt_waits_for_a_retry() {
        let retry = Some(T0.plus(std::time::Duration::from_secs(30)));
        let s = forwarding(2, false).apply(
            PaymentEvent::ForwardFailed {
                error: ForwardErrorKind::NotSent,
                next_retry_at: retry,
            },
            DEADLINE,
            T0,
        );
        assert_eq!(
            s,
            Ok(PaymentState::FailedToForward {
                attempts: 2,
                last_error: ForwardErrorKind::NotSent,
                next_retry_at: retry,
                maybe_received: false
            })
        );
        let again = s
            .expect("failed")
            .apply(PaymentEvent::StartForwarding, DEADLINE, T0);
        assert_eq!(
            again,
            Ok(PaymentState::Forwarding {
                attempt: 3,
                started_at: T0,
                maybe_received: false
            })
        );
    }

    #[test]
    fn maybe_received_is_sticky_across_attempts() {
        let s = forwarding(1, false)
            .apply(failed(ForwardErrorKind::NoAnswer), DEADLINE, T0)
            .and_then(|s| s.apply(PaymentEvent::StartForwarding, DEADLINE, T0))
            .and_then(|s| s.apply(failed(ForwardErrorKind::NotSent), DEADLINE, T0))
            .expect("allowed");
        assert_eq!(s, {
            let mut expect = failed_state(2, true);
            if let PaymentState::FailedToForward {
                last_error,
                next_retry_at,
                ..
            } = &mut expect
            {
                *last_error = ForwardErrorKind::NotSent;
                *next_retry_at = Some(T0.plus(std::time::Duration::from_secs(30)));
            }
            expect
        });
    }

    #[test]
    fn failed_to_forward_accepts_a_late_answer_only_if_the_processor_may_have_it() {
        let maybe = failed_state(1, true);
        assert_eq!(
            maybe
                .apply(approved("ch_9"), DEADLINE, T0)
                .map(|s| s.status()),
            Ok(PaymentStatus::Approved)
        );
        assert_eq!(
            maybe
                .apply(declined(DeclineReason::ExpiredCard), DEADLINE, T0)
                .map(|s| s.status()),
            Ok(PaymentStatus::Declined)
        );
        let never_sent = failed_state(1, false);
        assert!(matches!(
            never_sent.apply(approved("ch_9"), DEADLINE, T0),
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn failed_to_forward_expires_at_the_deadline_only_if_never_received() {
        assert_eq!(
            failed_state(4, false).apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
            Ok(PaymentState::Expired {
                at: after(),
                attempts: 4,
                maybe_received: false
            })
        );
        // The processor may hold it: unknown until it says.
        assert_eq!(
            failed_state(4, true).apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
            Ok(PaymentState::OutcomeUnknown {
                since: after(),
                attempts: 4,
            })
        );
    }

    #[test]
    fn only_the_processor_decides_an_unknown_outcome() {
        let unknown = PaymentState::OutcomeUnknown {
            since: after(),
            attempts: 2,
        };
        assert_eq!(
            unknown
                .apply(approved("ch_1"), DEADLINE, after())
                .map(|s| s.status()),
            Ok(PaymentStatus::Approved)
        );
        assert_eq!(
            unknown
                .apply(declined(DeclineReason::DoNotHonour), DEADLINE, after())
                .map(|s| s.status()),
            Ok(PaymentStatus::Declined)
        );
        assert_eq!(
            unknown.apply(PaymentEvent::NotFoundAtProcessor, DEADLINE, after()),
            Ok(PaymentState::Expired {
                at: after(),
                attempts: 2,
                maybe_received: false
            })
        );
        for e in [
            PaymentEvent::DeadlineReached,
            PaymentEvent::StartForwarding,
            failed(ForwardErrorKind::NoAnswer),
        ] {
            assert!(unknown.apply(e, DEADLINE, after()).is_err());
        }
        // "Not found" before the deadline decides nothing: the same id is
        // simply forwarded again.
        for s in [
            PaymentState::Pending,
            failed_state(1, true),
            forwarding(1, true),
        ] {
            assert!(s
                .apply(PaymentEvent::NotFoundAtProcessor, DEADLINE, T0)
                .is_err());
        }
    }

    // --- refused transitions ---------------------------------------------

    #[test]
    fn never_forwarded_at_or_after_the_deadline() {
        for s in [PaymentState::Pending, failed_state(2, true)] {
            for now in [DEADLINE.0, after()] {
                assert_eq!(
                    s.apply(PaymentEvent::StartForwarding, DEADLINE, now),
                    Err(TransitionError::DeadlinePassed {
                        deadline: DEADLINE.0,
                        now
                    })
                );
            }
        }
    }

    #[test]
    fn no_expiry_before_the_deadline() {
        for s in [PaymentState::Pending, failed_state(1, false)] {
            assert_eq!(
                s.apply(PaymentEvent::DeadlineReached, DEADLINE, before()),
                Err(TransitionError::DeadlineNotReached {
                    deadline: DEADLINE.0,
                    now: before()
                })
            );
        }
    }

    #[test]
    fn no_expiry_while_an_attempt_is_in_flight() {
        assert!(matches!(
            forwarding(1, true).apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
            Err(TransitionError::NotAllowed {
                status: PaymentStatus::Forwarding,
                event: PaymentEventKind::DeadlineReached,
                ..
            })
        ));
    }

    #[test]
    fn only_one_attempt_in_flight() {
        assert!(matches!(
            forwarding(1, false).apply(PaymentEvent::StartForwarding, DEADLINE, T0),
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn no_failure_without_an_attempt_in_flight() {
        for s in [PaymentState::Pending, failed_state(1, false)] {
            assert!(matches!(
                s.apply(failed(ForwardErrorKind::NoAnswer), DEADLINE, T0),
                Err(TransitionError::NotAllowed { .. })
            ));
        }
    }

    #[test]
    fn no_decision_for_a_payment_never_sent() {
        for ev in [approved("x"), declined(DeclineReason::LostCard)] {
            assert!(matches!(
                PaymentState::Pending.apply(ev, DEADLINE, T0),
                Err(TransitionError::NotAllowed { .. })
            ));
        }
    }

    // --- final states ----------------------------------------------------

    #[test]
    fn a_second_identical_outcome_is_a_duplicate() {
        let a = PaymentState::Approved {
            at: T0,
            processor_ref: "ch_1".into(),
        };
        assert_eq!(
            a.apply(approved("ch_1"), DEADLINE, T0),
            Err(TransitionError::Duplicate {
                status: PaymentStatus::Approved
            })
        );
        let d = PaymentState::Declined {
            at: T0,
            reason: DeclineReason::InsufficientFunds,
        };
        assert_eq!(
            d.apply(declined(DeclineReason::InsufficientFunds), DEADLINE, T0),
            Err(TransitionError::Duplicate {
                status: PaymentStatus::Declined
            })
        );
        let e = PaymentState::Expired {
            at: T0,
            attempts: 0,
            maybe_received: false,
        };
        assert_eq!(
            e.apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
            Err(TransitionError::Duplicate {
                status: PaymentStatus::Expired
            })
        );
    }

    #[test]
    fn a_different_outcome_for_a_final_payment_is_a_conflict() {
        let a = PaymentState::Approved {
            at: T0,
            processor_ref: "ch_1".into(),
        };
        let d = PaymentState::Declined {
            at: T0,
            reason: DeclineReason::LostCard,
        };
        let e = PaymentState::Expired {
            at: T0,
            attempts: 1,
            maybe_received: true,
        };
        let cases = [
            (&a, approved("ch_2"), PaymentEventKind::Approved),
            (
                &a,
                declined(DeclineReason::LostCard),
                PaymentEventKind::Declined,
            ),
            (&d, approved("ch_1"), PaymentEventKind::Approved),
            (
                &d,
                declined(DeclineReason::StolenCard),
                PaymentEventKind::Declined,
            ),
            (&e, approved("ch_1"), PaymentEventKind::Approved),
            (
                &e,
                declined(DeclineReason::LostCard),
                PaymentEventKind::Declined,
            ),
        ];
        for (s, ev, reported) in cases {
            assert_eq!(
                s.apply(ev, DEADLINE, after()),
                Err(TransitionError::ConflictingOutcome {
                    status: s.status(),
                    reported
                })
            );
        }
    }

    #[test]
    fn final_states_refuse_everything_else() {
        let finals = [
            PaymentState::Approved {
                at: T0,
                processor_ref: "r".into(),
            },
            PaymentState::Declined {
                at: T0,
                reason: DeclineReason::Other { code: "62".into() },
            },
            PaymentState::Expired {
                at: T0,
                attempts: 0,
                maybe_received: false,
            },
        ];
        for s in &finals {
            for ev in [
                PaymentEvent::StartForwarding,
                failed(ForwardErrorKind::Rejected),
            ] {
                for now in [before(), after()] {
                    assert_eq!(
                        s.apply(ev.clone(), DEADLINE, now),
                        Err(TransitionError::AlreadyFinal {
                            status: s.status(),
                            event: ev.kind()
                        })
                    );
                }
            }
        }
        for s in &finals[..2] {
            assert!(matches!(
                s.apply(PaymentEvent::DeadlineReached, DEADLINE, after()),
                Err(TransitionError::AlreadyFinal { .. })
            ));
        }
    }

    #[test]
    fn error_kinds_classify_retries_and_reach() {
        use ForwardErrorKind::*;
        assert!(NotSent.is_retryable() && !NotSent.may_have_reached_processor());
        assert!(NoAnswer.is_retryable() && NoAnswer.may_have_reached_processor());
        assert!(
            ServiceUnavailable.is_retryable() && ServiceUnavailable.may_have_reached_processor()
        );
        assert!(!Rejected.is_retryable() && !Rejected.may_have_reached_processor());
    }

    #[test]
    fn state_round_trips_through_serde() {
        let states = [
            PaymentState::Pending,
            forwarding(2, true),
            failed_state(3, true),
            PaymentState::Declined {
                at: T0,
                reason: DeclineReason::Other { code: "N7".into() },
            },
        ];
        for s in states {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(
                serde_json::from_str::<PaymentState>(&json).expect("parse"),
                s
            );
        }
    }

    // --- property: final is forever --------------------------------------

    fn arb_event() -> impl Strategy<Value = PaymentEvent> {
        prop_oneof![
            Just(PaymentEvent::StartForwarding),
            prop_oneof![
                Just(ForwardErrorKind::NotSent),
                Just(ForwardErrorKind::NoAnswer),
                Just(ForwardErrorKind::ServiceUnavailable),
                Just(ForwardErrorKind::Rejected),
            ]
            .prop_map(|error| PaymentEvent::ForwardFailed {
                error,
                next_retry_at: None
            }),
            prop_oneof![Just("a"), Just("b")].prop_map(approved),
            prop_oneof![
                Just(DeclineReason::InsufficientFunds),
                Just(DeclineReason::StolenCard),
            ]
            .prop_map(declined),
            Just(PaymentEvent::DeadlineReached),
            Just(PaymentEvent::NotFoundAtProcessor),
        ]
    }

    proptest! {
        #[test]
        fn once_final_never_changes(
            steps in proptest::collection::vec((arb_event(), 0i64..20_000_000), 0..40)
        ) {
            let deadline = Deadline(T0.plus(std::time::Duration::from_secs(3600)));
            let mut now = T0;
            let mut state = PaymentState::Pending;
            let mut final_state: Option<PaymentState> = None;
            let mut attempts = 0u32;
            for (event, dt) in steps {
                now = Timestamp(now.0 + dt);
                let before = state.clone();
                let kind = event.kind();
                match state.apply(event, deadline, now) {
                    Ok(next) => {
                        prop_assert!(final_state.is_none(), "a final state moved: {before:?} -> {next:?}");
                        match next.status() {
                            PaymentStatus::Forwarding => {
                                prop_assert!(!deadline.is_passed(now), "forwarded after the deadline");
                                prop_assert_eq!(next.attempts(), Some(attempts + 1));
                                attempts += 1;
                            }
                            PaymentStatus::Expired => {
                                prop_assert!(deadline.is_passed(now));
                                prop_assert!(before.status() != PaymentStatus::Forwarding);
                                prop_assert_eq!(next.attempts(), Some(attempts));
                                // Expired on the device's word only if no
                                // attempt can have reached the processor;
                                // otherwise only the processor's "not found".
                                let maybe = matches!(
                                    before,
                                    PaymentState::FailedToForward { maybe_received: true, .. }
                                );
                                prop_assert!(!maybe, "expired while the processor may hold it");
                                if before.status() == PaymentStatus::OutcomeUnknown {
                                    prop_assert_eq!(kind, PaymentEventKind::NotFoundAtProcessor);
                                }
                            }
                            PaymentStatus::OutcomeUnknown => {
                                prop_assert!(deadline.is_passed(now));
                                let maybe = matches!(
                                    before,
                                    PaymentState::FailedToForward { maybe_received: true, .. }
                                );
                                prop_assert!(maybe, "unknown although nothing reached the processor");
                            }
                            PaymentStatus::Approved | PaymentStatus::Declined => {
                                prop_assert!(attempts > 0, "decided without ever being sent");
                            }
                            PaymentStatus::Pending => prop_assert!(false, "back to pending"),
                            PaymentStatus::FailedToForward => {
                                prop_assert_eq!(before.status(), PaymentStatus::Forwarding);
                                prop_assert_eq!(next.attempts(), Some(attempts));
                            }
                        }
                        if next.is_final() {
                            final_state = Some(next.clone());
                        }
                        state = next;
                    }
                    Err(e) => {
                        if let Some(f) = &final_state {
                            prop_assert!(matches!(
                                e,
                                TransitionError::Duplicate { .. }
                                    | TransitionError::ConflictingOutcome { .. }
                                    | TransitionError::AlreadyFinal { .. }
                            ), "{e:?} for {kind:?}");
                            prop_assert_eq!(&state, f);
                        }
                    }
                }
            }
        }
    }

    // --- order badge -----------------------------------------------------

    #[test]
    fn order_badge_precedence() {
        use PaymentStatus as P;
        use TenderView::{Card, Cash};
        let cases: &[(&[TenderView], OrderStatus)] = &[
            (&[], OrderStatus::PaymentPending),
            (&[Cash], OrderStatus::Paid),
            (&[Cash, Card(P::Approved)], OrderStatus::Paid),
            (&[Card(P::Approved), Card(P::Approved)], OrderStatus::Paid),
            (
                &[Card(P::Approved), Card(P::Pending)],
                OrderStatus::PaymentPending,
            ),
            (&[Cash, Card(P::Forwarding)], OrderStatus::PaymentPending),
            (&[Card(P::FailedToForward)], OrderStatus::PaymentPending),
            (
                &[Card(P::Approved), Card(P::Declined)],
                OrderStatus::CardDeclined,
            ),
            (
                &[Card(P::Pending), Card(P::Declined)],
                OrderStatus::CardDeclined,
            ),
            (
                &[Card(P::Expired), Card(P::Declined)],
                OrderStatus::CardDeclined,
            ),
            (
                &[Card(P::Declined), Card(P::Expired)],
                OrderStatus::CardDeclined,
            ),
            (&[Card(P::Expired), Card(P::Approved)], OrderStatus::Expired),
            (&[Card(P::Expired), Card(P::Pending)], OrderStatus::Expired),
            (&[Cash, Card(P::Expired)], OrderStatus::Expired),
        ];
        for (tenders, expected) in cases {
            assert_eq!(order_status(tenders), *expected, "{tenders:?}");
        }
    }

    // --- contacts and redaction ------------------------------------------

    const EMAIL: &str = "jane.doe+shop@example.co.jp";
    const PHONE: &str = "+81 90-1234-5678";
    const PHONE_DIGITS: &str = "819012345678";

    #[test]
    fn email_shapes() {
        for ok in [EMAIL, "a@b.co", " x_y@sub.domain.org ", "名前@例え.jp"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "jane@",
            "jane@example",
            "jane@@example.com",
            "ja ne@example.com",
            ".jane@example.com",
            "jane.@example.com",
            "ja..ne@example.com",
            "jane@-example.com",
            "jane@example..com",
            "jane@1.2.3.4",
            "jane@exa_mple.com",
            "\"jane\"@example.com",
        ] {
            assert!(
                matches!(
                    EmailAddress::parse(bad),
                    Err(ContactError::InvalidEmail { .. })
                ),
                "{bad:?}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long_local).is_err());
    }

    #[test]
    fn phone_shapes() {
        assert_eq!(
            PhoneNumber::parse(PHONE).map(|p| p.reveal().to_owned()),
            Ok(format!("+{PHONE_DIGITS}"))
        );
        assert!(PhoneNumber::parse("+1 (415) 555-0100").is_ok());
        for bad in [
            "",
            "090-1234-5678",
            "+0 123 4567",
            "+123456",
            "+1234567890123456",
            "+1 415 555 01OO",
            "++14155550100",
            "+1415555O100",
        ] {
            assert!(
                matches!(
                    PhoneNumber::parse(bad),
                    Err(ContactError::InvalidPhone { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn contact_needs_one_way_to_reach_the_customer() {
        assert_eq!(
            CustomerContact::parse(None, Some("  ")),
            Err(ContactError::Empty)
        );
        let c = CustomerContact::parse(Some(EMAIL), None).expect("email only");
        assert_eq!(c.email().map(|e| e.reveal()), Some(EMAIL));
        assert!(c.phone().is_none());
        assert!(serde_json::from_str::<CustomerContact>(r#"{"email":null,"phone":null}"#).is_err());
        assert!(
            serde_json::from_str::<CustomerContact>(r#"{"email":"nope","phone":null}"#).is_err()
        );
    }

    #[test]
    fn contacts_round_trip_in_clear_for_the_encrypted_store() {
        let c = CustomerContact::parse(Some(EMAIL), Some(PHONE)).expect("valid");
        let json = serde_json::to_string(&c).expect("serialize");
        assert!(json.contains(EMAIL));
        assert_eq!(
            serde_json::from_str::<CustomerContact>(&json).expect("parse"),
            c
        );
    }

    #[test]
    fn hints_mask_most_of_the_value() {
        let e = EmailAddress::parse("jane@example.com").expect("valid");
        assert_eq!(e.hint(), "j***@e***.com");
        let p = PhoneNumber::parse(PHONE).expect("valid");
        assert_eq!(p.hint(), "+***78");
    }

    /// Substrings of the test email and phone that must never be printed.
    fn assert_redacted(text: &str) {
        for secret in [
            EMAIL,
            "jane",
            "doe",
            "example",
            PHONE,
            PHONE_DIGITS,
            "1234",
            "5678",
        ] {
            assert!(!text.contains(secret), "{secret:?} leaked in {text:?}");
        }
    }

    #[test]
    fn contact_details_never_appear_in_debug_display_or_errors() {
        let email = EmailAddress::parse(EMAIL).expect("valid");
        let phone = PhoneNumber::parse(PHONE).expect("valid");
        let contact =
            CustomerContact::new(Some(email.clone()), Some(phone.clone())).expect("valid");
        let order_id = OrderId::parse("o1").expect("valid");
        let receipt_email =
            ReceiptRequest::queue(order_id.clone(), ReceiptChannel::Email(email.clone()), T0);
        let receipt_sms =
            ReceiptRequest::queue(order_id.clone(), ReceiptChannel::Sms(phone.clone()), T0);
        let notice = DeclineNotice::for_payment(
            PaymentId::parse("p1").expect("valid"),
            order_id,
            usd(1250),
            &PaymentState::Declined {
                at: T0,
                reason: DeclineReason::InsufficientFunds,
            },
            Some(contact.clone()),
        )
        .expect("positive")
        .expect("declined");

        let printed = [
            format!("{email:?}"),
            format!("{email}"),
            format!("{email:#?}"),
            format!("{phone:?}"),
            format!("{phone}"),
            format!("{contact:?}"),
            format!("{contact:#?}"),
            format!("{contact}"),
            format!("{receipt_email:?}"),
            format!("{receipt_sms:#?}"),
            format!("{notice:?}"),
            format!("{notice:#?}"),
            format!("{:?}", Some(&contact)),
        ];
        for text in &printed {
            assert_redacted(text);
        }
        assert!(
            format!("{notice:?}").contains("12.50 USD"),
            "the amount is not secret"
        );

        // Errors about refused values do not carry them either.
        let bad_inputs = [
            "jane.doe@@example.com",
            "jane doe@example.com",
            "+81 90 1234 5678x",
        ];
        for bad in bad_inputs {
            let errs = [
                EmailAddress::parse(bad)
                    .err()
                    .map(|e| (e.to_string(), format!("{e:?}"))),
                PhoneNumber::parse(bad)
                    .err()
                    .map(|e| (e.to_string(), format!("{e:?}"))),
            ];
            for (display, debug) in errs.into_iter().flatten() {
                assert_redacted(&display);
                assert_redacted(&debug);
            }
        }
    }

    // --- receipts and notices --------------------------------------------

    #[test]
    fn receipt_requests_queue_until_sent() {
        let email = EmailAddress::parse(EMAIL).expect("valid");
        let mut r = ReceiptRequest::queue(
            OrderId::parse("o1").expect("valid"),
            ReceiptChannel::Email(email),
            T0,
        );
        assert_eq!(r.state, ReceiptState::Queued { attempts: 0 });
        r.record(ReceiptEvent::TransientFailure, T0)
            .expect("queued");
        assert_eq!(r.state, ReceiptState::Queued { attempts: 1 });
        r.record(ReceiptEvent::Delivered, after()).expect("sent");
        assert_eq!(r.state, ReceiptState::Sent { at: after() });
        assert_eq!(
            r.record(ReceiptEvent::Delivered, after()),
            Err(ReceiptError::AlreadyFinal)
        );
        assert_eq!(r.state, ReceiptState::Sent { at: after() });

        let failed = ReceiptState::Queued { attempts: 2 }
            .apply(ReceiptEvent::PermanentFailure, T0)
            .expect("failed");
        assert_eq!(
            failed,
            ReceiptState::Failed {
                at: T0,
                attempts: 3
            }
        );
        assert_eq!(
            failed.apply(ReceiptEvent::Delivered, T0),
            Err(ReceiptError::AlreadyFinal)
        );
    }

    #[test]
    fn decline_notice_only_for_declined_payments_with_an_amount_due() {
        let pid = PaymentId::parse("p1").expect("valid");
        let oid = OrderId::parse("o1").expect("valid");
        let declined_state = PaymentState::Declined {
            at: T0,
            reason: DeclineReason::ExpiredCard,
        };
        let n =
            DeclineNotice::for_payment(pid.clone(), oid.clone(), usd(500), &declined_state, None)
                .expect("positive")
                .expect("declined");
        assert_eq!(n.amount_due, usd(500));
        assert_eq!(n.reason, DeclineReason::ExpiredCard);
        assert_eq!(
            DeclineNotice::for_payment(
                pid.clone(),
                oid.clone(),
                usd(500),
                &PaymentState::Pending,
                None
            ),
            Ok(None)
        );
        assert!(DeclineNotice::for_payment(pid, oid, usd(0), &declined_state, None).is_err());
    }
}
