//! A processor in the process that approves every request at once: for
//! suites and benches that need payments settled, not a processor's
//! behaviour (the simulator, `sim`, plays that).

use std::sync::atomic::{AtomicU64, Ordering};

use pos_core::gateway::{
    AuthorizeRequest, ForwardRequest, Gateway, GatewayDecision, GatewayError, PaymentLookup,
    ReceiptDelivery, ServiceStatus, StatusQuery,
};

/// Approves every forward and authorization at once; counts the forwards.
#[derive(Debug, Default)]
pub struct Approving {
    forwards: AtomicU64,
}

impl Approving {
    /// How many forwards it answered.
    pub fn forwards(&self) -> u64 {
        self.forwards.load(Ordering::Relaxed)
    }
}

impl Gateway for Approving {
    fn authorize(&self, _: &AuthorizeRequest) -> Result<GatewayDecision, GatewayError> {
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn forward(&self, _: &ForwardRequest) -> Result<GatewayDecision, GatewayError> {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        Ok(GatewayDecision::Approved {
            processor_ref: "ref".into(),
        })
    }

    fn status(&self) -> Result<ServiceStatus, GatewayError> {
        Ok(ServiceStatus::Available)
    }

    fn payment_status(&self, _: &StatusQuery) -> Result<PaymentLookup, GatewayError> {
        Ok(PaymentLookup::NotFound)
    }

    fn deliver_receipt(&self, _: &ReceiptDelivery) -> Result<(), GatewayError> {
        Ok(())
    }
}
