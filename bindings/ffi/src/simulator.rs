//! The processor simulator (`pos-sim`) for apps' own tests: the gateway
//! protocol on loopback, its test cards, its sealing key, its faults and
//! outage switch, and its ledger. Built with the `simulator` feature only:
//! the shipping library has none of it.

use std::fmt;
use std::sync::Arc;

use pos_core::account::MerchantAccount as CoreAccount;
use pos_core::gateway as gw;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_sim::{ChargeOutcome, FaultMode, SimConfig, Simulator};

use crate::engine::PosEngine;
use crate::error::PosError;
use crate::money::Money;
use crate::types::CardNetwork;

/// A card the simulator knows: present it on a `SimulatedReader`, forward
/// the payment, and the simulator decides `outcome` ("approve", or the
/// decline code, e.g. "insufficient_funds").
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SimulatedTestCard {
    /// The test card number (not a real card).
    pub pan: String,
    /// Its expiry date, MMYY.
    pub expiry: String,
    /// Its network.
    pub network: CardNetwork,
    /// "approve", or the decline code it gets.
    pub outcome: String,
    /// What it tests, e.g. "Visa, approves".
    pub description: String,
}

/// One payment id in the simulator's ledger.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SimulatedCharge {
    /// The device that sent it.
    pub device_id: String,
    /// The payment id.
    pub payment_id: String,
    /// The amount charged.
    pub amount: Money,
    /// An online authorization (else a forwarded offline payment).
    pub online: bool,
    /// "approved", or the decline code.
    pub outcome: String,
    /// Requests that reached the ledger for this id, repeats included.
    pub requests: u64,
}

/// The simulator's test cards.
#[pos_ffi_macros::export]
pub fn simulator_test_cards() -> Vec<SimulatedTestCard> {
    pos_sim::test_cards()
        .iter()
        .map(|c| SimulatedTestCard {
            pan: c.pan.to_owned(),
            expiry: c.expiry.to_owned(),
            network: c.network.into(),
            outcome: match &c.outcome {
                pos_sim::CardOutcome::Approve => "approve".to_owned(),
                pos_sim::CardOutcome::Decline(r) => gw::wire::decline_code(r).to_owned(),
            },
            description: c.description.to_owned(),
        })
        .collect()
}

/// A payment processor on loopback that speaks the gateway protocol
/// (`docs/gateway-openapi.yaml`), charges each payment id at most once,
/// and checks card data the way a real processor does.
#[derive(uniffi::Object)]
pub struct SimulatedProcessor {
    sim: Arc<Simulator>,
}

impl fmt::Debug for SimulatedProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedProcessor")
            .field("base_url", &self.sim.base_url())
            .finish()
    }
}

/// The simulator's credentials: its token, or an account's.
struct SimTokens(Arc<Simulator>);

impl fmt::Debug for SimTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimTokens(<redacted>)")
    }
}

impl gw::TokenProvider for SimTokens {
    fn token(&self) -> Result<String, gw::GatewayError> {
        Ok(self.0.token())
    }

    fn token_for(&self, account: Option<&CoreAccount>) -> Result<String, gw::GatewayError> {
        Ok(match account {
            Some(a) => self.0.token_for(a),
            None => self.0.token(),
        })
    }
}

#[pos_ffi_macros::export]
impl SimulatedProcessor {
    /// Starts the simulator on a free loopback port; `seed` fixes its
    /// processor key and its fault draws.
    #[uniffi::constructor]
    pub fn start(seed: u64) -> Result<Arc<Self>, PosError> {
        let sim = Simulator::start(SimConfig {
            seed,
            ..SimConfig::default()
        })
        .map_err(|e| PosError::Internal {
            reason: format!("the processor simulator did not start: {e}"),
        })?;
        Ok(Arc::new(SimulatedProcessor { sim: Arc::new(sim) }))
    }

    /// Its address, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// The processor's X25519 public key, which readers seal card data to
    /// (`SimulatedReader`'s `processorKey`).
    pub fn processor_key(&self) -> Vec<u8> {
        self.sim.processor_key().0.to_vec()
    }

    /// Makes `engine` forward to this simulator through the built-in HTTP
    /// gateway, with the simulator's credentials (an account's own for a
    /// payment taken under a merchant account).
    pub fn attach(&self, engine: Arc<PosEngine>) -> Result<(), PosError> {
        let mut config = HttpGatewayConfig::new(self.sim.base_url());
        config.allow_plain_http = true;
        let gateway = HttpGateway::new(config, Arc::new(SimTokens(Arc::clone(&self.sim))))
            .map_err(|e| PosError::InvalidConfig {
                reason: e.to_string(),
            })?;
        engine.inner.set_gateway(Arc::new(gateway))?;
        Ok(())
    }

    /// The account-less bearer token, for an app's own gateway set-up.
    pub fn token(&self) -> String {
        self.sim.token()
    }

    /// While on, every request fails as an unreachable service (the status
    /// probe included).
    pub fn set_outage(&self, on: bool) {
        self.sim.set_outage(on);
    }

    /// Injects faults from now on: `mode` is one of "latency",
    /// "drop-after-commit", "5xx", "conflict", "reset", "timeout",
    /// "intermittent", "slow", "mix"; `rate_per_mille` overrides the mode's
    /// default rate. Draws are seeded: the same seed fails the same requests.
    pub fn set_fault(&self, mode: String, rate_per_mille: Option<u32>) -> Result<(), PosError> {
        let mode: FaultMode = mode.parse().map_err(|_| PosError::InvalidInput {
            reason: "unknown fault mode".into(),
        })?;
        self.sim.set_faults(mode.plan(rate_per_mille));
        Ok(())
    }

    /// No more faults.
    pub fn clear_faults(&self) {
        self.sim.set_faults(pos_sim::FaultPlan::none());
    }

    /// Every payment id charged or declined, ordered by payment id.
    pub fn ledger(&self) -> Vec<SimulatedCharge> {
        self.sim
            .ledger()
            .into_iter()
            .map(|c| SimulatedCharge {
                amount: Money {
                    minor_units: c.amount,
                    currency: c.currency.clone(),
                },
                device_id: c.device_id,
                payment_id: c.payment_id,
                online: c.online,
                outcome: match c.outcome {
                    ChargeOutcome::Approved { .. } => "approved".to_owned(),
                    ChargeOutcome::Declined { code } => code,
                },
                requests: c.requests,
            })
            .collect()
    }
}
