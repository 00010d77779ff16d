//! # pos-demo — a shop's day with an outage, end to end
//!
//! Runs one scripted day on a virtual clock: the processor simulator on
//! loopback, an encrypted store in a fresh folder, the engine with its
//! forwarding driver, and a simulated card reader. Online sales, the network
//! drops, offline sales (split tender, refusals with their figures), receipts
//! queued, a service disruption, the service returns and forwarding runs by
//! itself, declines reported with the customer's contact, one payment
//! expires at its deadline, and a closing reconciliation against the
//! simulator's ledger. [`run`] returns a [`Summary`]; any mismatch makes the
//! binary exit non-zero.
//!
//! The card reader is `pos-reader`'s simulated reader, paired by
//! challenge-response over the reader profile's bytes on an in-memory link
//! (MTU 185); it seals each card to the processor's key, so the phone side
//! never sees a card number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use pos_core::checkout::{
    CardChallenge, CardPaymentRequest, NewOrder, OfflineBehaviour, PaymentView, Route,
};
use pos_core::clock::{Clock, Timestamp, VirtualClock};
use pos_core::connectivity::ConnectivityState;
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::StaffSession;
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{
    CustomerContact, EmailAddress, OrderId, PaymentState, PaymentStatus, PhoneNumber,
    ReceiptChannel, StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Policy, TenderKind};
use pos_core::rules::GuardedAction;
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EngineConfig, EventListener, PosEngine, PosError, PosEvent};
use pos_reader::client::ReaderClient;
use pos_reader::link::MemoryLink;
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};
use pos_sim::{
    test_cards, CardOutcome, ChargeOutcome, Fault, FaultMode, FaultPlan, SimConfig, Simulator,
    TestCard,
};

/// The merchant settings the day runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    SquareReader,
    SquareTerminal,
    Shopify,
}

impl Preset {
    pub const ALL: [Preset; 3] = [
        Preset::SquareReader,
        Preset::SquareTerminal,
        Preset::Shopify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::SquareReader => "square-reader",
            Preset::SquareTerminal => "square-terminal",
            Preset::Shopify => "shopify",
        }
    }

    fn policy(self, currency: Currency) -> Policy {
        match self {
            Preset::SquareReader => Policy::square_reader(currency),
            Preset::SquareTerminal => Policy::square_terminal(currency),
            Preset::Shopify => Policy::shopify_pos(currency),
        }
        .with_enabled(true)
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown preset {s:?}: square-reader, square-terminal or shopify")
            })
    }
}

/// How the day runs (the binary's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub preset: Preset,
    pub seed: u64,
    /// Regular offline sales (besides the scripted ones).
    pub payments: usize,
    /// A simulator fault mode for the forwarding phase.
    pub fault: Option<FaultMode>,
    /// Where the store goes; a fresh temporary folder when `None`.
    pub data_dir: Option<PathBuf>,
    /// Where the key file and the store's rollback anchor go: outside the
    /// data folder, so that a copy of that folder cannot roll the anchor
    /// back with the store. `None`: the data folder's path + `.keys`.
    pub key_dir: Option<PathBuf>,
    /// Print nothing while running (the summary is printed by the caller).
    pub quiet: bool,
    pub color: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preset: Preset::SquareReader,
            seed: 2026,
            payments: 8,
            fault: None,
            data_dir: None,
            key_dir: None,
            quiet: false,
            color: false,
        }
    }
}

/// One line of the reconciliation table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub currency: String,
    pub state: String,
    pub count: u64,
    pub amount: Money,
}

/// What the day ended with.
#[derive(Debug, Clone)]
pub struct Summary {
    pub preset: Preset,
    pub seed: u64,
    pub fault: Option<FaultMode>,
    pub rows: Vec<Row>,
    /// Expired before forwarding: the money lost.
    pub lost_amount: Money,
    /// Payments the cashier was told are taken that the store does not hold.
    pub lost_payments: u64,
    /// Payments charged more than once (device and simulator disagree on the count).
    pub duplicated: u64,
    pub approved: u64,
    pub declined: u64,
    pub expired: u64,
    pub declines_reported: u64,
    pub expiries_reported: u64,
    pub receipts_delivered: u64,
    /// Disagreements between the device and the simulator's ledger.
    pub mismatches: Vec<String>,
    pub sim_requests: u64,
    pub faults_injected: u64,
    pub wall: Duration,
}

impl Summary {
    /// Whether the device and the processor agree on everything.
    pub fn reconciled(&self) -> bool {
        self.mismatches.is_empty() && self.lost_payments == 0 && self.duplicated == 0
    }

    /// The closing table, as text.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "  {:<8} {:<18} {:>6} {:>12}",
            "currency", "state", "count", "amount"
        );
        for r in &self.rows {
            let _ = writeln!(
                t,
                "  {:<8} {:<18} {:>6} {:>12}",
                r.currency,
                r.state,
                r.count,
                format!("{}", r.amount)
            );
        }
        let _ = writeln!(
            t,
            "  amount lost (expired before forwarding): {}",
            self.lost_amount
        );
        let _ = writeln!(
            t,
            "  lost payments: {}   duplicated charges: {}   declines reported: {}   expiries reported: {}   receipts delivered: {}",
            self.lost_payments, self.duplicated, self.declines_reported, self.expiries_reported, self.receipts_delivered
        );
        let _ = writeln!(
            t,
            "  simulator ledger vs device: {}",
            if self.mismatches.is_empty() {
                "every payment agrees".to_owned()
            } else {
                format!(
                    "{} MISMATCH(ES): {}",
                    self.mismatches.len(),
                    self.mismatches.join("; ")
                )
            }
        );
        t
    }

    /// One machine-readable summary.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "preset": self.preset.name(),
            "seed": self.seed,
            "fault": self.fault.map(|f| f.name()),
            "reconciled": self.reconciled(),
            "rows": self.rows.iter().map(|r| serde_json::json!({
                "currency": r.currency, "state": r.state, "count": r.count,
                "amount_minor": r.amount.minor_units(),
            })).collect::<Vec<_>>(),
            "lost_amount_minor": self.lost_amount.minor_units(),
            "lost_payments": self.lost_payments,
            "duplicated": self.duplicated,
            "approved": self.approved,
            "declined": self.declined,
            "expired": self.expired,
            "declines_reported": self.declines_reported,
            "expiries_reported": self.expiries_reported,
            "receipts_delivered": self.receipts_delivered,
            "mismatches": self.mismatches,
            "simulator_requests": self.sim_requests,
            "faults_injected": self.faults_injected,
            "wall_ms": self.wall.as_millis() as u64,
        })
    }
}

/// 2026-11-24 08:00 UTC, the shop opens.
const OPENING: Timestamp = Timestamp(1_795_507_200_000);
const MIN: Duration = Duration::from_secs(60);

/// The card reader: the simulated reader, paired over the reader profile's
/// bytes (`pos-reader`): an authenticated, sealed link; it seals each card
/// to the processor's key, bound to its payment, and signs it.
struct CardReader {
    model: String,
    client: tokio::sync::Mutex<ReaderClient>,
    sim: SimReader,
}

impl CardReader {
    /// Authenticates the reader (its certificate under the policy's
    /// authorities) and remembers it in the engine.
    async fn pair(&mut self, engine: &PosEngine) -> Result<(), String> {
        let t = engine.reader_trust().map_err(|e| e.to_string())?;
        let trust = pos_reader::secure::LinkTrust {
            authorities: t.authorities,
            remembered: t.remembered,
            online: t.online,
        };
        let paired = self
            .client
            .lock()
            .await
            .pair(&trust)
            .await
            .map_err(|e| format!("reader: {e}"))?;
        engine
            .remember_paired_reader(&paired.certificate, &paired.info.firmware)
            .await
            .map_err(|e| e.to_string())?;
        let info = paired.info;
        self.model = format!(
            "{} {} (firmware {}, battery {} %)",
            info.model, info.serial, info.firmware, info.battery_percent
        );
        Ok(())
    }

    async fn read(
        &self,
        card: &TestCard,
        mode: EntryMode,
        challenge: &CardChallenge,
    ) -> Result<CardRead, String> {
        self.sim.present(Presented {
            secret: card.secret(),
            network: card.network,
            entry_mode: mode,
        });
        let all = [
            EntryMode::Chip,
            EntryMode::Contactless,
            EntryMode::Swipe,
            EntryMode::Manual,
        ];
        self.client
            .lock()
            .await
            .take_card(challenge, &all, true)
            .await
            .map_err(|e| format!("reader: {e}"))
    }
}

struct Collector(Mutex<mpsc::Sender<PosEvent>>);
impl EventListener for Collector {
    fn on_event(&self, e: PosEvent) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(e);
        }
    }
}

struct Day {
    opts: Options,
    clock: VirtualClock,
    engine: PosEngine,
    sim: Simulator,
    reader: CardReader,
    currency: Currency,
    events: mpsc::Receiver<PosEvent>,
    policy: Policy,
    confirmed: BTreeMap<String, Money>,
    declines_reported: u64,
    expiries_reported: u64,
    progress_shown: bool,
    seq: u32,
}

fn hhmm(t: Timestamp, start: Timestamp) -> String {
    let mins = (t.millis() - start.millis()).max(0) / 60_000 + 8 * 60;
    let day = mins / (24 * 60);
    let m = mins % (24 * 60);
    if day > 0 {
        format!("+{day}d {:02}:{:02}", m / 60, m % 60)
    } else {
        format!("{:02}:{:02}", m / 60, m % 60)
    }
}

impl Day {
    fn now(&self) -> Timestamp {
        self.clock.wall_now()
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.opts.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn say(&mut self, text: &str) {
        self.say_styled("0", "  ", text);
    }

    fn good(&mut self, text: &str) {
        self.say_styled("32", "✔ ", text);
    }

    fn bad(&mut self, text: &str) {
        self.say_styled("31", "✘ ", text);
    }

    fn note(&mut self, text: &str) {
        self.say_styled("33", "! ", text);
    }

    fn say_styled(&mut self, code: &str, mark: &str, text: &str) {
        self.show_events();
        if self.opts.quiet {
            return;
        }
        let t = hhmm(self.now(), OPENING);
        let line = format!(
            "{} {} {}",
            self.paint("2", &format!("{t:>9}")),
            self.paint(code, mark),
            text
        );
        println_out(&line);
    }

    /// Prints the engine's events received so far.
    fn show_events(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            let t = hhmm(self.now(), OPENING);
            let line = match e {
                PosEvent::ConnectivityChanged { to, banner, .. } => {
                    let state = match to {
                        ConnectivityState::Online { .. } => "online".to_owned(),
                        ConnectivityState::NetworkOutage { .. } => "network outage".to_owned(),
                        ConnectivityState::ServiceDisruption { .. } => {
                            "service disruption".to_owned()
                        }
                        ConnectivityState::Unknown => "unknown".to_owned(),
                    };
                    let b =
                        banner.map_or("(banner hidden)".to_owned(), |b| format!("banner: \"{b}\""));
                    Some(self.paint("36", &format!("⚡ connectivity → {state}; {b}")))
                }
                PosEvent::PaymentDeclined(n) => {
                    self.declines_reported += 1;
                    let who = n
                        .contact
                        .as_ref()
                        .and_then(|c| {
                            c.email()
                                .map(|e| e.hint())
                                .or_else(|| c.phone().map(|p| p.hint()))
                        })
                        .unwrap_or_else(|| "no contact captured".into());
                    Some(self.paint(
                        "31",
                        &format!(
                            "✘ declined ({:?}) payment {} of order {}: collect {} from {who}",
                            n.reason, n.payment_id, n.order_id, n.amount_due
                        ),
                    ))
                }
                PosEvent::PaymentExpired {
                    payment_id, amount, ..
                } => {
                    self.expiries_reported += 1;
                    Some(self.paint(
                        "31",
                        &format!(
                            "✘ payment {payment_id} passed its forwarding deadline: {amount} lost"
                        ),
                    ))
                }
                PosEvent::SessionWarning(w) => {
                    use pos_core::session::SessionWarningKind as K;
                    let text = match w.kind {
                        K::AcceptanceWindowClosed { closed_at } => format!(
                            "! the offline acceptance window closed at {}: no more offline payments in this outage",
                            hhmm(closed_at, OPENING)
                        ),
                        K::DeadlineApproaching { threshold } => format!(
                            "! forwarding deadline in {} min or less",
                            threshold.as_secs() / 60
                        ),
                    };
                    Some(self.paint("33", &text))
                }
                PosEvent::AnchorSaveFailed { reason, behind } => Some(self.paint(
                    "31",
                    &format!("✘ the store's rollback anchor was not saved ({behind} records behind): {reason}"),
                )),
                PosEvent::LimitNear(n) => Some(self.paint(
                    "33",
                    &format!("! device total near its limit ({} %)", n.warn_percent),
                )),
                PosEvent::ForwardingProgress(p) => {
                    if !self.opts.quiet && p.total > 0 {
                        let width = 24u64;
                        let filled = (p.done * width / p.total.max(1)).min(width);
                        let bar: String = (0..width)
                            .map(|i| if i < filled { '█' } else { '░' })
                            .collect();
                        let text = format!(
                            "{:>9}    forwarding [{bar}] {}/{} {} of {}",
                            t, p.done, p.total, p.amount_done, p.amount_total
                        );
                        if self.opts.color {
                            print_inline(&format!("\r{text}"));
                            self.progress_shown = !p.finished;
                            if p.finished {
                                println_out("");
                            }
                        } else if p.finished {
                            println_out(&text);
                        }
                    }
                    None
                }
                _ => None,
            };
            if let (Some(l), false) = (line, self.opts.quiet) {
                if self.progress_shown {
                    println_out("");
                    self.progress_shown = false;
                }
                println_out(&format!("{} {l}", self.paint("2", &format!("{t:>9}"))));
            }
        }
    }

    /// Lets virtual time pass in steps, waking the forwarding driver, until
    /// `done` holds (or `max` of virtual time passed: an error).
    async fn wait_for(
        &mut self,
        what: &str,
        step: Duration,
        max: Duration,
        done: impl Fn(&PosEngine) -> bool,
    ) -> Result<(), String> {
        let until = self.now().plus(max);
        let real_limit = Instant::now() + Duration::from_secs(60);
        loop {
            // Give the driver a moment of real time to act on the last step.
            for _ in 0..40 {
                if done(&self.engine) {
                    self.show_events();
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if self.now() >= until || Instant::now() > real_limit {
                return Err(format!("timed out waiting for {what}"));
            }
            self.clock.advance(step);
            self.engine.nudge_forwarding();
            self.show_events();
        }
    }

    fn usd(&self, major: i64, cents: i64) -> Money {
        Money::new(major * 100 + cents, self.currency)
    }

    async fn order(
        &mut self,
        total: Money,
        contact: Option<CustomerContact>,
    ) -> Result<OrderId, String> {
        Ok(self
            .engine
            .create_order(NewOrder {
                order_id: None,
                total,
                contact,
            })
            .await
            .map_err(|e| e.to_string())?
            .id)
    }

    /// Starts and confirms a card payment with the reader.
    async fn card(
        &mut self,
        order: &OrderId,
        amount: Money,
        card: &TestCard,
        mode: EntryMode,
    ) -> Result<(Route, PaymentView), PosError> {
        self.seq += 1;
        let d = self
            .engine
            .begin_card_payment(CardPaymentRequest {
                order_id: order.clone(),
                payment_id: Some(format!("pay-{:04}", self.seq)),
                amount,
                tip: None,
                behaviour: OfflineBehaviour::PreferOnline,
                tender: TenderKind::Card,
            })
            .await?;
        let read = match self.reader.read(card, mode, &d.challenge).await {
            Ok(r) => r,
            Err(reason) => {
                let _ = self.engine.cancel_card_payment(&d.payment_id).await;
                return Err(PosError::InvalidInput { reason });
            }
        };
        match self.engine.confirm_card_payment(&d.payment_id, read).await {
            Ok(v) => {
                self.confirmed.insert(v.id.as_str().to_owned(), v.amount);
                Ok((d.route, v))
            }
            Err(e) => {
                let _ = self.engine.cancel_card_payment(&d.payment_id).await;
                Err(e)
            }
        }
    }

    fn mode(&self) -> EntryMode {
        self.policy
            .allowed_entry_modes
            .iter()
            .next()
            .copied()
            .unwrap_or(EntryMode::Chip)
    }

    fn refused_mode(&self) -> Option<EntryMode> {
        [
            EntryMode::Contactless,
            EntryMode::Swipe,
            EntryMode::Manual,
            EntryMode::Chip,
        ]
        .into_iter()
        .find(|m| !self.policy.allowed_entry_modes.contains(m))
    }
}

fn println_out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

fn print_inline(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = write!(o, "{s}");
    let _ = o.flush();
}

fn approve_cards() -> Vec<&'static TestCard> {
    test_cards()
        .iter()
        .filter(|c| c.outcome == CardOutcome::Approve)
        .collect()
}

fn decline_card(i: usize) -> &'static TestCard {
    let d: Vec<_> = test_cards()
        .iter()
        .filter(|c| c.outcome != CardOutcome::Approve)
        .collect();
    d[i % d.len()]
}

/// Runs the day. Errors are setup failures; disagreements are in the summary.
pub async fn run(opts: Options) -> Result<Summary, String> {
    let started = Instant::now();
    let currency = Currency::parse("USD").map_err(|e| e.to_string())?;
    let (dir, temporary) = match &opts.data_dir {
        Some(d) => (d.clone(), false),
        None => {
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (
                std::env::temp_dir().join(format!("pos-demo-{}-{n}", std::process::id())),
                true,
            )
        }
    };
    let key_dir = opts.key_dir.clone().unwrap_or_else(|| {
        let mut name = dir.clone().into_os_string();
        name.push(".keys");
        PathBuf::from(name)
    });
    if key_dir.starts_with(&dir) {
        return Err(format!(
            "the key folder {} must be outside the data folder {}",
            key_dir.display(),
            dir.display()
        ));
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&key_dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::create_dir_all(&key_dir).map_err(|e| format!("{}: {e}", key_dir.display()))?;
    let sim = Simulator::start(SimConfig {
        seed: opts.seed,
        faults: FaultPlan {
            hold: Duration::from_millis(1_500),
            ..FaultPlan::none()
        },
        ..SimConfig::default()
    })
    .map_err(|e| format!("simulator: {e}"))?;
    let keys = Arc::new(
        FileKeyProvider::open_or_create(key_dir.join("pos-core.kek")).map_err(|e| e.to_string())?,
    );
    let store = SqliteStore::open(&dir.join("pos-core.sqlite"), keys)
        .await
        .map_err(|e| e.to_string())?;
    let clock = VirtualClock::new(OPENING);
    let mut config = EngineConfig::new(&dir, "demo-till-1", "USD").map_err(|e| e.to_string())?;
    config.forwarding = ForwardingConfig {
        max_in_flight: 16,
        retry_base: Duration::from_secs(5),
        retry_max: Duration::from_secs(120),
        automatic: true,
        jitter_seed: Some(opts.seed),
    };
    let engine = PosEngine::open_with(config, Arc::new(clock.clone()), Arc::new(store))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    let sub = engine
        .subscribe(Arc::new(Collector(Mutex::new(tx))))
        .map_err(|e| e.to_string())?;
    let mut policy = opts.preset.policy(currency);
    // The simulated reader's maker: the only reader authority of the demo.
    policy.reader_authorities.insert(pos_core::crypto::hex(
        &pos_core::reader_trust::simulator_authority().public_key(),
    ));
    let model = policy
        .offline_readers
        .iter()
        .next()
        .cloned()
        .unwrap_or_default();
    let mut fp = [0u8; 32];
    fp[..8].copy_from_slice(&opts.seed.to_le_bytes());
    let (phone_end, reader_end) = MemoryLink::pair(185);
    let serial = "SIM-READER-1";
    let sim_reader = SimReader::start(
        SimReaderConfig {
            model: model.clone(),
            serial: serial.into(),
            firmware: "2.1.0".into(),
            battery_percent: 87,
            identity: pos_reader::sim::simulated_identity(serial, &model)
                .map_err(|e| e.to_string())?,
            processor: sim.processor_key(),
            fingerprint_key: fp,
        },
        reader_end,
    );
    let client = ReaderClient::connect(phone_end)
        .await
        .map_err(|e| e.to_string())?;
    let reader = CardReader {
        model: model.clone(),
        client: tokio::sync::Mutex::new(client),
        sim: sim_reader,
    };
    let mut gw = HttpGatewayConfig::new(sim.base_url());
    gw.allow_plain_http = true;
    gw.request_timeout = Duration::from_millis(800);
    let gateway =
        HttpGateway::new(gw, Arc::new(StaticToken(sim.token()))).map_err(|e| e.to_string())?;
    engine
        .set_gateway(Arc::new(gateway))
        .map_err(|e| e.to_string())?;
    engine
        .set_policy(policy.clone())
        .await
        .map_err(|e| e.to_string())?;
    engine
        .sign_in(StaffSession {
            staff_id: StaffId::parse("alex").map_err(|e| e.to_string())?,
            may_take_offline_payments: true,
        })
        .map_err(|e| e.to_string())?;
    let mut day = Day {
        opts: opts.clone(),
        clock,
        engine,
        sim,
        reader,
        currency,
        events: rx,
        policy,
        confirmed: BTreeMap::new(),
        declines_reported: 0,
        expiries_reported: 0,
        progress_shown: false,
        seq: 0,
    };
    let result = script(&mut day).await;
    let summary = match result {
        Ok(()) => {
            await_reported_outcomes(&mut day).await;
            reconcile(&mut day, started)
        }
        Err(e) => Err(e),
    };
    sub.cancel();
    day.engine.close();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&key_dir);
    }
    summary
}

async fn script(day: &mut Day) -> Result<(), String> {
    let preset = day.opts.preset.name();
    day.engine
        .report_network(true)
        .await
        .map_err(|e| e.to_string())?;
    day.wait_for(
        "the service to be reachable",
        Duration::from_secs(5),
        10 * MIN,
        |e| e.status().is_ok_and(|s| s.connectivity.is_online()),
    )
    .await?;
    // A new reader is paired only online.
    day.reader.pair(&day.engine).await?;
    day.say(&format!(
        "shop opens — preset {preset}, cashier alex, reader {} paired over the reader profile (simulated, authenticated link), processor simulator at {}",
        day.reader.model,
        day.sim.base_url()
    ));

    // Morning: online sales.
    let cards = approve_cards();
    for i in 0..3 {
        day.clock.advance(20 * MIN);
        let amount = day.usd(12 + 7 * i as i64, 50);
        let order = day.order(amount, None).await?;
        match day
            .card(&order, amount, cards[i % cards.len()], day.mode())
            .await
        {
            Ok((route, v)) => day.good(&format!(
                "online sale {amount} on {} •••• {}: {:?} ({route:?})",
                cards[i % cards.len()]
                    .description
                    .split(',')
                    .next()
                    .unwrap_or(""),
                cards[i % cards.len()].last4(),
                v.status
            )),
            Err(e) => day.bad(&format!("online sale {amount}: {e}")),
        }
    }
    let cash_order = day.order(day.usd(4, 20), None).await?;
    let amount = day.usd(4, 20);
    day.engine
        .add_cash(&cash_order, amount)
        .await
        .map_err(|e| e.to_string())?;
    day.good(&format!("cash sale {amount}"));

    // 10:30 the network drops.
    let now = day.now();
    let drop_at = OPENING.plus(150 * MIN);
    if drop_at > now {
        day.clock.advance(now.until(drop_at));
    }
    day.engine
        .report_network(false)
        .await
        .map_err(|e| e.to_string())?;
    day.note("the shop's internet connection drops");

    // Offline sales inside the acceptance window (1 h for a phone + reader).
    let n = day.opts.payments.max(1);
    let step = Duration::from_secs((40 * 60 / n as u64).clamp(5, 240));
    let mut expiring: Option<String> = None;
    for i in 0..n {
        day.clock.advance(step);
        let (card, contact) = match i {
            1 => (
                decline_card(0),
                Some(
                    CustomerContact::parse(Some("jane.doe@example.com"), None)
                        .map_err(|e| e.to_string())?,
                ),
            ),
            4 => (
                decline_card(2),
                Some(
                    CustomerContact::parse(None, Some("+14155550123"))
                        .map_err(|e| e.to_string())?,
                ),
            ),
            _ => (cards[i % cards.len()], None),
        };
        let amount = day.usd(8 + (i as i64 * 5) % 40, 25 * (i as i64 % 4));
        let order = day.order(amount, contact).await?;
        match day.card(&order, amount, card, day.mode()).await {
            Ok((_, v)) => {
                if i == 2 {
                    expiring = Some(v.id.as_str().to_owned());
                }
                day.good(&format!(
                    "offline sale {amount} •••• {} stored ({}), deadline {}",
                    card.last4(),
                    v.status,
                    hhmm(v.deadline, OPENING)
                ))
            }
            Err(e) => day.bad(&format!("offline sale {amount}: {e}")),
        }
    }

    // An order split across two cards and cash.
    day.clock.advance(2 * MIN);
    let total = day.usd(90, 0);
    let split = day
        .order(
            total,
            Some(CustomerContact::parse(Some("sam@example.org"), None).map_err(|e| e.to_string())?),
        )
        .await?;
    for (amount, card) in [
        (day.usd(40, 0), cards[0]),
        (day.usd(30, 0), cards[1 % cards.len()]),
    ] {
        match day.card(&split, amount, card, day.mode()).await {
            Ok(_) => day.good(&format!(
                "split order {total}: card •••• {} pays {amount}",
                card.last4()
            )),
            Err(e) => day.bad(&format!("split order card: {e}")),
        }
    }
    let cash = day.usd(20, 0);
    let view = day
        .engine
        .add_cash(&split, cash)
        .await
        .map_err(|e| e.to_string())?;
    day.good(&format!(
        "split order: cash {cash}; balance {}, badge {:?}",
        view.balance, view.status
    ));

    // Refusals, each with its rule and figures.
    day.clock.advance(MIN);
    let big = day.usd(150, 0);
    let over = day.order(big, None).await?;
    match day.card(&over, big, cards[0], day.mode()).await {
        Err(PosError::Refused { refusal }) => day.bad(&format!(
            "order of {big} refused offline [{}]: {refusal}",
            refusal.rule_id()
        )),
        Ok(_) => day.note("an over-limit order was accepted (unexpected)"),
        Err(e) => day.bad(&format!("over-limit order: {e}")),
    }
    if let Some(mode) = day.refused_mode() {
        let amount = day.usd(9, 0);
        let o = day.order(amount, None).await?;
        match day.card(&o, amount, cards[0], mode).await {
            Err(PosError::Refused { refusal }) => day.bad(&format!(
                "{mode} refused by the preset [{}]: {refusal}",
                refusal.rule_id()
            )),
            Ok(_) => day.note(&format!("{mode} accepted offline")),
            Err(e) => day.bad(&format!("{mode}: {e}")),
        }
    }
    if day.policy.staff_permission_required {
        day.engine
            .sign_in(StaffSession {
                staff_id: StaffId::parse("trainee-kim").map_err(|e| e.to_string())?,
                may_take_offline_payments: false,
            })
            .map_err(|e| e.to_string())?;
        let amount = day.usd(6, 0);
        let o = day.order(amount, None).await?;
        match day.card(&o, amount, cards[0], day.mode()).await {
            Err(PosError::Refused { refusal }) => day.bad(&format!(
                "trainee-kim may not take offline payments [{}]: {refusal}",
                refusal.rule_id()
            )),
            Ok(_) => day.note("trainee took an offline payment (unexpected)"),
            Err(e) => day.bad(&format!("trainee: {e}")),
        }
        day.engine
            .sign_in(StaffSession {
                staff_id: StaffId::parse("alex").map_err(|e| e.to_string())?,
                may_take_offline_payments: true,
            })
            .map_err(|e| e.to_string())?;
    } else {
        day.say("(this preset has no per-cashier offline permission)");
    }
    match day.engine.guarded_action(GuardedAction::LogOut, None).await {
        Err(PosError::ActionRefused { refusal }) => day.bad(&format!("log out refused: {refusal}")),
        Ok(o) => day.note(&format!("log out allowed: {o:?}")),
        Err(e) => day.bad(&format!("log out: {e}")),
    }

    // Receipts requested offline.
    let email = EmailAddress::parse("sam@example.org").map_err(|e| e.to_string())?;
    day.engine
        .request_receipt(&split, ReceiptChannel::Email(email))
        .await
        .map_err(|e| e.to_string())?;
    let phone = PhoneNumber::parse("+14155550188").map_err(|e| e.to_string())?;
    day.engine
        .request_receipt(&cash_order, ReceiptChannel::Sms(phone))
        .await
        .map_err(|e| e.to_string())?;
    day.say("2 receipts requested (email, SMS): queued until the service is back");

    // 12:00 the network is back, but the processor has an outage.
    let noon = OPENING.plus(240 * MIN);
    let now = day.now();
    if noon > now {
        day.clock.advance(now.until(noon));
    }
    day.sim.set_outage(true);
    day.engine
        .report_network(true)
        .await
        .map_err(|e| e.to_string())?;
    day.note("internet is back, but the payment service is down");
    day.wait_for(
        "the disruption to be detected",
        Duration::from_secs(10),
        30 * MIN,
        |e| {
            e.status().is_ok_and(|s| {
                matches!(s.connectivity, ConnectivityState::ServiceDisruption { .. })
            })
        },
    )
    .await?;

    // 13:00 the service returns: forwarding runs by itself.
    day.clock.advance(50 * MIN);
    let mut plan = match day.opts.fault {
        Some(mode) => mode.plan(None),
        None => FaultPlan::none(),
    };
    plan.hold = Duration::from_millis(1_500);
    if let Some(id) = &expiring {
        // This payment's requests keep failing until its deadline passes.
        plan = plan.always_for(id, Fault::ServerError);
    }
    day.sim.set_faults(plan);
    day.sim.set_outage(false);
    day.note(&format!(
        "the payment service is back{}",
        day.opts
            .fault
            .map_or(String::new(), |f| format!(" (with fault: {f})"))
    ));
    let skip = expiring.clone();
    day.wait_for(
        "forwarding to finish",
        Duration::from_secs(5),
        6 * 60 * MIN,
        move |e| {
            e.list_payments().is_ok_and(|ps| {
                ps.iter()
                    .filter(|p| Some(p.id.as_str()) != skip.as_deref())
                    .all(|p| p.state.is_final())
            }) && e.queued_receipts().is_ok_and(|r| r.is_empty())
        },
    )
    .await?;
    day.good("every payment with an answer is settled; queued receipts delivered");

    // The next morning: the payment that never got through passes its deadline.
    if let Some(id) = expiring {
        let deadline = day
            .engine
            .list_payments()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|p| p.id.as_str() == id)
            .map(|p| p.deadline);
        if let Some(d) = deadline {
            let now = day.now();
            if d > now {
                day.clock.advance(now.until(d));
            }
            day.clock.advance(MIN);
            day.engine.nudge_forwarding();
            let id2 = id.clone();
            day.wait_for("the expiry", Duration::from_secs(5), 10 * MIN, move |e| {
                e.list_payments().is_ok_and(|ps| {
                    ps.iter()
                        .any(|p| p.id.as_str() == id2 && p.status == PaymentStatus::Expired)
                })
            })
            .await?;
        }
    }
    day.say("closing: reconciliation");
    Ok(())
}

/// Waits until every decline and expiry the status shows has reached the
/// listener. Delivering what was emitted is not enough: a driver pass may
/// have recorded an outcome (the status shows it) without having emitted
/// its event yet. Bounded: an event that never comes is then a mismatch of
/// the reconciliation, not a hang.
async fn await_reported_outcomes(day: &mut Day) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        day.engine.events_delivered().await;
        day.show_events();
        let Ok(status) = day.engine.status() else {
            return;
        };
        let (declined, expired) = status.totals.iter().fold((0, 0), |(d, e), t| {
            (
                d + u64::from(t.declined_count),
                e + u64::from(t.expired_count),
            )
        });
        if (day.declines_reported >= declined && day.expiries_reported >= expired)
            || Instant::now() >= give_up
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reconcile(day: &mut Day, started: Instant) -> Result<Summary, String> {
    day.show_events();
    let status = day.engine.status().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut lost_amount = Money::zero(day.currency);
    for t in &status.totals {
        for (state, count, amount) in [
            ("approved", t.approved_count, t.approved_amount),
            ("declined", t.declined_count, t.declined_amount),
            ("expired (lost)", t.expired_count, t.expired_amount),
            ("pending", t.pending_count, t.pending_amount),
        ] {
            rows.push(Row {
                currency: t.currency.code().to_owned(),
                state: state.to_owned(),
                count: u64::from(count),
                amount,
            });
        }
        if t.currency == day.currency {
            lost_amount = t.expired_amount;
        }
    }
    let payments = day.engine.list_payments().map_err(|e| e.to_string())?;
    let ledger: BTreeMap<String, _> = day
        .sim
        .ledger()
        .into_iter()
        .map(|c| (c.payment_id.clone(), c))
        .collect();
    let mut mismatches = Vec::new();
    let (mut approved, mut declined, mut expired) = (0, 0, 0);
    for p in &payments {
        let id = p.id.as_str();
        let charge = ledger.get(id);
        match (&p.state, charge.map(|c| &c.outcome)) {
            (
                PaymentState::Approved { processor_ref, .. },
                Some(ChargeOutcome::Approved { processor_ref: r }),
            ) => {
                approved += 1;
                if processor_ref != r {
                    mismatches.push(format!("{id}: reference differs"));
                }
                if charge.is_some_and(|c| c.amount != p.amount.minor_units()) {
                    mismatches.push(format!("{id}: amount differs"));
                }
            }
            (PaymentState::Declined { .. }, Some(ChargeOutcome::Declined { .. })) => declined += 1,
            (PaymentState::Expired { .. }, None | Some(ChargeOutcome::Declined { .. })) => {
                expired += 1
            }
            (PaymentState::Expired { .. }, Some(ChargeOutcome::Approved { .. })) => {
                mismatches.push(format!("{id}: charged by the processor but counted lost"))
            }
            (state, outcome) => mismatches.push(format!(
                "{id}: device {} vs processor {outcome:?}",
                state.status()
            )),
        }
    }
    let known: std::collections::BTreeSet<&str> = payments.iter().map(|p| p.id.as_str()).collect();
    for id in ledger.keys() {
        if !known.contains(id.as_str()) {
            mismatches.push(format!(
                "{id}: charged by the processor, unknown to the device"
            ));
        }
    }
    let lost_payments = day
        .confirmed
        .keys()
        .filter(|id| !known.contains(id.as_str()))
        .count() as u64;
    let duplicated = ledger
        .values()
        .filter(|c| !known.contains(c.payment_id.as_str()))
        .count() as u64;
    if day.declines_reported != declined {
        mismatches.push(format!(
            "{declined} declines but {} reported",
            day.declines_reported
        ));
    }
    let stats = day.sim.stats();
    Ok(Summary {
        preset: day.opts.preset,
        seed: day.opts.seed,
        fault: day.opts.fault,
        rows,
        lost_amount,
        lost_payments,
        duplicated,
        approved,
        declined,
        expired,
        declines_reported: day.declines_reported,
        expiries_reported: day.expiries_reported,
        receipts_delivered: day.sim.receipts().len() as u64,
        mismatches,
        sim_requests: stats.requests,
        faults_injected: stats.faults.values().sum(),
        wall: started.elapsed(),
    })
}
