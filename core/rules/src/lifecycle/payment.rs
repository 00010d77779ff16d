//! The payment state machine ([`PaymentState`], its events and its one
//! transition function [`PaymentState::apply`]) and the order badge (R15).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::*;

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
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
}
