//! The reader profile's GATT service as BlueZ shows it once connected:
//! `org.bluez.GattService1` and two `org.bluez.GattCharacteristic1`, the
//! request characteristic (write without response: each write is one frame
//! to the simulated reader) and the notify characteristic (each frame of the
//! simulated reader is a `PropertiesChanged` of its `Value`, at most
//! MTU − 3 bytes, while notifications are on). The UUIDs are written here
//! from `docs/reader-profile.md`, not taken from `pos-reader`, so the double
//! checks them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::error::BluezError;
use crate::world::World;

pub const SERVICE_UUID: &str = "7c1e0001-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
pub const REQUEST_UUID: &str = "7c1e0002-5a3b-4c8e-9f2d-6b0a1c2d3e4f";
pub const NOTIFY_UUID: &str = "7c1e0003-5a3b-4c8e-9f2d-6b0a1c2d3e4f";

pub(crate) fn service_path(device: &str) -> String {
    format!("{device}/service000a")
}

pub(crate) fn request_path(device: &str) -> String {
    format!("{device}/service000a/char000b")
}

pub(crate) fn notify_path(device: &str) -> String {
    format!("{device}/service000a/char000d")
}

fn path(p: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).unwrap_or_default()
}

/// Puts the service and its characteristics of the reader at `device` on
/// D-Bus.
pub(crate) async fn export(world: &Arc<World>, device: &str) {
    let server = world.conn.object_server();
    let _ = server
        .at(
            service_path(device),
            Service {
                device: device.to_owned(),
            },
        )
        .await;
    for (char_path, kind) in [
        (request_path(device), Kind::Request),
        (notify_path(device), Kind::Notify),
    ] {
        let c = Char {
            world: Arc::downgrade(world),
            device: device.to_owned(),
            kind,
        };
        let _ = server.at(char_path, c).await;
    }
}

pub(crate) struct Service {
    device: String,
}

#[zbus::interface(name = "org.bluez.GattService1")]
impl Service {
    #[zbus(property(emits_changed_signal = "false"), name = "UUID")]
    fn uuid(&self) -> String {
        SERVICE_UUID.into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Primary")]
    fn primary(&self) -> bool {
        true
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Device")]
    fn device(&self) -> OwnedObjectPath {
        path(&self.device)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Notify,
}

pub(crate) struct Char {
    world: Weak<World>,
    device: String,
    kind: Kind,
}

impl Char {
    fn world(&self) -> Result<Arc<World>, BluezError> {
        self.world
            .upgrade()
            .ok_or_else(|| BluezError::Failed("the double is gone".into()))
    }

    fn notify_only(&self) -> Result<(), BluezError> {
        match self.kind {
            Kind::Notify => Ok(()),
            Kind::Request => Err(BluezError::NotSupported(
                "Operation is not supported".into(),
            )),
        }
    }

    fn radio<T>(&self, f: impl FnOnce(&crate::world::Radio) -> T) -> Option<T> {
        let world = self.world.upgrade()?;
        let st = world.state();
        st.devices.get(&self.device)?.radio.as_ref().map(f)
    }
}

#[zbus::interface(name = "org.bluez.GattCharacteristic1")]
impl Char {
    async fn write_value(
        &self,
        value: Vec<u8>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), BluezError> {
        if self.kind != Kind::Request {
            return Err(BluezError::NotPermitted("Write not permitted".into()));
        }
        let write_type = options
            .get("type")
            .and_then(|v| String::try_from(v.clone()).ok());
        self.world()?.write(&self.device, value, write_type).await
    }

    async fn start_notify(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BluezError> {
        self.notify_only()?;
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        self.world()?.start_notify(&self.device, sender).await
    }

    async fn stop_notify(&self, #[zbus(header)] header: Header<'_>) -> Result<(), BluezError> {
        self.notify_only()?;
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        self.world()?.stop_notify(&self.device, &sender).await
    }

    #[zbus(property(emits_changed_signal = "false"), name = "UUID")]
    fn uuid(&self) -> String {
        match self.kind {
            Kind::Request => REQUEST_UUID.into(),
            Kind::Notify => NOTIFY_UUID.into(),
        }
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Service")]
    fn service(&self) -> OwnedObjectPath {
        path(&service_path(&self.device))
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Flags")]
    fn flags(&self) -> Vec<String> {
        match self.kind {
            Kind::Request => vec!["write-without-response".into()],
            Kind::Notify => vec!["notify".into()],
        }
    }

    /// The ATT MTU negotiated at connection (BlueZ 5.62 and later).
    #[zbus(property(emits_changed_signal = "false"), name = "MTU")]
    fn mtu(&self) -> u16 {
        self.radio(|r| r.mtu).unwrap_or(23)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Notifying")]
    fn notifying(&self) -> bool {
        self.kind == Kind::Notify && self.radio(|r| r.notifying).unwrap_or(false)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Value")]
    fn value(&self) -> Vec<u8> {
        Vec::new()
    }
}
