//! What the double knows: the adapter, the devices around it and, for a
//! reader, its radio link to a simulated reader. Every D-Bus call and every
//! knob of a test goes through [`World`], which changes the state under one
//! lock and then emits the `PropertiesChanged` signals BlueZ would, in
//! BlueZ's order, after the lock is released.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use pos_reader::link::{LinkControl, MemoryLink};
use zbus::zvariant::Value;

use crate::error::BluezError;
use crate::gatt;

pub(crate) const ADAPTER_IFACE: &str = "org.bluez.Adapter1";
pub(crate) const DEVICE_IFACE: &str = "org.bluez.Device1";
pub(crate) const CHAR_IFACE: &str = "org.bluez.GattCharacteristic1";

/// How a device stays silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Silence {
    /// It answers.
    #[default]
    No,
    /// `Connect` never answers (the reader is not there any more, or busy).
    Connect,
    /// It connects, but service discovery never completes
    /// (`ServicesResolved` stays false).
    Services,
    /// It connects and resolves its services, then never sends a frame: the
    /// phone's writes vanish.
    Reader,
}

/// What went over one reader's radio, for the tests to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RadioStats {
    /// `Connect` calls that established a connection.
    pub connections: usize,
    /// `StartNotify` calls that opened a notify session.
    pub notify_sessions_opened: usize,
    /// Frames the phone wrote (write without response) and the reader got.
    pub writes: usize,
    /// Frames the reader sent as notifications.
    pub notifications: usize,
    pub largest_write: usize,
    pub largest_notification: usize,
    /// Writes refused: longer than MTU − 3, or not a write without response.
    pub refused_writes: usize,
    /// Frames of the reader lost because nobody could hear them (not
    /// connected, or notifications off).
    pub lost_notifications: usize,
}

/// A device BlueZ could see.
#[derive(Debug)]
pub(crate) struct Device {
    pub address: String,
    pub name: String,
    pub rssi: i16,
    /// The advertised service UUIDs.
    pub uuids: Vec<String>,
    pub in_range: bool,
    /// On D-Bus (found by a discovery; kept afterwards, as BlueZ keeps
    /// connectable devices).
    pub exported: bool,
    /// Found by the discovery in progress: its RSSI is valid.
    pub found: bool,
    pub connected: bool,
    pub services_resolved: bool,
    pub silence: Silence,
    /// Wakes `Connect` calls left hanging by [`Silence::Connect`].
    pub cancel_connect: Option<tokio::sync::watch::Sender<bool>>,
    pub radio: Option<Radio>,
}

/// A reader's GATT service and its link to the simulated reader.
#[derive(Debug)]
pub(crate) struct Radio {
    pub mtu: u16,
    /// The double's end of the simulated reader's link.
    pub link: Arc<MemoryLink>,
    pub control: LinkControl,
    /// The GATT objects are on D-Bus (from the first connection on, as
    /// BlueZ's GATT cache keeps them).
    pub gatt_exported: bool,
    /// Notify sessions by D-Bus client: as in BlueZ they outlive a
    /// disconnection and are registered again at the next connection.
    pub sessions: BTreeSet<String>,
    /// Notifications enabled on the reader (the CCCD written).
    pub notifying: bool,
    /// Frames (both ways) before the link drops.
    pub cut_after: Option<usize>,
    pub leave_range_on_cut: bool,
    pub stats: RadioStats,
}

impl Radio {
    /// The reader can talk: notifications were enabled on a live link. The
    /// simulated reader then sends again what the phone did not acknowledge,
    /// as the profile's readers do when notifications are enabled.
    fn enable(&mut self) {
        self.notifying = true;
        self.control.reconnect();
    }

    fn disable(&mut self) {
        self.notifying = false;
        self.control.disconnect();
    }

    /// One more frame over the air; `false` when it is the one the cut
    /// loses.
    fn pass(&mut self) -> bool {
        match self.cut_after {
            Some(0) => false,
            Some(n) => {
                self.cut_after = Some(n - 1);
                true
            }
            None => true,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub powered: bool,
    /// Switched off by the user (rfkill): apps cannot power it on.
    pub blocked: bool,
    pub discovering: bool,
    /// The service UUIDs of the last `SetDiscoveryFilter`.
    pub filter: Vec<String>,
    /// Another app scans without a filter, and BlueZ merges the filters:
    /// every device in range is reported, whatever ours says.
    pub merged_with_unfiltered_scan: bool,
    /// Devices by object path.
    pub devices: BTreeMap<String, Device>,
}

/// One `PropertiesChanged` signal to emit.
#[derive(Debug)]
pub(crate) struct Change {
    pub path: String,
    pub iface: &'static str,
    pub set: Vec<(&'static str, Value<'static>)>,
    pub invalidated: Vec<&'static str>,
}

impl Change {
    fn set(path: &str, iface: &'static str, name: &'static str, v: Value<'static>) -> Change {
        Change {
            path: path.to_owned(),
            iface,
            set: vec![(name, v)],
            invalidated: vec![],
        }
    }
}

/// The double's state and its D-Bus connection.
#[derive(Debug)]
pub(crate) struct World {
    pub conn: zbus::Connection,
    state: Mutex<State>,
}

/// `dev_AA_BB_…` under the adapter.
pub(crate) fn device_path(address: &str) -> String {
    format!("{}/dev_{}", crate::ADAPTER, address.replace(':', "_"))
}

impl World {
    pub fn new(conn: zbus::Connection) -> World {
        World {
            conn,
            state: Mutex::new(State {
                powered: true,
                ..State::default()
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn emit(&self, changes: Vec<Change>) {
        for c in changes {
            let Ok(emitter) = zbus::object_server::SignalEmitter::new(&self.conn, c.path.as_str())
            else {
                continue;
            };
            let set: HashMap<&str, Value<'_>> = c.set.into_iter().collect();
            let _ = zbus::fdo::Properties::properties_changed(
                &emitter,
                zbus::names::InterfaceName::from_static_str_unchecked(c.iface),
                set,
                std::borrow::Cow::Borrowed(&c.invalidated),
            )
            .await;
        }
    }

    fn device<'a>(st: &'a mut State, path: &str) -> Result<&'a mut Device, BluezError> {
        st.devices
            .get_mut(path)
            .ok_or_else(|| BluezError::DoesNotExist("Does Not Exist".into()))
    }

    /// The link drops (cut, out of range, adapter off, `Disconnect`):
    /// notifications stop (their sessions stay), services are no longer
    /// resolved, the device is disconnected.
    fn drop_link(path: &str, dev: &mut Device) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(radio) = dev.radio.as_mut() {
            if radio.notifying {
                out.push(Change::set(
                    &gatt::notify_path(path),
                    CHAR_IFACE,
                    "Notifying",
                    false.into(),
                ));
            }
            radio.disable();
            radio.cut_after = None;
            if std::mem::take(&mut radio.leave_range_on_cut) {
                dev.in_range = false;
            }
        }
        if let Some(cancel) = dev.cancel_connect.take() {
            let _ = cancel.send(true);
        }
        if dev.services_resolved {
            dev.services_resolved = false;
            out.push(Change::set(
                path,
                DEVICE_IFACE,
                "ServicesResolved",
                false.into(),
            ));
        }
        if dev.connected {
            dev.connected = false;
            out.push(Change::set(path, DEVICE_IFACE, "Connected", false.into()));
        }
        out
    }

    // ---- Adapter1 -------------------------------------------------------

    pub fn set_discovery_filter(&self, uuids: Vec<String>) {
        self.state().filter = uuids;
    }

    /// Starts discovering: every device in range that the merged filters let
    /// through is found (put on D-Bus, or its RSSI refreshed). Returns the
    /// devices to put on D-Bus.
    pub async fn start_discovery(self: &Arc<Self>) -> Result<(), BluezError> {
        let (new, changes) = {
            let mut st = self.state();
            if !st.powered {
                return Err(BluezError::NotReady("Resource Not Ready".into()));
            }
            let mut changes = Vec::new();
            if !st.discovering {
                st.discovering = true;
                changes.push(Change::set(
                    crate::ADAPTER,
                    ADAPTER_IFACE,
                    "Discovering",
                    true.into(),
                ));
            }
            let filter = st.filter.clone();
            let everything = st.merged_with_unfiltered_scan || filter.is_empty();
            let mut new = Vec::new();
            for (path, dev) in st.devices.iter_mut() {
                let wanted = everything
                    || dev
                        .uuids
                        .iter()
                        .any(|u| filter.iter().any(|f| f.eq_ignore_ascii_case(u)));
                if !dev.in_range || !wanted {
                    continue;
                }
                dev.found = true;
                if dev.exported {
                    changes.push(Change::set(path, DEVICE_IFACE, "RSSI", dev.rssi.into()));
                } else {
                    dev.exported = true;
                    new.push(path.clone());
                }
            }
            (new, changes)
        };
        self.emit(changes).await;
        for path in new {
            crate::device::export(self, &path).await;
        }
        Ok(())
    }

    /// Stops discovering. As BlueZ does, the RSSI of every device found is
    /// invalidated: it is known only while discovering.
    pub async fn stop_discovery(&self) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            if !st.discovering {
                return Err(BluezError::Failed("No discovery started".into()));
            }
            st.discovering = false;
            let mut changes = vec![Change::set(
                crate::ADAPTER,
                ADAPTER_IFACE,
                "Discovering",
                false.into(),
            )];
            for (path, dev) in st.devices.iter_mut() {
                if std::mem::take(&mut dev.found) {
                    changes.push(Change {
                        path: path.clone(),
                        iface: DEVICE_IFACE,
                        set: vec![],
                        invalidated: vec!["RSSI"],
                    });
                }
            }
            changes
        };
        self.emit(changes).await;
        Ok(())
    }

    /// Powers the adapter on or off; off drops every connection and stops
    /// discovering. On fails while the user has switched Bluetooth off.
    pub async fn set_powered(&self, on: bool, by_user: bool) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            if on && st.blocked && !by_user {
                return Err(BluezError::Blocked("Blocked through rfkill".into()));
            }
            if by_user {
                st.blocked = !on;
            }
            if st.powered == on {
                return Ok(());
            }
            st.powered = on;
            let mut changes = Vec::new();
            if !on {
                for (path, dev) in st.devices.iter_mut() {
                    changes.extend(Self::drop_link(path, dev));
                    dev.found = false;
                }
                if std::mem::take(&mut st.discovering) {
                    changes.push(Change::set(
                        crate::ADAPTER,
                        ADAPTER_IFACE,
                        "Discovering",
                        false.into(),
                    ));
                }
            }
            changes.push(Change::set(
                crate::ADAPTER,
                ADAPTER_IFACE,
                "Powered",
                on.into(),
            ));
            changes
        };
        self.emit(changes).await;
        Ok(())
    }

    // ---- Device1 --------------------------------------------------------

    /// Connects: fails while the adapter is off or the device out of range;
    /// hangs while it is silent. The GATT objects are put on D-Bus at the
    /// first connection; services resolve just after the reply, and the
    /// notify sessions of earlier connections are registered again first.
    pub async fn connect(self: &Arc<Self>, path: &str) -> Result<(), BluezError> {
        let (changes, export_gatt, silent) = {
            let mut st = self.state();
            if !st.powered {
                return Err(BluezError::NotReady("Resource Not Ready".into()));
            }
            let dev = Self::device(&mut st, path)?;
            if !dev.in_range {
                return Err(BluezError::Failed("le-connection-abort-by-local".into()));
            }
            if dev.silence == Silence::Connect {
                let (tx, rx) = tokio::sync::watch::channel(false);
                dev.cancel_connect = Some(tx);
                (Vec::new(), false, Some(rx))
            } else if dev.connected {
                return Ok(());
            } else {
                dev.connected = true;
                let mut export = false;
                if let Some(radio) = dev.radio.as_mut() {
                    radio.stats.connections += 1;
                    export = !std::mem::replace(&mut radio.gatt_exported, true);
                }
                (
                    vec![Change::set(path, DEVICE_IFACE, "Connected", true.into())],
                    export,
                    None,
                )
            }
        };
        if let Some(mut cancelled) = silent {
            // No answer until the caller gives up and disconnects.
            let _ = cancelled.wait_for(|c| *c).await;
            return Err(BluezError::Failed("Operation was cancelled".into()));
        }
        self.emit(changes).await;
        if export_gatt {
            gatt::export(self, path).await;
        }
        let world = Arc::clone(self);
        let path = path.to_owned();
        tokio::spawn(async move { world.resolve_services(&path).await });
        Ok(())
    }

    async fn resolve_services(&self, path: &str) {
        let changes = {
            let mut st = self.state();
            let Ok(dev) = Self::device(&mut st, path) else {
                return;
            };
            if !dev.connected || dev.services_resolved || dev.silence == Silence::Services {
                return;
            }
            dev.services_resolved = true;
            let mut changes = Vec::new();
            if let Some(radio) = dev.radio.as_mut() {
                if !radio.sessions.is_empty() && !radio.notifying {
                    radio.enable();
                    changes.push(Change::set(
                        &gatt::notify_path(path),
                        CHAR_IFACE,
                        "Notifying",
                        true.into(),
                    ));
                }
            }
            changes.push(Change::set(
                path,
                DEVICE_IFACE,
                "ServicesResolved",
                true.into(),
            ));
            changes
        };
        self.emit(changes).await;
    }

    pub async fn disconnect(&self, path: &str) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            let dev = Self::device(&mut st, path)?;
            Self::drop_link(path, dev)
        };
        self.emit(changes).await;
        Ok(())
    }

    // ---- GattCharacteristic1 ---------------------------------------------

    /// A write without response on the request characteristic: one frame to
    /// the reader.
    pub async fn write(
        &self,
        path: &str,
        frame: Vec<u8>,
        write_type: Option<String>,
    ) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            let dev = Self::device(&mut st, path)?;
            if !dev.connected {
                return Err(BluezError::Failed("Not connected".into()));
            }
            let silent = dev.silence == Silence::Reader;
            let Some(radio) = dev.radio.as_mut() else {
                return Err(BluezError::NotSupported("Not a reader".into()));
            };
            if write_type.as_deref() != Some("command") {
                radio.stats.refused_writes += 1;
                return Err(BluezError::NotPermitted("Write not permitted".into()));
            }
            if frame.len() > usize::from(radio.mtu) - 3 {
                radio.stats.refused_writes += 1;
                return Err(BluezError::InvalidValueLength("Invalid Length".into()));
            }
            if radio.pass() {
                radio.stats.writes += 1;
                radio.stats.largest_write = radio.stats.largest_write.max(frame.len());
                if !silent {
                    let _ = radio.link.write(frame);
                }
                Vec::new()
            } else {
                Self::drop_link(path, dev)
            }
        };
        self.emit(changes).await;
        Ok(())
    }

    /// A frame from the simulated reader: a notification, if anyone can
    /// hear it.
    pub async fn reader_frame(&self, path: &str, frame: Vec<u8>) {
        let changes = {
            let mut st = self.state();
            let Ok(dev) = Self::device(&mut st, path) else {
                return;
            };
            let live = dev.connected && dev.silence != Silence::Reader;
            let Some(radio) = dev.radio.as_mut() else {
                return;
            };
            if !live || !radio.notifying {
                radio.stats.lost_notifications += 1;
                return;
            }
            if radio.pass() {
                radio.stats.notifications += 1;
                radio.stats.largest_notification =
                    radio.stats.largest_notification.max(frame.len());
                vec![Change::set(
                    &gatt::notify_path(path),
                    CHAR_IFACE,
                    "Value",
                    frame.into(),
                )]
            } else {
                Self::drop_link(path, dev)
            }
        };
        self.emit(changes).await;
    }

    /// Opens `sender`'s notify session. As BlueZ does, a client that has one
    /// already gets success, and a session opened while disconnected is
    /// registered at the next connection.
    pub async fn start_notify(&self, path: &str, sender: String) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            let dev = Self::device(&mut st, path)?;
            let live = dev.connected && dev.services_resolved;
            let Some(radio) = dev.radio.as_mut() else {
                return Err(BluezError::NotSupported(
                    "Operation is not supported".into(),
                ));
            };
            if !radio.sessions.insert(sender) {
                return Ok(());
            }
            radio.stats.notify_sessions_opened += 1;
            if live && !radio.notifying {
                radio.enable();
                vec![Change::set(
                    &gatt::notify_path(path),
                    CHAR_IFACE,
                    "Notifying",
                    true.into(),
                )]
            } else {
                Vec::new()
            }
        };
        self.emit(changes).await;
        Ok(())
    }

    pub async fn stop_notify(&self, path: &str, sender: &str) -> Result<(), BluezError> {
        let changes = {
            let mut st = self.state();
            let dev = Self::device(&mut st, path)?;
            let Some(radio) = dev.radio.as_mut() else {
                return Err(BluezError::NotSupported(
                    "Operation is not supported".into(),
                ));
            };
            if !radio.sessions.remove(sender) {
                return Err(BluezError::Failed("No notify session started".into()));
            }
            if radio.sessions.is_empty() && radio.notifying {
                radio.disable();
                vec![Change::set(
                    &gatt::notify_path(path),
                    CHAR_IFACE,
                    "Notifying",
                    false.into(),
                )]
            } else {
                Vec::new()
            }
        };
        self.emit(changes).await;
        Ok(())
    }

    // ---- Knobs ----------------------------------------------------------

    pub async fn set_in_range(&self, path: &str, in_range: bool) {
        let changes = {
            let mut st = self.state();
            let Ok(dev) = Self::device(&mut st, path) else {
                return;
            };
            dev.in_range = in_range;
            if in_range {
                Vec::new()
            } else {
                Self::drop_link(path, dev)
            }
        };
        self.emit(changes).await;
    }

    pub fn cut_after(&self, path: &str, frames: usize, leave_range: bool) {
        let mut st = self.state();
        if let Ok(Some(radio)) = Self::device(&mut st, path).map(|d| d.radio.as_mut()) {
            radio.cut_after = Some(frames);
            radio.leave_range_on_cut = leave_range;
        }
    }
}
