//! The forwarding engine (SPEC R3, R8, B2, B4, B5): sends every stored
//! offline payment to the processor, exactly once, most urgent deadline
//! first, and tells the app each outcome.
//!
//! How "exactly once" holds:
//! - before a request leaves, the payment is durably `Forwarding` (B2), in a
//!   group commit with the other payments of the same refill;
//! - every request carries the payment's stable id as its idempotency key,
//!   so a retry after a lost answer returns the first decision instead of
//!   charging again;
//! - an attempt found `Forwarding` at start-up (a crash during it) is
//!   recorded as "no answer" and retried with the same id; so is one whose
//!   task was lost while the engine runs (`LiveAttempt`: a failed round, a
//!   panicking gateway), at the next tick, which the lost task wakes;
//! - a round runs on its own task: a caller that stops waiting for
//!   [`PosEngine::forward_now`] (a cancelled coroutine or Swift task) does
//!   not stop it, and every answer received is recorded;
//! - a payment some attempt may have reached is never expired on the
//!   device's word alone: at its deadline it becomes `OutcomeUnknown`, and
//!   rounds ask the processor about that id ([`Gateway::payment_status`])
//!   until it answers; only "not found" expires it;
//! - the state machine ([`PaymentState::apply`]) never starts an attempt at
//!   or after the deadline (R8) and never accepts a second, different outcome.
//!
//! A *round* ([`PosEngine::forward_now`]) sends everything due now with at
//! most `max_in_flight` requests at once, records results in group commits as
//! they arrive, and ends when nothing due is left; failed attempts get a
//! retry time with exponential back-off and jitter. The *driver*, a tokio
//! task started with the engine, runs rounds by itself: when connectivity
//! returns (R3), when a payment is stored while online, and when a retry
//! falls due; it also probes the service while offline. Tests turn it off
//! ([`ForwardingConfig::automatic`]) and run rounds on a virtual clock.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::clock::Timestamp;
use crate::connectivity::{ConnectivityState, ProbeOutcome};
use crate::engine::{PosEngine, State};
use crate::error::{PosError, Result};
use crate::events::PosEvent;
use crate::forwarder::{add_if_same_currency, guarded, LiveAttempt};
pub use crate::forwarder::{
    ForwardReport, ForwardingBlockedReason, ForwardingConfig, ForwardingProgress,
};
use crate::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ServiceStatus, StatusAnswer, StatusQuery,
};
use crate::ledger::{OfflinePayment, Write};
use crate::lifecycle::{Deadline, ForwardErrorKind, PaymentEvent, PaymentId, PaymentState};
use crate::money::Money;

impl PosEngine {
    /// Sets (or replaces) the processor gateway used for forwarding, online
    /// payments, probes and receipts, and wakes the driver.
    pub fn set_gateway(&self, gateway: Arc<dyn Gateway>) -> Result<()> {
        self.check_open()?;
        *self
            .inner
            .forwarding
            .gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(gateway);
        self.inner.forwarding.wake.notify_one();
        Ok(())
    }

    /// Pauses automatic forwarding (B5). Attempts in flight finish; no new
    /// one starts until [`resume_forwarding`](Self::resume_forwarding) or
    /// [`forward_now`](Self::forward_now).
    pub fn pause_forwarding(&self) -> Result<()> {
        self.check_open()?;
        self.inner.forwarding.paused.store(true, Ordering::Release);
        Ok(())
    }

    /// Resumes automatic forwarding (B5).
    pub fn resume_forwarding(&self) -> Result<()> {
        self.check_open()?;
        self.inner.forwarding.paused.store(false, Ordering::Release);
        self.inner.forwarding.wake.notify_one();
        Ok(())
    }

    /// Whether automatic forwarding is paused.
    pub fn forwarding_paused(&self) -> bool {
        self.inner.forwarding.paused.load(Ordering::Acquire)
    }

    /// Forwards everything due now and returns when it is done (B5: "forward
    /// now"), whatever the connectivity state and even when paused (the
    /// pause is lifted). Expired payments are reported first (R8).
    ///
    /// The round runs on its own task: if the caller stops waiting (a
    /// cancelled Kotlin coroutine or Swift task), the round still finishes
    /// and records every answer.
    pub async fn forward_now(&self) -> Result<ForwardReport> {
        self.check_open()?;
        self.inner.forwarding.paused.store(false, Ordering::Release);
        let engine = self.clone();
        tokio::spawn(async move { engine.forward_round(true).await })
            .await
            .map_err(|e| PosError::Internal {
                reason: format!("forwarding round failed: {e}"),
            })?
    }

    /// One round: see the module documentation.
    ///
    /// A `manual` round also retries payments whose last error was not
    /// retryable (they wait for "forward now"); an automatic one does not.
    pub(crate) async fn forward_round(&self, manual: bool) -> Result<ForwardReport> {
        let gateway = self.gateway().ok_or(PosError::OnlineUnavailable)?;
        let _round = self.inner.forwarding.round.lock().await;
        let mut report = ForwardReport {
            expired: self.tick().await?.expired.len() as u64,
            ..ForwardReport::default()
        };
        let max = self.inner.forwarding.config.max_in_flight;
        let currency = self.inner.config.currency;
        let due = {
            let s = self.state();
            self.due_ids(&s, self.now(), usize::MAX, manual)
        };
        let round_began = std::time::Instant::now();
        if !due.is_empty() {
            tracing::debug!(due = due.len(), manual, "forwarding round started");
        }
        let mut counted: BTreeSet<PaymentId> = due.iter().cloned().collect();
        let mut queue = DueQueue::new(due.clone(), self.now());
        // Each payment is attempted at most once per round: a failure waits
        // for its retry time (or the next manual round), never loops here.
        let mut tried: BTreeSet<PaymentId> = BTreeSet::new();
        let mut progress = ForwardingProgress {
            done: 0,
            total: due.len() as u64,
            amount_done: Money::zero(currency),
            amount_total: self.amount_of(&due),
            finished: false,
        };
        if !due.is_empty() {
            self.inner
                .events
                .emit(PosEvent::ForwardingProgress(progress.clone()));
        }
        type Answer = (
            PaymentId,
            u32,
            std::result::Result<GatewayDecision, GatewayError>,
            LiveAttempt,
        );
        let mut in_flight: JoinSet<Answer> = JoinSet::new();
        let mut steps: Vec<(PaymentId, PaymentEvent)> = Vec::new();
        // The live attempts of the answers in `steps`, released once these
        // are recorded.
        let mut answered: Vec<LiveAttempt> = Vec::new();
        // The first store error: no new attempt starts after it, but the
        // answers of those in flight are still waited for and recorded if
        // the store takes them.
        let mut failure: Option<PosError> = None;
        loop {
            // One commit records the answers received and marks the next
            // due payments as in flight (durably, before they are sent).
            let free = max.saturating_sub(in_flight.len());
            // The processor's `Retry-After` holds back every new attempt,
            // in manual rounds too.
            let may_start = failure.is_none()
                && free > 0
                && !self.forwarding_paused()
                && !self.is_closed()
                && self.inner.forwarding.busy_until(self.now()).is_none();
            match self
                .settle_and_start(
                    &mut steps,
                    if may_start { free } else { 0 },
                    manual,
                    &tried,
                    &mut queue,
                )
                .await
            {
                Ok((recorded, started)) => {
                    if self.forwarding_blocked() == Some(ForwardingBlockedReason::StoreLocked)
                        && (!recorded.is_empty() || !started.is_empty())
                    {
                        // The store took a write again.
                        self.set_forwarding_blocked(None);
                    }
                    answered.drain(..).for_each(LiveAttempt::recorded);
                    if !recorded.is_empty() {
                        for p in recorded {
                            if p.state.is_final() {
                                progress.done += 1;
                                add_if_same_currency(&mut progress.amount_done, p.amount);
                            }
                        }
                        self.inner
                            .events
                            .emit(PosEvent::ForwardingProgress(progress.clone()));
                    }
                    for (request, attempt, live) in started {
                        tracing::debug!(
                            payment_id = %request.payment_id,
                            attempt,
                            "forwarding attempt sent"
                        );
                        report.attempts += 1;
                        tried.insert(request.payment_id.clone());
                        if counted.insert(request.payment_id.clone()) {
                            // Became due during the round (a retry time
                            // passed, a payment stored): it joins the total.
                            progress.total += 1;
                            add_if_same_currency(&mut progress.amount_total, request.amount);
                        }
                        let gw = Arc::clone(&gateway);
                        in_flight.spawn_blocking(move || {
                            let id = request.payment_id.clone();
                            let answer = guarded(|| match &request.online {
                                Some(auth) => gw.authorize(auth),
                                None => gw.forward(&request),
                            });
                            (id, attempt, answer, live)
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = e.kind(),
                        "forwarding: a write failed; no new attempt starts in this round"
                    );
                    if matches!(e, PosError::StoreLocked) {
                        self.set_forwarding_blocked(Some(ForwardingBlockedReason::StoreLocked));
                    }
                    failure.get_or_insert(e);
                }
            }
            let Some(first) = in_flight.join_next().await else {
                break;
            };
            let mut results = vec![first];
            while let Some(more) = in_flight.try_join_next() {
                results.push(more);
            }
            for r in results {
                // A task that panicked dropped its live attempt: the next
                // tick records it as "no answer".
                let Ok((id, attempt, outcome, live)) = r else {
                    tracing::error!("a forwarding attempt's task panicked: recorded as unanswered");
                    report.failed += 1;
                    continue;
                };
                crate::forwarder::log_answer(&id, attempt, &outcome);
                match &outcome {
                    Ok(GatewayDecision::Approved { .. }) => report.approved += 1,
                    Ok(GatewayDecision::Declined { .. }) => report.declined += 1,
                    Err(_) => report.failed += 1,
                }
                steps.push((id, self.answer_event(outcome, attempt)));
                answered.push(live);
            }
        }
        if failure.is_some() && !steps.is_empty() {
            // One last try for the answers the failed commits left.
            if self
                .settle_and_start(&mut steps, 0, manual, &tried, &mut queue)
                .await
                .is_ok()
            {
                answered.drain(..).for_each(LiveAttempt::recorded);
            }
        }
        // Answers still unrecorded release their attempts as lost.
        drop(answered);
        if !due.is_empty() || report.attempts > 0 {
            progress.finished = true;
            self.inner
                .events
                .emit(PosEvent::ForwardingProgress(progress));
        }
        if let Some(e) = failure {
            tracing::warn!(
                error = e.kind(),
                attempts = report.attempts,
                "forwarding round stopped by a failed write"
            );
            return Err(e);
        }
        if self.inner.forwarding.busy_until(self.now()).is_none() {
            self.ask_about_unknown_outcomes(&gateway, manual, &mut report)
                .await?;
        }
        if self.inner.forwarding.busy_until(self.now()).is_none() {
            report.receipts_sent = self.deliver_receipts(&gateway).await?;
        }
        // The snapshot the round's commits made due (they do not take one
        // while the round runs: see `after_write`), once, at its end.
        self.compact_if_due().await;
        let decided = report.approved + report.declined;
        if report.attempts + decided + report.expired + report.receipts_sent > 0 {
            tracing::info!(
                manual,
                attempts = report.attempts,
                approved = report.approved,
                declined = report.declined,
                failed = report.failed,
                expired = report.expired,
                outcome_unknown = report.outcome_unknown,
                receipts_sent = report.receipts_sent,
                elapsed = ?round_began.elapsed(),
                "forwarding round finished"
            );
        } else {
            tracing::trace!(manual, "forwarding round: nothing to do");
        }
        Ok(report)
    }

    /// Asks the processor about every payment of unknown outcome and
    /// records its answers: approved, declined, or expired when it has no
    /// record of the id. No answer leaves the payment as it is. An automatic
    /// round asks at most once per `retry_base`; a manual one always.
    async fn ask_about_unknown_outcomes(
        &self,
        gateway: &Arc<dyn Gateway>,
        manual: bool,
        report: &mut ForwardReport,
    ) -> Result<()> {
        let now = self.now();
        let unknown: Vec<PaymentId> = self
            .state()
            .ledger
            .payments
            .values()
            .filter(|p| matches!(p.state, PaymentState::OutcomeUnknown { .. }))
            .map(|p| p.id.clone())
            .collect();
        report.outcome_unknown = unknown.len() as u64;
        if unknown.is_empty() {
            return Ok(());
        }
        {
            let f = &self.inner.forwarding;
            let mut last = f.last_lookup.lock().unwrap_or_else(|p| p.into_inner());
            if !manual && last.is_some_and(|t| now < t.plus(f.config.retry_base)) {
                return Ok(());
            }
            *last = Some(now);
        }
        let device_id = self.inner.config.device_id.clone();
        let mut steps = Vec::new();
        for chunk in unknown.chunks(self.inner.forwarding.config.max_in_flight) {
            // The processor asked to wait (`Retry-After`): the rest wait too.
            if self.inner.forwarding.busy_until(self.now()).is_some() {
                break;
            }
            let mut asking = JoinSet::new();
            for id in chunk {
                let gw = Arc::clone(gateway);
                let query = StatusQuery {
                    device_id: device_id.clone(),
                    payment_id: id.clone(),
                    account: self
                        .state()
                        .ledger
                        .payments
                        .get(id)
                        .and_then(|p| p.account.clone()),
                };
                asking.spawn_blocking(move || {
                    let answer = gw.payment_status(&query);
                    (query.payment_id, answer)
                });
            }
            while let Some(r) = asking.join_next().await {
                let Ok((id, answer)) = r else { continue };
                if answer.is_ok() {
                    self.credentials_accepted();
                }
                let event = match answer {
                    Ok(PaymentLookup::Decided(GatewayDecision::Approved { processor_ref })) => {
                        report.approved += 1;
                        PaymentEvent::Approved { processor_ref }
                    }
                    Ok(PaymentLookup::Decided(GatewayDecision::Declined { reason })) => {
                        report.declined += 1;
                        PaymentEvent::Declined { reason }
                    }
                    Ok(PaymentLookup::NotFound) => {
                        report.expired += 1;
                        PaymentEvent::NotFoundAtProcessor
                    }
                    Ok(PaymentLookup::InProgress) => continue,
                    Err(e) => {
                        crate::forwarder::log_gateway_error("payment_status", Some(&id), &e);
                        self.inner.forwarding.note_retry_after(&e, self.now());
                        continue;
                    }
                };
                tracing::info!(
                    payment_id = %id,
                    "the processor answered for a payment of unknown outcome"
                );
                steps.push((id, event));
            }
        }
        let decided = steps.len() as u64;
        self.settle_and_start(
            &mut steps,
            0,
            manual,
            &BTreeSet::new(),
            &mut DueQueue::new(Vec::new(), now),
        )
        .await?;
        report.outcome_unknown = report.outcome_unknown.saturating_sub(decided);
        Ok(())
    }

    /// Delivers the receipts queued offline (R16), one attempt each; a
    /// transient failure leaves the receipt queued for the next round.
    /// Returns how many were delivered.
    async fn deliver_receipts(&self, gateway: &Arc<dyn Gateway>) -> Result<u64> {
        use crate::lifecycle::{ReceiptChannel, ReceiptEvent};
        let mut sent = 0;
        for (id, request) in self.queued_receipts()? {
            let (channel, address) = match &request.channel {
                ReceiptChannel::Email(e) => ("email", e.reveal().to_owned()),
                ReceiptChannel::Sms(p) => ("sms", p.reveal().to_owned()),
            };
            let delivery = crate::gateway::ReceiptDelivery {
                device_id: self.inner.config.device_id.clone(),
                receipt_id: format!("{}-r{id}", self.inner.config.device_id),
                order_id: request.order_id.clone(),
                channel: channel.to_owned(),
                address,
                account: request.account.clone(),
            };
            let gw = Arc::clone(gateway);
            let answer = tokio::task::spawn_blocking(move || gw.deliver_receipt(&delivery))
                .await
                .map_err(|e| PosError::Internal {
                    reason: format!("receipt task failed: {e}"),
                })?;
            if let Err(e) = &answer {
                crate::forwarder::log_gateway_error("deliver_receipt", None, e);
            }
            let mut busy = false;
            let event = match answer {
                Ok(()) => {
                    sent += 1;
                    self.credentials_accepted();
                    ReceiptEvent::Delivered
                }
                // Refused credentials say nothing about the receipt: it
                // waits, and so do the others, for a usable token.
                Err(e) if e.credentials_rejected() => {
                    self.note_blocking(Err(&e));
                    busy = true;
                    ReceiptEvent::TransientFailure
                }
                Err(e) if e.kind == ForwardErrorKind::Rejected => ReceiptEvent::PermanentFailure,
                Err(e) => {
                    busy = self
                        .inner
                        .forwarding
                        .note_retry_after(&e, self.now())
                        .is_some();
                    ReceiptEvent::TransientFailure
                }
            };
            self.record_receipt(id, event).await?;
            if busy {
                // The processor asked to wait: the others wait too.
                break;
            }
        }
        Ok(sent)
    }

    fn amount_of(&self, ids: &[PaymentId]) -> Money {
        let currency = self.inner.config.currency;
        let s = self.state();
        ids.iter()
            .filter_map(|id| s.ledger.payments.get(id))
            .filter(|p| p.amount.currency() == currency)
            .fold(Money::zero(currency), |acc, p| {
                acc.checked_add(&p.amount).unwrap_or(acc)
            })
    }

    /// In one commit: records the answers in `steps` and marks up to
    /// `limit` due payments (not in `skip`) as in flight. Returns the
    /// payments as recorded and the requests to send, each with its live
    /// attempt. `steps` is emptied once recorded; a failed commit leaves it
    /// as it was, to try again.
    #[allow(clippy::type_complexity)]
    async fn settle_and_start(
        &self,
        steps: &mut Vec<(PaymentId, PaymentEvent)>,
        limit: usize,
        manual: bool,
        skip: &BTreeSet<PaymentId>,
        queue: &mut DueQueue,
    ) -> Result<(Vec<OfflinePayment>, Vec<(ForwardRequest, u32, LiveAttempt)>)> {
        if steps.is_empty() && limit == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let _w = self.write_lock().await;
        let now = self.now();
        let (batch, effects, started) = {
            let s = self.state();
            let mut batch = Vec::new();
            let mut effects = Vec::new();
            for (id, event) in steps.iter() {
                let (id, event) = (id, event.clone());
                // A step the payment cannot take is skipped, never applied.
                if let Ok(e) = Self::step_writes(&s, &mut batch, id, event, now) {
                    effects.push(e);
                }
            }
            let mut started = Vec::new();
            // The next due payments, from the round's queue (most urgent
            // first) rather than a scan and sort of every payment at each
            // commit. A scan rebuilds it when it runs dry and at least
            // every `RESCAN_EVERY`: a payment that became due since (a
            // retry time passed, a payment stored) then takes its place by
            // deadline, instead of waiting behind the whole backlog.
            let mut rescanned = false;
            if limit > 0 && now >= queue.scanned_at.plus(RESCAN_EVERY) {
                queue.rescan(self.due_ids(&s, now, usize::MAX, manual), skip, now);
                rescanned = true;
            }
            while started.len() < limit {
                let Some(id) = queue.ids.pop_front() else {
                    if rescanned {
                        break;
                    }
                    rescanned = true;
                    queue.rescan(self.due_ids(&s, now, usize::MAX, manual), skip, now);
                    continue;
                };
                // Marked in this batch already (found again by the scan:
                // the ledger changes only once the batch is durable).
                let picked = started
                    .iter()
                    .any(|(r, _, _): &(ForwardRequest, u32, LiveAttempt)| r.payment_id == id);
                if skip.contains(&id) || picked {
                    continue;
                }
                let Some(p) = s.ledger.payments.get(&id) else {
                    continue;
                };
                if !Self::is_due(p, now, manual) {
                    continue;
                }
                let Ok(next) =
                    p.state
                        .apply(PaymentEvent::StartForwarding, Deadline(p.deadline), now)
                else {
                    continue;
                };
                let attempt = next.attempts().unwrap_or(1);
                let mut p = p.clone();
                p.state = next;
                let live = self.inner.forwarding.live_attempt(&id);
                started.push((self.request_for(&s, &p, attempt), attempt, live));
                batch.push(Write::Payment(Box::new(p)));
            }
            (batch, effects, started)
        };
        if let Err(e) = self.commit(batch).await {
            // Nothing was marked in flight: no attempt to recover, and the
            // payments go back to the front of the queue.
            for (request, _, live) in started.into_iter().rev() {
                live.recorded();
                queue.ids.push_front(request.payment_id);
            }
            return Err(e);
        }
        steps.clear();
        Ok((self.emit_steps(effects), started))
    }

    /// The request that forwards (or, for an online payment, authorizes
    /// again) payment `p`, attempt `attempt`. It carries the reader's
    /// signature stored with the payment and the certificate of the reader
    /// remembered under its serial in `s` now (none if that reader was
    /// forgotten: the processor then declines the card data `mismatch`,
    /// which is why `PosEngine::forget_reader` refuses while such a payment
    /// is pending).
    fn request_for(&self, s: &State, p: &OfflinePayment, attempt: u32) -> ForwardRequest {
        let reader_certificate = p
            .card
            .reader_serial
            .as_ref()
            .and_then(|serial| s.ledger.readers.get(serial))
            .and_then(|r| r.certificate.clone());
        let reader_signature = p.card.reader_signature.clone();
        ForwardRequest {
            device_id: self.inner.config.device_id.clone(),
            payment_id: p.id.clone(),
            order_id: p.order_id.clone(),
            amount: p.amount,
            tip: p.tip,
            entry_mode: p.card.entry_mode,
            network: p.card.network,
            last4: p.card.last4.clone(),
            taken_at: p.taken_at,
            deadline: p.deadline,
            attempt,
            sealed_card_data: p.card.sealed_card_data.clone(),
            online: p.online.then(|| AuthorizeRequest {
                device_id: self.inner.config.device_id.clone(),
                payment_id: p.id.clone(),
                order_id: p.order_id.clone(),
                amount: p.amount,
                tip: p.tip,
                entry_mode: p.card.entry_mode,
                network: p.card.network,
                last4: p.card.last4.clone(),
                sealed_card_data: p.card.sealed_card_data.clone(),
                reader_certificate: reader_certificate.clone(),
                reader_signature: reader_signature.clone(),
                account: p.account.clone(),
            }),
            reader_certificate,
            reader_signature,
            account: p.account.clone(),
        }
    }

    /// Wakes the forwarding driver now, so it re-reads the time: for apps
    /// and demos that drive a virtual clock (the driver sleeps in real time
    /// until the next retry, probe or deadline).
    pub fn nudge_forwarding(&self) {
        self.wake_forwarder();
    }

    /// Starts the driver on the current tokio runtime, if there is one. It
    /// holds only a weak reference: it ends when the engine is closed or dropped.
    pub(crate) fn start_driver(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.forwarding.wake);
        // Without a thread for the timer, tokio's sleep does the job.
        let timer = WakeTimer::start(Arc::clone(&wake)).ok();
        handle.spawn(async move {
            loop {
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let wait = {
                    let Some(inner) = weak.upgrade() else { break };
                    let engine = PosEngine { inner };
                    if engine.is_closed() {
                        break;
                    }
                    engine.drive_once().await
                };
                // Nothing scheduled: no timer at all, only a notification
                // (a payment, a nudge, a connectivity change, the gateway,
                // the foreground, close) wakes the driver.
                match (wait, &timer) {
                    (Some(wait), None) => tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(wait) => {}
                    },
                    (wait, timer) => {
                        if let Some(timer) = timer {
                            timer.set(wait);
                        }
                        notified.await;
                    }
                }
            }
        });
    }

    /// One pass of the driver; returns how long to sleep before the next
    /// one if nothing wakes it, `None` to sleep until woken: nothing is
    /// scheduled, or forwarding is off, paused or has no gateway (what
    /// changes those wakes the driver).
    async fn drive_once(&self) -> Option<Duration> {
        // After a failure that nothing will report (a probe task that did
        // not finish, a store error), the pass is tried again after this.
        const RETRY: Duration = Duration::from_secs(30);
        // The longest sleep towards a scheduled time: tokio's timers count
        // monotonic time, which stops while the device is suspended, so a
        // far-off wake-up is read again from the trusted clock now and then.
        const LONGEST: Duration = Duration::from_secs(300);
        const MIN: Duration = Duration::from_millis(20);
        let archived = self.inner.archive_wanted.swap(false, Ordering::AcqRel);
        if archived {
            self.compact_if_due().await;
        }
        let f = &self.inner.forwarding;
        if !f.config.automatic || self.forwarding_paused() {
            return None;
        }
        let gateway = self.gateway()?;
        let online = self.state().connectivity.state().is_online();
        // A pass woken to archive probes only if a probe is due by then:
        // archiving adds no probe (nor wake-up) to an idle engine offline.
        let probe_due = !archived || self.state().connectivity.next_probe_at() <= self.now();
        if self.probes_due(online) && probe_due {
            // Probe the service (R2); connectivity decides when it is back.
            let sent = std::time::Instant::now();
            let answer = tokio::task::spawn_blocking(move || gateway.status_with_time()).await;
            if let Ok(Ok(StatusAnswer {
                processor_time: Some(t),
                ..
            })) = answer
            {
                // The processor's time corrects the trusted clock (B13); a
                // failed write leaves it for the next probe.
                let _ = self.correct_clock(t, sent.elapsed()).await;
            }
            if let Ok(Err(e)) = &answer {
                tracing::debug!(kind = ?e.kind, detail = %e.detail, "service probe failed");
            }
            let outcome = match answer.map(|r| r.map(|a| a.status)) {
                Ok(Ok(ServiceStatus::Available)) => ProbeOutcome::Healthy,
                Ok(Ok(ServiceStatus::Disrupted)) => ProbeOutcome::Unhealthy,
                Ok(Err(e))
                    if e.kind == ForwardErrorKind::NotSent
                        || e.kind == ForwardErrorKind::NoAnswer =>
                {
                    ProbeOutcome::Unreachable
                }
                Ok(Err(_)) => ProbeOutcome::Unhealthy,
                Err(_) => return Some(RETRY),
            };
            tracing::debug!(?outcome, "service probed");
            if self.report_probe(outcome).await.is_err() {
                return Some(RETRY);
            }
        }
        let online = matches!(
            self.state().connectivity.state(),
            ConnectivityState::Online { .. }
        );
        if online {
            // A failure here (store error) is retried at the next wake.
            let _ = self.forward_round(false).await;
        } else {
            let _ = self.tick().await;
        }
        // Sleep until the next retry, probe, deadline or session warning,
        // in real time; with none, until woken.
        let now = self.now();
        self.next_wake_up_at()
            .map(|t| now.until(t).clamp(MIN, LONGEST))
    }
}

/// How often a round scans again for payments that became due while it
/// runs.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// A round's due payments, most urgent first, and when they were found.
pub(crate) struct DueQueue {
    ids: VecDeque<PaymentId>,
    scanned_at: Timestamp,
}

impl DueQueue {
    /// The payments `due` (most urgent first), found at `now`.
    fn new(due: Vec<PaymentId>, now: Timestamp) -> Self {
        DueQueue {
            ids: due.into(),
            scanned_at: now,
        }
    }

    /// Replaces the queue with `due` (a scan at `now`), leaving out the
    /// payments the round already tried.
    fn rescan(&mut self, due: Vec<PaymentId>, skip: &BTreeSet<PaymentId>, now: Timestamp) {
        self.ids = due.into_iter().filter(|id| !skip.contains(id)).collect();
        self.scanned_at = now;
    }
}

/// Wakes the forwarding driver at a set moment, from a thread of its own
/// that waits on a condition variable: the CPU wakes once, when it is due.
/// A long tokio sleep also wakes the runtime's worker before it is due,
/// when the timer wheel moves the entry to a finer level (up to about 4 s
/// early): a second wake-up for every probe of an idle engine offline.
/// The thread ends when the driver does (the handle is dropped).
struct WakeTimer {
    shared: Arc<TimerShared>,
}

struct TimerShared {
    due: std::sync::Mutex<TimerState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct TimerState {
    due: Option<std::time::Instant>,
    stopped: bool,
}

impl WakeTimer {
    fn start(wake: Arc<tokio::sync::Notify>) -> std::io::Result<Self> {
        let shared = Arc::new(TimerShared {
            due: std::sync::Mutex::new(TimerState::default()),
            changed: std::sync::Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pos-core-timer".into())
            .spawn(move || theirs.run(&wake))?;
        Ok(WakeTimer { shared })
    }

    /// Notifies the driver once `after` has passed; `None` cancels. Replaces
    /// what was set before.
    fn set(&self, after: Option<Duration>) {
        let due = after.and_then(|a| std::time::Instant::now().checked_add(a));
        self.shared.lock().due = due;
        self.shared.changed.notify_one();
    }
}

impl Drop for WakeTimer {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_one();
    }
}

impl TimerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, wake: &tokio::sync::Notify) {
        let mut state = self.lock();
        while !state.stopped {
            state = match state.due {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(due) => {
                    let now = std::time::Instant::now();
                    if now >= due {
                        state.due = None;
                        wake.notify_one();
                        continue;
                    }
                    self.changed
                        .wait_timeout(state, due - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timer_wakes_the_driver_at_the_latest_time_set_and_ends_with_its_handle() {
        let wake = Arc::new(tokio::sync::Notify::new());
        let timer = WakeTimer::start(Arc::clone(&wake)).unwrap();
        // An hour away, then replaced by a moment from now: the later
        // setting is the one that fires.
        timer.set(Some(Duration::from_secs(3600)));
        timer.set(Some(Duration::from_millis(5)));
        tokio::time::timeout(Duration::from_secs(60), wake.notified())
            .await
            .expect("the timer did not fire");
        // A moment from now, then replaced by an hour away: the hour is what
        // the thread waits for (whether or not the moment passed between).
        timer.set(Some(Duration::from_millis(5)));
        timer.set(Some(Duration::from_secs(3600)));
        let due = timer.shared.lock().due.expect("a time is set");
        assert!(
            due > std::time::Instant::now() + Duration::from_secs(1800),
            "an earlier time that was replaced is still set"
        );
        // Dropped: the thread lets go of what it shares and ends.
        let shared = Arc::downgrade(&timer.shared);
        drop(timer);
        let gone = tokio::time::timeout(Duration::from_secs(60), async {
            while shared.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the timer thread outlived its handle");
    }
}
