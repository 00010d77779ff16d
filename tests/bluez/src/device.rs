//! `org.bluez.Device1`: a device the adapter found. `Connect` and
//! `Disconnect` are what btleplug calls; BLE bonding (`Pair`) is not used by
//! the profile and not offered.

use std::sync::{Arc, Weak};

use zbus::zvariant::OwnedObjectPath;

use crate::error::BluezError;
use crate::world::{Device, World};

pub(crate) struct DeviceIface {
    world: Weak<World>,
    path: String,
}

/// Puts the device at `path` on D-Bus (InterfacesAdded).
pub(crate) async fn export(world: &Arc<World>, path: &str) {
    let iface = DeviceIface {
        world: Arc::downgrade(world),
        path: path.to_owned(),
    };
    let _ = world.conn.object_server().at(path, iface).await;
}

impl DeviceIface {
    fn world(&self) -> Result<Arc<World>, BluezError> {
        self.world
            .upgrade()
            .ok_or_else(|| BluezError::Failed("the double is gone".into()))
    }

    fn read<T>(&self, f: impl FnOnce(&Device) -> T) -> zbus::fdo::Result<T> {
        let world = self
            .world
            .upgrade()
            .ok_or_else(|| zbus::fdo::Error::Failed("the double is gone".into()))?;
        let st = world.state();
        st.devices
            .get(&self.path)
            .map(f)
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(self.path.clone()))
    }
}

#[zbus::interface(name = "org.bluez.Device1")]
impl DeviceIface {
    async fn connect(&self) -> Result<(), BluezError> {
        self.world()?.connect(&self.path).await
    }

    async fn disconnect(&self) -> Result<(), BluezError> {
        self.world()?.disconnect(&self.path).await
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Address")]
    fn address(&self) -> zbus::fdo::Result<String> {
        self.read(|d| d.address.clone())
    }

    #[zbus(property(emits_changed_signal = "false"), name = "AddressType")]
    fn address_type(&self) -> String {
        "random".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Name")]
    fn name(&self) -> zbus::fdo::Result<String> {
        self.read(|d| d.name.clone())
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Alias")]
    fn alias(&self) -> zbus::fdo::Result<String> {
        self.read(|d| d.name.clone())
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Adapter")]
    fn adapter(&self) -> OwnedObjectPath {
        OwnedObjectPath::try_from(crate::ADAPTER).unwrap_or_default()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Paired")]
    fn paired(&self) -> bool {
        false
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Bonded")]
    fn bonded(&self) -> bool {
        false
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Trusted")]
    fn trusted(&self) -> bool {
        false
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Blocked")]
    fn blocked(&self) -> bool {
        false
    }

    #[zbus(property(emits_changed_signal = "false"), name = "LegacyPairing")]
    fn legacy_pairing(&self) -> bool {
        false
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Connected")]
    fn connected(&self) -> zbus::fdo::Result<bool> {
        self.read(|d| d.connected)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "ServicesResolved")]
    fn services_resolved(&self) -> zbus::fdo::Result<bool> {
        self.read(|d| d.services_resolved)
    }

    /// Only while a discovery in progress found it, as in BlueZ.
    #[zbus(property(emits_changed_signal = "false"), name = "RSSI")]
    fn rssi(&self) -> zbus::fdo::Result<i16> {
        self.read(|d| d.found.then_some(d.rssi))?
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs("No such property 'RSSI'".into()))
    }

    #[zbus(property(emits_changed_signal = "false"), name = "UUIDs")]
    fn uuids(&self) -> zbus::fdo::Result<Vec<String>> {
        self.read(|d| d.uuids.clone())
    }
}
