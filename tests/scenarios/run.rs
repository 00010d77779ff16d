//! The Rust runner of the scenario suite (`docs/scenarios.md`): plays every
//! `tests/scenarios/*.json` (or `$POS_SCENARIOS/*.json`) on pos-core's
//! public API, checks each step's `expect`, and compares the transcript
//! with `golden/<name>.txt` (rewritten with `POS_SCENARIOS_BLESS=1`). One
//! line per scenario; a summary line in libtest's format for the totals.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use pos_core::checkout::{CardPaymentRequest, NewOrder, OfflineBehaviour};
use pos_core::clock::{Timestamp, VirtualClock};
use pos_core::connectivity::{ConnectivityState, ProbeOutcome};
use pos_core::crypto::FileKeyProvider;
use pos_core::engine::{EngineConfig, StaffSession};
use pos_core::forwarding::ForwardingConfig;
use pos_core::gateway::StaticToken;
use pos_core::http_gateway::{HttpGateway, HttpGatewayConfig};
use pos_core::inbox::{
    InboxError, InboxView, OrderBatch, OrderSource, RefreshOutcome, RemoteOrder,
};
use pos_core::ledger::CardRead;
use pos_core::lifecycle::{
    CustomerContact, EmailAddress, OrderId, OrderStatus, PaymentId, PaymentStatus, PhoneNumber,
    ReceiptChannel, StaffId,
};
use pos_core::money::{Currency, Money};
use pos_core::policy::{EntryMode, Network, Policy, TenderKind};
use pos_core::rules::{ActionOverride, GuardOutcome, GuardedAction};
use pos_core::sqlite_store::SqliteStore;
use pos_core::{EventListener, PosEngine, PosError, PosEvent};
use pos_reader::client::ReaderClient;
use pos_reader::link::MemoryLink;
use pos_reader::sim::{Presented, SimReader, SimReaderConfig};
use pos_sim::{ChargeOutcome, FaultMode, FaultPlan, SimConfig, Simulator};
use pos_test_support::keys::LockableKeys;
use serde_json::Value;

const DEVICE: &str = "till-1";
const READER_SERIAL: &str = "SIM-READER-1";

fn main() {
    let dir = std::env::var_os("POS_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let only = std::env::var("POS_SCENARIO").ok();
    let bless = std::env::var_os("POS_SCENARIOS_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            only.as_deref()
                .is_none_or(|n| p.file_stem().is_some_and(|s| s == n))
        })
        .collect();
    files.sort();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let outcome = rt.block_on(play_file(file, &dir, &name, bless));
        match outcome {
            Ok(steps) => {
                passed += 1;
                println!("scenario {name}: ok ({steps} steps)");
            }
            Err(e) => {
                failed += 1;
                println!("scenario {name}: FAILED\n{e}");
            }
        }
    }
    if files.is_empty() {
        println!("no scenario in {}", dir.display());
        failed += 1;
    }
    println!(
        "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

async fn play_file(file: &Path, dir: &Path, name: &str, bless: bool) -> Result<usize, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let scenario: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if scenario["name"].as_str() != Some(name) {
        return Err(format!("its \"name\" must be {name:?}, the file's name"));
    }
    let steps = scenario["steps"]
        .as_array()
        .ok_or("\"steps\" must be an array")?
        .clone();
    let mut run = Run::start(name, &scenario["setup"]).await?;
    let mut transcript = Vec::new();
    let mut problems = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let (line, result) = run
            .step(step)
            .await
            .map_err(|e| format!("step {}: {e}", i + 1))?;
        if let Some(want) = step.get("expect") {
            let want = want
                .as_str()
                .ok_or(format!("step {}: expect must be a string", i + 1))?;
            if want != result {
                problems.push(format!(
                    "step {} `{line}`: expected `{want}`, got `{result}`",
                    i + 1
                ));
            }
        }
        transcript.push(format!("{line} -> {result}"));
    }
    run.finish().await;
    let golden = dir.join("golden").join(format!("{name}.txt"));
    let text = transcript.join("\n") + "\n";
    if bless {
        std::fs::create_dir_all(golden.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(&golden, &text).map_err(|e| e.to_string())?;
    } else {
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == text => {}
            Ok(want) => problems.push(diff(&want, &text)),
            Err(_) => problems.push(format!(
                "no golden transcript {} (write it with POS_SCENARIOS_BLESS=1)",
                golden.display()
            )),
        }
    }
    if problems.is_empty() {
        Ok(steps.len())
    } else {
        Err(problems.join("\n"))
    }
}

fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i).copied(), g.get(i).copied());
        if a != b {
            return format!(
                "transcript differs from the golden at line {}:\n  golden: {}\n  got:    {}",
                i + 1,
                a.unwrap_or("<end>"),
                b.unwrap_or("<end>")
            );
        }
    }
    "transcript differs from the golden".into()
}

struct Collect(Mutex<mpsc::Sender<PosEvent>>);

impl EventListener for Collect {
    fn on_event(&self, e: PosEvent) {
        let _ = self.0.lock().unwrap().send(e);
    }
}

/// The scenario's other sales channel (R18): an order source whose cursor
/// is the number of changes made so far. From scratch it gives every order;
/// after a cursor, the orders changed since (their current version) and the
/// ids removed since. One page, ordered by id. While `down`, it throws
/// `Unavailable`. Counts its fetches.
#[derive(Default)]
struct WebShop(Mutex<Shop>);

#[derive(Default)]
struct Shop {
    version: u64,
    /// id -> (the order, or `None` once removed; the version that changed it)
    orders: BTreeMap<String, (Option<RemoteOrder>, u64)>,
    down: bool,
    fetches: u64,
}

impl OrderSource for WebShop {
    fn fetch_since(&self, cursor: Option<String>) -> Result<OrderBatch, InboxError> {
        let mut s = self.0.lock().unwrap();
        s.fetches += 1;
        if s.down {
            return Err(InboxError::Unavailable {
                reason: "the web shop is down".into(),
            });
        }
        let since = match cursor {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| InboxError::Source {
                reason: format!("bad cursor {c:?}"),
            })?),
        };
        let mut batch = OrderBatch {
            next_cursor: Some(s.version.to_string()),
            ..OrderBatch::default()
        };
        for (id, (order, changed)) in &s.orders {
            match (since, order) {
                (None, Some(o)) => batch.orders.push(o.clone()),
                (Some(v), Some(o)) if *changed > v => batch.orders.push(o.clone()),
                (Some(v), None) if *changed > v => batch.removed_ids.push(id.clone()),
                _ => {}
            }
        }
        Ok(batch)
    }
}

struct Run {
    web: Arc<WebShop>,
    dir: PathBuf,
    keys: Arc<LockableKeys>,
    clock: VirtualClock,
    currency: Currency,
    staff: StaffSession,
    engine: PosEngine,
    sim: Simulator,
    reader: tokio::sync::Mutex<ReaderClient>,
    sim_reader: SimReader,
    events: mpsc::Receiver<PosEvent>,
    events_tx: mpsc::Sender<PosEvent>,
    subscription: Option<pos_core::Subscription>,
    aliases: BTreeMap<String, String>,
    orders: BTreeMap<String, OrderId>,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fn int(v: &Value, field: &str) -> Result<i64, String> {
    v[field]
        .as_i64()
        .ok_or_else(|| format!("\"{field}\" must be an integer"))
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v[field]
        .as_str()
        .ok_or_else(|| format!("\"{field}\" must be a string"))
}

fn opt_text<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, String> {
    match &v[field] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("\"{field}\" must be a string")),
    }
}

impl Run {
    async fn start(name: &str, setup: &Value) -> Result<Run, String> {
        let setup = if setup.is_null() { &Value::Null } else { setup };
        let known = [
            "preset",
            "currency",
            "offline",
            "limits",
            "tips",
            "staff",
            "seed",
            "start",
            "readerModel",
            "forcedOffline",
            "tapToPay",
        ];
        if let Some(o) = setup.as_object() {
            if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(format!("unknown setup field {k:?}"));
            }
        } else if !setup.is_null() {
            return Err("\"setup\" must be an object".into());
        }
        let currency_code = opt_text(setup, "currency")?.unwrap_or("USD");
        let currency = Currency::parse(currency_code).map_err(|e| e.to_string())?;
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pos-scenario-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let keys = Arc::new(LockableKeys::new(
            FileKeyProvider::open_or_create(dir.with_extension("kek"))
                .map_err(|e| e.to_string())?,
            false,
        ));
        let start = setup["start"].as_i64().unwrap_or(1_800_000_000_000);
        let clock = VirtualClock::new(Timestamp(start));
        let seed = setup["seed"].as_u64().unwrap_or(1);
        let sim = Simulator::start(SimConfig {
            seed,
            ..SimConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let engine = open(&dir, &keys, &clock, currency_code)
            .await
            .map_err(|e| e.to_string())?;
        // The policy: the preset, edited, trusting the simulator's readers.
        let mut policy = match opt_text(setup, "preset")?.unwrap_or("shopify-pos") {
            "shopify-pos" => Policy::shopify_pos(currency),
            "square-reader" => Policy::square_reader(currency),
            "square-terminal" => Policy::square_terminal(currency),
            other => return Err(format!("unknown preset {other:?}")),
        };
        policy.enabled = setup["offline"].as_bool().unwrap_or(true);
        if let Some(tips) = setup["tips"].as_bool() {
            policy.tips_allowed = tips;
        }
        if let Some(tap) = setup["tapToPay"].as_bool() {
            policy.tap_to_pay_on_phone = tap;
        }
        if let Some(forced) = setup["forcedOffline"].as_bool() {
            policy.outage.offline_when_forced = forced;
        }
        if let Some(limits) = setup.get("limits") {
            let l = policy
                .limits
                .get_mut(&currency)
                .ok_or("the preset has no limits for this currency")?;
            for (k, v) in limits.as_object().ok_or("\"limits\" must be an object")? {
                let m = |v: &Value| v.as_i64().map(|n| Money::new(n, currency));
                match k.as_str() {
                    "perPayment" => l.per_payment = m(v),
                    "perOrder" => l.per_order = m(v).ok_or("perOrder must be an integer")?,
                    "device" => l.device_amount = m(v),
                    other => return Err(format!("unknown limit {other:?}")),
                }
            }
        }
        policy.reader_authorities.insert(pos_core::crypto::hex(
            &pos_core::reader_trust::simulator_authority().public_key(),
        ));
        let model = match opt_text(setup, "readerModel")? {
            Some(m) => m.to_owned(),
            None => policy
                .offline_readers
                .iter()
                .next()
                .cloned()
                .unwrap_or_default(),
        };
        engine.set_policy(policy).await.map_err(|e| e.to_string())?;
        attach(&engine, &sim)?;
        go_online(&engine).await?;
        let (phone_end, reader_end) = MemoryLink::pair(185);
        let sim_reader = SimReader::start(
            SimReaderConfig {
                model: model.clone(),
                serial: READER_SERIAL.into(),
                firmware: "sim-1.0".into(),
                battery_percent: 80,
                identity: pos_reader::sim::simulated_identity(READER_SERIAL, &model)
                    .map_err(|e| e.to_string())?,
                processor: sim.processor_key(),
                fingerprint_key: [0x42; 32],
            },
            reader_end,
        );
        let mut reader = ReaderClient::connect(phone_end)
            .await
            .map_err(|e| e.to_string())?;
        let t = engine.reader_trust().map_err(|e| e.to_string())?;
        let paired = reader
            .pair(&pos_reader::secure::LinkTrust {
                authorities: t.authorities,
                remembered: t.remembered,
                online: t.online,
            })
            .await
            .map_err(|e| e.to_string())?;
        engine
            .remember_paired_reader(&paired.certificate, &paired.info.firmware)
            .await
            .map_err(|e| e.to_string())?;
        let staff_v = &setup["staff"];
        let staff = StaffSession {
            staff_id: StaffId::parse(opt_text(staff_v, "id")?.unwrap_or("cashier-1"))
                .map_err(|e| e.to_string())?,
            may_take_offline_payments: staff_v["offline"].as_bool().unwrap_or(true),
        };
        engine.sign_in(staff.clone()).map_err(|e| e.to_string())?;
        let web = Arc::new(WebShop::default());
        engine
            .set_order_source(web.clone())
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let mut run = Run {
            web,
            dir,
            keys,
            clock,
            currency,
            staff,
            engine,
            sim,
            reader: tokio::sync::Mutex::new(reader),
            sim_reader,
            events: rx,
            events_tx: tx,
            subscription: None,
            aliases: BTreeMap::new(),
            orders: BTreeMap::new(),
        };
        run.subscribe()?;
        // The transcript starts after the setup: its events are dropped.
        run.engine.events_delivered().await;
        while run.events.try_recv().is_ok() {}
        Ok(run)
    }

    fn subscribe(&mut self) -> Result<(), String> {
        let sub = self
            .engine
            .subscribe(Arc::new(Collect(Mutex::new(self.events_tx.clone()))))
            .map_err(|e| e.to_string())?;
        self.subscription = Some(sub);
        Ok(())
    }

    async fn finish(self) {
        self.engine.close_and_release().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("kek"));
    }

    fn money(&self, n: i64) -> Money {
        Money::new(n, self.currency)
    }

    /// `field` in the step's `currency` (default: the setup's), or the
    /// error an app gets for that currency code.
    fn money_in(&self, step: &Value, n: i64) -> Result<Result<Money, PosError>, String> {
        Ok(match opt_text(step, "currency")? {
            None => Ok(self.money(n)),
            Some(code) => Currency::parse(code)
                .map(|c| Money::new(n, c))
                .map_err(PosError::from),
        })
    }

    fn alias(&mut self, id: &PaymentId) -> String {
        let next = format!("p{}", self.aliases.len() + 1);
        self.aliases
            .entry(id.as_str().to_owned())
            .or_insert(next)
            .clone()
    }

    fn alias_of(&self, id: &str) -> String {
        self.aliases.get(id).cloned().unwrap_or_else(|| "p?".into())
    }

    fn order_id(&self, v: &Value) -> Result<OrderId, String> {
        let name = text(v, "order")?;
        Ok(self
            .orders
            .get(name)
            .cloned()
            .unwrap_or_else(|| OrderId::from_random([0; 16])))
    }

    async fn step(&mut self, step: &Value) -> Result<(String, String), String> {
        let verb = text(step, "do")?;
        let r = match verb {
            "network" => {
                let b = step["reachable"]
                    .as_bool()
                    .ok_or("\"reachable\" must be a boolean")?;
                let r = self.engine.report_network(b).await;
                (format!("network {b}"), result(r.map(|c| connectivity(&c))))
            }
            "probe" => {
                let o = text(step, "outcome")?;
                let outcome = match o {
                    "healthy" => ProbeOutcome::Healthy,
                    "unhealthy" => ProbeOutcome::Unhealthy,
                    "unreachable" => ProbeOutcome::Unreachable,
                    other => return Err(format!("unknown probe outcome {other:?}")),
                };
                let r = self.engine.report_probe(outcome).await;
                (format!("probe {o}"), result(r.map(|c| connectivity(&c))))
            }
            "advance" => {
                let ms = int(step, "ms")?;
                self.clock.advance(Duration::from_millis(ms.max(0) as u64));
                self.engine.nudge_forwarding();
                (format!("advance {ms}"), "ok".into())
            }
            "order" => {
                let id = text(step, "id")?;
                let total = int(step, "total")?;
                let contact =
                    match (opt_text(step, "email")?, opt_text(step, "phone")?) {
                        (None, None) => Ok(None),
                        (e, p) => CustomerContact::parse(e, p).map(Some).map_err(|e| {
                            PosError::InvalidInput {
                                reason: e.to_string(),
                            }
                        }),
                    };
                let r = match (contact, self.money_in(step, total)?) {
                    (Ok(contact), Ok(total)) => {
                        self.engine
                            .create_order(NewOrder {
                                order_id: Some(id.to_owned()),
                                total,
                                contact,
                            })
                            .await
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                if let Ok(o) = &r {
                    self.orders.insert(id.to_owned(), o.id.clone());
                }
                (
                    format!("order {} {total}", printable(id)),
                    result(r.map(|_| "ok".to_owned())),
                )
            }
            "card" => {
                let amount = int(step, "amount")?;
                let line = format!("card {} {amount}", text(step, "order")?);
                (line, self.card(step, amount).await?)
            }
            "cash" => {
                let order = self.order_id(step)?;
                let amount = int(step, "amount")?;
                let r = match self.money_in(step, amount)? {
                    Ok(m) => self.engine.add_cash(&order, m).await,
                    Err(e) => Err(e),
                };
                (
                    format!("cash {} {amount}", text(step, "order")?),
                    result(r.map(|o| format!("balance {} {}", money(&o.balance), badge(o.status)))),
                )
            }
            "order-status" => {
                let id = text(step, "id")?;
                let order = self
                    .orders
                    .get(id)
                    .cloned()
                    .ok_or(format!("no order {id:?} in this scenario"))?;
                let r = self.engine.order(&order);
                (
                    format!("order-status {id}"),
                    result(r.map(|o| format!("balance {} {}", money(&o.balance), badge(o.status)))),
                )
            }
            "guard" => {
                let action = text(step, "action")?;
                let a = match action {
                    "logout" => GuardedAction::LogOut,
                    "switch-location" => GuardedAction::SwitchLocation,
                    "reset-store" => GuardedAction::ResetStore,
                    "remove-device" => GuardedAction::RemoveDevice,
                    other => return Err(format!("unknown guarded action {other:?}")),
                };
                let over = match opt_text(step, "override")? {
                    None => None,
                    Some(reason) => {
                        let at_risk = self.engine.exposure().map_err(|e| e.to_string())?.at_risk;
                        Some(ActionOverride {
                            staff_id: self.staff.staff_id.as_str().to_owned(),
                            reason: reason.to_owned(),
                            acknowledged_at_risk: at_risk,
                        })
                    }
                };
                let r = self.engine.guarded_action(a, over).await;
                (
                    format!("guard {action}"),
                    result(r.map(|o| match o {
                        GuardOutcome::Allowed => "allowed".to_owned(),
                        GuardOutcome::Overridden { .. } => "allowed-with-override".to_owned(),
                    })),
                )
            }
            "forward" => {
                let r = self.engine.forward_now().await;
                (
                    "forward".into(),
                    result(r.map(|f| {
                        format!(
                            "attempted={} approved={} declined={} failed={} unknown={}",
                            f.attempts, f.approved, f.declined, f.failed, f.outcome_unknown
                        )
                    })),
                )
            }
            "confirm" => {
                let name = text(step, "payment")?;
                let id = self
                    .aliases
                    .iter()
                    .find(|(_, a)| a.as_str() == name)
                    .map(|(id, _)| id.clone())
                    .unwrap_or_else(|| name.to_owned());
                (format!("confirm {name}"), self.confirm_again(&id).await?)
            }
            "close" => {
                self.engine.close();
                ("close".into(), "ok".into())
            }
            "receipt" => {
                let order = self.order_id(step)?;
                let channel = match (opt_text(step, "email")?, opt_text(step, "phone")?) {
                    (Some(e), None) => EmailAddress::parse(e).map(ReceiptChannel::Email),
                    (None, Some(p)) => PhoneNumber::parse(p).map(ReceiptChannel::Sms),
                    _ => return Err("a receipt step names an \"email\" or a \"phone\"".into()),
                };
                let r = match channel {
                    Ok(c) => self.engine.request_receipt(&order, c).await.map(|_| ()),
                    Err(e) => Err(PosError::InvalidInput {
                        reason: e.to_string(),
                    }),
                };
                let line = format!(
                    "receipt {} {}",
                    text(step, "order")?,
                    if step["email"].is_string() {
                        "email"
                    } else {
                        "sms"
                    }
                );
                let count = r.and_then(|()| self.engine.queued_receipts().map(|q| q.len()));
                (line, result(count.map(|n| format!("queued={n}"))))
            }
            "receipts" => (
                "receipts".into(),
                result(
                    self.engine
                        .queued_receipts()
                        .map(|q| format!("queued={}", q.len())),
                ),
            ),
            "audit" => {
                let r = self.engine.export_audit_csv().map(|csv| {
                    let kinds: Vec<String> = csv
                        .lines()
                        .skip(1)
                        .filter(|l| !l.is_empty())
                        .map(|l| l.split(',').nth(4).unwrap_or("?").to_owned())
                        .collect();
                    kinds.join(" ")
                });
                ("audit".into(), result(r))
            }
            "wall" => {
                let ms = int(step, "ms")?;
                let wall = pos_core::clock::Clock::wall_now(&self.clock);
                self.clock.set_wall(Timestamp(wall.0 + ms));
                self.engine.nudge_forwarding();
                (format!("wall {ms}"), "ok".into())
            }
            "network-change" => {
                let r = self
                    .engine
                    .may_change_network_while_offline()
                    .map(|ok| if ok { "allowed" } else { "refused" }.to_owned());
                ("network-change".into(), result(r))
            }
            "pause" => (
                "pause".into(),
                result(self.engine.pause_forwarding().map(|()| "ok".to_owned())),
            ),
            "resume" => (
                "resume".into(),
                result(self.engine.resume_forwarding().map(|()| "ok".to_owned())),
            ),
            "tick" => {
                let r = self.engine.tick().await;
                (
                    "tick".into(),
                    result(r.map(|t| {
                        format!(
                            "expired={} unknown={}",
                            t.expired.len(),
                            t.outcome_unknown.len()
                        )
                    })),
                )
            }
            "status" => {
                let r = self.engine.status();
                let cur = self.currency;
                ("status".into(), result(r.map(|s| status_line(&s, cur))))
            }
            "payments" => {
                let r = self.engine.list_payments();
                let line = match r {
                    Ok(list) => {
                        let mut items: Vec<(String, String)> = list
                            .iter()
                            .map(|p| {
                                let alias = self.alias_of(p.id.as_str());
                                let item = format!("{alias}:{}", status(p.status));
                                (alias, item)
                            })
                            .collect();
                        items.sort_by_key(|a| alias_key(&a.0));
                        let items: Vec<String> = items.into_iter().map(|(_, i)| i).collect();
                        if items.is_empty() {
                            "none".into()
                        } else {
                            items.join(" ")
                        }
                    }
                    Err(e) => error(&e),
                };
                ("payments".into(), line)
            }
            "processor" => {
                if let Some(b) = step["outage"].as_bool() {
                    self.sim.set_outage(b);
                    (format!("processor outage {b}"), "ok".into())
                } else {
                    let fault = text(step, "fault")?;
                    let rate = step["rate"].as_u64().map(|r| r as u32);
                    let r = if fault == "none" {
                        self.sim.set_faults(FaultPlan::none());
                        "ok".to_owned()
                    } else {
                        match fault.parse::<FaultMode>() {
                            Ok(mode) => {
                                self.sim.set_faults(mode.plan(rate));
                                "ok".to_owned()
                            }
                            Err(_) => "error InvalidInput".to_owned(),
                        }
                    };
                    (format!("processor fault {fault}"), r)
                }
            }
            "ledger" => {
                let mut items: Vec<(String, String)> = self
                    .sim
                    .ledger()
                    .into_iter()
                    .map(|c| {
                        let outcome = match c.outcome {
                            ChargeOutcome::Approved { .. } => "approved".to_owned(),
                            ChargeOutcome::Declined { code } => code,
                        };
                        let alias = self.alias_of(&c.payment_id);
                        let item = format!("{alias}:{outcome}:{} {}", c.amount, c.currency);
                        (alias, item)
                    })
                    .collect();
                items.sort_by_key(|a| alias_key(&a.0));
                let line = if items.is_empty() {
                    "none".into()
                } else {
                    items
                        .into_iter()
                        .map(|(_, i)| i)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                ("ledger".into(), line)
            }
            "events" => {
                self.engine.events_delivered().await;
                let mut items = Vec::new();
                while let Ok(e) = self.events.try_recv() {
                    if let Some(s) = self.event(&e) {
                        items.push(s);
                    }
                }
                let line = if items.is_empty() {
                    "none".into()
                } else {
                    items.join("; ")
                };
                ("events".into(), line)
            }
            "lock" => {
                let b = step["locked"]
                    .as_bool()
                    .ok_or("\"locked\" must be a boolean")?;
                self.keys.set_locked(b);
                (format!("lock {b}"), "ok".into())
            }
            "reopen" => {
                self.subscription = None;
                self.engine.close_and_release().await;
                let code = self.currency.code().to_owned();
                match open(&self.dir, &self.keys, &self.clock, &code).await {
                    Ok(engine) => self.engine = engine,
                    // The closed engine stays: later steps see `error Closed`.
                    Err(e) => return Ok(("reopen".into(), error(&e))),
                }
                attach(&self.engine, &self.sim)?;
                self.engine
                    .set_order_source(self.web.clone())
                    .map_err(|e| e.to_string())?;
                self.engine
                    .sign_in(self.staff.clone())
                    .map_err(|e| e.to_string())?;
                self.subscribe()?;
                self.engine.events_delivered().await;
                // The new subscription's snapshot is not a step's event.
                while self.events.try_recv().is_ok() {}
                ("reopen".into(), "ok".into())
            }
            "web-order" => {
                let id = text(step, "id")?;
                let channel = opt_text(step, "channel")?.unwrap_or("web");
                let total = int(step, "total")?;
                let at = pos_core::clock::Clock::wall_now(&self.clock);
                let mut shop = self.web.0.lock().unwrap();
                shop.version += 1;
                let version = shop.version;
                let order = RemoteOrder {
                    id: id.to_owned(),
                    channel: channel.to_owned(),
                    placed_at: at,
                    total: self.money(total),
                };
                shop.orders.insert(id.to_owned(), (Some(order), version));
                (format!("web-order {id} {total}"), "ok".into())
            }
            "web-remove" => {
                let id = text(step, "id")?;
                let mut shop = self.web.0.lock().unwrap();
                shop.version += 1;
                let version = shop.version;
                shop.orders.insert(id.to_owned(), (None, version));
                (format!("web-remove {id}"), "ok".into())
            }
            "web-down" => {
                let b = step["down"].as_bool().ok_or("\"down\" must be a boolean")?;
                self.web.0.lock().unwrap().down = b;
                (format!("web-down {b}"), "ok".into())
            }
            "web-fetches" => (
                "web-fetches".into(),
                format!("fetches={}", self.web.0.lock().unwrap().fetches),
            ),
            "inbox-refresh" => {
                let r = self.engine.refresh_inbox().await;
                (
                    "inbox-refresh".into(),
                    result(r.map(|o| match o {
                        RefreshOutcome::Offline => "offline".into(),
                        RefreshOutcome::AlreadyRefreshing => "already-refreshing".into(),
                        RefreshOutcome::Discarded => "discarded".into(),
                        RefreshOutcome::Updated {
                            added,
                            updated,
                            removed,
                            more_pending,
                        } => format!(
                            "added={added} updated={updated} removed={removed} more={more_pending}"
                        ),
                    })),
                )
            }
            "inbox" => {
                let r = self.engine.inbox();
                (
                    "inbox".into(),
                    result(r.map(|v| match v {
                        InboxView::Hidden => "hidden".into(),
                        InboxView::Syncing => "syncing".into(),
                        InboxView::Ready(orders) if orders.is_empty() => "ready none".into(),
                        InboxView::Ready(orders) => {
                            let items: Vec<String> = orders
                                .iter()
                                .map(|o| {
                                    format!("{}:{}:{}", o.id, o.channel, o.total.minor_units())
                                })
                                .collect();
                            format!("ready {}", items.join(" "))
                        }
                    })),
                )
            }
            other => return Err(format!("unknown step {other:?}")),
        };
        Ok(r)
    }

    async fn card(&mut self, step: &Value, amount: i64) -> Result<String, String> {
        let order = self.order_id(step)?;
        let tip = step["tip"].as_i64().map(|t| self.money(t));
        let behaviour = match opt_text(step, "behaviour")?.unwrap_or("prefer-online") {
            "prefer-online" => OfflineBehaviour::PreferOnline,
            "require-online" => OfflineBehaviour::RequireOnline,
            "force-offline" => OfflineBehaviour::ForceOffline,
            other => return Err(format!("unknown behaviour {other:?}")),
        };
        let entry = match opt_text(step, "entry")?.unwrap_or("chip") {
            "chip" => EntryMode::Chip,
            "contactless" => EntryMode::Contactless,
            "swipe" => EntryMode::Swipe,
            "manual" => EntryMode::Manual,
            other => return Err(format!("unknown entry mode {other:?}")),
        };
        let card_name = opt_text(step, "card")?.unwrap_or("approve");
        let card = pos_sim::test_cards()
            .iter()
            .find(|c| match &c.outcome {
                pos_sim::CardOutcome::Approve => card_name == "approve" && c.pan.ends_with("4242"),
                pos_sim::CardOutcome::Decline(r) => {
                    pos_core::gateway::wire::decline_code(r) == card_name
                }
            })
            .ok_or(format!("no test card {card_name:?}"))?;
        let network = match opt_text(step, "network")? {
            None => card.network,
            Some("visa") => Network::Visa,
            Some("mastercard") => Network::Mastercard,
            Some("amex") => Network::Amex,
            Some(other) => return Err(format!("unknown network {other:?}")),
        };
        let tender = match opt_text(step, "tender")?.unwrap_or("card") {
            "card" => TenderKind::Card,
            "gift-card" => TenderKind::GiftCard,
            "bnpl" => TenderKind::BuyNowPayLater,
            other => return Err(format!("unknown tender {other:?}")),
        };
        let amount = match self.money_in(step, amount)? {
            Ok(m) => m,
            Err(e) => return Ok(error(&e)),
        };
        let decision = match self
            .engine
            .begin_card_payment(CardPaymentRequest {
                order_id: order,
                payment_id: None,
                amount,
                tip,
                behaviour,
                tender,
            })
            .await
        {
            Ok(d) => d,
            Err(e) => return Ok(error(&e)),
        };
        let alias = self.alias(&decision.payment_id);
        let read = match opt_text(step, "reader")?.unwrap_or("sim") {
            "sim" => {
                self.read_card(&decision.challenge, card, network, entry)
                    .await?
            }
            "phone" => CardRead {
                entry_mode: entry,
                network,
                last4: card.last4().to_owned(),
                fingerprint: None,
                reader_model: "Tap to Pay".into(),
                sealed_card_data: vec![0x70; 32],
                reader_serial: None,
                reader_signature: None,
                tap_to_pay_on_phone: true,
            },
            other => return Err(format!("unknown reader {other:?}")),
        };
        Ok(
            match self
                .engine
                .confirm_card_payment(&decision.payment_id, read)
                .await
            {
                Ok(p) => format!("{alias} {}", status(p.status)),
                Err(e) => error(&e),
            },
        )
    }

    /// The simulated reader reads `card` for `challenge`.
    async fn read_card(
        &self,
        challenge: &pos_core::checkout::CardChallenge,
        card: &pos_sim::TestCard,
        network: Network,
        entry: EntryMode,
    ) -> Result<CardRead, String> {
        self.sim_reader.present(Presented {
            secret: card.secret(),
            network,
            entry_mode: entry,
        });
        let all = [
            EntryMode::Chip,
            EntryMode::Contactless,
            EntryMode::Swipe,
            EntryMode::Manual,
        ];
        self.reader
            .lock()
            .await
            .take_card(challenge, &all, true)
            .await
            .map_err(|e| format!("the simulated reader failed: {e}"))
    }

    /// Reads a card again for a payment already begun (or confirmed, or
    /// unknown) and confirms it: what an app does when it confirms twice.
    async fn confirm_again(&mut self, id: &str) -> Result<String, String> {
        let pid = match PaymentId::parse(id) {
            Ok(p) => p,
            Err(e) => {
                return Ok(error(&PosError::InvalidInput {
                    reason: e.to_string(),
                }))
            }
        };
        let challenge = match self.engine.card_challenge(&pid) {
            Ok(c) => c,
            Err(e) => return Ok(error(&e)),
        };
        let card = &pos_sim::test_cards()[0];
        let read = self
            .read_card(&challenge, card, card.network, EntryMode::Chip)
            .await?;
        Ok(match self.engine.confirm_card_payment(&pid, read).await {
            Ok(p) => format!("{} {}", self.alias(&p.id), status(p.status)),
            Err(e) => error(&e),
        })
    }

    fn event(&mut self, e: &PosEvent) -> Option<String> {
        Some(match e {
            PosEvent::ConnectivityChanged { to, .. } => {
                format!("ConnectivityChanged {}", connectivity(to))
            }
            PosEvent::PaymentStateChanged {
                payment_id,
                status: s,
                ..
            } => format!(
                "PaymentStateChanged {} {}",
                self.alias(payment_id),
                status(*s)
            ),
            PosEvent::PaymentDeclined(notice) => format!(
                "PaymentDeclined {} {}",
                self.alias(&notice.payment_id),
                pos_core::gateway::wire::decline_code(&notice.reason)
            ),
            PosEvent::PaymentExpired { payment_id, .. } => {
                format!("PaymentExpired {}", self.alias(payment_id))
            }
            PosEvent::PaymentOutcomeUnknown { payment_id, .. } => {
                format!("PaymentOutcomeUnknown {}", self.alias(payment_id))
            }
            PosEvent::SessionWarning { .. } => "SessionWarning".into(),
            PosEvent::LimitNear { .. } => "LimitNear".into(),
            PosEvent::ForwardingBlocked { .. } => "ForwardingBlocked".into(),
            PosEvent::ForwardingUnblocked => "ForwardingUnblocked".into(),
            _ => return None,
        })
    }
}

/// A string as a transcript shows it: control characters as `\xNN`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (c as u32) < 0x20 {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn alias_key(a: &str) -> (usize, String) {
    (a.len(), a.to_owned())
}

async fn open(
    dir: &Path,
    keys: &Arc<LockableKeys>,
    clock: &VirtualClock,
    currency: &str,
) -> Result<PosEngine, PosError> {
    let mut config = EngineConfig::new(dir, DEVICE, currency)?;
    // Forwarded by `forward` steps only, one request at a time: the
    // simulator's seeded faults then hit the same requests in every run.
    config.forwarding = ForwardingConfig {
        automatic: false,
        max_in_flight: 1,
        ..ForwardingConfig::default()
    };
    let store = SqliteStore::open(&dir.join("pos-core.sqlite"), keys.clone()).await?;
    PosEngine::open_with(config, Arc::new(clock.clone()), Arc::new(store)).await
}

fn attach(engine: &PosEngine, sim: &Simulator) -> Result<(), String> {
    let mut gw = HttpGatewayConfig::new(sim.base_url());
    gw.allow_plain_http = true;
    let gateway =
        HttpGateway::new(gw, Arc::new(StaticToken(sim.token()))).map_err(|e| e.to_string())?;
    engine
        .set_gateway(Arc::new(gateway))
        .map_err(|e| e.to_string())
}

async fn go_online(engine: &PosEngine) -> Result<(), String> {
    engine
        .report_network(true)
        .await
        .map_err(|e| e.to_string())?;
    engine
        .report_probe(ProbeOutcome::Healthy)
        .await
        .map_err(|e| e.to_string())?;
    let s = engine
        .report_probe(ProbeOutcome::Healthy)
        .await
        .map_err(|e| e.to_string())?;
    match s {
        ConnectivityState::Online { .. } => Ok(()),
        other => Err(format!("not online after two healthy probes: {other:?}")),
    }
}

fn result(r: Result<String, PosError>) -> String {
    r.unwrap_or_else(|e| error(&e))
}

fn money(m: &Money) -> String {
    format!("{} {}", m.minor_units(), m.currency().code())
}

fn error(e: &PosError) -> String {
    match e {
        PosError::Refused { refusal } => {
            let (limit, current, attempted) = refusal.figures();
            let mut s = format!("refused {} {}", refusal.rule_id(), refusal.kind());
            for (k, v) in [
                ("limit", limit),
                ("current", current),
                ("attempted", attempted),
            ] {
                if let Some(m) = v {
                    s.push_str(&format!(" {k}={}", money(&m)));
                }
            }
            s
        }
        other => format!("error {}", other.kind()),
    }
}

fn connectivity(c: &ConnectivityState) -> String {
    match c {
        ConnectivityState::Unknown => "UNKNOWN",
        ConnectivityState::Online { .. } => "ONLINE",
        ConnectivityState::NetworkOutage { .. } => "NETWORK_OUTAGE",
        ConnectivityState::ServiceDisruption { .. } => "SERVICE_DISRUPTION",
    }
    .into()
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn status(s: PaymentStatus) -> String {
    upper_snake(&format!("{s:?}"))
}

fn badge(s: OrderStatus) -> String {
    upper_snake(&format!("{s:?}"))
}

fn status_line(s: &pos_core::EngineStatus, currency: Currency) -> String {
    let t = s.totals.iter().find(|t| t.currency == currency);
    let (p, a, d, e) = match t {
        Some(t) => (
            format!("{}/{}", t.pending_count, money(&t.pending_amount)),
            format!("{}/{}", t.approved_count, money(&t.approved_amount)),
            format!("{}/{}", t.declined_count, money(&t.declined_amount)),
            format!("{}/{}", t.expired_count, money(&t.expired_amount)),
        ),
        None => {
            let z = format!("0/0 {}", currency.code());
            (z.clone(), z.clone(), z.clone(), z)
        }
    };
    format!(
        "{} pending={p} approved={a} declined={d} expired={e}",
        connectivity(&s.connectivity)
    )
}
