//! The offline-payment policy: every merchant setting that decides whether a
//! card payment may be taken offline (SPEC R4–R14, B3, B6), the presets that
//! reproduce the two source documents, and [`Policy::validate`].
//!
//! This file owns data only: the knobs, their presets and their consistency
//! rules. The decision itself ("may this payment be taken offline now?") is in
//! [`crate::rules`]. Everything here is serde-serializable because the store
//! persists the policy.
//!
//! # Presets and their sources
//!
//! * [`Policy::square_reader`] and [`Policy::square_terminal`] reproduce S0,
//!   the card processor's French merchant guide (Square): a phone-attached
//!   reader (Square Reader, Square Stand) may work offline for up to one hour
//!   and its payments expire 24 h after the connection was lost; a dedicated
//!   terminal (Square Register, Square Terminal) may work offline for up to
//!   24 h and its payments expire 24 h after the first offline payment; no
//!   contactless, no manual card entry, no gift cards, no Clearpay (BNPL);
//!   both a network outage and a service disruption allow offline payments.
//! * [`Policy::shopify_pos`] reproduces S3, the commerce platform's Japanese
//!   help page (Shopify POS): a per-order "transaction limit" (its example:
//!   100 dollars paid by two or three cards), a device limit (its example:
//!   5,000 dollars), a staff permission, only the listed reader models, and no
//!   swipe, manual entry, tips, phone tap-to-pay, gift cards, customer search,
//!   Interac in Canada or eftpos in Australia.
//!
//! Each preset follows its own seed: a restriction one seed states and the
//! other does not is not copied across (Square presets allow tips, for
//! example). Rules the SPEC states by device profile (R7 windows, R8
//! deadlines, R14 network changes) apply to every preset of that profile.
//!
//! **Presets are disabled** (`enabled == false`): they describe the rules, and
//! R4 says offline payments stay off until the merchant turns them on. Call
//! [`Policy::with_enabled`] (or set the field) once the merchant opts in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms;
use crate::money::{Currency, Money};
use crate::session::{DeviceProfile, SessionRules};

/// How a card was read (SPEC R9, R10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntryMode {
    /// EMV chip inserted ("insérer", 挿入).
    Chip,
    /// Contactless tap (card or wallet on a reader).
    Contactless,
    /// Magnetic stripe swipe.
    Swipe,
    /// Card number keyed in by hand (MOTO).
    Manual,
}

impl fmt::Display for EntryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryMode::Chip => "chip",
            EntryMode::Contactless => "contactless",
            EntryMode::Swipe => "swipe",
            EntryMode::Manual => "manual entry",
        })
    }
}

/// What kind of tender pays (part of) an order (SPEC R9, R10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TenderKind {
    /// A credit or debit card: the only kind an offline payment is meant for.
    Card,
    /// Cash: needs no processor, is never an offline card payment and never
    /// counts towards the offline limits (R5: "the rest can be paid in cash").
    Cash,
    /// A gift card (redeemed as a tender).
    GiftCard,
    /// Buy now, pay later (Clearpay/Afterpay, instalments).
    BuyNowPayLater,
}

impl fmt::Display for TenderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TenderKind::Card => "card",
            TenderKind::Cash => "cash",
            TenderKind::GiftCard => "gift card",
            TenderKind::BuyNowPayLater => "buy now, pay later",
        })
    }
}

/// The card network (brand) of a card, as the reader reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Network {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    UnionPay,
    /// Canadian debit network.
    Interac,
    /// Australian debit network.
    Eftpos,
    /// Any network not listed above.
    Other,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Visa => "Visa",
            Network::Mastercard => "Mastercard",
            Network::Amex => "American Express",
            Network::Discover => "Discover",
            Network::Jcb => "JCB",
            Network::UnionPay => "UnionPay",
            Network::Interac => "Interac",
            Network::Eftpos => "eftpos",
            Network::Other => "other network",
        })
    }
}

/// Why the engine is (or wants to be) offline: the input of the per-cause
/// policy (SPEC B6). The engine maps its connectivity state onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OfflineReason {
    /// The device has no internet.
    NetworkOutage,
    /// The internet works, the payment service does not.
    ServiceDisruption,
    /// The app asked for this payment to be taken offline although the
    /// service may be reachable (SPEC B1 "force offline").
    ForcedOffline,
}

impl fmt::Display for OfflineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OfflineReason::NetworkOutage => "network outage",
            OfflineReason::ServiceDisruption => "service disruption",
            OfflineReason::ForcedOffline => "forced offline",
        })
    }
}

/// For which causes offline payments may be taken at all (SPEC B6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutagePolicy {
    /// Take offline payments while the device has no internet.
    pub offline_on_network_outage: bool,
    /// Take offline payments while the payment service is down.
    pub offline_on_service_disruption: bool,
    /// Let the app force a payment offline while the service may be up.
    pub offline_when_forced: bool,
}

impl OutagePolicy {
    /// Whether `reason` permits offline payments.
    pub fn allows(&self, reason: OfflineReason) -> bool {
        match reason {
            OfflineReason::NetworkOutage => self.offline_on_network_outage,
            OfflineReason::ServiceDisruption => self.offline_on_service_disruption,
            OfflineReason::ForcedOffline => self.offline_when_forced,
        }
    }
}

/// The limits of one currency, in its minor units (SPEC R5, R6, B3).
///
/// A payment is accepted when every total *after* it is `<=` its limit
/// (reaching a limit exactly is allowed, exceeding it is refused). `None`
/// means "no such limit"; the per-order limit is always set, so every single
/// payment is bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyLimits {
    /// Largest single offline card payment (tip included).
    pub per_payment: Option<Money>,
    /// Largest total of offline card payments on one order (R5): several
    /// cards may split an order as long as their sum stays within it.
    pub per_order: Money,
    /// Largest total of unforwarded offline card payments on the device (R6).
    pub device_amount: Option<Money>,
    /// Largest number of unforwarded offline card payments on the device (B3).
    pub device_count: Option<u32>,
    /// Largest total one card may pay offline within one offline session (B3).
    pub per_card: Option<Money>,
    /// Warn the cashier when the device total (or count) reaches this
    /// percentage of its limit: 1..=100.
    pub warn_percent: u8,
}

impl CurrencyLimits {
    /// Limits with only a per-order limit, and the default 80 % warning.
    pub fn per_order(per_order: Money) -> Self {
        CurrencyLimits {
            per_payment: None,
            per_order,
            device_amount: None,
            device_count: None,
            per_card: None,
            warn_percent: DEFAULT_WARN_PERCENT,
        }
    }

    /// Sets the per-payment limit.
    pub fn with_per_payment(mut self, limit: Money) -> Self {
        self.per_payment = Some(limit);
        self
    }

    /// Sets the device amount limit.
    pub fn with_device_amount(mut self, limit: Money) -> Self {
        self.device_amount = Some(limit);
        self
    }

    /// Sets the device count limit.
    pub fn with_device_count(mut self, limit: u32) -> Self {
        self.device_count = Some(limit);
        self
    }

    /// Sets the per-card (per offline session) limit.
    pub fn with_per_card(mut self, limit: Money) -> Self {
        self.per_card = Some(limit);
        self
    }

    /// Sets the warning threshold in percent.
    pub fn with_warn_percent(mut self, percent: u8) -> Self {
        self.warn_percent = percent;
        self
    }

    fn validate(&self, currency: Currency) -> Result<(), PolicyError> {
        let amounts = [
            (LimitField::PerPayment, self.per_payment),
            (LimitField::PerOrder, Some(self.per_order)),
            (LimitField::DeviceAmount, self.device_amount),
            (LimitField::PerCard, self.per_card),
        ];
        for (field, value) in amounts {
            let Some(value) = value else { continue };
            if value.currency() != currency {
                return Err(PolicyError::LimitCurrencyMismatch {
                    currency,
                    field,
                    found: value.currency(),
                });
            }
            if value.minor_units() <= 0 {
                return Err(PolicyError::LimitNotPositive {
                    currency,
                    field,
                    value,
                });
            }
        }
        if self.device_count == Some(0) {
            return Err(PolicyError::DeviceCountZero { currency });
        }
        if let Some(per_payment) = self.per_payment {
            if per_payment.minor_units() > self.per_order.minor_units() {
                return Err(PolicyError::PerPaymentAbovePerOrder {
                    per_payment,
                    per_order: self.per_order,
                });
            }
            if let Some(per_card) = self.per_card {
                if per_payment.minor_units() > per_card.minor_units() {
                    return Err(PolicyError::PerPaymentAbovePerCard {
                        per_payment,
                        per_card,
                    });
                }
            }
        }
        if let Some(device) = self.device_amount {
            if self.per_order.minor_units() > device.minor_units() {
                return Err(PolicyError::PerOrderAboveDevice {
                    per_order: self.per_order,
                    device,
                });
            }
            if let Some(per_card) = self.per_card {
                if per_card.minor_units() > device.minor_units() {
                    return Err(PolicyError::PerCardAboveDevice { per_card, device });
                }
            }
        }
        if !(1..=100).contains(&self.warn_percent) {
            return Err(PolicyError::WarnPercentOutOfRange {
                currency,
                percent: self.warn_percent,
            });
        }
        Ok(())
    }
}

/// Longest reader model name a policy may hold, in bytes (UTF-8).
pub const MAX_READER_MODEL_LEN: usize = 128;

/// Most reader models a policy may list.
pub const MAX_READER_MODELS: usize = 256;

/// Most deadline warnings a policy's session rules may hold.
pub const MAX_DEADLINE_WARNINGS: usize = 16;

/// The warning threshold of the presets: 80 % of the device limit. Not from
/// the seeds (neither states one); a library default the merchant may edit.
pub const DEFAULT_WARN_PERCENT: u8 = 80;

/// A card network refused offline for merchants of one country (SPEC R10:
/// Interac in Canada, eftpos in Australia).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionalNetworkRule {
    pub network: Network,
    /// ISO 3166-1 alpha-2 code of the merchant's country, e.g. `"CA"`.
    pub merchant_country: String,
}

impl RegionalNetworkRule {
    /// `network` refused offline for merchants in `merchant_country`.
    pub fn new(network: Network, merchant_country: &str) -> Self {
        RegionalNetworkRule {
            network,
            merchant_country: merchant_country.to_owned(),
        }
    }
}

/// What the app may do offline besides taking payments. The library does not
/// run these features; it tells the app whether to offer them (SPEC R10, R14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfflineFeatures {
    /// Search the customer directory (R10: not offline in S3).
    pub customer_search: bool,
    /// Sell (activate) gift cards (R10: "neither redeem nor sell" in S3).
    pub gift_card_sales: bool,
    /// Switch the device to another network while offline (R14: a terminal
    /// must stay on its network, or it loses the local link it takes
    /// payments over).
    pub network_change: bool,
}

/// Most reader authorities a policy lists.
pub const MAX_READER_AUTHORITIES: usize = 16;

/// The offline-payment policy of one device: every knob of SPEC R4–R14, B3, B6.
///
/// Plain public fields, so the merchant may edit any of them at any time
/// (R4, R6); call [`Policy::validate`] before storing an edited policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Offline payments are allowed at all (R4). Off by default. Turning it
    /// off refuses new offline payments; it never discards stored ones.
    pub enabled: bool,
    /// Limits per currency (R5, R6, B3). A currency absent here cannot be
    /// taken offline.
    pub limits: BTreeMap<Currency, CurrencyLimits>,
    /// The kind of device (R7, R8); informs the UI. `session` is authoritative.
    pub device_profile: DeviceProfile,
    /// Acceptance window, forwarding deadline and warnings (R7, R8, B4).
    pub session: SessionRules,
    /// How a card may be read offline (R9, R10). Must not be empty when enabled.
    pub allowed_entry_modes: BTreeSet<EntryMode>,
    /// Tenders refused offline (R9, R10: gift cards, buy now pay later).
    pub refused_tenders: BTreeSet<TenderKind>,
    /// Tips may be added to an offline payment (R10).
    pub tips_allowed: bool,
    /// ISO 3166-1 alpha-2 code of the merchant's country, e.g. `"CA"`.
    /// `None` (unknown) makes every [`RegionalNetworkRule`] apply, which is
    /// the safe side: those networks only exist in their own country.
    pub merchant_country: Option<String>,
    /// Networks refused offline in a given merchant country (R10).
    pub refused_regional_networks: BTreeSet<RegionalNetworkRule>,
    /// Networks accepted offline; `None` accepts every network.
    pub allowed_networks: Option<BTreeSet<Network>>,
    /// Reader models that support offline mode (R11), compared ignoring ASCII
    /// case and surrounding spaces. Data, not code: extend it as models ship.
    pub offline_readers: BTreeSet<String>,
    /// Tap to Pay on iPhone / Android (the phone as the reader) offline (R10).
    pub tap_to_pay_on_phone: bool,
    /// The staff member must hold the "accept offline credit and debit
    /// payments" permission (R12).
    pub staff_permission_required: bool,
    /// Whether a logged override may let a guarded action (log out, switch
    /// location, reset, remove device) go ahead while payments are pending (R13).
    pub pending_override_allowed: bool,
    /// What the app may offer offline besides payments (R10, R14).
    pub features: OfflineFeatures,
    /// For which outage causes offline payments are taken (B6).
    pub outage: OutagePolicy,
    /// The reader authorities (makers, or the acquirer registering readers)
    /// whose certificates this device trusts, as lowercase hex of their
    /// Ed25519 public keys (`reader_trust`). A profile reader is remembered
    /// only with a certificate one of them signed, and R11 checks the model
    /// that certificate names. Empty: no profile reader can be paired.
    #[serde(default)]
    pub reader_authorities: BTreeSet<String>,
}

/// The conservative base: offline disabled (R4), no currency, the phone-reader
/// session rules, and every restriction either seed states.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: false,
            limits: BTreeMap::new(),
            device_profile: DeviceProfile::PhoneReader,
            session: SessionRules::for_profile(DeviceProfile::PhoneReader),
            allowed_entry_modes: BTreeSet::from([EntryMode::Chip]),
            refused_tenders: BTreeSet::from([TenderKind::GiftCard, TenderKind::BuyNowPayLater]),
            tips_allowed: false,
            merchant_country: None,
            refused_regional_networks: regional_rules_s3(),
            allowed_networks: None,
            offline_readers: BTreeSet::new(),
            tap_to_pay_on_phone: false,
            staff_permission_required: true,
            pending_override_allowed: true,
            features: OfflineFeatures {
                customer_search: false,
                gift_card_sales: false,
                network_change: false,
            },
            outage: OutagePolicy {
                offline_on_network_outage: true,
                offline_on_service_disruption: false,
                offline_when_forced: false,
            },
            reader_authorities: BTreeSet::new(),
        }
    }
}

/// The per-order limit of every preset, in major units (100.00 in a
/// two-decimal currency). S3's example: "if the limit is set to 100 dollars,
/// two or three card payments can be accepted on one order as long as the
/// total does not exceed 100 dollars". S0 only says "set a transaction limit
/// that suits you, editable at any time" and gives no figure, so its presets
/// start from the same figure.
pub const PRESET_ORDER_LIMIT_MAJOR: i64 = 100;

/// S3's device-limit example, in major units: "if the device limit is set to
/// 5,000 dollars, the POS device can process payments up to 5,000 dollars".
pub const PRESET_DEVICE_LIMIT_MAJOR: i64 = 5_000;

/// The currency of the seeds' figures: the presets' limits are in US
/// dollars. A preset built for another currency has no limits at all (see
/// [`Policy::shopify_pos`]): 100 dollars is not 100 yen or 100 euros, and the
/// library does not guess an exchange rate.
pub const PRESET_CURRENCY: &str = "USD";

/// The preset `limits` for `currency`: none unless it is the seeds' own.
fn preset_limits(currency: Currency, limits: CurrencyLimits) -> BTreeMap<Currency, CurrencyLimits> {
    if currency.code() == PRESET_CURRENCY {
        BTreeMap::from([(currency, limits)])
    } else {
        BTreeMap::new()
    }
}

/// `units` whole units of `currency`, in minor units (100 USD → 10,000 cents,
/// 100 JPY → 100 yen, 100 KWD → 100,000 fils). Saturates instead of wrapping.
pub fn major_units(units: i64, currency: Currency) -> Money {
    let scale = 10i64
        .checked_pow(u32::from(currency.exponent()))
        .unwrap_or(i64::MAX);
    Money::new(units.saturating_mul(scale), currency)
}

fn regional_rules_s3() -> BTreeSet<RegionalNetworkRule> {
    BTreeSet::from([
        RegionalNetworkRule::new(Network::Interac, "CA"),
        RegionalNetworkRule::new(Network::Eftpos, "AU"),
    ])
}

fn models(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

impl Policy {
    /// S0, phone-attached reader profile (Square Reader, Square Stand).
    ///
    /// From S0: offline "up to one hour for Square Reader or Square Stand";
    /// reconnect "within 24 hours of losing the internet connection (Square
    /// Reader or Square Stand)", or the payment expires; "you cannot accept
    /// contactless payments, Square or Clearpay gift cards, nor key in card
    /// numbers"; offline payments "only concern card payments"; both an
    /// internet outage and a Square service disruption allow offline payments.
    /// Chip and swipe stay allowed (S0 refuses neither). Phone tap-to-pay is
    /// refused because it is contactless. Limits: one per-order "transaction
    /// limit" of [`PRESET_ORDER_LIMIT_MAJOR`] dollars (S0 gives no figure);
    /// no device limit (S0 states none). Disabled until the merchant enables
    /// it (R4).
    ///
    /// In a currency other than [`PRESET_CURRENCY`] the preset has no limits:
    /// set them with [`Policy::with_limits`] before enabling it
    /// ([`Policy::validate`] refuses it enabled without them,
    /// [`PolicyError::NoCurrencyConfigured`]).
    pub fn square_reader(currency: Currency) -> Self {
        Self::square(
            currency,
            DeviceProfile::PhoneReader,
            &["Square Reader", "Square Stand"],
        )
    }

    /// S0, dedicated terminal profile (Square Register, Square Terminal).
    ///
    /// As [`Policy::square_reader`], except: offline "up to 24 hours for
    /// Square Register or Square Terminal", payments expire "24 hours after
    /// your first offline payment", and (SPEC R14, stated for the terminal
    /// profile) the device may not change network while offline.
    pub fn square_terminal(currency: Currency) -> Self {
        Self::square(
            currency,
            DeviceProfile::DedicatedTerminal,
            &["Square Register", "Square Terminal"],
        )
    }

    fn square(currency: Currency, profile: DeviceProfile, readers: &[&str]) -> Self {
        Policy {
            enabled: false,
            limits: preset_limits(
                currency,
                CurrencyLimits::per_order(major_units(PRESET_ORDER_LIMIT_MAJOR, currency)),
            ),
            device_profile: profile,
            session: SessionRules::for_profile(profile),
            allowed_entry_modes: BTreeSet::from([EntryMode::Chip, EntryMode::Swipe]),
            refused_tenders: BTreeSet::from([TenderKind::GiftCard, TenderKind::BuyNowPayLater]),
            tips_allowed: true,
            merchant_country: None,
            refused_regional_networks: BTreeSet::new(),
            allowed_networks: None,
            offline_readers: models(readers),
            tap_to_pay_on_phone: false,
            staff_permission_required: false,
            pending_override_allowed: true,
            features: OfflineFeatures {
                customer_search: true,
                gift_card_sales: true,
                network_change: profile == DeviceProfile::PhoneReader,
            },
            outage: OutagePolicy {
                offline_on_network_outage: true,
                offline_on_service_disruption: true,
                offline_when_forced: false,
            },
            reader_authorities: BTreeSet::new(),
        }
    }

    /// S3, the commerce platform's POS app (Shopify POS with its readers).
    ///
    /// From S3: a per-order "transaction limit" (example 100 dollars, paid by
    /// "two or three cards" as long as the total stays within it) and a
    /// "device limit" on the total of offline card payments (example 5,000
    /// dollars), both in US dollars ([`PRESET_CURRENCY`]): in any other
    /// currency the preset has no limits, and the app sets them with
    /// [`Policy::with_limits`] before enabling it ([`Policy::validate`]
    /// refuses it enabled without them, [`PolicyError::NoCurrencyConfigured`]);
    /// the staff permission "accept credit and debit payments offline"; only
    /// "POS Go (POS Terminal reader), POS Terminal, Tap & Chip, Chipper 2X BT,
    /// Wisepad 3, Chip & Swipe reader"; the customer "taps or inserts" the
    /// card (no swipe, no manual entry/MOTO); no tips; no Tap to Pay on
    /// iPhone/Android; gift cards neither accepted nor sold; no customer
    /// search; no Interac for Canadian businesses, no eftpos for Australian
    /// ones; only "card-based purchases" with "debit and credit cards" (so no
    /// buy-now-pay-later); "reconnect within 24 hours"; a POS Terminal reader
    /// "cannot change network" offline. S3 grants offline payments when "the
    /// internet connection is temporarily down" and never for a service
    /// disruption with the internet up, so only network outages qualify.
    /// Session rules are those of the phone-reader profile (SPEC R7, R8).
    /// Disabled until the merchant enables it (R4).
    pub fn shopify_pos(currency: Currency) -> Self {
        let limits = CurrencyLimits::per_order(major_units(PRESET_ORDER_LIMIT_MAJOR, currency))
            .with_device_amount(major_units(PRESET_DEVICE_LIMIT_MAJOR, currency));
        Policy {
            enabled: false,
            limits: preset_limits(currency, limits),
            device_profile: DeviceProfile::PhoneReader,
            session: SessionRules::for_profile(DeviceProfile::PhoneReader),
            allowed_entry_modes: BTreeSet::from([EntryMode::Chip, EntryMode::Contactless]),
            refused_tenders: BTreeSet::from([TenderKind::GiftCard, TenderKind::BuyNowPayLater]),
            tips_allowed: false,
            merchant_country: None,
            refused_regional_networks: regional_rules_s3(),
            allowed_networks: None,
            offline_readers: models(&[
                "POS Go",
                "POS Terminal Reader",
                "POS Terminal",
                "Tap & Chip",
                "Chipper 2X BT",
                "Wisepad 3",
                "Chip & Swipe Reader",
            ]),
            tap_to_pay_on_phone: false,
            staff_permission_required: true,
            pending_override_allowed: true,
            features: OfflineFeatures {
                customer_search: false,
                gift_card_sales: false,
                network_change: false,
            },
            outage: OutagePolicy {
                offline_on_network_outage: true,
                offline_on_service_disruption: false,
                offline_when_forced: false,
            },
            reader_authorities: BTreeSet::new(),
        }
    }

    /// The reader authorities' keys (`reader_authorities`, decoded; a
    /// malformed entry, which `validate` refuses, is skipped).
    pub fn reader_authority_keys(&self) -> Vec<[u8; 32]> {
        self.reader_authorities
            .iter()
            .filter_map(|h| crate::crypto::unhex(h)?.try_into().ok())
            .collect()
    }

    /// Turns offline payments on or off (R4).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets (or replaces) the limits of `currency`.
    pub fn with_limits(mut self, currency: Currency, limits: CurrencyLimits) -> Self {
        self.limits.insert(currency, limits);
        self
    }

    /// Sets the merchant's country (validated by [`Policy::validate`]).
    pub fn with_merchant_country(mut self, code: &str) -> Self {
        self.merchant_country = Some(code.to_owned());
        self
    }

    /// The limits of `currency`, if it may be taken offline.
    pub fn limits_for(&self, currency: Currency) -> Option<&CurrencyLimits> {
        self.limits.get(&currency)
    }

    /// Whether the app may offer `kind` as a tender while offline.
    pub fn tender_available_offline(&self, kind: TenderKind) -> bool {
        !self.refused_tenders.contains(&kind)
    }

    /// Whether `mode` may read a card offline.
    pub fn entry_mode_allowed(&self, mode: EntryMode) -> bool {
        self.allowed_entry_modes.contains(&mode)
    }

    /// Whether `model` is an offline-capable reader (R11): ASCII case and
    /// surrounding spaces are ignored.
    pub fn reader_is_offline_capable(&self, model: &str) -> bool {
        let model = model.trim();
        !model.is_empty()
            && self
                .offline_readers
                .iter()
                .any(|m| m.trim().eq_ignore_ascii_case(model))
    }

    /// The regional rule refusing `network` for this merchant, if any (R10).
    /// With no merchant country set every rule for `network` applies.
    pub fn regional_refusal(&self, network: Network) -> Option<&RegionalNetworkRule> {
        self.refused_regional_networks.iter().find(|r| {
            r.network == network
                && self
                    .merchant_country
                    .as_deref()
                    .is_none_or(|c| c == r.merchant_country)
        })
    }

    /// Whether `network` passes the brand allow-list.
    pub fn network_allowed(&self, network: Network) -> bool {
        self.allowed_networks
            .as_ref()
            .is_none_or(|set| set.contains(&network))
    }

    /// Whether the app may let the device change network while offline (R14).
    pub fn may_change_network_while_offline(&self) -> bool {
        self.features.network_change
    }

    /// Refuses an inconsistent policy, naming the field and the figures.
    ///
    /// Checked in this order, the first failure is returned: session rules,
    /// merchant country and regional rules, reader models (at most
    /// [`MAX_READER_MODELS`], each at most [`MAX_READER_MODEL_LEN`] bytes
    /// and not blank), then each
    /// currency's limits (in currency-code order); then, only when
    /// `enabled`: a currency configured, an entry mode allowed, the card
    /// tender not refused, a reader (or phone tap-to-pay) usable, a non-empty
    /// brand allow-list, and an outage cause allowed. A disabled policy may
    /// thus be saved half-configured, but never with wrong figures.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_session()?;
        if let Some(code) = &self.merchant_country {
            check_country(code, CountryField::MerchantCountry)?;
        }
        for rule in &self.refused_regional_networks {
            check_country(&rule.merchant_country, CountryField::RegionalNetworkRule)?;
        }
        if self.offline_readers.len() > MAX_READER_MODELS {
            return Err(PolicyError::TooManyReaderModels {
                count: self.offline_readers.len(),
                max: MAX_READER_MODELS,
            });
        }
        if let Some(m) = self
            .offline_readers
            .iter()
            .find(|m| m.len() > MAX_READER_MODEL_LEN)
        {
            return Err(PolicyError::ReaderModelTooLong {
                len: m.len(),
                max: MAX_READER_MODEL_LEN,
            });
        }
        if self.offline_readers.iter().any(|m| m.trim().is_empty()) {
            return Err(PolicyError::BlankReaderModel);
        }
        self.validate_reader_authorities(cfg!(feature = "simulator"))?;
        for (currency, limits) in &self.limits {
            limits.validate(*currency)?;
        }
        if !self.enabled {
            return Ok(());
        }
        if self.limits.is_empty() {
            return Err(PolicyError::NoCurrencyConfigured);
        }
        if self.allowed_entry_modes.is_empty() {
            return Err(PolicyError::NoEntryModeAllowed);
        }
        if self.refused_tenders.contains(&TenderKind::Card) {
            return Err(PolicyError::CardTenderRefused);
        }
        if self.offline_readers.is_empty() && !self.tap_to_pay_on_phone {
            return Err(PolicyError::NoOfflineReader);
        }
        if self.allowed_networks.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(PolicyError::EmptyNetworkAllowList);
        }
        let o = &self.outage;
        if !(o.offline_on_network_outage
            || o.offline_on_service_disruption
            || o.offline_when_forced)
        {
            return Err(PolicyError::NoOutageCauseAllowed);
        }
        Ok(())
    }

    /// The reader authorities: well-formed, not too many, and the
    /// simulator's public test authority only in a build that allows it.
    fn validate_reader_authorities(&self, allow_simulator: bool) -> Result<(), PolicyError> {
        if self.reader_authorities.len() > MAX_READER_AUTHORITIES
            || self.reader_authorities.iter().any(|k| {
                k.len() != 64
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        {
            return Err(PolicyError::BadReaderAuthority {
                max: MAX_READER_AUTHORITIES,
            });
        }
        if !allow_simulator {
            let test_key = crate::reader_trust::simulator_authority().public_key();
            if self.reader_authority_keys().contains(&test_key) {
                return Err(PolicyError::SimulatorReaderAuthority);
            }
        }
        Ok(())
    }

    fn validate_session(&self) -> Result<(), PolicyError> {
        let s = &self.session;
        if s.warnings_before_deadline.len() > MAX_DEADLINE_WARNINGS {
            return Err(PolicyError::TooManyDeadlineWarnings {
                count: s.warnings_before_deadline.len(),
                max: MAX_DEADLINE_WARNINGS,
            });
        }
        // Timestamps are in milliseconds: less than 1 ms is no time at all.
        if duration_ms(s.acceptance_window) == 0 {
            return Err(PolicyError::ZeroAcceptanceWindow);
        }
        if duration_ms(s.forwarding_deadline) == 0 {
            return Err(PolicyError::ZeroForwardingDeadline);
        }
        if s.acceptance_window > s.forwarding_deadline {
            return Err(PolicyError::WindowLongerThanDeadline {
                window: s.acceptance_window,
                deadline: s.forwarding_deadline,
            });
        }
        if s.require_online_margin >= s.forwarding_deadline {
            return Err(PolicyError::MarginNotBeforeDeadline {
                margin: s.require_online_margin,
                deadline: s.forwarding_deadline,
            });
        }
        if let Some(&warning) = s
            .warnings_before_deadline
            .iter()
            .find(|w| duration_ms(**w) == 0 || **w >= s.forwarding_deadline)
        {
            return Err(PolicyError::WarningNotBeforeDeadline {
                warning,
                deadline: s.forwarding_deadline,
            });
        }
        Ok(())
    }
}

fn check_country(code: &str, field: CountryField) -> Result<(), PolicyError> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(());
    }
    Err(PolicyError::BadCountryCode {
        field,
        // Bounded, so a garbage value cannot bloat a log line.
        code: code.chars().take(8).collect(),
    })
}

/// Which limit of [`CurrencyLimits`] a [`PolicyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitField {
    PerPayment,
    PerOrder,
    DeviceAmount,
    PerCard,
}

impl fmt::Display for LimitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitField::PerPayment => "per-payment",
            LimitField::PerOrder => "per-order",
            LimitField::DeviceAmount => "device amount",
            LimitField::PerCard => "per-card",
        })
    }
}

/// Which country code a [`PolicyError::BadCountryCode`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CountryField {
    MerchantCountry,
    RegionalNetworkRule,
}

impl fmt::Display for CountryField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CountryField::MerchantCountry => "merchant country",
            CountryField::RegionalNetworkRule => "regional network rule country",
        })
    }
}

/// Why a policy was refused by [`Policy::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PolicyError {
    /// The policy trusts the simulator's reader authority, whose signing
    /// key is public, in a build without the `simulator` feature.
    #[error(
        "the simulator's reader authority is a public test key: a shipping build never trusts it"
    )]
    SimulatorReaderAuthority,
    /// A reader authority is not 64 lowercase hex digits (an Ed25519
    /// public key), or there are too many.
    #[error("reader authorities must be 64 lowercase hex digits each, at most {max}")]
    BadReaderAuthority { max: usize },
    /// Offline payments are enabled but no currency has limits.
    #[error("offline payments are enabled but no currency has limits")]
    NoCurrencyConfigured,
    /// A limit is zero or negative.
    #[error("{currency} {field} limit must be positive, got {value}")]
    LimitNotPositive {
        currency: Currency,
        field: LimitField,
        value: Money,
    },
    /// A limit is expressed in another currency than the one it is filed under.
    #[error("{currency} {field} limit is expressed in {found}")]
    LimitCurrencyMismatch {
        currency: Currency,
        field: LimitField,
        found: Currency,
    },
    /// The device count limit is zero.
    #[error("{currency} device count limit must be at least 1")]
    DeviceCountZero { currency: Currency },
    /// The per-payment limit can never be reached: the per-order limit is lower.
    #[error("per-payment limit {per_payment} is above the per-order limit {per_order}")]
    PerPaymentAbovePerOrder {
        per_payment: Money,
        per_order: Money,
    },
    /// The per-payment limit can never be reached: the per-card limit is lower.
    #[error("per-payment limit {per_payment} is above the per-card limit {per_card}")]
    PerPaymentAbovePerCard { per_payment: Money, per_card: Money },
    /// The per-order limit can never be reached: the device limit is lower.
    #[error("per-order limit {per_order} is above the device limit {device}")]
    PerOrderAboveDevice { per_order: Money, device: Money },
    /// The per-card limit can never be reached: the device limit is lower.
    #[error("per-card limit {per_card} is above the device limit {device}")]
    PerCardAboveDevice { per_card: Money, device: Money },
    /// The warning threshold is not within 1..=100 %.
    #[error("{currency} limit warning at {percent}% is outside 1..=100")]
    WarnPercentOutOfRange { currency: Currency, percent: u8 },
    /// The acceptance window is shorter than 1 ms.
    #[error("the offline acceptance window is zero")]
    ZeroAcceptanceWindow,
    /// The forwarding deadline is shorter than 1 ms.
    #[error("the forwarding deadline is zero")]
    ZeroForwardingDeadline,
    /// Payments could be taken after they would already have expired.
    #[error("acceptance window {window:?} is longer than the forwarding deadline {deadline:?}")]
    WindowLongerThanDeadline {
        window: Duration,
        deadline: Duration,
    },
    /// The require-online margin leaves no time to take offline payments.
    #[error(
        "require-online margin {margin:?} is not shorter than the forwarding deadline {deadline:?}"
    )]
    MarginNotBeforeDeadline {
        margin: Duration,
        deadline: Duration,
    },
    /// A deadline warning is under 1 ms or not before the deadline.
    #[error("deadline warning {warning:?} must be above zero and below the deadline {deadline:?}")]
    WarningNotBeforeDeadline {
        warning: Duration,
        deadline: Duration,
    },
    /// A country code is not two upper-case ASCII letters.
    #[error("{field} {code:?} is not an ISO 3166-1 alpha-2 code (two upper-case letters)")]
    BadCountryCode { field: CountryField, code: String },
    /// A reader model is empty or blank.
    #[error("a reader model name is blank")]
    BlankReaderModel,
    /// A reader model name is longer than [`MAX_READER_MODEL_LEN`] bytes.
    #[error("a reader model name is {len} bytes long, above the maximum of {max}")]
    ReaderModelTooLong { len: usize, max: usize },
    /// More than [`MAX_READER_MODELS`] reader models.
    #[error("{count} reader models listed, above the maximum of {max}")]
    TooManyReaderModels { count: usize, max: usize },
    /// More than [`MAX_DEADLINE_WARNINGS`] deadline warnings.
    #[error("{count} deadline warnings, above the maximum of {max}")]
    TooManyDeadlineWarnings { count: usize, max: usize },
    /// Enabled with no entry mode allowed.
    #[error("offline payments are enabled but no card entry mode is allowed")]
    NoEntryModeAllowed,
    /// Enabled with the card tender refused.
    #[error("offline payments are enabled but card tenders are refused")]
    CardTenderRefused,
    /// Enabled with no offline-capable reader and phone tap-to-pay refused.
    #[error("offline payments are enabled but no reader may take them")]
    NoOfflineReader,
    /// Enabled with an empty brand allow-list.
    #[error("offline payments are enabled but the card network allow-list is empty")]
    EmptyNetworkAllowList,
    /// Enabled but no outage cause allows offline payments.
    #[error("offline payments are enabled but no outage cause allows them")]
    NoOutageCauseAllowed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, c("USD"))
    }

    fn presets(currency: Currency) -> [(&'static str, Policy); 3] {
        [
            ("square_reader", Policy::square_reader(currency)),
            ("square_terminal", Policy::square_terminal(currency)),
            ("shopify_pos", Policy::shopify_pos(currency)),
        ]
    }

    #[test]
    fn default_is_disabled_and_valid() {
        let p = Policy::default();
        assert!(!p.enabled);
        assert!(p.limits.is_empty());
        assert_eq!(p.validate(), Ok(()));
        // Enabling it without configuring anything is refused.
        assert_eq!(
            p.with_enabled(true).validate(),
            Err(PolicyError::NoCurrencyConfigured)
        );
    }

    #[test]
    fn presets_in_the_seed_currency_are_disabled_and_valid_enabled_or_not() {
        for (name, p) in presets(c("USD")) {
            assert!(!p.enabled, "{name} must start disabled (R4)");
            assert_eq!(p.validate(), Ok(()), "{name}");
            assert_eq!(p.with_enabled(true).validate(), Ok(()), "{name}");
        }
    }

    #[test]
    fn preset_figures_are_the_seeds_dollars() {
        let p = Policy::shopify_pos(c("USD"));
        let l = p.limits_for(c("USD")).unwrap();
        assert_eq!(l.per_order, usd(10_000));
        assert_eq!(l.device_amount, Some(usd(500_000)));
        assert_eq!(l.per_payment, None);
        assert_eq!(l.device_count, None);
        let r = Policy::square_reader(c("USD"));
        assert_eq!(r.limits_for(c("USD")).unwrap().per_order, usd(10_000));
    }

    #[test]
    fn presets_in_another_currency_ask_for_explicit_limits() {
        for code in ["JPY", "EUR", "KWD", "CAD", "AUD"] {
            let cur = c(code);
            for (name, p) in presets(cur) {
                assert!(!p.enabled, "{name} must start disabled (R4)");
                assert!(p.limits.is_empty(), "{name} {code}: {:?}", p.limits);
                // Saved disabled, refused enabled until the app sets limits.
                assert_eq!(p.validate(), Ok(()), "{name} {code}");
                assert_eq!(
                    p.clone().with_enabled(true).validate(),
                    Err(PolicyError::NoCurrencyConfigured),
                    "{name} {code}"
                );
                let limits = CurrencyLimits::per_order(Money::new(15_000, cur));
                let p = p.with_limits(cur, limits).with_enabled(true);
                assert_eq!(p.validate(), Ok(()), "{name} {code}");
                assert_eq!(p.limits_for(cur).unwrap().per_order.minor_units(), 15_000);
            }
        }
        // Neither ¥100 nor €100 stands in for the seed's $100.
        assert!(Policy::shopify_pos(c("JPY")).limits_for(c("JPY")).is_none());
        assert!(Policy::square_reader(c("EUR"))
            .limits_for(c("EUR"))
            .is_none());
        assert!(Policy::square_terminal(c("EUR"))
            .limits_for(c("USD"))
            .is_none());
    }

    #[test]
    fn square_presets_follow_s0() {
        const H: Duration = Duration::from_secs(3600);
        let r = Policy::square_reader(c("EUR"));
        assert_eq!(r.session.acceptance_window, H);
        assert_eq!(r.session.forwarding_deadline, 24 * H);
        assert_eq!(
            r.session.deadline_anchor,
            crate::session::DeadlineAnchor::ConnectionLoss
        );
        let t = Policy::square_terminal(c("EUR"));
        assert_eq!(t.session.acceptance_window, 24 * H);
        assert_eq!(t.session.forwarding_deadline, 24 * H);
        assert_eq!(
            t.session.deadline_anchor,
            crate::session::DeadlineAnchor::FirstOfflinePayment
        );
        for p in [&r, &t] {
            assert!(!p.entry_mode_allowed(EntryMode::Contactless));
            assert!(!p.entry_mode_allowed(EntryMode::Manual));
            assert!(p.entry_mode_allowed(EntryMode::Chip));
            assert!(!p.tender_available_offline(TenderKind::GiftCard));
            assert!(!p.tender_available_offline(TenderKind::BuyNowPayLater));
            assert!(p.outage.allows(OfflineReason::NetworkOutage));
            assert!(p.outage.allows(OfflineReason::ServiceDisruption));
            assert!(!p.outage.allows(OfflineReason::ForcedOffline));
        }
        assert!(r.reader_is_offline_capable("Square Stand"));
        assert!(!r.reader_is_offline_capable("Square Terminal"));
        assert!(t.reader_is_offline_capable("square terminal "));
        assert!(r.may_change_network_while_offline());
        assert!(!t.may_change_network_while_offline());
    }

    #[test]
    fn shopify_preset_follows_s3() {
        let p = Policy::shopify_pos(c("CAD"));
        assert!(p.staff_permission_required);
        assert!(!p.tips_allowed);
        assert!(!p.tap_to_pay_on_phone);
        assert!(!p.features.customer_search);
        assert!(!p.features.gift_card_sales);
        assert!(!p.may_change_network_while_offline());
        assert!(!p.entry_mode_allowed(EntryMode::Swipe));
        assert!(!p.entry_mode_allowed(EntryMode::Manual));
        assert!(p.entry_mode_allowed(EntryMode::Contactless));
        assert!(p.entry_mode_allowed(EntryMode::Chip));
        for model in [
            "POS Go",
            "POS Terminal",
            "Tap & Chip",
            "Chipper 2X BT",
            "WisePad 3",
        ] {
            assert!(p.reader_is_offline_capable(model), "{model}");
        }
        assert!(!p.reader_is_offline_capable("Square Reader"));
        assert!(!p.reader_is_offline_capable(""));
        assert!(p.outage.allows(OfflineReason::NetworkOutage));
        assert!(!p.outage.allows(OfflineReason::ServiceDisruption));
        // Unknown country: both regional rules apply (the safe side).
        assert!(p.regional_refusal(Network::Interac).is_some());
        assert!(p.regional_refusal(Network::Eftpos).is_some());
        let ca = p.clone().with_merchant_country("CA");
        assert!(ca.regional_refusal(Network::Interac).is_some());
        assert!(ca.regional_refusal(Network::Eftpos).is_none());
        let us = p.with_merchant_country("US");
        assert!(us.regional_refusal(Network::Interac).is_none());
        assert!(us.regional_refusal(Network::Visa).is_none());
    }

    #[test]
    fn serde_round_trips_every_preset() {
        for (name, p) in presets(c("USD")) {
            let p = p.with_merchant_country("US").with_enabled(true);
            let json = serde_json::to_string(&p).unwrap();
            let back: Policy = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p, "{name}");
        }
        let d = Policy::default();
        let back: Policy = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn serde_refuses_an_unknown_currency_key() {
        let p = Policy::shopify_pos(c("USD"));
        let json = serde_json::to_string(&p).unwrap().replace("USD", "ABC");
        assert!(serde_json::from_str::<Policy>(&json).is_err());
    }

    fn limits() -> CurrencyLimits {
        CurrencyLimits::per_order(usd(10_000))
            .with_per_payment(usd(5_000))
            .with_device_amount(usd(500_000))
            .with_device_count(50)
            .with_per_card(usd(20_000))
    }

    fn with(l: CurrencyLimits) -> Result<(), PolicyError> {
        Policy::shopify_pos(c("USD"))
            .with_limits(c("USD"), l)
            .validate()
    }

    #[test]
    fn limit_validation_names_field_and_figures() {
        assert_eq!(with(limits()), Ok(()));
        // Equal limits are consistent.
        let eq = CurrencyLimits::per_order(usd(100))
            .with_per_payment(usd(100))
            .with_device_amount(usd(100))
            .with_per_card(usd(100));
        assert_eq!(with(eq), Ok(()));

        let mut l = limits();
        l.per_order = usd(0);
        assert_eq!(
            with(l),
            Err(PolicyError::LimitNotPositive {
                currency: c("USD"),
                field: LimitField::PerOrder,
                value: usd(0)
            })
        );
        assert_eq!(
            with(limits().with_per_payment(usd(-1))),
            Err(PolicyError::LimitNotPositive {
                currency: c("USD"),
                field: LimitField::PerPayment,
                value: usd(-1)
            })
        );
        assert!(matches!(
            with(limits().with_device_amount(usd(0))),
            Err(PolicyError::LimitNotPositive {
                field: LimitField::DeviceAmount,
                ..
            })
        ));
        assert!(matches!(
            with(limits().with_per_card(usd(-5))),
            Err(PolicyError::LimitNotPositive {
                field: LimitField::PerCard,
                ..
            })
        ));
        assert_eq!(
            with(limits().with_device_count(0)),
            Err(PolicyError::DeviceCountZero { currency: c("USD") })
        );
        assert_eq!(
            with(limits().with_per_payment(usd(10_001))),
            Err(PolicyError::PerPaymentAbovePerOrder {
                per_payment: usd(10_001),
                per_order: usd(10_000)
            })
        );
        assert_eq!(
            with(limits().with_per_card(usd(4_000))),
            Err(PolicyError::PerPaymentAbovePerCard {
                per_payment: usd(5_000),
                per_card: usd(4_000)
            })
        );
        assert_eq!(
            with(limits().with_device_amount(usd(9_999))),
            Err(PolicyError::PerOrderAboveDevice {
                per_order: usd(10_000),
                device: usd(9_999)
            })
        );
        assert_eq!(
            with(limits().with_per_card(usd(500_001))),
            Err(PolicyError::PerCardAboveDevice {
                per_card: usd(500_001),
                device: usd(500_000)
            })
        );
        for bad in [0u8, 101, 255] {
            assert_eq!(
                with(limits().with_warn_percent(bad)),
                Err(PolicyError::WarnPercentOutOfRange {
                    currency: c("USD"),
                    percent: bad
                })
            );
        }
        assert_eq!(with(limits().with_warn_percent(100)), Ok(()));
        assert_eq!(
            with(limits().with_device_amount(Money::new(500_000, c("EUR")))),
            Err(PolicyError::LimitCurrencyMismatch {
                currency: c("USD"),
                field: LimitField::DeviceAmount,
                found: c("EUR")
            })
        );
    }

    #[test]
    fn session_validation() {
        const H: Duration = Duration::from_secs(3600);
        let base = Policy::square_reader(c("USD"));
        let mut p = base.clone();
        p.session.acceptance_window = Duration::ZERO;
        assert_eq!(p.validate(), Err(PolicyError::ZeroAcceptanceWindow));
        let mut p = base.clone();
        p.session.acceptance_window = Duration::from_micros(999);
        assert_eq!(p.validate(), Err(PolicyError::ZeroAcceptanceWindow));
        let mut p = base.clone();
        p.session.forwarding_deadline = Duration::ZERO;
        assert_eq!(p.validate(), Err(PolicyError::ZeroForwardingDeadline));
        let mut p = base.clone();
        p.session.acceptance_window = 25 * H;
        assert_eq!(
            p.validate(),
            Err(PolicyError::WindowLongerThanDeadline {
                window: 25 * H,
                deadline: 24 * H
            })
        );
        let mut p = base.clone();
        p.session.require_online_margin = 24 * H;
        assert_eq!(
            p.validate(),
            Err(PolicyError::MarginNotBeforeDeadline {
                margin: 24 * H,
                deadline: 24 * H
            })
        );
        let mut p = base.clone();
        p.session.warnings_before_deadline.push(Duration::ZERO);
        assert!(matches!(
            p.validate(),
            Err(PolicyError::WarningNotBeforeDeadline { .. })
        ));
        let mut p = base;
        p.session.warnings_before_deadline = vec![30 * H];
        assert_eq!(
            p.validate(),
            Err(PolicyError::WarningNotBeforeDeadline {
                warning: 30 * H,
                deadline: 24 * H
            })
        );
    }

    #[test]
    fn country_codes_must_be_two_upper_case_letters() {
        for bad in ["ca", "CAN", "C", "", "C1", "ÇA"] {
            assert_eq!(
                Policy::default().with_merchant_country(bad).validate(),
                Err(PolicyError::BadCountryCode {
                    field: CountryField::MerchantCountry,
                    code: bad.to_owned()
                }),
                "{bad}"
            );
        }
        let mut p = Policy::default();
        p.refused_regional_networks
            .insert(RegionalNetworkRule::new(Network::Interac, "Canada"));
        assert_eq!(
            p.validate(),
            Err(PolicyError::BadCountryCode {
                field: CountryField::RegionalNetworkRule,
                code: "Canada".to_owned()
            })
        );
        assert_eq!(
            Policy::default().with_merchant_country("JP").validate(),
            Ok(())
        );
    }

    #[test]
    fn enabled_only_checks() {
        let on = Policy::shopify_pos(c("USD")).with_enabled(true);

        let mut p = on.clone();
        p.allowed_entry_modes.clear();
        assert_eq!(p.validate(), Err(PolicyError::NoEntryModeAllowed));
        assert_eq!(p.with_enabled(false).validate(), Ok(()));

        let mut p = on.clone();
        p.refused_tenders.insert(TenderKind::Card);
        assert_eq!(p.validate(), Err(PolicyError::CardTenderRefused));

        let mut p = on.clone();
        p.offline_readers.clear();
        assert_eq!(p.validate(), Err(PolicyError::NoOfflineReader));
        p.tap_to_pay_on_phone = true;
        assert_eq!(p.validate(), Ok(()));

        let mut p = on.clone();
        p.offline_readers.insert("  ".to_owned());
        assert_eq!(p.validate(), Err(PolicyError::BlankReaderModel));

        let mut p = on.clone();
        p.offline_readers.insert("M".repeat(MAX_READER_MODEL_LEN));
        assert_eq!(p.validate(), Ok(()));
        p.offline_readers.insert("M".repeat(10 * 1024 * 1024));
        assert_eq!(
            p.validate(),
            Err(PolicyError::ReaderModelTooLong {
                len: 10 * 1024 * 1024,
                max: MAX_READER_MODEL_LEN
            })
        );

        let mut p = on.clone();
        p.offline_readers = (0..=MAX_READER_MODELS).map(|i| format!("m{i}")).collect();
        assert_eq!(
            p.validate(),
            Err(PolicyError::TooManyReaderModels {
                count: MAX_READER_MODELS + 1,
                max: MAX_READER_MODELS
            })
        );

        let mut p = on.clone();
        p.session.warnings_before_deadline =
            vec![Duration::from_secs(60); MAX_DEADLINE_WARNINGS + 1];
        assert_eq!(
            p.validate(),
            Err(PolicyError::TooManyDeadlineWarnings {
                count: MAX_DEADLINE_WARNINGS + 1,
                max: MAX_DEADLINE_WARNINGS
            })
        );

        let mut p = on.clone();
        p.allowed_networks = Some(BTreeSet::new());
        assert_eq!(p.validate(), Err(PolicyError::EmptyNetworkAllowList));

        let mut p = on;
        p.outage.offline_on_network_outage = false;
        assert_eq!(p.validate(), Err(PolicyError::NoOutageCauseAllowed));
        p.outage.offline_when_forced = true;
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn errors_render_their_figures() {
        let e = PolicyError::PerOrderAboveDevice {
            per_order: usd(10_000),
            device: usd(5_000),
        };
        assert_eq!(
            e.to_string(),
            "per-order limit 100.00 USD is above the device limit 50.00 USD"
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<PolicyError>(&json).unwrap(), e);
    }

    #[test]
    fn major_units_saturates() {
        assert_eq!(major_units(i64::MAX, c("USD")).minor_units(), i64::MAX);
        assert_eq!(major_units(5_000, c("JPY")).minor_units(), 5_000);
    }

    #[test]
    fn a_shipping_build_refuses_the_simulators_reader_authority() {
        let mut p = Policy::default();
        p.reader_authorities.insert(crate::crypto::hex(
            &crate::reader_trust::simulator_authority().public_key(),
        ));
        assert_eq!(
            p.validate_reader_authorities(false),
            Err(PolicyError::SimulatorReaderAuthority)
        );
        assert_eq!(p.validate_reader_authorities(true), Ok(()));
        let mut other = Policy::default();
        other.reader_authorities.insert("ab".repeat(32));
        assert_eq!(other.validate_reader_authorities(false), Ok(()));
        // `validate` runs these checks, with this build's feature: the tests
        // are built with `simulator`, so the test key is allowed here.
        assert_eq!(p.validate(), Ok(()), "the simulator feature is on in tests");
        other.reader_authorities.insert("AB".repeat(32));
        assert_eq!(
            other.validate(),
            Err(PolicyError::BadReaderAuthority {
                max: MAX_READER_AUTHORITIES
            })
        );
        other.reader_authorities.remove(&"AB".repeat(32));
        other.reader_authorities.insert("zz".repeat(32));
        assert_eq!(
            other.reader_authority_keys(),
            vec![[0xab; 32]],
            "a malformed entry is skipped"
        );
    }
}
