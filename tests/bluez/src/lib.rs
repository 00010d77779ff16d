//! # pos-bluez-double — BlueZ on a private D-Bus, for btleplug's real code
//!
//! btleplug's Linux backend talks to BlueZ over the system D-Bus. This crate
//! is a test-only BlueZ double (`zbus`) on a private `dbus-daemon`
//! ([`bus`]), so `pos_reader::ble` (btleplug) runs end to end on machines
//! without a radio: GetManagedObjects and InterfacesAdded, the adapter
//! (`Powered`, `SetDiscoveryFilter`, `StartDiscovery`, `StopDiscovery`),
//! devices with their RSSI (`Connect`, `Disconnect`, `Connected`,
//! `ServicesResolved`), and the reader profile's GATT service whose
//! characteristics are backed by `pos-reader`'s simulated reader (writes go
//! to it; its frames come back as `Value` notifications at the MTU).
//!
//! It follows BlueZ 5.66 where btleplug can tell: RSSI only while
//! discovering, the GATT objects kept after a disconnection, notify sessions
//! kept per client and registered again at the next connection, a
//! client's second `StartNotify` answered with success.
//!
//! A test's knobs ([`BlueZ`]): the adapter switched off by the user, the
//! link dropped now or after some frames, the reader out of range and back,
//! a device that stays silent ([`Silence`]), and what went over the air
//! ([`RadioStats`]). One double at a time per process: [`BlueZ::start`]
//! waits for the previous test's to be dropped.

mod adapter;
pub mod bus;
mod device;
mod error;
pub mod gatt;
mod world;

use std::sync::{Arc, LazyLock};

use pos_reader::link::MemoryLink;
use pos_reader::sim::{simulated_identity, SimReader, SimReaderConfig};
use pos_rules::card_seal::ProcessorKey;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use error::BluezError;
use world::{device_path, Device, Radio, World};
pub use world::{RadioStats, Silence};

/// The adapter's object path.
pub const ADAPTER: &str = "/org/bluez/hci0";

/// The processor's X25519 public key card data is sealed to by the readers
/// of [`app_reader_config`]: the test key the Kotlin and Swift tests give
/// their `SimulatedReader`s (`testProcessorKey`, byte `i` = `13 i + 5`).
pub fn test_processor_key() -> ProcessorKey {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(5);
    }
    ProcessorKey(key)
}

/// A simulated reader as pos-ffi's `SimulatedReader` makes one (firmware
/// `sim-1.0`, its fingerprint key), sealing to [`test_processor_key`] and
/// certified by the simulator's reader authority for `serial` and `model`:
/// an app trusting `simulatorReaderAuthority()` pairs it.
pub fn app_reader_config(
    serial: &str,
    model: &str,
    battery_percent: u8,
) -> Result<SimReaderConfig, pos_rules::reader_trust::TrustError> {
    Ok(SimReaderConfig {
        model: model.to_owned(),
        serial: serial.to_owned(),
        firmware: "sim-1.0".into(),
        battery_percent,
        identity: simulated_identity(serial, model)?,
        processor: test_processor_key(),
        fingerprint_key: [0x42; 32],
    })
}

/// The BlueZ double of one test, on the process's private system bus.
/// Dropping it lets the next test start its own.
pub struct BlueZ {
    world: Arc<World>,
    _turn: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for BlueZ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlueZ").finish_non_exhaustive()
    }
}

/// Why the double could not start (the test fails on it: no bus is no
/// test, never a skip).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the private system bus: {0}")]
    Bus(String),
    #[error("D-Bus: {0}")]
    DBus(#[from] zbus::Error),
    #[error("org.bluez is owned by someone else")]
    NameTaken,
}

impl BlueZ {
    /// Starts the double: one powered adapter, no devices. Waits for the
    /// previous test's double to be dropped. Call it before btleplug's
    /// `Manager::new` (it starts the bus and sets `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn start() -> Result<BlueZ, StartError> {
        static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));
        let turn = Arc::clone(&TURN).lock_owned().await;
        let bus = bus::system_bus().map_err(StartError::Bus)?;
        let conn = zbus::connection::Builder::address(bus.address.as_str())?
            .build()
            .await?;
        let world = Arc::new(World::new(conn.clone()));
        let server = conn.object_server();
        server.at("/", zbus::fdo::ObjectManager).await?;
        server
            .at(
                ADAPTER,
                adapter::Adapter {
                    world: Arc::downgrade(&world),
                },
            )
            .await?;
        // The previous test's double (still closing) allowed replacement.
        use zbus::fdo::RequestNameFlags as F;
        let reply = conn
            .request_name_with_flags(
                "org.bluez",
                F::ReplaceExisting | F::AllowReplacement | F::DoNotQueue,
            )
            .await?;
        if reply != zbus::fdo::RequestNameReply::PrimaryOwner {
            return Err(StartError::NameTaken);
        }
        Ok(BlueZ { world, _turn: turn })
    }

    /// A reader advertising the profile's service at `rssi` dBm, whose link
    /// has this ATT `mtu` (23-517), backed by a simulated reader started with
    /// `config`. Returns the simulated reader (to present cards).
    pub fn advertise_reader(
        &self,
        address: &str,
        name: &str,
        rssi: i16,
        mtu: u16,
        config: SimReaderConfig,
    ) -> SimReader {
        let (phone_end, reader_end) = MemoryLink::pair(usize::from(mtu));
        let control = phone_end.control();
        // Nobody listens until notifications are enabled.
        control.disconnect();
        let sim = SimReader::start(config, reader_end);
        let link = Arc::new(phone_end);
        let path = device_path(address);
        self.add(
            address,
            name,
            rssi,
            vec![gatt::SERVICE_UUID.to_owned()],
            Some(Radio {
                mtu,
                link: Arc::clone(&link),
                control,
                gatt_exported: false,
                sessions: Default::default(),
                notifying: false,
                cut_after: None,
                leave_range_on_cut: false,
                stats: RadioStats::default(),
            }),
        );
        let world = Arc::downgrade(&self.world);
        tokio::spawn(async move {
            while let Some(frame) = link.read().await {
                let Some(world) = world.upgrade() else {
                    return;
                };
                world.reader_frame(&path, frame).await;
            }
        });
        sim
    }

    /// Another device (a heart-rate strap, headphones) advertising
    /// `services`.
    pub fn advertise_other(&self, address: &str, name: &str, rssi: i16, services: &[&str]) {
        let uuids = services.iter().map(|s| (*s).to_owned()).collect();
        self.add(address, name, rssi, uuids, None);
    }

    fn add(&self, address: &str, name: &str, rssi: i16, uuids: Vec<String>, radio: Option<Radio>) {
        self.world.state().devices.insert(
            device_path(address),
            Device {
                address: address.to_owned(),
                name: name.to_owned(),
                rssi,
                uuids,
                in_range: true,
                exported: false,
                found: false,
                connected: false,
                services_resolved: false,
                silence: Silence::No,
                cancel_connect: None,
                radio,
            },
        );
    }

    /// Another app scans without a filter: BlueZ merges the filters, so our
    /// scan reports every device in range.
    pub fn merge_with_an_unfiltered_scan(&self, on: bool) {
        self.world.state().merged_with_unfiltered_scan = on;
    }

    /// The service UUIDs of the last `SetDiscoveryFilter`.
    pub fn discovery_filter(&self) -> Vec<String> {
        self.world.state().filter.clone()
    }

    /// The user switches Bluetooth off (rfkill) or on again. Off drops every
    /// connection; apps cannot power it on until the user does.
    pub async fn switch_bluetooth(&self, on: bool) {
        let _ = self.world.set_powered(on, true).await;
    }

    /// The device at `address` stays silent in this way from now on.
    pub fn stay_silent(&self, address: &str, silence: Silence) {
        if let Some(d) = self.world.state().devices.get_mut(&device_path(address)) {
            d.silence = silence;
        }
    }

    /// The radio link drops after `frames` more frames, either way: the next
    /// one is lost with the link (a disconnection mid-message).
    pub fn drop_connection_after(&self, address: &str, frames: usize) {
        self.world.cut_after(&device_path(address), frames, false);
    }

    /// As [`BlueZ::drop_connection_after`], and the reader is then out of
    /// range (connecting fails) until [`BlueZ::set_in_range`].
    pub fn leave_range_after(&self, address: &str, frames: usize) {
        self.world.cut_after(&device_path(address), frames, true);
    }

    /// Out of range drops the link at once and connecting fails; back in
    /// range, connecting works again.
    pub async fn set_in_range(&self, address: &str, in_range: bool) {
        self.world
            .set_in_range(&device_path(address), in_range)
            .await;
    }

    pub fn is_connected(&self, address: &str) -> bool {
        self.world
            .state()
            .devices
            .get(&device_path(address))
            .is_some_and(|d| d.connected)
    }

    /// What went over the reader's radio so far.
    pub fn radio_stats(&self, address: &str) -> RadioStats {
        self.world
            .state()
            .devices
            .get(&device_path(address))
            .and_then(|d| d.radio.as_ref())
            .map(|r| r.stats.clone())
            .unwrap_or_default()
    }
}
