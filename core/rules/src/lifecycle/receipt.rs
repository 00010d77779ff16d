//! Queued receipts (R16) and decline notices (R17, B9).

use serde::{Deserialize, Serialize};

use super::*;

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
    use super::super::fixtures::*;
    use super::*;
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
