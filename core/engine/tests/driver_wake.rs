//! Every change that gives the forwarding driver work wakes it. Tokio's
//! clock is paused, so the bounded waits below pass in virtual time: a
//! driver that waits for a notification nobody sends never wakes, and they
//! run out. The driver's own timer is a thread on the real clock
//! (`WakeTimer`), which the paused clock does not move: these tests see
//! only what notifications do.

#![allow(clippy::unwrap_used)]

use pos_test_support as support;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ReceiptDelivery, ServiceStatus, StatusQuery,
};
use pos_core::lifecycle::ForwardErrorKind;

/// A processor that counts probes and answers them, or is unreachable.
#[derive(Debug, Default)]
struct Probed {
    probes: AtomicUsize,
    unreachable: AtomicBool,
}

impl Probed {
    fn answer(&self) -> Result<(), GatewayError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(GatewayError::new(
                ForwardErrorKind::NotSent,
                "test: no route",
            ));
        }
        Ok(())
    }
}

impl Gateway for Probed {
    fn authorize(&self, _: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        self.answer()?;
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn forward(&self, _: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        self.answer()?;
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.answer()?;
        Ok(ServiceStatus::Available)
    }

    fn payment_status(&self, _: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        self.answer()?;
        Ok(PaymentLookup::NotFound)
    }

    fn deliver_receipt(&self, _: &ReceiptDelivery) -> Result<(), GatewayError> {
        self.answer()
    }
}

/// Lets the runtime run for `virtual_time` of tokio's paused clock, or
/// until `done`; whether `done` held.
async fn within(virtual_time: Duration, done: impl Fn() -> bool) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while waited < virtual_time {
        if done() {
            return true;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    done()
}

#[tokio::test(start_paused = true)]
async fn online_with_nothing_scheduled_a_lost_connection_still_wakes_the_driver_to_probe() {
    let gateway = Arc::new(Probed::default());
    let rig = support::Rig::builder()
        .configure(|c| {
            c.forwarding = ForwardingConfig {
                automatic: true,
                jitter_seed: Some(7),
                ..ForwardingConfig::default()
            };
        })
        .gateway(gateway.clone())
        .offline(false)
        .open()
        .await;
    // Online (pairing the test reader brought it there), nothing pending:
    // nothing is scheduled.
    assert!(rig.engine.status().unwrap().connectivity.is_online());
    assert_eq!(rig.engine.next_wake_up().unwrap(), None);
    // An hour of tokio time passes: online, the driver never probes.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(gateway.probes.load(Ordering::SeqCst), 0);
    // The network goes down (no nudge): the driver must start probing; the
    // engine schedules its first probe 2 s (± 10 %) after the outage.
    gateway.unreachable.store(true, Ordering::SeqCst);
    rig.engine.report_network(false).await.unwrap();
    assert!(
        within(Duration::from_secs(10), || gateway
            .probes
            .load(Ordering::SeqCst)
            > 0)
        .await,
        "the driver slept through the outage: no probe"
    );
}

#[tokio::test(start_paused = true)]
async fn with_forwarding_paused_resuming_wakes_the_driver() {
    let gateway = Arc::new(Probed::default());
    gateway.unreachable.store(true, Ordering::SeqCst);
    let rig = support::Rig::builder()
        .configure(|c| {
            c.forwarding = ForwardingConfig {
                automatic: true,
                jitter_seed: Some(7),
                ..ForwardingConfig::default()
            };
        })
        .gateway(gateway.clone())
        .open()
        .await;
    rig.engine.pause_forwarding().unwrap();
    // Paused, the driver probes no more once the pass that may have started
    // before the pause is over: a day of tokio time, no probe.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = gateway.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert_eq!(gateway.probes.load(Ordering::SeqCst), before);
    // Offline and resumed: it probes at once.
    rig.engine.resume_forwarding().unwrap();
    assert!(
        within(Duration::from_secs(1), || gateway
            .probes
            .load(Ordering::SeqCst)
            > before)
        .await,
        "resuming did not wake the driver"
    );
}
