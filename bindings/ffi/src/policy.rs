//! The offline policy as a plain record, the seed presets, and conversions.
//! Durations are milliseconds; amounts are minor units of the limit's currency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pos_core::policy as pol;
use pos_core::session as ses;

use crate::error::PosError;
use crate::types::{currency, invalid, mirror_enum, ms, CardNetwork, EntryMode, TenderKind};

mirror_enum!(
    /// The kind of device (R7, R8).
    DeviceProfile = ses::DeviceProfile {
        /// A phone or tablet with an attached reader: 1 h window, deadline
        /// 24 h after the connection loss.
        PhoneReader,
        /// A dedicated terminal: 24 h window, deadline 24 h after the first
        /// offline payment.
        DedicatedTerminal,
    }
);
mirror_enum!(
    /// From when the forwarding deadline counts.
    DeadlineAnchor = ses::DeadlineAnchor {
        /// From the moment the connection was lost (the session start).
        ConnectionLoss,
        /// From the session's first offline payment.
        FirstOfflinePayment,
    }
);

/// The rules of a preset from the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PolicyPreset {
    /// Phone-attached reader (S0): 1 h window, deadline 24 h after connection loss.
    SquareReader,
    /// Dedicated terminal (S0): 24 h window, deadline 24 h after the first offline payment.
    SquareTerminal,
    /// Commerce platform POS (S3): per-order and device limits, staff permission.
    ShopifyPos,
}

/// Limits for one currency (B3). `None` means no such limit.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CurrencyLimits {
    /// The ISO 4217 code these limits are in.
    pub currency: String,
    /// Largest single offline card payment, tip included.
    pub per_payment: Option<i64>,
    /// Largest total of offline card payments on one order (R5).
    pub per_order: i64,
    /// Largest total of unforwarded offline card payments on the device (R6).
    pub device_amount: Option<i64>,
    /// Largest number of unforwarded offline card payments on the device.
    pub device_count: Option<u32>,
    /// Largest total one card may pay offline in one offline session.
    pub per_card: Option<i64>,
    /// Warn (`LimitNear`) when the device total or count reaches this
    /// percentage of its limit: 1-100.
    pub warn_percent: u8,
}

/// A card network refused offline in one merchant country (R10).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RegionalNetworkRule {
    /// The network refused.
    pub network: CardNetwork,
    /// ISO 3166-1 alpha-2 code of the merchant's country, e.g. "CA".
    pub merchant_country: String,
}

/// Every knob of the offline policy (SPEC R4–R14, B3, B6).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OfflinePolicy {
    /// Off by default (R4).
    pub enabled: bool,
    /// Limits per currency (R5, R6, B3); a currency without limits is not
    /// taken offline.
    pub limits: Vec<CurrencyLimits>,
    /// The kind of device (R7, R8), for the UI; the session fields decide.
    pub device_profile: DeviceProfile,
    /// How long after the offline session starts payments may be taken (R7).
    pub acceptance_window_ms: u64,
    /// How long after `deadlineAnchor` payments may still be forwarded (R8).
    pub forwarding_deadline_ms: u64,
    /// From when `forwardingDeadlineMs` counts.
    pub deadline_anchor: DeadlineAnchor,
    /// Time left before the deadline at which to warn (B4).
    pub warnings_before_deadline_ms: Vec<u64>,
    /// With less than this left before the deadline, new payments require
    /// online (B4).
    pub require_online_margin_ms: u64,
    /// How a card may be read offline (R9, R10); not empty when enabled.
    pub allowed_entry_modes: Vec<EntryMode>,
    /// Tenders refused offline (R9, R10).
    pub refused_tenders: Vec<TenderKind>,
    /// Tips may be added to an offline payment (R10).
    pub tips_allowed: bool,
    /// ISO 3166-1 alpha-2 code of the merchant's country; null makes every
    /// regional rule apply.
    pub merchant_country: Option<String>,
    /// Networks refused offline in a given merchant country (R10).
    pub refused_regional_networks: Vec<RegionalNetworkRule>,
    /// `None`: every network allowed.
    pub allowed_networks: Option<Vec<CardNetwork>>,
    /// Reader models that may take offline payments (R11).
    pub offline_readers: Vec<String>,
    /// Tap to Pay on the phone may be taken offline (R10).
    pub tap_to_pay_on_phone: bool,
    /// The role permission is required (R12).
    pub staff_permission_required: bool,
    /// Guarded actions may be overridden (R13).
    pub pending_override_allowed: bool,
    /// Take offline payments while the device has no internet (B6).
    pub offline_on_network_outage: bool,
    /// Take offline payments while the payment service is down (B6).
    pub offline_on_service_disruption: bool,
    /// Let the app force a payment offline (`ForceOffline`).
    pub offline_when_forced: bool,
    /// The app may search the customer directory offline (R10).
    pub customer_search_offline: bool,
    /// The app may sell gift cards offline (R10).
    pub gift_card_sales_offline: bool,
    /// The device may change network while offline (R14).
    pub network_change_offline: bool,
    /// The reader authorities whose certificates this device trusts (hex of
    /// their Ed25519 keys): a profile reader pairs only with one of them.
    #[uniffi(default)]
    pub reader_authorities: Vec<String>,
}

fn opt_amount(x: Option<pos_core::money::Money>) -> Option<i64> {
    x.map(|m| m.minor_units())
}

impl From<pol::Policy> for OfflinePolicy {
    fn from(p: pol::Policy) -> Self {
        OfflinePolicy {
            enabled: p.enabled,
            limits: p
                .limits
                .iter()
                .map(|(c, l)| CurrencyLimits {
                    currency: c.code().to_owned(),
                    per_payment: opt_amount(l.per_payment),
                    per_order: l.per_order.minor_units(),
                    device_amount: opt_amount(l.device_amount),
                    device_count: l.device_count,
                    per_card: opt_amount(l.per_card),
                    warn_percent: l.warn_percent,
                })
                .collect(),
            device_profile: p.device_profile.into(),
            acceptance_window_ms: ms(p.session.acceptance_window),
            forwarding_deadline_ms: ms(p.session.forwarding_deadline),
            deadline_anchor: p.session.deadline_anchor.into(),
            warnings_before_deadline_ms: p
                .session
                .warnings_before_deadline
                .iter()
                .map(|d| ms(*d))
                .collect(),
            require_online_margin_ms: ms(p.session.require_online_margin),
            allowed_entry_modes: p.allowed_entry_modes.iter().map(|m| (*m).into()).collect(),
            refused_tenders: p.refused_tenders.iter().map(|t| (*t).into()).collect(),
            tips_allowed: p.tips_allowed,
            merchant_country: p.merchant_country.clone(),
            refused_regional_networks: p
                .refused_regional_networks
                .iter()
                .map(|r| RegionalNetworkRule {
                    network: r.network.into(),
                    merchant_country: r.merchant_country.clone(),
                })
                .collect(),
            allowed_networks: p
                .allowed_networks
                .as_ref()
                .map(|s| s.iter().map(|n| (*n).into()).collect()),
            offline_readers: p.offline_readers.iter().cloned().collect(),
            tap_to_pay_on_phone: p.tap_to_pay_on_phone,
            staff_permission_required: p.staff_permission_required,
            pending_override_allowed: p.pending_override_allowed,
            offline_on_network_outage: p.outage.offline_on_network_outage,
            offline_on_service_disruption: p.outage.offline_on_service_disruption,
            offline_when_forced: p.outage.offline_when_forced,
            reader_authorities: p.reader_authorities.iter().cloned().collect(),
            customer_search_offline: p.features.customer_search,
            gift_card_sales_offline: p.features.gift_card_sales,
            network_change_offline: p.features.network_change,
        }
    }
}

impl TryFrom<OfflinePolicy> for pol::Policy {
    type Error = PosError;
    fn try_from(p: OfflinePolicy) -> Result<Self, PosError> {
        let mut limits = BTreeMap::new();
        for l in p.limits {
            let c = currency(&l.currency)?;
            let amount = |v: i64| pos_core::money::Money::new(v, c);
            let limit = pol::CurrencyLimits {
                per_payment: l.per_payment.map(amount),
                per_order: amount(l.per_order),
                device_amount: l.device_amount.map(amount),
                device_count: l.device_count,
                per_card: l.per_card.map(amount),
                warn_percent: l.warn_percent,
            };
            if limits.insert(c, limit).is_some() {
                return Err(invalid(format!("limits for {c} are given twice")));
            }
        }
        let d = Duration::from_millis;
        Ok(pol::Policy {
            enabled: p.enabled,
            limits,
            device_profile: p.device_profile.into(),
            session: ses::SessionRules {
                acceptance_window: d(p.acceptance_window_ms),
                forwarding_deadline: d(p.forwarding_deadline_ms),
                deadline_anchor: p.deadline_anchor.into(),
                warnings_before_deadline: p
                    .warnings_before_deadline_ms
                    .iter()
                    .map(|x| d(*x))
                    .collect(),
                require_online_margin: d(p.require_online_margin_ms),
            },
            allowed_entry_modes: p.allowed_entry_modes.into_iter().map(Into::into).collect(),
            refused_tenders: p.refused_tenders.into_iter().map(Into::into).collect(),
            tips_allowed: p.tips_allowed,
            merchant_country: p.merchant_country,
            refused_regional_networks: p
                .refused_regional_networks
                .into_iter()
                .map(|r| pol::RegionalNetworkRule {
                    network: r.network.into(),
                    merchant_country: r.merchant_country,
                })
                .collect(),
            allowed_networks: p
                .allowed_networks
                .map(|v| v.into_iter().map(Into::into).collect::<BTreeSet<_>>()),
            offline_readers: p.offline_readers.into_iter().collect(),
            tap_to_pay_on_phone: p.tap_to_pay_on_phone,
            staff_permission_required: p.staff_permission_required,
            pending_override_allowed: p.pending_override_allowed,
            features: pol::OfflineFeatures {
                customer_search: p.customer_search_offline,
                gift_card_sales: p.gift_card_sales_offline,
                network_change: p.network_change_offline,
            },
            outage: pol::OutagePolicy {
                offline_on_network_outage: p.offline_on_network_outage,
                offline_on_service_disruption: p.offline_on_service_disruption,
                offline_when_forced: p.offline_when_forced,
            },
            reader_authorities: p.reader_authorities.into_iter().collect(),
        })
    }
}

/// The rules of a seed preset for `currency` (disabled until the merchant
/// turns offline payments on, R4). The seeds' limits are in US dollars:
/// for `"USD"` the preset carries them; for any other currency `limits` is
/// empty (100 dollars is not 100 yen or 100 euros), and `setPolicy` refuses
/// the policy enabled (`InvalidPolicy`) until the app adds a
/// `CurrencyLimits` for its currency.
#[uniffi::export]
pub fn policy_preset(
    preset: PolicyPreset,
    currency_code: String,
) -> Result<OfflinePolicy, PosError> {
    let c = currency(&currency_code)?;
    let p = match preset {
        PolicyPreset::SquareReader => pol::Policy::square_reader(c),
        PolicyPreset::SquareTerminal => pol::Policy::square_terminal(c),
        PolicyPreset::ShopifyPos => pol::Policy::shopify_pos(c),
    };
    Ok(p.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_outside_the_seed_currency_has_no_limits() {
        for preset in [
            PolicyPreset::SquareReader,
            PolicyPreset::SquareTerminal,
            PolicyPreset::ShopifyPos,
        ] {
            for code in ["JPY", "EUR"] {
                let p = policy_preset(preset, code.into()).unwrap();
                assert!(p.limits.is_empty(), "{preset:?} {code}");
            }
            let usd = policy_preset(preset, "USD".into()).unwrap();
            assert_eq!(usd.limits.len(), 1);
            assert_eq!(usd.limits[0].per_order, 10_000);
        }
    }
}
